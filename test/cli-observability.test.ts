/**
 * The operator's side of the CLI end to end (built binary, real processes, the file
 * backend in a private directory): holds with no command, --verbose, elect --listen,
 * the status columns, --watch, /metrics on --serve, and the completion scripts.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { type Coordinator, connect } from "../src/index.js";
import { waitFor, waitForWaiters } from "./conformance/helpers.js";
import { BIN, baton, start } from "./fixtures/cli.js";
import { startRedis } from "./harness/redis.js";

describe("baton CLI for operators", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let me: Coordinator;

  before(async () => {
    assert.ok(existsSync(BIN), "run `npm run build` first (npm test does)");
    dir = mkdtempSync(join(tmpdir(), "baton-cli-obs-"));
    env = { ...process.env, BATON_URL: pathToFileURL(dir).href };
    me = await connect(env.BATON_URL, { memberId: "test-parent" });
  });

  after(async () => {
    await me.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("lock with no command holds until SIGTERM and prints the token; --verbose tells each step", async () => {
    const holder = start(["lock", "held-open", "--verbose"], env);
    await waitFor(() => /^\d+$/m.test(holder.out()), "the token on stdout");
    const token = /^(\d+)$/m.exec(holder.out())?.[1] as string;
    const info = await me.inspect();
    assert.equal(String(info.locks.find((l) => l.name === "held-open")?.holders[0]?.token), token);
    assert.equal((await baton(["lock", "held-open", "--no-wait", "--", "true"], env)).status, 75);
    holder.child.kill("SIGTERM");
    assert.equal(await holder.exit, 0);
    for (const step of [
      /baton: connecting to file:/,
      /baton: connected to the file backend as member \S+/,
      /baton: acquiring lock "held-open"/,
      new RegExp(`baton: granted lock "held-open" with fencing token ${token}`),
      /baton: released lock "held-open"/,
    ]) {
      assert.match(holder.out(), step);
    }
    assert.equal((await baton(["lock", "held-open", "--no-wait", "--", "true"], env)).status, 0, "released");
    const secret = await baton(
      ["lock", "x", "--verbose", "--url", "postgres://app:s3cret@127.0.0.1:1/db", "--", "true"],
      env,
    );
    assert.match(secret.stderr, /connecting to postgres:\/\/app:\*\*\*@127\.0\.0\.1:1\/db/);
    assert.doesNotMatch(secret.stderr, /s3cret/, "no password in the steps");

    const held = await me.lock("behind").acquire();
    const waiter = start(["lock", "behind", "--verbose", "--", "true"], env);
    await waitForWaiters(me, "behind", 1);
    assert.match(waiter.out(), /baton: waiting for lock "behind", held by member test-parent since/);
    await held.release();
    assert.equal(await waiter.exit, 0);
  });

  it("lock with no command exits 76 when the lock is lost (its Redis server killed)", async () => {
    const server = await startRedis();
    try {
      const holder = start(["lock", "fragile", "--url", server.url, "--ttl", "2s"], env);
      await waitFor(() => /^\d+$/m.test(holder.out()), "the token on stdout");
      await server.kill();
      assert.equal(await holder.exit, 76);
      assert.match(holder.out(), /baton: lock "fragile" was lost/);
    } finally {
      await server.stop();
    }
  });

  it("elect --listen prints the leader and each change", async () => {
    const listener = start(["elect", "chair", "--listen"], env);
    await waitFor(() => listener.out().includes("no leader"), "the first line");
    const leading = await me.election("chair").campaign("v1");
    await waitFor(() => /leader test-parent token \d+ value "v1"/.test(listener.out()), "the new leader");
    await leading.resign();
    await waitFor(() => listener.out().split("no leader").length === 3, "the lapse");
    listener.child.kill("SIGINT");
    assert.equal(await listener.exit, 0);
    const refused = await baton(["elect", "chair", "--listen", "--", "true"], env);
    assert.equal(refused.status, 64);
    assert.match(refused.stderr, /--listen takes no command/);
  });

  it("status shows pid, host and command, held and waiting apart, long waits and permits", async () => {
    const holder = start(["lock", "cols", "--", "sh", "-c", "echo in; exec sleep 30"], env);
    await waitFor(() => holder.out().includes("in"), "the holder");
    const waiting = me.lock("cols").acquire();
    await waitForWaiters(me, "cols", 1);
    const permit = await me.semaphore("pool", { limit: 3 }).acquire();
    try {
      const shown = await baton(["status", "--long-wait", "0ms"], env);
      assert.equal(shown.status, 0, shown.stderr);
      const pid = holder.child.pid;
      assert.match(shown.stdout, /NAME\s+STATE\s+MODE\s+HELD\s+WAITING\s+TOKEN\s+MEMBER\s+PID\s+HOST\s+COMMAND/);
      assert.match(
        shown.stdout,
        new RegExp(
          `cols\\s+holds\\s+exclusive\\s+\\d\\S*\\s+\\d+\\s+\\S+:${pid}:\\w+/sh%20-c%20echo%20in;%20exec%20sleep%2030\\s+${pid}\\s+${hostname()}\\s+sh -c echo in; exec sleep 30`,
        ),
      );
      assert.match(shown.stdout, /cols\s+waits\s+exclusive\s+\d\S* !\s+test-parent/, "a long wait is marked");
      assert.match(shown.stdout, /pool\s+1\/3\s+holds/);
      const json = JSON.parse((await baton(["status", "--json"], env)).stdout) as {
        locks: { name: string; holders: { process?: { pid: number; host: string; command?: string } }[] }[];
      };
      assert.deepEqual(json.locks.find((l) => l.name === "cols")?.holders[0]?.process, {
        host: hostname(),
        pid,
        command: "sh -c echo in; exec sleep 30",
      });
    } finally {
      holder.child.kill("SIGTERM");
      await holder.exit;
      await (await waiting).release();
      await permit.release();
    }
  });

  it("status --watch redraws until interrupted, showing a release", async () => {
    const held = await me.lock("watched").acquire();
    const watch = start(["status", "--watch", "--interval", "100ms"], env);
    try {
      await waitFor(() => /watched\s+holds/.test(watch.out()), "the holder in the table");
      await held.release();
      await waitFor(() => /locks: none\s*$/.test(watch.out()), "a redraw without it");
      assert.ok(watch.out().split("Every 0.1s: baton status").length > 2, "several snapshots");
    } finally {
      watch.child.kill("SIGINT");
      assert.equal(await watch.exit, 0);
    }
  });

  it("status --watch on a terminal redraws in place on the alternate screen and restores it", async () => {
    const held = await me.lock("on-tty").acquire();
    // script(1) gives baton a pseudo-terminal.
    // exec: script(1) runs this with $SHELL -c, and a dash that stays as the parent would
    // itself die of the SIGINT (status 130) whatever baton does.
    const command = `exec ${process.execPath} ${BIN} status --watch --interval 100ms`;
    const child = spawn("script", ["-qec", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const status = new Promise<number | null>((resolve) => child.once("close", resolve));
    try {
      await waitFor(() => out.split("\u001b[H\u001b[2J").length > 2 && /on-tty\s+holds/.test(out), "two redraws");
      assert.ok(out.startsWith("\u001b[?1049h"), "the alternate screen first");
    } finally {
      child.stdin.write("\u0003");
      await held.release();
    }
    assert.equal(await status, 0, out);
    assert.ok(out.includes("\u001b[?1049l"), "the screen restored on Ctrl-C");
  });

  it("status --serve answers /metrics in the Prometheus format", async () => {
    const held = await me.lock("scraped").acquire();
    const server = start(["status", "--serve", "0"], env);
    try {
      await waitFor(() => /http:\/\/127\.0\.0\.1:\d+\//.test(server.out()), "the page to be served");
      const base = /http:\/\/127\.0\.0\.1:\d+\//.exec(server.out())?.[0] as string;
      const metrics = await fetch(`${base}metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /baton_status_holders\{[^}]*baton_kind="lock"[^}]*\} 1/);
      const namespaces = (await (await fetch(`${base}namespaces.json`)).json()) as { switchable: boolean };
      assert.equal(namespaces.switchable, true);
      assert.equal((await fetch(`${base}status.json?namespace=${"x".repeat(200)}`)).status, 400);
    } finally {
      server.child.kill("SIGTERM");
      assert.equal(await server.exit, 0);
      await held.release();
    }
  });

  it("completes commands and options in bash, and writes a zsh completion", async () => {
    const script = join(dir, "baton.bash");
    writeFileSync(script, (await baton(["completion", "bash"], env)).stdout);
    const complete = (words: string[]) =>
      spawnSync(
        "bash",
        [
          "-c",
          `source "$1"; COMP_WORDS=(${words.join(" ")}); COMP_CWORD=${words.length - 1}; _baton; echo "\${COMPREPLY[@]}"`,
          "_",
          script,
        ],
        { encoding: "utf8" },
      ).stdout.trim();
    assert.equal(complete(["baton", "st"]), "status");
    assert.equal(complete(["baton", "lock", "job", "--verb"]), "--verbose");
    assert.equal(complete(["baton", "elect", "x", "--lis"]), "--listen");
    assert.equal(complete(["baton", "cell", "tr"]), "transition");
    const zsh = await baton(["completion", "zsh"], env);
    assert.match(zsh.stdout, /^#compdef baton/);
    assert.match(zsh.stdout, /"status"\) compadd -- .*--watch/);
    assert.equal((await baton(["completion", "fish"], env)).status, 64);
  });
});
