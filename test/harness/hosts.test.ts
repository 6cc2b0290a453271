/**
 * The network-namespace hosts harness itself: addresses only in 127.1.0.0/24, silent
 * isolation and splits, heal resuming established connections, and cleanup (close(),
 * and SIGINT of a process that did not close). Skipped, with the reason, without root.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { type Host, type Hosts, hostsUnavailable, startHosts } from "./hosts.js";

const skip = hostsUnavailable() ?? false;
const PORT = 7000;
const FIXTURE = fileURLToPath(new URL("../fixtures/hosts-sigint.ts", import.meta.url));

/** An echo server on the host's address. */
const ECHO = `require("net").createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen(${PORT}, process.argv[1], () => process.send?.("up"));`;

/**
 * From `from`, connect to `to`, send a line, wait `ms` for its echo: "echo", "timeout"
 * (silence: no refusal, no reset), or the socket error's code.
 */
function probe(from: Host, to: Host, ms = 800): Promise<string> {
  const code = `const s = require("net").connect(${PORT}, "${to.address}", () => s.write("x"));
s.on("data", () => { console.log("echo"); process.exit(0); });
s.on("error", (e) => { console.log(e.code); process.exit(0); });
setTimeout(() => { console.log("timeout"); process.exit(0); }, ${ms});`;
  return from.run(process.execPath, ["-e", code]).then((out) => out.trim());
}

let hosts: Hosts;
before(async () => {
  if (skip) return;
  hosts = await startHosts(["a", "b", "c", "d"]);
  await Promise.all(
    [...hosts.hosts.values()].map(async (h) => {
      const child = h.fork("-e", [ECHO, h.address], { execArgv: [] });
      await once(child, "message");
    }),
  );
});
after(() => hosts?.close());

test("hosts have loopback-range addresses only and reach each other", { skip }, async () => {
  const a = hosts.host("a");
  assert.deepEqual(
    [...hosts.hosts.values()].map((h) => h.address),
    ["127.1.0.10", "127.1.0.11", "127.1.0.12", "127.1.0.13"],
  );
  assert.equal(await probe(a, hosts.host("b")), "echo");
  assert.equal(await probe(hosts.host("d"), a), "echo");
  const routes = await a.run("ip", ["-4", "route", "show", "table", "all"]);
  assert.doesNotMatch(routes, /^default/m, "no default route: nothing leaves the machine");
  const addrs = await a.run("ip", ["-4", "-o", "addr"]);
  for (const m of addrs.matchAll(/inet (\S+)/g)) assert.match(m[1] as string, /^127\./);
  // Any other range is unreachable from a host.
  const out = await a.run(process.execPath, [
    "-e",
    `require("net").connect(80, "10.0.0.1").on("error", (e) => console.log(e.code)).on("connect", () => console.log("connected"))`,
  ]);
  assert.equal(out.trim(), "ENETUNREACH");
});

test("isolate is silent both ways; heal resumes an established connection", { skip }, async () => {
  const a = hosts.host("a");
  const b = hosts.host("b");
  // A long-lived connection from b to a, driven over IPC.
  const client = b.fork(
    "-e",
    [
      `const s = require("net").connect(${PORT}, "${a.address}", () => process.send("connected"));
       s.on("data", (d) => process.send("echo:" + d));
       s.on("error", (e) => process.send("error:" + e.code));
       s.on("close", () => process.send("close"));
       process.on("message", (m) => s.write(m));`,
    ],
    { execArgv: [] },
  );
  const events: string[] = [];
  client.on("message", (m) => events.push(String(m)));
  await once(client, "message");
  try {
    await hosts.isolate("a");
    assert.deepEqual(hosts.sides, [["a"], ["b", "c", "d"]]);
    assert.equal(await probe(b, a), "timeout", "no refusal, no reset: silence");
    assert.equal(await probe(a, b), "timeout");
    assert.equal(await probe(b, hosts.host("c")), "echo", "the majority side still works");
    client.send("late");
    await new Promise((r) => setTimeout(r, 700));
    assert.deepEqual(events, ["connected"], "nothing crossed the split, and the connection did not break");
    await hosts.heal();
    assert.equal(await probe(b, a, 3000), "echo");
    while (!events.includes("echo:late")) await once(client, "message");
    assert.ok(!events.some((e) => e.startsWith("error") || e === "close"), events.join(", "));
  } finally {
    client.kill();
    await hosts.heal();
  }
});

test("split: each side reaches only itself", { skip }, async () => {
  const [a, b, c, d] = ["a", "b", "c", "d"].map((n) => hosts.host(n)) as [Host, Host, Host, Host];
  await hosts.split(["a", "b"], ["c"]);
  try {
    assert.deepEqual(hosts.sides, [["a", "b"], ["c"], ["d"]]);
    const results = await Promise.all([probe(a, b), probe(a, c), probe(c, d), probe(d, b), probe(b, a)]);
    assert.deepEqual(results, ["echo", "timeout", "timeout", "timeout", "echo"]);
    await assert.rejects(hosts.split(["a"], ["a", "b"]), /host a is on two sides/);
    await assert.rejects(hosts.split(["zz"]), /no host "zz"/);
  } finally {
    await hosts.heal();
  }
  assert.deepEqual(await Promise.all([probe(a, c), probe(d, b)]), ["echo", "echo"]);
});

test("bad host names are refused with what is allowed", { skip }, async () => {
  await assert.rejects(startHosts(["ok", "Bad-Name"]), /host name "Bad-Name" must match/);
  await assert.rejects(startHosts(["x", "x"]), /distinct host names/);
  await assert.rejects(startHosts([]), /distinct host names/);
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

function namespaces(): string[] {
  return execFileSync("/usr/sbin/ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "");
}

test("a process interrupted with SIGINT leaves no namespace and no process behind", { skip }, async () => {
  const child = spawn(process.execPath, ["--import", "tsx", FIXTURE], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.setEncoding("utf8");
  while (!out.includes("\n")) out += (await once(child.stdout, "data"))[0];
  const { netns, pid } = JSON.parse(out) as { netns: string[]; pid: number };
  // Names are unique per run: this process's own hosts coexist with the child's.
  for (const ns of netns) assert.ok(namespaces().includes(ns), `${ns} exists while the child runs`);
  assert.ok(!netns.includes(hosts.host("a").netns));
  process.kill(pid, 0);
  child.kill("SIGINT");
  const [code, signal] = await once(child, "exit");
  assert.ok(signal === "SIGINT" || code !== 0, `the child was interrupted (${code}, ${signal})`);
  const left = namespaces();
  for (const ns of [...netns, netns[0]?.replace(/-one$/, "-sw") ?? ""]) assert.ok(!left.includes(ns), `${ns} removed`);
  // SIGKILLed by the child's exit hook; reaped by init a moment later.
  const deadline = Date.now() + 5000;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(!alive(pid), "the process started in the host was killed");
});

test("a gateway reaches a server in a host from the test process, split or not", { skip }, async () => {
  const gw = await hosts.host("c").gateway(PORT);
  const echo = async (): Promise<string> => {
    const s = net.connect(gw.port, "127.0.0.1");
    s.write("via-gateway");
    const [data] = await once(s, "data");
    s.destroy();
    return String(data);
  };
  try {
    assert.equal(await echo(), "via-gateway");
    await hosts.isolate("c");
    assert.equal(await echo(), "via-gateway");
  } finally {
    await hosts.heal();
    await gw.close();
  }
});
