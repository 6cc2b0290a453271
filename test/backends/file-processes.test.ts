/**
 * The file backend across real processes: crashes, pauses, contention, scale, and the
 * libuv thread pool staying free while many waits are pending.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import { type Coordinator, connect } from "../../src/index.js";
import { settlesWithin, take, waitFor, waitForWaiters } from "../conformance/helpers.js";
import { Puppet } from "../fixtures/puppets.js";

describe("file backend across processes", () => {
  let dir: string;
  let url: string;
  const puppets: Puppet[] = [];
  const coords: Coordinator[] = [];
  const puppet = async () => {
    const p = new Puppet(url);
    puppets.push(p);
    await p.ready;
    return p;
  };
  const client = async () => {
    const c = await connect(url, { memberId: `parent-${coords.length}` });
    coords.push(c);
    return c;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "baton-file-procs-"));
    url = pathToFileURL(dir).href;
  });

  after(async () => {
    for (const p of puppets) p.kill();
    await Promise.all(puppets.map((p) => p.exited()));
    await Promise.all(coords.map((c) => c.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  it("hands a SIGKILLed holder's lock to the next waiter at once, with a higher token", async () => {
    const holder = await puppet();
    const { token } = await holder.do("acquire", { name: "crash" });
    const me = await client();
    const waiting = me.lock("crash").acquire();
    await waitForWaiters(me, "crash", 1);
    const killedAt = performance.now();
    holder.kill("SIGKILL");
    const h = await waiting;
    const elapsed = performance.now() - killedAt;
    assert.ok(h.token > BigInt(String(token)));
    // Woken by the dead peer's socket closing, not by the 1 s safety timer.
    assert.ok(elapsed < 900, `took ${elapsed.toFixed(1)} ms after SIGKILL`);
    await h.release();
  });

  it("keeps a SIGSTOPped holder's lock (no lease to expire) and hands it over after SIGCONT", async () => {
    const holder = await puppet();
    await holder.do("acquire", { name: "paused" });
    const me = await client();
    holder.kill("SIGSTOP");
    try {
      assert.equal(await me.lock("paused").tryAcquire(), null, "a paused process still holds its kernel lock");
      const waiting = me.lock("paused").acquire();
      assert.equal(await settlesWithin(waiting, 300), false);
      holder.kill("SIGCONT");
      await holder.do("release", { name: "paused" });
      const h = await waiting;
      await h.release();
    } finally {
      holder.kill("SIGCONT");
    }
  });

  it("is not held up by an unrelated paused process", async () => {
    const bystander = await puppet();
    const holder = await puppet();
    await holder.do("acquire", { name: "busy-while-paused" });
    const me = await client();
    bystander.kill("SIGSTOP");
    try {
      const waiting = me.lock("busy-while-paused").acquire();
      await waitForWaiters(me, "busy-while-paused", 1);
      const releasedAt = performance.now();
      await holder.do("release", { name: "busy-while-paused" });
      const h = await waiting;
      const elapsed = performance.now() - releasedAt;
      // The paused peer never answers; the waiter must not wait for it (5 s request timeout).
      assert.ok(elapsed < 2000, `granted ${elapsed.toFixed(0)} ms after the release`);
      await h.release();
    } finally {
      bystander.kill("SIGCONT");
    }
  });

  it("never lets two of many contending processes hold one lock at once", async () => {
    const log = join(dir, "..", `baton-exclusion-${process.pid}.log`);
    writeFileSync(log, "");
    try {
      const workers = await Promise.all(Array.from({ length: 6 }, () => puppet()));
      await Promise.all(workers.map((w) => w.do("exclusionLoop", { name: "contended", rounds: 60, log })));
      const lines = readFileSync(log, "utf8").trim().split("\n");
      assert.equal(lines.length, 6 * 60 * 2);
      let inside: string | null = null;
      let last = -1n;
      for (const line of lines) {
        const [what, pid, token] = line.split(" ");
        if (what === "enter") {
          assert.equal(inside, null, `${pid} entered while ${inside} was inside`);
          assert.ok(BigInt(token!) > last, "tokens must increase in grant order");
          last = BigInt(token!);
          inside = pid!;
        } else {
          assert.equal(inside, pid);
          inside = null;
        }
      }
    } finally {
      rmSync(log, { force: true });
    }
  });

  it("holds 100,000 distinct names at once with a constant set of files on disk", async () => {
    const holder = await puppet();
    const { ms } = await holder.do("holdMany", { prefix: "many-", count: 100_000 });
    const expected = [
      ...Array.from({ length: 64 }, (_, i) => `locks.${i.toString(16).padStart(2, "0")}`),
      "cells.lock",
      "peers",
      "semaphores",
      // The takeover records: one sparse file of fixed binary slots (record-slots.ts) and
      // one of JSON regions for those too large for a slot (records.ts).
      "takeover",
      "takeover.slots",
      "tokens",
    ];
    assert.deepEqual(readdirSync(dir).sort(), expected.sort());
    // Mesh sockets of live processes only (dead ones' were removed by the next process to
    // find them), whatever the number of names.
    const live = new Set([process.pid, ...puppets.filter((p) => p.child.exitCode === null).map((p) => p.pid)]);
    const sockets = readdirSync(join(dir, "peers"));
    assert.ok(
      sockets.some((s) => s.startsWith(`${holder.pid}-`)),
      "the holder has its socket",
    );
    for (const s of sockets) assert.ok(live.has(Number(s.split("-")[0])), `${s} belongs to a live process`);
    const me = await client();
    for (const i of [0, 4242, 99_999]) assert.equal(await me.lock(`many-${i}`).tryAcquire(), null, `many-${i} is held`);
    const free = await me.lock("many-100000").tryAcquire();
    assert.ok(free);
    await free.release();
    await holder.do("releaseAll");
    const now = await me.lock("many-4242").tryAcquire();
    assert.ok(now);
    await now.release();
    process.stdout.write(`# 100,000 names acquired in ${Number(ms).toFixed(0)} ms\n`);
  });

  it("waits on 1,000 names without tying up the libuv thread pool", async () => {
    const holder = await puppet();
    await holder.do("holdMany", { prefix: "pool-", count: 1000 });
    const me = await client();
    const waits = Array.from({ length: 1000 }, (_, i) => me.lock(`pool-${i}`).acquire());
    await waitForWaiters(me, "pool-999", 1);
    // With a blocked pool (4 threads) this read would never complete.
    const read = readFile(join(dir, "tokens"));
    assert.ok(await settlesWithin(read, 2000), "an fs call must complete while 1,000 waits are pending");
    await holder.do("releaseAll");
    const handles = await Promise.all(waits);
    await Promise.all(handles.map((h) => h.release()));
  });

  it("sees a crashed member leave its group and a crashed leader replaced", async () => {
    const member = await puppet();
    await member.do("join", { group: "workers" });
    await member.do("campaign", { election: "boss", value: "child" });
    const me = await client();
    const events = me.group("workers").watch();
    const [first] = await take(events, 1);
    assert.equal(first?.type, "join");
    const leading = me.election("boss").campaign("parent");
    await waitFor(
      async () => (await me.inspect()).elections.some((e) => e.id === "boss" && e.candidates.length === 1),
      "a candidate",
    );
    member.kill("SIGKILL");
    const [left] = await take(events, 1);
    assert.deepEqual(left, { type: "leave", memberId: `puppet-${member.pid}` });
    const leadership = await leading;
    assert.deepEqual((await me.election("boss").leader())?.value, "parent");
    await leadership.resign();
    await events.return?.();
  });
  it("lets a writer in behind overlapping readers of other processes (no writer starvation)", async (t) => {
    const log = join(dir, "..", `readers-${process.pid}.log`);
    const stop = join(dir, "..", `readers-${process.pid}.stop`);
    const holds = [100, 130, 170];
    const readers = await Promise.all(holds.map(() => puppet()));
    const enters = () =>
      readFileSync(log, "utf8")
        .split("\n")
        .filter((line) => line.startsWith("enter "))
        .map((line) => Number(line.split(" ")[2]));
    try {
      writeFileSync(log, "");
      const loops: Promise<unknown>[] = [];
      // Start each reader once the previous one is inside: their turns overlap and drift.
      for (const [i, reader] of readers.entries()) {
        loops.push(reader.do("readerLoop", { name: "catalog", rounds: 300, holdMs: holds[i], log, stop }));
        await waitFor(() => enters().length > i, `reader ${i} inside`);
      }
      await waitFor(() => enters().length >= 8, "readers taking overlapping turns");
      const me = await client();
      const asked = Date.now();
      const writer = await me.lock("catalog").acquire({ timeoutMs: 10_000 });
      const granted = Date.now();
      const overtook = enters().filter((t) => t > asked && t <= granted).length;
      await writer.release();
      writeFileSync(stop, "");
      await Promise.all(loops);
      t.diagnostic(`writer waited ${granted - asked} ms; ${overtook} reader turns began meanwhile`);
      // Readers that had checked for a waiting writer just before it claimed its intent may
      // still get in, at most one per process; none after that.
      assert.ok(overtook <= readers.length, `${overtook} reader turns began while the writer waited`);
      assert.ok(granted - asked < 10_000, `the writer waited ${granted - asked} ms (longest read hold 170 ms)`);
    } finally {
      rmSync(log, { force: true });
      rmSync(stop, { force: true });
    }
  });
  it("removes the sockets of dead processes, also of one that died while setting up, and no live one", async () => {
    const peers = join(dir, "peers");
    const crashed = await puppet();
    const crashedSocket = readdirSync(peers).find((s) => s.startsWith(`${crashed.pid}-`));
    assert.ok(crashedSocket, "a live process has its socket under its peer name");
    // A process that died after binding its socket, before the socket got its peer name
    // (named here after a pid that has exited).
    const gone = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
    await new Promise((resolve) => gone.once("exit", resolve));
    const hidden = `.${gone.pid}-abcdef12`;
    const binder = spawn(
      process.execPath,
      [
        "-e",
        "require('net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))",
        join(peers, hidden),
      ],
      { stdio: "ignore" },
    );
    await new Promise((resolve) => binder.once("exit", resolve));
    assert.ok(readdirSync(peers).includes(hidden), "the half-set-up socket was left behind");
    crashed.kill("SIGKILL");
    await crashed.exited();
    const next = await puppet();
    const left = readdirSync(peers);
    assert.ok(!left.includes(crashedSocket), "a dead process's socket is removed by the next process");
    assert.ok(!left.some((s) => s.startsWith(".")), `no half-set-up socket is left: ${left.join(", ")}`);
    assert.ok(
      left.some((s) => s.startsWith(`${next.pid}-`)),
      "the live one stays",
    );
  });
});
