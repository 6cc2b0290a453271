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

interface Answer {
  readonly response: ILeaseKeepAliveResponse;
  readonly latencyMs: number;
}

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
    const deadline = Date.now() + boundMs;
    const resendMs = Math.max(50, Math.floor(boundMs / SENDS_PER_ROUND));
    const answered = new Set<string>();
    const rounds = [...this.#clients].map(([host, client]) => {
      const round = this.#member(host, client, leaseId, deadline, resendMs);
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
      ({ response }) => response,
      (error: unknown) => {
        const errors = error instanceof AggregateError ? error.errors : [error];
        throw errors.at(-1) ?? new Error("no etcd member answered the keep-alive");
      },
    );
  }

  /**
   * Asks one member, again every `resendMs`, until it answers or `deadline`. Resolves with
   * the answer and how long the request it answered took.
   */
  #member(host: string, client: Etcd3, leaseId: string, deadline: number, resendMs: number): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const streams = new Set<{ end(): void; cancel(): void }>();
      let settled = false;
      let lastError: unknown = new Error(`etcd member ${host} did not answer the keep-alive`);
      const finish = (answer: Answer | null) => {
        if (settled) return;
        settled = true;
        clearInterval(timer);
        clearTimeout(expiry);
        for (const stream of streams) {
          try {
            if (answer) stream.end();
            else stream.cancel();
          } catch {
            // already closed
          }
        }
        if (answer) resolve(answer);
        else reject(lastError);
      };
      const send = () => {
        if (settled || Date.now() >= deadline) return;
        const sentAt = Date.now();
        client.leaseClient.leaseKeepAlive({ deadline }).then(
          (stream) => {
            stream.on("error", (error: Error) => {
              lastError = castGrpcError(error);
            });
            if (settled) {
              stream.cancel();
              return;
            }
            streams.add(stream);
            stream.on("data", (response: ILeaseKeepAliveResponse) =>
              finish({ response, latencyMs: Date.now() - sentAt }),
            );
            stream.write({ ID: leaseId });
          },
          (error: unknown) => {
            lastError = error;
          },
        );
      };
      // Unref'd: a closing process does not wait for a round to end.
      const timer = setInterval(send, resendMs);
      timer.unref();
      const expiry = setTimeout(() => finish(null), Math.max(0, deadline - Date.now()));
      expiry.unref();
      send();
    });
  }
}
