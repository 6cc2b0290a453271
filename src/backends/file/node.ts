import { closeSync } from "node:fs";
import { sleep } from "../../core/abortable.js";
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import { type Directory, FILES, lockFileName, openDirectoryFd, openFile } from "./directory.js";
import {
  type DirectoryInspection,
  localNamespaces,
  localQueues,
  mergeInspection,
  type SessionView,
} from "./inspection.js";
import { LockFiles } from "./kernel.js";
import { type Link, Mesh, type Message } from "./mesh.js";
import { answers, type LocalQueueState, type Push, type Request } from "./protocol.js";
import { RecordReplication } from "./replication.js";
import { type Waiter, Wakeups } from "./wakeups.js";

export type { SessionView } from "./inspection.js";
export type { LocalQueueState } from "./protocol.js";
export type { Waiter } from "./wakeups.js";

/**
 * One per (process, directory): the mesh link to other processes, the wake-up plumbing
 * (wakeups.ts), the records this process publishes (replication.ts) and the answers to
 * inspection (inspection.ts). Shared by every coordinator of the process that uses the
 * directory; this class owns the descriptors and routes the peer protocol.
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
  readonly #wakeups: Wakeups;
  readonly #records: RecordReplication;
  /** Local watchers of cells buckets, told when any process rewrote a bucket. */
  readonly #cellListeners = new Set<(bucket: number) => void>();
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
    this.#wakeups = new Wakeups(this.mesh, () => this.#discover());
    this.#records = new RecordReplication(this.mesh);
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
    this.#wakeups.close();
    this.probes.close();
    for (const fd of [this.tokensFd, this.probeSemFd, this.#directoryFd]) closeSync(fd);
  }

  /** A session id unique across the processes of the directory (peer id and a counter). */
  newSessionId(): string {
    return `${this.mesh.peerId}.${++this.#nextSession}`;
  }

  // ---- waiting (wakeups.ts) ------------------------------------------------------------

  /** See {@link Wakeups.addWaiter}: true when the waiter got in on its first try. */
  addWaiter(waiter: Waiter): boolean {
    return this.#wakeups.addWaiter(waiter);
  }

  /** See {@link Wakeups.removeWaiter}. */
  removeWaiter(waiter: Waiter): void {
    this.#wakeups.removeWaiter(waiter);
  }

  /** A slot was freed here: see {@link Wakeups.freed}. */
  freed(slot: number): void {
    this.#wakeups.freed(slot);
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
    await this.#wakeups.joined(link);
    await this.#records.joined(link);
  }

  #left(link: Link): void {
    this.#wakeups.forget(link);
    this.#records.forget(link);
    this.#wakeups.retryAfterDeath();
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

  // ---- records (replication.ts) --------------------------------------------------------

  /** See {@link RecordReplication.putRecord}. */
  putRecord(space: string, entry: RecordEntry): void {
    this.#records.putRecord(space, entry);
  }

  /** See {@link RecordReplication.deleteRecord}. */
  deleteRecord(space: string, key: string, sessionId: string): boolean {
    return this.#records.deleteRecord(space, key, sessionId);
  }

  /** See {@link RecordReplication.localRecord}. */
  localRecord(space: string, key: string): RecordEntry | undefined {
    return this.#records.localRecord(space, key);
  }

  /** See {@link RecordReplication.listRecords}. */
  listRecords(space: string): Promise<RecordEntry[]> {
    return this.#records.listRecords(space);
  }

  /** See {@link RecordReplication.watchRecords}: ends when `signal` aborts. */
  watchRecords(space: string, listener: (event: RecordEvent) => void, signal: AbortSignal): Promise<RecordEntry[]> {
    return this.#records.watchRecords(space, listener, signal);
  }

  // ---- inspection (inspection.ts) ------------------------------------------------------

  /** What this process's sessions hold and await in `namespace`. */
  localQueues(namespace: string): LocalQueueState[] {
    return localQueues(this.sessions.values(), namespace);
  }

  /** Everything every process of this directory holds, awaits and publishes in `namespace`. */
  async inspect(namespace: string, prefix: string): Promise<DirectoryInspection> {
    await this.#discover();
    const states = [...this.localQueues(namespace)];
    const spaces = this.#records.localSpaces(prefix);
    const peers = await Promise.all(
      this.mesh.links.map((l) => l.request("inspect", { namespace, prefix }, answers.inspect, 2000).catch(() => null)),
    );
    for (const answer of peers) {
      states.push(...(answer?.queues ?? []));
      spaces.push(...(answer?.spaces ?? []));
    }
    return mergeInspection(states, spaces);
  }

  /** The namespaces this process has something live in. */
  localNamespaces(): string[] {
    return localNamespaces(this.sessions.values(), this.#records.spaces());
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
        this.#wakeups.subscribe(link, request.slots);
        return {};
      case "rsub":
        return { entries: this.#records.subscribe(link, request.space) };
      case "list":
        return { entries: this.#records.entries(request.space) };
      case "inspect":
        return { queues: this.localQueues(request.namespace), spaces: this.#records.localSpaces(request.prefix) };
      case "namespaces":
        return { namespaces: this.localNamespaces() };
    }
  }

  #push(link: Link, push: Push): void {
    if (push.k !== "cell") {
      if (!this.#wakeups.pushed(link, push)) this.#records.pushed(link, push);
      return;
    }
    for (const listener of this.#cellListeners) listener(push.bucket);
  }
}
