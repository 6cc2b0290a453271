/**
 * `--verbose`: each step of a hold on stderr (connecting, waiting behind whom, granted with
 * which token, lost, released), for an operator finding out why a script waits.
 *
 * @module
 */
import type { Coordinator } from "../core/coordinator.js";
import { whoHolds } from "./holders.js";

/** Reports steps, or does nothing when not verbose. */
export interface Steps {
  (message: string): void;
  /** Says whom the wait is behind (one inspection), or that the name is free. */
  behind(coord: Coordinator, kind: "locks" | "semaphores" | "elections", name: string, label: string): Promise<void>;
}

/** A step reporter writing `baton: ...` lines to stderr when `verbose`. */
export function steps(verbose: boolean): Steps {
  const report = ((message: string) => {
    if (verbose) process.stderr.write(`baton: ${message}\n`);
  }) as Steps;
  report.behind = async (coord, kind, name, label) => {
    if (!verbose) return;
    const who = await whoHolds(coord, kind, name);
    report(who ? `waiting for ${label}, ${who}` : `acquiring ${label} (free at last look)`);
  };
  return report;
}

/** `url` with any password replaced by `***`, for printing. */
export function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (!parsed.password) return url;
    parsed.password = "***";
    return parsed.href;
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@/]*@/, "//$1:***@");
  }
}
