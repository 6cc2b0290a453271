/**
 * The long-running task an ager starts to delete an image (think of a vSphere delete task,
 * or a `qemu-img` child): it outlives the ager that started it, which is why the next ager
 * must fence it. Deletes the image's chunks in order, one every PACE_MS, and journals every
 * step; waits for a line on stdin before it starts (its pid goes into the lock's fence info
 * first).
 *
 * A paced deleter (pace > 0: the stuck task of the demo) then goes on checking, one journal
 * line per pace, until it is killed, as a hung task would.
 *
 *   deleter.ts <image dir> <journal> <chunks> <pace ms>
 */
import { appendFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const [dir = "", journal = "", chunks = "0", pace = "0"] = process.argv.slice(2);
const who = `deleter-${process.pid}`;
await new Promise((resolve) => process.stdin.once("data", resolve));
process.stdin.destroy();
for (let k = 0; k < Number(chunks); k++) {
  rmSync(join(dir, `chunk-${k}`), { force: true });
  appendFileSync(journal, `${JSON.stringify({ who, what: `deleted chunk-${k}` })}\n`);
  if (Number(pace) > 0) await sleep(Number(pace));
}
while (Number(pace) > 0) {
  appendFileSync(journal, `${JSON.stringify({ who, what: "still at it" })}\n`);
  await sleep(Number(pace));
}
