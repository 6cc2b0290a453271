/**
 * Routing of grant messages to waiters. A grant script publishes `g|u <entry> <token>`
 * (and, when the grant wrote the waiter's takeover record, its version) on the channel of the session that owns the entry; the driver hands it to that entry's
 * mailbox. A mailbox also wakes its owner to look again (one CHECK script) when the
 * subscription came back after a disconnection (messages may be lost) and, rarely, when
 * a session ahead of it could have expired without releasing (the script says when).
 *
 * @module
 */
import { type CancelWatch, onAbort } from "../../core/abortable.js";

/** Counters for benchmarks: whether grants come from messages or from re-checks. */
export const wakeStats = { messages: 0, checks: 0, grantsByMessage: 0, grantsByCheck: 0 };

export type Wake =
  | {
      readonly type: "message";
      readonly kind: string;
      readonly token: bigint;
      /** The version of the takeover record the grant wrote, if it wrote one. */
      readonly recordVersion: string | undefined;
    }
  | { readonly type: "check" };

const CHECK_WAKE: Wake = Object.freeze({ type: "check" });

/** One waiting entry's inbox. */
export class Mailbox {
  readonly #queue: Wake[] = [];
  #notify: (() => void) | null = null;
  readonly #dispose: () => void;

  constructor(dispose: () => void) {
    this.#dispose = dispose;
  }

  push(wake: Wake): void {
    // A pending check is enough once; messages always count.
    if (wake.type === "check" && this.#queue.some((w) => w.type === "check")) return;
    this.#queue.push(wake);
    this.#notify?.();
  }

  /**
   * The next wake-up: a message, a resubscription, or `"check"` once `recheckMs` passed.
   * Rejects with the reason of `cancel` or `ended`, whichever aborts first. A plain promise
   * on two subscriptions (no `AbortController`, no event listener per wait: `ended` is
   * kept listened to by its session): the wait a handoff ends, in a process that may run
   * it a few times a second, so mostly not compiled by V8 yet.
   */
  next(recheckMs: number, cancel: CancelWatch, ended: AbortSignal): Promise<Wake> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (cancel.aborted) return Promise.reject(cancel.reason);
    if (ended.aborted) return Promise.reject(ended.reason);
    return new Promise<Wake>((resolve, reject) => {
      const finish = () => {
        this.#notify = null;
        clearTimeout(timer);
        undoCancel();
        undoEnded();
      };
      const timer = setTimeout(() => {
        finish();
        resolve(CHECK_WAKE);
      }, recheckMs);
      timer.unref();
      this.#notify = () => {
        finish();
        resolve(this.#queue.shift()!);
      };
      const undoCancel = cancel.onAbort(() => {
        finish();
        reject(cancel.reason);
      });
      const undoEnded = onAbort(ended, () => {
        finish();
        reject(ended.reason);
      });
    });
  }

  dispose(): void {
    this.#dispose();
  }
}

/** Every mailbox of one driver, by entry id. */
export class Wakeups {
  readonly #boxes = new Map<string, Mailbox>();

  /** The channel listener: parses a grant message and delivers it. */
  readonly deliver = (message: string): void => {
    const [kind, id, token, recordVersion] = message.split(" ");
    const box = id === undefined ? undefined : this.#boxes.get(id);
    if (!box || kind === undefined || token === undefined) return;
    wakeStats.messages++;
    box.push({ type: "message", kind, token: BigInt(token), recordVersion });
  };

  /** Opens the mailbox of an entry, before the script that may grant it is sent. */
  open(id: string): Mailbox {
    const box = new Mailbox(() => {
      if (this.#boxes.get(id) === box) this.#boxes.delete(id);
    });
    this.#boxes.set(id, box);
    return box;
  }

  /** After a resubscription: every waiter looks again. */
  checkAll(): void {
    for (const box of this.#boxes.values()) box.push(CHECK_WAKE);
  }
}

/**
 * When to look again after a script said the soonest blocker session expires in
 * `soonestMs` (-1: none but ours): just after it could have expired, or else after `ttlMs`.
 */
export function recheckDelay(soonestMs: number, ttlMs: number): number {
  return soonestMs >= 0 ? soonestMs + 25 : ttlMs;
}
