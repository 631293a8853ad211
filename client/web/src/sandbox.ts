// Marks, wherever a broker's data shows, that the gateway serves that
// broker with its sandbox: synthetic prices and every login approved.

import type { Broker } from "@gen/feedgate/v1/common_pb";
import { h, replace } from "./dom";
import { brokerSlug } from "./format";
import { connStore } from "./state";

const TITLE = "This gateway serves this broker with its sandbox: prices are synthetic and any account is approved. No real broker account is behind it.";

/** The badge for broker b, or null when a real broker serves it. */
export function sandboxBadge(b: Broker): HTMLElement | null {
  if (!connStore.get(b)?.sandbox) return null;
  return h("span", { class: "badge badge-sandbox", "data-testid": `sandbox-badge-${brokerSlug(b)}`, title: TITLE }, "sandbox: synthetic data");
}

/**
 * A slot that shows sandboxBadge(current()) and keeps it current as the
 * connections change; call refresh() when current() changes. It stops
 * listening once it has left the page.
 */
export function sandboxSlot(current: () => Broker): { el: HTMLElement; refresh: () => void } {
  const el = h("span", { class: "sandbox-slot" });
  const refresh = () => replace(el, sandboxBadge(current()));
  const unsub = connStore.subscribe(() => {
    if (!el.isConnected && el.dataset.mounted) {
      unsub();
      return;
    }
    if (el.isConnected) el.dataset.mounted = "1";
    refresh();
  });
  refresh();
  return { el, refresh };
}
