/**
 * `baton lock --fence-info/--lock-delay/--on-takeover` and `baton unlock`, end to end: the
 * built binary, real processes, the file backend in a private directory and a real etcd
 * (for a revoke that succeeds).
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { type Coordinator, connect } from "../src/index.js";
import { waitFor } from "./conformance/helpers.js";
import { BIN, baton, start } from "./fixtures/cli.js";
import { type EtcdServer, startEtcd } from "./harness/etcd.js";

/** Starts a `baton lock` holder whose command says "started" and sleeps. */
async function holder(name: string, flags: string[], env: NodeJS.ProcessEnv) {
  const run = start(["lock", name, ...flags, "--", "sh", "-c", "echo started; exec sleep 600"], env);
  await waitFor(() => run.out().includes("started"), "the holder's command to start");
  return run;
}

describe("baton CLI takeover (file backend)", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let me: Coordinator;

  before(async () => {
    assert.ok(existsSync(BIN), "run `npm run build` first (npm test does)");
    dir = mkdtempSync(join(tmpdir(), "baton-cli-takeover-"));
    env = { ...process.env, BATON_URL: pathToFileURL(dir).href };
    me = await connect(env.BATON_URL, { memberId: "test-parent" });
  });

  after(async () => {
    await me.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("after a SIGKILLed holder, --on-takeover runs first with BATON_PREVIOUS_*, then the command", async () => {
    const a = await holder("img", ["--fence-info", '{"pid":4242,"host":"nova-3"}'], env);
    const token = (await me.inspect()).takeovers?.find((t) => t.name === "img")?.token;
    a.child.kill("SIGKILL");
    await a.exit;
    const log = join(dir, "order.log");
    const show = 'echo "$0 $BATON_PREVIOUS_TOKEN $BATON_PREVIOUS_MEMBER $BATON_PREVIOUS_FENCE_INFO" >> ';
    const next = await baton(
      [
        "lock",
        "img",
        "--timeout",
        "20s",
        "--on-takeover",
        `sh -c '${show}${log}' hook`,
        "--",
        "sh",
        "-c",
        `${show}${log}`,
        "command",
      ],
      env,
    );
    assert.equal(next.status, 0, next.stderr);
    const lines = readFileSync(log, "utf8").trim().split("\n");
    assert.equal(lines.length, 2);
    const [hook, command] = lines.map((l) => l.split(" "));
    assert.equal(hook?.[0], "hook", "the hook ran first");
    assert.equal(command?.[0], "command");
    assert.equal(hook?.[1], String(token));
    assert.match(hook?.[2] ?? "", /:/, "the previous member id");
    assert.deepEqual(JSON.parse(hook?.[3] ?? ""), { pid: 4242, host: "nova-3" });
    assert.deepEqual(command?.slice(1), hook?.slice(1), "the command sees the same previous holding");
    const again = await baton(["lock", "img", "--on-takeover", "exit 9", "--", "true"], env);
    assert.equal(again.status, 0, "a clean release leaves no takeover, so the hook does not run");
  });

  it("a failing --on-takeover exits 77, the command does not run and nothing stays held", async () => {
    const a = await holder("f", ["--fence-info", '"rack-4"'], env);
    a.child.kill("SIGKILL");
    await a.exit;
    const marker = join(dir, "ran");
    const failed = await baton(
      ["lock", "f", "--timeout", "20s", "--on-takeover", "exit 3", "--", "touch", marker],
      env,
    );
    assert.equal(failed.status, 77, failed.stderr);
    assert.match(failed.stderr, /exited with 3/);
    assert.equal(existsSync(marker), false, "the command did not run");
    const info = await me.inspect();
    assert.deepEqual(info.locks.find((l) => l.name === "f")?.holders ?? [], []);
    assert.equal(info.takeovers?.find((t) => t.name === "f")?.state, "lost", "still to be fenced");
  });

  it("refuses bad takeover flags with exit 64", async () => {
    const cases = [
      ["--fence-info", "{bad"],
      ["--fence-info", JSON.stringify("x".repeat(5000))],
      ["--lock-delay", "2m"],
      ["--lock-delay", "-1s"],
      ["--lock-delay", "soon"],
    ];
    for (const flags of cases) {
      const result = await baton(["lock", "bad", ...flags, "--", "true"], env);
      assert.equal(result.status, 64, `${flags.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, /fence-info|fenceInfo|lock-delay/);
    }
  });

  it("baton unlock cannot revoke on the file backend: exit 78 with the holder's pid; --kill ends it", async () => {
    const a = await holder("stuck", [], env);
    const refused = await baton(["unlock", "stuck"], env);
    assert.equal(refused.status, 78, refused.stderr);
    assert.match(refused.stderr, new RegExp(`process ${a.child.pid} `));
    const killed = await baton(["unlock", "stuck", "--kill"], env);
    assert.equal(killed.status, 0, killed.stderr);
    assert.match(killed.stdout, new RegExp(`pid ${a.child.pid}`));
    await a.exit;
    const free = await me.lock("stuck").acquire({ timeoutMs: 10_000 });
    await free.release();
    const none = await baton(["unlock", "stuck"], env);
    assert.equal(none.status, 0);
    assert.match(none.stderr, /not held/);
  });
});

describe("baton unlock (etcd)", () => {
  let server: EtcdServer;
  let env: NodeJS.ProcessEnv;
  let me: Coordinator;

  before(async () => {
    server = await startEtcd();
    env = { ...process.env, BATON_URL: server.url };
    me = await connect(server.url, { memberId: "test-parent" });
  });

  after(async () => {
    await me.close();
    await server.stop();
  });

  it("revokes the holder's lease: its command is stopped (exit 76) and the next holder gets the takeover", async () => {
    const a = await holder("vm", ["--fence-info", '{"vm":"i-7"}', "--ttl", "10s"], env);
    const member = (await me.inspect()).locks.find((l) => l.name === "vm")?.holders[0]?.memberId;
    const revoked = await baton(["unlock", "vm", "--member", String(member)], env);
    assert.equal(revoked.status, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`revoked ${member}`));
    assert.equal(await a.exit, 76, "the revoked holder's command was stopped as lost");
    const next = await me.lock("vm").acquire({ takeover: true, timeoutMs: 10_000 });
    assert.equal(next.takeover?.memberId, member);
    assert.deepEqual(next.takeover?.fenceInfo, { vm: "i-7" });
    await next.release();
  });
});
