/**
 * A thin promise layer over one handle of the `zookeeper` package (the official C client):
 * keeps result codes (the package's own promises flatten them into message text), and
 * records when the server last answered, which the session's local deadline counts from.
 *
 * @module
 */
import { performance } from "node:perf_hooks";
import { BackendUnavailableError } from "../../core/errors.js";
import type { ZkConfig } from "./config.js";
import { BACKEND, RC, ZkError } from "./errors.js";

/** A znode's stat, as the C client reports it. zxids fit a double exactly below epoch 2^21. */
export interface Stat {
  readonly czxid: number;
  readonly mzxid: number;
  readonly pzxid: number;
  readonly version: number;
  readonly numChildren: number;
  readonly cversion: number;
  readonly ephemeralOwner: string;
  readonly ctime: Date;
}

/** Node kinds (CreateMode). */
export const FLAGS = { persistent: 0, ephemeral: 1, ephemeralSequential: 3, container: 4 } as const;

/** A one-shot watch callback: the event type (1 created, 2 deleted, 3 changed, 4 child). */
export type Watcher = (type: number) => void;
const SESSION_EVENT = -1;

type Cb = (rc: number, error: string, ...rest: unknown[]) => void;
type WatchCb = (type: number, state: number, path: string) => void;
interface NativeHandle {
  readonly timeout: number;
  readonly client_id: string;
  init(config: object): void;
  close(): void;
  on(event: string, listener: (...args: unknown[]) => void): void;
  a_create(path: string, data: string, flags: number, cb: Cb): number;
  a_exists(path: string, watch: boolean, cb: Cb): number;
  aw_exists(path: string, watch: WatchCb, cb: Cb): number;
  a_get(path: string, watch: boolean, cb: Cb): number;
  a_get_children2(path: string, watch: boolean, cb: Cb): number;
  aw_get_children2(path: string, watch: WatchCb, cb: Cb): number;
  a_set(path: string, data: string, version: number, cb: Cb): number;
  a_delete_(path: string, version: number, cb: Cb): number;
  add_auth(scheme: string, auth: string, cb: Cb): number;
  a_set_acl(path: string, version: number, acl: readonly object[], cb: Cb): number;
}
type NativeCtor = new (config: object) => NativeHandle;

let loaded: Promise<NativeCtor> | undefined;
function library(): Promise<NativeCtor> {
  loaded ??= import("zookeeper").then(
    (m) => ((m as { default?: unknown }).default ?? m) as NativeCtor,
    (cause: unknown) => {
      loaded = undefined;
      throw new BackendUnavailableError(
        'the zookeeper:// backend needs the "zookeeper" package (npm install zookeeper); it could not be loaded',
        { backend: BACKEND, cause },
      );
    },
  );
  return loaded;
}

/** Why a handle ended: closed by us, or by the C client (session expired, auth failed). */
export type EndReason = "closed" | "expired";

/** One ZooKeeper handle: one connection, one server session. */
export class ZkHandle {
  readonly #native: NativeHandle;
  readonly #digest: string | undefined;
  readonly #acl: readonly object[] | undefined;
  #connected = false;
  #ended: EndReason | null = null;
  readonly #waiting = new Set<() => void>();
  readonly #endListeners = new Set<(reason: EndReason) => void>();
  /** performance.now() at which the last answered request was sent. */
  lastAckSentAt: number;

  /**
   * Connects; rejects with `BackendUnavailableError` if no server answers within
   * `connectTimeoutMs`, or if the digest credentials are refused.
   */
  static async open(config: ZkConfig, connectTimeoutMs: number): Promise<ZkHandle> {
    const Ctor = await library();
    const native = new Ctor({
      connect: config.connect,
      timeout: config.sessionTimeoutMs,
      debug_level: 0, // the C client's own logging off: Baton reports through its errors
      host_order_deterministic: false,
    });
    const handle = new ZkHandle(native, config.digest);
    const sentAt = performance.now();
    native.init({});
    const connected = await handle.#firstConnect(connectTimeoutMs);
    if (!connected) {
      handle.close();
      throw new BackendUnavailableError(
        `no ZooKeeper server at ${config.connect} answered within ${connectTimeoutMs} ms`,
        { backend: BACKEND },
      );
    }
    handle.lastAckSentAt = sentAt;
    if (handle.#digest !== undefined) {
      try {
        await handle.#call("authenticating", (cb) => native.add_auth("digest", handle.#digest as string, cb));
      } catch (cause) {
        handle.close();
        throw new BackendUnavailableError(`ZooKeeper refused the credentials for ${config.connect}`, {
          backend: BACKEND,
          cause,
        });
      }
    }
    return handle;
  }

  private constructor(native: NativeHandle, digest: string | undefined) {
    this.#native = native;
    this.#digest = digest;
    // With credentials, only this user may change or delete Baton's nodes; anyone may read.
    this.#acl =
      digest === undefined
        ? undefined
        : [
            { perms: 31, scheme: "auth", auth: "" },
            { perms: 1, scheme: "world", auth: "anyone" },
          ];
    this.lastAckSentAt = performance.now();
    native.on("connect", () => {
      this.#connected = true;
      for (const wake of [...this.#waiting]) wake();
    });
    native.on("connecting", () => {
      this.#connected = false;
    });
    native.on("close", () => this.#end("expired"));
  }

  /** The server's session id, in hex. */
  get sessionId(): string {
    return String(this.#native.client_id);
  }

  /** The session timeout the server granted (never the requested one). */
  get negotiatedTimeoutMs(): number {
    return this.#native.timeout;
  }

  get connected(): boolean {
    return this.#connected && this.#ended === null;
  }

  get ended(): EndReason | null {
    return this.#ended;
  }

  /** Called once when the handle ends. */
  onEnd(listener: (reason: EndReason) => void): void {
    this.#endListeners.add(listener);
  }

  /** Resolves once connected (at once if connected), rejects when `signal` aborts or the handle ends. */
  waitConnected(signal: AbortSignal): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.#ended) return Promise.reject(new ZkError(RC.SESSIONEXPIRED, "the ZooKeeper handle has ended"));
    return new Promise((resolve, reject) => {
      const done = (error?: unknown) => {
        this.#waiting.delete(wake);
        signal.removeEventListener("abort", onAbort);
        if (error === undefined) resolve();
        else reject(error);
      };
      const wake = () =>
        done(this.#ended ? new ZkError(RC.SESSIONEXPIRED, "the ZooKeeper handle has ended") : undefined);
      const onAbort = () => done(signal.reason);
      this.#waiting.add(wake);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  create(path: string, data: string, flags: number): Promise<string> {
    const created = this.#call(`creating ${path}`, (cb) => this.#native.a_create(path, data, flags, cb)) as Promise<
      [string]
    >;
    const acl = this.#acl;
    if (acl === undefined) return created.then(([p]) => p);
    // The C binding creates with an open ACL; the ACL is set right behind the create on the
    // same connection, so the window in which another client could touch it is one request.
    return created.then(async ([p]) => {
      await this.#call(`securing ${p}`, (cb) => this.#native.a_set_acl(p, -1, acl, cb)).catch(() => {});
      return p;
    });
  }

  /** The node's stat, or `null` if it does not exist. With `watch`, one event is delivered. */
  async exists(path: string, watch?: Watcher): Promise<Stat | null> {
    try {
      const [stat] = (await this.#call(`reading ${path}`, (cb) =>
        watch ? this.#native.aw_exists(path, nodeWatch(watch), cb) : this.#native.a_exists(path, false, cb),
      )) as [Stat];
      return stat;
    } catch (error) {
      if (error instanceof ZkError && error.rc === RC.NONODE) return null;
      throw error;
    }
  }

  /** Data (UTF-8) and stat, or `null` if the node does not exist. */
  async get(path: string): Promise<{ stat: Stat; data: string } | null> {
    try {
      const [stat, data] = (await this.#call(`reading ${path}`, (cb) => this.#native.a_get(path, false, cb))) as [
        Stat,
        Buffer | string | null,
      ];
      return { stat, data: data === null || data === undefined ? "" : data.toString() };
    } catch (error) {
      if (error instanceof ZkError && error.rc === RC.NONODE) return null;
      throw error;
    }
  }

  /** Children names and the parent's stat, or `null` if the parent does not exist. */
  async children(path: string, watch?: Watcher): Promise<{ children: string[]; stat: Stat } | null> {
    try {
      const [children, stat] = (await this.#call(`listing ${path}`, (cb) =>
        watch
          ? this.#native.aw_get_children2(path, nodeWatch(watch), cb)
          : this.#native.a_get_children2(path, false, cb),
      )) as [string[], Stat];
      return { children, stat };
    } catch (error) {
      if (error instanceof ZkError && error.rc === RC.NONODE) return null;
      throw error;
    }
  }

  async set(path: string, data: string, version = -1): Promise<Stat> {
    const [stat] = (await this.#call(`writing ${path}`, (cb) => this.#native.a_set(path, data, version, cb))) as [Stat];
    return stat;
  }

  /** Deletes; resolves `false` if it was already gone. */
  async delete(path: string, version = -1): Promise<boolean> {
    try {
      await this.#call(`deleting ${path}`, (cb) => this.#native.a_delete_(path, version, cb));
      return true;
    } catch (error) {
      if (error instanceof ZkError && error.rc === RC.NONODE) return false;
      throw error;
    }
  }

  /** Closes the session: the server deletes its ephemeral nodes at once. */
  close(): void {
    if (this.#ended) return;
    this.#end("closed");
    try {
      this.#native.close();
    } catch {
      // already closed by the C client
    }
  }

  #end(reason: EndReason): void {
    if (this.#ended) return;
    this.#ended = reason;
    this.#connected = false;
    for (const wake of [...this.#waiting]) wake();
    for (const listener of [...this.#endListeners]) listener(reason);
    this.#endListeners.clear();
  }

  #firstConnect(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), timeoutMs);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.#waiting.delete(wake);
        resolve(ok);
      };
      const wake = () => done(this.#connected);
      this.#waiting.add(wake);
    });
  }

  #call(what: string, send: (cb: Cb) => number): Promise<unknown[]> {
    if (this.#ended) return Promise.reject(new ZkError(RC.SESSIONEXPIRED, `${what}: the handle has ended`));
    const sentAt = performance.now();
    return new Promise((resolve, reject) => {
      const rc = send((code, error, ...rest) => {
        // Any answer but a local connection loss comes from a server that still knows us.
        if (code !== RC.CONNECTIONLOSS && code !== RC.OPERATIONTIMEOUT && code !== RC.CLOSING) {
          if (sentAt > this.lastAckSentAt) this.lastAckSentAt = sentAt;
        }
        if (code === RC.OK) resolve(rest);
        else reject(new ZkError(code, `${what}: ${error}`));
      });
      if (typeof rc === "number" && rc < 0) reject(new ZkError(rc, `${what}: refused by the client`));
    });
  }
}

function nodeWatch(watch: Watcher): WatchCb {
  let fired = false;
  return (type) => {
    // Session events reach every watcher; the session layer handles them.
    if (type === SESSION_EVENT || fired) return;
    fired = true;
    watch(type);
  };
}
