// Hash routing: #/page?query. Pages render into the main element and return
// a cleanup function that stops their streams when the page is left.

export type Page = (root: HTMLElement, query: URLSearchParams) => (() => void) | void;

export function parseHash(hash = window.location.hash): { path: string; query: URLSearchParams } {
  const h = hash.replace(/^#\/?/, "");
  const i = h.indexOf("?");
  const path = (i < 0 ? h : h.slice(0, i)) || "";
  return { path, query: new URLSearchParams(i < 0 ? "" : h.slice(i + 1)) };
}

export function hashFor(path: string, query?: URLSearchParams | Record<string, string>): string {
  const q = query instanceof URLSearchParams ? query : new URLSearchParams(query ?? {});
  const s = q.toString();
  return `#/${path}${s ? `?${s}` : ""}`;
}

export function navigate(path: string, query?: URLSearchParams | Record<string, string>): void {
  const target = hashFor(path, query);
  if (window.location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else window.location.hash = target;
}

/** Rewrites the hash without rendering the page again. */
export function replaceQuery(path: string, query: URLSearchParams | Record<string, string>): void {
  history.replaceState(null, "", hashFor(path, query));
}
