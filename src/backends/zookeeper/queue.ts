/**
 * The granting rules of `QueueTable`, applied to a queue read from ZooKeeper: its children
 * ordered by sequence number, each node's name giving its mode and limit.
 *
 * - exclusive lock or election: granted when it is the oldest node;
 * - shared lock: granted when no older node is exclusive (held or waiting: FIFO, so
 *   writers are not starved) and no upgrade marker older than it exists;
 * - semaphore: granted when fewer than `limit` nodes are older.
 *
 * A shared holder upgrading creates a marker node; readers that came after the marker
 * wait for it, and the upgrade completes once every other holder has left. Holding is
 * decided by position alone, so it never changes under a holder; the fencing token is the
 * zxid of a write to the queue's parent made just after the read that granted it, kept in
 * the node's data for `inspect()` (see `tokenOf`).
 *
 * @module
 */
import type { LockMode, QueueKind } from "../../core/driver.js";
import type { Stat } from "./client.js";
import type { NodeData, QueueNode } from "./paths.js";
import { parseNode } from "./paths.js";

/** One queue as of one read. */
export interface QueueView {
  /** Queue nodes, oldest first. */
  readonly nodes: readonly QueueNode[];
  /** Upgrade markers, oldest first. */
  readonly markers: readonly QueueNode[];
  /** The parent's stat at the read. */
  readonly stat: Stat;
  /** Current modes of nodes converted since they were created, where they were read. */
  readonly modes: ReadonlyMap<string, LockMode>;
}

/** Parses a queue read (children and the parent's stat) into nodes and markers, oldest first. */
export function viewOf(children: readonly string[], stat: Stat, modes: ReadonlyMap<string, LockMode>): QueueView {
  const parsed = children.map(parseNode).filter((n): n is QueueNode => n !== null);
  parsed.sort((a, b) => a.seq - b.seq);
  return {
    nodes: parsed.filter((n) => n.type === "node"),
    markers: parsed.filter((n) => n.type === "marker"),
    stat,
    modes,
  };
}

/** A node's current mode: its name's, unless its data says it was converted. */
export function modeOf(view: QueueView, node: QueueNode): LockMode {
  return view.modes.get(node.name) ?? node.mode;
}

/** What the rules say about one node. */
export type Decision =
  | { readonly type: "missing" }
  | { readonly type: "mismatch"; readonly limit: number }
  | { readonly type: "grant"; readonly me: QueueNode }
  /** Wait for one of `watch` to change, or (`children`) for any child to come or go. */
  | { readonly type: "wait"; readonly me: QueueNode; readonly watch: readonly string[]; readonly children: boolean };

/** Applies the granting rule to node `name` of the view. Pure: the same view, the same answer. */
export function decide(view: QueueView, name: string, kind: QueueKind, mode: LockMode, limit: number): Decision {
  const index = view.nodes.findIndex((n) => n.name === name);
  const me = view.nodes[index];
  if (!me) return { type: "missing" };
  const other = view.nodes.find((n) => n.limit !== limit);
  if (other) return { type: "mismatch", limit: other.limit };
  const earlier = view.nodes.slice(0, index);
  if (kind === "semaphore") {
    return earlier.length < limit ? { type: "grant", me } : { type: "wait", me, watch: [], children: true };
  }
  if (mode === "exclusive") {
    return earlier.length === 0
      ? { type: "grant", me }
      : { type: "wait", me, watch: [(earlier.at(-1) as QueueNode).name], children: false };
  }
  const lastWriter = earlier.findLast((n) => modeOf(view, n) === "exclusive");
  const marker = view.markers[0];
  const blockingMarker = marker !== undefined && marker.seq < me.seq ? marker : undefined;
  if (!lastWriter && !blockingMarker) return { type: "grant", me };
  const watch = [lastWriter?.name, blockingMarker?.name].filter((n): n is string => n !== undefined);
  return { type: "wait", me, watch, children: false };
}

/** What the rules say about an upgrade whose marker is `marker`. */
export type UpgradeDecision =
  | { readonly type: "missing" }
  | { readonly type: "deadlock" }
  | { readonly type: "grant" }
  | { readonly type: "wait" };

/** Whether the holder of `name`, whose marker is `marker`, may finish upgrading now. */
export function decideUpgrade(view: QueueView, name: string, marker: string): UpgradeDecision {
  const me = view.nodes.find((n) => n.name === name);
  const mine = view.markers.find((m) => m.name === marker);
  if (!me || !mine) return { type: "missing" };
  // Upgraders that both found no marker before making theirs: the older holder wins, so the
  // outcome does not depend on which marker the server happened to create first.
  if (view.markers.some((m) => m !== mine && (m.holderSeq ?? -1) < me.seq)) return { type: "deadlock" };
  // The other holders: every node before the first writer that joined before the marker.
  const firstWriter = view.nodes.findIndex((n) => n !== me && modeOf(view, n) === "exclusive");
  const holders = (firstWriter < 0 ? view.nodes : view.nodes.slice(0, firstWriter)).filter(
    (n) => n !== me && n.seq < mine.seq,
  );
  return holders.length === 0 ? { type: "grant" } : { type: "wait" };
}

/** The fencing token of a held node, as its holder wrote it into the node's data. */
export function tokenOf(stat: Stat, data: NodeData | null): bigint {
  // No note: the token is the creation zxid (an exclusive grant whose granting read saw its
  // own create as the last change), or the note is still on its way (written unawaited).
  return data?.t !== undefined ? BigInt(data.t) : stat.czxid;
}

/** Whether `node` holds, by the rule (for `inspect()`). */
export function isGranted(view: QueueView, node: QueueNode, kind: QueueKind): boolean {
  const decision = decide(view, node.name, kind, modeOf(view, node), node.limit);
  return decision.type === "grant";
}
