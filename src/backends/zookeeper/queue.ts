/**
 * The granting rule (`core/grant-rule.ts`), applied to a queue read from ZooKeeper: its
 * children ordered by sequence number, each node's name giving its mode and limit, and the
 * upgrade markers among them. This file only translates the view for the rule and picks
 * what a waiter watches: an exclusive node its predecessor, a shared node the last older
 * writer and the marker that holds it back, a semaphore node the children.
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
import * as rule from "../../core/grant-rule.js";
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

/**
 * The view as the rule sees it. A marker's upgrade started when the nodes older than the
 * marker had joined; its holder is found by sequence number (a holder that left sits half
 * way between its neighbours, so it still compares as older or younger).
 */
function ruleQueue(view: QueueView, override?: { index: number; mode: LockMode; limit: number }): rule.RuleQueue {
  const entries = view.nodes.map((n, i) =>
    i === override?.index ? { mode: override.mode, limit: override.limit } : { mode: modeOf(view, n), limit: n.limit },
  );
  const olderThan = (seq: number) => view.nodes.filter((n) => n.seq < seq).length;
  const upgrades = view.markers.map((m) => {
    const holder = m.holderSeq === undefined ? -1 : view.nodes.findIndex((n) => n.seq === m.holderSeq);
    return {
      holder: holder >= 0 || m.holderSeq === undefined ? holder : olderThan(m.holderSeq) - 0.5,
      before: olderThan(m.seq),
    };
  });
  return { entries, upgrades };
}

/** Applies the granting rule to node `name` of the view. Pure: the same view, the same answer. */
export function decide(view: QueueView, name: string, kind: QueueKind, mode: LockMode, limit: number): Decision {
  const index = view.nodes.findIndex((n) => n.name === name);
  const me = view.nodes[index];
  if (!me) return { type: "missing" };
  const verdict = rule.decide(ruleQueue(view, { index, mode, limit }), index);
  if (verdict.type === "mismatch") return verdict;
  if (verdict.type === "grant") return { type: "grant", me };
  if (kind === "semaphore") return { type: "wait", me, watch: [], children: true };
  if (mode === "exclusive")
    return { type: "wait", me, watch: [(view.nodes[index - 1] as QueueNode).name], children: false };
  const lastWriter = view.nodes[verdict.writers.at(-1) ?? -1];
  const marker = verdict.upgrade ? view.markers.find((m) => m.seq < me.seq) : undefined;
  const watch = [lastWriter?.name, marker?.name].filter((n): n is string => n !== undefined);
  return { type: "wait", me, watch, children: false };
}

/** What the rules say about an upgrade whose marker is `marker`. */
export type UpgradeDecision =
  | { readonly type: "missing" }
  | { readonly type: "deadlock" }
  | { readonly type: "grant" }
  | { readonly type: "wait" };

/**
 * Whether the holder of `name`, whose marker is `marker`, may finish upgrading now. Of two
 * upgraders that both found no marker before making theirs, the older holder wins, so the
 * outcome does not depend on which marker the server happened to create first.
 */
export function decideUpgrade(view: QueueView, name: string, marker: string): UpgradeDecision {
  const index = view.nodes.findIndex((n) => n.name === name);
  if (index < 0 || !view.markers.some((m) => m.name === marker)) return { type: "missing" };
  const verdict = rule.decideUpgrade(ruleQueue(view), index);
  return { type: verdict.type };
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
