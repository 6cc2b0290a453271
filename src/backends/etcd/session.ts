/**
 * One coordinator session: one etcd lease (TTL rounded up to whole seconds, no automatic
 * keep-alive: the core renews it through `keepAlive()` and keeps the local deadline).
 * Every queue key and record the session writes is bound to the lease.
 *
 * @module
 */
import { setMaxListeners } from "node:events";
import type { Etcd3, ILeaseKeepAliveResponse } from "etcd3";
import { castGrpcError, EtcdLeaseInvalidError } from "etcd3";
import type { AcquireRequest, DriverGrant, DriverSession, LockMode, SessionHooks } from "../../core/driver.js";
import { SessionExpiredError } from "../../core/errors.js";
import { acquire } from "./acquire.js";
import type { EtcdGrant } from "./grant.js";
import { idempotent, op, readBudget, when, within } from "./client.js";
import { convert, release } from "./convert.js";
import { BACKEND, translate } from "./errors.js";
import type { KeepAlivePaths } from "./keepalive.js";
import { encodeRecordValue, type Keyspace } from "./keys.js";
import { retrying, type Scope } from "./scope.js";
import type { WatchRegistry } from "./watch.js";

/** What every session of one driver shares. */
export interface DriverShared {
  readonly client: Etcd3;
  readonly keepAlives: KeepAlivePaths;
  readonly keys: Keyspace;
  readonly memberId: string;
  readonly ttlMs: number;
  /** Deadline of one call attempt (see `callTimeout`). */
  readonly requestTimeoutMs: number;
  readonly watches: WatchRegistry;
  /** Aborts when the driver closes. */
  readonly closing: AbortSignal;
}

export class EtcdSession implements DriverSession {
  /** The lease id in hex. */
  readonly id: string;
  readonly #shared: DriverShared;
  readonly #leaseId: string;
  readonly #hooks: SessionHooks;
  readonly #ended = new AbortController();
  readonly #scope: Scope;
  /** createdAt of the records this session put, to keep it across updates. */
  readonly #createdAt = new Map<string, number>();

  /**
   * Grants a lease and wraps it. Retries transient failures for up to one TTL (but at
   * least two call attempts' deadlines): a lease needs the leader, and a session that
   * could not survive an election would be lost anyway.
   */
  static async open(shared: DriverShared, hooks: SessionHooks): Promise<EtcdSession> {
    const ttlSeconds = Math.ceil(shared.ttlMs / 1000);
    let leaseId: string;
    try {
      const response = await idempotent(
        () => shared.client.leaseClient.leaseGrant({ TTL: ttlSeconds }),
        Math.max(readBudget(shared.requestTimeoutMs), shared.ttlMs),
      );
      if (response.error) throw new Error(response.error);
      leaseId = String(response.ID);
    } catch (error) {
      throw translate(error, "opening a session (granting a lease)");
    }
    return new EtcdSession(shared, leaseId, hooks);
  }

  private constructor(shared: DriverShared, leaseId: string, hooks: SessionHooks) {
    this.#shared = shared;
    this.#leaseId = leaseId;
    this.#hooks = hooks;
    this.id = BigInt(leaseId).toString(16).padStart(16, "0");
    // Every acquisition in flight listens to it: any number of them is normal.
    setMaxListeners(0, this.#ended.signal);
    this.#scope = {
      client: shared.client,
      keys: shared.keys,
      leaseId,
      sessionId: this.id,
      memberId: shared.memberId,
      ttlMs: shared.ttlMs,
      requestTimeoutMs: shared.requestTimeoutMs,
      watches: shared.watches,
      ended: this.#ended.signal,
      closing: shared.closing,
      lost: (error) => this.#lost(error),
    };
  }

  /**
   * One keep-alive round: the revoke check and the renewal at once, each sent to every
   * member (keepalive.ts) and bounded by one call attempt's deadline (at most a quarter of
   * the TTL). The round succeeds only when both do: the core arms its deadline from a send
   * time taken before either, so a renewal that went out after an operator's revoke mark
   * never counts (the check, started after that send time, sees the mark). Going through
   * every member, neither waits on the one member the pool happens to use: a silent leader
   * costs nothing once another member knows the new one. The core retries soon after a
   * failure, and presumes the session lost only at TTL minus a fifth after the last
   * acknowledged round.
   */
  async keepAlive(): Promise<void> {
    if (this.#ended.signal.aborted) throw this.#expired("the session has ended");
    const [checked, renewed] = await Promise.allSettled([this.#checkRevoked(), this.#renew()]);
    if (checked.status === "rejected") throw checked.reason;
    if (renewed.status === "rejected") throw renewed.reason;
    // Halfway to the next renewal, one more round, only to hear from every member: a member
    // that fell silent is then found within a sixth of the TTL (plus a grace) rather than a
    // third, and the watches on it move sooner. Renewing early is always safe: it only
    // pushes etcd's expiry later than the core's deadline assumes.
    const probe = setTimeout(
      () => {
        if (!this.#ended.signal.aborted) this.#renew().catch(() => {});
      },
      Math.floor(this.#shared.ttlMs / 6),
    );
    probe.unref();
  }

  /**
   * A linearizable read of the revoke marker, through every member: once an operator's
   * revoke has put it, no round succeeds again, so the core's deadline (armed from a send
   * time read before this check) passes within the lease's TTL of the mark.
   */
  async #checkRevoked(): Promise<void> {
    let count: number;
    try {
      const key = Buffer.from(this.#shared.keys.revoked(this.id));
      count = await this.#shared.keepAlives.count(key, this.#shared.requestTimeoutMs);
    } catch (error) {
      throw translate(error, "checking whether the session was revoked");
    }
    if (count > 0) {
      const error = this.#expired("an operator revoked it");
      this.#lost(error);
      throw error;
    }
  }

  /** One keep-alive round; reports the session lost when etcd says the lease is gone. */
  async #renew(): Promise<void> {
    let response: ILeaseKeepAliveResponse;
    try {
      response = await this.#shared.keepAlives.renew(this.#leaseId, this.#shared.requestTimeoutMs);
    } catch (error) {
      throw translate(error, "renewing the session's lease");
    }
    if (Number(response.TTL) <= 0) {
      const error = this.#expired(`etcd says lease ${this.id} has expired`);
      this.#lost(error);
      throw error;
    }
  }

  acquire(request: AcquireRequest): Promise<DriverGrant | null> {
    return acquire(this.#scope, request);
  }

  release(grant: DriverGrant): Promise<void> {
    return release(this.#scope, grant as EtcdGrant);
  }

  convert(grant: DriverGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
    return convert(this.#scope, grant as EtcdGrant, mode, signal);
  }

  async putRecord(space: string, key: string, value: string): Promise<void> {
    if (this.#ended.signal.aborted) throw this.#expired("the session has ended");
    const recordKey = this.#shared.keys.recordKey(space, key);
    const now = Date.now();
    const kept = this.#createdAt.get(recordKey) ?? now;
    const stored = (createdAt: number) => encodeRecordValue({ sid: this.id, c: createdAt, v: value });
    // Replacing our own record keeps its creation time; anyone else's is replaced anew.
    const response = await retrying(
      this.#scope,
      `storing record "${key}" in ${space}`,
      () =>
        this.#shared.client.kv.txn({
          compare: [when.leaseIs(recordKey, this.#leaseId)],
          success: [op.put(recordKey, stored(kept), this.#leaseId)],
          failure: [op.put(recordKey, stored(now), this.#leaseId)],
        }),
      this.#ended.signal,
    );
    this.#createdAt.set(recordKey, response.succeeded ? kept : now);
  }

  async deleteRecord(space: string, key: string): Promise<void> {
    const recordKey = this.#shared.keys.recordKey(space, key);
    this.#createdAt.delete(recordKey);
    if (this.#ended.signal.aborted) return; // the lease took it
    // Only if it is still ours: another session may have replaced it (a new leader).
    await retrying(
      this.#scope,
      `deleting record "${key}" in ${space}`,
      () =>
        this.#shared.client.kv.txn({
          compare: [when.leaseIs(recordKey, this.#leaseId)],
          success: [op.del(recordKey)],
          failure: [],
        }),
      this.#ended.signal,
    );
  }

  /**
   * Revokes the lease: etcd deletes every key bound to it at once. Waits at most one call
   * attempt's deadline: if etcd does not confirm by then, it rejects while the revocation
   * goes on in the background, and the lease expires within the TTL anyway.
   */
  async close(): Promise<void> {
    if (!this.#ended.signal.aborted) this.#ended.abort(this.#expired("the session was closed"));
    try {
      await within(this.#shared.client.leaseClient.leaseRevoke({ ID: this.#leaseId }), this.#shared.requestTimeoutMs);
    } catch (error) {
      const cast = error instanceof Error ? castGrpcError(error) : error;
      if (cast instanceof EtcdLeaseInvalidError) return; // expired already
      throw translate(cast, "closing the session (revoking its lease)");
    }
  }

  /**
   * Marks another client's session revoked (`Driver.fenceSession`): puts its revoke marker,
   * bound to its own lease, which its next keep-alive reads and fails on. Replies the
   * lease's granted TTL (no renewal follows the mark, and the core's deadline counts from
   * before the check); `null` for an unknown lease (already gone).
   */
  static async fence(shared: DriverShared, sessionId: string): Promise<number | null> {
    if (!/^[0-9a-f]{1,16}$/.test(sessionId)) return null;
    const ID = BigInt(`0x${sessionId}`).toString();
    try {
      const key = Buffer.from(shared.keys.revoked(sessionId));
      await within(shared.client.kv.put({ key, value: Buffer.from("1"), lease: ID }), shared.requestTimeoutMs);
      const lease = await within(shared.client.leaseClient.leaseTimeToLive({ ID }), shared.requestTimeoutMs);
      if (Number(lease.TTL) <= 0) return null;
      return Number(lease.grantedTTL) * 1000;
    } catch (error) {
      const cast = error instanceof Error ? castGrpcError(error) : error;
      if (cast instanceof EtcdLeaseInvalidError || /lease not found/i.test(String(cast))) return null;
      throw translate(cast, `revoking lease ${sessionId}`);
    }
  }

  /**
   * Revokes another client's lease (`Driver.revokeSession`, after `fence`'s wait): etcd
   * deletes every key bound to it in the same step (its revoke marker too), so its locks
   * are free when this resolves. An unknown lease is already gone.
   */
  static async revoke(shared: DriverShared, sessionId: string): Promise<void> {
    if (!/^[0-9a-f]{1,16}$/.test(sessionId)) return;
    try {
      await within(
        shared.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${sessionId}`).toString() }),
        shared.requestTimeoutMs,
      );
    } catch (error) {
      const cast = error instanceof Error ? castGrpcError(error) : error;
      if (cast instanceof EtcdLeaseInvalidError) return;
      throw translate(cast, `revoking lease ${sessionId}`);
    }
  }

  #lost(error: Error): void {
    if (this.#ended.signal.aborted) return;
    this.#ended.abort(error);
    this.#hooks.onLost(error);
  }

  #expired(why: string): SessionExpiredError {
    return new SessionExpiredError(`etcd session ${this.id}: ${why}`, { backend: BACKEND });
  }
}
