/**
 * Takeover from the shell: `baton lock NAME --fence-info JSON --lock-delay 5s --on-takeover
 * CMD -- command...`, and the operator's `baton unlock NAME [--member ID] [--kill]`. See
 * docs/cli.md and docs/takeover.md.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { hostname } from "node:os";
import { type Command, Option } from "commander";
import type { Coordinator } from "../core/coordinator.js";
import { CannotRevokeError, InvalidArgumentError } from "../core/errors.js";
import type { Takeover, TakeoverOptions } from "../core/takeover.js";
import { MAX_LOCK_DELAY_MS } from "../core/takeover.js";
import { durationFlag } from "./flags.js";
import { EXIT } from "./run.js";

/** The takeover flags of `baton lock`, as parsed. */
export interface TakeoverFlags {
  fenceInfo?: unknown;
  lockDelay?: number;
  onTakeover?: string;
}

/** `--fence-info`: JSON text (its size and content are checked by the library). */
function fenceInfoFlag(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new InvalidArgumentError(
      `--fence-info must be JSON (e.g. '{"pid":123}' or '"vm-7"'), got ${JSON.stringify(text.slice(0, 60))}: ${(error as Error).message}`,
    );
  }
}

/** Adds the takeover flags to `baton lock`. */
export function takeoverFlags(command: Command): Command {
  return command
    .addOption(
      new Option("--fence-info <json>", "JSON stored with the lock and handed to the next holder if this one is lost")
        .argParser(fenceInfoFlag)
        .default(undefined),
    )
    .option(
      "--lock-delay <duration>",
      "if this holding is lost (not released), nobody gets the lock for this long (at most 60s)",
      durationFlag("--lock-delay", 0, MAX_LOCK_DELAY_MS),
    )
    .option(
      "--on-takeover <cmd>",
      `shell command that fences a lost previous holder before the command runs (failure: exit ${EXIT.fenceFailed})`,
    );
}

/** The previous holding, for the environment of the hook and the command. */
export function previousEnv(takeover: Takeover | null): Record<string, string> {
  if (!takeover) return {};
  return {
    BATON_PREVIOUS_FENCE_INFO: JSON.stringify(takeover.fenceInfo),
    BATON_PREVIOUS_TOKEN: String(takeover.token),
    BATON_PREVIOUS_MEMBER: takeover.memberId,
  };
}

/**
 * The acquire options of the takeover flags. `--on-takeover` runs `/bin/sh -c CMD` with
 * the previous holding in BATON_PREVIOUS_*; a non-zero exit makes the hook throw (so the
 * lock is released and `baton` exits {@link EXIT.fenceFailed}); a cancelled acquisition
 * kills it.
 */
export function takeoverOptions(flags: TakeoverFlags, name: string): TakeoverOptions {
  const options: TakeoverOptions = {};
  if (flags.fenceInfo !== undefined) options.fenceInfo = flags.fenceInfo;
  if (flags.lockDelay !== undefined) options.lockDelayMs = flags.lockDelay;
  const cmd = flags.onTakeover;
  if (cmd !== undefined) {
    options.onTakeover = (previous, signal) =>
      new Promise<void>((resolve, reject) => {
        const env = { ...process.env, BATON_LOCK_NAME: name, ...previousEnv(previous) };
        const child = spawn("/bin/sh", ["-c", cmd], { stdio: ["ignore", "inherit", "inherit"], env, signal });
        child.once("error", reject);
        child.once("exit", (code, sig) => {
          if (code === 0) resolve();
          else reject(new Error(`--on-takeover command ${JSON.stringify(cmd)} exited with ${sig ?? code}`));
        });
      });
  }
  return options;
}

interface UnlockOptions {
  url?: string;
  namespace?: string;
  member?: string;
  kind: "lock" | "semaphore" | "election";
  kill?: boolean;
}

/** Registers `baton unlock NAME`. */
export function unlockCommand(
  root: Command,
  common: { url: () => Option; namespace: () => Option },
  open: (options: { url?: string; namespace?: string }) => Promise<Coordinator>,
): void {
  root
    .command("unlock")
    .description("end a stuck holder's holding (revoke its backend session), for operators")
    .argument("<name>", "lock (or semaphore, election) name")
    .addOption(common.url())
    .addOption(common.namespace())
    .option("--member <id>", "only this member's holding")
    .addOption(
      new Option("--kind <kind>", "what NAME names").choices(["lock", "semaphore", "election"]).default("lock"),
    )
    .option("--kill", "where the backend cannot revoke (file), send SIGTERM to the holding process on this host")
    .addHelpText(
      "after",
      `
Revokes the backend session of every holder of NAME (or of --member's): etcd revokes its
lease, PostgreSQL terminates its connections, ZooKeeper deletes its nodes, Redis ends its
session key. Everything that session held is lost, its signal fires, and the next holder
is handed the takeover (fence info and token) of a tracked holding. Prints one line per
holder revoked. The file backend cannot take a kernel lock from a live process: it prints
the holder's pid and host and exits ${EXIT.cannotRevoke}, unless --kill signals that process.

Examples:
  baton unlock image-7
  baton unlock image-7 --member nova-3
  baton unlock nightly --kill            # file backend: SIGTERM to the holder`,
    )
    .action(async (name: string, options: UnlockOptions) => {
      const coord = await open(options);
      try {
        const revoked = await coord.revoke(name, {
          kind: options.kind,
          ...(options.member === undefined ? {} : { memberId: options.member }),
        });
        if (revoked.length === 0) process.stderr.write(`baton: ${options.kind} "${name}" is not held\n`);
        for (const r of revoked) {
          process.stdout.write(`revoked ${r.memberId} (session ${r.sessionId}, token ${r.token})\n`);
        }
      } catch (error) {
        if (!(error instanceof CannotRevokeError)) throw error;
        process.exitCode = kill(error, options.kill === true);
      } finally {
        await coord.close();
      }
    });
}

/** `--kill`: SIGTERM to the holders on this host; else explains and says how. */
function kill(error: CannotRevokeError, really: boolean): number {
  if (!really) {
    process.stderr.write(`baton: ${error.message}\n`);
    return EXIT.cannotRevoke;
  }
  let status: number = EXIT.cannotRevoke;
  for (const holder of error.holders) {
    if (holder.pid === undefined || holder.host !== hostname()) {
      process.stderr.write(`baton: cannot signal ${holder.memberId}: not a process on this host\n`);
      continue;
    }
    try {
      process.kill(holder.pid, "SIGTERM");
      process.stdout.write(`sent SIGTERM to ${holder.memberId} (pid ${holder.pid})\n`);
      status = 0;
    } catch (cause) {
      process.stderr.write(`baton: cannot signal pid ${holder.pid}: ${(cause as Error).message}\n`);
    }
  }
  return status;
}
