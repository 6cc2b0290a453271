import { closeSync } from "node:fs";
import { sleep } from "../../core/abortable.js";
import type { LockMode, QueueKind, QueueSnapshot, RecordEntry, RecordEvent } from "../../core/driver.js";
import { type Directory, FILES, lockFileName, openDirectoryFd, openFile } from "./directory.js";
import { LockFiles } from "./kernel.js";
import { type Link, Mesh, type Message } from "./mesh.js";
import { answers, type LocalQueueState, type Push, type Request, type SpaceEntries } from "./protocol.js";

export type { LocalQueueState } from "./protocol.js";

/** A pending acquisition or upgrade of this process. */
export interface Waiter {
  readonly slots: readonly number[];
  /** Shared waiters let an offer go on to the next process once they got in. */
  readonly mode: LockMode;
  /** Tries to take what it waits for with non-blocking kernel calls; true when it got it. */
  attempt(): boolean;
}

/** The part of a session the node needs to answer peers. */
export interface SessionView {
  readonly id: string;
  queueState(): LocalQueueState[];
}

/** How long a slot stays subscribed at peers after its last local waiter left. */
const LINGER_MS = 2000;

interface StoredRecord {
  readonly entry: RecordEntry;
}

/**
 * One per (process, directory): the mesh link to other processes, the wake-up plumbing
 * and the records this process publishes. Shared by every coordinator of the process that
 * uses the directory.
 *
 * Waking without polling: a waiter subscribes to its slots at every peer, then retries.
 * A holder that frees a slot pushes `free` to the subscribers; a peer that dies closes its
 * sockets, which wakes every waiter here. A retry that still fails looks for new peers (a
 * process that started meanwhile may hold the slot) and subscribes there too. A one-second
 * safety timer, running only while something waits, retries regardless.
 */
export class FileNode {
  readonly directory: Directory;
  readonly mesh: Mesh;
  /** Process-wide descriptors: the token counter, and probes that look without holding. */
  readonly tokensFd: number;
  /** The directory itself: the mesh reaches its sockets through it. */
  readonly #directoryFd: number;
  readonly probes: LockFiles;
  readonly probeSemFd: number;
  readonly sessions = new Map<string, SessionView>();
  readonly #waiters = new Map<number, Set<Waiter>>();
  /** Slots this process has subscribed to at every peer, with the count of local waiters. */
  readonly #subscribed = new Map<number, number>();
  /** Slots with no local waiter left, still subscribed (since when): re-waiting is free. */
  readonly #lingering = new Map<number, number>();
  #lingerSweep: NodeJS.Timeout | null = null;
  /** Peers waiting for our frees, per slot, in the order they will be offered a free. */
  readonly #subscribers = new Map<number, Set<Link>>();
  /** A free being offered to one subscriber after another, per slot. */
  readonly #offers = new Map<number, { current: Link; remaining: Link[] }>();
  /** Records published by this process's sessions, per namespaced space. */
  readonly #records = new Map<string, Map<string, StoredRecord>>();
  readonly #recordListeners = new Map<string, Set<(event: RecordEvent) => void>>();
  readonly #recordSubscribers = new Map<string, Set<Link>>();
  /** What each peer published in the spaces we watch, to announce deletes when it dies. */
  readonly #peerRecords = new Map<Link, Map<string, Set<string>>>();
  /** Local watchers of cells buckets, told when any process rewrote a bucket. */
  readonly #cellListeners = new Set<(bucket: number) => void>();
  #safety: NodeJS.Timeout | null = null;
  #discovering: Promise<void> | null = null;
  #lastDiscovery = 0;
  #users = 0;
  #nextSession = 0;

  private constructor(directory: Directory) {
    this.directory = directory;
    this.tokensFd = openFile(directory, FILES.tokens);
    this.probes = new LockFiles((shard) => openFile(directory, lockFileName(shard)));
    this.probeSemFd = openFile(directory, FILES.semaphores);
    this.#directoryFd = openDirectoryFd(directory);
    this.mesh = new Mesh(this.#directoryFd, {
      request: (link, request) => this.#request(link, request),
      push: (link, message) => this.#push(link, message),
      // A peer whose answers break the protocol has its link closed; nothing may throw here.
      joined: (link) => void this.#joined(link).catch(() => link.destroy()),
      left: (link) => this.#left(link),
    });
  }

  static readonly #nodes = new Map<string, Promise<FileNode>>();

  /** The node for `directory`, started on first use; pair with {@link release}. */
  static async acquire(directory: Directory): Promise<FileNode> {
    let pending = FileNode.#nodes.get(directory.id);
    if (!pending) {
      pending = (async () => {
        const node = new FileNode(directory);
        await node.mesh.start();
        return node;
      })();
      FileNode.#nodes.set(directory.id, pending);
      pending.catch(() => FileNode.#nodes.delete(directory.id));
    }
    const node = await pending;
    node.#users++;
    return node;
  }

  /** Drops one user; the last one closes the node. */
  release(): void {
    if (--this.#users > 0) return;
    FileNode.#nodes.delete(this.directory.id);
    this.mesh.close();
    if (this.#safety) clearInterval(this.#safety);
    if (this.#lingerSweep) clearInterval(this.#lingerSweep);
    this.probes.close();
    for (const fd of [this.tokensFd, this.probeSemFd, this.#directoryFd]) closeSync(fd);
  }

  newSessionId(): string {
    return `${this.mesh.peerId}.${++this.#nextSession}`;
  }

  // ---- waiting -------------------------------------------------------------------------

  /**
   * Registers a waiter and subscribes to its slots at every peer. The waiter gets one more
   * try now and another as each peer confirms its subscription (a free that happened
   * before that peer knew would otherwise be missed). Peers are not awaited: a paused
   * (SIGSTOP) peer must not hold up waiters on locks it has nothing to do with.
   */
  addWaiter(waiter: Waiter): boolean {
    const fresh: number[] = [];
    for (const slot of waiter.slots) {
      let set = this.#waiters.get(slot);
      if (!set) this.#waiters.set(slot, (set = new Set()));
      set.add(waiter);
      const count = this.#subscribed.get(slot) ?? 0;
      this.#subscribed.set(slot, count + 1);
      if (count === 0 && !this.#lingering.delete(slot)) fresh.push(slot);
    }
    this.#armSafety();
    for (const link of fresh.length > 0 ? this.mesh.links : []) {
      link.request("sub", { slots: fresh }, answers.none).then(
        () => this.#wake(fresh),
        () => {},
      );
    }
    return this.#isWaiting(waiter) && waiter.attempt();
  }

  removeWaiter(waiter: Waiter): void {
    for (const slot of waiter.slots) {
      const set = this.#waiters.get(slot);
      if (!set?.delete(waiter)) continue;
      if (set.size === 0) this.#waiters.delete(slot);
      const count = (this.#subscribed.get(slot) ?? 1) - 1;
      if (count > 0) this.#subscribed.set(slot, count);
      else {
        // Stay subscribed a while: a process that loops on a lock waits again at once, and
        // re-subscribing at every peer each time would cost a round trip to each of them.
        this.#subscribed.delete(slot);
        this.#lingering.set(slot, Date.now());
        this.#armLingerSweep();
      }
    }
    if (this.#waiters.size === 0 && this.#safety) {
      clearInterval(this.#safety);
      this.#safety = null;
    }
  }

  /**
   * A slot was freed here: wake local waiters, and offer the free to one subscribed peer at
   * a time (in subscription order, rotating), not to all: a release wakes one process, not
   * a herd. The peer passes the offer on when it has no waiter left or got in shared.
   */
  freed(slot: number): void {
    if (this.#waiters.has(slot)) queueMicrotask(() => this.#wake([slot]));
    const subscribers = this.#subscribers.get(slot);
    if (!subscribers || subscribers.size === 0) return;
    this.#offerNext(slot, [...subscribers]);
  }

  #offerNext(slot: number, remaining: Link[]): void {
    const next = remaining.shift();
    if (!next) {
      this.#offers.delete(slot);
      return;
    }
    this.#offers.set(slot, { current: next, remaining });
    const subscribers = this.#subscribers.get(slot);
    if (subscribers?.delete(next)) subscribers.add(next);
    next.send({ t: "push", k: "free", slot });
  }

  /** A peer freed `slot` and offers it to us. */
  #offered(link: Link, slot: number): void {
    const waiters = this.#waiters.get(slot);
    let pass = true;
    for (const waiter of [...(waiters ?? [])]) {
      if (!waiter.attempt()) {
        // Someone else holds it now; their release will offer it again.
        pass = false;
        continue;
      }
      if (waiter.mode === "exclusive") {
        pass = false;
        break;
      }
    }
    if (pass) link.send({ t: "push", k: "pass", slot });
  }

  #armLingerSweep(): void {
    if (this.#lingerSweep) return;
    this.#lingerSweep = setInterval(() => {
      const cutoff = Date.now() - LINGER_MS;
      const gone = [...this.#lingering].filter(([, since]) => since < cutoff).map(([slot]) => slot);
      for (const slot of gone) this.#lingering.delete(slot);
      if (gone.length > 0) for (const link of this.mesh.links) link.send({ t: "push", k: "unsub", slots: gone });
      if (this.#lingering.size === 0 && this.#lingerSweep) {
        clearInterval(this.#lingerSweep);
        this.#lingerSweep = null;
      }
    }, LINGER_MS);
    this.#lingerSweep.unref();
  }

  #isWaiting(waiter: Waiter): boolean {
    return waiter.slots.some((slot) => this.#waiters.get(slot)?.has(waiter));
  }

  /**
   * Gives each waiter of `slots` a try, oldest first. (A process that starts later
   * connects to every peer itself, and its hello makes us subscribe there: no need to look
   * for new peers after a failed try, which under a herd cost more than the tries.)
   */
  #wake(slots: Iterable<number>): void {
    const tried = new Set<Waiter>();
    for (const slot of slots) {
      for (const waiter of [...(this.#waiters.get(slot) ?? [])]) {
        if (tried.has(waiter)) continue;
        tried.add(waiter);
        waiter.attempt();
      }
    }
  }

  #wakeAll(): void {
    this.#wake([...this.#waiters.keys()]);
  }

  #armSafety(): void {
    if (this.#safety) return;
    // Kept ref'd: a process that waits for a lock must stay alive to get it.
    this.#safety = setInterval(() => {
      void this.#discover();
      this.#wakeAll();
    }, 1000);
  }

  /** Looks for processes that started since, at most every 20 ms. */
  #discover(): Promise<void> {
    if (this.#discovering) return this.#discovering;
    const wait = Math.max(0, this.#lastDiscovery + 20 - Date.now());
    this.#discovering = sleep(wait)
      .then(() => this.mesh.discover())
      .finally(() => {
        this.#lastDiscovery = Date.now();
        this.#discovering = null;
      });
    return this.#discovering;
  }

  async #joined(link: Link): Promise<void> {
    const slots = [...this.#subscribed.keys()];
    if (slots.length > 0) {
      await link.request("sub", { slots }, answers.none).catch(() => null);
      this.#wake(slots);
    }
    for (const space of this.#recordListeners.keys()) {
      const entries = await link.request("rsub", { space }, answers.entries).catch(() => null);
      for (const entry of entries ?? []) {
        this.#remoteRecord(link, space, { type: "put", entry });
      }
    }
  }

  #left(link: Link): void {
    for (const set of this.#subscribers.values()) set.delete(link);
    for (const [slot, offer] of [...this.#offers]) {
      offer.remaining = offer.remaining.filter((l) => l !== link);
      if (offer.current === link) this.#offerNext(slot, offer.remaining);
    }
    for (const set of this.#recordSubscribers.values()) set.delete(link);
    const known = this.#peerRecords.get(link);
    this.#peerRecords.delete(link);
    for (const [space, keys] of known ?? []) {
      for (const key of keys) this.#deliver(space, { type: "delete", key });
    }
    // The peer may have died holding what we wait for. Its sockets can close a moment
    // before the kernel has dropped its file locks (both happen in its exit's file
    // teardown), so retry at once and a few times over the next 50 ms.
    this.#wakeAll();
    for (const delay of [1, 5, 20, 50]) setTimeout(() => this.#wakeAll(), delay);
  }

  // ---- cells ---------------------------------------------------------------------------

  /** Tells every process (this one included) that cells bucket `bucket` was rewritten. */
  cellWritten(bucket: number): void {
    for (const link of this.mesh.links) link.send({ t: "push", k: "cell", bucket });
    for (const listener of this.#cellListeners) listener(bucket);
  }

  /** Calls `listener` with each rewritten bucket's number until the returned function is called. */
  onCellWritten(listener: (bucket: number) => void): () => void {
    this.#cellListeners.add(listener);
    return () => this.#cellListeners.delete(listener);
  }

  // ---- records -------------------------------------------------------------------------

  putRecord(space: string, entry: RecordEntry): void {
    let records = this.#records.get(space);
    if (!records) this.#records.set(space, (records = new Map()));
    records.set(entry.key, { entry });
    this.#publish(space, { type: "put", entry });
  }

  deleteRecord(space: string, key: string, sessionId: string): boolean {
    const records = this.#records.get(space);
    if (records?.get(key)?.entry.sessionId !== sessionId) return false;
    records.delete(key);
    if (records.size === 0) this.#records.delete(space);
    this.#publish(space, { type: "delete", key });
    return true;
  }

  localRecord(space: string, key: string): RecordEntry | undefined {
    return this.#records.get(space)?.get(key)?.entry;
  }

  async listRecords(space: string): Promise<RecordEntry[]> {
    const out = [...(this.#records.get(space)?.values() ?? [])].map((r) => r.entry);
    const lists = await Promise.all(
      this.mesh.links.map((l) => l.request("list", { space }, answers.entries, 2000).catch(() => null)),
    );
    for (const entries of lists) out.push(...(entries ?? []));
    return out;
  }

  async watchRecords(
    space: string,
    listener: (event: RecordEvent) => void,
    signal: AbortSignal,
  ): Promise<RecordEntry[]> {
    let listeners = this.#recordListeners.get(space);
    if (!listeners) this.#recordListeners.set(space, (listeners = new Set()));
    listeners.add(listener);
    signal.addEventListener(
      "abort",
      () => {
        listeners.delete(listener);
        if (listeners.size > 0) return;
        this.#recordListeners.delete(space);
        for (const link of this.mesh.links) link.send({ t: "push", k: "runsub", space });
      },
      { once: true },
    );
    const snapshot = [...(this.#records.get(space)?.values() ?? [])].map((r) => r.entry);
    const lists = await Promise.all(
      this.mesh.links.map(async (link) => ({
        link,
        entries: await link.request("rsub", { space }, answers.entries, 2000).catch(() => null),
      })),
    );
    for (const { link, entries } of lists) {
      for (const entry of entries ?? []) {
        this.#track(link, space, entry.key, true);
        snapshot.push(entry);
      }
    }
    return snapshot;
  }

  #publish(space: string, event: RecordEvent): void {
    for (const link of this.#recordSubscribers.get(space) ?? []) link.send({ t: "push", k: "rec", space, event });
    this.#deliver(space, event);
  }

  #deliver(space: string, event: RecordEvent): void {
    for (const listener of this.#recordListeners.get(space) ?? []) listener(event);
  }

  #remoteRecord(link: Link, space: string, event: RecordEvent): void {
    this.#track(link, space, event.type === "put" ? event.entry.key : event.key, event.type === "put");
    this.#deliver(space, event);
  }

  #track(link: Link, space: string, key: string, present: boolean): void {
    let spaces = this.#peerRecords.get(link);
    if (!spaces) this.#peerRecords.set(link, (spaces = new Map()));
    let keys = spaces.get(space);
    if (!keys) spaces.set(space, (keys = new Set()));
    if (present) keys.add(key);
    else keys.delete(key);
  }

  // ---- inspection ----------------------------------------------------------------------

  localQueues(namespace: string): LocalQueueState[] {
    return [...this.sessions.values()].flatMap((s) => s.queueState()).filter((q) => q.namespace === namespace);
  }

  localSpaces(prefix: string): SpaceEntries[] {
    return [...this.#records]
      .filter(([space]) => space.startsWith(prefix))
      .map(([space, records]) => ({ space, entries: [...records.values()].map((r) => r.entry) }));
  }

  /** Everything every process of this directory holds, awaits and publishes in `namespace`. */
  async inspect(
    namespace: string,
    prefix: string,
  ): Promise<{ queues: QueueSnapshot[]; records: { space: string; entries: RecordEntry[] }[] }> {
    await this.#discover();
    const states = [...this.localQueues(namespace)];
    const spaces = this.localSpaces(prefix);
    const peers = await Promise.all(
      this.mesh.links.map((l) => l.request("inspect", { namespace, prefix }, answers.inspect, 2000).catch(() => null)),
    );
    for (const answer of peers) {
      states.push(...(answer?.queues ?? []));
      spaces.push(...(answer?.spaces ?? []));
    }
    const queues = new Map<
      string,
      {
        kind: QueueKind;
        name: string;
        limit: number;
        holders: QueueSnapshot["holders"][number][];
        waiters: QueueSnapshot["waiters"][number][];
      }
    >();
    for (const state of states) {
      const id = `${state.kind}\u0000${state.name}`;
      let queue = queues.get(id);
      if (!queue)
        queues.set(id, (queue = { kind: state.kind, name: state.name, limit: state.limit, holders: [], waiters: [] }));
      const who = { memberId: state.memberId, sessionId: state.sessionId, mode: state.mode, since: state.since };
      if (state.token !== undefined) queue.holders.push({ ...who, token: BigInt(state.token) });
      else queue.waiters.push(who);
    }
    for (const queue of queues.values()) {
      queue.holders.sort((a, b) => (a.token < b.token ? -1 : 1));
      queue.waiters.sort((a, b) => a.since - b.since);
    }
    const merged = new Map<string, RecordEntry[]>();
    for (const { space, entries } of spaces) merged.set(space, [...(merged.get(space) ?? []), ...entries]);
    return { queues: [...queues.values()], records: [...merged].map(([space, entries]) => ({ space, entries })) };
  }

  /** The namespaces this process has something live in. */
  localNamespaces(): string[] {
    const found = new Set<string>();
    for (const session of this.sessions.values()) for (const q of session.queueState()) found.add(q.namespace);
    for (const space of this.#records.keys()) found.add(space.slice(0, space.indexOf("\u0000")));
    return [...found];
  }

  /** Every namespace any process of this directory has something live in. */
  async namespaces(): Promise<string[]> {
    await this.#discover();
    const found = new Set(this.localNamespaces());
    const peers = await Promise.all(
      this.mesh.links.map((l) => l.request("namespaces", {}, answers.namespaces, 2000).catch(() => null)),
    );
    for (const list of peers) for (const namespace of list ?? []) found.add(namespace);
    return [...found];
  }

  // ---- peer protocol -------------------------------------------------------------------

  #request(link: Link, request: Request): Message {
    switch (request.op) {
      case "sub":
        for (const slot of request.slots) {
          let set = this.#subscribers.get(slot);
          if (!set) this.#subscribers.set(slot, (set = new Set()));
          set.add(link);
        }
        return {};
      case "rsub": {
        let set = this.#recordSubscribers.get(request.space);
        if (!set) this.#recordSubscribers.set(request.space, (set = new Set()));
        set.add(link);
        return { entries: [...(this.#records.get(request.space)?.values() ?? [])].map((r) => r.entry) };
      }
      case "list":
        return { entries: [...(this.#records.get(request.space)?.values() ?? [])].map((r) => r.entry) };
      case "inspect":
        return { queues: this.localQueues(request.namespace), spaces: this.localSpaces(request.prefix) };
      case "namespaces":
        return { namespaces: this.localNamespaces() };
    }
  }

  #push(link: Link, push: Push): void {
    switch (push.k) {
      case "free":
        this.#offered(link, push.slot);
        break;
      case "pass": {
        const offer = this.#offers.get(push.slot);
        if (offer?.current === link) this.#offerNext(push.slot, offer.remaining);
        break;
      }
      case "unsub":
        for (const slot of push.slots) {
          const set = this.#subscribers.get(slot);
          set?.delete(link);
          if (set?.size === 0) this.#subscribers.delete(slot);
        }
        break;
      case "runsub":
        this.#recordSubscribers.get(push.space)?.delete(link);
        break;
      case "rec":
        this.#remoteRecord(link, push.space, push.event);
        break;
      case "cell":
        for (const listener of this.#cellListeners) listener(push.bucket);
        break;
    }
  }
}
