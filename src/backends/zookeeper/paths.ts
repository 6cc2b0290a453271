/**
 * Where Baton keeps things in ZooKeeper, and how a queue node's name encodes what the
 * granting rule needs, so that one `getChildren` is enough to decide.
 *
 *     <chroot>/baton/<namespace>/q/<kind>/<name>/n-<tag>-<x|s>-<limit>-<seq>  queue nodes
 *     <chroot>/baton/<namespace>/q/<kind>/<name>/u-<tag>-<holder seq>-<seq>   upgrade markers
 *     <chroot>/baton/<namespace>/r/<space>/<key>                              records
 *     <chroot>/baton/<namespace>/c/<space>/<key>                              cells (persistent)
 *     <chroot>/baton/<namespace>/v/<session id>                               revoke markers
 *
 * Every parent is a container node (the server deletes it once it is empty), so nothing is
 * left behind. `<tag>` is unique per create request (the session id and a counter):
 * Curator's "protected" mode, so a create whose answer was lost is found again by its tag.
 * Names and keys are percent-encoded (dots too: `.` and `..` are not valid znode names).
 *
 * @module
 */
import type { LockMode, QueueKind } from "../../core/driver.js";

/** The empty string (the default namespace) as a node name: a lone `%` is never an escape. */
const EMPTY = "%";

/** A name as one znode name: percent-encoded, dots too. */
export function encodeSegment(text: string): string {
  return text === "" ? EMPTY : encodeURIComponent(text).replace(/\./g, "%2E");
}

/** The inverse of `encodeSegment`. */
export function decodeSegment(text: string): string {
  return text === EMPTY ? "" : decodeURIComponent(text);
}

/** The paths of one namespace. */
export class Layout {
  readonly root: string;
  readonly queues: string;
  readonly records: string;
  readonly revokes: string;

  constructor(chroot: string, namespace: string) {
    this.root = `${chroot}/baton/${encodeSegment(namespace)}`;
    this.queues = `${this.root}/q`;
    this.records = `${this.root}/r`;
    this.revokes = `${this.root}/v`;
  }

  /** The revoke marker of a session (persistent): the session watches it (session.ts). */
  revoked(sessionId: string): string {
    return `${this.revokes}/${encodeSegment(sessionId)}`;
  }

  queue(kind: QueueKind, name: string): string {
    return `${this.queues}/${kind}/${encodeSegment(name)}`;
  }

  recordSpace(space: string): string {
    return `${this.records}/${encodeSegment(space)}`;
  }

  record(space: string, key: string): string {
    return `${this.recordSpace(space)}/${encodeSegment(key)}`;
  }

  /** The parent of a cell space's keys (cells.ts). */
  cellSpace(space: string): string {
    return `${this.root}/c/${encodeSegment(space)}`;
  }

  /** A cell: a persistent node, so it outlives the session that wrote it (cells.ts). */
  cell(space: string, key: string): string {
    return `${this.cellSpace(space)}/${encodeSegment(key)}`;
  }
}

/** A queue node or upgrade marker, parsed from its name. */
export interface QueueNode {
  readonly name: string;
  readonly type: "node" | "marker";
  readonly tag: string;
  /** The mode it was created with (its data says if it was converted since). */
  readonly mode: LockMode;
  readonly limit: number;
  /** The parent's sequence number: creation order among siblings. */
  readonly seq: number;
  /** For a marker: the sequence number of the upgrading holder's node. */
  readonly holderSeq?: number;
}

/** The name of a queue node before the server appends its sequence number. */
export function nodePrefix(tag: string, mode: LockMode, limit: number): string {
  return `n-${tag}-${mode === "exclusive" ? "x" : "s"}-${limit}-`;
}

/** An upgrade marker's name also gives the sequence number of the upgrader's node. */
export function markerPrefix(tag: string, holderSeq: number): string {
  return `u-${tag}-${holderSeq}-`;
}

const NODE = /^n-([0-9a-z_]+)-([xs])-(\d+)-(\d{10})$/;
const MARKER = /^u-([0-9a-z_]+)-(\d+)-(\d{10})$/;

/** Parses a child of a queue; `null` for anything Baton did not create. */
export function parseNode(name: string): QueueNode | null {
  const node = NODE.exec(name);
  if (node) {
    return {
      name,
      type: "node",
      tag: node[1] as string,
      mode: node[2] === "x" ? "exclusive" : "shared",
      limit: Number(node[3]),
      seq: Number(node[4]),
    };
  }
  const marker = MARKER.exec(name);
  if (marker) {
    return {
      name,
      type: "marker",
      tag: marker[1] as string,
      mode: "exclusive",
      limit: 0,
      seq: Number(marker[3]),
      holderSeq: Number(marker[2]),
    };
  }
  return null;
}

/** The data of a queue node: JSON. */
export interface NodeData {
  /** Member id. */
  readonly id: string;
  /** Baton session id. */
  readonly sid: string;
  /** Epoch ms: when it joined, or when its grant was recorded. */
  readonly s: number;
  /** Current mode when it differs from the name's (after an upgrade or downgrade). */
  readonly m?: "x" | "s";
  /** The fencing token, written once granted. */
  readonly t?: string;
  /**
   * Set once the node was granted as an exclusive lock or a leader: every older node was
   * gone then, so the node behind it is first once this one goes (handoff.ts).
   */
  readonly h?: 1;
  /**
   * Written on every node of clients that keep handoff.ts's rule (a sole holder hands out
   * only tokens at most its node's mzxid). Clients before it lack it: their node's mzxid
   * bounds nothing, so a waiter behind one reads the queue.
   */
  readonly v?: 1;
}

/** Queue node data as stored. */
export function encodeData(data: NodeData): string {
  return JSON.stringify(data);
}

/** Queue node data as read; `null` for anything Baton did not write. */
export function decodeData(text: string): NodeData | null {
  try {
    const value = JSON.parse(text) as NodeData;
    return typeof value === "object" && value !== null && typeof value.id === "string" ? value : null;
  } catch {
    return null;
  }
}
