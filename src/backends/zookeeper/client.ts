/**
 * A thin promise layer over one `node-zookeeper-client` client (pure JavaScript; see
 * docs/backends/zookeeper.md for why not the C binding): result codes kept, zxids as
 * bigints, every call bounded by the caller's signal, and the send time of the last
 * request the server answered, which the session's local deadline counts from.
 *
 * @module
 */
import { abortable } from "../../core/abortable.js";
import { performance } from "node:perf_hooks";
import { BackendUnavailableError } from "../../core/errors.js";
import type { ZkConfig } from "./config.js";
import { BACKEND, RC, ZkError } from "./errors.js";
import {
  harden,
  library,
  type Cb,
  type Jute,
  type Manager,
  type RawClient,
  type RawEvent,
  type RawStat,
  toStat,
} from "./package.js";
import { type PersistentListener, PersistentWatches } from "./persistent-watches.js";
import { HandBuilt, type MultiOp } from "./requests.js";

export type { PersistentListener } from "./persistent-watches.js";
export { FLAGS, type MultiOp } from "./requests.js";

/** A znode's stat. */
export interface Stat {
  readonly czxid: bigint;
  readonly mzxid: bigint;
  readonly pzxid: bigint;
  readonly version: number;
  readonly cversion: number;
  readonly numChildren: number;
  /** Session id (hex) of an ephemeral node's owner; all zeros for other nodes. */
  readonly ephemeralOwner: string;
  /** Epoch ms of creation. */
  readonly ctime: number;
}

/** A one-shot watch callback: the event type (1 created, 2 deleted, 3 changed, 4 children). */
export type Watcher = (type: number) => void;

/**
 * One step as a handle saw it, for tests that count round trips: a request sent (`what`
 * names it, e.g. `listing /a/b`), its answer, a watch event (`what` is the event's type
 * and path, e.g. `deleted /a/b/n-...`), or a grant of a queue node (`what` is its path).
 */
export interface TraceEntry {
  readonly kind: "request" | "answer" | "event" | "grant";
  readonly what: string;
  /** performance.now() */
  readonly at: number;
}

const EVENT_NAMES: Readonly<Record<number, string>> = { 1: "created", 2: "deleted", 3: "changed", 4: "children" };

/**
 * Counters of this process's handles, for the herd benchmark (how many watch events a
 * release causes, and requests): one increment per request sent, one per event.
 */
export const wakeStats = { events: 0, requests: 0 };

/** Why a handle ended: closed by us, or by the server (session expired, auth failed). */
export type EndReason = "closed" | "expired";

/** One ZooKeeper client: one connection at a time, one server session. */
export class ZkHandle {
  readonly #raw: RawClient;
  readonly #requests: HandBuilt;
  readonly #watches: PersistentWatches;
  #connected = false;
  #ended: EndReason | null = null;
  #closing: Promise<void> = Promise.resolve();
  readonly #waiting = new Set<() => void>();
  /** Rejects each call not answered yet: see {@link ZkHandle.#end}. */
  readonly #unanswered = new Set<() => void>();
  readonly #endListeners = new Set<(reason: EndReason) => void>();
  /** performance.now() at which the last answered request was sent. */
  lastAckSentAt: number;
  /** When the current connection's handshake was sent, and when the server was last heard. */
  readonly #seen = { handshakeSentAt: 0, heardAt: 0 };
  #connectedAt = 0;
  #watchdog: NodeJS.Timeout | null = null;
  #everConnected = false;
  #epoch = 0;
  /** Whether this tick's requests are held back for one write (see #cork). */
  #corked = false;
  /** Test hook (`zookeeper-handoff.test.ts`): sees every request, answer and watch event. */
  trace: ((entry: TraceEntry) => void) | null = null;

  /**
   * Connects; rejects with `BackendUnavailableError` if no server answers within
   * `connectTimeoutMs`, or if the digest credentials are refused.
   */
  static async open(config: ZkConfig, connectTimeoutMs: number): Promise<ZkHandle> {
    const lib = await library();
    const raw = lib.createClient(config.connect, {
      sessionTimeout: config.sessionTimeoutMs,
      spinDelay: 100,
      retries: 0, // Baton retries itself, knowing what is safe to send again
    });
    // With credentials, only this user may change or delete Baton's nodes; anyone may read.
    const acl = config.digest
      ? [new lib.ACL(31, new lib.Id("auth", "")), new lib.ACL(1, new lib.Id("world", "anyone"))]
      : [new lib.ACL(31, new lib.Id("world", "anyone"))];
    const handle = new ZkHandle(raw, acl, lib.jute);
    harden(
      raw.connectionManager,
      () => !handle.#connected && handle.#ended === null,
      Math.min(2000, config.sessionTimeoutMs / 3),
      handle.#seen,
    );
    const sentAt = performance.now();
    if (config.digest) raw.addAuthInfo("digest", Buffer.from(config.digest));
    raw.connect();
    const connected = await handle.#firstConnect(connectTimeoutMs);
    if (!connected) {
      const refused = handle.#ended === "expired";
      void handle.close();
      const error = new BackendUnavailableError(
        refused
          ? `ZooKeeper at ${config.connect} refused the credentials`
          : `no ZooKeeper server at ${config.connect} answered within ${connectTimeoutMs} ms`,
        { backend: BACKEND },
      );
      if (refused) REFUSED.add(error);
      throw error;
    }
    handle.lastAckSentAt = Math.max(handle.lastAckSentAt, sentAt);
    handle.#watch();
    if (config.digest) {
      // Authentication is checked by the server after connecting: one read shows the result.
      try {
        await handle.exists("/");
      } catch (cause) {
        void handle.close();
        const error = new BackendUnavailableError(`ZooKeeper at ${config.connect} refused the credentials`, {
          backend: BACKEND,
          cause,
        });
        REFUSED.add(error);
        throw error;
      }
    }
    return handle;
  }

  private constructor(raw: RawClient, acl: readonly { toRecord(): object }[], jute: Jute) {
    this.#raw = raw;
    this.#requests = new HandBuilt(
      jute,
      acl,
      () => raw.connectionManager as Manager,
      (what, send) => this.#call(what, send),
    );
    this.#watches = new PersistentWatches(this.#requests, () => this.connected);
    this.lastAckSentAt = performance.now();
    // Events of persistent watches are for paths the package knows no watcher of; it drops
    // them, so they are taken here first.
    const watchers = raw.connectionManager?.watcherManager;
    if (watchers) {
      const emit = watchers.emit.bind(watchers);
      watchers.emit = (e: RawEvent) => {
        if (e.path !== undefined) this.#watches.dispatch(e.type, e.path);
        return emit(e);
      };
    }
    raw.on("connected", () => {
      if (this.#everConnected) this.#watches.rewatch();
      this.#everConnected = true;
      this.#connected = true;
      this.#epoch++;
      this.#connectedAt = performance.now();
      // The server answered a handshake naming our session: it renewed it no earlier than
      // the handshake was sent.
      if (this.#seen.handshakeSentAt > this.lastAckSentAt) this.lastAckSentAt = this.#seen.handshakeSentAt;
      for (const wake of [...this.#waiting]) wake();
    });
    raw.on("disconnected", () => {
      this.#connected = false;
    });
    raw.on("expired", () => this.#end("expired"));
    raw.on("authenticationFailed", () => this.#end("expired"));
  }

  /** The server's session id, in hex. */
  get sessionId(): string {
    return this.#raw.getSessionId().toString("hex");
  }

  /** The session timeout the server granted (never the requested one). */
  get negotiatedTimeoutMs(): number {
    return this.#raw.getSessionTimeout();
  }

  /**
   * Counts connections: it changes when a connection replaces the last one. Events that come
   * on one connection come in the server's order, each after the answers to the requests
   * the server handled before it; across a reconnection that no longer holds (the server
   * re-arms watches with one event for any number of changes).
   */
  get epoch(): number {
    return this.#epoch;
  }

  get connected(): boolean {
    return this.#connected && this.#ended === null;
  }

  get ended(): EndReason | null {
    return this.#ended;
  }

  /** Called once when the handle ends; the returned function takes the listener off. */
  onEnd(listener: (reason: EndReason) => void): () => void {
    this.#endListeners.add(listener);
    return () => this.#endListeners.delete(listener);
  }

  /** Resolves once connected (at once if connected); rejects when `signal` aborts or the handle ends. */
  waitConnected(signal: AbortSignal): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.#ended) return Promise.reject(endedError("waiting for a connection"));
    return abortable<void>(signal, (resolve, reject) => {
      const wake = () => (this.#ended ? reject(endedError("waiting for a connection")) : resolve());
      this.#waiting.add(wake);
      return () => this.#waiting.delete(wake);
    });
  }

  create(path: string, data: string, flags: number): Promise<string> {
    return this.createNode(path, data, flags).then((created) => created.path);
  }

  /** Creates a node; resolves with its path and creation zxid (see {@link HandBuilt.createNode}). */
  createNode(path: string, data: string, flags: number): Promise<{ path: string; czxid: bigint }> {
    return this.#requests.createNode(path, data, flags);
  }

  /**
   * Applies `ops` atomically: all or none. Resolves with the multi's zxid (the creation and
   * modification zxid of every node it wrote), the stat of each `set` and the path of each
   * `create` (a sequential node's full name), by op index; rejects with a `ZkMultiError`
   * naming the first op that failed (nothing was applied).
   */
  async multi(
    ops: readonly MultiOp[],
  ): Promise<{ zxid: bigint; stats: ReadonlyMap<number, Stat>; paths: ReadonlyMap<number, string> }> {
    const done = await this.#requests.multi(ops);
    return {
      zxid: done.zxid,
      stats: new Map([...done.stats].map(([i, raw]) => [i, toStat(raw)])),
      paths: done.paths,
    };
  }

  /**
   * Creates a container node (ZooKeeper 3.5+): the server deletes it some time after its
   * last child is gone, so lock and group parents leave no litter.
   */
  createContainer(path: string): Promise<void> {
    return this.#requests.createContainer(path);
  }

  /**
   * Watches every create, delete and data change below `path` (ZooKeeper 3.6+: ADD_WATCH,
   * opcode 106, mode PERSISTENT_RECURSIVE), until the returned function is called. Unlike
   * one-shot watches nothing slips between an event and the next read: every change is
   * reported, in order. Across a reconnection the package cannot carry it (its SET_WATCHES
   * has no persistent kind), so it is added again and the listener told to read everything
   * again (`reset`). Resolves once the server has it.
   */
  watchBelow(path: string, listener: PersistentListener): Promise<() => void> {
    return this.#watches.watchBelow(path, listener);
  }

  /**
   * A barrier (SYNC): resolves once this handle's server has caught up with the leader as of
   * the call, so what another session wrote before it is seen by the reads sent after it.
   */
  sync(path: string): Promise<void> {
    return this.#requests.sync(path);
  }

  /** The node's stat, or `null` if it does not exist. With `watch`, its next event is delivered. */
  async exists(path: string, watch?: Watcher): Promise<Stat | null> {
    const [stat] = await this.#call(`reading ${path}`, (cb) => this.#raw.exists(path, this.#event(watch), cb));
    return stat ? toStat(stat as RawStat) : null;
  }

  /** Data (UTF-8) and stat, or `null` if the node does not exist (then no watch is set). */
  async get(path: string, watch?: Watcher): Promise<{ stat: Stat; data: string } | null> {
    try {
      const [data, stat] = await this.#call(`reading ${path}`, (cb) => this.#raw.getData(path, this.#event(watch), cb));
      return { stat: toStat(stat as RawStat), data: data ? (data as Buffer).toString() : "" };
    } catch (error) {
      if (error instanceof ZkError && error.rc === RC.NONODE) return null;
      throw error;
    }
  }

  /** Children names and the parent's stat, or `null` if the parent does not exist. */
  async children(path: string, watch?: Watcher): Promise<{ children: string[]; stat: Stat } | null> {
    try {
      const [children, stat] = await this.#call(`listing ${path}`, (cb) =>
        this.#raw.getChildren(path, this.#event(watch), cb),
      );
      return { children: children as string[], stat: toStat(stat as RawStat) };
    } catch (error) {
      if (error instanceof ZkError && error.rc === RC.NONODE) return null;
      throw error;
    }
  }

  /**
   * `get`, answered through `done` while the package handles the answer, so in the server's
   * order with the events of persistent watches (see {@link ZkHandle.epoch}). A promise's
   * continuation runs only after the rest of the packet has been handled: an event that
   * came behind the answer would be handled before it. A failure (also a handle that has
   * ended) is passed as the error; a missing node as `null`.
   */
  getInOrder(path: string, done: (read: { stat: Stat; data: string } | null | ZkError) => void): void {
    this.#inOrder(
      `reading ${path}`,
      (cb) => this.#raw.getData(path, undefined, cb),
      ([data, stat]) => ({ stat: toStat(stat as RawStat), data: data ? (data as Buffer).toString() : "" }),
      done,
    );
  }

  /** `children`, answered as {@link ZkHandle.getInOrder} is. */
  childrenInOrder(path: string, done: (listed: { children: string[]; stat: Stat } | null | ZkError) => void): void {
    this.#inOrder(
      `listing ${path}`,
      (cb) => this.#raw.getChildren(path, undefined, cb),
      ([children, stat]) => ({ children: children as string[], stat: toStat(stat as RawStat) }),
      done,
    );
  }

  #inOrder<T>(
    what: string,
    send: (cb: Cb) => void,
    parse: (rest: unknown[]) => T,
    done: (r: T | null | ZkError) => void,
  ) {
    let answered = false;
    const answer = (error: ZkError | null, rest: unknown[]) => {
      answered = true;
      done(error === null ? parse(rest) : error.rc === RC.NONODE ? null : error);
    };
    this.#call(what, send, answer).catch((error: unknown) => {
      // Rejected without an answer: the handle ended, or had ended before the call.
      if (!answered) done(error instanceof ZkError ? error : endedError(what));
    });
  }

  async set(path: string, data: string, version = -1): Promise<Stat> {
    const [stat] = await this.#call(`writing ${path}`, (cb) => this.#raw.setData(path, Buffer.from(data), version, cb));
    return toStat(stat as RawStat);
  }

  /** Deletes; resolves `false` if it was already gone. */
  async delete(path: string, version = -1): Promise<boolean> {
    try {
      await this.#call(`deleting ${path}`, (cb) => this.#raw.remove(path, version, cb));
      return true;
    } catch (error) {
      if (error instanceof ZkError && error.rc === RC.NONODE) return false;
      throw error;
    }
  }

  /**
   * Closes the session: the server deletes its ephemeral nodes at once (if it hears of it).
   * Resolves once the server has answered the close (it then closes the connection), so a
   * caller that awaits it knows the nodes are gone, or after 2 s when the network is silent
   * (the server then expires the session on its own).
   */
  close(): Promise<void> {
    if (this.#ended === "closed") return this.#closing;
    const wasConnected = this.connected;
    this.#end("closed");
    const socket = this.#raw.connectionManager?.socket;
    this.#closing =
      socket && !socket.destroyed && wasConnected
        ? new Promise<void>((resolve) => socket.once("close", resolve))
        : Promise.resolve();
    try {
      this.#raw.close();
    } catch {
      // already closed
    }
    const drop = () => this.#raw.connectionManager?.socket?.destroy();
    if (!wasConnected) drop();
    else setTimeout(drop, 2000).unref();
    return this.#closing;
  }

  /**
   * Drops a connection whose server has gone silent. The package notices only a closed
   * connection, and a server cut off by a failed switch, or frozen, never closes it: the
   * package would wait on it until the session is lost, while the ensemble's other servers
   * could serve. So a request goes out whenever the server has not been heard for half the
   * silence bound, and a connection silent for the whole bound (a quarter of the timeout,
   * at least 1 s) is dropped; the package then connects to the next server, early enough
   * to renew the session there before the local deadline (four fifths of the timeout).
   */
  #watch(): void {
    const timeout = this.negotiatedTimeoutMs;
    const silentMs = Math.max(1000, Math.floor(timeout / 4));
    let probing = false;
    const check = () => {
      if (this.#ended) return;
      const now = performance.now();
      const heard = Math.max(this.#seen.heardAt, this.#connectedAt);
      if (this.#connected && now - heard >= silentMs) {
        this.#connected = false;
        this.#raw.connectionManager?.socket?.destroy();
      } else if (this.#connected && now - heard >= silentMs / 2 && !probing) {
        probing = true;
        this.exists("/")
          .catch(() => {})
          .finally(() => {
            probing = false;
          });
      }
      this.#watchdog = setTimeout(check, Math.floor(silentMs / 5));
      this.#watchdog.unref();
    };
    check();
  }

  #end(reason: EndReason): void {
    if (this.#ended) return;
    if (this.#watchdog) clearTimeout(this.#watchdog);
    this.#ended = reason;
    this.#connected = false;
    for (const wake of [...this.#waiting]) wake();
    // The package never answers a request still queued unsent when the session ends: it
    // drops its queue on expiry, and a close while reconnecting leaves it behind. Such a
    // call would wait forever (an acquisition or a cell write hung past every deadline).
    for (const abandon of [...this.#unanswered]) abandon();
    this.#unanswered.clear();
    for (const listener of [...this.#endListeners]) listener(reason);
    this.#endListeners.clear();
  }

  #firstConnect(timeoutMs: number): Promise<boolean> {
    return abortable<boolean>(undefined, (resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      const wake = () => resolve(this.connected);
      this.#waiting.add(wake);
      return () => {
        clearTimeout(timer);
        this.#waiting.delete(wake);
      };
    });
  }

  #event(watch: Watcher | undefined): ((e: RawEvent) => void) | undefined {
    if (!watch) return undefined;
    let fired = false;
    return (e) => {
      if (fired) return;
      fired = true;
      wakeStats.events++;
      this.trace?.({ kind: "event", what: `${EVENT_NAMES[e.type] ?? e.type} ${e.path ?? ""}`, at: performance.now() });
      watch(e.type);
    };
  }

  /**
   * Holds this tick's requests back and writes them to the socket together when the tick
   * ends (one `writev` instead of one `write` each): a queue node's create and the read
   * behind it, a release's multi and a marker's delete. The package writes every request
   * at once, in a system call of its own; the server reads them in the same order either
   * way, and nothing here waits for an answer before the tick ends.
   */
  #cork(): void {
    if (this.#corked) return;
    const socket = this.#raw.connectionManager?.socket;
    if (!socket || socket.destroyed) return;
    this.#corked = true;
    socket.cork();
    process.nextTick(() => {
      this.#corked = false;
      socket.uncork();
    });
  }

  /** Sends; `now`, if given, sees the answer while the package handles it (see getInOrder). */
  #call(
    what: What,
    send: (cb: Cb) => void,
    now?: (error: ZkError | null, rest: unknown[]) => void,
  ): Promise<unknown[]> {
    if (this.#ended) return Promise.reject(endedError(described(what)));
    const sentAt = performance.now();
    wakeStats.requests++;
    this.trace?.({ kind: "request", what: described(what), at: sentAt });
    this.#cork();
    return new Promise((resolve, reject) => {
      const abandon = () => reject(endedError(described(what)));
      this.#unanswered.add(abandon);
      send((error, ...rest) => {
        this.#unanswered.delete(abandon);
        this.trace?.({ kind: "answer", what: described(what), at: performance.now() });
        const rc = error ? codeOf(error) : RC.OK;
        // Any answer but a local connection loss comes from a server that still knows us.
        if (rc !== RC.CONNECTIONLOSS && rc !== RC.OPERATIONTIMEOUT && sentAt > this.lastAckSentAt) {
          this.lastAckSentAt = sentAt;
        }
        const failed =
          rc === RC.OK
            ? null
            : new ZkError(rc, `${described(what)}: ${error instanceof Error ? error.message : String(error)}`);
        now?.(failed, rest);
        if (failed) reject(failed);
        else resolve(rest);
      });
    });
  }
}

/** What a request does, for errors and traces: built only when one needs it. */
export type What = string | (() => string);

/** Errors of `ZkHandle.open` that say the server refused the credentials. */
const REFUSED = new WeakSet<object>();

/**
 * Whether `error` says the server refused the credentials (or their ACLs deny them):
 * trying again cannot help.
 */
export function credentialsRefused(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const rc = e instanceof ZkError ? e.rc : codeOf(e);
    if (REFUSED.has(e) || rc === RC.AUTHFAILED || rc === RC.NOAUTH) return true;
  }
  return false;
}

function described(what: What): string {
  return typeof what === "string" ? what : what();
}

function endedError(what: string): ZkError {
  return new ZkError(RC.SESSIONEXPIRED, `${what}: the ZooKeeper session has ended`);
}

function codeOf(error: unknown): number {
  const code = (error as { code?: unknown }).code;
  return typeof code === "number" ? code : RC.SYSTEMERROR;
}
