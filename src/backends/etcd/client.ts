/**
 * The `etcd3` clients as the driver uses them: raw KV, lease and watch RPCs with deadlines
 * tied to the TTL, calls kept off members that do not answer (members.ts), keep-alives over
 * every member (keepalive.ts), and small builders for transactions.
 *
 * @module
 */
import {
  CompareResult,
  CompareTarget,
  Etcd3,
  type ICompare,
  type IKeyValue,
  type IOptions,
  type IRangeResponse,
  type IRequestOp,
  type ITxnResponse,
  SortOrder,
  SortTarget,
} from "etcd3";
import type { EtcdConfig } from "./config.js";
import { HostResting, isTransient } from "./errors.js";
import { KeepAlivePaths } from "./keepalive.js";
import { prefixEnd } from "./keys.js";
import { bare, MemberHealth } from "./members.js";

type FaultHandling = NonNullable<IOptions["faultHandling"]>;

/** Attempts per call, each on another member that is up (the client's own fail-over). */
const ATTEMPTS = 3;
/** The shortest deadline a call attempt gets, whatever the TTL. */
const MIN_CALL_TIMEOUT_MS = 250;

/** What one driver talks to etcd through. */
export interface EtcdClients {
  /** Unary calls and watches, on a member that is up. */
  readonly pool: Etcd3;
  readonly keepAlives: KeepAlivePaths;
  /** Deadline of each call attempt. */
  readonly callTimeoutMs: number;
  /**
   * Runs `call` on every member at once, each through its own client; resolves with the
   * first success and rejects with the first error when all fail. Every member that
   * answers is marked up, now or whenever its answer comes.
   */
  reachAny<T>(call: (client: Etcd3) => Promise<T>): Promise<T>;
  close(): void;
}

/**
 * The deadline of one call attempt: `requestTimeoutMs`, but at most a quarter of the TTL,
 * so that an attempt lost on a silent member still leaves time to retry on another one
 * well before the session's local deadline (TTL minus a fifth).
 */
export function callTimeout(requestTimeoutMs: number, ttlMs: number): number {
  return Math.min(requestTimeoutMs, Math.max(MIN_CALL_TIMEOUT_MS, Math.floor(ttlMs / 4)));
}

/**
 * Reads (and the lease grant that opens a session) retry transient failures for two call
 * attempts' deadlines: enough to get past a member that went silent and a reconnection.
 */
export function readBudget(callTimeoutMs: number): number {
  return 2 * callTimeoutMs;
}

/** Creates the clients. They connect lazily, on the first call. */
export function createClients(config: EtcdConfig, ttlMs: number): EtcdClients {
  const callTimeoutMs = callTimeout(config.requestTimeoutMs, ttlMs);
  const health = new MemberHealth(config.hosts);
  const pool = new Etcd3(
    options(config, config.hosts, callTimeoutMs, true, {
      global: retryPolicy(),
      host: (host: string) => health.policy(host),
      watchBackoff: backoff(50),
    }),
  );
  // One client per member for keep-alives: no retries, no circuit breaker (the etcd3
  // default would stop calling a member for 5 s after three failures).
  const perMember = new Map<string, Etcd3>();
  for (const host of config.hosts) {
    const direct = { execute: async <T>(fn: (context: unknown) => Promise<T>) => fn({}) };
    perMember.set(
      bare(host),
      new Etcd3(
        options(config, [host], callTimeoutMs, false, {
          global: direct,
          host: () => direct,
          watchBackoff: backoff(50),
        }),
      ),
    );
  }
  return {
    pool,
    keepAlives: new KeepAlivePaths(perMember, health),
    callTimeoutMs,
    reachAny<T>(call: (client: Etcd3) => Promise<T>): Promise<T> {
      const calls = [...perMember].map(async ([host, client]) => {
        const result = await call(client);
        health.answered(host);
        return result;
      });
      return Promise.any(calls).catch((error: unknown) => {
        throw error instanceof AggregateError ? error.errors[0] : error;
      });
    },
    close() {
      pool.close();
      for (const client of perMember.values()) client.close();
    },
  };
}

/**
 * `leader`: mark calls as requiring a leader (the pool). Not for the per-member clients: a
 * keep-alive sent to a follower during an election waits there for the new leader and is
 * answered as soon as it exists, and connect()'s serializable read needs no leader at all.
 */
function options(
  config: EtcdConfig,
  hosts: string[],
  callTimeoutMs: number,
  leader: boolean,
  faultHandling: unknown,
): IOptions {
  return {
    hosts,
    grpcOptions: {
      interceptors: leader ? [requireLeader] : [],
      // gRPC waits 1 s, growing to 2 min, before reconnecting after a failure; a lock
      // service wants a healed member back within a fraction of a TTL.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1000,
    },
    ...(config.credentials ? { credentials: config.credentials as NonNullable<IOptions["credentials"]> } : {}),
    ...(config.auth ? { auth: config.auth } : {}),
    // A unary call that gets no answer (a partition, a stopped process) fails after this
    // instead of hanging; streams (watches, keep-alives) set their own deadlines.
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    // Plain objects with `execute`: all the etcd3 client calls on its policies.
    faultHandling: faultHandling as FaultHandling,
  };
}

/** The part of a grpc-js intercepting call that `requireLeader` touches. */
interface StartableCall {
  start(metadata: { set(key: string, value: string): void }, listener: unknown): void;
}

/**
 * Marks every call as requiring a leader (the metadata of etcd's Go `WithRequireLeader`):
 * a member that has lost touch with its leader then refuses a call at once with
 * "etcdserver: no leader" instead of holding it until its deadline, and cancels such
 * streams (watches) when it loses the leader, so that they move to a member that has one.
 */
function requireLeader<C extends StartableCall>(options: unknown, nextCall: (options: unknown) => C): C {
  const call = nextCall(options);
  const start = call.start.bind(call);
  call.start = (metadata, listener) => {
    metadata.set("hasleader", "true");
    start(metadata, listener);
  };
  return call;
}

/**
 * Moves on to the next member only when the call was never sent (`HostResting`). A call
 * that was sent and got no answer may still be applied later (a silent member gets it
 * when the network heals), so whether to send it again is the caller's decision: reads use
 * `idempotent`, the session's writes `retrying` (scope.ts), and joining a queue fences off
 * a lost attempt first (acquire.ts).
 */
function retryPolicy() {
  return {
    async execute<T>(fn: (context: { attempt: number }) => Promise<T>): Promise<T> {
      for (let attempt = 1; ; attempt++) {
        try {
          return await fn({ attempt });
        } catch (error) {
          if (attempt >= ATTEMPTS || !(error instanceof HostResting)) throw error;
          await sleep(20 * attempt);
        }
      }
    },
  };
}

/**
 * Runs a call that is safe to repeat (a read; a lease grant, whose lost duplicate just
 * expires) again while it fails transiently, for up to `budgetMs` (with delays from 20 ms
 * doubling to 250 ms, enough for a reconnection); each attempt goes to a member that is up.
 */
export async function idempotent<T>(call: () => Promise<T>, budgetMs: number): Promise<T> {
  const deadline = Date.now() + budgetMs;
  for (let delay = 20; ; delay = Math.min(250, delay * 2)) {
    try {
      return await call();
    } catch (error) {
      if (Date.now() + delay > deadline || !isTransient(error)) throw error;
      await sleep(delay);
    }
  }
}

/** Watch-stream reconnection delays: 50 ms doubling to 1 s. */
function backoff(ms: number): { duration: number; next: () => ReturnType<typeof backoff> } {
  return { duration: ms, next: () => backoff(Math.min(1000, ms * 2)) };
}

// The abortable waits live in core; re-exported for the etcd modules that import them from here.
export { raceSignal, sleep, within } from "../../core/abortable.js";
import { sleep } from "../../core/abortable.js";

const bytes = (text: string): Buffer => Buffer.from(text);

/** Transaction conditions. */
export const when = {
  /** `key` exists with this create revision (it is still the same key). */
  is(key: string, createRevision: bigint): ICompare {
    return {
      key: bytes(key),
      target: CompareTarget.Create,
      result: CompareResult.Equal,
      create_revision: createRevision.toString(),
    };
  },
  /** `key` was last written at `revision` (its mod revision: a cell's version). */
  modIs(key: string, revision: bigint): ICompare {
    return {
      key: bytes(key),
      target: CompareTarget.Mod,
      result: CompareResult.Equal,
      mod_revision: revision.toString(),
    };
  },
  absent(key: string): ICompare {
    return { key: bytes(key), target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 };
  },
  /** No key starts with `prefix` (a range comparison over an empty range compares revision 0). */
  empty(prefix: string): ICompare {
    return {
      key: bytes(prefix),
      range_end: prefixEnd(prefix),
      target: CompareTarget.Create,
      result: CompareResult.Equal,
      create_revision: 0,
    };
  },
  /** Every key starting with `prefix` was created at `revision` or later. */
  noneBefore(prefix: string, revision: bigint): ICompare {
    return {
      key: bytes(prefix),
      range_end: prefixEnd(prefix),
      target: CompareTarget.Create,
      result: CompareResult.Greater,
      create_revision: (revision - 1n).toString(),
    };
  },
  valueIs(key: string, value: string): ICompare {
    return { key: bytes(key), target: CompareTarget.Value, result: CompareResult.Equal, value: bytes(value) };
  },
  leaseIs(key: string, lease: string): ICompare {
    return { key: bytes(key), target: CompareTarget.Lease, result: CompareResult.Equal, lease };
  },
};

/** Transaction operations. */
export const op = {
  put(key: string, value: Buffer, lease: string): IRequestOp {
    return { request_put: { key: bytes(key), value, lease } };
  },
  del(key: string): IRequestOp {
    return { request_delete_range: { key: bytes(key) } };
  },
  get(key: string): IRequestOp {
    return { request_range: { key: bytes(key) } };
  },
  /** Every key starting with `prefix`, oldest first. */
  scan(prefix: string): IRequestOp {
    return {
      request_range: {
        key: bytes(prefix),
        range_end: prefixEnd(prefix),
        sort_target: SortTarget.Create,
        sort_order: SortOrder.Ascend,
      },
    };
  },
};

/** The key-values of the `index`-th response of a transaction (a range). */
export function rangeAt(response: ITxnResponse, index: number): IKeyValue[] {
  const range = response.responses[index]?.response_range as IRangeResponse | undefined;
  return range?.kvs ?? [];
}
