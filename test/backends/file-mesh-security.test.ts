/**
 * The file backend's mesh against other local users and against broken or hostile peers:
 * another uid gets nothing at all, and no line a peer sends (malformed, oversized, out of
 * order, of the wrong types) crashes a holder or changes what it holds or publishes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { type Coordinator, connect } from "../../src/index.js";
import { waitFor } from "../conformance/helpers.js";
import { Puppet } from "../fixtures/puppets.js";

const NOBODY = 65534;

/** Run as another uid: looks for Baton's sockets every way it can and tries to talk. */
const ATTACKER = String.raw`
import { readdirSync, readFileSync } from "node:fs";
import { connect } from "node:net";
const [dir, socketPath, ...pids] = process.argv.slice(2);
const out = { abstract: [], readdir: null, connects: [] };
for (const line of readFileSync("/proc/net/unix", "utf8").split("\n")) {
  const at = line.indexOf("@baton");
  // Only sockets of the processes under test: other Baton processes may run on this host.
  if (at >= 0 && pids.some((pid) => line.includes("." + pid + "-"))) out.abstract.push(line.slice(at).trim());
}
try { readdirSync(dir); out.readdir = "listed"; } catch (e) { out.readdir = e.code; }
const targets = [socketPath, ...out.abstract.map((name) => "\0" + name.slice(1))];
const forged = [
  { t: "hello", peer: "1-deadbeef" },
  { t: "req", id: 1, op: "inspect", namespace: "default", prefix: "" },
  { t: "req", id: 2, op: "list", space: "default\u0000group/workers" },
  { t: "push", k: "rec", space: "default\u0000election/boss",
    event: { type: "put", entry: { key: "forged", value: "{}", sessionId: "x", createdAt: 1 } } },
  { t: "push", k: "rec", space: "group/x", event: null },
].map((m) => JSON.stringify(m)).join("\n") + "\n";
await Promise.all(targets.map((path) => new Promise((resolve) => {
  const result = { path: JSON.stringify(path), error: null, received: "" };
  out.connects.push(result);
  const socket = connect(path);
  socket.on("error", (e) => { result.error = e.code; resolve(); });
  socket.on("connect", () => { socket.write(forged); setTimeout(() => { socket.destroy(); resolve(); }, 500); });
  socket.on("data", (d) => { result.received += d; });
})));
process.stdout.write(JSON.stringify(out));
`;

function runAs(uid: number, script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { uid, gid: uid, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`attacker exited ${code}`))));
  });
}

/** Opens a raw connection to a process's mesh socket, as a same-uid process could. */
function rawLink(path: string): Promise<{ socket: Socket; closed: Promise<void>; received: () => string }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(path);
    let received = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => (received += d));
    const closed = new Promise<void>((done) => socket.once("close", () => done()));
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.removeListener("error", reject);
      socket.on("error", () => {});
      resolve({ socket, closed, received: () => received });
    });
  });
}

describe("file backend mesh security", () => {
  let dir: string;
  let url: string;
  let holder: Puppet;
  let me: Coordinator;
  let socketPath: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "baton-mesh-sec-"));
    url = pathToFileURL(dir).href;
    holder = new Puppet(url);
    await holder.do("acquire", { name: "precious" });
    await holder.do("join", { group: "workers" });
    await holder.do("campaign", { election: "boss", value: "http://real-leader" });
    me = await connect(url, { memberId: "observer" });
    const socket = readdirSync(join(dir, "peers")).find((s) => s.startsWith(`${holder.pid}-`));
    assert.ok(socket, "the holder listens in the directory's peers folder");
    socketPath = join(dir, "peers", socket);
  });

  after(async () => {
    holder.kill();
    await holder.exited();
    await me.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** What the holder holds and publishes, as a legitimate peer sees it. */
  async function view() {
    const info = await me.inspect();
    return {
      holders: info.locks.find((l) => l.name === "precious")?.holders.map((h) => h.memberId),
      members: (await me.group("workers").members()).map((m) => m.memberId).sort(),
      leader: (await me.election("boss").leader())?.value,
    };
  }

  it("gives a process of another uid nothing: no socket to find, none it may open", async (t) => {
    if (process.getuid?.() !== 0) return t.skip("needs root to run a process as nobody");
    const before = await view();
    assert.deepEqual(before, {
      holders: [`puppet-${holder.pid}`],
      members: [`puppet-${holder.pid}`],
      leader: "http://real-leader",
    });
    const scratch = mkdtempSync(join(tmpdir(), "baton-attacker-"));
    chmodSync(scratch, 0o755);
    const script = join(scratch, "attacker.mjs");
    writeFileSync(script, ATTACKER, { mode: 0o644 });
    try {
      const out = JSON.parse(
        await runAs(NOBODY, script, [dir, socketPath, String(holder.pid), String(process.pid)]),
      ) as {
        abstract: string[];
        readdir: string;
        connects: { path: string; error: string | null; received: string }[];
      };
      assert.deepEqual(out.abstract, [], "no abstract socket of the holder or this process is in /proc/net/unix");
      assert.equal(out.readdir, "EACCES");
      assert.equal(out.connects.length, 1);
      for (const c of out.connects) {
        assert.equal(c.error, "EACCES", `connecting to ${c.path} is refused`);
        assert.equal(c.received, "", "nothing is answered");
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
    assert.deepEqual(await view(), before, "nothing the attacker sent changed what the holder holds or publishes");
  });

  it("closes the link of a peer that breaks the protocol, and the holder lives on", async () => {
    const hello = `${JSON.stringify({ t: "hello", peer: "1-deadbeef" })}\n`;
    const record = { key: "k", value: "{}", sessionId: "s", createdAt: 1 };
    const broken: [string, string][] = [
      ["the crash from the issue", '{"t":"push","k":"rec","space":"group/x","event":null}'],
      ["not JSON", "{nope"],
      ["not an object", "[1,2,3]"],
      ["a number", "42"],
      ["null", "null"],
      ["no type", '{"peer":"1-deadbeef"}'],
      ["a second hello", JSON.stringify({ t: "hello", peer: "2-deadbeef" })],
      ["sub with a string slot", JSON.stringify({ t: "req", id: 1, op: "sub", slots: ["1"] })],
      ["sub with no slots", JSON.stringify({ t: "req", id: 1, op: "sub", slots: [] })],
      ["sub with a negative slot", JSON.stringify({ t: "req", id: 1, op: "sub", slots: [-2] })],
      ["sub with slots as an object", JSON.stringify({ t: "req", id: 1, op: "sub", slots: { length: 1e9 } })],
      ["a request without id", JSON.stringify({ t: "req", op: "inspect", namespace: "default", prefix: "" })],
      ["an unknown request", JSON.stringify({ t: "req", id: 1, op: "shutdown" })],
      ["inspect with a number namespace", JSON.stringify({ t: "req", id: 1, op: "inspect", namespace: 1, prefix: "" })],
      ["free of a fractional slot", JSON.stringify({ t: "push", k: "free", slot: 1.5 })],
      ["an unknown push", JSON.stringify({ t: "push", k: "explode" })],
      ["a put without entry", JSON.stringify({ t: "push", k: "rec", space: "s", event: { type: "put" } })],
      [
        "a record whose value is not JSON",
        JSON.stringify({ t: "push", k: "rec", space: "s", event: { type: "put", entry: { ...record, value: "{" } } }),
      ],
      [
        "a record with a string createdAt",
        JSON.stringify({
          t: "push",
          k: "rec",
          space: "s",
          event: { type: "put", entry: { ...record, createdAt: "1" } },
        }),
      ],
      ["an oversized space", JSON.stringify({ t: "push", k: "runsub", space: "x".repeat(5000) })],
      ["a cell push without bucket", JSON.stringify({ t: "push", k: "cell" })],
      ["a cell push with a negative bucket", JSON.stringify({ t: "push", k: "cell", bucket: -1 })],
      ["a cell push with a string bucket", JSON.stringify({ t: "push", k: "cell", bucket: "3" })],
      ["a cell push with a huge bucket", JSON.stringify({ t: "push", k: "cell", bucket: 1e12 })],
      ["a response to nothing, malformed", '{"t":"res","id":"x"}'],
    ];
    for (const [what, line] of broken) {
      const link = await rawLink(socketPath);
      link.socket.write(`${hello}${line}\n`);
      await link.closed;
      assert.ok(!link.received().includes('"t":"res"'), `${what}: nothing was answered`);
    }
    // A request before hello is not served either.
    const early = await rawLink(socketPath);
    early.socket.write(`${JSON.stringify({ t: "req", id: 1, op: "inspect", namespace: "default", prefix: "" })}\n`);
    await early.closed;
    assert.ok(!early.received().includes('"t":"res"'), "no answer before hello");
    assert.equal(holder.child.exitCode, null, "the holder is alive");
    assert.deepEqual(await view(), {
      holders: [`puppet-${holder.pid}`],
      members: [`puppet-${holder.pid}`],
      leader: "http://real-leader",
    });
  });

  it("drops a line longer than the limit without buffering it forever", async () => {
    const link = await rawLink(socketPath);
    link.socket.write(`${JSON.stringify({ t: "hello", peer: "1-deadbeef" })}\n`);
    const chunk = "x".repeat(1024 * 1024);
    // 65 MiB without a newline: past the 64 MiB line limit.
    for (let i = 0; i < 65 && !link.socket.destroyed; i++) {
      if (!link.socket.write(chunk))
        await Promise.race([new Promise((r) => link.socket.once("drain", r)), link.closed]);
    }
    await link.closed;
    assert.equal(holder.child.exitCode, null, "the holder is alive");
  });

  it("survives a fuzzed stream of messages from a peer that said hello (seeded)", async () => {
    const seed = Number(process.env.BATON_FUZZ_SEED ?? 20261201);
    const field = fc.oneof(fc.jsonValue(), fc.constantFrom("put", "delete", "sub", "rec", "free", "inspect"));
    const message = fc.oneof(
      fc.jsonValue(),
      fc.record({ t: fc.constantFrom("req", "push", "res", "hello"), op: field, k: field, id: field }),
      fc.record({
        t: fc.constant("push"),
        k: fc.constantFrom("rec", "free", "pass", "unsub", "runsub"),
        space: field,
        event: fc.oneof(field, fc.record({ type: fc.constantFrom("put", "delete"), entry: field, key: field })),
        slot: field,
        slots: field,
      }),
      fc.record({
        t: fc.constant("req"),
        id: field,
        op: fc.constantFrom("sub", "rsub", "list", "inspect"),
        space: field,
        slots: field,
        namespace: field,
        prefix: field,
      }),
    );
    const lines = fc.sample(
      fc.oneof(
        message.map((m) => JSON.stringify(m) ?? "null"),
        fc.string(),
      ),
      { seed, numRuns: 400 },
    );
    const open = async () => {
      const next = await rawLink(socketPath);
      let closed = false;
      void next.closed.then(() => (closed = true));
      next.socket.write(`${JSON.stringify({ t: "hello", peer: "1-deadbeef" })}\n`);
      return { ...next, isClosed: () => closed };
    };
    // After each fuzzed line a valid request follows: the holder either answers it (the
    // line was harmless) or has closed the link (the line broke the protocol). Waiting for
    // one of the two makes the count below independent of scheduling.
    const probeAnsweredOrClosed = (link: Awaited<ReturnType<typeof open>>, id: number) =>
      new Promise<void>((resolve) => {
        const marker = new RegExp(`"t":"res","id":${id}[,}]`);
        const check = () => {
          if (!link.isClosed() && !marker.test(link.received())) return;
          link.socket.off("data", check);
          resolve();
        };
        link.socket.on("data", check);
        void link.closed.then(check);
        check();
      });
    let link = await open();
    let links = 1;
    let probe = 1_000_000;
    for (const line of lines) {
      if (link.isClosed()) {
        link = await open();
        links++;
      }
      probe++;
      const request = { t: "req", id: probe, op: "inspect", namespace: "default", prefix: "" };
      link.socket.write(`${line.replaceAll("\n", " ")}\n${JSON.stringify(request)}\n`);
      await probeAnsweredOrClosed(link, probe);
    }
    link.socket.destroy();
    assert.ok(links > 1, `some fuzzed lines closed the link (seed ${seed})`);
    assert.ok(links < lines.length, `some fuzzed lines were harmless and answered after (seed ${seed})`);
    await waitFor(async () => (await view()).holders !== undefined, "the holder still answers");
    assert.equal(holder.child.exitCode, null, `the holder is alive (seed ${seed})`);
    const after = await view();
    assert.deepEqual(after.holders, [`puppet-${holder.pid}`]);
    assert.deepEqual(after.members, [`puppet-${holder.pid}`], "no forged member appeared");
    assert.equal(after.leader, "http://real-leader", "no forged leader appeared");
  });
});
