/**
 * Takeover: fence info stored with a lock grant, handed to the next holder when this
 * holding is lost rather than released, an `onTakeover` fencing hook, and Chubby's lock
 * delay. Written once here over the durable-record seam (`Driver.cells`, in the space
 * {@link TAKEOVER_SPACE}), so every backend with cells has it. Every exclusive lock grant
 * is tracked unless `takeover: false` where the driver has `nativeRecords`; elsewhere only
 * when asked (`takeover: true` or any takeover option).
 *
 * The record of lock `name` is created with each tracked grant (by the driver in the
 * grant's own atomic step where it has `nativeRecords`, else by a cell write right after,
 * fenced by the token) and deleted by its clean release (in the release's own step, or by
 * a delete conditioned on the version it wrote). A record found by the next holder
 * therefore belongs to a holding that ended without a release: lost, died, cut off or
 * revoked.
 *
 * @module
 */
import { raceSignal, sleep } from "./abortable.js";
import type { CoordinatorCore } from "./core.js";
import {
  type CellEntry,
  type Driver,
  type DriverCells,
  type DriverGrant,
  type LockMode,
  sealRecord,
} from "./driver.js";
import { FenceFailedError, InvalidArgumentError, LockLostError, UnsupportedError } from "./errors.js";
import { canonicalJson } from "./json-value.js";
import { describe } from "./validate.js";

/** The driver cell space of takeover records (apart from user cells). @internal */
export const TAKEOVER_SPACE = "takeover";

/** Largest fence info, in UTF-8 bytes of its JSON text. */
export const MAX_FENCE_INFO_BYTES = 4096;

/** Longest lock delay: Consul's upper bound too. Longer is an `InvalidArgumentError`. */
export const MAX_LOCK_DELAY_MS = 60_000;

/**
 * The previous holding of a lock, handed to its next holder because it ended without a
 * release (its session expired, its process died, its connection dropped, or it was
 * revoked). Every exclusive lock holding leaves one unless acquired with `takeover: false`
 * (see {@link TakeoverOptions}).
 */
export interface Takeover {
  /** Member id of the previous holder's coordinator. */
  readonly memberId: string;
  /** Its session id, as `inspect()` showed it. */
  readonly sessionId: string;
  /** Its fencing token: lower than the new holder's. */
  readonly token: bigint;
  /** Epoch ms of its grant. */
  readonly since: number;
  /** The fence info it acquired with (`null` if none). */
  readonly fenceInfo: unknown;
  /** The lock delay it acquired with (0 if none). */
  readonly lockDelayMs: number;
}

/**
 * The fencing hook: fence the previous holder (kill its process, end its hypervisor
 * session, STONITH) and resolve, or throw. Runs after the grant, before `acquire()`
 * resolves. `signal` aborts when the acquisition is cancelled, times out or its grant is
 * lost; then stop and throw.
 */
export type OnTakeover = (previous: Takeover, signal: AbortSignal) => Promise<void> | void;

/** Takeover options of a lock acquisition (exclusive locks only). */
export interface TakeoverOptions {
  /**
   * A small JSON value (at most {@link MAX_FENCE_INFO_BYTES} bytes) stored with the grant:
   * what the next holder needs to fence this one if it is lost (a pid, a host, a session
   * id). Shown by `inspect()`. Implies `takeover: true`.
   */
  fenceInfo?: unknown;
  /**
   * Runs once per grant that finds a lost holding (when `handle.takeover` would be set),
   * before `acquire()` resolves. If it throws, `acquire()` rejects with
   * {@link FenceFailedError} and the lock is released; the previous holder's record stays,
   * so the next acquirer fences it again. A blocking `acquire()` whose claim then fails
   * without a word about the lock waits on and runs it again on its next grant (see
   * `Lock.acquire`). Fencing actions should therefore be idempotent. Implies `takeover: true`.
   */
  onTakeover?: OnTakeover | undefined;
  /**
   * If this holding is lost rather than released, the next tracked acquirer is not handed
   * the lock until this many milliseconds after it was granted at the backend (which is no
   * earlier than the moment the backend freed the lost holding), so the lost holder's
   * in-flight writes drain. From 0 to {@link MAX_LOCK_DELAY_MS}. A clean release is never
   * delayed. Implies `takeover: true`.
   */
  lockDelayMs?: number | undefined;
  /**
   * Takeover tracking: write this holding's record with the grant, delete it on release,
   * and hand the previous one over. On by default for exclusive locks where the driver
   * writes the record itself (every built-in backend: memory, file, etcd, Redis,
   * PostgreSQL, ZooKeeper, MySQL; `coord.takeoverByDefault`); for shared locks, and on a
   * driver without native records, `undefined` is untracked. `true` insists: an
   * `InvalidArgumentError` on a shared lock, an `UnsupportedError` on a backend without
   * cells, and the lock cannot be downgraded. `false` opts out: nothing is read or written,
   * `handle.takeover` is `null`, and a loss of this holding is not handed on (cannot be
   * combined with the other takeover options). Where the driver has native records
   * tracking costs no extra round trip on an uncontended grant (memory, file, etcd, Redis,
   * PostgreSQL, MySQL, ZooKeeper's first try; etcd: one on a handoff; ZooKeeper: one on a
   * grant after a wait); on a driver without them a cell write per grant and a delete per release
   * (docs/takeover.md),
   * which is why it is asked for there (`true` or any other takeover option). A holding
   * that is not tracked leaves nothing to hand on: track every holder of a name that
   * needs it.
   */
  takeover?: boolean | undefined;
}

/** Checked takeover options. @internal */
export interface TakeoverRequest {
  readonly fenceInfo: string;
  readonly onTakeover: OnTakeover | undefined;
  readonly lockDelayMs: number;
  /** Asked for by the options (not only the default): such a lock cannot be downgraded. */
  readonly explicit: boolean;
}

/**
 * Whether a plain exclusive acquisition (no takeover option) is tracked on `driver`: only
 * where the record travels with the grant. @internal
 */
export function tracksByDefault(driver: Pick<Driver, "cells" | "nativeRecords">): boolean {
  return driver.cells !== undefined && driver.nativeRecords === true;
}

/** The stored fence info of a tracked request without `fenceInfo` (most of them: the default). */
const NO_FENCE_INFO = "null";

/** The request of a default acquisition: tracked, with no takeover option. */
const PLAIN: TakeoverRequest = Object.freeze({
  fenceInfo: NO_FENCE_INFO,
  onTakeover: undefined,
  lockDelayMs: 0,
  explicit: false,
});

/** The last plain record text made, and for whom (see {@link recordText}). @internal */
export interface RecordTextCache {
  memberId: string;
  sessionId: string;
  text: string;
}

/**
 * A holding's record before {@link sealRecord} adds its token and grant time: member,
 * session, fence info, lock delay. Every default acquisition of a session writes the same
 * text: kept in `cache` (one per coordinator: coordinators of one process take turns) and
 * made once, not per grant. @internal
 */
export function recordText(
  memberId: string,
  sessionId: string,
  request: TakeoverRequest,
  cache: RecordTextCache = lastPlain,
): string {
  const plain = request.fenceInfo === NO_FENCE_INFO && request.lockDelayMs === 0;
  if (plain && cache.sessionId === sessionId && cache.memberId === memberId) return cache.text;
  const text = `{"m":${JSON.stringify(memberId)},"s":${JSON.stringify(sessionId)},"f":${request.fenceInfo},"d":${request.lockDelayMs}}`;
  if (plain) {
    cache.memberId = memberId;
    cache.sessionId = sessionId;
    cache.text = text;
  }
  return text;
}

const lastPlain: RecordTextCache = { memberId: "", sessionId: "", text: "" };

/** What a tracked holding keeps to delete its record on release. @internal */
export interface TakeoverClaim {
  readonly cells: DriverCells;
  readonly version: bigint;
  readonly explicit: boolean;
  /**
   * The record's exact text where the core wrote it (or found it), which names this
   * holding's token: the delete is conditioned on it too, since a backend that forgets a
   * deleted key (MySQL drops its row) starts a re-created key's versions again, and a
   * successor's record may then have the version this holding claimed.
   */
  readonly value?: string | undefined;
}

/** The stored record (short keys: it is written with every tracked grant). */
interface StoredTakeover {
  readonly m: string;
  readonly s: string;
  readonly t: string;
  readonly at: number;
  readonly f: unknown;
  readonly d: number;
  /** Epoch ms until which the lock is delayed, once a successor started the delay. */
  readonly u?: number;
}

/**
 * Validates the takeover options of an acquisition; `undefined` when it does not track.
 * @internal
 */
export function checkTakeover(
  core: CoordinatorCore,
  options: TakeoverOptions,
  mode: LockMode,
): TakeoverRequest | undefined {
  const { fenceInfo, onTakeover, lockDelayMs, takeover } = options;
  if (takeover !== undefined && typeof takeover !== "boolean") {
    throw new InvalidArgumentError(`takeover must be a boolean, got ${describe(takeover)}`);
  }
  if (onTakeover !== undefined && typeof onTakeover !== "function") {
    throw new InvalidArgumentError(`onTakeover must be a function, got ${describe(onTakeover)}`);
  }
  if (
    lockDelayMs !== undefined &&
    (typeof lockDelayMs !== "number" ||
      !Number.isInteger(lockDelayMs) ||
      lockDelayMs < 0 ||
      lockDelayMs > MAX_LOCK_DELAY_MS)
  ) {
    throw new InvalidArgumentError(
      `lockDelayMs must be an integer number of milliseconds from 0 to ${MAX_LOCK_DELAY_MS}, got ${describe(lockDelayMs)}`,
    );
  }
  // The default, or only `takeover: false`: nothing more to check or to build.
  if (takeover !== true && fenceInfo === undefined && onTakeover === undefined && lockDelayMs === undefined) {
    // By default only where the record travels with the grant: the fallback's cell writes
    // cost round trips (1 to 4 more per acquisition, docs/takeover.md) nobody asked for.
    return takeover === undefined && mode === "exclusive" && tracksByDefault(core.driver) ? PLAIN : undefined;
  }
  const text = fenceInfo === undefined ? NO_FENCE_INFO : canonicalJson("fenceInfo", fenceInfo, MAX_FENCE_INFO_BYTES);
  const given = [
    ["fenceInfo", fenceInfo],
    ["onTakeover", onTakeover],
    ["lockDelayMs", lockDelayMs],
  ].filter(([, v]) => v !== undefined);
  if (takeover === false && given.length > 0) {
    // It would be silently dropped: the hook never run, the fence info never stored.
    throw new InvalidArgumentError(
      `takeover: false cannot be combined with ${given.map(([k]) => k).join(", ")}: they need takeover tracking (omit takeover or set it to true)`,
    );
  }
  // Tracking is the default for exclusive locks; asking for it is what makes a shared
  // lock or a backend without records an error rather than untracked.
  if (takeover === false) return undefined;
  const explicit = takeover === true || given.length > 0;
  if (mode !== "exclusive") {
    if (!explicit) return undefined;
    throw new InvalidArgumentError(
      "takeover tracking (fenceInfo, onTakeover, lockDelayMs, takeover: true) is for exclusive locks only",
    );
  }
  if (!core.driver.cells) {
    if (!explicit) return undefined;
    throw new UnsupportedError(`the ${core.backend} backend has no durable records (cells) yet, so no takeover`, {
      backend: core.backend,
    });
  }
  return { fenceInfo: text, onTakeover, lockDelayMs: lockDelayMs ?? 0, explicit };
}

/** The takeover a record describes, or `null` for none (absent or deleted). @internal */
export function parseTakeover(entry: CellEntry | null): (Takeover & { readonly delayedUntil: number | null }) | null {
  if (!entry || entry.value === null) return null;
  const r = JSON.parse(entry.value) as StoredTakeover;
  return {
    memberId: r.m,
    sessionId: r.s,
    token: BigInt(r.t),
    since: r.at,
    fenceInfo: r.f,
    lockDelayMs: r.d,
    delayedUntil: r.u ?? null,
  };
}

/** What a claim made: the record its clean release deletes, and the takeover it found. @internal */
export interface Claimed {
  readonly claim: TakeoverClaim;
  readonly takeover: Takeover | null;
}

/**
 * {@link claim}, settled no later than `stop` aborts (then with its reason): a cell call
 * that is never answered (a backend cut off, a client that dropped the request) cannot hold
 * an acquisition past its deadline, cancellation or loss. A record written after that
 * belongs to a grant given back unclaimed, so it is deleted once its answer comes, unless
 * the grant was lost (`lost`: a lost holding keeps its record, for the next holder) or the
 * write replaced a lost holding's record (a takeover found): deleting it would erase that
 * holding's record too, and the next holder would be told of no takeover at all. It stays,
 * naming this grant: a takeover of a holding nobody was handed, the cautious side.
 * @internal
 */
export function claimWithin(call: ClaimCall, lost: AbortSignal): Promise<Claimed | "delayed"> {
  const { grant, stop } = call;
  const running = claim(call);
  return raceSignal(running, stop).catch((error: unknown) => {
    running.then(
      (late) => {
        if (late === "delayed" || late.takeover !== null || lost.aborted) return;
        unclaim(grant.name, late.claim).catch(() => {});
      },
      () => {},
    );
    throw error;
  });
}

/** What one claim is given (see {@link claim}). @internal */
export interface ClaimCall {
  readonly core: CoordinatorCore;
  readonly grant: ClaimTarget;
  readonly request: TakeoverRequest;
  /** What the driver's grant says of a record it wrote natively. */
  readonly native: Pick<DriverGrant, "recordVersion" | "previousRecord">;
  /** Whether the caller waits out a lock delay (else `"delayed"`). */
  readonly wait: boolean;
  readonly stop: AbortSignal;
  /** The grants the same blocking wait gave back after failed claims (see {@link AbandonedClaims}). */
  readonly abandoned?: AbandonedClaims | undefined;
}

/**
 * What one blocking wait's failed claims left: the tokens of the grants it gave back, and
 * the lost holding the first claim found. A failed claim's write may have landed (its answer
 * was lost), so the next grant can find a record naming a grant of this very wait, which
 * was never handed out: the takeover to report is then the one that grant found.
 * @internal
 */
export interface AbandonedClaims {
  readonly tokens: Set<bigint>;
  /** The lost holding found by the first claim that read a record; `undefined` before one did. */
  found: (Takeover & { readonly delayedUntil: number | null }) | null | undefined;
}

/** What a grant being claimed is. */
export interface ClaimTarget {
  readonly name: string;
  readonly token: bigint;
  readonly acquiredAt: number;
  readonly sessionId: string;
}

/**
 * Claims a fresh grant for a tracked acquisition: finds the previous record, waits out its
 * lock delay (or answers `"delayed"` when the caller does not wait), runs the hook, then
 * writes this holding's record fenced by its token. `stop` aborts on cancellation, timeout
 * and the loss of the grant: the delay and the hook then end at once with its reason (even
 * a hook that ignores its signal); a cell call under way is not cut here, as the caller
 * races the whole claim with `stop` ({@link claimWithin}). Rejects with
 * {@link FenceFailedError} when the hook throws. The caller releases the grant on any
 * outcome but success.
 * @internal
 */
export async function claim({
  core,
  grant,
  request,
  native,
  wait,
  stop,
  abandoned,
}: ClaimCall): Promise<Claimed | "delayed"> {
  const cells = core.driver.cells as DriverCells;
  const { explicit } = request;
  // Written by the driver with the grant: the lock was free or cleanly released.
  if (native.recordVersion !== undefined)
    return { claim: { cells, version: native.recordVersion, explicit }, takeover: null };
  const text = sealRecord(recordText(core.memberId, grant.sessionId, request), grant.token, grant.acquiredAt);
  const superseded = () =>
    new LockLostError(`lock "${grant.name}" was taken over while it was being claimed`, { backend: core.backend });
  let current = native.previousRecord;
  if (current === undefined) {
    // Without native records, the common case (free or cleanly released) costs one write:
    // created only if no record is there. A refusal carries the record found. Not fenced:
    // a fence would outlive the record's deletion (a tombstone per lock name ever used);
    // the token in the record fences the overwrite below instead.
    const created = await cells.put(TAKEOVER_SPACE, grant.name, text, { ifVersion: 0n });
    if (created.ok) return { claim: { cells, version: created.version, explicit, value: text }, takeover: null };
    if (created.reason === "fenced" || !created.current) throw superseded();
    current = created.current;
  }
  const found = parseTakeover(current);
  // Our own record (a driver wrote it with the grant but could not say so: a retried
  // script's answer); tokens are unique per lock.
  if (found && found.token === grant.token)
    return { claim: { cells, version: current.version, explicit, value: current.value ?? undefined }, takeover: null };
  // A record above our token was written after our grant: we were superseded.
  if (found && found.token > grant.token) throw superseded();
  // Written by a grant this wait gave back (never handed out): not a takeover of its own;
  // the holding that grant found, whose delay it already waited out, is the one to report.
  const mine = found !== null && abandoned?.tokens.has(found.token) === true;
  const previous = mine ? (abandoned?.found ?? null) : found;
  if (abandoned && !mine && abandoned.found === undefined) abandoned.found = found;
  if (!mine && previous && previous.lockDelayMs > 0) {
    let until = previous.delayedUntil;
    if (until === null) {
      until = Date.now() + previous.lockDelayMs;
      // Stored so that inspect() shows it and a successor of ours keeps the same deadline.
      const stored = { ...(JSON.parse(current.value as string) as StoredTakeover), u: until };
      await cells.put(TAKEOVER_SPACE, grant.name, JSON.stringify(stored), { ifVersion: current.version });
    }
    const left = until - Date.now();
    if (left > 0) {
      if (!wait) return "delayed";
      await sleep(left, stop);
    }
  }
  const takeover = previous && withoutDelay(previous);
  if (previous && takeover && request.onTakeover) {
    const hook = request.onTakeover;
    if (stop.aborted) throw stop.reason;
    try {
      // Settles no later than `stop`: a hook that ignores its signal cannot hold acquire()
      // past its timeout; what it still does afterwards is its own.
      await raceSignal(
        Promise.resolve().then(() => hook(takeover, stop)),
        stop,
      );
    } catch (error) {
      if (stop.aborted) throw stop.reason;
      throw new FenceFailedError(
        `fencing the previous holder of lock "${grant.name}" (member ${previous.memberId}, token ${previous.token}) failed: ${error instanceof Error ? error.message : String(error)}; the lock was released and its takeover record kept`,
        grant.name,
        previous.token,
        { backend: core.backend, cause: error },
      );
    }
  }
  if (stop.aborted) throw stop.reason;
  const written = await cells.put(TAKEOVER_SPACE, grant.name, text, { fence: grant.token });
  if (!written.ok) throw superseded();
  return { claim: { cells, version: written.version, explicit, value: text }, takeover };
}

function withoutDelay(record: Takeover & { readonly delayedUntil: number | null }): Takeover {
  const { delayedUntil: _, ...takeover } = record;
  return takeover;
}

/**
 * Deletes a clean holding's record: only its own (a successor's stays), and with no
 * tombstone where the driver can drop it (one per lock name ever used would accumulate).
 * @internal
 */
export async function unclaim(name: string, claimed: TakeoverClaim): Promise<void> {
  const { version: ifVersion, value: ifValue } = claimed;
  await claimed.cells.delete(TAKEOVER_SPACE, name, { ifVersion, ifValue, forget: true });
}
