// The feedgate API key is the only secret the dashboard keeps. It lives in
// sessionStorage (this tab) unless the user asked to be remembered, then in
// localStorage. Everything else stored is harmless UI state.

const KEY = "feedgate.apiKey";

export function getKey(): string {
  return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY) ?? "";
}

export function setKey(key: string, remember: boolean): void {
  clearKey();
  (remember ? localStorage : sessionStorage).setItem(KEY, key);
}

export function clearKey(): void {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** Non-secret UI preferences (last sandbox account, last selections). */
export const prefs = {
  get(name: string): string {
    return localStorage.getItem(`feedgate.pref.${name}`) ?? "";
  },
  set(name: string, value: string): void {
    if (value) localStorage.setItem(`feedgate.pref.${name}`, value);
    else localStorage.removeItem(`feedgate.pref.${name}`);
  },
};

/** Where to go back to after a broker login round trip (this tab only). */
export const returnTo = {
  set(hash: string): void {
    sessionStorage.setItem("feedgate.returnTo", hash);
  },
  take(): string {
    const v = sessionStorage.getItem("feedgate.returnTo") ?? "";
    sessionStorage.removeItem("feedgate.returnTo");
    return v;
  },
};
