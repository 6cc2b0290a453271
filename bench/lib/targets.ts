/** Issue 6's targets, each as measured / target, from the results of this run only. */
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
  return out;
}
