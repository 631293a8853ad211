import type { Connection } from "@gen/feedgate/v1/common_pb";
import { Broker, ConnectionState } from "@gen/feedgate/v1/common_pb";

export type WatchState = "idle" | "connecting" | "live" | "reconnecting" | "stopped";

type Listener = () => void;

/** The caller's broker connections as last reported, shared by all views. */
class ConnectionStore {
  connections: Connection[] | undefined;
  watch: WatchState = "idle";
  watchDetail = "";
  lastMessageAt: Date | undefined;
  private listeners = new Set<Listener>();

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  setConnections(conns: Connection[]): void {
    this.connections = conns;
    this.lastMessageAt = new Date();
    this.emit();
  }

  setWatch(state: WatchState, detail = ""): void {
    this.watch = state;
    this.watchDetail = detail;
    this.emit();
  }

  get(b: Broker): Connection | undefined {
    return this.connections?.find((c) => c.broker === b);
  }

  isConnected(b: Broker): boolean {
    return this.get(b)?.state === ConnectionState.CONNECTED;
  }

  reset(): void {
    this.connections = undefined;
    this.watch = "idle";
    this.watchDetail = "";
    this.emit();
  }

  private emit(): void {
    for (const fn of this.listeners) fn();
  }
}

export const connStore = new ConnectionStore();
