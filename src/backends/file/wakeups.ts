import type { LockMode } from "../../core/driver.js";
import type { Link, Mesh } from "./mesh.js";
import { answers, type Push } from "./protocol.js";

/** A pending acquisition or upgrade of this process. */
export interface Waiter {
  readonly slots: readonly number[];
  /** Shared waiters let an offer go on to the next process once they got in. */
  readonly mode: LockMode;
  /** Tries to take what it waits for with non-blocking kernel calls; true when it got it. */
  attempt(): boolean;
}

/** How long a slot stays subscribed at peers after its last local waiter left. */
const LINGER_MS = 2000;

/**
 * The wake-up plumbing of one {@link FileNode}: this process's waiters, its subscriptions
 * at peers, and the peers subscribed here.
 *
 * Waking without polling: a waiter subscribes to its slots at every peer, then retries.
 * A holder that frees a slot pushes `free` to the subscribers; a peer that dies closes its
 * sockets, which wakes every waiter here. A retry that still fails looks for new peers (a
 * process that started meanwhile may hold the slot) and subscribes there too. A one-second
 * safety timer, running only while something waits, retries regardless.
 */
export class Wakeups {
  readonly #mesh: Mesh;
  readonly #discover: () => Promise<void>;
  readonly #waiters = new Map<number, Set<Waiter>>();
  /** Slots this process has subscribed to at every peer, with the count of local waiters. */
  readonly #subscribed = new Map<number, number>();
  /** Slots with no local waiter left, still subscribed (since when): re-waiting is free. */
  readonly #lingering = new Map<number, number>();
  #lingerSweep: NodeJS.Timeout | null = null;
  /** Peers waiting for our frees, per slot, in the order they will be offered a free. */
  readonly #subscribers = new Map<number, Set<Link>>();
  /** A free being offered to one subscriber after another, per slot. */
  readonly #offers = new Map<number, { current: Link; remaining: Link[] }>();
  #safety: NodeJS.Timeout | null = null;

  /** `discover` looks for processes that started since (the safety timer calls it). */
  constructor(mesh: Mesh, discover: () => Promise<void>) {
    this.#mesh = mesh;
    this.#discover = discover;
  }

  /** Stops the timers; the mesh is closed by the node. */
  close(): void {
    if (this.#safety) clearInterval(this.#safety);
    if (this.#lingerSweep) clearInterval(this.#lingerSweep);
  }

  /**
   * Registers a waiter and subscribes to its slots at every peer. The waiter gets one more
   * try now and another as each peer confirms its subscription (a free that happened
   * before that peer knew would otherwise be missed). Peers are not awaited: a paused
   * (SIGSTOP) peer must not hold up waiters on locks it has nothing to do with.
   */
  addWaiter(waiter: Waiter): boolean {
    const fresh: number[] = [];
    for (const slot of waiter.slots) {
      let set = this.#waiters.get(slot);
      if (!set) this.#waiters.set(slot, (set = new Set()));
      set.add(waiter);
      const count = this.#subscribed.get(slot) ?? 0;
      this.#subscribed.set(slot, count + 1);
      if (count === 0 && !this.#lingering.delete(slot)) fresh.push(slot);
    }
    this.#armSafety();
    for (const link of fresh.length > 0 ? this.#mesh.links : []) {
      link.request("sub", { slots: fresh }, answers.none).then(
        () => this.#wake(fresh),
        () => {},
      );
    }
    return this.#isWaiting(waiter) && waiter.attempt();
  }

  /** Withdraws a waiter (granted, cancelled or closed); its slots stay subscribed a while. */
  removeWaiter(waiter: Waiter): void {
    for (const slot of waiter.slots) {
      const set = this.#waiters.get(slot);
      if (!set?.delete(waiter)) continue;
      if (set.size === 0) this.#waiters.delete(slot);
      const count = (this.#subscribed.get(slot) ?? 1) - 1;
      if (count > 0) this.#subscribed.set(slot, count);
      else {
        // Stay subscribed a while: a process that loops on a lock waits again at once, and
        // re-subscribing at every peer each time would cost a round trip to each of them.
        this.#subscribed.delete(slot);
        this.#lingering.set(slot, Date.now());
        this.#armLingerSweep();
      }
    }
    if (this.#waiters.size === 0 && this.#safety) {
      clearInterval(this.#safety);
      this.#safety = null;
    }
  }

  /**
   * A slot was freed here: wake local waiters, and offer the free to one subscribed peer at
   * a time (in subscription order, rotating), not to all: a release wakes one process, not
   * a herd. The peer passes the offer on when it has no waiter left or got in shared.
   */
  freed(slot: number): void {
    if (this.#waiters.has(slot)) queueMicrotask(() => this.#wake([slot]));
    const subscribers = this.#subscribers.get(slot);
    if (!subscribers || subscribers.size === 0) return;
    this.#offerNext(slot, [...subscribers]);
  }

  #offerNext(slot: number, remaining: Link[]): void {
    const next = remaining.shift();
    if (!next) {
      this.#offers.delete(slot);
      return;
    }
    this.#offers.set(slot, { current: next, remaining });
    const subscribers = this.#subscribers.get(slot);
    if (subscribers?.delete(next)) subscribers.add(next);
    next.send({ t: "push", k: "free", slot });
  }

  /** Handles a wake-up message from a peer (`free`, `pass`, `unsub`); false for any other. */
  pushed(link: Link, push: Push): boolean {
    if (push.k === "free") this.#offered(link, push.slot);
    else if (push.k === "pass") this.#passed(link, push.slot);
    else if (push.k === "unsub") this.#unsubscribe(link, push.slots);
    else return false;
    return true;
  }

  /** A peer freed `slot` and offers it to us. */
  #offered(link: Link, slot: number): void {
    const waiters = this.#waiters.get(slot);
    let pass = true;
    for (const waiter of [...(waiters ?? [])]) {
      if (!waiter.attempt()) {
        // Someone else holds it now; their release will offer it again.
        pass = false;
        continue;
      }
      if (waiter.mode === "exclusive") {
        pass = false;
        break;
      }
    }
    if (pass) link.send({ t: "push", k: "pass", slot });
  }

  /** The peer we offered `slot` to passed it on. */
  #passed(link: Link, slot: number): void {
    const offer = this.#offers.get(slot);
    if (offer?.current === link) this.#offerNext(slot, offer.remaining);
  }

  /** A peer waits for our frees of `slots`. */
  subscribe(link: Link, slots: readonly number[]): void {
    for (const slot of slots) {
      let set = this.#subscribers.get(slot);
      if (!set) this.#subscribers.set(slot, (set = new Set()));
      set.add(link);
    }
  }

  /** A peer no longer waits for our frees of `slots`. */
  #unsubscribe(link: Link, slots: readonly number[]): void {
    for (const slot of slots) {
      const set = this.#subscribers.get(slot);
      set?.delete(link);
      if (set?.size === 0) this.#subscribers.delete(slot);
    }
  }

  #armLingerSweep(): void {
    if (this.#lingerSweep) return;
    this.#lingerSweep = setInterval(() => {
      const cutoff = Date.now() - LINGER_MS;
      const gone = [...this.#lingering].filter(([, since]) => since < cutoff).map(([slot]) => slot);
      for (const slot of gone) this.#lingering.delete(slot);
      if (gone.length > 0) for (const link of this.#mesh.links) link.send({ t: "push", k: "unsub", slots: gone });
      if (this.#lingering.size === 0 && this.#lingerSweep) {
        clearInterval(this.#lingerSweep);
        this.#lingerSweep = null;
      }
    }, LINGER_MS);
    this.#lingerSweep.unref();
  }

  #isWaiting(waiter: Waiter): boolean {
    return waiter.slots.some((slot) => this.#waiters.get(slot)?.has(waiter));
  }

  /**
   * Gives each waiter of `slots` a try, oldest first. (A process that starts later
   * connects to every peer itself, and its hello makes us subscribe there: no need to look
   * for new peers after a failed try, which under a herd cost more than the tries.)
   */
  #wake(slots: Iterable<number>): void {
    const tried = new Set<Waiter>();
    for (const slot of slots) {
      for (const waiter of [...(this.#waiters.get(slot) ?? [])]) {
        if (tried.has(waiter)) continue;
        tried.add(waiter);
        waiter.attempt();
      }
    }
  }

  #wakeAll(): void {
    this.#wake([...this.#waiters.keys()]);
  }

  #armSafety(): void {
    if (this.#safety) return;
    // Kept ref'd: a process that waits for a lock must stay alive to get it.
    this.#safety = setInterval(() => {
      void this.#discover();
      this.#wakeAll();
    }, 1000);
  }

  /** A new peer: subscribe there to what we wait for, then retry (it may have freed it). */
  async joined(link: Link): Promise<void> {
    const slots = [...this.#subscribed.keys()];
    if (slots.length > 0) {
      await link.request("sub", { slots }, answers.none).catch(() => null);
      this.#wake(slots);
    }
  }

  /** A peer's link closed: it is no longer offered frees, nor holds up an offer. */
  forget(link: Link): void {
    for (const set of this.#subscribers.values()) set.delete(link);
    for (const [slot, offer] of [...this.#offers]) {
      offer.remaining = offer.remaining.filter((l) => l !== link);
      if (offer.current === link) this.#offerNext(slot, offer.remaining);
    }
  }

  /**
   * The peer may have died holding what we wait for. Its sockets can close a moment
   * before the kernel has dropped its file locks (both happen in its exit's file
   * teardown), so retry at once and a few times over the next 50 ms.
   */
  retryAfterDeath(): void {
    this.#wakeAll();
    for (const delay of [1, 5, 20, 50]) setTimeout(() => this.#wakeAll(), delay);
  }
}
