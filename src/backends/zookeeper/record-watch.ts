/**
 * Watching a record space with no gap, each value reported once and in order (see
 * `watchRecords`).
 *
 * @module
 */
import { onAbort, sleep } from "../../core/abortable.js";
import type { RecordEntry, RecordEvent } from "../../core/driver.js";
import { debug } from "../../core/debug.js";
import { credentialsRefused, type EndReason, type PersistentListener, type ZkHandle } from "./client.js";
import { translate, type ZkError } from "./errors.js";
import { decodeSegment, type Layout } from "./paths.js";
import { decodeRecord, parseEpitaphs, valuesSince } from "./records.js";
import { retrying } from "./scope.js";

/** Event types of a watch. */
const CREATED = 1;
const DELETED = 2;
const CHANGED = 3;

/**
 * Steps run in the order their events and answers came from the server. A step that must
 * read before it can finish holds the steps behind it until it has.
 */
class InOrder {
  #held: (() => void)[] | null = null;

  run(step: () => void): void {
    if (this.#held) this.#held.push(step);
    else step();
  }

  hold(): void {
    this.#held ??= [];
  }

  release(): void {
    const steps = this.#held ?? [];
    this.#held = null;
    // Through run: if one of them holds again, the rest wait behind it, in order.
    for (const step of steps) this.run(step);
  }
}

/**
 * Pushes the changes of one space to `listener` until `signal` aborts. Resolves with the
 * records present when the watch began.
 *
 * One persistent recursive watch on the space reports every create, delete and change in
 * order, so nothing slips between two reads (one-shot watches must be re-armed by a read,
 * and a record deleted and made again before that read looked merely changed). A create
 * or change is read; answers and events are applied in the order the server sent them
 * (`getInOrder`), since the server sends an answer after every event of what it had
 * applied before reading, so an answer shows the state that its preceding events left. A
 * record node keeps its last 16 values (fewer past 512 KiB, records.ts), so a read reports
 * the values since the last one reported, never just the newest; of a watcher further
 * behind, the dropped ones are skipped, in order, the latest always reported.
 *
 * A delete that comes after a create or change no read has shown yet (the member updated
 * and left within one round trip of the watcher, or the watcher's read was slow) would
 * lose those values: the node is gone. So `deleteRecord` deletes a record in one multi
 * with a write of its epitaph (the node's czxid, last version and data) into the space
 * node, which keeps the last eight, and the watcher reads them (holding every later step)
 * and reports what it missed before the delete. Not recovered, only the delete reported:
 * values of a record whose session ended (the server deletes it, no epitaph), or whose
 * epitaph eight later deletes pushed out before the watcher's read reached the server.
 * After a reconnection the space is read again in full and the differences are reported.
 * After the server expired the handle's session (a partition longer than its timeout),
 * the watch goes on with a new handle from `live` (the driver's), and likewise; if that
 * can never work (the server refused the credentials), `failed` hears why and no event
 * comes after.
 */
export async function watchRecords(
  live: () => Promise<ZkHandle>,
  layout: Layout,
  space: string,
  listener: (event: RecordEvent) => void,
  watching: AbortSignal,
  failed?: (error: Error) => void,
): Promise<RecordEntry[]> {
  const parent = layout.recordSpace(space);
  /** Aborted by `fail`: the watch ended for good. */
  const halt = new AbortController();
  const signal = AbortSignal.any([watching, halt.signal]);
  const known = new Map<string, RecordEntry>();
  /** What was last reported of each node: which node (czxid) and its version. */
  const seen = new Map<string, { czxid: bigint; version: number }>();
  /** Children with a create or change that no applied read has shown. */
  const unread = new Set<string>();
  const order = new InOrder();
  let emitting = false;
  const emit = (event: RecordEvent) => {
    if (emitting && !signal.aborted) listener(event);
  };

  const forget = (key: string) => {
    seen.delete(key);
    if (known.delete(key)) emit({ type: "delete", key });
  };

  /** Reports what node `czxid` of `child`, at `version` with `data`, shows that is new. */
  const apply = (child: string, czxid: bigint, version: number, data: string) => {
    const key = decodeSegment(child);
    const entry = decodeRecord(key, data);
    if (!entry) return forget(key);
    const last = seen.get(key);
    if (last && last.czxid !== czxid) forget(key); // replaced by a new node
    const from = last && last.czxid === czxid ? last.version : -1;
    if (version < from) return;
    seen.set(key, { czxid, version });
    known.set(key, entry);
    // Every value since the last one reported, so quick successive updates are not merged.
    for (const value of valuesSince(data, version, from)) emit({ type: "put", entry: { ...entry, value } });
  };

  /**
   * Reads `child` on `on` (the handle whose event or listing asked: its answers come in
   * order with them); resolves once its answer is applied (or failed: a reset reads again).
   */
  const read = (on: ZkHandle, child: string): Promise<void> =>
    new Promise((resolve) => {
      on.getInOrder(`${parent}/${child}`, (answer) => {
        if (isError(answer)) return resolve();
        order.run(() => {
          unread.delete(child); // the answer shows every change whose event came before it
          if (!signal.aborted) {
            if (answer) apply(child, answer.stat.czxid, answer.stat.version, answer.data);
            else forget(decodeSegment(child)); // its delete came first
          }
          resolve();
        });
      });
    });

  /**
   * Per child, the czxid of its last node deleted, so that the epitaph of a later node of
   * the same child, never read, is told from that one's. Bounded: an entry matters only
   * while that node's epitaph may still be in the space node.
   */
  const buried = new Map<string, bigint>();
  const bury = (child: string, czxid: bigint) => {
    buried.delete(child);
    buried.set(child, czxid);
    if (buried.size > 256) buried.delete(buried.keys().next().value as string);
  };

  const deleted = (on: ZkHandle, child: string) => {
    const key = decodeSegment(child);
    const last = seen.get(key);
    if (!unread.delete(child)) {
      if (last) bury(child, last.czxid);
      return forget(key);
    }
    // Values no read showed: in the epitaph the delete wrote. The space node's read comes
    // after the delete, so it shows the epitaph unless eight deletes came since.
    const floor = buried.get(child) ?? -1n;
    order.hold();
    on.getInOrder(parent, (answer) => {
      const epitaphs = isError(answer) || !answer ? [] : parseEpitaphs(answer.data);
      // The deleted node is the one last read, or else the oldest since the last deleted.
      const epitaph = epitaphs.find((e) => e.child === child && (last ? e.czxid === last.czxid : e.czxid > floor));
      if (epitaph && !signal.aborted) apply(child, epitaph.czxid, epitaph.version, epitaph.data);
      const gone = epitaph?.czxid ?? last?.czxid;
      if (gone !== undefined) bury(child, gone);
      forget(key);
      order.release();
    });
  };

  /** Reads the whole space on `on`; reports what differs from what was known. */
  const readAll = async (on: ZkHandle): Promise<void> => {
    const list = () =>
      new Promise<Promise<void>[]>((resolve, reject) => {
        on.childrenInOrder(parent, (listed) => {
          if (isError(listed)) return reject(listed);
          order.run(() => {
            const children = listed?.children ?? [];
            const present = new Set(children.map(decodeSegment));
            for (const key of [...known.keys()]) if (!present.has(key)) forget(key);
            // Listed, not yet read: deleted before its read, its values are in its epitaph.
            for (const child of children) unread.add(child);
            resolve(children.map((child) => read(on, child)));
          });
        });
      });
    await Promise.all(await retrying(on, `watching ${space}`, list, signal));
  };

  /**
   * The listener of the watch on `on`: it reads on `on`, whatever handle the watch has moved
   * to (events on a new handle may come before the move has finished).
   */
  const watcherOn = (on: ZkHandle): PersistentListener => ({
    event(type, path) {
      const child = path.slice(parent.length + 1);
      if (child === "" || child.includes("/") || signal.aborted) return;
      if (type === DELETED) return order.run(() => deleted(on, child));
      if (type !== CREATED && type !== CHANGED) return;
      order.run(() => unread.add(child));
      void read(on, child);
    },
    reset() {
      if (!signal.aborted) readAll(on).catch(() => {});
    },
  });

  /** Ends the watch for good after it began: `failed` hears why, no event comes after. */
  const fail = (error: unknown) => {
    if (signal.aborted) return;
    const reason = translate(error, `watching ${space}`);
    halt.abort(reason);
    failed?.(reason);
  };

  /**
   * The watch on a new handle once `ended`'s session expired (no event would ever come
   * again on it): the space read again in full, the differences reported. Tried again,
   * backing off, while no server can be reached; ended (`failed`) if the server refused
   * the credentials, which trying again would not change.
   */
  const moveOn = async (ended: ZkHandle) => {
    unwatch(); // the ended handle's: it forgets the listener (the server forgot the watch)
    unwatch = () => {};
    const after = `after session ${ended.sessionId} expired`;
    let next: ZkHandle | undefined;
    await persist(
      `watching again ${after}`,
      () => !signal.aborted,
      async () => {
        const candidate = await live();
        if (signal.aborted) return;
        const off = await candidate.watchBelow(parent, watcherOn(candidate));
        if (signal.aborted) return off();
        unwatch = off;
        next = candidate;
      },
    );
    if (!next) return;
    const moved: ZkHandle = next;
    debug("zookeeper watch of %s: moved from expired session %s to %s", space, ended.sessionId, moved.sessionId);
    follow(moved); // if it ends too, its end moves on again
    // Read again until read: else what changed while the watch was gone would never show.
    await persist(
      `reading again ${after}`,
      () => !signal.aborted && moved.ended === null,
      () => readAll(moved),
    );
  };
  /**
   * Runs `step` until it succeeds, while `going()`, backing off from 100 ms to 5 s between
   * tries; each failure is logged, and refused credentials end the watch (`fail`).
   */
  const persist = async (what: string, going: () => boolean, step: () => Promise<void>): Promise<void> => {
    for (let pause = 100; going(); pause = Math.min(2 * pause, 5000)) {
      try {
        return await step();
      } catch (error) {
        if (!going()) return;
        debug("zookeeper watch of %s: %s failed (%s)", space, what, error instanceof Error ? error.message : error);
        if (credentialsRefused(error)) return fail(error);
        await sleep(pause, signal, { unref: true }).catch(() => {});
      }
    }
  };
  /** Taken off the handle when the watch stops (a handle outlives many watches). */
  let unfollow = () => {};
  const follow = (watched: ZkHandle) => {
    const ended = (reason: EndReason) => {
      if (reason === "expired" && !signal.aborted) void moveOn(watched);
    };
    if (watched.ended) ended(watched.ended);
    else unfollow = watched.onEnd(ended);
  };

  const first = await live();
  let unwatch = await first.watchBelow(parent, watcherOn(first));
  onAbort(signal, () => {
    unwatch();
    unfollow();
  });
  try {
    await readAll(first);
  } catch (error) {
    unwatch();
    throw error;
  }
  emitting = true;
  follow(first);
  return [...known.values()].sort((a, b) => (a.key < b.key ? -1 : 1));
}

function isError(answer: unknown): answer is ZkError {
  return answer instanceof Error;
}
