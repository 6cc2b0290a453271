/**
 * Which cluster members answer. A member cut off silently (a failed switch, a frozen VM, a
 * partition that drops packets) never refuses a connection or closes one: calls to it just
 * hang. So silence is judged relatively: a member that fails a call, or stays silent
 * through a keep-alive round that another member answered, is marked down; the pool then
 * skips it, and the streams opened on it (watches) are cancelled so that they reconnect to
 * a member that answers. A member is back as soon as it answers again, which every
 * keep-alive round asks of every member (see keepalive.ts).
 *
 * @module
 */
import { GRPCDeadlineExceededError, GRPCUnavailableError } from "etcd3";
import { HostResting } from "./errors.js";

/** A gRPC call the pool opened as a stream: all it takes to end it. */
interface OpenStream {
  cancel(): void;
  once(event: string, listener: () => void): unknown;
}

interface Member {
  readonly host: string;
  /** Skipped by the pool while another member is up. */
  down: boolean;
  /** Streams the pool opened on this member and that are still open. */
  readonly streams: Set<OpenStream>;
}

/** The etcd3 client's fault-handling policy contract (it only ever calls `execute`). */
export interface HostPolicy {
  execute<T>(fn: (context: unknown) => Promise<T>): Promise<T>;
}

/**
 * The health of one driver's members, shared by its pool (through `policy`) and its
 * keep-alive rounds. Never throws; never blocks: it only decides where calls go and
 * cancels streams on members that fell silent (their owners reconnect elsewhere).
 */
export class MemberHealth {
  readonly #members = new Map<string, Member>();

  /**
   * `hosts` as the etcd3 client names them (the URL without its scheme). Every member
   * starts down, not heard from yet: until one answers, all are tried; from then on only
   * those that answered, so that a client started while a member is cut off never waits
   * for it (see `EtcdClients.reachAny`).
   */
  constructor(hosts: readonly string[]) {
    for (const host of hosts) this.#members.set(bare(host), { host: bare(host), down: true, streams: new Set() });
  }

  /** Whether the pool may use `host` now: it is up, or every member is down (try them all). */
  usable(host: string): boolean {
    const member = this.#members.get(bare(host));
    return !member?.down || !this.#anyUp();
  }

  /**
   * The pool's policy for `host`: refuses (HostResting, so the pool moves on) while the
   * member is down and another is up; records the streams it opens; and marks the member
   * down when a call to it is unavailable (refused, reset, no leader) or misses its deadline.
   */
  policy(host: string): HostPolicy {
    return {
      execute: async <T>(fn: (context: unknown) => Promise<T>): Promise<T> => {
        if (this.#members.size > 1 && !this.usable(host)) throw new HostResting(host);
        try {
          const result = await fn({});
          if (isOpenStream(result)) this.#track(host, result);
          else this.answered(host);
          return result;
        } catch (error) {
          // Only what the member (or the way to it) did: a call we cancelled ourselves
          // says nothing about it.
          if (error instanceof GRPCDeadlineExceededError || error instanceof GRPCUnavailableError) this.failed(host);
          throw error;
        }
      },
    };
  }

  /** `host` answered: it is up. */
  answered(host: string): void {
    const member = this.#members.get(bare(host));
    if (member) member.down = false;
  }

  /**
   * `host` failed or kept silent. It is marked down, and if another member is up, the
   * streams open on it are cancelled: their owners reconnect, and the pool sends them to a
   * member that answers. (With every member down, nothing is cancelled: the cluster as a
   * whole is in trouble, an election or a lost quorum, and streams would only churn.)
   */
  failed(host: string): void {
    if (this.#members.size < 2) return;
    const member = this.#members.get(bare(host));
    if (!member) return;
    member.down = true;
    if (!this.#anyUp()) return;
    const streams = [...member.streams];
    member.streams.clear();
    for (const stream of streams) {
      try {
        stream.cancel();
      } catch {
        // already ended
      }
    }
  }

  #anyUp(): boolean {
    for (const member of this.#members.values()) if (!member.down) return true;
    return false;
  }

  #track(host: string, stream: OpenStream): void {
    const member = this.#members.get(bare(host));
    if (!member) return;
    member.streams.add(stream);
    const forget = () => member.streams.delete(stream);
    for (const event of ["status", "error", "close"]) stream.once(event, forget);
  }
}

function isOpenStream(value: unknown): value is OpenStream {
  const candidate = value as Partial<OpenStream> | null;
  return typeof candidate?.cancel === "function" && typeof candidate.once === "function";
}

/** The etcd3 client strips the scheme from host URLs; so does everything here. */
export function bare(host: string): string {
  return host.replace(/^https?:\/\//, "");
}
