/**
 * The etcd key layout. Every key lives under `baton/<namespace>/`:
 *
 * - `q/<kind>/<name>/<lease-hex>-<random>`: one queue key per holder or waiter, bound to
 *   its session's lease; ordered by create revision (the queue order).
 * - `u/<kind>/<name>`: the upgrade marker of a lock, held by at most one shared holder.
 * - `r/<space>/<key>`: records (group members, election leaders), bound to a lease.
 * - `c/<space>/<key>`: durable cells (no lease), the value as JSON text; the version is the
 *   key's mod revision. `f/<space>/<key>`: the cell's highest fence, 20 zero-padded decimal
 *   digits so that etcd's byte comparison is numeric; kept when the cell is deleted.
 * - `x/<lease-hex>-<random>`: a fence, bound to a lease: an attempt to join a queue whose
 *   outcome is unknown, which must never take effect later (see acquire.ts).
 *
 * User-supplied parts (namespace, names, spaces, record keys) are encoded with
 * `encodeURIComponent`, which never yields `/`: one name can never be a prefix of another
 * name's keys, and names are nothing but opaque key bytes.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import type { LockMode, QueueKind } from "../../core/driver.js";

/** Root of every key Baton writes. */
export const ROOT = "baton/";

const KINDS: readonly QueueKind[] = ["lock", "semaphore", "election"];

/** One path segment: never contains `/`. */
function segment(text: string): string {
  return encodeURIComponent(text);
}

/** The keys of one queue. */
export interface QueueKeys {
  readonly kind: QueueKind;
  readonly name: string;
  /** `.../q/<kind>/<name>/`: every holder's and waiter's key starts with it. */
  readonly prefix: string;
  /** `.../u/<kind>/<name>`: the upgrade marker. */
  readonly marker: string;
}

/** What a key under the namespace prefix is. */
export type ParsedKey =
  | { readonly type: "queue"; readonly kind: QueueKind; readonly name: string }
  | { readonly type: "record"; readonly space: string; readonly key: string }
  | { readonly type: "marker" }
  | { readonly type: "fence" };

/** The namespace of any key Baton wrote (`baton/<namespace>/...`); null for others. */
export function namespaceOf(key: string): string | null {
  if (!key.startsWith(ROOT)) return null;
  const end = key.indexOf("/", ROOT.length);
  if (end < 0) return null;
  try {
    return decodeURIComponent(key.slice(ROOT.length, end));
  } catch {
    return null;
  }
}

/** Key layout of one namespace. */
export class Keyspace {
  /** `baton/<namespace>/` */
  readonly prefix: string;

  constructor(namespace: string) {
    this.prefix = `${ROOT}${segment(namespace)}/`;
  }

  queue(kind: QueueKind, name: string): QueueKeys {
    const tail = `${kind}/${segment(name)}`;
    return { kind, name, prefix: `${this.prefix}q/${tail}/`, marker: `${this.prefix}u/${tail}` };
  }

  recordPrefix(space: string): string {
    return `${this.prefix}r/${segment(space)}/`;
  }

  recordKey(space: string, key: string): string {
    return this.recordPrefix(space) + segment(key);
  }

  cellPrefix(space: string): string {
    return `${this.prefix}c/${segment(space)}/`;
  }

  cellKey(space: string, key: string): string {
    return this.cellPrefix(space) + segment(key);
  }

  cellFenceKey(space: string, key: string): string {
    return `${this.prefix}f/${segment(space)}/${segment(key)}`;
  }

  /** A new fence key of session `sessionId`. */
  fence(sessionId: string): string {
    return `${this.prefix}x/${sessionId}-${randomBytes(6).toString("hex")}`;
  }

  /**
   * The revoke marker of session `sessionId` (bound to its lease): its keep-alive reads it
   * before renewing and fails once it exists (see `EtcdSession.fence`).
   */
  revoked(sessionId: string): string {
    return `${this.prefix}v/${sessionId}`;
  }

  /** Decodes a key of this namespace; `null` for anything Baton did not write. */
  parse(key: string): ParsedKey | null {
    if (!key.startsWith(this.prefix)) return null;
    const parts = key.slice(this.prefix.length).split("/");
    try {
      if (parts[0] === "q" && parts.length === 4) {
        const kind = parts[1] as QueueKind;
        if (!KINDS.includes(kind)) return null;
        return { type: "queue", kind, name: decodeURIComponent(parts[2]!) };
      }
      if (parts[0] === "r" && parts.length === 3) {
        return { type: "record", space: decodeURIComponent(parts[1]!), key: decodeURIComponent(parts[2]!) };
      }
      if (parts[0] === "u" && parts.length === 3) return { type: "marker" };
      if (parts[0] === "x" && parts.length === 2) return { type: "fence" };
    } catch {
      // Malformed percent-encoding: not ours.
    }
    return null;
  }
}

/** The first key after every key starting with `prefix` (etcd's `GetPrefixRangeEnd`). */
export function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/**
 * The value of a queue key, as JSON. Short field names: every waiter reads every key of
 * its queue.
 */
export interface QueueValue {
  /** Mode: `x` exclusive, `s` shared. */
  readonly m: "x" | "s";
  /** The queue's limit (1 for locks and elections). */
  readonly l: number;
  /** Epoch ms: when it started waiting, or when it was granted. */
  readonly s: number;
  /** Member id. */
  readonly id: string;
  /** Session id (lease, hex). */
  readonly sid: string;
  /** Present while waiting: a grant is always recorded by rewriting the key without it. */
  readonly w?: 1;
  /** Fencing token, when it is not the key's mod revision (after a downgrade). */
  readonly t?: string;
}

export function encodeQueueValue(value: QueueValue): Buffer {
  return Buffer.from(JSON.stringify(value));
}

/** Parses a queue key's value; a value Baton did not write counts as an exclusive waiter. */
export function decodeQueueValue(raw: Buffer): QueueValue {
  try {
    const v = JSON.parse(raw.toString()) as Partial<QueueValue>;
    if ((v.m === "x" || v.m === "s") && typeof v.l === "number" && typeof v.s === "number") {
      return {
        m: v.m,
        l: v.l,
        s: v.s,
        id: String(v.id ?? ""),
        sid: String(v.sid ?? ""),
        ...(v.w === 1 ? { w: 1 as const } : {}),
        ...(typeof v.t === "string" ? { t: v.t } : {}),
      };
    }
  } catch {
    // fall through
  }
  return { m: "x", l: Number.NaN, s: 0, id: "", sid: "", w: 1 };
}

export function modeCode(mode: LockMode): "x" | "s" {
  return mode === "exclusive" ? "x" : "s";
}

/** The value of a record key. `v` is the record's JSON text, kept verbatim. */
export interface RecordValue {
  readonly sid: string;
  readonly c: number;
  readonly v: string;
}

export function encodeRecordValue(value: RecordValue): Buffer {
  return Buffer.from(JSON.stringify(value));
}

export function decodeRecordValue(raw: Buffer): RecordValue | null {
  try {
    const v = JSON.parse(raw.toString()) as Partial<RecordValue>;
    if (typeof v.v === "string" && typeof v.c === "number" && typeof v.sid === "string") {
      return { sid: v.sid, c: v.c, v: v.v };
    }
  } catch {
    // fall through
  }
  return null;
}
