import { toJsonString } from "@bufbuild/protobuf";
import { ConnectionSchema, ConnectionState, DisconnectReason, type Broker, type Connection } from "@gen/feedgate/v1/common_pb";
import { connections } from "../api";
import { alertBox, h, replace } from "../dom";
import { BROKERS, brokerFromSlug, brokerName, fmtAgo, fmtTime, reasonLabel, reasonShort, stateLabel, tsDate } from "../format";
import { gate, startLogin } from "../gate";
import { replaceQuery, type Page } from "../router";
import { prefs, returnTo } from "../session";
import { sandboxBadge } from "../sandbox";
import { connStore } from "../state";

// #/auth: the broker connections, the OAuth return (?connected= or
// ?login_error=), Connect and Disconnect.
export const connectionsPage: Page = (root, query) => {
  const flash = h("div", { id: "auth-flash" });
  const connected = brokerFromSlug(query.get("connected"));
  const loginError = query.get("login_error");
  if (connected !== undefined) {
    gate.connected(connected);
    const back = returnTo.take();
    if (back && !back.startsWith("#/auth")) {
      // Back to where the reconnect started, e.g. the live ticks.
      sessionStorage.setItem("feedgate.flash", `${brokerName(connected)} connected.`);
      window.location.replace(back);
      return;
    }
    flash.append(alertBox("success", "auth-connected", `${brokerName(connected)} connected.`));
  } else if (query.get("connected")) {
    flash.append(alertBox("success", "auth-connected", `${query.get("connected")} connected.`));
  }
  if (loginError) {
    returnTo.take();
    const b = brokerFromSlug(query.get("broker"));
    const name = b !== undefined ? brokerName(b) : "the broker";
    flash.append(alertBox("error", "auth-login-error", h("strong", null, `${b !== undefined ? brokerName(b) : "Broker"} login failed: `), loginErrorMessage(loginError, name)));
  }
  if (connected !== undefined || loginError) replaceQuery("auth", {}); // a reload should not repeat the message

  const cards = h("div", { class: "cards", id: "broker-cards" });
  // Re-render a card only when its connection changed (heartbeats repeat the
  // same data), so a half-typed sandbox account survives.
  const shown = new Map<Broker, string>();
  const render = () => {
    for (const { broker, slug } of BROKERS) {
      const c = connStore.get(broker);
      const sig = c ? toJsonString(ConnectionSchema, c) : "";
      if (shown.get(broker) === sig && cards.querySelector(`#broker-${slug}`)) continue;
      shown.set(broker, sig);
      const next = card(broker, c, flash);
      const old = cards.querySelector(`#broker-${slug}`);
      if (old) old.replaceWith(next);
      else cards.append(next);
    }
  };
  render();
  const unsub = connStore.subscribe(render);

  root.append(
    h("h1", null, "Broker connections"),
    h("p", { class: "muted lead" }, "feedgate uses your own broker login for option chains and live data. Connect each broker you use; when a broker ends the session, log in again here."),
    flash,
    cards,
  );

  // The watch fills the store; ask once too, so the page is right at once.
  const ac = new AbortController();
  connections
    .getConnectionStatus({}, { signal: ac.signal })
    .then((r) => {
      if (connStore.watch !== "live") connStore.setConnections(r.connections);
    })
    .catch((e) => {
      const f = gate.handle(e);
      if (f.kind === "other") flash.append(alertBox("error", "auth-status-error", `Could not load the connection status: ${f.message}`));
    });

  return () => {
    unsub();
    ac.abort();
  };
};

function card(broker: Broker, c: Connection | undefined, flash: HTMLElement): HTMLElement {
  const { slug } = BROKERS.find((b) => b.broker === broker)!;
  const name = brokerName(broker);
  if (c?.notConfigured) {
    // The gateway does not offer this broker: say so and what the operator
    // sets; there is nothing to press.
    return h(
      "section",
      { class: "card broker-card is-off", id: `broker-${slug}`, "data-testid": `broker-card-${slug}`, "data-state": "not-configured" },
      h("header", { class: "card-head" }, h("h2", null, name), h("span", { class: "badge", "data-testid": `state-${slug}` }, "Not offered")),
      h("p", { class: "muted", "data-testid": `not-configured-${slug}` }, `${name} is not offered on this gateway. Ask its operator to configure a ${name} app.`),
      h("p", { class: "muted small" }, c.notConfigured),
    );
  }
  const isConnected = c?.state === ConnectionState.CONNECTED;
  const never = !isConnected && c?.reason === DisconnectReason.NOT_CONNECTED;
  const account = h("input", {
    id: `sandbox-account-${slug}`,
    "data-testid": `sandbox-account-${slug}`,
    type: "text",
    placeholder: "sandbox",
    autocomplete: "off",
    spellcheck: "false",
    value: prefs.get(`sandboxAccount.${slug}`),
  });
  const err = h("div", { class: "card-msg" });
  const connectBtn = h(
    "button",
    {
      class: isConnected ? "secondary" : "primary",
      type: "button",
      id: `connect-${slug}`,
      "data-testid": `connect-${slug}`,
      onclick: async () => {
        connectBtn.disabled = true;
        const acct = account.value.trim();
        prefs.set(`sandboxAccount.${slug}`, acct);
        try {
          await startLogin(broker, { account: acct });
        } catch (e) {
          const f = gate.handle(e);
          connectBtn.disabled = false;
          replace(err, alertBox("error", `connect-error-${slug}`, `Could not start the ${name} login: ${f.message}`));
        }
      },
    },
    isConnected ? `Log in to ${name} again` : `Connect ${name}`,
  );
  const disconnectBtn = h(
    "button",
    {
      class: "danger",
      type: "button",
      id: `disconnect-${slug}`,
      "data-testid": `disconnect-${slug}`,
      disabled: !isConnected,
      onclick: async () => {
        if (!window.confirm(`Disconnect ${name}? feedgate will log out at ${name} and forget the token.`)) return;
        disconnectBtn.disabled = true;
        try {
          const r = await connections.disconnect({ broker });
          const conns = (connStore.connections ?? []).filter((x) => x.broker !== broker);
          if (r.connection) connStore.setConnections([...conns, r.connection].sort((a, b) => a.broker - b.broker));
          replace(flash, alertBox("info", "auth-disconnected", `${name} disconnected${r.brokerLogoutConfirmed ? "" : " (the broker did not confirm the logout; the token is forgotten anyway)"}.`));
        } catch (e) {
          const f = gate.handle(e);
          disconnectBtn.disabled = false;
          replace(err, alertBox("error", `disconnect-error-${slug}`, `Could not disconnect: ${f.message}`));
        }
      },
    },
    "Disconnect",
  );

  const state = c ? stateLabel(c.state) : "Loading…";
  const rows: [string, string][] = [];
  if (c) {
    if (!isConnected && c.reason) rows.push(["Reason", reasonLabel(c.reason) ? capital(reasonLabel(c.reason)) : reasonShort(c.reason)]);
    if (c.brokerUserId) rows.push(["Account", c.brokerUserId]);
    rows.push(["Connected", withAgo(tsDate(c.connectedAt))]);
    if (tsDate(c.disconnectedAt)) rows.push(["Disconnected", withAgo(tsDate(c.disconnectedAt))]);
    rows.push(["Last validated", withAgo(tsDate(c.lastValidatedAt))]);
    if (isConnected) rows.push(["Token expires", withAgo(tsDate(c.tokenExpiresAt))]);
    if (c.lastError) rows.push(["Last error", c.lastError]);
  }
  return h(
    "section",
    { class: `card broker-card ${isConnected ? "is-connected" : never ? "is-never" : c ? "is-disconnected" : ""}`, id: `broker-${slug}`, "data-testid": `broker-card-${slug}`, "data-state": c ? (isConnected ? "connected" : "disconnected") : "unknown" },
    h(
      "header",
      { class: "card-head" },
      h("div", { class: "card-title" }, h("h2", null, name), sandboxBadge(broker)),
      h("span", { class: `badge ${isConnected ? "badge-ok" : never ? "" : c ? "badge-bad" : ""}`, "data-testid": `state-${slug}` }, never ? "Not connected" : state),
    ),
    rows.length ? h("dl", { class: "facts" }, rows.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)])) : null,
    !c?.sandbox ? null : h("details", { class: "sandbox-opts", open: !!prefs.get(`sandboxAccount.${slug}`) }, h("summary", null, "Sandbox broker options"), h("label", { class: "field" }, h("span", { class: "field-label" }, "Sandbox account"), account, h("span", { class: "field-hint" }, "Only for the sandbox broker: log in as this test account."))),
    err,
    h("div", { class: "actions" }, connectBtn, disconnectBtn),
  );
}

function withAgo(d: Date | undefined): string {
  return d ? `${fmtTime(d)} (${fmtAgo(d)})` : "—";
}

function capital(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

// The messages for the gateway's login error codes. The URL carries only a
// code; anything else gets the generic message, so a crafted link cannot
// put its own words on this page.
const LOGIN_ERRORS: Record<string, (broker: string) => string> = {
  state_missing: () => "the login link was incomplete. Press Connect to start again.",
  state_unknown: () => "this login was already used or is unknown. Press Connect to start again.",
  state_expired: () => "the login took longer than 10 minutes. Press Connect to start again.",
  state_foreign: () => "the login was started for another user or broker. Press Connect to start again.",
  user_revoked: () => "the feedgate user it was started for has been revoked.",
  login_in_progress: () => "this login is already being completed. Wait a moment and reload.",
  code_missing: (b) => `${b} sent no authorization code. Press Connect to start again.`,
  code_refused: (b) => `${b} refused the authorization code (wrong, expired or already used). Press Connect to start again.`,
  denied: (b) => `the login was not approved at ${b}.`,
  account_in_use: (b) => `this ${b} account is already connected to another feedgate user. Disconnect it there first, or log in with another ${b} account.`,
  broker_unavailable: (b) => `${b} did not answer. Press Connect to try again in a moment.`,
};

export function loginErrorMessage(code: string, broker: string): string {
  const m = LOGIN_ERRORS[code];
  return m ? m(broker) : "the login could not be completed. Press Connect to try again.";
}
