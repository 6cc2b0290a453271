/**
 * Debian's Chromium, driven by playwright-core (no browser download): headless, no
 * network beyond loopback (background services, QUIC, sync and updates off), an empty
 * profile in a temporary directory removed on close.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

/** Where Debian's `chromium` package puts the browser. */
export const CHROMIUM = "/usr/bin/chromium";

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A started browser; `close()` ends it and removes its profile. */
export interface Browser {
  readonly context: BrowserContext;
  close(): Promise<void>;
}

/** Starts Chromium with an empty profile. Fails clearly when the package is missing. */
export async function startChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: bash scripts/ensure-servers.sh chromium installs Debian's chromium`);
  }
  const base = process.env.BATON_HARNESS_TMPDIR ?? tmpdir();
  const profile = mkdtempSync(join(base, "baton-chromium-"));
  // Playwright passes the profile as --user-data-dir itself (it refuses one in args).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 720 },
    timeout: 60_000,
  });
  return {
    context,
    close: async () => {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
