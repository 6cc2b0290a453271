/**
 * Routing of grant messages to waiters. A grant script publishes `g|u <entry> <token>`
 * (and, when the grant wrote the waiter's takeover record, its version) on the channel of the session that owns the entry; the driver hands it to that entry's
 * mailbox. A mailbox also wakes its owner to look again (one CHECK script) when the
 * subscription came back after a disconnection (messages may be lost) and, rarely, when
 * a session ahead of it could have expired without releasing (the script says when).
 *
 * @module
 */
import { abortable } from "../../core/abortable.js";

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
   * Rejects with `signal.reason` on abort.
   */
  next(recheckMs: number, signal: AbortSignal): Promise<Wake> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    return abortable<Wake>(signal, (resolve) => {
      const timer = setTimeout(() => resolve({ type: "check" }), recheckMs);
      timer.unref();
      this.#notify = () => resolve(this.#queue.shift()!);
      return () => {
        clearTimeout(timer);
        this.#notify = null;
      };
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
    for (const box of this.#boxes.values()) box.push({ type: "check" });
  }
}

/**
 * When to look again after a script said the soonest blocker session expires in
 * `soonestMs` (-1: none but ours): just after it could have expired, or else after `ttlMs`.
 */
export function recheckDelay(soonestMs: number, ttlMs: number): number {
  return soonestMs >= 0 ? soonestMs + 25 : ttlMs;
}
