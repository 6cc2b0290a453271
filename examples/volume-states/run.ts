/**
 * Runs Cinder's volume state machine under several concurrent API worker processes on the
 * file backend, twice: with read-then-write (transitions happen twice) and with
 * `cell.transition()` (each happens exactly once). No lock is taken. `npx tsx
 * examples/volume-states/run.ts`.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { connect } from "../../src/index.js";
import type { Volume } from "./worker.js";

const WORKER = fileURLToPath(new URL("./worker.ts", import.meta.url));

interface WorkerReport {
  made: { volume: string; from: Volume; to: Volume }[];
  conflicts: number;
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<WorkerReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", WORKER, ...args], {
      env,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.once("exit", (code) =>
      code === 0 ? resolve(JSON.parse(out) as WorkerReport) : reject(new Error(`worker exited ${code}`)),
    );
  });
}

/** What one run did: `transitions` made in all, of which `duplicates` repeated one already made. */
export interface RaceResult {
  readonly transitions: number;
  readonly duplicates: number;
  /** Transitions the volumes' cycles need: 4 per cycle per volume. */
  readonly expected: number;
  readonly conflicts: number;
}

/** One run: `workers` processes drive `volumes` volumes through `cycles` cycles each. */
export async function race(mode: "cas" | "naive", workers = 4, volumes = 3, cycles = 5): Promise<RaceResult> {
  const dir = mkdtempSync(join(tmpdir(), "baton-volume-states-"));
  const env = { ...process.env, BATON_URL: pathToFileURL(dir).href };
  try {
    const coord = await connect(env.BATON_URL);
    for (let i = 0; i < volumes; i++) await coord.cell<Volume>(`volume-${i}`).set({ state: "available", cycle: 0 });
    await coord.close();
    const reports = await Promise.all(
      Array.from({ length: workers }, () => run([mode, String(volumes), String(cycles), String(workers)], env)),
    );
    const seen = new Set<string>();
    let transitions = 0;
    let duplicates = 0;
    for (const { made } of reports) {
      for (const { volume, from, to } of made) {
        transitions++;
        const key = `${volume} ${from.cycle}:${from.state} -> ${to.cycle}:${to.state}`;
        if (seen.has(key)) duplicates++;
        seen.add(key);
      }
    }
    const conflicts = reports.reduce((sum, r) => sum + r.conflicts, 0);
    return { transitions, duplicates, expected: volumes * cycles * 4, conflicts };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const mode of ["naive", "cas"] as const) {
    const r = await race(mode);
    const label = mode === "cas" ? "transition() " : "read-then-set";
    console.log(
      `${label}: ${r.transitions} transitions for ${r.expected} needed, ${r.duplicates} made twice, ${r.conflicts} refused as busy`,
    );
  }
}
