/**
 * Nova's image-cache ager under takeover, with real processes on the file backend: ager A
 * starts a deleter and dies (SIGKILL) in the middle of deleting image-7, leaving the
 * deleter running; ager B, already waiting for the lock, is handed A's fence info (the
 * deleter's pid) as `handle.takeover`, fences it in `onTakeover` (SIGKILL, wait until gone)
 * and only then deletes the rest. Run once with fencing and once without (`--no-fence`).
 * `npx tsx examples/takeover/run.ts`.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { connect } from "../../src/index.js";

const AGER = fileURLToPath(new URL("./ager.ts", import.meta.url));

/** What one run showed. */
export interface TakeoverResult {
  /** Steps the lost ager's deleter took after the next ager went on: 0 when fenced. */
  readonly staleSteps: number;
  /** Chunks of the image left undeleted (0: the image is gone). */
  readonly remaining: number;
  /** What the second ager's onTakeover was told (the first ager's fence info). */
  readonly handedOver: string;
}

interface Line {
  readonly who: string;
  readonly what: string;
}

const journalOf = (file: string): Line[] =>
  readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);

async function until(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; !(await condition()); i++) {
    if (i > 6000) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** One run: ager A dies mid-delete of a `chunks`-chunk image, ager B takes over. */
export async function demo(fence: boolean, chunks = 200): Promise<TakeoverResult> {
  const dir = mkdtempSync(join(tmpdir(), "baton-takeover-demo-"));
  const image = join(dir, "image-7");
  const journal = join(dir, "journal");
  mkdirSync(image);
  for (let k = 0; k < chunks; k++) writeFileSync(join(image, `chunk-${k}`), "x");
  writeFileSync(journal, "");
  const env = { ...process.env, BATON_URL: pathToFileURL(join(dir, "locks")).href };
  const agers: ReturnType<typeof spawn>[] = [];
  const ager = (pace: number, ...flags: string[]) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", AGER, image, journal, String(chunks), String(pace), ...flags],
      { env, stdio: ["ignore", "inherit", "inherit"] },
    );
    agers.push(child);
    return child;
  };
  const observer = await connect(env.BATON_URL);
  const deleters = () => [...new Set(journalOf(journal).flatMap((l) => (l.who.startsWith("deleter-") ? [l.who] : [])))];
  try {
    const a = ager(30);
    await until("ager A's deleter to be under way", () => journalOf(journal).length >= 6);
    const b = ager(0, ...(fence ? [] : ["--no-fence"]));
    const bDone = new Promise((resolve) => b.once("exit", resolve));
    await until("ager B to wait for the lock", async () => {
      const lock = (await observer.inspect()).locks.find((l) => l.name === "image-7");
      return (lock?.waiters.length ?? 0) === 1;
    });
    const [first] = deleters();
    a.kill("SIGKILL");
    await bDone;
    const stale = () => {
      const lines = journalOf(journal);
      const wentOn = lines.findIndex((l) => / deleting with token /.test(l.what) && l.who !== lines[0]?.who);
      return lines.slice(wentOn + 1).filter((l) => l.who === first).length;
    };
    // Unfenced, the lost deleter is still running: its next step is the proof. Fenced, B
    // saw it gone before it went on, so nothing can come.
    if (!fence) await until("the lost deleter's next step", () => stale() > 0);
    const staleSteps = stale();
    const lines = journalOf(journal);
    const handedOver = lines.find((l) => l.what.startsWith("takeover"))?.what ?? "(no takeover)";
    return { staleSteps, remaining: readdirSync(image).length, handedOver };
  } finally {
    // Without fencing, A's deleter is still at it (and after a failure, anything may be):
    // stop them all before removing their directory.
    for (const child of agers) child.kill("SIGKILL");
    for (const d of deleters()) {
      try {
        process.kill(Number(d.slice("deleter-".length)), "SIGKILL");
      } catch {
        // Gone already.
      }
    }
    await observer.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const fence of [false, true]) {
    const r = await demo(fence);
    console.log(`${fence ? "with onTakeover fencing" : "without fencing       "}: ${r.handedOver}`);
    console.log(
      `  the lost ager's deleter went on for ${r.staleSteps} steps after the next ager took over; ${r.remaining} chunks left`,
    );
  }
}
