/**
 * `zookeeper://host:2181[,host...][/chroot]` (alias `zk://`): locks, semaphores, groups and
 * elections on a ZooKeeper ensemble through the pure-JavaScript `node-zookeeper-client`
 * package (an optional peer dependency, loaded lazily; not the C binding `zookeeper`, which
 * crashed the process on reconnects: docs/backends/zookeeper.md says why), wrapped by
 * client.ts. Partition-safe: all state is in ZooKeeper's replicated tree; fencing tokens are
 * zxids, ordered across the ensemble. A crashed client's nodes are deleted when its session
 * times out. See docs/backends/zookeeper.md.
 *
 * @module
 */
import type {
  Driver,
  DriverCells,
  DriverContext,
  DriverSnapshot,
  LockMode,
  QueueKind,
  QueueSnapshot,
  RecordEntry,
  RecordEvent,
  SessionHooks,
} from "../../core/driver.js";
import { ClosedError, InvalidArgumentError } from "../../core/errors.js";
import { zkCells } from "./cells.js";
import { type Stat, ZkHandle } from "./client.js";
import { parseConfig } from "./config.js";
import { BACKEND, translate } from "./errors.js";
import { decodeData, decodeSegment, Layout, type NodeData } from "./paths.js";
import { isGranted, modeOf, tokenOf, viewOf } from "./queue.js";
import { watchRecords } from "./record-watch.js";
import { listRecords } from "./records.js";
import { fenceNodes, revokeNodes } from "./revoke.js";
import { retrying } from "./scope.js";
import { type DriverShared, ZkSession } from "./session.js";

const KINDS: readonly QueueKind[] = ["lock", "semaphore", "election"];

/** Creates a ZooKeeper driver; checks that a server answers (and accepts the credentials). */
export async function createDriver(context: DriverContext): Promise<Driver> {
  const config = parseConfig(context);
  const connectTimeoutMs = Math.min(15_000, Math.max(2_000, config.sessionTimeoutMs));
  const handle = await ZkHandle.open(config, connectTimeoutMs);
  // Crash release within the TTL holds only if the server does not lengthen the session.
  if (handle.negotiatedTimeoutMs > config.sessionTimeoutMs) {
    const granted = handle.negotiatedTimeoutMs;
    void handle.close();
    throw new InvalidArgumentError(
      `ZooKeeper at ${config.connect} grants sessions of at least ${granted} ms, more than the ${config.sessionTimeoutMs} ms asked for (the TTL or sessionTimeout); ask for ${granted} ms or more, or lower the server's minSessionTimeout`,
      { backend: BACKEND },
    );
  }
  const shared: DriverShared = {
    config,
    layout: new Layout(config.chroot, context.namespace),
    memberId: context.memberId,
    connectTimeoutMs,
  };
  return new ZkDriver(shared, handle);
}

class ZkDriver implements Driver {
  readonly cells: DriverCells;
  /** A tracked grant's record goes in one multi with its queue node (grant-records.ts). */
  readonly nativeRecords = true;
  readonly #shared: DriverShared;
  /** For reads and watches; holds no nodes. Reopened if its session ends. */
  #handle: ZkHandle;
  #reopening: Promise<ZkHandle> | null = null;
  readonly #closed = new AbortController();

  constructor(shared: DriverShared, handle: ZkHandle) {
    this.#shared = shared;
    this.#handle = handle;
    this.cells = zkCells(() => this.#live(), shared.layout, shared.config.chroot, this.#closed.signal);
  }

  openSession(hooks: SessionHooks): Promise<ZkSession> {
    if (this.#closed.signal.aborted)
      return Promise.reject(new ClosedError("the driver is closed", { backend: BACKEND }));
    return ZkSession.open(this.#shared, hooks);
  }

  async listRecords(space: string): Promise<RecordEntry[]> {
    const handle = await this.#live();
    try {
      return await listRecords(handle, this.#shared.layout, space, this.#closed.signal);
    } catch (error) {
      throw translate(error, `listing ${space}`);
    }
  }

  async watchRecords(
    space: string,
    listener: (event: RecordEvent) => void,
    signal: AbortSignal,
    failed?: (error: Error) => void,
  ): Promise<RecordEntry[]> {
    const stop = AbortSignal.any([signal, this.#closed.signal]);
    try {
      return await watchRecords(() => this.#live(), this.#shared.layout, space, listener, stop, failed);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw translate(error, `watching ${space}`);
    }
  }

  /** Everything in the namespace, from the nodes themselves. */
  async inspect(): Promise<DriverSnapshot> {
    const handle = await this.#live();
    const stop = this.#closed.signal;
    const { layout } = this.#shared;
    const list = (path: string) => retrying(handle, "inspecting", () => handle.children(path), stop);
    try {
      const queues: QueueSnapshot[] = [];
      for (const kind of KINDS) {
        const names = (await list(`${layout.queues}/${kind}`))?.children ?? [];
        for (const encoded of names.sort()) {
          const parent = `${layout.queues}/${kind}/${encoded}`;
          const listed = await list(parent);
          if (!listed) continue;
          const reads = await Promise.all(
            listed.children.map((c) => retrying(handle, "inspecting", () => handle.get(`${parent}/${c}`), stop)),
          );
          const nodes = new Map<string, { stat: Stat; data: NodeData | null }>();
          const modes = new Map<string, LockMode>();
          listed.children.forEach((child, i) => {
            const read = reads[i];
            if (!read) return;
            const data = decodeData(read.data);
            nodes.set(child, { stat: read.stat, data });
            if (data?.m) modes.set(child, data.m === "x" ? "exclusive" : "shared");
          });
          const view = viewOf(
            listed.children.filter((c) => nodes.has(c)),
            listed.stat,
            modes,
          );
          if (view.nodes.length === 0) continue;
          const entry = (name: string) => nodes.get(name) as { stat: Stat; data: NodeData | null };
          const holders = view.nodes.filter((n) => isGranted(view, n, kind));
          const waiters = view.nodes.filter((n) => !holders.includes(n));
          queues.push({
            kind,
            name: decodeSegment(encoded),
            limit: view.nodes[0]?.limit ?? 1,
            holders: holders.map((n) => {
              const { stat, data } = entry(n.name);
              return {
                memberId: data?.id ?? "",
                sessionId: stat.ephemeralOwner,
                mode: modeOf(view, n),
                token: tokenOf(stat, data),
                since: data?.s ?? stat.ctime,
              };
            }),
            waiters: waiters.map((n) => {
              const { stat, data } = entry(n.name);
              return {
                memberId: data?.id ?? "",
                sessionId: stat.ephemeralOwner,
                mode: modeOf(view, n),
                since: data?.s ?? stat.ctime,
              };
            }),
          });
        }
      }
      const spaces = (await list(layout.records))?.children ?? [];
      const records: { space: string; entries: RecordEntry[] }[] = [];
      for (const encoded of spaces.sort()) {
        const space = decodeSegment(encoded);
        const entries = await listRecords(handle, layout, space, stop);
        if (entries.length > 0) records.push({ space, entries });
      }
      return { queues, records };
    } catch (error) {
      throw translate(error, "inspecting");
    }
  }

  /** The namespaces with a live queue node or record, sorted (empty parents linger a while). */
  async namespaces(): Promise<string[]> {
    const handle = await this.#live();
    const stop = this.#closed.signal;
    const list = async (path: string) =>
      (await retrying(handle, "listing namespaces", () => handle.children(path), stop))?.children ?? [];
    const live = async (path: string, depth: number): Promise<boolean> => {
      const children = await list(path);
      if (depth === 0) return children.length > 0;
      for (const child of children) if (await live(`${path}/${child}`, depth - 1)) return true;
      return false;
    };
    try {
      const found: string[] = [];
      for (const encoded of await list(`${this.#shared.config.chroot}/baton`)) {
        const layout = new Layout(this.#shared.config.chroot, decodeSegment(encoded));
        // q/<kind>/<name>/<node> and r/<space>/<record>
        if ((await live(layout.queues, 2)) || (await live(layout.records, 1))) found.push(decodeSegment(encoded));
      }
      return found.sort();
    } catch (error) {
      throw translate(error, "listing namespaces");
    }
  }

  async fenceSession(sessionId: string): Promise<number | null> {
    const handle = await this.#live();
    const { layout, config } = this.#shared;
    try {
      return await fenceNodes(handle, layout, config.chroot, sessionId, config.sessionTimeoutMs, this.#closed.signal);
    } catch (error) {
      throw translate(error, `revoking session ${sessionId}`);
    }
  }

  async revokeSession(sessionId: string): Promise<void> {
    const handle = await this.#live();
    try {
      await revokeNodes(handle, this.#shared.layout, sessionId, this.#closed.signal);
    } catch (error) {
      throw translate(error, `revoking session ${sessionId}`);
    }
  }

  async close(): Promise<void> {
    this.#closed.abort(new ClosedError("the driver is closed", { backend: BACKEND }));
    // A reopening under way closes what it opens (#live), before it settles.
    const reopening = this.#reopening;
    await Promise.all([this.#handle.close(), reopening?.catch(() => {})]);
  }

  /** The read handle, reopened after its server session expired. */
  async #live(): Promise<ZkHandle> {
    if (this.#closed.signal.aborted) throw new ClosedError("the driver is closed", { backend: BACKEND });
    if (this.#handle.ended === null) return this.#handle;
    this.#reopening ??= ZkHandle.open(this.#shared.config, this.#shared.connectTimeoutMs).then(
      async (handle) => {
        if (this.#closed.signal.aborted) {
          // Closed while opening: close() closed only the old handle, and waits for this one.
          await handle.close();
          this.#reopening = null;
          throw new ClosedError("the driver is closed", { backend: BACKEND });
        }
        this.#handle = handle;
        this.#reopening = null;
        return handle;
      },
      (error: unknown) => {
        this.#reopening = null;
        throw error;
      },
    );
    return this.#reopening;
  }
}
