import { sleep } from "./abortable.js";
import type { CoordinatorCore } from "./core.js";
import type { RecordEntry } from "./driver.js";
import type { Group, Membership } from "./group.js";
import { HashRing } from "./hash-ring.js";
import { EventStream } from "./stream.js";
import { checkPositiveInt } from "./validate.js";

/** Options of `coordinator.partitioner()`. */
export interface PartitionerOptions {
  /** This member's share of the ring relative to others (integer 1..1000, default 1). */
  weight?: number | undefined;
  /** Ring points per unit of weight (default 128). Every member must use the same value. */
  vnodes?: number | undefined;
  /** Extra capabilities published with the membership (`weight` is added). */
  capabilities?: Record<string, unknown> | undefined;
}

/** Ownership moved because members joined, left or changed weight. */
export interface PartitionChange {
  /** Members after the change, sorted. */
  readonly members: readonly string[];
  readonly joined: readonly string[];
  readonly left: readonly string[];
}

/**
 * Spreads keys over a group's live members with a consistent hash ring (tooz's
 * partitioner). Joining creates this member; every member computes the same ring from the
 * same membership, so `isMine()` agrees across clients once they have seen the same events.
 * If the session is lost, the partitioner rejoins with the coordinator's next session.
 */
export class Partitioner implements AsyncDisposable {
  /** The group's id. */
  readonly groupId: string;
  readonly #core: CoordinatorCore;
  readonly #group: Group;
  readonly #ring: HashRing;
  readonly #capabilities: Record<string, unknown>;
  readonly #stop = new AbortController();
  readonly #streams = new Set<EventStream<PartitionChange>>();
  #membership: Membership | null = null;
  /** Why the watch ended for good, if it did: later change streams end with it too. */
  #failure: Error | undefined = undefined;

  /** @internal Use `coordinator.partitioner(groupId)`. */
  static create(core: CoordinatorCore, group: Group, options: PartitionerOptions): Partitioner {
    return new Partitioner(core, group, options);
  }

  private constructor(core: CoordinatorCore, group: Group, options: PartitionerOptions) {
    this.#core = core;
    this.#group = group;
    this.groupId = group.id;
    this.#ring = new HashRing(options.vnodes === undefined ? {} : { vnodes: options.vnodes });
    const weight = checkPositiveInt("weight", options.weight ?? 1, 1000);
    this.#capabilities = { ...options.capabilities, weight };
  }

  /** @internal Joins and loads the current membership. */
  async start(): Promise<this> {
    const initial = await this.#core.driver
      .watchRecords(
        this.#group.space,
        (event) => {
          const before = this.members;
          if (event.type === "delete") this.#ring.delete(event.key);
          else this.#add(event.entry);
          this.#emit(before);
        },
        this.#stop.signal,
        // The watch ended for good (the backend refused the credentials on reconnecting):
        // the ring can no longer follow the group, so every change stream ends with why.
        (error) => this.#shutdown(this.#core.translate(error)),
      )
      .catch((error: unknown) => {
        // As every other watch: a backend's failure reaches the caller as a Baton error.
        throw this.#core.translate(error);
      });
    for (const entry of initial) this.#add(entry);
    try {
      await this.#join();
    } catch (error) {
      this.#shutdown();
      throw error;
    }
    this.#core.closedSignal.addEventListener("abort", () => this.#shutdown(), { once: true });
    return this;
  }

  /** Current members, sorted. */
  get members(): string[] {
    return [...this.#ring.members.keys()].sort();
  }

  /** The `replicas` members that own `key`, primary first. */
  owners(key: string, replicas = 1): string[] {
    return this.#ring.owners(key, replicas);
  }

  /** Whether this member is among the `replicas` owners of `key`. */
  isMine(key: string, replicas = 1): boolean {
    return this.owners(key, replicas).includes(this.#core.memberId);
  }

  /** Pushes a {@link PartitionChange} each time ownership moves. Ends on `close()`. */
  changes(): AsyncIterableIterator<PartitionChange> {
    const stream = new EventStream<PartitionChange>(() => this.#streams.delete(stream));
    if (this.#stop.signal.aborted) stream.end(this.#failure);
    else this.#streams.add(stream);
    return stream;
  }

  /** Leaves the group and stops watching. Idempotent and never throws, after `close()` too. */
  async close(): Promise<void> {
    // Also after the watch ended for good: the membership is still left.
    this.#shutdown();
    if (this.#membership?.active) await this.#membership.leave();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #join(): Promise<void> {
    const membership = await this.#group.join(this.#capabilities);
    this.#membership = membership;
    membership.signal.addEventListener("abort", () => void this.#rejoin(), { once: true });
  }

  async #rejoin(): Promise<void> {
    let delay = 100;
    while (!this.#stop.signal.aborted && !this.#core.closed) {
      try {
        await this.#join();
        return;
      } catch {
        await sleep(delay, undefined, { unref: true });
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  #add(entry: RecordEntry): void {
    const weight = (JSON.parse(entry.value) as { weight?: unknown } | null)?.weight;
    this.#ring.set(
      entry.key,
      typeof weight === "number" && Number.isInteger(weight) && weight >= 1 && weight <= 1000 ? weight : 1,
    );
  }

  #emit(before: readonly string[]): void {
    const members = this.members;
    const joined = members.filter((m) => !before.includes(m));
    const left = before.filter((m) => !members.includes(m));
    const change: PartitionChange = { members, joined, left };
    for (const stream of this.#streams) stream.push(change);
  }

  /** Stops watching; with `failure` (the watch ended for good), streams end with it. */
  #shutdown(failure?: Error): void {
    if (this.#stop.signal.aborted) return;
    this.#failure = failure;
    this.#stop.abort();
    for (const stream of this.#streams) stream.end(failure);
    this.#streams.clear();
  }
}
