/**
 * The chaos suite in CI: a short randomized run per backend (real client processes, a
 * seeded nemesis of kills, pauses past the TTL, cut connections and server restarts) must
 * pass the checker; the same run with locking replaced by nothing must fail it; and the
 * checker's rules each fail on a history made to break them. The schedule varies with the
 * machine's timing; the verdict does not.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backendNamed, type ChaosBackend } from "./chaos/backends.js";
import { check, type Report } from "./chaos/checker.js";
import type { Fault, History, RegisterOp, Section } from "./chaos/history.js";
import { runChaos } from "./chaos/runner.js";

const summary = (r: Report) => `${r.verdict}\n${r.violations.slice(0, 5).join("\n")}`;

describe("chaos runs", () => {
  const runs: [backend: string, seconds: number, seed: number][] = [
    ["file", 8, 1],
    ["etcd", 8, 2],
    ["postgres", 8, 3],
    ["etcd-cluster", 8, 4],
    ["redis", 8, 5],
    ["mysql", 8, 6],
    ["zookeeper", 8, 7],
  ];
  for (const [name, seconds, seed] of runs) {
    it(`${name}: a ${seconds} s run under every nemesis that applies passes the checker`, async () => {
      const backend = backendNamed(name);
      const history = await runChaos({ backend, seconds, clients: 4, nemeses: backend.nemeses, seed, minFaults: 2 });
      const report = check(history);
      assert.ok(report.ok, summary(report));
      assert.ok(history.faults.length >= 2, `only ${history.faults.length} faults injected`);
      assert.ok((report.sections.exclusive ?? 0) > 50, `only ${report.sections.exclusive} exclusive sections`);
      assert.ok(
        (report.sections.shared ?? 0) > 5 && (report.sections.semaphore ?? 0) > 5,
        JSON.stringify(report.sections),
      );
    });
  }

  it("negative control: the same run with no-op locks fails the checker on overlaps", async () => {
    const history = await runChaos({
      backend: backendNamed("file"),
      seconds: 5,
      clients: 4,
      // No faults: every overlap is then unexplained.
      nemeses: [],
      seed: 1,
      noop: true,
    });
    const report = check(history);
    assert.equal(report.ok, false, report.verdict);
    const counts = report.violationCounts;
    assert.ok((counts.overlap ?? 0) > 0, `no overlap found: ${JSON.stringify(counts)}`);
    assert.ok((counts.order ?? 0) > 0, `no token out of grant order found: ${JSON.stringify(counts)}`);
    assert.ok(
      report.violations.some((v) => v.startsWith("overlap:") && v.includes("the older holder was not faulted")),
      summary(report),
    );
  });
});

describe("chaos clients", () => {
  it("a client whose connect fails for 10 s (its connection cut) journals the failures and runs once healed", async () => {
    // Five failed attempts took ~6 s: the etcd-cluster run's exit-1 clients under load.
    const etcd = backendNamed("etcd");
    const cutAtConnect: ChaosBackend = {
      name: "etcd",
      nemeses: [],
      async start(options) {
        const target = await etcd.start(options);
        const healAt = Date.now() + 10_000;
        return {
          ...target,
          async link() {
            const link = await target.link();
            link.cut?.();
            setTimeout(() => link.heal?.(), Math.max(0, healAt - Date.now()));
            return link;
          },
        };
      },
    };
    const history = await runChaos({ backend: cutAtConnect, seconds: 2, clients: 2, nemeses: [], seed: 7 });
    const report = check(history);
    assert.deepEqual(history.crashes, []);
    assert.ok(report.ok, summary(report));
    assert.ok(
      history.errors.some((e) => e.message.startsWith("connect: BackendUnavailableError")),
      JSON.stringify(history.errors.slice(0, 3)),
    );
    assert.ok((report.sections.exclusive ?? 0) > 0, JSON.stringify(report.sections));
  });
});

// ---------------------------------------------------------------------------
// The checker's rules on histories built to break each one.

let nextId = 0;
function section(pid: number, name: string, mode: Section["mode"], token: number, start: number, end: number): Section {
  return { id: nextId++, pid, name, mode, token: String(token), start, end, endedBy: "release", lost: false };
}
const op = (s: Section, at: number, accepted: boolean, kind: RegisterOp["kind"] = "write"): RegisterOp => ({
  at,
  section: s.id,
  kind,
  name: s.name,
  token: s.token,
  accepted,
});
const pause = (pid: number, at: number, until: number, name?: string): Fault => ({
  kind: "pause",
  at,
  until,
  pid,
  name,
  detail: "",
});
function history(sections: Section[], ops: RegisterOp[] = [], faults: Fault[] = []): History {
  // A grant after every fault, so that only the rule under test can fail.
  const tail = section(99, "other", "exclusive", 1, 10_000, 10_001);
  return {
    backend: "test",
    seed: 0,
    noop: false,
    startedAt: 0,
    endedAt: 10_002,
    semaphoreLimit: 2,
    sections: [...sections, tail],
    ops: [...ops, op(tail, 10_000.5, true)].sort((x, y) => x.at - y.at),
    faults,
    errors: [],
    crashes: [],
    leftHeld: [],
  };
}

/** A partition [5, 20] of pid 1, then pid 1 holding x [100, 200] (lost at 140) and pid 2 from 150. */
function afterHeal(): History {
  const older = { ...section(1, "x", "exclusive", 1, 100, 200), lostAt: 140 };
  const newer = section(2, "x", "exclusive", 2, 150, 250);
  const during = section(3, "y", "exclusive", 1, 10, 12);
  return history(
    [older, newer, during],
    [op(older, 101, true), op(newer, 151, true), op(older, 190, false)],
    [{ ...pause(1, 5, 20, "x"), kind: "partition" }],
  );
}

/**
 * A member fault [10, 90] (say the primary cut off), then `after` ms later pid 1 holding x for
 * 100 ms and pid 2 from its middle with a higher token: the old primary and the promoted
 * replica both granted.
 */
function splitBrainHistory(partitionSafe: boolean, after: number, lateAccepted = false): History {
  const at = 90 + after;
  const older = section(1, "x", "exclusive", 1, at, at + 100);
  const newer = section(2, "x", "exclusive", 2, at + 50, at + 150);
  const member: Fault = { kind: "member", at: 10, until: 90, pid: undefined, name: undefined, detail: "primary cut" };
  return {
    ...history(
      [older, newer],
      [op(older, at + 1, true), op(newer, at + 51, true), op(older, at + 90, lateAccepted)],
      [member],
    ),
    endedAt: at + 20_000,
    ttlMs: 100,
    partitionSafe,
  };
}

describe("chaos checker", () => {
  const a = section(1, "x", "exclusive", 1, 0, 100);
  const b = section(2, "x", "exclusive", 2, 50, 150);
  const aWrites = [op(a, 1, true), op(a, 120, false)];
  const bWrites = [op(b, 51, true)];
  // Grants by a third client during the pause, so progress holds.
  const elsewhere = section(3, "y", "exclusive", 1, 20, 30);
  const cases: [string, History, RegExp | undefined][] = [
    [
      "sequential sections pass",
      history([section(1, "x", "exclusive", 1, 0, 10), section(2, "x", "exclusive", 2, 20, 30)]),
      undefined,
    ],
    [
      "an overlap with no fault fails",
      history([a, b], [...aWrites, ...bWrites]),
      /overlap: .*the older holder was not faulted/,
    ],
    [
      "an overlap after a pause of the older holder, its late write refused, passes",
      history([a, b, elsewhere], [...aWrites, ...bWrites], [pause(1, 10, 110, "x")]),
      undefined,
    ],
    [
      "an overlap whose late write was accepted fails",
      history([a, b, elsewhere], [op(a, 1, true), op(a, 120, true), ...bWrites], [pause(1, 10, 110, "x")]),
      /a late write of the older holder was accepted/,
    ],
    [
      "a pause of the newer holder does not explain it",
      history([a, b, elsewhere], [...aWrites, ...bWrites], [pause(2, 10, 110)]),
      /not faulted/,
    ],
    ["shared and exclusive overlapping fails", history([a, section(2, "x", "shared", 2, 50, 60)]), /overlap: /],
    [
      "shared with shared passes",
      history([section(1, "x", "shared", 1, 0, 100), section(2, "x", "shared", 2, 50, 60)]),
      undefined,
    ],
    [
      "a token granted twice fails",
      history([section(1, "x", "exclusive", 5, 0, 10), section(2, "x", "exclusive", 5, 20, 30)]),
      /granted twice/,
    ],
    [
      "a lower token granted later fails",
      history([section(1, "x", "exclusive", 7, 0, 10), section(2, "x", "exclusive", 6, 20, 30)]),
      /order: /,
    ],
    [
      "three permits of a semaphore of two fail",
      history([
        section(1, "s", "semaphore", 1, 0, 100),
        section(2, "s", "semaphore", 2, 10, 100),
        section(3, "s", "semaphore", 3, 20, 100),
      ]),
      /permits held/,
    ],
    [
      "a lower token reported after its holder's pause, its write refused, passes",
      (() => {
        const late = section(1, "x", "exclusive", 1, 200, 210);
        const taker = section(2, "x", "exclusive", 2, 50, 150);
        return history([late, taker, elsewhere], [op(taker, 51, true), op(late, 201, false)], [pause(1, 10, 190)]);
      })(),
      undefined,
    ],
    [
      "the register accepting a stale write fails",
      (() => {
        const s1 = section(1, "x", "exclusive", 1, 0, 10);
        const s2 = section(2, "x", "exclusive", 2, 20, 30);
        return history([s1, s2], [op(s2, 21, true), op(s1, 22, true)]);
      })(),
      /stale write accepted/,
    ],
    [
      "the register refusing a fresh write fails",
      (() => {
        const s1 = section(1, "x", "exclusive", 1, 0, 10);
        return history([s1], [op(s1, 1, false)]);
      })(),
      /fresh write refused/,
    ],
    [
      "no grant elsewhere during a pause fails",
      history([section(1, "x", "exclusive", 1, 0, 10)], [], [pause(1, 20, 5000)]),
      /no grant anywhere during pause/,
    ],
    [
      "a cut holder whose signal never aborted while another was granted its lock fails",
      history([a, b, elsewhere], [...aWrites, ...bWrites], [{ ...pause(1, 10, 110, "x"), kind: "cut" }]),
      /signal: .*never saw its signal abort/,
    ],
    [
      "a cut holder whose signal aborted before the takeover passes",
      history(
        [{ ...a, end: 45, lostAt: 40 }, b, elsewhere],
        [op(a, 1, true), ...bWrites],
        [{ ...pause(1, 10, 110, "x"), kind: "cut" }],
      ),
      undefined,
    ],
    [
      "a holder paused just before its begin, told it lost before the next grant, its late write refused, passes",
      (() => {
        const older = { ...section(1, "x", "exclusive", 1, 200, 300), lostAt: 203 };
        const newer = section(2, "x", "exclusive", 2, 250, 350);
        return history(
          [older, newer, elsewhere],
          [op(older, 201, true), op(newer, 251, true), op(older, 290, false)],
          [pause(1, 10, 190)],
        );
      })(),
      undefined,
    ],
    [
      "the same overlap with the holder never told it lost fails",
      (() => {
        const older = section(1, "x", "exclusive", 1, 200, 300);
        const newer = section(2, "x", "exclusive", 2, 250, 350);
        return history(
          [older, newer, elsewhere],
          [op(older, 201, true), op(newer, 251, true), op(older, 290, false)],
          [pause(1, 10, 190)],
        );
      })(),
      /overlap: .*the older holder was not faulted/,
    ],
    [
      "a cut shared holder beside a later shared holder passes; a later exclusive one before its signal fails",
      (() => {
        // The writer comes 400 ms before the cut reader's signal: beyond the IPC tolerance.
        const reader = section(1, "x", "shared", 1, 0, 1000);
        const other = section(2, "x", "shared", 2, 50, 60);
        const writer = section(3, "x", "exclusive", 3, 500, 1500);
        return history(
          [{ ...reader, lostAt: 900 }, other, writer, section(4, "y", "exclusive", 1, 20, 30)],
          [op(writer, 501, true)],
          [{ ...pause(1, 10, 1100, "x"), kind: "cut" }],
        );
      })(),
      /signal: exclusive x token 3 .*saw its signal abort only at 900/,
    ],
    [
      "a cut shared holder whose signal aborted before the next writer passes, whatever readers came meanwhile",
      history(
        [
          { ...section(1, "x", "shared", 1, 0, 400), lostAt: 400 },
          section(2, "x", "shared", 2, 50, 60),
          section(3, "x", "exclusive", 3, 450, 550),
          section(4, "y", "exclusive", 1, 20, 30),
        ],
        [op(section(3, "x", "exclusive", 3, 450, 550), 451, true)],
        [{ ...pause(1, 10, 500, "x"), kind: "cut" }],
      ),
      undefined,
    ],
    [
      "a partitioned holder overlapping a later holder before its signal aborted fails",
      history(
        [a, b, elsewhere],
        [...aWrites, ...bWrites],
        [{ ...pause(1, 10, 110, "x"), kind: "partition", minority: true }],
      ),
      /partitioned older holder never saw its signal abort/,
    ],
    [
      "a partitioned holder whose signal aborted before the re-grant, its late write refused, passes",
      history(
        [{ ...a, lostAt: 40 }, b, elsewhere],
        [...aWrites, ...bWrites],
        [{ ...pause(1, 10, 110, "x"), kind: "partition", minority: true }],
      ),
      undefined,
    ],
    [
      "an overlap within one TTL after a partition healed, signal first and late write refused, passes",
      { ...afterHeal(), ttlMs: 100 },
      undefined,
    ],
    [
      "an overlap more than one TTL after a partition healed is not explained by it",
      { ...afterHeal(), ttlMs: 10 },
      /overlap: .*not faulted/,
    ],
    [
      "a grant on the side without a quorum fails",
      history(
        [section(1, "z", "exclusive", 1, 300, 310), elsewhere],
        [],
        [{ ...pause(1, 10, 500), kind: "partition", minority: true }],
      ),
      /minority: .*side without a quorum/,
    ],
    [
      "a split brain after a member fault fails on a backend declared partition-safe",
      splitBrainHistory(true, 10),
      /overlap: .*not faulted/,
    ],
    [
      "an overlap during a member fault fails on a backend declared partition-safe (a member fault hits no holder)",
      splitBrainHistory(true, -50),
      /overlap: .*not faulted/,
    ],
    [
      "an overlap just after a member fault, the older holder told it lost first, passes on a partition-safe backend",
      (() => {
        const h = splitBrainHistory(true, 10);
        const older = h.sections[0] as Section;
        h.sections[0] = { ...older, lostAt: older.start + 40 };
        return h;
      })(),
      undefined,
    ],
    [
      "a split brain after a member fault, its late write accepted, fails even when not partition-safe",
      splitBrainHistory(false, 10, true),
      /a late write of the older holder was accepted/,
    ],
    [
      "an overlap more than 10 s and a TTL after a member fault healed is not a split brain",
      splitBrainHistory(false, 10_200),
      /overlap: .*not faulted/,
    ],
    ["something left held fails", { ...history([]), leftHeld: ["x token 3 by chaos-1"] }, /still held/],
    [
      "a crashed client fails",
      { ...history([]), crashes: [{ at: 5, pid: 4, description: "exit 1" }] },
      /client 4 exit 1/,
    ],
  ];
  it("a split brain after a member fault, not partition-safe, late write refused, passes and is reported apart", () => {
    // 5.8 s after the heal: the longest the 10-minute Sentinel run saw (a client paused through it).
    const report = check(splitBrainHistory(false, 5800));
    assert.ok(report.ok, summary(report));
    assert.equal(report.splitBrainOverlaps, 1);
    assert.deepEqual(Object.keys(report.overlapsByFault), ["split-brain"]);
    assert.match(report.verdict, /1 overlaps explained \(1 a split brain: not partition-safe\)/);
  });
  it("reports the runner's own stalls, which explain nothing", () => {
    const h = { ...history([a, b], [...aWrites, ...bWrites]), stalls: [{ at: 40, ms: 1500 }] };
    const report = check(h);
    assert.deepEqual(report.runnerStalls, { count: 1, maxMs: 1500 });
    assert.equal(report.ok, false, "a stall must not explain an overlap");
  });
  for (const [title, h, expected] of cases) {
    it(title, () => {
      const report = check(h);
      if (expected === undefined) assert.ok(report.ok, summary(report));
      else {
        assert.equal(report.ok, false, `expected a violation matching ${expected}`);
        assert.ok(
          report.violations.some((v) => expected.test(v)),
          summary(report),
        );
      }
    });
  }
});
