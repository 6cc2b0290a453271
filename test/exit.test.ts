/**
 * A program that forgets `close()` still exits by itself: no backend's background timers
 * (session renewal, lease expiry) hold the event loop open alone, while an in-flight wait
 * does keep the process alive until it is granted. Real child processes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type EtcdServer, startEtcd } from "./harness/etcd.js";
import { type PgServer, startPostgres } from "./harness/postgres.js";

const FIXTURE = fileURLToPath(new URL("./fixtures/forgetful.ts", import.meta.url));
// Far above what exiting takes (well under 2 s even on a loaded machine), far below a TTL
// renewal loop that would run forever.
const EXIT_WITHIN_MS = 20_000;

/** Runs the fixture; resolves with its exit code and output, or kills it after the limit. */
function run(url: string, mode: string): Promise<{ code: number | null; out: string; hung: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", FIXTURE, url, mode], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
    });
    child.stderr.on("data", (chunk) => {
      out += chunk;
    });
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      child.kill("SIGKILL");
    }, EXIT_WITHIN_MS);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, out, hung });
    });
  });
}

describe("a forgotten close() does not keep the process alive", () => {
  const dir = mkdtempSync(join(tmpdir(), "baton-exit-"));
  let etcd: EtcdServer | undefined;
  let postgres: PgServer | undefined;
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await etcd?.stop();
    await postgres?.stop();
  });
  const targets: [string, () => Promise<string>][] = [
    ["memory", async () => "memory://forgetful"],
    ["file", async () => pathToFileURL(dir).href],
    ["etcd", async () => (etcd ??= await startEtcd()).url],
    ["postgres", async () => (postgres ??= await startPostgres()).url],
  ];
  for (const [name, target] of targets) {
    it(`${name}: exits by itself while holding a lock it never released`, async () => {
      const url = await target();
      const result = await run(url, "hold");
      assert.equal(result.hung, false, `the process did not exit within ${EXIT_WITHIN_MS} ms: ${result.out}`);
      assert.equal(result.code, 0, result.out);
      assert.match(result.out, /done/);
    });

    it(`${name}: stays alive for an in-flight wait, then exits by itself`, async () => {
      const url = await target();
      const result = await run(url, "wait");
      assert.equal(result.hung, false, `the process did not exit within ${EXIT_WITHIN_MS} ms: ${result.out}`);
      assert.match(result.out, /granted \d+\ndone/, "the wait kept the process alive until granted");
      assert.equal(result.code, 0, result.out);
    });
  }
});
