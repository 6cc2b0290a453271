/**
 * One API worker of the volume-states demo: it drives volumes through Cinder's state
 * machine (available -> attaching -> in-use -> detaching -> available, one cycle) as fast
 * as it can, racing the other workers. With `cas` it moves a volume with
 * `cell.transition(from, to)`, which succeeds for exactly one of the racing workers (the
 * others get a ConflictError: Cinder's VolumeIsBusy). With `naive` it reads the state and
 * writes the next one, the check-then-act race: two workers both "attach" one volume.
 *
 *   worker.ts <cas|naive> <volumes> <cycles> <workers>
 *
 * The workers start together: each counts itself into the `ready` cell (a compare-and-set
 * counter) and watches it until all have.
 * Prints the transitions it made, as JSON, when every volume has done `cycles` cycles.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { ConflictError, connect } from "../../src/index.js";

export type VolumeState = "available" | "attaching" | "in-use" | "detaching";
export interface Volume {
  readonly state: VolumeState;
  readonly cycle: number;
}

const NEXT: Record<VolumeState, VolumeState> = {
  available: "attaching",
  attaching: "in-use",
  "in-use": "detaching",
  detaching: "available",
};

/** The state after `volume`'s next step. */
export function step(volume: Volume): Volume {
  const state = NEXT[volume.state];
  return { state, cycle: state === "available" ? volume.cycle + 1 : volume.cycle };
}

const [mode = "cas", volumeCount = "3", cycleCount = "5", workerCount = "1"] = process.argv.slice(2);
const volumes = Array.from({ length: Number(volumeCount) }, (_, i) => `volume-${i}`);
const cycles = Number(cycleCount);
// Bounded even if the naive mode keeps undoing its own progress.
const MAX_ATTEMPTS = 20_000;

await using coord = await connect(process.env.BATON_URL);

// A counter under compare-and-set: retry on conflict with the version just read.
const ready = coord.cell<number>("ready");
for (;;) {
  const current = await ready.get();
  try {
    await ready.set((current?.value ?? 0) + 1, { ifVersion: current?.version ?? 0n });
    break;
  } catch (error) {
    if (!(error instanceof ConflictError)) throw error;
  }
}
for await (const change of ready.watch()) {
  if (change.type === "set" && change.value >= Number(workerCount)) break;
}
const made: { volume: string; from: Volume; to: Volume }[] = [];
let conflicts = 0;
for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
  const states = await Promise.all(volumes.map((v) => coord.cell<Volume>(v).get()));
  const open = volumes.filter((_, i) => (states[i]?.value.cycle ?? cycles) < cycles);
  if (open.length === 0) break;
  // Every worker goes for the same volume: the contention an API under load sees.
  const volume = open[0] as string;
  const from = states[volumes.indexOf(volume)]?.value as Volume;
  const to = step(from);
  if (mode === "cas") {
    try {
      await coord.cell<Volume>(volume).transition(from, to);
      made.push({ volume, from, to });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      conflicts++; // VolumeIsBusy: another worker moved it first.
    }
  } else {
    await sleep(1); // validate the request, talk to the volume driver, ...
    await coord.cell<Volume>(volume).set(to);
    made.push({ volume, from, to });
  }
}
process.stdout.write(`${JSON.stringify({ pid: process.pid, made, conflicts })}\n`);
