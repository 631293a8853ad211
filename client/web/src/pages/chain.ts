import { Broker } from "@gen/feedgate/v1/common_pb";
import type { GetOptionChainResponse, OptionSide, OptionStrike } from "@gen/feedgate/v1/market_data_pb";
import { marketData } from "../api";
import { alertBox, field, h, replace } from "../dom";
import { BROKERS, brokerFromSlug, brokerName, brokerSlug, fmtGreek, fmtInt, fmtPct, fmtPrice, fmtSigned, fmtTime, nextTuesday, reasonShort } from "../format";
import { gate } from "../gate";
import { navigate, replaceQuery, type Page } from "../router";
import { sandboxSlot } from "../sandbox";
import { connStore } from "../state";

export const UNDERLYINGS: Record<number, { key: string; label: string }[]> = {
  [Broker.UPSTOX]: [
    { key: "NSE_INDEX|Nifty 50", label: "Nifty 50 (NSE_INDEX|Nifty 50)" },
    { key: "NSE_INDEX|Nifty Bank", label: "Nifty Bank (NSE_INDEX|Nifty Bank)" },
  ],
  [Broker.FYERS]: [
    { key: "NSE:NIFTY50-INDEX", label: "Nifty 50 (NSE:NIFTY50-INDEX)" },
    { key: "NSE:NIFTYBANK-INDEX", label: "Nifty Bank (NSE:NIFTYBANK-INDEX)" },
  ],
};

type Col = { label: string; cell: (s: OptionSide) => string; extra?: boolean; cls?: string };

// Read from the outside in: calls end with LTP next to the strike, puts
// start with it.
const CALL_COLS: Col[] = [
  { label: "OI", cell: (s) => fmtInt(s.oi) },
  { label: "Chg OI", cell: (s) => fmtSigned(s.oi - s.prevOi, fmtInt) },
  { label: "Volume", cell: (s) => fmtInt(s.volume) },
  { label: "IV", cell: (s) => fmtPct(s.iv) },
  { label: "Vega", cell: (s) => fmtGreek(s.vega), extra: true },
  { label: "Theta", cell: (s) => fmtGreek(s.theta), extra: true },
  { label: "Gamma", cell: (s) => fmtGreek(s.gamma), extra: true },
  { label: "Delta", cell: (s) => fmtGreek(s.delta) },
  { label: "Bid", cell: (s) => fmtPrice(s.bidPrice), extra: true },
  { label: "Ask", cell: (s) => fmtPrice(s.askPrice), extra: true },
  { label: "LTP", cell: (s) => fmtPrice(s.ltp), cls: "ltp" },
];
const PUT_COLS: Col[] = [...CALL_COLS].reverse();

export const chainPage: Page = (root, query) => {
  const firstConnected = BROKERS.find((b) => connStore.isConnected(b.broker))?.broker;
  let broker = brokerFromSlug(query.get("broker")) ?? firstConnected ?? Broker.UPSTOX;

  const brokerSel = h(
    "select",
    { id: "chain-broker", "data-testid": "chain-broker" },
    BROKERS.map((b) => h("option", { value: b.slug, selected: b.broker === broker }, b.name)),
  );
  const underlyingSel = h("select", { id: "chain-underlying", "data-testid": "chain-underlying" });
  const fillUnderlyings = (want?: string | null) => {
    const list = UNDERLYINGS[broker] ?? [];
    replace(underlyingSel, list.map((u) => h("option", { value: u.key, selected: u.key === want }, u.label)));
    if (want && !list.some((u) => u.key === want)) underlyingSel.append(h("option", { value: want, selected: true }, want));
  };
  fillUnderlyings(query.get("underlying"));
  const badge = sandboxSlot(() => broker);
  brokerSel.addEventListener("change", () => {
    broker = brokerFromSlug(brokerSel.value) ?? Broker.UPSTOX;
    badge.refresh();
    fillUnderlyings();
  });
  const expiry = h("input", { id: "chain-expiry", "data-testid": "chain-expiry", type: "date", required: true, value: query.get("expiry") || nextTuesday() });
  const greeks = h("input", { type: "checkbox", id: "chain-all-cols", "data-testid": "chain-all-cols" });
  const loadBtn = h("button", { class: "primary", type: "submit", id: "chain-load", "data-testid": "chain-load" }, "Load chain");

  const status = h("div", { class: "status-line", id: "chain-status", "data-testid": "chain-status", "aria-live": "polite" });
  const summary = h("div", { class: "chain-summary", id: "chain-summary" });
  const toolbar = h("div", { class: "chain-toolbar", hidden: true });
  const wrap = h("div", { class: "table-wrap chain-wrap", id: "chain-wrap" });

  const selected = new Set<string>();
  let current: GetOptionChainResponse | undefined;
  let ac: AbortController | undefined;

  const streamBtn = h("button", { type: "button", class: "secondary", id: "chain-stream-selected", "data-testid": "chain-stream-selected", disabled: true }, "Stream selected");
  const atmBtn = h("button", { type: "button", class: "secondary", id: "chain-stream-atm", "data-testid": "chain-stream-atm" }, "Stream ATM ±2 strikes");
  const goTicks = (keys: string[]) => {
    if (!current || keys.length === 0) return;
    navigate("ticks", { broker: brokerSlug(current.broker || broker), mode: "greeks", keys: keys.join(",") });
  };
  streamBtn.addEventListener("click", () => goTicks([...selected]));
  atmBtn.addEventListener("click", () => {
    if (!current) return;
    const i = atmIndex(current);
    const keys = [current.underlyingKey];
    for (const s of current.strikes.slice(Math.max(0, i - 2), i + 3)) {
      if (s.call?.instrumentKey) keys.push(s.call.instrumentKey);
      if (s.put?.instrumentKey) keys.push(s.put.instrumentKey);
    }
    goTicks(keys);
  });
  toolbar.append(h("span", { class: "muted small" }, "Tap a call or put to select it for the live feed."), h("div", { class: "actions" }, atmBtn, streamBtn));
  const updateSel = () => {
    streamBtn.disabled = selected.size === 0;
    streamBtn.textContent = selected.size ? `Stream selected (${selected.size})` : "Stream selected";
  };

  greeks.addEventListener("change", () => wrap.classList.toggle("show-extra", greeks.checked));

  const load = async () => {
    ac?.abort();
    const mine = (ac = new AbortController());
    const underlyingKey = underlyingSel.value;
    const expiryDate = expiry.value;
    replaceQuery("chain", { broker: brokerSlug(broker), underlying: underlyingKey, expiry: expiryDate });
    loadBtn.disabled = true;
    replace(status, h("span", { class: "spinner", "aria-hidden": "true" }), ` Loading ${underlyingKey} ${expiryDate} from ${brokerName(broker)}…`);
    try {
      const res = await marketData.getOptionChain({ broker, underlyingKey, expiryDate }, { signal: mine.signal });
      if (mine.signal.aborted) return;
      current = res;
      selected.clear();
      updateSel();
      renderChain(res);
      replace(status, `${res.strikes.length} strikes · fetched ${fmtTime(res.fetchedAt, "just now")}`);
    } catch (e) {
      if (mine.signal.aborted) return;
      const f = gate.handle(e);
      current = undefined;
      toolbar.hidden = true;
      replace(summary);
      replace(wrap);
      if (f.kind === "auth-required") {
        replace(status, alertBox("warning", "chain-auth-required", `${brokerName(f.detail.broker)}: ${reasonShort(f.detail.reason) || "login required"}. Reconnect to load the chain.`));
      } else if (f.kind !== "canceled" && f.kind !== "bad-key") {
        replace(status, alertBox("error", "chain-error", `Could not load the option chain: ${f.message}`));
      }
    } finally {
      if (ac === mine) loadBtn.disabled = false;
    }
  };

  const renderChain = (res: GetOptionChainResponse) => {
    const spot = res.underlyingSpotPrice;
    const atm = atmIndex(res);
    let callOi = 0;
    let putOi = 0;
    for (const s of res.strikes) {
      callOi += s.call?.oi ?? 0;
      putOi += s.put?.oi ?? 0;
    }
    replace(
      summary,
      stat("Underlying", res.underlyingKey, "chain-underlying-key"),
      stat("Spot", fmtPrice(spot), "chain-spot"),
      stat("Expiry", res.expiryDate),
      stat("ATM strike", atm >= 0 ? fmtPrice(res.strikes[atm].strikePrice) : "—", "chain-atm"),
      stat("PCR (OI)", callOi > 0 ? (putOi / callOi).toFixed(2) : "—"),
    );
    toolbar.hidden = res.strikes.length === 0;
    if (res.strikes.length === 0) {
      replace(wrap, h("p", { class: "empty" }, "The broker listed no strikes for this expiry."));
      return;
    }
    const head1 = h(
      "tr",
      { class: "side-head" },
      h("th", { colspan: CALL_COLS.length, class: "calls-head" }, "Calls"),
      h("th", { class: "strike-head" }, ""),
      h("th", { colspan: PUT_COLS.length, class: "puts-head" }, "Puts"),
    );
    const th = (c: Col, side: string) => h("th", { class: `${side} ${c.extra ? "extra" : ""} ${c.cls ?? ""}`, scope: "col" }, c.label);
    const head2 = h("tr", null, CALL_COLS.map((c) => th(c, "call")), h("th", { class: "strike", scope: "col" }, "Strike"), PUT_COLS.map((c) => th(c, "put")));
    const body = h("tbody");
    res.strikes.forEach((s, i) => body.append(row(s, spot, i === atm)));
    const table = h("table", { class: "chain", id: "chain-table", "data-testid": "chain-table" }, h("thead", null, head1, head2), body);
    replace(wrap, table);
    rememberLabels(res);
    const atmRow = table.querySelector<HTMLElement>("tr.atm");
    if (atmRow) requestAnimationFrame(() => centerIn(wrap, atmRow, atmRow.querySelector<HTMLElement>("th.strike") ?? atmRow));
  };

  const sideCells = (side: OptionSide | undefined, cols: Col[], cls: string, itm: boolean): HTMLElement[] => {
    if (!side) return cols.map((c) => h("td", { class: `${cls} ${c.extra ? "extra" : ""} none` }, "—"));
    const key = side.instrumentKey;
    return cols.map((c) => {
      const td = h("td", { class: `${cls} ${c.extra ? "extra" : ""} ${c.cls ?? ""} ${itm ? "itm" : ""} selectable`, "data-key": key, title: key }, c.cell(side));
      return td;
    });
  };

  const row = (s: OptionStrike, spot: number, isAtm: boolean): HTMLElement => {
    const tr = h(
      "tr",
      { class: isAtm ? "atm" : "", "data-strike": String(s.strikePrice), "data-testid": isAtm ? "atm-row" : null, id: isAtm ? "atm-row" : null },
      sideCells(s.call, CALL_COLS, "call", s.strikePrice < spot),
      h("th", { class: "strike", scope: "row" }, fmtPrice(s.strikePrice), h("span", { class: "pcr" }, `PCR ${Number.isFinite(s.pcr) ? s.pcr.toFixed(2) : "—"}`)),
      sideCells(s.put, PUT_COLS, "put", s.strikePrice > spot),
    );
    return tr;
  };

  // Selecting contracts for the live feed: one click toggles a whole side.
  wrap.addEventListener("click", (ev) => {
    const td = (ev.target as HTMLElement).closest<HTMLElement>("td.selectable");
    if (!td?.dataset.key) return;
    const key = td.dataset.key;
    const on = !selected.has(key);
    if (on) selected.add(key);
    else selected.delete(key);
    wrap.querySelectorAll<HTMLElement>("td.selectable").forEach((c) => {
      if (c.dataset.key === key) c.classList.toggle("selected", on);
    });
    updateSel();
  });

  const form = h(
    "form",
    {
      class: "toolbar-form card",
      id: "chain-form",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        void load();
      },
    },
    field("Broker", brokerSel),
    field("Underlying", underlyingSel),
    field("Expiry", expiry),
    h("label", { class: "check" }, greeks, " All columns"),
    h("div", { class: "actions" }, loadBtn),
  );
  root.append(h("h1", null, "Option chain", " ", badge.el), form, status, summary, toolbar, wrap);
  void load();
  return () => ac?.abort();
};

/**
 * Scrolls the table's own box (not the page) so that row is in the middle
 * vertically and cell horizontally: the ATM strike in view on any screen.
 */
function centerIn(box: HTMLElement, row: HTMLElement, cell: HTMLElement): void {
  const b = box.getBoundingClientRect();
  const r = row.getBoundingClientRect();
  const c = cell.getBoundingClientRect();
  box.scrollTop += r.top - b.top - (box.clientHeight - r.height) / 2;
  box.scrollLeft += c.left - b.left - (box.clientWidth - c.width) / 2;
}

/** Readable names for the chain's contracts, for the live ticks table. */
function rememberLabels(res: GetOptionChainResponse): void {
  const name = res.underlyingKey.split(/[|:]/).pop()?.replace(/-INDEX$/, "") ?? res.underlyingKey;
  const labels: Record<string, string> = {};
  for (const s of res.strikes) {
    const k = `${name} ${res.expiryDate} ${s.strikePrice}`;
    if (s.call?.instrumentKey) labels[s.call.instrumentKey] = `${k} CE`;
    if (s.put?.instrumentKey) labels[s.put.instrumentKey] = `${k} PE`;
  }
  try {
    sessionStorage.setItem("feedgate.labels", JSON.stringify(labels));
  } catch {
    // Storage full or off: the ticks table shows bare keys.
  }
}

function stat(label: string, value: string, testid?: string): HTMLElement {
  return h("div", { class: "stat" }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value", "data-testid": testid ?? null }, value));
}

/** Index of the strike closest to the spot price; -1 for an empty chain. */
export function atmIndex(res: GetOptionChainResponse): number {
  let best = -1;
  let dist = Infinity;
  res.strikes.forEach((s, i) => {
    const d = Math.abs(s.strikePrice - res.underlyingSpotPrice);
    if (d < dist) {
      dist = d;
      best = i;
    }
  });
  return best;
}
