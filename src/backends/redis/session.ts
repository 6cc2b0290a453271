/**
 * One coordinator session: a key `s:<id>` with the session TTL, renewed by `keepAlive()`
 * (the core keeps the conservative local deadline), and a subscription to the session's
 * grant channel, in place before any of its entries can be granted.
 *
 * @module
 */
import { keepListening, within } from "../../core/abortable.js";
import { randomBytes } from "node:crypto";
import type { AcquireRequest, DriverGrant, DriverSession, LockMode, SessionHooks } from "../../core/driver.js";
import { SessionExpiredError } from "../../core/errors.js";
import { BACKEND, isTransient, translate } from "./errors.js";
import { acquire, convert, type RedisGrant, release } from "./grant.js";
import type { Keyspace } from "./keys.js";
import type { Link } from "./link.js";
import { CLOSE, DELETE_RECORD, PUT_RECORD, RENEW } from "./lua.js";
import { runRetrying, type Scope, sleep } from "./scope.js";
import type { Wakeups } from "./wakeups.js";

/** What every session of one driver shares. */
export interface DriverShared {
  readonly link: Link;
  readonly keys: Keyspace;
  readonly memberId: string;
  readonly ttlMs: number;
  readonly requestTimeoutMs: number;
  readonly replicas: number;
  readonly wakeups: Wakeups;
}

export class RedisSession implements DriverSession {
  readonly id: string;
  readonly #shared: DriverShared;
  readonly #hooks: SessionHooks;
  readonly #ended = new AbortController();
  readonly #scope: Scope;
  /** Queue -> this session's entries there, and its records as [encoded space, key]. */
  readonly #queues = new Map<string, number>();
  readonly #records = new Map<string, [string, string]>();

  /** Creates the session key and subscribes to its channel. */
  static async open(shared: DriverShared, hooks: SessionHooks): Promise<RedisSession> {
    const id = randomBytes(8).toString("hex");
    const { link, keys } = shared;
    // A command in flight when a connection drops fails at once, though the client is
    // reconnecting: retry such failures for up to a request timeout.
    const deadline = performance.now() + shared.requestTimeoutMs;
    for (let pause = 25; ; pause = Math.min(500, pause * 2)) {
      try {
        await link.subscribe(keys.sessionChannel(id), shared.wakeups.deliver);
        await link.command(["SET", keys.session(id), shared.memberId, "PX", String(shared.ttlMs), "NX"]);
        return new RedisSession(shared, id, hooks);
      } catch (error) {
        if (!isTransient(error) || performance.now() + pause > deadline) {
          await link.unsubscribe(keys.sessionChannel(id), shared.wakeups.deliver).catch(() => {});
          throw translate(error, "opening a session");
        }
        await sleep(pause);
      }
    }
  }

  private constructor(shared: DriverShared, id: string, hooks: SessionHooks) {
    this.#shared = shared;
    this.#hooks = hooks;
    this.id = id;
    // Every wait follows the session's end (wakeups.ts): one listener for the session's life,
    // not one added and removed per wait.
    keepListening(this.#ended.signal);
    this.#scope = {
      link: shared.link,
      keys: shared.keys,
      sessionId: id,
      memberId: shared.memberId,
      ttlMs: shared.ttlMs,
      requestTimeoutMs: shared.requestTimeoutMs,
      replicas: shared.replicas,
      wakeups: shared.wakeups,
      ended: this.#ended.signal,
      lost: (error) => this.#lost(error),
      track: (queue, delta) => {
        const count = (this.#queues.get(queue) ?? 0) + delta;
        if (count > 0) this.#queues.set(queue, count);
        else this.#queues.delete(queue);
      },
    };
  }

  /**
   * One RENEW script, bounded by a third of the TTL so that a silent network leaves time
   * for retries before the local deadline. Rejects with `SessionExpiredError` when the key
   * is gone (expired, or lost by a server restart or failover).
   */
  async keepAlive(): Promise<void> {
    if (this.#ended.signal.aborted) throw this.#expired("the session has ended");
    const { link, keys, ttlMs, requestTimeoutMs } = this.#shared;
    const boundMs = Math.max(250, Math.min(requestTimeoutMs, Math.floor(ttlMs / 3)));
    let renewed: unknown;
    try {
      renewed = await within(link.run(RENEW, [keys.prefix, this.id, String(ttlMs)]), boundMs);
    } catch (error) {
      throw translate(error, "renewing the session");
    }
    if (Number(renewed) !== 1) {
      const error = this.#expired("its key is gone from Redis (expired, or lost by a restart or failover)");
      this.#lost(error);
      throw error;
    }
  }

  acquire(request: AcquireRequest): Promise<DriverGrant | null> {
    return acquire(this.#scope, request);
  }

  release(grant: DriverGrant): Promise<void> {
    return release(this.#scope, grant as RedisGrant).catch((error: unknown) => {
      throw translate(error, `releasing ${(grant as RedisGrant).kind} "${(grant as RedisGrant).name}"`);
    });
  }

  convert(grant: DriverGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
    return convert(this.#scope, grant as RedisGrant, mode, signal);
  }

  async putRecord(space: string, key: string, value: string): Promise<void> {
    if (this.#ended.signal.aborted) throw this.#expired("the session has ended");
    const { keys } = this.#shared;
    const ref: [string, string] = [keys.space(space), key];
    this.#records.set(JSON.stringify(ref), ref);
    const stored = await runRetrying(
      this.#scope,
      `storing record "${key}" in ${space}`,
      PUT_RECORD,
      [keys.space(space), space, key, value, this.id],
      this.#ended.signal,
    );
    if (Number(stored) !== 1) {
      const error = this.#expired("its key is gone from Redis");
      this.#lost(error);
      throw error;
    }
  }

  async deleteRecord(space: string, key: string): Promise<void> {
    if (this.#ended.signal.aborted) return; // the session's end took it
    this.#records.delete(JSON.stringify([this.#shared.keys.space(space), key]));
    await runRetrying(
      this.#scope,
      `deleting record "${key}" in ${space}`,
      DELETE_RECORD,
      [this.#shared.keys.space(space), key, this.id],
      this.#ended.signal,
    );
  }

  /**
   * Deletes the session key and, in the same script, its entries in every queue it has
   * (granting whoever waits behind them) and its records; then stops listening.
   */
  async close(): Promise<void> {
    if (!this.#ended.signal.aborted) this.#ended.abort(this.#expired("the session was closed"));
    const { link, keys, wakeups } = this.#shared;
    try {
      await link.run(CLOSE, [
        keys.prefix,
        this.id,
        JSON.stringify([...this.#queues.keys()]),
        JSON.stringify([...this.#records.values()]),
      ]);
    } catch (error) {
      throw translate(error, "closing the session");
    } finally {
      await link.unsubscribe(keys.sessionChannel(this.id), wakeups.deliver).catch(() => {});
    }
  }

  #lost(error: Error): void {
    if (this.#ended.signal.aborted) return;
    this.#ended.abort(error);
    this.#hooks.onLost(error);
  }

  #expired(why: string): SessionExpiredError {
    return new SessionExpiredError(`redis session ${this.id}: ${why}`, { backend: BACKEND });
  }
}
