/**
 * Who a pid is, for `baton unlock --kill` on the file backend: a pid is only a number of
 * this PID namespace, and it can be reused once its process died. The holder is identified
 * by what only it has (the listening socket of its mesh peer), and pinned by its start
 * time, which a reused pid cannot repeat. Linux only (/proc); elsewhere nothing is verified.
 *
 * @module
 * @internal
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/**
 * The start time of process `pid` (field 22 of /proc/<pid>/stat: clock ticks since boot),
 * or `null` if there is no such process here.
 */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/**
 * Whether process `pid` holds the listening socket of mesh peer `peerId` (bound as
 * `.../peers/.<peerId>` and renamed, see mesh.ts): found in /proc/net/unix by its bind
 * path, then among the process's descriptors by inode. False when it cannot be told
 * (another network namespace, no permission to read its descriptors).
 */
export function holdsPeerSocket(pid: number, peerId: string): boolean {
  let table: string;
  try {
    table = readFileSync("/proc/net/unix", "utf8");
  } catch {
    return false;
  }
  const inodes = new Set<string>();
  for (const line of table.split("\n").slice(1)) {
    const columns = line.trim().split(/\s+/);
    const path = columns[7];
    if (path?.endsWith(`/.${peerId}`) || path?.endsWith(`/${peerId}`)) inodes.add(columns[6] ?? "");
  }
  if (inodes.size === 0) return false;
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (match && inodes.has(match[1] ?? "")) return true;
      } catch {
        // Closed meanwhile.
      }
    }
  } catch {
    return false;
  }
  return false;
}
