/**
 * Issue 6's targets and issue 17's (closer to each floor, in the tail and in throughput),
 * each as measured / target, from the results of this run only.
 */
import { fmtNs, fmtRatio } from "./stats.js";
import type { Results, Target } from "./types.js";

const PEERS: Record<string, readonly string[]> = {
  memory: ["async-mutex"],
  file: ["proper-lockfile"],
  etcd: ["etcd3-lock"],
  postgres: ["advisory-lock"],
  redis: ["redlock", "redis-semaphore"],
};
const FLOORS: Record<string, { id: string; max: number } | undefined> = {
  etcd: { id: "raw-etcd", max: 1.2 },
  postgres: { id: "raw-pg", max: 1.5 },
  redis: { id: "raw-redis", max: 1.3 },
  zookeeper: { id: "raw-zookeeper", max: 1.2 },
  mysql: { id: "raw-mysql", max: 1.5 },
};
const POLLING_PEERS: Record<string, readonly string[]> = {
  file: ["proper-lockfile"],
  redis: ["redlock", "redis-semaphore"],
};

export function computeTargets(r: Results): Target[] {
  const out: Target[] = [];
  const unc = (impl: string) => r.uncontended.find((u) => u.impl === impl && u.stats)?.stats ?? null;
  for (const backend of r.meta.backends) {
    const baton = unc(`baton-${backend}`);
    const floor = FLOORS[backend];
    if (floor) {
      const raw = unc(floor.id);
      const ratio = baton && raw ? baton.p50 / raw.p50 : Number.NaN;
      out.push({
        what: `uncontended ${backend}: Baton / raw floor (p50)`,
        measured: baton && raw ? `${fmtRatio(ratio)} (${fmtNs(baton.p50)} vs ${fmtNs(raw.p50)})` : "not measured",
        target: `<= ${floor.max}x`,
        met: Number.isFinite(ratio) ? ratio <= floor.max : null,
        note: "",
      });
    }
    for (const peerId of PEERS[backend] ?? []) {
      const peer = unc(peerId);
      const ratio = baton && peer ? peer.p50 / baton.p50 : Number.NaN;
      out.push({
        what: `uncontended ${backend}: faster than ${peerId} (p50)`,
        measured:
          baton && peer
            ? `${fmtNs(baton.p50)} vs ${fmtNs(peer.p50)}: Baton ${ratio >= 1 ? `${fmtRatio(ratio)} faster` : `${fmtRatio(1 / ratio)} slower`}`
            : "not measured",
        target: "Baton faster",
        met: Number.isFinite(ratio) ? ratio > 1 : null,
        note: "",
      });
    }
    for (const h of r.handoff.filter((x) => x.impl === `baton-${backend}` && x.handoff)) {
      const limit = baton ? 2 * baton.p50 : Number.NaN;
      out.push({
        what: `handoff p50 ${backend}, ${h.waiters} waiters: <= 2x Baton's uncontended acquire+release`,
        measured: `${fmtNs(h.handoff!.p50)} (${fmtRatio(h.handoff!.p50 / (baton?.p50 ?? Number.NaN))} of ${fmtNs(baton?.p50 ?? Number.NaN)})`,
        target: `<= ${fmtNs(limit)}`,
        met: Number.isFinite(limit) ? h.handoff!.p50 <= limit : null,
        note: "",
      });
      for (const pollerId of POLLING_PEERS[backend] ?? []) {
        const poller = r.handoff.find((x) => x.impl === pollerId && x.waiters === h.waiters && x.handoff);
        const better = poller ? poller.handoff!.p50 / h.handoff!.p50 : Number.NaN;
        out.push({
          what: `handoff p50 ${backend}, ${h.waiters} waiters: >= 10x better than ${pollerId}`,
          measured: poller
            ? `${fmtRatio(better)} (${fmtNs(h.handoff!.p50)} vs ${fmtNs(poller.handoff!.p50)})`
            : "not measured",
          target: ">= 10x",
          met: Number.isFinite(better) ? better >= 10 : null,
          note: "",
        });
      }
    }
  }
  for (const f of r.failover.filter((x) => x.impl.startsWith("baton-"))) {
    const ttl = f.ttlMs ?? 10_000;
    const limitMs =
      f.backend === "file"
        ? 50
        : f.backend === "postgres"
          ? 1000
          : f.backend === "etcd" || f.backend === "redis" || f.backend === "zookeeper"
            ? ttl + 1000
            : Number.NaN;
    out.push({
      what: `crash failover ${f.backend}${f.backend === "file" ? "" : `, TTL ${ttl} ms${f.ttlMs === null ? " (default)" : ""}`} (p50 of ${f.runs.length})`,
      measured: f.runs.length ? fmtNs(f.p50) : `not measured${f.error ? `: ${f.error}` : ""}`,
      target: `< ${fmtNs(limitMs * 1e6)}`,
      met: f.runs.length && Number.isFinite(limitMs) ? f.p50 < limitMs * 1e6 : null,
      note: "",
    });
  }
  out.push(...closerToFloors(r));
  return out;
}

/** Uncontended p50 of Baton against a floor or peer: at most `max` times it (issue 17). */
const UNCONTENDED_VS: Record<string, { id: string; max: number }> = {
  memory: { id: "async-mutex", max: 2 },
  file: { id: "raw-ofd", max: 3 },
};
/** Handoff p50 (8 waiters) against a raw blocking floor: at most `max` times it. */
const HANDOFF_VS: Record<string, { id: string; max: number }> = {
  file: { id: "raw-ofd", max: 2 },
  postgres: { id: "raw-pg", max: 1.3 },
};
/** Handoff p99 (8 waiters): at most `maxMs`, and below the poller's p99. */
const HANDOFF_TAIL: Record<string, { maxMs: number; poller: string }> = {
  etcd: { maxMs: 15, poller: "etcd3-lock" },
};
/** Throughput across 1000 names: at least `min` times the floor's. */
const KEYSPACE_VS: Record<string, { id: string; min: number }> = {
  memory: { id: "async-mutex", min: 0.3 },
  file: { id: "raw-ofd", min: 0.3 },
  etcd: { id: "raw-etcd", min: 0.8 },
  postgres: { id: "raw-pg", min: 0.6 },
};

function closerToFloors(r: Results): Target[] {
  const out: Target[] = [];
  const row = (what: string, measured: string, target: string, met: boolean | null): Target => ({
    what,
    measured,
    target,
    met,
    note: "issue 17",
  });
  const unc = (impl: string) => r.uncontended.find((u) => u.impl === impl && u.stats)?.stats ?? null;
  const hand = (impl: string) =>
    r.handoff.find((h) => h.impl === impl && h.waiters === 8 && h.handoff)?.handoff ?? null;
  const keys = (impl: string) => r.keyspace.find((k) => k.impl === impl && Number.isFinite(k.opsPerSec)) ?? null;
  for (const backend of r.meta.backends) {
    const u = UNCONTENDED_VS[backend];
    if (u) {
      const baton = unc(`baton-${backend}`);
      const base = unc(u.id);
      const ratio = baton && base ? baton.p50 / base.p50 : Number.NaN;
      out.push(
        row(
          `uncontended ${backend}: Baton / ${u.id} (p50)`,
          baton && base ? `${fmtRatio(ratio)} (${fmtNs(baton.p50)} vs ${fmtNs(base.p50)})` : "not measured",
          `<= ${u.max}x`,
          Number.isFinite(ratio) ? ratio <= u.max : null,
        ),
      );
    }
    const h = HANDOFF_VS[backend];
    if (h) {
      const baton = hand(`baton-${backend}`);
      const base = hand(h.id);
      const ratio = baton && base ? baton.p50 / base.p50 : Number.NaN;
      out.push(
        row(
          `handoff p50 ${backend}, 8 waiters: Baton / ${h.id}`,
          baton && base ? `${fmtRatio(ratio)} (${fmtNs(baton.p50)} vs ${fmtNs(base.p50)})` : "not measured",
          `<= ${h.max}x`,
          Number.isFinite(ratio) ? ratio <= h.max : null,
        ),
      );
    }
    const t = HANDOFF_TAIL[backend];
    if (t) {
      const baton = hand(`baton-${backend}`);
      const poller = hand(t.poller);
      out.push(
        row(
          `handoff p99 ${backend}, 8 waiters: <= ${t.maxMs} ms and below ${t.poller}'s p99`,
          baton
            ? `${fmtNs(baton.p99)} (max ${fmtNs(baton.max)})${poller ? ` vs ${fmtNs(poller.p99)}` : ""}`
            : "not measured",
          `<= ${t.maxMs} ms, < ${t.poller}`,
          baton && poller ? baton.p99 <= t.maxMs * 1e6 && baton.p99 < poller.p99 : null,
        ),
      );
    }
    const k = KEYSPACE_VS[backend];
    if (k) {
      const baton = keys(`baton-${backend}`);
      const base = keys(k.id);
      const ratio = baton && base ? baton.opsPerSec / base.opsPerSec : Number.NaN;
      out.push(
        row(
          `throughput ${backend}, ${baton?.processes ?? "?"} processes x ${baton ? baton.clients / baton.processes : "?"} loops over ${baton?.names ?? "?"} names: Baton / ${k.id}`,
          baton && base
            ? `${fmtRatio(ratio)} (${baton.opsPerSec.toFixed(0)}/s vs ${base.opsPerSec.toFixed(0)}/s)`
            : "not measured",
          `>= ${k.min}x`,
          Number.isFinite(ratio) ? ratio >= k.min : null,
        ),
      );
    }
  }
  return out;
}
