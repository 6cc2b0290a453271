/**
 * Persistent recursive watches (ZooKeeper 3.6+) of one client, by path: added once per
 * path however many listeners, removed with the last one, and added again after every
 * reconnection, since the package cannot carry them across one (its SET_WATCHES has no
 * persistent kind).
 *
 * @module
 */
import type { HandBuilt } from "./requests.js";

/** A persistent recursive watch's listener. */
export interface PersistentListener {
  /** One change below the watched path, in the server's order: its type and the node's path. */
  event(type: number, path: string): void;
  /**
   * The connection was replaced and the watch added again: changes made meanwhile were not
   * reported, so everything must be read again.
   */
  reset(): void;
}

/** The persistent watches of one client. */
export class PersistentWatches {
  readonly #requests: HandBuilt;
  readonly #connected: () => boolean;
  /** Persistent recursive watches, by path; re-added after every reconnection. */
  readonly #persistent = new Map<string, Set<PersistentListener>>();

  constructor(requests: HandBuilt, connected: () => boolean) {
    this.#requests = requests;
    this.#connected = connected;
  }

  /** See ZkHandle.watchBelow. */
  async watchBelow(path: string, listener: PersistentListener): Promise<() => void> {
    let listeners = this.#persistent.get(path);
    const first = !listeners;
    if (!listeners) this.#persistent.set(path, (listeners = new Set()));
    listeners.add(listener);
    try {
      if (first) await this.#requests.addWatch(path);
    } catch (error) {
      this.#unwatch(path, listener);
      throw error;
    }
    return () => this.#unwatch(path, listener);
  }

  #unwatch(path: string, listener: PersistentListener): void {
    const listeners = this.#persistent.get(path);
    if (!listeners?.delete(listener) || listeners.size > 0) return;
    this.#persistent.delete(path);
    if (this.#connected()) this.#requests.removeWatch(path).catch(() => {});
  }

  /** An event the server sent for `path`: to the listeners of every watch above it. */
  dispatch(type: number, path: string): void {
    for (const [root, listeners] of this.#persistent) {
      if (path !== root && !path.startsWith(`${root}/`)) continue;
      for (const listener of [...listeners]) listener.event(type, path);
    }
  }

  /** After a reconnection: the server forgot the persistent watches with the old connection. */
  rewatch(): void {
    for (const [path, listeners] of this.#persistent) {
      this.#requests.addWatch(path).then(
        () => {
          for (const listener of [...listeners]) listener.reset();
        },
        () => {
          // Lost again: the next reconnection adds it again.
        },
      );
    }
  }
}
