import { onAbort } from "./abortable.js";
import type { CoordinatorCore } from "./core.js";
import type { RecordEntry, RecordEvent } from "./driver.js";
import { InvalidStateError, LockLostError } from "./errors.js";
import type { LiveSession } from "./session.js";
import { EventStream } from "./stream.js";
import { checkJson, checkOptions, checkSignal } from "./validate.js";
import { groupSpace } from "./record-spaces.js";

/**
 * A member of a group. `Caps` is the shape the application gives its capabilities; Baton
 * stores them as JSON and does not check other members' against it.
 */
export interface Member<Caps = unknown> {
  readonly memberId: string;
  /** What the member declared at join or last update (any JSON value). */
  readonly capabilities: Caps;
  /** Epoch ms when it joined. */
  readonly joinedAt: number;
}

/** A change of a group's membership, pushed by the backend. */
export type GroupEvent<Caps = unknown> =
  | {
      readonly type: "join";
      readonly member: Member<Caps>;
      /** True for members already present when the watch started. */
      readonly existing: boolean;
    }
  | { readonly type: "update"; readonly member: Member<Caps> }
  | { readonly type: "leave"; readonly memberId: string };

/** Options of {@link Group.watch}. */
export interface WatchOptions {
  /** Ends the iteration when aborted. */
  signal?: AbortSignal | undefined;
}

/**
 * This coordinator's membership of a group. It lasts until `leave()`, `close()`, or the
 * loss of the session (then `signal` aborts and the other members see a `leave`).
 */
export class Membership<Caps = unknown> implements AsyncDisposable {
  /** The group's id. */
  readonly groupId: string;
  /** This member's id (the coordinator's). */
  readonly memberId: string;
  readonly #group: Group<Caps>;
  readonly #session: LiveSession;
  readonly #controller = new AbortController();
  #active = true;

  /** @internal Use `group.join()`. */
  static create<Caps>(group: Group<Caps>, session: LiveSession, memberId: string): Membership<Caps> {
    return new Membership(group, session, memberId);
  }

  private constructor(group: Group<Caps>, session: LiveSession, memberId: string) {
    this.#group = group;
    this.#session = session;
    this.groupId = group.id;
    this.memberId = memberId;
    session.dependents.add(this);
  }

  /** Aborts when the membership is lost without `leave()` (reason: `LockLostError`). */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether this member is still in the group, as far as this client knows. */
  get active(): boolean {
    return this.#active;
  }

  /** @internal */
  get session(): LiveSession {
    return this.#session;
  }

  /** @internal */
  lose(error: Error): void {
    if (!this.#active) return;
    this.#deactivate();
    this.#controller.abort(
      new LockLostError(`membership of group "${this.groupId}" was lost: ${error.message}`, { cause: error }),
    );
  }

  /**
   * Leaves the group; other members see a `leave` event. Idempotent and never throws:
   * a second call, a call after the membership was lost or the coordinator closed, and
   * `Symbol.asyncDispose` after an explicit call do nothing. When the backend cannot be
   * reached, the session's expiry removes the member.
   */
  async leave(): Promise<void> {
    if (!this.#active) return;
    this.#deactivate();
    await this.#group.removeRecord(this.#session);
  }

  /** Replaces this member's capabilities. */
  async update(capabilities: Caps): Promise<void> {
    await this.#group.update(capabilities);
  }

  /** Leaves (for `await using`); does nothing after an explicit `leave()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.leave();
  }

  #deactivate(): void {
    this.#active = false;
    this.#session.dependents.delete(this);
    this.#group.forget(this);
  }
}

/**
 * A named group of members with capabilities (tooz-style). Membership is bound to the
 * coordinator's session, so a member whose process died disappears within its TTL (at once
 * on backends that detect process death). Events are pushed, never polled.
 */
export class Group<Caps = unknown> {
  /** The group's id. */
  readonly id: string;
  readonly #core: CoordinatorCore;
  #membership: Membership<Caps> | null = null;

  private constructor(core: CoordinatorCore, id: string) {
    this.#core = core;
    this.id = id;
  }

  /** @internal Use `coordinator.group(id)`. */
  static create<Caps>(core: CoordinatorCore, id: string): Group<Caps> {
    return new Group<Caps>(core, id);
  }

  /** @internal Record space holding the members, keyed by member id. */
  get space(): string {
    return groupSpace(this.id);
  }

  /**
   * Joins the group as this coordinator's member id with `capabilities` (any JSON value,
   * at most 64 KiB). Throws `InvalidStateError` if this coordinator is already a member.
   */
  async join(capabilities: Caps = {} as Caps): Promise<Membership<Caps>> {
    const value = checkJson("capabilities", capabilities);
    this.#core.assertOpen();
    if (this.#membership?.active) {
      throw new InvalidStateError(`member "${this.#core.memberId}" has already joined group "${this.id}"`);
    }
    const session = await this.#core.liveSession();
    try {
      await session.driver.putRecord(this.space, this.#core.memberId, value);
    } catch (error) {
      throw this.#core.translate(error);
    }
    const membership = Membership.create(this, session, this.#core.memberId);
    this.#membership = membership;
    return membership;
  }

  /**
   * Leaves the group: {@link Membership.leave} of this coordinator's membership. Throws
   * `InvalidStateError` if this coordinator is not a member (a misuse worth telling);
   * `Membership.leave()` is the idempotent form that never throws.
   */
  async leave(): Promise<void> {
    const membership = this.#membership;
    if (!membership?.active) {
      throw new InvalidStateError(`member "${this.#core.memberId}" is not in group "${this.id}"`);
    }
    await membership.leave();
  }

  /** @internal Deletes this member's record, bounded by the TTL. Never throws. */
  async removeRecord(session: LiveSession): Promise<void> {
    if (session.lost) return; // The backend removed it with the session.
    try {
      await this.#core.bounded(session.driver.deleteRecord(this.space, this.#core.memberId), this.#core.ttlMs);
    } catch {
      // The session's expiry removes the record.
    }
  }

  /** Replaces this member's capabilities; others see an `update` event. */
  async update(capabilities: Caps): Promise<void> {
    const value = checkJson("capabilities", capabilities);
    this.#core.assertOpen();
    const membership = this.#membership;
    if (!membership?.active) {
      throw new InvalidStateError(`member "${this.#core.memberId}" is not in group "${this.id}"; join first`);
    }
    try {
      await membership.session.driver.putRecord(this.space, this.#core.memberId, value);
    } catch (error) {
      throw this.#core.translate(error);
    }
  }

  /** The current members, oldest first. */
  async members(): Promise<Member<Caps>[]> {
    this.#core.assertOpen();
    try {
      return toMembers<Caps>(await this.#core.driver.listRecords(this.space));
    } catch (error) {
      throw this.#core.translate(error);
    }
  }

  /**
   * Pushes membership changes as they happen: first a `join` (with `existing: true`) for
   * each current member, then `join`, `update` and `leave` events. Ends when `signal`
   * aborts, when the loop breaks, or when the coordinator closes.
   */
  watch(options?: WatchOptions): AsyncIterableIterator<GroupEvent<Caps>> {
    const { signal } = checkOptions("watch options", options);
    const userSignal = checkSignal("signal", signal);
    this.#core.assertOpen();
    return watchSpace<GroupEvent<Caps>>(this.#core, this.space, userSignal, (known) => ({
      snapshot: (entries) => toMembers<Caps>(entries).map((member) => ({ type: "join", member, existing: true })),
      event: (event) => {
        if (event.type === "delete") return known.has(event.key) ? [{ type: "leave", memberId: event.key }] : [];
        const member = toMember<Caps>(event.entry);
        return [known.has(event.entry.key) ? { type: "update", member } : { type: "join", member, existing: false }];
      },
    }));
  }

  /** @internal */
  forget(membership: Membership<Caps>): void {
    if (this.#membership === membership) this.#membership = null;
  }
}

function toMember<Caps>(entry: RecordEntry): Member<Caps> {
  return { memberId: entry.key, capabilities: JSON.parse(entry.value) as Caps, joinedAt: entry.createdAt };
}

/** @internal */
export function toMembers<Caps = unknown>(entries: readonly RecordEntry[]): Member<Caps>[] {
  return entries
    .map((entry) => toMember<Caps>(entry))
    .sort((a, b) => a.joinedAt - b.joinedAt || (a.memberId < b.memberId ? -1 : 1));
}

/**
 * Turns a driver's record watch into an event stream, tracking which keys exist so that
 * puts can be told apart (new or changed) and deletes of unknown keys dropped.
 * @internal
 */
export function watchSpace<T>(
  core: CoordinatorCore,
  space: string,
  signal: AbortSignal | undefined,
  makeMapper: (known: ReadonlySet<string>) => {
    snapshot: (entries: readonly RecordEntry[]) => T[];
    event: (event: RecordEvent) => T[];
  },
): AsyncIterableIterator<T> {
  const stop = new AbortController();
  const known = new Set<string>();
  const mapper = makeMapper(known);
  const stream = new EventStream<T>(() => stop.abort());
  for (const s of [core.closedSignal, signal]) if (s) onAbort(s, () => stream.end(), stop.signal);
  const early: RecordEvent[] = [];
  let started = false;
  const apply = (event: RecordEvent) => {
    for (const out of mapper.event(event)) stream.push(out);
    if (event.type === "delete") known.delete(event.key);
    else known.add(event.entry.key);
  };
  core.driver
    .watchRecords(
      space,
      (event) => {
        if (started) apply(event);
        else early.push(event);
      },
      stop.signal,
      (error) => stream.end(core.translate(error)),
    )
    .then(
      (entries) => {
        for (const out of mapper.snapshot(entries)) stream.push(out);
        for (const entry of entries) known.add(entry.key);
        started = true;
        for (const event of early.splice(0)) apply(event);
      },
      (error) => stream.end(core.translate(error)),
    );
  return stream;
}
