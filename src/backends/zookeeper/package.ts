/**
 * What the ZooKeeper backend uses of the `node-zookeeper-client` package (which has no type
 * declarations): the shapes it reads, loading it lazily, the internals it reaches into, and
 * the fixes it applies to them. client.ts builds its promise layer on this.
 *
 * @module
 */
import { performance } from "node:perf_hooks";
import { BackendUnavailableError } from "../../core/errors.js";
import type { Stat } from "./client.js";
import { BACKEND } from "./errors.js";

export type Cb = (error: unknown, ...rest: unknown[]) => void;
export interface RawStat {
  czxid: Buffer;
  mzxid: Buffer;
  pzxid: Buffer;
  ctime: Buffer;
  version: number;
  cversion: number;
  numChildren: number;
  ephemeralOwner: Buffer;
}
export interface RawEvent {
  readonly type: number;
  readonly path?: string;
}
export interface RawClient {
  connect(): void;
  close(): void;
  on(event: string, listener: (...args: unknown[]) => void): void;
  getSessionId(): Buffer;
  getSessionTimeout(): number;
  addAuthInfo(scheme: string, auth: Buffer): void;
  create(path: string, data: Buffer, acls: readonly object[], mode: number, cb: Cb): void;
  exists(path: string, watcher: ((event: RawEvent) => void) | undefined, cb: Cb): void;
  getData(path: string, watcher: ((event: RawEvent) => void) | undefined, cb: Cb): void;
  getChildren(path: string, watcher: ((event: RawEvent) => void) | undefined, cb: Cb): void;
  setData(path: string, data: Buffer, version: number, cb: Cb): void;
  remove(path: string, version: number, cb: Cb): void;
  connectionManager?: Manager;
}
export interface Library {
  createClient(connect: string, options: object): RawClient;
  ACL: new (perms: number, id: object) => { toRecord(): object };
  Id: new (scheme: string, id: string) => object;
}
/** The package's wire records, for the one request it has no method for. */
export interface Jute {
  protocol: {
    RequestHeader: new () => { type: number };
    CreateRequest: new () => Record<string, unknown>;
    DeleteRequest: new () => Record<string, unknown>;
    GetACLRequest: new () => Record<string, unknown>;
  };
  /** A multi's body: the package's op records (`acls` are ACL objects; versions kept as given). */
  TransactionRequest: new (
    ops: readonly object[],
  ) => object;
  Request: new (header: object, payload: object) => { toBuffer(): Buffer };
}
/** An answer as the package passes it to a queued request's callback. */
export interface RawResponse {
  readonly header: { readonly zxid: Buffer | number };
  readonly payload: {
    readonly path?: string;
    /** A multi's: one per op, `err` set on each op of a failed one (`type` -1). */
    readonly results?: readonly {
      readonly type: number;
      readonly err?: number;
      readonly stat?: RawStat;
      readonly path?: string;
    }[];
  } | null;
}
export interface Queue {
  queue(request: object, cb: (error: unknown, response: unknown) => void): void;
}
export interface Manager extends Queue {
  socket?: {
    destroy(): void;
    setTimeout(ms: number, listener: () => void): void;
    readonly destroyed: boolean;
    once(event: "close", listener: () => void): unknown;
    cork(): void;
    uncork(): void;
  };
  watcherManager?: { emit(event: RawEvent): unknown };
  pendingBuffer: Buffer | null;
  onSocketConnected(...args: unknown[]): unknown;
  onSocketData(...args: unknown[]): unknown;
}

/**
 * Three defects of the package that a failover hits: the unparsed tail of a connection's
 * last packet is kept and prepended to the next connection's data; the garbage that makes
 * is thrown from a socket handler (the process would die); and a server that accepts the
 * TCP connection but does not answer the handshake (one still starting) is waited for
 * without any bound. The tail is dropped at each new connection, a packet that cannot be
 * parsed drops the connection instead (the package then reopens it; requests in flight
 * fail with a connection loss), and an unanswered handshake is dropped after `handshakeMs`.
 */
export function harden(
  manager: Manager | undefined,
  handshaking: () => boolean,
  handshakeMs: number,
  seen: { handshakeSentAt: number; heardAt: number },
): void {
  if (!manager) return;
  const { onSocketConnected, onSocketData } = manager;
  manager.onSocketConnected = function (this: Manager, ...args: unknown[]) {
    this.pendingBuffer = null;
    // The handshake is written by the original handler, right after this.
    seen.handshakeSentAt = performance.now();
    const socket = this.socket;
    socket?.setTimeout(handshakeMs, () => {
      if (handshaking() && this.socket === socket) socket?.destroy();
    });
    return onSocketConnected.apply(this, args);
  };
  manager.onSocketData = function (this: Manager, ...args: unknown[]) {
    seen.heardAt = performance.now();
    try {
      return onSocketData.apply(this, args);
    } catch {
      this.pendingBuffer = null;
      this.socket?.destroy();
      return undefined;
    }
  };
}

let loaded: Promise<Library & { jute: Jute }> | undefined;
export function library(): Promise<Library & { jute: Jute }> {
  // A variable specifier: the package has no type declarations; `Library` is what is used.
  const name = "node-zookeeper-client";
  loaded ??= Promise.all([import(name), import(`${name}/lib/jute/index.js`)]).then(
    ([m, j]) => ({
      ...(((m as { default?: unknown }).default ?? m) as Library),
      jute: ((j as { default?: unknown }).default ?? j) as Jute,
    }),
    (cause: unknown) => {
      loaded = undefined;
      throw new BackendUnavailableError(
        'the zookeeper:// backend needs the "node-zookeeper-client" package (npm install node-zookeeper-client); it could not be loaded',
        { backend: BACKEND, cause },
      );
    },
  );
  return loaded;
}

/** A stat as Baton keeps it: zxids as bigints, the owner in hex. */
export function toStat(raw: RawStat): Stat {
  return {
    czxid: raw.czxid.readBigInt64BE(0),
    mzxid: raw.mzxid.readBigInt64BE(0),
    pzxid: raw.pzxid.readBigInt64BE(0),
    version: raw.version,
    cversion: raw.cversion,
    numChildren: raw.numChildren,
    ephemeralOwner: raw.ephemeralOwner.toString("hex"),
    ctime: Number(raw.ctime.readBigInt64BE(0)),
  };
}
