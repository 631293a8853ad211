// The connection banner on every page, fed by
// ConnectionService.WatchConnectionStatus. The watch is reconnected with
// jittered exponential backoff on transient errors, and restarted when it
// goes silent for longer than three heartbeats.

import { ConnectionState, DisconnectReason, type Connection } from "@gen/feedgate/v1/common_pb";
import { connections } from "./api";
import { h, replace, sleep } from "./dom";
import { BROKERS, brokerName, brokerSlug, fmtAgo, fmtTime, reasonShort, tsDate } from "./format";
import { gate } from "./gate";
import { sandboxBadge } from "./sandbox";
import { connStore } from "./state";

const SILENCE_MS = 50_000; // heartbeats come every 15 s
const MAX_BACKOFF_MS = 30_000;

export class ConnectionWatch {
  private stop: AbortController | undefined;

  start(): void {
    if (this.stop) return;
    this.stop = new AbortController();
    void this.loop(this.stop.signal);
  }

  halt(): void {
    this.stop?.abort();
    this.stop = undefined;
    connStore.reset();
  }

  private async loop(signal: AbortSignal): Promise<void> {
    let attempt = 0;
    while (!signal.aborted) {
      connStore.setWatch(attempt === 0 ? "connecting" : "reconnecting", connStore.watchDetail);
      const ac = new AbortController();
      const onStop = () => ac.abort();
      signal.addEventListener("abort", onStop);
      let silence = 0;
      const arm = () => {
        clearTimeout(silence);
        silence = window.setTimeout(() => ac.abort(), SILENCE_MS);
      };
      let failure = "the status stream ended";
      try {
        arm();
        for await (const msg of connections.watchConnectionStatus({}, { signal: ac.signal })) {
          arm();
          attempt = 0;
          connStore.setConnections(msg.connections);
          connStore.setWatch("live");
          for (const c of msg.connections) if (c.state === ConnectionState.CONNECTED) gate.connected(c.broker);
        }
      } catch (e) {
        if (signal.aborted) return;
        const f = gate.handle(e);
        if (f.kind === "bad-key" || f.kind === "auth-required") {
          connStore.setWatch("stopped", f.message);
          return;
        }
        if (f.kind === "forbidden" || (f.kind === "other" && !f.transient)) {
          // Not something waiting will fix (e.g. the gateway lacks the RPC).
          connStore.setWatch("stopped", f.message);
          return;
        }
        failure = f.kind === "canceled" ? "no heartbeat from the server" : f.message;
      } finally {
        clearTimeout(silence);
        signal.removeEventListener("abort", onStop);
      }
      if (signal.aborted) return;
      attempt++;
      const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(attempt, 8)) * (0.5 + Math.random() / 2);
      connStore.setWatch("reconnecting", `${failure}; retrying in ${Math.ceil(delay / 1000)} s`);
      await sleep(delay, signal);
    }
  }
}

/** Renders the banner into root and keeps it current. */
export function mountBanner(root: HTMLElement): () => void {
  const render = () => {
    const items = BROKERS.map(({ broker }) => pill(connStore.get(broker), broker));
    const w = connStore.watch;
    const watchLabel =
      w === "live" ? "Live" : w === "connecting" ? "Connecting…" : w === "reconnecting" ? "Reconnecting…" : w === "stopped" ? "Status unavailable" : "";
    replace(
      root,
      h(
        "div",
        { class: "banner-inner" },
        h("div", { class: "banner-brokers" }, items),
        h(
          "div",
          { class: `watch-status watch-${w}`, "data-testid": "watch-status", "data-state": w, title: connStore.watchDetail || (connStore.lastMessageAt ? `Last update ${fmtTime(connStore.lastMessageAt)}` : "") },
          h("span", { class: "dot", "aria-hidden": "true" }),
          watchLabel,
          connStore.watchDetail && w !== "live" ? h("span", { class: "muted small watch-detail" }, ` ${connStore.watchDetail}`) : null,
        ),
      ),
    );
  };
  render();
  const unsub = connStore.subscribe(render);
  // Keep "connected 3 min ago" honest.
  const tick = window.setInterval(render, 30_000);
  return () => {
    unsub();
    clearInterval(tick);
  };
}

function pill(c: Connection | undefined, broker: Connection["broker"]): HTMLElement {
  const name = brokerName(broker);
  const slug = brokerSlug(broker);
  if (!c) {
    return h("span", { class: "pill pill-unknown", "data-testid": `banner-${slug}`, "data-state": "unknown" }, h("span", { class: "dot" }), `${name}: …`);
  }
  if (c.notConfigured) {
    return h(
      "span",
      { class: "pill pill-off", "data-testid": `banner-${slug}`, "data-state": "not-configured", title: c.notConfigured },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("strong", null, name),
      h("span", { class: "pill-state" }, "not offered here"),
    );
  }
  const connected = c.state === ConnectionState.CONNECTED;
  const since = connected ? tsDate(c.connectedAt) : tsDate(c.disconnectedAt);
  return h(
    "a",
    {
      href: "#/auth",
      class: `pill ${connected ? "pill-ok" : c.reason === DisconnectReason.NOT_CONNECTED ? "pill-never" : "pill-bad"}`,
      "data-testid": `banner-${slug}`,
      "data-state": connected ? "connected" : "disconnected",
      title: connected ? `Connected ${fmtTime(since)}` : `${reasonShort(c.reason)} ${since ? fmtTime(since) : ""}`,
    },
    h("span", { class: "dot", "aria-hidden": "true" }),
    h("strong", null, name),
    sandboxBadge(broker),
    h("span", { class: "pill-state" }, connected ? "connected" : reasonShort(c.reason).toLowerCase() || "disconnected"),
    connected && since ? h("span", { class: "pill-detail" }, `· ${fmtAgo(since)}`) : null,
    !connected ? h("span", { class: "pill-action" }, "Connect →") : null,
  );
}
