import { timestampDate, type Timestamp, type Duration } from "@bufbuild/protobuf/wkt";
import { Broker, ConnectionState, DisconnectReason } from "@gen/feedgate/v1/common_pb";

export const BROKERS: { broker: Broker; slug: string; name: string }[] = [
  { broker: Broker.UPSTOX, slug: "upstox", name: "Upstox" },
  { broker: Broker.FYERS, slug: "fyers", name: "Fyers" },
];

export function brokerName(b: Broker): string {
  return BROKERS.find((x) => x.broker === b)?.name ?? "Unknown broker";
}
export function brokerSlug(b: Broker): string {
  return BROKERS.find((x) => x.broker === b)?.slug ?? "unknown";
}
export function brokerFromSlug(s: string | null | undefined): Broker | undefined {
  return BROKERS.find((x) => x.slug === (s ?? "").toLowerCase())?.broker;
}

export function stateLabel(s: ConnectionState): string {
  switch (s) {
    case ConnectionState.CONNECTED:
      return "Connected";
    case ConnectionState.DISCONNECTED:
      return "Disconnected";
    default:
      return "Unknown";
  }
}

/** The reason in words, for people. */
export function reasonLabel(r: DisconnectReason): string {
  switch (r) {
    case DisconnectReason.TOKEN_REVOKED:
      return "the broker revoked the session (logged out elsewhere or replaced by a newer login)";
    case DisconnectReason.TOKEN_EXPIRED:
      return "the session expired";
    case DisconnectReason.NOT_CONNECTED:
      return "this broker has not been connected yet";
    case DisconnectReason.LOGGED_OUT:
      return "you disconnected it";
    default:
      return "";
  }
}

/** A short form of the reason for badges. */
export function reasonShort(r: DisconnectReason): string {
  switch (r) {
    case DisconnectReason.TOKEN_REVOKED:
      return "Session revoked";
    case DisconnectReason.TOKEN_EXPIRED:
      return "Session expired";
    case DisconnectReason.NOT_CONNECTED:
      return "Not connected";
    case DisconnectReason.LOGGED_OUT:
      return "Logged out";
    default:
      return "";
  }
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

export function tsDate(t: Timestamp | undefined): Date | undefined {
  if (!t || (t.seconds === 0n && t.nanos === 0)) return undefined;
  return timestampDate(t);
}

export function fmtTime(t: Timestamp | Date | undefined, empty = "—"): string {
  const d = t instanceof Date ? t : tsDate(t);
  return d ? dateTime.format(d) : empty;
}

export function fmtClock(d: Date | undefined, empty = "—"): string {
  return d ? timeOnly.format(d) : empty;
}

export function fmtAgo(d: Date | undefined, now = new Date()): string {
  if (!d) return "";
  const s = Math.round((now.getTime() - d.getTime()) / 1000);
  const abs = Math.abs(s);
  const suffix = s >= 0 ? "ago" : "from now";
  if (abs < 60) return `${abs}s ${suffix}`;
  if (abs < 3600) return `${Math.round(abs / 60)} min ${suffix}`;
  if (abs < 86400 * 2) return `${Math.round(abs / 3600)} h ${suffix}`;
  return `${Math.round(abs / 86400)} days ${suffix}`;
}

export function fmtDuration(d: Duration | undefined): string {
  if (!d) return "—";
  const ms = Number(d.seconds) * 1000 + d.nanos / 1e6;
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

const price = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const int = new Intl.NumberFormat("en-IN", { maximumFractionDigits: 0 });
const dec4 = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 4, maximumFractionDigits: 4 });
const dec2 = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

export const fmtPrice = (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? "—" : price.format(n));
export const fmtInt = (n: number | bigint | undefined): string => (n === undefined ? "—" : int.format(typeof n === "bigint" ? Number(n) : n));
export const fmtGreek = (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? "—" : dec4.format(n));
export const fmtPct = (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? "—" : `${dec2.format(n)}%`);
export const fmtSigned = (n: number | undefined, f = fmtPrice): string =>
  n === undefined || !Number.isFinite(n) ? "—" : (n > 0 ? "+" : "") + f(n);

/** YYYY-MM-DD of the calendar day in India (IST, UTC+05:30 all year). */
function istParts(now: Date): { y: number; m: number; d: number; dow: number; minutes: number } {
  const ist = new Date(now.getTime() + 330 * 60_000);
  return {
    y: ist.getUTCFullYear(),
    m: ist.getUTCMonth(),
    d: ist.getUTCDate(),
    dow: ist.getUTCDay(),
    minutes: ist.getUTCHours() * 60 + ist.getUTCMinutes(),
  };
}

/**
 * The next weekly expiry: Tuesday. Today counts while the market is open
 * (until 15:30 IST); after that, the Tuesday after.
 */
export function nextTuesday(now = new Date()): string {
  const p = istParts(now);
  let add = (2 - p.dow + 7) % 7;
  if (add === 0 && p.minutes >= 15 * 60 + 30) add = 7;
  const d = new Date(Date.UTC(p.y, p.m, p.d + add));
  return d.toISOString().slice(0, 10);
}
