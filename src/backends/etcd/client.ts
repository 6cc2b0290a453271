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
  GRPCDeadlineExceededError,
  type ICompare,
  type IKeyValue,
  type IOptions,
  type IRangeResponse,
  type IRequestOp,
  type ITxnResponse,
  isRecoverableError,
  SortOrder,
  SortTarget,
} from "etcd3";
import type { EtcdConfig } from "./config.js";
import { HostResting } from "./errors.js";
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
  readonly health: MemberHealth;
  readonly keepAlives: KeepAlivePaths;
  /** Deadline of each call attempt. */
  readonly callTimeoutMs: number;
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

/** Creates the clients. They connect lazily, on the first call. */
export function createClients(config: EtcdConfig, ttlMs: number): EtcdClients {
  const callTimeoutMs = callTimeout(config.requestTimeoutMs, ttlMs);
  const health = new MemberHealth(config.hosts);
  const many = config.hosts.length > 1;
  const pool = new Etcd3(
    options(config, config.hosts, callTimeoutMs, {
      global: retryPolicy(many),
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
        options(config, [host], callTimeoutMs, { global: direct, host: () => direct, watchBackoff: backoff(50) }),
      ),
    );
  }
  return {
    pool,
    health,
    keepAlives: new KeepAlivePaths(perMember, health),
    callTimeoutMs,
    close() {
      pool.close();
      for (const client of perMember.values()) client.close();
    },
  };
}

function options(config: EtcdConfig, hosts: string[], callTimeoutMs: number, faultHandling: unknown): IOptions {
  return {
    hosts,
    ...(config.credentials ? { credentials: config.credentials as NonNullable<IOptions["credentials"]> } : {}),
    ...(config.auth ? { auth: config.auth } : {}),
    // A unary call that gets no answer (a partition, a stopped process) fails after this
    // instead of hanging; streams (watches, keep-alives) set their own deadlines.
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    // Plain objects with `execute`: all the etcd3 client calls on its policies.
    faultHandling: faultHandling as FaultHandling,
  };
}

/**
 * Retries recoverable failures on the next member that is up; a timeout only when there
 * is another member.
 */
function retryPolicy(many: boolean) {
  return {
    async execute<T>(fn: (context: { attempt: number }) => Promise<T>): Promise<T> {
      for (let attempt = 1; ; attempt++) {
        try {
          return await fn({ attempt });
        } catch (error) {
          const retry =
            attempt < ATTEMPTS &&
            (error instanceof HostResting ||
              (isRecoverableError(error as Error) && (many || !(error instanceof GRPCDeadlineExceededError))));
          if (!retry) throw error;
          await sleep(20 * attempt);
        }
      }
    },
  };
}

/** Watch-stream reconnection delays: 50 ms doubling to 1 s. */
function backoff(ms: number): { duration: number; next: () => ReturnType<typeof backoff> } {
  return { duration: ms, next: () => backoff(Math.min(1000, ms * 2)) };
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Settles like `promise`, or rejects with `signal.reason` as soon as `signal` aborts (the
 * promise keeps running; its outcome is then ignored).
 */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/**
 * Settles like `promise`, or rejects after `ms` with an error saying so (the promise keeps
 * running; its outcome is then ignored).
 */
export function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  promise.catch(() => {});
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

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
