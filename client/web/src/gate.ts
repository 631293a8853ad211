// AUTH_REQUIRED handling, in one place.
//
// The moment a stream delivers auth_required, or a call fails with
// Unauthenticated carrying a feedgate.v1.AuthRequired detail, the gate stops
// every stream of that broker (they are registered with track), and shows a
// prompt naming the broker and the reason with a one-click reconnect. Nothing
// is retried automatically: a stream stopped here stays stopped until the user
// acts. An Unauthenticated without the detail means the feedgate API key
// itself is bad: it is forgotten and the user goes to sign-in.

import type { Broker, AuthRequired } from "@gen/feedgate/v1/common_pb";
import { classify, connections, type Failure } from "./api";
import { h, replace } from "./dom";
import { brokerName, brokerSlug, fmtTime, reasonLabel, reasonShort } from "./format";
import { clearKey, prefs, returnTo } from "./session";
import { navigate } from "./router";

type Prompt = { detail: AuthRequired; shownAt: number; dismissed: boolean };

class Gate {
  private streams = new Map<Broker, Set<AbortController>>();
  private prompts = new Map<Broker, Prompt>();
  private root: HTMLElement | undefined;
  private onSignOut: (() => void) | undefined;

  mount(root: HTMLElement, onSignOut: () => void): void {
    this.root = root;
    this.onSignOut = onSignOut;
    this.render();
  }

  /** Registers a running stream of broker; returns its unregister function. */
  track(broker: Broker, ac: AbortController): () => void {
    let set = this.streams.get(broker);
    if (!set) this.streams.set(broker, (set = new Set()));
    set.add(ac);
    return () => set.delete(ac);
  }

  /** Active (not yet stopped) streams of broker, for tests and status. */
  activeStreams(broker: Broker): number {
    return this.streams.get(broker)?.size ?? 0;
  }

  isBlocked(broker: Broker): boolean {
    return this.prompts.has(broker);
  }

  authRequired(detail: AuthRequired): void {
    const set = this.streams.get(detail.broker);
    if (set) {
      for (const ac of set) ac.abort();
      set.clear();
    }
    const prev = this.prompts.get(detail.broker);
    // A second signal for the same broker (the stream's trailing error, a
    // parallel call) refreshes the detail but never re-opens a dismissed prompt.
    this.prompts.set(detail.broker, { detail, shownAt: prev?.shownAt ?? Date.now(), dismissed: prev?.dismissed ?? false });
    if (!prev || prev.detail.loginUrl !== detail.loginUrl) this.render();
  }

  /** The broker is connected again: drop its prompt. */
  connected(broker: Broker): void {
    if (this.prompts.delete(broker)) this.render();
  }

  reset(): void {
    for (const set of this.streams.values()) for (const ac of set) ac.abort();
    this.streams.clear();
    this.prompts.clear();
    this.render();
  }

  /**
   * Routes a failure: AuthRequired to the prompt, a bad key to sign-in.
   * Returns the classified failure for the caller to display.
   */
  handle(err: unknown): Failure {
    const f = classify(err);
    if (f.kind === "auth-required") this.authRequired(f.detail);
    else if (f.kind === "bad-key") this.badKey();
    return f;
  }

  badKey(): void {
    clearKey();
    this.reset();
    this.onSignOut?.();
    navigate("signin", { expired: "1" });
  }

  private render(): void {
    if (!this.root) return;
    const open = [...this.prompts.values()].filter((p) => !p.dismissed);
    if (open.length === 0) {
      replace(this.root);
      this.root.hidden = true;
      return;
    }
    this.root.hidden = false;
    replace(
      this.root,
      h(
        "div",
        { class: "modal-backdrop" },
        h(
          "div",
          { class: "modal", role: "alertdialog", "aria-modal": "true", "aria-labelledby": "auth-required-title", id: "auth-required", "data-testid": "auth-required-prompt" },
          h("h2", { id: "auth-required-title" }, open.length === 1 ? `${brokerName(open[0].detail.broker)} needs you to log in again` : "Your brokers need you to log in again"),
          open.map((p) => this.promptCard(p)),
        ),
      ),
    );
    (this.root.querySelector("button.primary") as HTMLButtonElement | null)?.focus();
  }

  private promptCard(p: Prompt): HTMLElement {
    const d = p.detail;
    const name = brokerName(d.broker);
    const slug = brokerSlug(d.broker);
    const err = h("p", { class: "prompt-error", "data-testid": `reconnect-error-${slug}`, hidden: true });
    const btn = h(
      "button",
      {
        class: "primary",
        type: "button",
        id: `reconnect-${slug}`,
        "data-testid": `reconnect-${slug}`,
        onclick: async () => {
          btn.disabled = true;
          btn.textContent = `Opening ${name}…`;
          try {
            await startLogin(d.broker, { returnHash: window.location.hash });
          } catch (e) {
            const f = this.handle(e);
            btn.disabled = false;
            btn.textContent = `Reconnect ${name}`;
            err.hidden = false;
            err.textContent = `Could not get the ${name} login page: ${f.message}`;
          }
        },
      },
      `Reconnect ${name}`,
    );
    return h(
      "section",
      { class: "prompt-card", "data-testid": `auth-required-${slug}`, "data-reason": reasonShort(d.reason) },
      h("p", { class: "prompt-reason", "data-testid": `auth-required-reason-${slug}` }, h("strong", null, `${reasonShort(d.reason) || "Login required"}: `), `${name} data is paused, and its live streams were stopped, because ${reasonLabel(d.reason) || "the broker needs a new login"}.`),
      d.message ? h("p", { class: "muted" }, d.message) : null,
      d.disconnectedAt ? h("p", { class: "muted small" }, `Disconnected ${fmtTime(d.disconnectedAt)}`) : null,
      err,
      h(
        "div",
        { class: "actions" },
        btn,
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            "data-testid": `dismiss-${slug}`,
            onclick: () => {
              p.dismissed = true;
              this.render();
            },
          },
          "Not now",
        ),
      ),
    );
  }
}

export const gate = new Gate();

const REAL_BROKER_HOST = /(^|\.)(upstox\.com|fyers\.in)$/i;

/** Appends &account=NAME to a sandbox broker's login URL (never a real one). */
export function withSandboxAccount(url: string, account: string): string {
  if (!account) return url;
  try {
    if (REAL_BROKER_HOST.test(new URL(url).hostname)) return url;
  } catch {
    return url;
  }
  const hashAt = url.indexOf("#");
  const base = hashAt < 0 ? url : url.slice(0, hashAt);
  const frag = hashAt < 0 ? "" : url.slice(hashAt);
  return `${base}${base.includes("?") ? "&" : "?"}account=${encodeURIComponent(account)}${frag}`;
}

/**
 * Sends the browser to the broker's login dialog. The URL always comes from
 * GetLoginURL, never from an AuthRequired detail: its answer sets the
 * cookie that binds the login to this browser, without which the gateway's
 * callback refuses to attach an account (login CSRF). The gateway hands out
 * the same live state again, so a login already under way in another tab
 * keeps working. The callback completes the login and returns to
 * #/auth?connected=<broker>, which then goes back to returnHash.
 */
export async function startLogin(broker: Broker, opts: { account?: string; returnHash?: string } = {}): Promise<void> {
  const url = (await connections.getLoginURL({ broker })).url;
  if (!url) throw new Error("the gateway returned no login URL");
  const account = opts.account ?? prefs.get(`sandboxAccount.${brokerSlug(broker)}`);
  if (opts.returnHash) returnTo.set(opts.returnHash);
  window.location.assign(withSandboxAccount(url, account));
}
