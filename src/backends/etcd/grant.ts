/**
 * What an etcd grant keeps: its queue key and create revision, its token, its takeover
 * record, and the state a conversion or release needs.
 *
 * @module
 */
import type { AcquireRequest, CellEntry, DriverGrant, LockMode, QueueKind } from "../../core/driver.js";
import type { QueueKeys } from "./keys.js";

/** A grant: its queue key, and what a conversion or release needs. */
export class EtcdGrant implements DriverGrant {
  token: bigint;
  mode: LockMode;
  readonly kind: QueueKind;
  readonly limit: number;
  readonly queue: QueueKeys;
  readonly key: string;
  readonly createRevision: bigint;
  readonly onLost: (error: Error) => void;
  /** Epoch ms of the grant, kept in the key's value. */
  since: number;
  /** This grant owns the lock's upgrade marker (upgrading, or upgraded and not downgraded). */
  marker = false;
  released = false;
  /** Aborts a pending upgrade when the grant is released. */
  upgrade: AbortController | null = null;
  /**
   * A handoff grant's recording transaction, while in flight: a conversion waits for it,
   * or the recording could land after the conversion's write and undo it.
   */
  recording: Promise<void> | null = null;
  /**
   * A tracked grant's takeover record (takeover.ts): its version, put by the granting
   * transaction (the release deletes it if still there), or the live record that
   * transaction found instead.
   */
  recordVersion?: bigint | undefined;
  previousRecord?: CellEntry | undefined;

  constructor(
    request: AcquireRequest,
    queue: QueueKeys,
    key: string,
    createRevision: bigint,
    token: bigint,
    since: number,
  ) {
    this.kind = request.kind;
    this.limit = request.limit;
    this.mode = request.mode;
    this.queue = queue;
    this.key = key;
    this.createRevision = createRevision;
    this.token = token;
    this.since = since;
    this.onLost = request.onLost;
  }
}
