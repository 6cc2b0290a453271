/**
 * The rule of a conditional cell write, written once: backends that check conditions in
 * their own engine (etcd compares, SQL `WHERE`) use it only to tell a refusal's reason;
 * backends that read-check-write under their own lock (memory, file) apply it as it is.
 *
 * @module
 * @internal
 */
import type { CellCondition, CellEntry } from "./driver.js";

/** What to do with a write given the key's current state. */
export type CellDecision =
  | { readonly action: "refuse"; readonly reason: "conflict" | "fenced" }
  /** Nothing to delete: succeed without writing (version `0n`). */
  | { readonly action: "noop" }
  /** Write; `fence` is the fence to store (the highest seen). */
  | { readonly action: "write"; readonly fence: bigint };

/** Decides a put (`deleting` false) or a delete of a key whose state is `current`. */
export function decideCellWrite(current: CellEntry | null, condition: CellCondition, deleting: boolean): CellDecision {
  const stored = current?.fence ?? 0n;
  if (condition.fence !== undefined && condition.fence < stored) return { action: "refuse", reason: "fenced" };
  const live = current !== null && current.value !== null;
  if (condition.ifVersion !== undefined) {
    const holds = condition.ifVersion === 0n ? !live : live && current.version === condition.ifVersion;
    if (!holds) return { action: "refuse", reason: "conflict" };
  }
  if (condition.ifValue !== undefined && (!live || current.value !== condition.ifValue)) {
    return { action: "refuse", reason: "conflict" };
  }
  if (deleting && !live) return { action: "noop" };
  const fence = condition.fence !== undefined && condition.fence > stored ? condition.fence : stored;
  return { action: "write", fence };
}
