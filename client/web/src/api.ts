import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AdminService } from "@gen/feedgate/v1/admin_pb";
import { AuthRequiredSchema, type AuthRequired } from "@gen/feedgate/v1/common_pb";
import { ConnectionService } from "@gen/feedgate/v1/connection_pb";
import { MarketDataService } from "@gen/feedgate/v1/market_data_pb";
import { getKey } from "./session";

// Adds the feedgate API key to every request.
const bearer: Interceptor = (next) => async (req) => {
  const key = getKey();
  if (key) req.header.set("Authorization", `Bearer ${key}`);
  return next(req);
};

// The Connect protocol with the binary Protobuf codec: option chains and tick
// streams are mostly numbers, which are several times smaller and cheaper to
// decode in binary than in JSON (where int64 become strings). Errors stay
// JSON in the Connect protocol either way, with details base64-encoded, so
// ConnectError.findDetails works the same.
export const transport = createConnectTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const marketData = createClient(MarketDataService, transport);
export const connections = createClient(ConnectionService, transport);
export const admin = createClient(AdminService, transport);

/** What a failed call means for the dashboard. */
export type Failure =
  | { kind: "auth-required"; detail: AuthRequired; message: string }
  | { kind: "bad-key"; message: string }
  | { kind: "canceled"; message: string }
  | { kind: "forbidden"; message: string }
  | { kind: "other"; code: Code; transient: boolean; message: string };

// Codes worth retrying a long-lived stream for, with backoff.
const TRANSIENT = new Set<Code>([Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Aborted, Code.Unknown, Code.Internal]);

export function classify(err: unknown): Failure {
  const ce = ConnectError.from(err);
  const message = ce.rawMessage || Code[ce.code] || "request failed";
  switch (ce.code) {
    case Code.Canceled:
      return { kind: "canceled", message };
    case Code.Unauthenticated: {
      // The detail alone tells "reconnect your broker" from "your feedgate
      // key was refused"; never the message text.
      const [detail] = ce.findDetails(AuthRequiredSchema);
      return detail ? { kind: "auth-required", detail, message } : { kind: "bad-key", message };
    }
    case Code.PermissionDenied:
      return { kind: "forbidden", message };
    default:
      return { kind: "other", code: ce.code, transient: TRANSIENT.has(ce.code), message: `${Code[ce.code] ?? "error"}: ${message}` };
  }
}

export { Code };
