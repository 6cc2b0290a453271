/**
 * The status page in a real browser (Debian's Chromium through playwright-core): while
 * other `baton` processes hold and wait, the page served by `baton status --serve` shows
 * the holder and the waiter with their pids, updates after the release, and logs no
 * console error. Writes a screenshot (to $BATON_SCREENSHOT_TO, else a temporary file).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { type Coordinator, connect } from "../src/index.js";
import { waitFor, waitForWaiters } from "./conformance/helpers.js";
import { start } from "./fixtures/cli.js";
import { type Browser, startChromium } from "./harness/chromium.js";

describe("status page in Chromium", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let me: Coordinator;
  let browser: Browser;

  before(async () => {
    dir = mkdtempSync(join(process.env.BATON_HARNESS_TMPDIR ?? tmpdir(), "baton-page-"));
    env = { ...process.env, BATON_URL: pathToFileURL(dir).href };
    me = await connect(env.BATON_URL, { memberId: "test-parent" });
    browser = await startChromium();
  });

  after(async () => {
    await browser?.close();
    await me?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("shows the holder and the waiter of other processes, and updates after the release", async () => {
    const holder = start(["lock", "nightly", "--", "sh", "-c", "echo in; exec sleep 60"], env);
    const server = start(["status", "--serve", "0", "--long-wait", "1s"], env);
    let waiter: ReturnType<typeof start> | null = null;
    const problems: string[] = [];
    try {
      await waitFor(() => holder.out().includes("in"), "the holder");
      waiter = start(["lock", "nightly", "--", "true"], env);
      await waitForWaiters(me, "nightly", 1);
      const permit = await me.semaphore("encoders", { limit: 4 }).acquire();
      const leading = await me.election("scheduler").campaign("host-a:8080");
      await waitFor(() => /http:\/\/127\.0\.0\.1:\d+\//.test(server.out()), "the page to be served");
      const base = /http:\/\/127\.0\.0\.1:\d+\//.exec(server.out())?.[0] as string;

      const page = await browser.context.newPage();
      page.on("console", (message) => {
        if (message.type() === "error") problems.push(`console: ${message.text()}`);
      });
      page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
      page.on("requestfailed", (request) => problems.push(`request failed: ${request.url()}`));
      await page.goto(base);

      const holderRow = page.locator("tr.holder", { hasText: "nightly" });
      const waiterRow = page.locator("tr.waiter", { hasText: "nightly" });
      await holderRow.filter({ hasText: String(holder.child.pid) }).waitFor({ timeout: 15_000 });
      await waiterRow.filter({ hasText: String(waiter.child.pid) }).waitFor({ timeout: 15_000 });
      assert.match(await holderRow.innerText(), /sh -c echo in; exec sleep 60/, "the holder's command");
      assert.match(await page.locator("tr.holder", { hasText: "encoders" }).innerText(), /1 \/ 4/, "permits used");
      // The wait passes --long-wait (1 s) while the page refreshes: it turns highlighted.
      await waiterRow.locator("td.long").waitFor({ timeout: 15_000 });
      assert.match(
        await page.locator("tr.leader", { hasText: "scheduler" }).innerText(),
        /leads.*host-a:8080.*test-parent/s,
      );
      assert.equal(await page.locator("#namespace").isDisabled(), false, "the picker can switch");
      await page.screenshot({ path: process.env.BATON_SCREENSHOT_TO ?? join(dir, "status.png"), fullPage: true });

      holder.child.kill("SIGTERM");
      await holder.exit;
      assert.equal(await waiter.exit, 0, "the waiter got the lock once the holder released");
      await page.locator("tr", { hasText: "nightly" }).first().waitFor({ state: "detached", timeout: 15_000 });
      assert.equal(await page.locator("tr.waiter").count(), 0);
      await permit.release();
      await leading.resign();
      await page.close();
      assert.deepEqual(problems, []);
    } finally {
      holder.child.kill("SIGKILL");
      waiter?.child.kill("SIGKILL");
      server.child.kill("SIGTERM");
      await server.exit;
    }
    const png = readFileSync(process.env.BATON_SCREENSHOT_TO ?? join(dir, "status.png"));
    assert.equal(png.subarray(1, 4).toString(), "PNG");
  });
});
