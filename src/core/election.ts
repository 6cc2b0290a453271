import type { CoordinatorCore } from "./core.js";
import type { RecordEntry } from "./driver.js";
import { InvalidStateError } from "./errors.js";
import { watchSpace, type WatchOptions } from "./group.js";
import { blockingGrant } from "./acquire.js";
import type { LockHandle } from "./lock.js";
import { checkJson, checkOptions, checkSignal } from "./validate.js";
import { electionSpace } from "./record-spaces.js";

/** Who leads an election. `Value` is the shape of the values the application campaigns with. */
export interface Leader<Value = unknown> {
  readonly memberId: string;
  /** The value the leader campaigned (or last proclaimed) with. */
  readonly value: Value;
  /** The leadership's fencing token: strictly increases with every new leader. */
  readonly token: bigint;
  /** Epoch ms when it became leader. */
  readonly since: number;
}

/** Options of {@link Election.campaign}. */
export interface CampaignOptions {
  /** Give up after this many milliseconds with a `TimeoutError`. */
  timeoutMs?: number | undefined;
  /** Withdraws the candidacy; rejects with an `AbortError`. */
  signal?: AbortSignal | undefined;
}

const LEADER_KEY = "leader";

/**
 * Held leadership. Lasts until `resign()`, `close()` or loss of the session (then
 * `signal` aborts before any other candidate can win, as for locks).
 */
export class Leadership<Value = unknown> implements AsyncDisposable {
  /** The election's id. */
  readonly electionId: string;
  readonly #handle: LockHandle;
  readonly #core: CoordinatorCore;
  readonly #space: string;
  #value: Value;

  /** @internal Use `election.campaign()`. */
  static create<Value>(
    core: CoordinatorCore,
    electionId: string,
    space: string,
    handle: LockHandle,
    value: Value,
  ): Leadership<Value> {
    return new Leadership(core, electionId, space, handle, value);
  }

  private constructor(core: CoordinatorCore, electionId: string, space: string, handle: LockHandle, value: Value) {
    this.#core = core;
    this.electionId = electionId;
    this.#space = space;
    this.#handle = handle;
    this.#value = value;
  }

  /** Fencing token of this leadership. */
  get token(): bigint {
    return this.#handle.token;
  }

  /** The value announced to observers. */
  get value(): Value {
    return this.#value;
  }

  /** Aborts when leadership is lost without `resign()` (reason: `LockLostError`). */
  get signal(): AbortSignal {
    return this.#handle.signal;
  }

  /** Whether this client still leads, as far as it knows. */
  get held(): boolean {
    return this.#handle.held;
  }

  /** Announces a new value to observers without giving up leadership. */
  async proclaim(value: Value): Promise<void> {
    const text = checkJson("value", value);
    if (!this.#handle.held) throw new InvalidStateError(`not the leader of "${this.electionId}" any more`);
    const session = this.#core.currentSession;
    if (!session) throw new InvalidStateError(`not the leader of "${this.electionId}" any more`);
    try {
      await session.driver.putRecord(
        this.#space,
        LEADER_KEY,
        leaderRecord(this.#core, text, this.token, this.#handle.acquiredAt),
      );
    } catch (error) {
      throw this.#core.translate(error);
    }
    this.#value = value;
  }

  /**
   * Gives up leadership; the next candidate in line wins. Idempotent and never throws: a
   * second call, a call after loss or after the coordinator's `close()`, and
   * `Symbol.asyncDispose` after an explicit call do nothing.
   */
  async resign(): Promise<void> {
    const session = this.#core.currentSession;
    if (this.#handle.held && session) {
      try {
        await this.#core.bounded(session.driver.deleteRecord(this.#space, LEADER_KEY), this.#core.ttlMs);
      } catch {
        // The lock's release (or the lease's expiry) still ends the leadership.
      }
    }
    await this.#handle.release();
  }

  /** Resigns (for `await using`); see {@link resign}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.resign();
  }
}

function leaderRecord(core: CoordinatorCore, valueJson: string, token: bigint, since: number): string {
  return `{"memberId":${JSON.stringify(core.memberId)},"token":"${token}","since":${since},"value":${valueJson}}`;
}

/** @internal */
export function toLeader<Value = unknown>(entry: RecordEntry | undefined): Leader<Value> | null {
  if (!entry) return null;
  const parsed = JSON.parse(entry.value) as { memberId: string; token: string; since: number; value: Value };
  return { memberId: parsed.memberId, value: parsed.value, token: BigInt(parsed.token), since: parsed.since };
}

/**
 * Leader election (etcd's Campaign/Resign/Leader/Observe). Candidates queue like lock
 * waiters, so leadership passes in campaign order where the backend is `fifo`; at most one
 * leader at a time, each with a higher fencing token than the last.
 */
export class Election<Value = unknown> {
  /** The election's id. */
  readonly id: string;
  readonly #core: CoordinatorCore;

  private constructor(core: CoordinatorCore, id: string) {
    this.#core = core;
    this.id = id;
  }

  /** @internal Use `coordinator.election(id)`. */
  static create<Value>(core: CoordinatorCore, id: string): Election<Value> {
    return new Election<Value>(core, id);
  }

  get #space(): string {
    return electionSpace(this.id);
  }

  /**
   * Waits to become leader, then announces `value` (any JSON value). Cancellation as for
   * lock acquisition: on timeout or abort the candidacy is withdrawn without trace. A
   * candidate whose session is lost while waiting campaigns again on a fresh session, at
   * the back of the line, until its own `timeoutMs` (see `Lock.acquire`).
   */
  async campaign(value: Value, options?: CampaignOptions): Promise<Leadership<Value>> {
    const text = checkJson("value", value);
    const checked = checkOptions("campaign options", options);
    const handle = await blockingGrant(
      this.#core,
      { kind: "election", name: this.id, limit: 1, mode: "exclusive" },
      checked,
    );
    const session = this.#core.currentSession;
    try {
      if (!session) throw new InvalidStateError("the session was lost while campaigning");
      await session.driver.putRecord(
        this.#space,
        LEADER_KEY,
        leaderRecord(this.#core, text, handle.token, handle.acquiredAt),
      );
    } catch (error) {
      await handle.release();
      throw this.#core.translate(error);
    }
    return Leadership.create(this.#core, this.id, this.#space, handle, value);
  }

  /** The current leader, or `null` when there is none. */
  async leader(): Promise<Leader<Value> | null> {
    this.#core.assertOpen();
    try {
      const entries = await this.#core.driver.listRecords(this.#space);
      return toLeader<Value>(entries.find((e) => e.key === LEADER_KEY));
    } catch (error) {
      throw this.#core.translate(error);
    }
  }

  /**
   * Pushes the leader as it changes: first the current one (or `null`), then every new
   * leader or proclaimed value, and `null` when leadership lapses. An observer that falls
   * behind (a reconnect, values proclaimed in quick succession; on ZooKeeper, large values
   * past the record's 512 KiB history) may skip intermediate values, never the latest, and
   * never reorders them.
   */
  observe(options?: WatchOptions): AsyncIterableIterator<Leader<Value> | null> {
    const { signal } = checkOptions("observe options", options);
    const userSignal = checkSignal("signal", signal);
    this.#core.assertOpen();
    return watchSpace<Leader<Value> | null>(this.#core, this.#space, userSignal, () => ({
      snapshot: (entries) => [toLeader<Value>(entries.find((e) => e.key === LEADER_KEY))],
      event: (event) => {
        if (event.type === "delete") return event.key === LEADER_KEY ? [null] : [];
        return event.entry.key === LEADER_KEY ? [toLeader<Value>(event.entry)] : [];
      },
    }));
  }
}
