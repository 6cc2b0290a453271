/**
 * One coordinator session: one ZooKeeper handle, hence one server session, whose timeout is
 * the one the server negotiated (it clamps the request to its min/max session timeout).
 *
 * The loss signal comes from a local deadline: the server cannot expire the session before
 * `timeout` after it last heard from us, and it heard from us no earlier than when we sent
 * the last request it answered. So the session is presumed lost at `lastAnsweredSentAt +
 * negotiated - margin`, before the server can delete its ephemeral nodes and grant its locks
 * to anyone else (Curator's lesson: once disconnected you cannot be sure you hold
 * anything). A ping every quarter of the timeout keeps that clock moving while idle.
 *
 * @module
 */
import { performance } from "node:perf_hooks";
import type { AcquireRequest, DriverGrant, DriverSession, LockMode, SessionHooks } from "../../core/driver.js";
import { SessionExpiredError } from "../../core/errors.js";
import { acquire, type ZkGrant } from "./acquire.js";
import { FLAGS, type MultiOp, ZkHandle } from "./client.js";
import type { ZkConfig } from "./config.js";
import { convert, release } from "./convert.js";
import { BACKEND, failedAt, hasCode, RC, ZkMultiError } from "./errors.js";
import type { Layout } from "./paths.js";
import { encodeRecord, nextRecord, withEpitaph } from "./records.js";
import { ensurePath, retrying, type Scope } from "./scope.js";

/** What every session of one driver shares. */
export interface DriverShared {
  readonly config: ZkConfig;
  readonly layout: Layout;
  readonly memberId: string;
  readonly connectTimeoutMs: number;
}

/**
 * A Baton session on ZooKeeper. Its loss signal fires from the local deadline, or when the
 * server reports the session expired; `close()` ends the server session at once.
 */
export class ZkSession implements DriverSession {
  /** The server's session id, in hex. */
  readonly id: string;
  readonly handle: ZkHandle;
  /** The negotiated session timeout. */
  readonly timeoutMs: number;
  readonly #shared: DriverShared;
  readonly #hooks: SessionHooks;
  readonly #ended = new AbortController();
  readonly #scope: Scope;
  #tags = 0;
  #timer: NodeJS.Timeout | null = null;
  #suspended = false;

  static async open(shared: DriverShared, hooks: SessionHooks): Promise<ZkSession> {
    const handle = await ZkHandle.open(shared.config, shared.connectTimeoutMs);
    return new ZkSession(shared, handle, hooks);
  }

  private constructor(shared: DriverShared, handle: ZkHandle, hooks: SessionHooks) {
    this.#shared = shared;
    this.handle = handle;
    this.#hooks = hooks;
    this.id = handle.sessionId;
    this.timeoutMs = handle.negotiatedTimeoutMs;
    this.#scope = {
      handle,
      layout: shared.layout,
      chroot: shared.config.chroot,
      memberId: shared.memberId,
      sessionId: this.id,
      ended: this.#ended.signal,
      nextTag: () => `${this.id}_${(this.#tags++).toString(36)}`,
      contended: new Set(),
      lost: (error) => this.#lost(error),
    };
    handle.onEnd((reason) => {
      if (reason === "expired") this.#lost(this.#expired("the ZooKeeper server expired the session"));
    });
    this.#tick();
    this.#watchRevoked();
  }

  /**
   * Watches this session's revoke marker (revoke.ts): once an operator creates it, the
   * session is lost at once, before the operator's revoke frees anything. Re-armed after
   * every event; a failed read retries at the next ping interval (the deadline covers a
   * client that cannot hear the server).
   */
  #watchRevoked(): void {
    if (this.#ended.signal.aborted) return;
    this.handle
      .exists(this.#shared.layout.revoked(this.id), () => this.#watchRevoked())
      .then(
        (stat) => {
          if (stat) this.#lost(this.#expired("an operator revoked it"));
        },
        () => {
          const retry = setTimeout(() => this.#watchRevoked(), Math.max(50, Math.floor(this.timeoutMs / 4)));
          retry.unref();
        },
      );
  }

  /** Time left after the last answered request before the session is presumed lost. */
  get marginMs(): number {
    return Math.max(100, Math.floor(this.timeoutMs / 5));
  }

  /** Test hook: stop pinging, as if every answer were lost (the deadline then fires). */
  suspendPings(): void {
    this.#suspended = true;
  }

  acquire(request: AcquireRequest): Promise<DriverGrant | null> {
    return acquire(this.#scope, request);
  }

  release(grant: DriverGrant): Promise<void> {
    return release(this.#scope, grant as ZkGrant);
  }

  convert(grant: DriverGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
    return convert(this.#scope, grant as ZkGrant, mode, signal);
  }

  async putRecord(space: string, key: string, value: string): Promise<void> {
    const stop = this.#ended.signal;
    if (stop.aborted) throw this.#expired("the session has ended");
    const path = this.#shared.layout.record(space, key);
    const { handle } = this;
    const what = `storing record "${key}" in ${space}`;
    for (;;) {
      const existing = await retrying(handle, what, () => handle.get(path), stop);
      if (existing && existing.stat.ephemeralOwner === this.id) {
        // Ours: replace the value, keep the creation time and the earlier values.
        const data = nextRecord(existing.data, existing.stat.version, this.id, value);
        try {
          await retrying(handle, what, () => handle.set(path, data, existing.stat.version), stop);
          return;
        } catch (error) {
          if (isCode(error, RC.BADVERSION) || isCode(error, RC.NONODE)) continue;
          throw error;
        }
      }
      // Someone else's (a previous leader's): replace it with one bound to this session.
      if (existing) {
        try {
          await retrying(handle, what, () => handle.delete(path, existing.stat.version), stop);
        } catch (error) {
          if (isCode(error, RC.BADVERSION)) continue;
          throw error;
        }
      }
      const data = encodeRecord({ sid: this.id, c: Date.now(), v: value });
      try {
        await retrying(handle, what, () => handle.create(path, data, FLAGS.ephemeral), stop);
        return;
      } catch (error) {
        if (isCode(error, RC.NONODE)) {
          await ensurePath(handle, this.#shared.config.chroot, this.#shared.layout.recordSpace(space), stop);
          continue;
        }
        // Created by an earlier attempt whose answer was lost, or by someone else: look again.
        if (isCode(error, RC.NODEEXISTS)) continue;
        throw error;
      }
    }
  }

  /**
   * Deletes the record if it is still this session's, in one multi with its epitaph written
   * into the space node (record-watch.ts), under the space node's version so that two
   * leaves at once keep both epitaphs; after a few such conflicts, without the version (a
   * leave is not held up for long, at the cost of an epitaph a watcher might need). An
   * epitaph is bounded in bytes (records.ts); if the server refuses its set anyway, the
   * record is deleted alone. Two round trips, as a read and a delete took before: the two
   * reads go out together.
   */
  async deleteRecord(space: string, key: string): Promise<void> {
    const stop = this.#ended.signal;
    if (stop.aborted) return; // the server takes ephemeral nodes with the session
    const { layout } = this.#shared;
    const path = layout.record(space, key);
    const parent = layout.recordSpace(space);
    const { handle } = this;
    const what = `deleting record "${key}" in ${space}`;
    for (let attempt = 0; ; attempt++) {
      const [existing, spaceNode] = await Promise.all([
        retrying(handle, what, () => handle.get(path), stop),
        retrying(handle, what, () => handle.get(parent), stop),
      ]);
      // Only if it is still ours: another session may have replaced it (a new leader).
      if (!existing || existing.stat.ephemeralOwner !== this.id) return;
      const { czxid, version } = existing.stat;
      const epitaph = { child: path.slice(parent.length + 1), czxid, version, data: existing.data };
      const ops: MultiOp[] = [
        { op: "delete", path, version },
        {
          op: "set",
          path: parent,
          data: withEpitaph(spaceNode?.data ?? "", epitaph),
          version: attempt < 4 && spaceNode ? spaceNode.stat.version : -1,
        },
      ];
      try {
        await retrying(handle, what, () => handle.multi(ops), stop);
        return;
      } catch (error) {
        if (failedAt(error, 1, RC.BADVERSION) || failedAt(causeOf(error), 1, RC.BADVERSION)) continue;
        const multi = [error, causeOf(error)].find((e): e is ZkMultiError => e instanceof ZkMultiError);
        if (multi?.op === 1) {
          // The epitaph's set refused otherwise: it never holds the leave up; the record goes alone.
          const alone = () => handle.delete(path, version);
          await retrying(handle, what, alone, stop).catch((e: unknown) => {
            if (!isCode(e, RC.BADVERSION)) throw e; // replaced by another session's since
          });
          return;
        }
        // Replaced by another session's, or deleted by an earlier try whose answer was lost.
        if (!isCode(error, RC.BADVERSION) && !isCode(error, RC.NONODE)) throw error;
        return;
      }
    }
  }

  /** Closes the server session: the server deletes its nodes at once. */
  async close(): Promise<void> {
    if (!this.#ended.signal.aborted) this.#ended.abort(this.#expired("the session was closed"));
    this.#stop();
    await this.handle.close();
  }

  /** Pings while due and checks the deadline; re-arms itself. */
  #tick(): void {
    if (this.#ended.signal.aborted) return;
    const now = performance.now();
    const deadline = this.handle.lastAckSentAt + this.timeoutMs - this.marginMs;
    if (now >= deadline) {
      this.#lost(
        this.#expired(
          `no answer from ZooKeeper for ${Math.round(now - this.handle.lastAckSentAt)} ms (session timeout ${this.timeoutMs} ms minus a ${this.marginMs} ms margin); presumed lost`,
        ),
      );
      return;
    }
    const pingEvery = Math.max(50, Math.floor(this.timeoutMs / 4));
    if (!this.#suspended && now - this.handle.lastAckSentAt >= pingEvery && this.handle.connected) {
      this.handle.exists("/").catch(() => {});
    }
    const wake = Math.min(deadline - now, Math.max(25, Math.floor(pingEvery / 2)));
    this.#timer = setTimeout(() => this.#tick(), Math.max(1, wake));
    this.#timer.unref();
  }

  #stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #lost(error: Error): void {
    if (this.#ended.signal.aborted) return;
    this.#ended.abort(error);
    this.#stop();
    this.#hooks.onLost(error);
  }

  #expired(why: string): SessionExpiredError {
    return new SessionExpiredError(`ZooKeeper session ${this.id}: ${why}`, { backend: BACKEND });
  }
}

function isCode(error: unknown, rc: number): boolean {
  return hasCode(error, rc) || hasCode(causeOf(error), rc);
}

function causeOf(error: unknown): unknown {
  return (error as { cause?: unknown } | null)?.cause;
}
