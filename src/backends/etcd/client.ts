/**
 * The `etcd3` client as the driver uses it: raw KV, lease and watch RPCs with deadlines,
 * fault handling tuned for quick fail-over, and small builders for transactions.
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
import { prefixEnd } from "./keys.js";

type FaultHandling = NonNullable<IOptions["faultHandling"]>;

/** How long a host that failed twice in a row is skipped while others are tried. */
const HOST_REST_MS = 500;
/** Attempts per call, each on the next host (the client's own fail-over). */
const ATTEMPTS = 3;

/** Creates the client. It connects lazily, on the first call. */
export function createClient(config: EtcdConfig): Etcd3 {
  const many = config.hosts.length > 1;
  const options: IOptions = {
    hosts: config.hosts,
    ...(config.credentials ? { credentials: config.credentials as NonNullable<IOptions["credentials"]> } : {}),
    ...(config.auth ? { auth: config.auth } : {}),
    // A unary call that gets no answer (a partition, a stopped process) fails after this
    // instead of hanging; streams (watches, keep-alives) set their own deadlines.
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + config.requestTimeoutMs }),
    // Plain objects with `execute`: all the etcd3 client calls on its policies.
    faultHandling: {
      global: retryPolicy(many),
      host: (host: string) => restPolicy(host, many),
      watchBackoff: backoff(50),
    } as unknown as FaultHandling,
  };
  return new Etcd3(options);
}

/** Retries recoverable failures on the next host; a timeout only when there is another host. */
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

/** Skips a host for a moment after two failures in a row, so calls go to the others. */
function restPolicy(host: string, many: boolean) {
  let failures = 0;
  let restUntil = 0;
  return {
    async execute<T>(fn: (context: unknown) => Promise<T>): Promise<T> {
      if (many && Date.now() < restUntil) throw new HostResting(host);
      try {
        const result = await fn({});
        failures = 0;
        return result;
      } catch (error) {
        if (isRecoverableError(error as Error) && ++failures >= 2) {
          failures = 0;
          restUntil = Date.now() + HOST_REST_MS;
        }
        throw error;
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
