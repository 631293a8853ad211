import { Broker } from "@gen/feedgate/v1/common_pb";
import { FeedMode, UpstreamState, type Tick } from "@gen/feedgate/v1/market_data_pb";
import { marketData } from "../api";
import { alertBox, field, h, replace, sleep } from "../dom";
import { BROKERS, brokerFromSlug, brokerName, brokerSlug, fmtAgo, fmtClock, fmtGreek, fmtInt, fmtPct, fmtPrice, fmtSigned, tsDate } from "../format";
import { sandboxSlot } from "../sandbox";
import { gate } from "../gate";
import { replaceQuery, type Page } from "../router";
import { UNDERLYINGS } from "./chain";

const MODES: { slug: string; mode: FeedMode; label: string }[] = [
  { slug: "ltpc", mode: FeedMode.LTPC, label: "LTPC (price, time, qty, close)" },
  { slug: "full", mode: FeedMode.FULL, label: "Full (depth, OHLC, volume, OI)" },
  { slug: "greeks", mode: FeedMode.OPTION_GREEKS, label: "Option greeks" },
];

const SILENCE_MS = 50_000; // heartbeats every 15 s
const MAX_BACKOFF_MS = 30_000;
const MAX_KEYS = 500;

type FeedState = "idle" | "connecting" | "live" | "reconnecting" | "stopped" | "auth-required" | "error";

type Row = { tr: HTMLTableRowElement; cells: Record<string, HTMLTableCellElement>; ltp?: number };
const COLS: { id: string; label: string; cls?: string }[] = [
  { id: "ltp", label: "LTP", cls: "num strong" },
  { id: "chg", label: "Chg", cls: "num" },
  { id: "chgp", label: "Chg %", cls: "num" },
  { id: "ltq", label: "LTQ", cls: "num" },
  { id: "volume", label: "Volume", cls: "num" },
  { id: "oi", label: "OI", cls: "num" },
  { id: "iv", label: "IV", cls: "num" },
  { id: "bid", label: "Bid", cls: "num" },
  { id: "ask", label: "Ask", cls: "num" },
  { id: "delta", label: "Delta", cls: "num" },
  { id: "ltt", label: "Last trade", cls: "num" },
];

export const ticksPage: Page = (root, query) => {
  let broker = brokerFromSlug(query.get("broker")) ?? Broker.UPSTOX;
  const brokerSel = h("select", { id: "ticks-broker", "data-testid": "ticks-broker" }, BROKERS.map((b) => h("option", { value: b.slug, selected: b.broker === broker }, b.name)));
  const modeSlug = MODES.some((m) => m.slug === query.get("mode")) ? query.get("mode")! : "ltpc";
  const modeSel = h("select", { id: "ticks-mode", "data-testid": "ticks-mode" }, MODES.map((m) => h("option", { value: m.slug, selected: m.slug === modeSlug }, m.label)));
  const keysInput = h("textarea", { id: "ticks-keys", "data-testid": "ticks-keys", rows: 3, spellcheck: "false", placeholder: "One instrument key per line, e.g. NSE_INDEX|Nifty 50" });
  keysInput.value = (query.get("keys") ?? "").split(",").filter(Boolean).join("\n");
  const quick = h("div", { class: "chips" });
  const fillQuick = () =>
    replace(
      quick,
      h("span", { class: "muted small" }, "Add:"),
      (UNDERLYINGS[broker] ?? []).map((u) =>
        h(
          "button",
          {
            type: "button",
            class: "chip",
            onclick: () => {
              const keys = parseKeys(keysInput.value);
              if (!keys.includes(u.key)) keysInput.value = [...keys, u.key].join("\n");
            },
          },
          u.key,
        ),
      ),
      h("a", { href: "#/chain", class: "small" }, "Pick options from the chain →"),
    );
  fillQuick();
  const badge = sandboxSlot(() => broker);
  brokerSel.addEventListener("change", () => {
    broker = brokerFromSlug(brokerSel.value) ?? Broker.UPSTOX;
    badge.refresh();
    fillQuick();
  });

  const startBtn = h("button", { class: "primary", type: "submit", id: "ticks-start", "data-testid": "ticks-start" }, "Start stream");
  const stopBtn = h("button", { class: "secondary", type: "button", id: "ticks-stop", "data-testid": "ticks-stop", disabled: true }, "Stop");
  const formMsg = h("div", { class: "form-msg" });

  // Status strip: stream state, upstream state, heartbeat, counters.
  const stateEl = h("span", { class: "badge", id: "feed-state", "data-testid": "feed-state", "data-state": "idle" }, "Idle");
  const upstreamEl = h("span", { class: "badge", id: "feed-upstream", "data-testid": "feed-upstream", "data-state": "unknown" }, "—");
  const hbDot = h("span", { class: "hb-dot", "aria-hidden": "true" });
  const hbEl = h("span", { id: "feed-heartbeat", "data-testid": "feed-heartbeat", "data-beats": "0" }, "No heartbeat yet");
  let beats = 0;
  const countEl = h("span", { id: "tick-count", "data-testid": "tick-count", "data-count": "0" }, "0");
  const conflatedEl = h("span", { id: "tick-conflated" }, "0");
  const detailEl = h("div", { class: "feed-detail", id: "feed-detail", "data-testid": "feed-detail", "aria-live": "polite" });
  const statusBar = h(
    "div",
    { class: "feed-status card" },
    h("div", { class: "feed-status-item" }, h("span", { class: "stat-label" }, "Stream"), stateEl),
    h("div", { class: "feed-status-item" }, h("span", { class: "stat-label" }, "Upstream"), upstreamEl),
    h("div", { class: "feed-status-item" }, h("span", { class: "stat-label" }, "Heartbeat"), h("span", { class: "hb" }, hbDot, hbEl)),
    h("div", { class: "feed-status-item" }, h("span", { class: "stat-label" }, "Ticks"), countEl),
    h("div", { class: "feed-status-item" }, h("span", { class: "stat-label" }, "Conflated"), conflatedEl),
  );

  const tbody = h("tbody", { id: "ticks-body" });
  const table = h(
    "table",
    { class: "ticks", id: "ticks-table", "data-testid": "ticks-table" },
    h("thead", null, h("tr", null, h("th", { class: "instrument", scope: "col" }, "Instrument"), COLS.map((c) => h("th", { class: c.cls ?? "", scope: "col" }, c.label)))),
    tbody,
  );
  const rows = new Map<string, Row>();
  const labels = loadLabels();

  let tickCount = 0;
  let conflated = 0;
  let lastHeartbeat: Date | undefined;
  let session: { ac: AbortController; untrack: () => void; userStopped: boolean } | undefined;

  const setState = (s: FeedState, label: string, detail?: HTMLElement | string) => {
    stateEl.dataset.state = s;
    stateEl.className = `badge badge-${s === "live" ? "ok" : s === "auth-required" || s === "error" ? "bad" : s === "idle" || s === "stopped" ? "" : "warn"}`;
    stateEl.textContent = label;
    if (detail !== undefined) replace(detailEl, detail);
  };
  const setUpstream = (st: UpstreamState, msg?: string) => {
    const label = st === UpstreamState.LIVE ? "Live" : st === UpstreamState.RECONNECTING ? "Reconnecting" : st === UpstreamState.CONNECTING ? "Connecting" : "—";
    upstreamEl.dataset.state = UpstreamState[st] ?? "UNSPECIFIED";
    upstreamEl.className = `badge ${st === UpstreamState.LIVE ? "badge-ok" : st === UpstreamState.UNSPECIFIED ? "" : "badge-warn"}`;
    upstreamEl.textContent = label;
    upstreamEl.title = msg ?? "";
  };

  // Ticks are applied once per frame: the latest per instrument wins.
  const pending = new Map<string, Tick>();
  let frame = 0;
  const flush = () => {
    frame = 0;
    for (const t of pending.values()) applyTick(t);
    pending.clear();
    countEl.textContent = fmtInt(tickCount);
    countEl.dataset.count = String(tickCount);
    conflatedEl.textContent = fmtInt(conflated);
  };

  const ensureRow = (key: string): Row => {
    let r = rows.get(key);
    if (r) return r;
    const cells: Record<string, HTMLTableCellElement> = {};
    const label = labels[key];
    const tr = h("tr", { "data-key": key }, h("th", { class: "instrument", scope: "row" }, label ? [h("div", { class: "inst-label" }, label), h("div", { class: "inst-key" }, key)] : key), COLS.map((c) => (cells[c.id] = h("td", { class: c.cls ?? "" }, "—"))));
    r = { tr, cells };
    rows.set(key, r);
    tbody.append(tr);
    return r;
  };

  const applyTick = (t: Tick) => {
    const r = ensureRow(t.instrumentKey);
    const c = r.cells;
    const chg = t.closePrice ? t.ltp - t.closePrice : undefined;
    if (r.ltp !== undefined && t.ltp !== r.ltp) {
      const up = t.ltp > r.ltp;
      c.ltp.classList.remove("flash-up", "flash-down");
      void c.ltp.offsetWidth; // restart the animation
      c.ltp.classList.add(up ? "flash-up" : "flash-down");
    }
    r.ltp = t.ltp;
    c.ltp.textContent = fmtPrice(t.ltp);
    c.chg.textContent = fmtSigned(chg);
    c.chgp.textContent = chg !== undefined && t.closePrice ? fmtSigned((chg / t.closePrice) * 100, fmtPct) : "—";
    c.chg.className = c.chgp.className = `num ${chg === undefined ? "" : chg >= 0 ? "pos" : "neg"}`;
    c.ltq.textContent = t.ltq ? fmtInt(t.ltq) : "—";
    c.volume.textContent = t.volume ? fmtInt(t.volume) : "—";
    c.oi.textContent = t.oi ? fmtInt(t.oi) : "—";
    c.iv.textContent = t.iv ? fmtPct(t.iv) : "—";
    c.bid.textContent = t.bidPrice ? `${fmtPrice(t.bidPrice)} × ${fmtInt(t.bidQty)}` : "—";
    c.ask.textContent = t.askPrice ? `${fmtPrice(t.askPrice)} × ${fmtInt(t.askQty)}` : "—";
    c.delta.textContent = t.greeks ? fmtGreek(t.greeks.delta) : "—";
    c.ltt.textContent = t.lttUnixMs ? fmtClock(new Date(Number(t.lttUnixMs))) : "—";
    r.tr.dataset.updated = String(tickCount);
  };

  // The heartbeat indicator ages between heartbeats.
  const hbTimer = window.setInterval(() => {
    if (lastHeartbeat) hbEl.textContent = `${fmtClock(lastHeartbeat)} (${fmtAgo(lastHeartbeat)})`;
  }, 1000);

  const stop = (why: "user" | "leave") => {
    if (!session) return;
    session.userStopped = true;
    session.ac.abort();
    session.untrack();
    session = undefined;
    startBtn.disabled = false;
    stopBtn.disabled = true;
    setUpstream(UpstreamState.UNSPECIFIED);
    if (why === "user") setState("stopped", "Stopped", "");
  };

  const start = (keys: string[], mode: FeedMode) => {
    stop("leave");
    const ac = new AbortController();
    const s = { ac, untrack: gate.track(broker, ac), userStopped: false };
    session = s;
    startBtn.disabled = true;
    stopBtn.disabled = false;
    tickCount = 0;
    conflated = 0;
    rows.clear();
    replace(tbody);
    for (const k of keys) ensureRow(k);
    flush();
    void run(s, broker, keys, mode);
  };

  const run = async (s: NonNullable<typeof session>, b: Broker, keys: string[], mode: FeedMode) => {
    let attempt = 0;
    const name = brokerName(b);
    while (!s.ac.signal.aborted) {
      setState(attempt ? "reconnecting" : "connecting", attempt ? `Reconnecting (attempt ${attempt})` : "Connecting…");
      const attemptAc = new AbortController();
      const onStop = () => attemptAc.abort();
      s.ac.signal.addEventListener("abort", onStop);
      let silence = 0;
      const arm = () => {
        clearTimeout(silence);
        silence = window.setTimeout(() => attemptAc.abort(), SILENCE_MS);
      };
      let why = "the stream ended";
      try {
        arm();
        for await (const msg of marketData.streamMarketFeed({ broker: b, instrumentKeys: keys, mode }, { signal: attemptAc.signal })) {
          arm();
          const ev = msg.event;
          switch (ev.case) {
            case "ticks":
              attempt = 0;
              if (stateEl.dataset.state !== "live") setState("live", "Live", "");
              tickCount += ev.value.ticks.length;
              conflated += Number(ev.value.conflated);
              for (const t of ev.value.ticks) pending.set(t.instrumentKey, t);
              if (!frame) frame = requestAnimationFrame(flush);
              break;
            case "heartbeat":
              attempt = 0;
              if (stateEl.dataset.state !== "live") setState("live", "Live", "");
              lastHeartbeat = tsDate(ev.value.serverTime) ?? new Date();
              hbEl.textContent = `${fmtClock(lastHeartbeat)} (${fmtAgo(lastHeartbeat)})`;
              hbEl.dataset.beats = String(++beats);
              hbDot.classList.remove("beat");
              void hbDot.offsetWidth;
              hbDot.classList.add("beat");
              setUpstream(ev.value.upstreamState);
              break;
            case "upstreamStatus":
              if (stateEl.dataset.state !== "live") setState("live", "Live", "");
              setUpstream(ev.value.state, ev.value.message);
              if (ev.value.state === UpstreamState.RECONNECTING) {
                replace(detailEl, alertBox("warning", "feed-upstream-reconnecting", `${name} feed interrupted: ${ev.value.message || "reconnecting"}${ev.value.attempt ? ` (attempt ${ev.value.attempt})` : ""}. The stream stays open.`));
              } else if (ev.value.state === UpstreamState.LIVE) {
                replace(detailEl);
              }
              break;
            case "authRequired":
              // The gate stops every stream of this broker (this one too) and
              // asks the user to reconnect. Nothing here retries.
              gate.authRequired(ev.value);
              break;
          }
        }
      } catch (e) {
        if (s.userStopped) return;
        if (s.ac.signal.aborted) {
          // Stopped by the gate: this broker needs a login (handled below).
        } else if (attemptAc.signal.aborted) {
          why = "no heartbeat for 50 s";
        } else {
          const f = gate.handle(e);
          if (f.kind === "auth-required") {
            s.ac.abort(); // never retry a dead stream
          } else if (f.kind === "bad-key" || f.kind === "forbidden" || (f.kind === "other" && !f.transient)) {
            setState("error", "Stopped", alertBox("error", "feed-error", `The feed stopped: ${f.message}`));
            finish(s);
            return;
          } else {
            why = f.message;
          }
        }
      } finally {
        clearTimeout(silence);
        s.ac.signal.removeEventListener("abort", onStop);
      }
      if (s.userStopped) return;
      if (s.ac.signal.aborted) {
        setState("auth-required", "Reconnect needed", alertBox("warning", "feed-auth-required", `${name} needs a new login; the stream was stopped and will not retry by itself. Use “Reconnect ${name}”, then start the stream again.`));
        finish(s);
        return;
      }
      attempt++;
      const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(attempt, 8)) * (0.5 + Math.random() / 2);
      setState("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s`, alertBox("warning", "feed-reconnecting", `The stream was interrupted (${why}); retrying in ${Math.ceil(delay / 1000)} s.`));
      await sleep(delay, s.ac.signal);
    }
  };

  const finish = (s: NonNullable<typeof session>) => {
    s.untrack();
    setUpstream(UpstreamState.UNSPECIFIED);
    if (session === s) {
      session = undefined;
      startBtn.disabled = false;
      stopBtn.disabled = true;
    }
  };

  stopBtn.addEventListener("click", () => stop("user"));

  const form = h(
    "form",
    {
      class: "card ticks-form",
      id: "ticks-form",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        const keys = parseKeys(keysInput.value);
        replace(formMsg);
        if (keys.length === 0) return void formMsg.append(alertBox("error", "ticks-form-error", "Enter at least one instrument key."));
        if (keys.length > MAX_KEYS) return void formMsg.append(alertBox("error", "ticks-form-error", `At most ${MAX_KEYS} instrument keys.`));
        const m = MODES.find((x) => x.slug === modeSel.value) ?? MODES[0];
        replaceQuery("ticks", { broker: brokerSlug(broker), mode: m.slug, keys: keys.join(",") });
        start(keys, m.mode);
      },
    },
    h("div", { class: "form-row" }, field("Broker", brokerSel), field("Mode", modeSel)),
    field("Instrument keys", keysInput),
    quick,
    formMsg,
    h("div", { class: "actions" }, startBtn, stopBtn),
  );

  root.append(h("h1", null, "Live ticks", " ", badge.el), form, statusBar, detailEl, h("div", { class: "table-wrap" }, table));

  // Opened with instruments (from the chain, or back from a reconnect):
  // start at once, unless this broker is waiting for a login.
  const initial = parseKeys(keysInput.value);
  if (initial.length > 0) {
    if (gate.isBlocked(broker)) {
      setState("auth-required", "Reconnect needed", alertBox("warning", "feed-auth-required", `${brokerName(broker)} needs a new login before streaming.`));
    } else {
      start(initial, (MODES.find((m) => m.slug === modeSlug) ?? MODES[0]).mode);
    }
  }

  return () => {
    stop("leave");
    clearInterval(hbTimer);
    if (frame) cancelAnimationFrame(frame);
  };
};

function loadLabels(): Record<string, string> {
  try {
    return JSON.parse(sessionStorage.getItem("feedgate.labels") ?? "{}") as Record<string, string>;
  } catch {
    return {};
  }
}

function parseKeys(text: string): string[] {
  const seen = new Set<string>();
  for (const part of text.split(/[\n,]+/)) {
    const k = part.trim();
    if (k) seen.add(k);
  }
  return [...seen];
}
