/**
 * Watches on a few keys or one prefix, from a known revision, so that nothing that
 * happened after a read is missed. A broken stream is reported instead of being papered
 * over: the etcd3 client resumes a watch from the revision of its last response, which can
 * skip events that were still in flight, so callers re-read instead.
 *
 * @module
 */
import { abortable } from "../../core/abortable.js";
import type { Etcd3, IKeyValue, IWatchResponse, Watcher } from "etcd3";

export interface WatchTarget {
  readonly key: string;
  /** Watch every key starting with `key`. */
  readonly prefix?: boolean;
  /** Report deletions only. */
  readonly deletesOnly?: boolean;
}

export interface WatchedEvent {
  readonly type: "put" | "delete";
  readonly kv: IKeyValue;
}

export interface WatchHandlers {
  events(events: WatchedEvent[]): void;
  /** The stream broke or etcd cancelled the watch (e.g. compaction): events may be missing. */
  broken(error: unknown): void;
}

/** Live watches of one driver, closed before its client. */
export type WatchRegistry = Set<KeyWatch>;

export class KeyWatch {
  readonly #watchers: Watcher[] = [];
  readonly #handlers: WatchHandlers;
  readonly #registry: WatchRegistry;
  #closed = false;
  /**
   * Resolves once etcd has created every watch of this set (it never rejects: a watch that
   * breaks first reports `broken`). From then on the watch reports every change after the
   * revision at which it was created.
   */
  readonly created: Promise<void>;

  /**
   * Starts at `fromRevision` (inclusive): pass the revision of the read plus one. Or
   * `"now"`: at the server's current revision. A watch that starts at a revision already
   * past is "unsynced" in etcd, which catches those up only every 100 ms (its
   * watchResyncPeriod), so a waiter that starts it from an older read is woken up to
   * 100 ms late whenever anything was written meanwhile; one started `"now"` is synced at
   * once, and the caller re-reads after {@link created} to learn what came before.
   */
  constructor(
    client: Etcd3,
    targets: readonly WatchTarget[],
    fromRevision: bigint | "now",
    handlers: WatchHandlers,
    registry: WatchRegistry,
  ) {
    this.#handlers = handlers;
    this.#registry = registry;
    registry.add(this);
    const created: Promise<void>[] = [];
    for (const target of targets) {
      let builder = client.watch();
      builder = target.prefix ? builder.prefix(target.key) : builder.key(target.key);
      if (target.deletesOnly) builder = builder.only("delete");
      if (fromRevision !== "now") builder = builder.startRevision(fromRevision.toString());
      const watcher = builder.watcher();
      created.push(new Promise<void>((resolve) => watcher.once("connected", () => resolve())));
      watcher.on("data", (response: IWatchResponse) => this.#data(response));
      watcher.on("disconnected", (error) => this.#broken(error));
      watcher.on("error", (error) => this.#broken(error));
      this.#watchers.push(watcher);
    }
    this.created = Promise.all(created).then(() => {});
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#registry.delete(this);
    for (const watcher of this.#watchers) watcher.cancel().catch(() => {});
  }

  #data(response: IWatchResponse): void {
    if (this.#closed || !response.events || response.events.length === 0) return;
    const events = response.events.map((event) => ({
      type: String(event.type).toLowerCase() === "delete" ? ("delete" as const) : ("put" as const),
      kv: event.kv,
    }));
    this.#handlers.events(events);
  }

  #broken(error: unknown): void {
    if (this.#closed) return;
    this.close();
    this.#handlers.broken(error);
  }
}

/**
 * Resolves with the first batch of events that `relevant` accepts, or `"broken"`; rejects
 * with `signal.reason` on abort. The watch is closed in every case.
 */
export function nextChange(
  client: Etcd3,
  targets: readonly WatchTarget[],
  fromRevision: bigint,
  relevant: (event: WatchedEvent) => boolean,
  signal: AbortSignal,
  registry: WatchRegistry,
): Promise<WatchedEvent[] | "broken"> {
  return abortable<WatchedEvent[] | "broken">(signal, (resolve) => {
    const watch = new KeyWatch(
      client,
      targets,
      fromRevision,
      {
        events: (events) => {
          if (events.some(relevant)) resolve(events);
        },
        broken: () => resolve("broken"),
      },
      registry,
    );
    return () => watch.close();
  });
}
