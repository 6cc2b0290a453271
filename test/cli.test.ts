/**
 * The `baton` CLI end to end: the built binary, real child processes, the default-style
 * file backend in a private directory.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { type Coordinator, connect } from "../src/index.js";
import { waitFor, waitForWaiters } from "./conformance/helpers.js";
import { BIN, baton, start } from "./fixtures/cli.js";
import { killBatonWhileItsCommandRuns, waitQueued } from "./fixtures/killed-baton.js";

describe("baton CLI", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let me: Coordinator;

  before(async () => {
    assert.ok(existsSync(BIN), "run `npm run build` first (npm test does)");
    dir = mkdtempSync(join(tmpdir(), "baton-cli-"));
    env = { ...process.env, BATON_URL: pathToFileURL(dir).href };
    me = await connect(env.BATON_URL, { memberId: "test-parent" });
  });

  after(async () => {
    await me.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs the command with the lock name and fencing token in its environment", async () => {
    const first = await baton(["lock", "job", "--", "sh", "-c", 'echo "$BATON_LOCK_NAME $BATON_FENCING_TOKEN"'], env);
    assert.equal(first.status, 0, first.stderr);
    const [name, token] = first.stdout.trim().split(" ");
    assert.equal(name, "job");
    const second = await baton(["lock", "job", "--", "sh", "-c", 'echo "$BATON_FENCING_TOKEN"'], env);
    assert.ok(BigInt(second.stdout.trim()) > BigInt(token!), "tokens increase from one run to the next");
  });

  it("exits with the command's own status, 127 for a missing command", async () => {
    assert.equal((await baton(["lock", "x", "--", "sh", "-c", "exit 3"], env)).status, 3);
    const missing = await baton(["lock", "x", "--", "no-such-command-here"], env);
    assert.equal(missing.status, 127);
    assert.match(missing.stderr, /baton: cannot run no-such-command-here: command not found/);
  });

  // Every usage error exits 64 and says, in terms of the flag, what was wrong and what is allowed.
  const usageErrors: [string[], RegExp][] = [
    [
      ["semaphore", "s", "--limit", "abc", "--", "true"],
      /--limit must be a positive integer from 1 to 1000000, got "abc"/,
    ],
    [["semaphore", "s", "--limit", "1.5", "--", "true"], /--limit must be a positive integer .*got "1\.5"/],
    [["semaphore", "s", "--limit", "0", "--", "true"], /--limit must be a positive integer .*got "0"/],
    [["semaphore", "s", "--", "true"], /required option '--limit <n>' not specified/],
    [["status", "--serve", "banana"], /--serve must be a port 0-65535 .*got "banana"/],
    [["status", "--serve", "99999"], /--serve must be a port 0-65535 .*got "99999"/],
    [
      ["lock", "x", "--timeout", "5 parsecs", "--", "true"],
      /--timeout must be a duration .*500ms, 10s, 2m or 1h .*got "5 parsecs"/,
    ],
    [
      ["lock", "x", "--timeout", "100000000h", "--", "true"],
      /--timeout must be a duration from 0ms to 2147483647ms \(about 24\.8 days\)/,
    ],
    [["lock", "x", "--kill-after", "forever", "--", "true"], /--kill-after must be a duration .*got "forever"/],
    [["lock", "x", "--ttl", "500ms", "--", "true"], /--ttl must be a duration from 1s to 24h/],
    [["lock", "x", "--ttl", "2d", "--", "true"], /--ttl must be a duration from 1s to 24h/],
    [["lock", "x", "--namespace", "", "--", "true"], /--namespace must not be empty/],
    [["status", "--namespace", "a\u0001b"], /--namespace contains the control character U\+0001/],
    [["lock", "x", "--bogus", "--", "true"], /unknown option '--bogus'/],
    [["lock"], /missing required argument 'name'/],
    [["status", "--interval", "10ms", "--watch"], /--interval must be a duration from 100ms/],
    [["frobnicate"], /unknown command 'frobnicate'/],
  ];
  for (const [args, message] of usageErrors) {
    it(`exits 64 with a message for: baton ${args.join(" ")}`, async () => {
      const result = await baton(args, env);
      assert.equal(result.status, 64, result.stderr);
      assert.match(result.stderr, message);
    });
  }

  it("takes a bare number for a duration as seconds, prints --version, and shows --kill-after's default as 10s", async () => {
    const held = await me.lock("bare").acquire();
    try {
      const timedOut = await baton(["lock", "bare", "--timeout", "0.3", "--", "true"], env);
      assert.equal(timedOut.status, 75);
      assert.match(timedOut.stderr, /timed out after 300 ms/);
    } finally {
      await held.release();
    }
    const version = await baton(["--version"], env);
    assert.equal(version.status, 0);
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
    assert.equal(version.stdout.trim(), pkg.version);
    assert.match((await baton(["lock", "--help"], env)).stdout, /SIGTERM \(default: 10s\)/);
  });

  it("says who holds a busy lock with --no-wait: member, pid, host and since", async () => {
    const holder = start(["lock", "who", "--", "sh", "-c", "echo in; exec sleep 30"], env);
    try {
      await waitFor(() => holder.out().includes("in"), "the holder");
      const busy = await baton(["lock", "who", "--no-wait", "--", "true"], env);
      assert.equal(busy.status, 75);
      assert.match(
        busy.stderr,
        new RegExp(
          `lock "who" is busy: held by member \\S+:${holder.child.pid}:\\w+/sh%20-c%20echo%20in;%20exec%20sleep%2030 \\(pid ${holder.child.pid} on ${hostname()}\\) since \\d\\d:\\d\\d:\\d\\d UTC \\(\\d+\\.\\ds ago\\)`,
        ),
      );
    } finally {
      holder.child.kill("SIGTERM");
      await holder.exit;
    }
  });

  it("keeps names of each --namespace apart, and status names the other namespaces in use", async () => {
    const holder = start(["lock", "nsjob", "--namespace", "ci", "--", "sh", "-c", "echo in; exec sleep 30"], env);
    try {
      await waitFor(() => holder.out().includes("in"), "the holder");
      assert.equal((await baton(["lock", "nsjob", "--no-wait", "--", "true"], env)).status, 0, "another namespace");
      assert.equal((await baton(["lock", "nsjob", "--namespace", "ci", "--no-wait", "--", "true"], env)).status, 75);
      const inCi = JSON.parse((await baton(["status", "--json", "--namespace", "ci"], env)).stdout) as {
        namespace: string;
        locks: { name: string }[];
      };
      assert.equal(inCi.namespace, "ci");
      assert.ok(inCi.locks.some((l) => l.name === "nsjob"));
      const plain = await baton(["status"], env);
      assert.doesNotMatch(plain.stdout, /nsjob/);
      assert.match(plain.stdout, /Also in use: namespace "ci"; baton status --namespace NAME shows one/);
      const inCiPlain = await baton(["status", "--namespace", "ci"], env);
      assert.match(inCiPlain.stdout, /nsjob/);
      assert.doesNotMatch(inCiPlain.stdout, /Also in use/, "nothing is live in the default namespace");
    } finally {
      holder.child.kill("SIGTERM");
      await holder.exit;
    }
  });

  it("exits 69 when the backend cannot be reached", async () => {
    const result = await baton(["lock", "x", "--url", "file:///proc/baton-cannot-exist/dir", "--", "true"], env);
    assert.equal(result.status, 69, result.stderr);
    assert.match(result.stderr, /\/proc\/baton-cannot-exist\/dir/);
  });

  it("exits 75 when busy with --no-wait or on --timeout, and waits otherwise", async () => {
    const held = await me.lock("busy").acquire();
    const noWait = await baton(["lock", "busy", "--no-wait", "--", "true"], env);
    assert.equal(noWait.status, 75);
    assert.match(noWait.stderr, /busy/);
    const timedOut = await baton(["lock", "busy", "--timeout", "200ms", "--", "true"], env);
    assert.equal(timedOut.status, 75);
    assert.match(timedOut.stderr, /timed out after 200 ms/);
    const waiting = start(["lock", "busy", "--", "sh", "-c", "echo ran"], env);
    await waitForWaiters(me, "busy", 1);
    assert.equal(waiting.out(), "");
    await held.release();
    assert.equal(await waiting.exit, 0);
    assert.equal(waiting.out().trim(), "ran");
  });

  it("forwards signals to the command and releases the lock when it exits", async () => {
    const script = 'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.05; done';
    const run = start(["lock", "sig", "--", "sh", "-c", script], env);
    await waitFor(() => run.out().includes("ready"), "the command to start");
    assert.equal(await me.lock("sig").tryAcquire(), null);
    run.child.kill("SIGTERM");
    assert.equal(await run.exit, 7);
    assert.match(run.out(), /got-term/);
    const h = await me.lock("sig").tryAcquire();
    assert.ok(h, "released after the command exited");
    await h.release();
  });

  for (const [kind, extra] of [
    ["lock", []],
    ["semaphore", ["--limit", "1"]],
    ["elect", []],
  ] as const) {
    it(`${kind}: a SIGKILLed baton takes its command and the command's children with it`, async () => {
      const name = `orphan-${kind}`;
      await killBatonWhileItsCommandRuns(kind, name, [...extra], env, () => waitQueued(me, kind, name));
    });

    it(`${kind}: the lock stays taken until the watchdog has killed the command (watchdog stalled)`, async () => {
      const name = `stalled-${kind}`;
      await killBatonWhileItsCommandRuns(kind, name, [...extra], env, () => waitQueued(me, kind, name), true);
    });
  }

  it("shares a --shared lock between commands and limits a semaphore", async () => {
    const readers = [0, 1].map(() =>
      start(["lock", "rw", "--shared", "--", "sh", "-c", "echo in; exec sleep 30"], env),
    );
    await waitFor(() => readers.every((r) => r.out().includes("in")), "both readers inside at once");
    assert.equal(await me.lock("rw").tryAcquire(), null, "no writer while readers hold");
    for (const r of readers) r.child.kill("SIGTERM");
    await Promise.all(readers.map((r) => r.exit));

    const permits = [0, 1, 2].map(() =>
      start(["semaphore", "pool", "--limit", "2", "--", "sh", "-c", "echo in; exec sleep 30"], env),
    );
    await waitFor(() => permits.filter((p) => p.out().includes("in")).length === 2, "two permits taken");
    await waitForWaiters(me, "pool", 1, "semaphores");
    assert.equal(permits.filter((p) => p.out().includes("in")).length, 2, "the third waits");
    const running = permits.filter((p) => p.out().includes("in"));
    running[0]!.child.kill("SIGTERM");
    await waitFor(() => permits.filter((p) => p.out().includes("in")).length === 3, "the third to get a permit");
    for (const p of permits) p.child.kill("SIGTERM");
    await Promise.all(permits.map((p) => p.exit));
  });

  it("runs an elected command only while leading", async () => {
    const a = start(["elect", "cron", "--value", "a", "--", "sh", "-c", "echo leading-a; exec sleep 30"], env);
    await waitFor(() => a.out().includes("leading-a"), "a to lead");
    const b = start(["elect", "cron", "--value", "b", "--", "sh", "-c", "echo leading-b; exec sleep 30"], env);
    await waitFor(
      async () => (await me.inspect()).elections.some((e) => e.id === "cron" && e.candidates.length === 1),
      "b to campaign",
    );
    assert.equal((await me.election("cron").leader())?.value, "a");
    assert.ok(!b.out().includes("leading-b"));
    a.child.kill("SIGTERM");
    await a.exit;
    await waitFor(() => b.out().includes("leading-b"), "b to lead after a");
    assert.equal((await me.election("cron").leader())?.value, "b");
    b.child.kill("SIGTERM");
    await b.exit;
  });

  it("shows holders, waiters and wait times of every process in status and status --json", async () => {
    const holder = start(["lock", "shown", "--", "sh", "-c", "echo in; exec sleep 30"], env);
    await waitFor(() => holder.out().includes("in"), "the holder");
    const waiter = start(["lock", "shown", "--", "true"], env);
    await waitForWaiters(me, "shown", 1);
    const json = await baton(["status", "--json"], env);
    assert.equal(json.status, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as {
      version: number;
      backend: string;
      locks: {
        name: string;
        holders: { memberId: string; token: string; heldMs: number }[];
        waiters: { waitingMs: number }[];
      }[];
    };
    assert.equal(parsed.version, 1);
    assert.equal(parsed.backend, "file");
    const lock = parsed.locks.find((l) => l.name === "shown");
    assert.equal(lock?.holders.length, 1);
    assert.match(lock!.holders[0]!.token, /^\d+$/);
    assert.match(lock!.holders[0]!.memberId, new RegExp(`:${holder.child.pid}:`));
    assert.equal(lock?.waiters.length, 1);
    assert.ok(lock!.waiters[0]!.waitingMs >= 0);
    const table = await baton(["status"], env);
    assert.match(table.stdout, /NAME\s+STATE\s+MODE\s+HELD\s+WAITING\s+TOKEN\s+MEMBER/);
    assert.match(table.stdout, /shown\s+holds\s+exclusive/);
    assert.match(table.stdout, /shown\s+waits\s+exclusive/);
    holder.child.kill("SIGTERM");
    assert.equal(await waiter.exit, 0);
    await holder.exit;
  });

  it("shows what it waits for, who holds it and for how long on a terminal only", async () => {
    const held = await me.lock("tty").acquire();
    try {
      // script(1) gives baton a pseudo-terminal; -e passes on baton's exit status.
      const command = `${process.execPath} ${BIN} lock tty --timeout 800ms -- true`;
      const onTty = await new Promise<{ status: number | null; out: string }>((resolve) => {
        const child = spawn("script", ["-qec", command, "/dev/null"], { env, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (out += d));
        child.once("close", (status) => resolve({ status, out }));
      });
      assert.equal(onTty.status, 75);
      assert.match(onTty.out, /waiting for lock "tty", held by test-parent \(\d+\.\ds\)/);
      const piped = await baton(["lock", "tty", "--timeout", "300ms", "--", "true"], env);
      assert.equal(piped.status, 75);
      assert.doesNotMatch(piped.stderr, /waiting for/, "nothing but the error when stderr is not a terminal");
    } finally {
      await held.release();
    }
  });

  it("passes Ctrl-C on a terminal to the command's whole group", async () => {
    // script(1) runs baton on a pseudo-terminal; a ^C written to it becomes SIGINT for the
    // terminal's foreground group (baton), which forwards it to the command's group.
    const inner = `trap 'echo got-int; exit 5' INT; sleep 30 & echo ready; wait`;
    // exec: script(1) runs this with $SHELL -c, and a dash that stays as the parent would
    // itself die of the SIGINT (status 130) whatever baton does.
    const command = `exec ${process.execPath} ${BIN} lock ctrlc -- sh -c "${inner}"`;
    const child = spawn("script", ["-qec", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const status = new Promise<number | null>((resolve) => child.once("close", resolve));
    await waitFor(() => out.includes("ready"), "the command to start");
    child.stdin.write("\u0003");
    assert.equal(await status, 5, out);
    assert.match(out, /got-int/);
  });

  it("serves a live status page and its JSON with status --serve", async () => {
    const held = await me.lock("paged").acquire();
    const server = start(["status", "--serve", "0"], env);
    try {
      await waitFor(() => /http:\/\/127\.0\.0\.1:\d+\//.test(server.out()), "the page to be served");
      const base = /http:\/\/127\.0\.0\.1:\d+\//.exec(server.out())![0];
      const json = (await (await fetch(`${base}status.json`)).json()) as {
        locks: { name: string; holders: { memberId: string }[] }[];
      };
      assert.equal(json.locks.find((l) => l.name === "paged")?.holders[0]?.memberId, "test-parent");
      const page = await fetch(base);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<title>Baton status<\/title>/);
      assert.match(await (await fetch(`${base}status.txt`)).text(), /paged\s+holds\s+exclusive/);
      assert.equal((await fetch(`${base}nope`)).status, 404);
    } finally {
      server.child.kill("SIGTERM");
      assert.equal(await server.exit, 0);
      await held.release();
    }
  });

  it("cell get/set/transition: compare-and-set from the shell, typed exit statuses", async () => {
    const set = await baton(["cell", "set", "vol-1", "--string", "available"], env);
    assert.equal(set.status, 0, set.stderr);
    const { version } = JSON.parse(set.stdout) as { version: string };
    assert.deepEqual((await me.cell("vol-1").get())?.value, "available", "the API sees what the CLI wrote");
    const runs = await Promise.all(
      [1, 2, 3].map(() => baton(["cell", "transition", "vol-1", '"available"', '"attaching"'], env)),
    );
    assert.deepEqual(runs.map((r) => r.status).sort(), [0, 65, 65], runs.map((r) => r.stderr).join(""));
    assert.match(runs.find((r) => r.status === 65)!.stderr, /conflicted: found version \d+ holding "attaching"/);
    const got = await baton(["cell", "get", "vol-1"], env);
    assert.equal(got.status, 0);
    const state = JSON.parse(got.stdout) as { value: string; version: string };
    assert.equal(state.value, "attaching");
    assert.ok(BigInt(state.version) > BigInt(version));
    const stale = await baton(["cell", "set", "vol-1", "{}", "--if-version", version], env);
    assert.equal(stale.status, 65);
    assert.equal((await baton(["cell", "get", "no-such-cell"], env)).status, 66);
    const bad = await baton(["cell", "set", "vol-1", "not json"], env);
    assert.equal(bad.status, 64);
    assert.match(bad.stderr, /the value must be JSON .* pass --string/);
    const badVersion = await baton(["cell", "set", "vol-1", "1", "--if-version", "-3"], env);
    assert.equal(badVersion.status, 64);
    assert.match(badVersion.stderr, /--if-version must be a whole number/);
  });

  it("prints help with examples for every command", async () => {
    for (const command of ["lock", "semaphore", "elect", "status", "cell"]) {
      const help = await baton([command, "--help"], env);
      assert.equal(help.status, 0);
      assert.match(help.stdout, /Examples:/, `${command} --help`);
    }
  });
});
