import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import type { Link, Mesh } from "./mesh.js";
import { answers, type Push, type SpaceEntries } from "./protocol.js";

interface StoredRecord {
  readonly entry: RecordEntry;
}

/**
 * The record replication of one {@link FileNode}: the records this process's sessions
 * publish live in its memory only (they die with it, which is what binds them to the
 * session), and every other process reads them over the mesh. A watcher subscribes to a
 * space at every peer (`rsub`), which answers with its entries and then pushes each
 * change (`rec`); when a peer's link closes, every record it published is announced
 * deleted here.
 */
export class RecordReplication {
  readonly #mesh: Mesh;
  /** Records published by this process's sessions, per namespaced space. */
  readonly #records = new Map<string, Map<string, StoredRecord>>();
  readonly #recordListeners = new Map<string, Set<(event: RecordEvent) => void>>();
  readonly #recordSubscribers = new Map<string, Set<Link>>();
  /** What each peer published in the spaces we watch, to announce deletes when it dies. */
  readonly #peerRecords = new Map<Link, Map<string, Set<string>>>();

  constructor(mesh: Mesh) {
    this.#mesh = mesh;
  }

  /** Publishes (or replaces) a record of this process and tells every watcher, here and at peers. */
  putRecord(space: string, entry: RecordEntry): void {
    let records = this.#records.get(space);
    if (!records) this.#records.set(space, (records = new Map()));
    records.set(entry.key, { entry });
    this.#publish(space, { type: "put", entry });
  }

  /** Deletes a record if `sessionId` owns it and tells every watcher; false if it did not. */
  deleteRecord(space: string, key: string, sessionId: string): boolean {
    const records = this.#records.get(space);
    if (records?.get(key)?.entry.sessionId !== sessionId) return false;
    records.delete(key);
    if (records.size === 0) this.#records.delete(space);
    this.#publish(space, { type: "delete", key });
    return true;
  }

  /** A record this process publishes, if any. */
  localRecord(space: string, key: string): RecordEntry | undefined {
    return this.#records.get(space)?.get(key)?.entry;
  }

  /** What this process publishes in `space`. */
  entries(space: string): RecordEntry[] {
    return [...(this.#records.get(space)?.values() ?? [])].map((r) => r.entry);
  }

  /** Every process's records of `space`; a peer that does not answer within 2 s is left out. */
  async listRecords(space: string): Promise<RecordEntry[]> {
    const out = this.entries(space);
    const lists = await Promise.all(
      this.#mesh.links.map((l) => l.request("list", { space }, answers.entries, 2000).catch(() => null)),
    );
    for (const entries of lists) out.push(...(entries ?? []));
    return out;
  }

  /**
   * Calls `listener` with every change to `space` in any process, until `signal` aborts
   * (then the listener is removed, and the last one of a space unsubscribes at peers).
   * Resolves with the records present when the watch started.
   */
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
        for (const link of this.#mesh.links) link.send({ t: "push", k: "runsub", space });
      },
      { once: true },
    );
    const snapshot = this.entries(space);
    const lists = await Promise.all(
      this.#mesh.links.map(async (link) => ({
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

  /** The spaces under `prefix` this process publishes in, with their entries. */
  localSpaces(prefix: string): SpaceEntries[] {
    return [...this.#records]
      .filter(([space]) => space.startsWith(prefix))
      .map(([space, records]) => ({ space, entries: [...records.values()].map((r) => r.entry) }));
  }

  /** Every space this process publishes in. */
  spaces(): IterableIterator<string> {
    return this.#records.keys();
  }

  /** A peer watches `space`: it gets our entries now and each change from then on. */
  subscribe(link: Link, space: string): RecordEntry[] {
    let set = this.#recordSubscribers.get(space);
    if (!set) this.#recordSubscribers.set(space, (set = new Set()));
    set.add(link);
    return this.entries(space);
  }

  /** Handles a record message from a peer (`runsub`, `rec`); false for any other. */
  pushed(link: Link, push: Push): boolean {
    // A peer no longer watches the space.
    if (push.k === "runsub") this.#recordSubscribers.get(push.space)?.delete(link);
    else if (push.k === "rec") this.#remoteRecord(link, push.space, push.event);
    else return false;
    return true;
  }

  /** A peer changed a record in a space we watch. */
  #remoteRecord(link: Link, space: string, event: RecordEvent): void {
    this.#track(link, space, event.type === "put" ? event.entry.key : event.key, event.type === "put");
    this.#deliver(space, event);
  }

  /** A new peer: watch there the spaces we watch, and take in what it publishes. */
  async joined(link: Link): Promise<void> {
    for (const space of this.#recordListeners.keys()) {
      const entries = await link.request("rsub", { space }, answers.entries).catch(() => null);
      for (const entry of entries ?? []) {
        this.#remoteRecord(link, space, { type: "put", entry });
      }
    }
  }

  /** A peer's link closed: what it published is gone with it. */
  forget(link: Link): void {
    for (const set of this.#recordSubscribers.values()) set.delete(link);
    const known = this.#peerRecords.get(link);
    this.#peerRecords.delete(link);
    for (const [space, keys] of known ?? []) {
      for (const key of keys) this.#deliver(space, { type: "delete", key });
    }
  }

  #publish(space: string, event: RecordEvent): void {
    for (const link of this.#recordSubscribers.get(space) ?? []) link.send({ t: "push", k: "rec", space, event });
    this.#deliver(space, event);
  }

  #deliver(space: string, event: RecordEvent): void {
    for (const listener of this.#recordListeners.get(space) ?? []) listener(event);
  }

  #track(link: Link, space: string, key: string, present: boolean): void {
    let spaces = this.#peerRecords.get(link);
    if (!spaces) this.#peerRecords.set(link, (spaces = new Map()));
    let keys = spaces.get(space);
    if (!keys) spaces.set(space, (keys = new Set()));
    if (present) keys.add(key);
    else keys.delete(key);
  }
}
