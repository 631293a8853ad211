import { Broker, ConnectionState } from "@gen/feedgate/v1/common_pb";
import type { UserConnection } from "@gen/feedgate/v1/admin_pb";
import { admin } from "../api";
import { alertBox, field, h, replace } from "../dom";
import { BROKERS, brokerName, fmtAgo, fmtDuration, fmtInt, fmtTime, reasonShort, stateLabel, tsDate } from "../format";
import { gate } from "../gate";
import type { Page } from "../router";

// #/admin: the token-health view for admin keys.
export function adminPage(onNotAdmin: () => void): Page {
  return (root) => {
    const ac = new AbortController();
    const signal = ac.signal;
    const notAdmin = () => {
      onNotAdmin();
      replace(root, h("h1", null, "Token health"), alertBox("warning", "admin-forbidden", "This page is for admin API keys only."));
    };

    // --- validation sweep and cache ---
    const sweepOut = h("div", { class: "sweep-out", id: "validate-result", "data-testid": "validate-result" });
    const validateBtn = h("button", { class: "primary", type: "button", id: "validate-all", "data-testid": "validate-all" }, "Validate all tokens now");
    validateBtn.addEventListener("click", async () => {
      validateBtn.disabled = true;
      replace(sweepOut, h("span", { class: "spinner", "aria-hidden": "true" }), " Checking every connected token with its broker…");
      try {
        const r = await admin.validateAllTokens({ broker: Number(filterBroker.value) as Broker }, { signal });
        replace(
          sweepOut,
          h(
            "div",
            { class: "stats-grid" },
            stat("Checked", fmtInt(r.checked), "validate-checked"),
            stat("Valid", fmtInt(r.valid), "validate-valid", "ok"),
            stat("Invalidated", fmtInt(r.invalidated), "validate-invalidated", r.invalidated ? "bad" : ""),
            stat("Errors", fmtInt(r.errors), "validate-errors", r.errors ? "warn" : ""),
            stat("Took", fmtDuration(r.duration)),
          ),
        );
        void loadList(currentToken());
        void loadStats();
      } catch (e) {
        const f = gate.handle(e);
        if (f.kind === "forbidden") return notAdmin();
        replace(sweepOut, alertBox("error", "validate-error", `Validation failed: ${f.message}`));
      } finally {
        validateBtn.disabled = false;
      }
    });

    const statsOut = h("div", { class: "stats-grid", id: "cache-stats", "data-testid": "cache-stats" });
    const clearOut = h("div", { class: "form-msg" });
    const refreshStatsBtn = h("button", { class: "secondary", type: "button", id: "cache-refresh", "data-testid": "cache-refresh" }, "Refresh");
    const clearBtn = h("button", { class: "danger", type: "button", id: "cache-clear", "data-testid": "cache-clear" }, "Clear the whole cache");
    const loadStats = async () => {
      try {
        const s = await admin.getValidationCacheStats({}, { signal });
        replace(
          statsOut,
          stat("Entries", fmtInt(s.entries), "cache-entries"),
          stat("Hits", fmtInt(s.hits), "cache-hits"),
          stat("Misses", fmtInt(s.misses), "cache-misses"),
          stat("Hit ratio", `${(s.hitRatio * 100).toFixed(1)}%`, "cache-hit-ratio"),
          stat("TTL", fmtDuration(s.ttl), "cache-ttl"),
        );
      } catch (e) {
        const f = gate.handle(e);
        if (f.kind === "forbidden") return notAdmin();
        if (f.kind !== "canceled") replace(statsOut, alertBox("error", "cache-error", `Could not load the cache statistics: ${f.message}`));
      }
    };
    refreshStatsBtn.addEventListener("click", () => void loadStats());
    clearBtn.addEventListener("click", async () => {
      if (!window.confirm("Drop every cached validation result? The next checks will ask the brokers.")) return;
      clearBtn.disabled = true;
      try {
        const r = await admin.clearValidationCache({}, { signal });
        replace(clearOut, alertBox("success", "cache-cleared", `Cleared ${fmtInt(r.cleared)} cache ${r.cleared === 1n ? "entry" : "entries"}.`));
        void loadStats();
      } catch (e) {
        const f = gate.handle(e);
        if (f.kind === "forbidden") return notAdmin();
        replace(clearOut, alertBox("error", "cache-clear-error", `Could not clear the cache: ${f.message}`));
      } finally {
        clearBtn.disabled = false;
      }
    });

    // --- connections list ---
    const filterBroker = h(
      "select",
      { id: "filter-broker", "data-testid": "filter-broker" },
      h("option", { value: String(Broker.UNSPECIFIED) }, "All brokers"),
      BROKERS.map((b) => h("option", { value: String(b.broker) }, b.name)),
    );
    const filterState = h(
      "select",
      { id: "filter-state", "data-testid": "filter-state" },
      h("option", { value: String(ConnectionState.UNSPECIFIED) }, "All states"),
      h("option", { value: String(ConnectionState.CONNECTED) }, "Connected"),
      h("option", { value: String(ConnectionState.DISCONNECTED) }, "Disconnected"),
    );
    const pageSize = h(
      "select",
      { id: "page-size", "data-testid": "page-size" },
      ["10", "25", "50", "100"].map((n) => h("option", { value: n, selected: n === "25" }, n)),
    );
    const listMsg = h("div", { class: "status-line", id: "list-status", "data-testid": "list-status" });
    const tbody = h("tbody", { id: "connections-body" });
    const table = h(
      "table",
      { class: "data", id: "connections-table", "data-testid": "connections-table" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          ["User", "Broker", "State", "Reason", "Broker account", "Gen.", "Connected", "Last validated", "Expires", "Disconnected", "Last error"].map((c) => h("th", { scope: "col" }, c)),
        ),
      ),
      tbody,
    );
    const prevBtn = h("button", { class: "secondary", type: "button", id: "page-prev", "data-testid": "page-prev", disabled: true }, "← Previous");
    const nextBtn = h("button", { class: "secondary", type: "button", id: "page-next", "data-testid": "page-next", disabled: true }, "Next →");
    const pageLabel = h("span", { class: "muted small", id: "page-label" }, "");

    // tokens[i] is the page_token of page i (page 0: "").
    let tokens: string[] = [""];
    let page = 0;
    let next = "";
    const currentToken = () => tokens[page] ?? "";
    let listAc: AbortController | undefined;
    const loadList = async (token: string) => {
      listAc?.abort();
      const mine = (listAc = new AbortController());
      signal.addEventListener("abort", () => mine.abort(), { once: true });
      replace(listMsg, h("span", { class: "spinner", "aria-hidden": "true" }), " Loading…");
      try {
        const r = await admin.listConnections(
          { broker: Number(filterBroker.value) as Broker, state: Number(filterState.value) as ConnectionState, pageSize: Number(pageSize.value), pageToken: token },
          { signal: mine.signal },
        );
        next = r.nextPageToken;
        replace(tbody, r.connections.length ? r.connections.map(connRow) : h("tr", null, h("td", { colspan: 11, class: "empty" }, "No connections match.")));
        replace(listMsg, `${r.connections.length} connection${r.connections.length === 1 ? "" : "s"} on this page`);
        prevBtn.disabled = page === 0;
        nextBtn.disabled = !next;
        pageLabel.textContent = `Page ${page + 1}`;
      } catch (e) {
        if (mine.signal.aborted) return;
        const f = gate.handle(e);
        if (f.kind === "forbidden") return notAdmin();
        replace(listMsg, alertBox("error", "list-error", `Could not list connections: ${f.message}`));
      }
    };
    const restart = () => {
      tokens = [""];
      page = 0;
      void loadList("");
    };
    filterBroker.addEventListener("change", restart);
    filterState.addEventListener("change", restart);
    pageSize.addEventListener("change", restart);
    nextBtn.addEventListener("click", () => {
      if (!next) return;
      page++;
      tokens[page] = next;
      void loadList(next);
    });
    prevBtn.addEventListener("click", () => {
      if (page === 0) return;
      page--;
      void loadList(currentToken());
    });

    root.append(
      h("h1", null, "Token health"),
      h("p", { class: "muted lead" }, "Every user's broker connections, the validation sweep and the validation cache."),
      h(
        "div",
        { class: "cards two" },
        h("section", { class: "card" }, h("header", { class: "card-head" }, h("h2", null, "Validate tokens")), h("p", { class: "muted small" }, "Checks every connected token with its broker now (the broker filter below applies), ignoring the cache."), h("div", { class: "actions" }, validateBtn), sweepOut),
        h("section", { class: "card" }, h("header", { class: "card-head" }, h("h2", null, "Validation cache")), statsOut, clearOut, h("div", { class: "actions" }, refreshStatsBtn, clearBtn)),
      ),
      h(
        "section",
        { class: "card" },
        h("header", { class: "card-head" }, h("h2", null, "Connections")),
        h("div", { class: "form-row filters" }, field("Broker", filterBroker), field("State", filterState), field("Page size", pageSize)),
        listMsg,
        h("div", { class: "table-wrap" }, table),
        h("div", { class: "pager" }, prevBtn, pageLabel, nextBtn),
      ),
    );
    void loadStats();
    restart();
    return () => ac.abort();
  };
}

function connRow(u: UserConnection): HTMLElement {
  const c = u.connection;
  const connected = c?.state === ConnectionState.CONNECTED;
  const t = (x: Parameters<typeof tsDate>[0]) => {
    const d = tsDate(x);
    return d ? h("span", { title: fmtTime(d) }, fmtAgo(d)) : "—";
  };
  return h(
    "tr",
    { "data-user": u.userId, "data-broker": c ? String(c.broker) : "" },
    h("th", { scope: "row" }, h("div", null, u.userName), h("div", { class: "muted small mono" }, u.userId)),
    h("td", null, c ? brokerName(c.broker) : "—"),
    h("td", null, h("span", { class: `badge ${connected ? "badge-ok" : "badge-bad"}` }, c ? stateLabel(c.state) : "—")),
    h("td", null, c && !connected ? reasonShort(c.reason) : ""),
    h("td", { class: "mono" }, c?.brokerUserId || "—"),
    h("td", { class: "num" }, c ? String(c.tokenGeneration) : "—"),
    h("td", null, t(c?.connectedAt)),
    h("td", null, t(c?.lastValidatedAt)),
    h("td", null, connected ? t(c?.tokenExpiresAt) : "—"),
    h("td", null, t(c?.disconnectedAt)),
    h("td", { class: "small wrap" }, c?.lastError || ""),
  );
}

function stat(label: string, value: string, testid?: string, tone = ""): HTMLElement {
  return h("div", { class: `stat ${tone ? `stat-${tone}` : ""}` }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value", "data-testid": testid ?? null }, value));
}
