/**
 * The checker: reads a whole history and says whether it is one a correct lock service
 * with fencing could have produced. Every rule can fail (the negative control proves it):
 *
 * - exclusive-exclusive and exclusive-shared sections on one name never overlap, unless the
 *   older holder was hit by a fault before the newer one began, the newer token is higher,
 *   and every write the older one made after the newer one's first register op was refused;
 * - a semaphore never has more than `limit` sections at once, under the same exception;
 * - no token is granted twice per name; a conflicting section begun later has a higher token;
 * - the register refused exactly the stale writes (a lower token than one already seen);
 * - progress: grants went on during every pause and cut (elsewhere), and after every fault;
 * - no client crashed, and nothing was left held at the end.
 *
 * On a backend the library does not declare partition-safe (Redis Sentinel), an overlap
 * shortly after a member fault is the split brain of asynchronous replication: it is
 * explained only if the newer token is higher and every late write was refused, and it is
 * reported apart (`split-brain` in the figures, counted in the verdict), never folded in.
 */
import type { Fault, FaultKind, History, RegisterOp, Section } from "./history.js";

/** An overlap the checker accepted, and why. */
export interface ExplainedOverlap {
  readonly name: string;
  /** `overlap`: both held at once; `late-begin`: a lower token began later; `semaphore`: over the limit. */
  readonly kind: string;
  readonly older: { pid: number; token: string; mode: string };
  readonly newer: { pid: number; token: string; mode: string };
  readonly overlapMs: number;
  readonly fault: FaultKind;
  /** Explained as a split brain after a member fault: allowed only when not partition-safe. */
  readonly splitBrain?: boolean;
  readonly lateWritesRejected: number;
  /**
   * How long before the newer holder's begin the older holder reported its signal aborted
   * (negative: after); absent if it never reported it (a paused process cannot).
   */
  readonly signalLeadMs: number | undefined;
}

/** Explained overlaps for one kind of fault. */
export interface OverlapFigures {
  pairs: number;
  /** Distinct older sections (one paused holder overlaps every holder after it). */
  olderSections: number;
  /** Of the pairs whose older holder reported its signal aborting: how long before the newer began. */
  signalLeadMs: { min: number; median: number; samples: number; late: number } | undefined;
}

/** Figures for one kind of fault. */
export interface FaultFigures {
  count: number;
  /** Median and max time from the fault's start to a grant of the victim's name to another client. */
  takeoverMs: Spread | undefined;
  /**
   * Median and max time from the fault's end (SIGCONT, heal, server back) to the hit client's
   * own next grant (any client's after a server fault). None for kills: see `takeoverMs`.
   */
  recoveryMs: Spread | undefined;
  /** Cuts: how long before the takeover the cut holder reported its signal aborted. */
  signalLeadMs?: Spread | undefined;
  /** Grants (by other clients) while the fault lasted. */
  grantsDuring: number;
  /** Partitions: from the split to the cut-off holder's signal aborting. */
  lossSignalMs?: Spread | undefined;
  /** Partitions: grants to clients cut off from the quorum while the split lasted (must be 0). */
  minorityGrants?: number;
}

/** The checker's verdict and figures; written as the JSON report. */
export interface Report {
  readonly ok: boolean;
  readonly verdict: string;
  readonly backend: string;
  readonly seed: number;
  readonly noop: boolean;
  readonly runMs: number;
  readonly sections: Record<string, number>;
  readonly faults: Partial<Record<FaultKind, FaultFigures>>;
  readonly overlapsExplained: number;
  /** Of those, split-brain pairs (a backend not declared partition-safe; see the module doc). */
  readonly splitBrainOverlaps: number;
  /** Explained overlaps by the fault that explains them: pairs, and distinct older sections. */
  readonly overlapsByFault: Record<string, OverlapFigures>;
  readonly overlaps: readonly ExplainedOverlap[];
  readonly writes: { total: number; stale: number; staleRejected: number };
  readonly clientErrors: Record<string, number>;
  readonly crashes: number;
  /** The runner's own stalls (see History.stalls): the figures around them are the machine's. */
  readonly runnerStalls: { count: number; maxMs: number };
  readonly leftHeld: readonly string[];
  /** How many violations of each rule (the first word of each violation). */
  readonly violationCounts: Record<string, number>;
  /** The first violations, in full. */
  readonly violations: readonly string[];
}

const MAX_LISTED = 50;
/** Messages of two processes can reach the runner out of order by a few milliseconds. */
const SIGNAL_TOLERANCE_MS = 100;
/** How long after a SIGCONT a grant made before the SIGSTOP may still be reported. */
const PAUSE_REPORT_WINDOW_MS = 1000;
/**
 * How long after a member fault healed the old primary may still grant (plus one TTL, for
 * the sessions it granted): until a sentinel reads its INFO again, every 10 s, and demotes
 * it. A client still connected to it (one paused through the failover) is granted there.
 */
const SPLIT_BRAIN_REACH_MS = 10_000;

const conflicts = (a: Section, b: Section): boolean =>
  a.mode !== "semaphore" && b.mode !== "semaphore" && (a.mode === "exclusive" || b.mode === "exclusive");

const end = (s: Section): number => s.end ?? Number.POSITIVE_INFINITY;

/** Milliseconds over a set of samples. */
export interface Spread {
  min: number;
  median: number;
  max: number;
  samples: number;
}

function stats(samples: number[]): Spread | undefined {
  if (samples.length === 0) return undefined;
  const sorted = [...samples].sort((a, b) => a - b);
  const round = (n: number) => Math.round(n);
  return {
    min: round(sorted[0] ?? 0),
    median: round(sorted[Math.floor(sorted.length / 2)] ?? 0),
    max: round(sorted.at(-1) ?? 0),
    samples: samples.length,
  };
}

/** Checks `history`; `ok` is false as soon as any rule is broken. */
export function check(history: History): Report {
  const violations: string[] = [];
  const violate = (text: string) => violations.push(text);
  const overlaps: ExplainedOverlap[] = [];
  const opsBySection = new Map<number, RegisterOp[]>();
  for (const op of history.ops) {
    const list = opsBySection.get(op.section) ?? [];
    list.push(op);
    opsBySection.set(op.section, list);
  }
  const firstOpAt = (s: Section) => opsBySection.get(s.id)?.[0]?.at ?? s.start;
  const describe = (s: Section) => `${s.mode} ${s.name} token ${s.token} pid ${s.pid} [${s.start}, ${s.end}]`;

  const byName = new Map<string, Section[]>();
  for (const s of history.sections) {
    const list = byName.get(s.name) ?? [];
    list.push(s);
    byName.set(s.name, list);
  }

  /**
   * Why `older` (the lower token) and `newer` may both have held: a fault hit the older
   * holder's process (or the server) between the earlier begin and the later one, and every
   * write it made after the newer holder reached the register was refused.
   */
  const explain = (older: Section, newer: Section): { fault: Fault; late: number; splitBrain: boolean } | string => {
    const from = Math.min(older.start, newer.start);
    const to = Math.max(older.start, newer.start);
    // A session starved of keep-alives during a split can still expire up to one TTL after
    // the heal: a partition reaches that far (and then only with the signal first, below).
    const reach = (f: Fault) =>
      f.kind === "partition" || f.kind === "member" ? f.until + (history.ttlMs ?? 0) : f.until;
    // A member fault hits no holder: it explains an overlap only once the older holder's
    // signal told it it lost (its session ran out during the fault), as with a partition;
    // else only a backend not declared partition-safe may split its brain over it (below).
    const toldFirst = (older.lostAt ?? Number.POSITIVE_INFINITY) <= newer.start + SIGNAL_TOLERANCE_MS;
    const direct =
      history.faults.find(
        (f) =>
          (f.kind !== "member" || toldFirst) &&
          (f.pid === undefined || f.pid === older.pid) &&
          f.at <= to &&
          reach(f) >= from &&
          f.at <= end(older),
      ) ?? pausedBeforeBegin(older, newer);
    // Older has the lower token (callers see to it), so the fencing token still orders them.
    const split = direct === undefined ? splitBrain(older, newer) : undefined;
    const fault = direct ?? split;
    if (fault === undefined) return "the older holder was not faulted";
    // A partitioned holder runs on: it may overlap only once its signal told it it lost.
    if (fault.kind === "partition" && (older.lostAt ?? Number.POSITIVE_INFINITY) > newer.start + SIGNAL_TOLERANCE_MS) {
      return `the partitioned older holder ${older.lostAt === undefined ? "never saw its signal abort" : `saw its signal abort only at ${older.lostAt}`}`;
    }
    const after = firstOpAt(newer);
    const late = (opsBySection.get(older.id) ?? []).filter((op) => op.kind === "write" && op.at > after);
    if (late.some((op) => op.accepted)) return "a late write of the older holder was accepted";
    return { fault, late: late.length, splitBrain: split !== undefined };
  };
  /**
   * A holder granted just before a pause reports its grant only after the resume, and its
   * lease may have run out meanwhile: its section begins after the fault ended. That fault
   * explains an overlap only if the holder's signal told it it lost before the newer grant
   * (a 10-minute etcd-cluster run showed it: pause ended 35 ms before the begin, signal 3 ms
   * after it, every late write refused).
   */
  const pausedBeforeBegin = (older: Section, newer: Section): Fault | undefined => {
    if (older.lostAt === undefined || older.lostAt > newer.start + SIGNAL_TOLERANCE_MS) return undefined;
    return history.faults.findLast(
      (f) =>
        f.kind === "pause" &&
        f.pid === older.pid &&
        f.until <= older.start &&
        f.until >= older.start - PAUSE_REPORT_WINDOW_MS,
    );
  };
  /**
   * On a backend not declared partition-safe, the member fault (a cut primary or sentinel)
   * that healed at most SPLIT_BRAIN_REACH_MS and a TTL before the two sections met: the old
   * primary may grant until it is demoted, beside the promoted replica.
   */
  const splitBrain = (older: Section, newer: Section): Fault | undefined => {
    if (history.partitionSafe !== false) return undefined;
    const from = Math.max(older.start, newer.start);
    const reach = SPLIT_BRAIN_REACH_MS + (history.ttlMs ?? 0);
    return history.faults.findLast(
      (f) => f.kind === "member" && f.pid === undefined && f.at <= from && f.until + reach >= from,
    );
  };
  const record = (
    name: string,
    older: Section,
    newer: Section,
    why: { fault: Fault; late: number; splitBrain?: boolean },
    kind: string,
  ) =>
    overlaps.push({
      name,
      kind,
      older: { pid: older.pid, token: older.token, mode: older.mode },
      newer: { pid: newer.pid, token: newer.token, mode: newer.mode },
      overlapMs: Math.max(0, Math.round(Math.min(end(older), end(newer)) - Math.max(older.start, newer.start))),
      fault: why.fault.kind,
      ...(why.splitBrain === true ? { splitBrain: true } : {}),
      lateWritesRejected: why.late,
      signalLeadMs: older.lostAt === undefined ? undefined : Math.round(newer.start - older.lostAt),
    });

  for (const [name, sections] of byName) {
    sections.sort((a, b) => a.start - b.start);
    const seen = new Set<string>();
    for (const s of sections) {
      if (seen.has(s.token)) violate(`token ${s.token} of ${name} granted twice (again to pid ${s.pid} at ${s.start})`);
      seen.add(s.token);
    }
    let active: Section[] = [];
    // The sections with the highest token so far: any, and exclusive only.
    let topAny: Section | undefined;
    let topExclusive: Section | undefined;
    for (const y of sections) {
      active = active.filter((x) => end(x) > y.start);
      const token = BigInt(y.token);
      if (y.mode !== "semaphore") {
        // Grant order: a conflicting section begun later has a higher token, unless this one
        // was granted earlier and its holder was stopped before it could say so.
        const top = y.mode === "exclusive" ? topAny : topExclusive;
        if (top !== undefined && token < BigInt(top.token)) {
          const why = explain(y, top);
          if (typeof why === "string") violate(`order: ${describe(y)} began after ${describe(top)}: ${why}`);
          else record(name, y, top, why, "late-begin");
        }
        if (topAny === undefined || token > BigInt(topAny.token)) topAny = y;
        if (y.mode === "exclusive" && (topExclusive === undefined || token > BigInt(topExclusive.token)))
          topExclusive = y;
        for (const x of active) {
          if (!conflicts(x, y) || x.token === y.token) continue;
          const [older, newer] = BigInt(x.token) < token ? [x, y] : [y, x];
          const why = explain(older, newer);
          if (typeof why === "string") violate(`overlap: ${describe(x)} and ${describe(y)}: ${why}`);
          else record(name, older, newer, why, "overlap");
        }
      } else {
        const others = active.filter((x) => x.mode === "semaphore");
        if (others.length + 1 > history.semaphoreLimit) {
          const from = Math.min(...others.map((x) => x.start));
          const faultedOf = (s: Section, since: number) =>
            history.faults.find((f) => (f.pid === undefined || f.pid === s.pid) && f.at <= y.start && f.until >= since);
          const faulted = [
            ...others.map((x) => [x, faultedOf(x, x.start)] as const),
            [y, faultedOf(y, from)] as const,
          ].filter(([, f]) => f !== undefined);
          if (others.length + 1 - faulted.length > history.semaphoreLimit) {
            violate(
              `semaphore ${name}: ${others.length + 1} permits held at ${y.start} (limit ${history.semaphoreLimit}): ${[...others, y].map(describe).join("; ")}`,
            );
          } else {
            const [x, fault] = faulted[0] as readonly [Section, Fault];
            record(name, x, x === y ? (others[0] as Section) : y, { fault, late: 0 }, "semaphore");
          }
        }
      }
      active.push(y);
    }
  }

  // The register, recomputed: a write is stale iff a higher token already reached it.
  const highest = new Map<string, bigint>();
  let stale = 0;
  let staleRejected = 0;
  let writes = 0;
  for (const op of history.ops) {
    const token = BigInt(op.token);
    const seen = highest.get(op.name) ?? -1n;
    if (op.kind === "write") {
      writes++;
      const isStale = token < seen;
      if (isStale) stale++;
      if (isStale && op.accepted)
        violate(`stale write accepted: ${op.name} token ${op.token} at ${op.at} after ${seen}`);
      else if (isStale) staleRejected++;
      else if (!op.accepted) violate(`fresh write refused: ${op.name} token ${op.token} at ${op.at}`);
    }
    if (token > seen) highest.set(op.name, token);
  }

  // Progress and recovery.
  const starts = [...history.sections].sort((a, b) => a.start - b.start);
  const faults: Partial<Record<FaultKind, FaultFigures>> = {};
  const samples = new Map<
    FaultKind,
    { takeover: number[]; recovery: number[]; signalLead: number[]; lossSignal: number[] }
  >();
  for (const f of history.faults) {
    const figures = (faults[f.kind] ??= { count: 0, takeoverMs: undefined, recoveryMs: undefined, grantsDuring: 0 });
    const sample = samples.get(f.kind) ?? { takeover: [], recovery: [], signalLead: [], lossSignal: [] };
    samples.set(f.kind, sample);
    figures.count++;
    const others = (s: Section) => f.pid === undefined || s.pid !== f.pid;
    const during = starts.filter((s) => s.start >= f.at && s.start <= f.until && others(s)).length;
    figures.grantsDuring += during;
    if ((f.kind === "pause" || f.kind === "cut") && during === 0) {
      violate(`no grant anywhere during ${f.kind} of pid ${f.pid} [${f.at}, ${f.until}]`);
    }
    const next = starts.find((s) => s.start > f.until);
    if (next === undefined) violate(`no grant after ${f.kind} at ${f.at} (healed ${f.until}) before the run ended`);
    // Recovery: a paused or cut client's own next grant after the heal; after a server
    // fault, anyone's; after a kill, the takeover below says it.
    const own = f.pid === undefined ? next : starts.find((s) => s.start > f.until && s.pid === f.pid);
    if (f.kind !== "kill" && own !== undefined) sample.recovery.push(own.start - f.until);
    if (f.minority === true) {
      // No quorum on its side: nothing can be granted there until the heal.
      const granted = starts.filter(
        (s) => s.pid === f.pid && s.start > f.at + SIGNAL_TOLERANCE_MS && s.start < f.until,
      );
      figures.minorityGrants = (figures.minorityGrants ?? 0) + granted.length;
      for (const s of granted)
        violate(`minority: ${describe(s)} was granted on the side without a quorum [${f.at}, ${f.until}]`);
    }
    // A partition hits every client; only those cut off were holding through it.
    if (f.name !== undefined && (f.kind !== "partition" || f.minority === true)) {
      // A cut holder's process runs on: its signal must abort before anyone else is granted
      // its lock in a conflicting mode (the README's first promise), give or take the IPC
      // race between processes. Another shared holder beside a shared one takes nothing over.
      const hit = history.sections.find(
        (s) => s.pid === f.pid && s.name === f.name && s.start <= f.at && end(s) >= f.at,
      );
      const takes = (s: Section) => hit === undefined || hit.mode === "semaphore" || conflicts(s, hit);
      const takeover = starts.find((s) => s.start > f.at && s.name === f.name && s.pid !== f.pid && takes(s));
      // A partition's takeover is a re-grant while the cut-off holder still held (it holds
      // on until the heal); a grant after its release at the heal is ordinary.
      const regrant =
        f.kind !== "partition" || (hit !== undefined && takeover !== undefined && takeover.start < end(hit));
      if (takeover !== undefined && regrant) sample.takeover.push(takeover.start - f.at);
      if (f.kind === "partition" && hit?.lostAt !== undefined) sample.lossSignal.push(hit.lostAt - f.at);
      const runsOn = f.kind === "cut" || f.kind === "partition";
      if (runsOn && hit !== undefined && takeover !== undefined && hit.mode !== "semaphore") {
        if (hit.lostAt !== undefined) sample.signalLead.push(takeover.start - hit.lostAt);
        const lead = hit.lostAt === undefined ? Number.NEGATIVE_INFINITY : takeover.start - hit.lostAt;
        if (takeover.start < end(hit) && lead < -SIGNAL_TOLERANCE_MS) {
          violate(
            `signal: ${describe(takeover)} was granted while the ${f.kind} holder ${describe(hit)} ${hit.lostAt === undefined ? "never saw its signal abort" : `saw its signal abort only at ${hit.lostAt}`}`,
          );
        }
      }
    }
  }
  for (const [kind, sample] of samples) {
    const figures = faults[kind] as FaultFigures;
    figures.takeoverMs = stats(sample.takeover);
    figures.recoveryMs = stats(sample.recovery);
    figures.signalLeadMs = stats(sample.signalLead);
    if (kind === "partition") figures.lossSignalMs = stats(sample.lossSignal);
  }
  const tail = starts.filter((s) => s.start > (history.faults.at(-1)?.until ?? history.startedAt));
  if (tail.length === 0) violate("no grant after the last fault");

  for (const c of history.crashes) violate(`client ${c.pid} ${c.description} at ${c.at}`);
  for (const h of history.leftHeld) violate(`still held after the run: ${h}`);

  const sections: Record<string, number> = { total: history.sections.length };
  for (const s of history.sections) sections[s.mode] = (sections[s.mode] ?? 0) + 1;
  const clientErrors: Record<string, number> = {};
  for (const e of history.errors) {
    const kind = /: (\w+Error)/.exec(e.message)?.[1] ?? "other";
    clientErrors[kind] = (clientErrors[kind] ?? 0) + 1;
  }
  const overlapsByFault: Record<string, OverlapFigures> = {};
  const olderSeen = new Map<string, Set<string>>();
  const leads = new Map<string, number[]>();
  for (const o of overlaps) {
    const key = o.splitBrain === true ? "split-brain" : o.fault;
    const entry = (overlapsByFault[key] ??= { pairs: 0, olderSections: 0, signalLeadMs: undefined });
    if (o.signalLeadMs !== undefined && o.kind === "overlap") {
      const list = leads.get(key) ?? [];
      list.push(o.signalLeadMs);
      leads.set(key, list);
    }
    entry.pairs++;
    const set = olderSeen.get(key) ?? new Set<string>();
    olderSeen.set(key, set);
    const older = `${o.name}:${o.older.token}`;
    if (!set.has(older)) entry.olderSections++;
    set.add(older);
  }
  for (const [kind, list] of leads) {
    const sorted = [...list].sort((a, b) => a - b);
    (overlapsByFault[kind] as OverlapFigures).signalLeadMs = {
      min: sorted[0] ?? 0,
      median: sorted[Math.floor(sorted.length / 2)] ?? 0,
      samples: sorted.length,
      late: sorted.filter((n) => n < 0).length,
    };
  }
  const violationCounts: Record<string, number> = {};
  for (const v of violations) {
    const rule = /^[a-z]+/.exec(v)?.[0] ?? "other";
    violationCounts[rule] = (violationCounts[rule] ?? 0) + 1;
  }
  const ok = violations.length === 0;
  const faultText = Object.entries(faults)
    .map(([k, v]) => `${k} ${v?.count}`)
    .join(", ");
  const splitBrainOverlaps = overlaps.filter((o) => o.splitBrain === true).length;
  const verdict =
    `chaos ${history.backend}${history.noop ? " (no-op locks)" : ""} seed ${history.seed}: ${ok ? "PASS" : "FAIL"}` +
    ` — ${history.sections.length} sections, faults: ${faultText || "none"}, ${overlaps.length} overlaps explained` +
    (splitBrainOverlaps > 0 ? ` (${splitBrainOverlaps} a split brain: not partition-safe)` : "") +
    "," +
    ` ${staleRejected}/${stale} stale writes rejected, ${violations.length} violations`;
  return {
    ok,
    verdict,
    backend: history.backend,
    seed: history.seed,
    noop: history.noop,
    runMs: Math.round(history.endedAt - history.startedAt),
    sections,
    faults,
    overlapsExplained: overlaps.length,
    splitBrainOverlaps,
    overlapsByFault,
    overlaps: overlaps.slice(0, MAX_LISTED),
    writes: { total: writes, stale, staleRejected },
    clientErrors,
    crashes: history.crashes.length,
    runnerStalls: {
      count: history.stalls?.length ?? 0,
      maxMs: Math.max(0, ...(history.stalls ?? []).map((x) => x.ms)),
    },
    leftHeld: history.leftHeld,
    violationCounts,
    violations: violations.slice(0, MAX_LISTED),
  };
}
