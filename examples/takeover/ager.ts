/**
 * One image-cache ager (Nova's): takes the image's lock with its deleter's pid as fence
 * info, and has the deleter delete the image. If the previous ager was lost in the middle,
 * `onTakeover` fences its deleter first (SIGKILL the pid from its fence info, wait until it
 * is gone), and only then does this ager go on. With `--no-fence` it skips that, to show
 * what goes wrong.
 *
 *   ager.ts <image dir> <journal> <chunks> <pace ms> [--no-fence]
 */
import { spawn } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, type Takeover } from "../../src/index.js";

const [dir = "", journal = "", chunks = "0", pace = "0", flag] = process.argv.slice(2);
const fence = flag !== "--no-fence";
const who = `ager-${process.pid}`;
const log = (what: string) => appendFileSync(journal, `${JSON.stringify({ who, what })}\n`);

/** Whether `pid` still runs (a zombie does not: it can do nothing more). Linux /proc. */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** The fencing driver: kill the previous ager's deleter and wait until it is gone. */
async function fenceDeleter(previous: Takeover, signal: AbortSignal): Promise<void> {
  const { deleter } = previous.fenceInfo as { deleter: number };
  log(`takeover of token ${previous.token} from ${previous.memberId}: deleter ${deleter} may still run`);
  if (!fence) return;
  try {
    process.kill(deleter, "SIGKILL");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
  while (running(deleter)) {
    signal.throwIfAborted();
    await sleep(5);
  }
}

const deleter = spawn(
  process.execPath,
  ["--import", "tsx", fileURLToPath(new URL("./deleter.ts", import.meta.url)), dir, journal, chunks, pace],
  { stdio: ["pipe", "inherit", "inherit"], detached: true },
);
await using coord = await connect(process.env.BATON_URL, { memberId: who });
const lock = await coord.lock("image-7").acquire({
  fenceInfo: { deleter: deleter.pid, host: "compute-1" },
  onTakeover: fenceDeleter,
});
log(fence ? `fenced; deleting with token ${lock.token}` : `not fenced; deleting with token ${lock.token}`);
deleter.stdin?.end("go\n");
await new Promise((resolve) => deleter.once("exit", resolve));
log("done");
await lock.release();
