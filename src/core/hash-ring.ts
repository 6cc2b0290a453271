import { hash53 } from "./hash.js";
import { checkName, checkPositiveInt } from "./validate.js";

/** Options of a {@link HashRing}. */
export interface HashRingOptions {
  /** Points on the ring per unit of weight (default 128); more points, better balance. */
  vnodes?: number | undefined;
}

/**
 * A consistent hash ring: each member owns `vnodes * weight` points; a key belongs to the
 * member owning the first point at or after the key's hash, and its replicas to the next
 * distinct members clockwise. Adding or removing one of N equal members moves about 1/N of
 * the keys, and only to or from that member. Pure and synchronous.
 */
export class HashRing {
  readonly #vnodes: number;
  readonly #weights = new Map<string, number>();
  #points: Float64Array = new Float64Array(0);
  #owners: string[] = [];

  constructor(options: HashRingOptions = {}) {
    this.#vnodes = checkPositiveInt("vnodes", options.vnodes ?? 128, 4096);
  }

  /** Members and their weights. */
  get members(): ReadonlyMap<string, number> {
    return this.#weights;
  }

  /** Adds a member, or changes its weight (an integer from 1 to 1000). */
  set(member: string, weight = 1): void {
    checkName("member", member);
    checkPositiveInt("weight", weight, 1000);
    if (this.#weights.get(member) === weight) return;
    this.#weights.set(member, weight);
    this.#rebuild();
  }

  /** Removes a member; returns whether it was there. */
  delete(member: string): boolean {
    const had = this.#weights.delete(member);
    if (had) this.#rebuild();
    return had;
  }

  /** The `replicas` members responsible for `key`, primary first (fewer if the ring is smaller). */
  owners(key: string, replicas = 1): string[] {
    checkPositiveInt("replicas", replicas, 1000);
    const points = this.#points;
    if (points.length === 0) return [];
    const want = Math.min(replicas, this.#weights.size);
    const h = hash53(key);
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((points[mid] as number) < h) lo = mid + 1;
      else hi = mid;
    }
    const result: string[] = [];
    for (let i = 0; i < points.length && result.length < want; i++) {
      const owner = this.#owners[(lo + i) % points.length] as string;
      if (!result.includes(owner)) result.push(owner);
    }
    return result;
  }

  #rebuild(): void {
    const pairs: [number, string][] = [];
    for (const [member, weight] of this.#weights) {
      for (let i = 0; i < this.#vnodes * weight; i++) pairs.push([hash53(`${member}\u0000${i}`), member]);
    }
    // Ties (astronomically rare) break by member id so every client builds the same ring.
    pairs.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    this.#points = Float64Array.from(pairs, (p) => p[0]);
    this.#owners = pairs.map((p) => p[1]);
  }
}
