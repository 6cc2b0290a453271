/**
 * Lease keep-alives over every member at once. Any member forwards a keep-alive to the
 * leader, so the first answer renews the lease; a member that is cut off, or cannot reach
 * the leader, only fails to answer, and costs nothing as long as another one does. This is
 * stronger than etcd's own Go client, whose single keep-alive stream stays on a silent
 * member until gRPC keepalive pings (off by default) give up on the connection, while the
 * lease runs out.
 *
 * Each member is reached through a client of its own (one gRPC channel per member), so
 * that the keep-alive does not depend on the pool's choice of member. Every round also
 * tells {@link MemberHealth} who answered: the members that stayed silent while another
 * answered are marked down, which moves the pool's calls and watches away from them.
 *
 * @module
 */
import type { Etcd3, ILeaseKeepAliveResponse } from "etcd3";
import { castGrpcError } from "etcd3";
import type { MemberHealth } from "./members.js";

/** Re-sends at most this many times per member in a round (a new stream each time). */
const SENDS_PER_ROUND = 3;
/**
 * A member still silent `GRACE_FACTOR` times the first answer's latency after that answer
 * came (and at least `MIN_GRACE_MS` after it) is taken for silent.
 */
const GRACE_FACTOR = 3;
const MIN_GRACE_MS = 500;

interface Answer<T> {
  readonly value: T;
  readonly latencyMs: number;
}

/** Closes what one send left open; `answered`: whether the member answered. */
type Closer = (answered: boolean) => void;

/**
 * Sends one request to a member through `client`: calls `answer` with its answer, `failed`
 * with each error; returns (or resolves with) what closes the stream it opened, if any.
 */
type Send<T> = (
  client: Etcd3,
  answer: (value: T) => void,
  failed: (error: unknown) => void,
) => Promise<Closer | undefined> | undefined;

/**
 * Renews leases through every member of one driver. A round never throws synchronously;
 * it settles within its bound whatever the members do, and leaves nothing running after
 * that (its streams are ended or cancelled).
 */
export class KeepAlivePaths {
  readonly #clients: ReadonlyMap<string, Etcd3>;
  readonly #health: MemberHealth;

  /** `clients`: one single-member client per host, as `MemberHealth` names the hosts. */
  constructor(clients: ReadonlyMap<string, Etcd3>, health: MemberHealth) {
    this.#clients = clients;
    this.#health = health;
  }

  /**
   * Renews `leaseId` through every member, within `boundMs`. Resolves with the first
   * answer (etcd's verdict on the lease: `TTL <= 0` means it is gone). Each member that
   * has not answered is asked again every third of the bound on a new stream: a member
   * still forwarding to a leader that has just been cut off answers the next request once
   * it knows the new leader. Rejects with the last error when no member answered in time.
   */
  renew(leaseId: string, boundMs: number): Promise<ILeaseKeepAliveResponse> {
    return this.#everyMember("the keep-alive", boundMs, (client, answer, failed) => {
      return client.leaseClient.leaseKeepAlive({ deadline: Date.now() + boundMs }).then(
        (stream): Closer => {
          stream.on("error", (error: Error) => failed(castGrpcError(error)));
          stream.on("data", (response: ILeaseKeepAliveResponse) => answer(response));
          stream.write({ ID: leaseId });
          return (answered: boolean) => {
            try {
              if (answered) stream.end();
              else stream.cancel();
            } catch {
              // already closed
            }
          };
        },
        (error: unknown) => {
          failed(error);
          return undefined;
        },
      );
    });
  }

  /**
   * How many keys `key` names (0 or 1), read linearizably through every member at once
   * within `boundMs`, each asked again every third of the bound like {@link renew}: the
   * first answer wins. A follower holds a linearizable read until it knows a leader, so a
   * read sent during an election is answered once one exists. Rejects with the last error
   * when no member answered in time.
   */
  count(key: Buffer, boundMs: number): Promise<number> {
    return this.#everyMember("the read", boundMs, (client, answer, failed) => {
      client.kv.range({ key, count_only: true }).then((response) => answer(Number(response.count)), failed);
      return undefined;
    });
  }

  /**
   * Sends one request through every member, within `boundMs`; resolves with the first
   * answer. Members that have not answered are asked again every third of the bound. Every
   * member that answers is marked up, and the members still silent a grace after the first
   * answer are marked down (see {@link MemberHealth}).
   */
  #everyMember<T>(what: string, boundMs: number, send: Send<T>): Promise<T> {
    const deadline = Date.now() + boundMs;
    const resendMs = Math.max(50, Math.floor(boundMs / SENDS_PER_ROUND));
    const answered = new Set<string>();
    const rounds = [...this.#clients].map(([host, client]) => {
      const round = this.#member<T>(host, what, deadline, resendMs, (answer, failed) => send(client, answer, failed));
      round.then(
        ({ latencyMs }) => {
          answered.add(host);
          this.#health.answered(host);
          if (answered.size === 1) {
            // Silence only counts against a member when another one answered: give the
            // others a few times as long as that answer took, then judge them.
            const graceMs = Math.max(MIN_GRACE_MS, GRACE_FACTOR * latencyMs);
            setTimeout(judge, graceMs).unref();
          }
        },
        () => {
          // No answer: judged with the others once one member answered (`judge`).
        },
      );
      return round;
    });
    const judge = () => {
      for (const host of this.#clients.keys()) if (!answered.has(host)) this.#health.failed(host);
    };
    return Promise.any(rounds).then(
      ({ value }): T => value,
      (error: unknown): never => {
        const errors = error instanceof AggregateError ? error.errors : [error];
        throw errors.at(-1) ?? new Error(`no etcd member answered ${what}`);
      },
    );
  }

  /**
   * Asks one member, again every `resendMs`, until it answers or `deadline`. Resolves with
   * the answer and how long the request it answered took; whatever the sends left open
   * (streams) is closed when it settles.
   */
  #member<T>(
    host: string,
    what: string,
    deadline: number,
    resendMs: number,
    send: (answer: (value: T) => void, failed: (error: unknown) => void) => Promise<Closer | undefined> | undefined,
  ): Promise<Answer<T>> {
    return new Promise<Answer<T>>((resolve, reject) => {
      const open = new Set<Closer>();
      let settled = false;
      let lastError: unknown = new Error(`etcd member ${host} did not answer ${what}`);
      const finish = (answer: Answer<T> | null) => {
        if (settled) return;
        settled = true;
        clearInterval(timer);
        clearTimeout(expiry);
        for (const close of open) close(answer !== null);
        if (answer) resolve(answer);
        else reject(lastError);
      };
      const failed = (error: unknown) => {
        lastError = error;
      };
      const ask = () => {
        if (settled || Date.now() >= deadline) return;
        const sentAt = Date.now();
        const opened = send((value) => finish({ value, latencyMs: Date.now() - sentAt }), failed);
        opened?.then((close) => {
          if (!close) return;
          if (settled) close(false);
          else open.add(close);
        }, failed);
      };
      // Unref'd: a closing process does not wait for a round to end.
      const timer = setInterval(ask, resendMs);
      timer.unref();
      const expiry = setTimeout(() => finish(null), Math.max(0, deadline - Date.now()));
      expiry.unref();
      ask();
    });
  }
}
