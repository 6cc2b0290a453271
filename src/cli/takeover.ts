/**
 * Takeover from the shell: `baton lock NAME --fence-info JSON --lock-delay 5s --on-takeover
 * CMD -- command...`, and the operator's `baton unlock NAME [--member ID] [--kill]`. See
 * docs/cli.md and docs/takeover.md.
 *
 * @module
 */
import { once } from "node:events";
import { type Command, Option } from "commander";
import type { Coordinator } from "../core/coordinator.js";
import { CannotRevokeError, InvalidArgumentError } from "../core/errors.js";
import type { Takeover, TakeoverOptions } from "../core/takeover.js";
import { MAX_LOCK_DELAY_MS } from "../core/takeover.js";
import { durationFlag } from "./flags.js";
import { processStartTime } from "../backends/file/identity.js";
import { startGuarded } from "./guard.js";
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
 * the previous holding in BATON_PREVIOUS_*, in a process group of its own under a watchdog
 * (guard.ts, as the command is run): a non-zero exit makes the hook throw (so the lock is
 * released and `baton` exits {@link EXIT.fenceFailed}); a cancelled or timed-out
 * acquisition SIGKILLs the whole group, so nothing the hook started runs on, and so does
 * baton's death.
 */
export function takeoverOptions(flags: TakeoverFlags, name: string): TakeoverOptions {
  const options: TakeoverOptions = {};
  if (flags.fenceInfo !== undefined) options.fenceInfo = flags.fenceInfo;
  if (flags.lockDelay !== undefined) options.lockDelayMs = flags.lockDelay;
  const cmd = flags.onTakeover;
  if (cmd !== undefined) {
    options.onTakeover = async (previous, signal) => {
      const env = { ...process.env, BATON_LOCK_NAME: name, ...previousEnv(previous) };
      const hook = await startGuarded(["/bin/sh", "-c", cmd], env, [], "ignore");
      const stop = () => hook.signalGroup("SIGKILL");
      signal.addEventListener("abort", stop, { once: true });
      if (signal.aborted) stop();
      try {
        const { child } = hook;
        const [code, sig] =
          child.exitCode !== null || child.signalCode !== null
            ? [child.exitCode, child.signalCode]
            : ((await once(child, "exit")) as [number | null, NodeJS.Signals | null]);
        if (code !== 0) throw new Error(`--on-takeover command ${JSON.stringify(cmd)} exited with ${sig ?? code}`);
      } finally {
        signal.removeEventListener("abort", stop);
        // Whatever it left running in its group goes too: nothing of it outlives the hook.
        hook.finish();
      }
    };
  }
  return options;
}

interface UnlockOptions {
  url?: string;
  namespace?: string;
  member?: string;
  kind: "lock" | "semaphore" | "election";
  kill?: boolean;
  immediate?: boolean;
  timeout?: number;
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
    .option(
      "--kill",
      "where the backend cannot revoke (file), SIGKILL the holding process once its identity is verified",
    )
    .option(
      "--immediate",
      "free the holdings at once, without waiting for the holder to learn it (fencing tokens only)",
    )
    .option(
      "--timeout <duration>",
      `give up waiting for the holder after this long (exit ${EXIT.notAcquired}); its session stays marked revoked`,
      durationFlag("--timeout"),
    )
    .addHelpText(
      "after",
      `
Revokes the backend session of every holder of NAME (or of --member's) as a forced early
expiry: the session is first marked revoked, so its renewals fail and its signal fires;
its holdings are freed (etcd revokes its lease, PostgreSQL terminates its connections,
ZooKeeper deletes its nodes, Redis ends its session key) once the holder confirmed the
loss or its TTL has run out, so this can take up to the holder's TTL (--timeout bounds that wait; the session stays
marked revoked, so the holder still loses at its deadline). --immediate frees at
once (the holder may still believe it holds: safe only with fencing tokens). Everything
that session held is lost, and the next holder is handed the takeover (fence info and
token) of a tracked holding. Prints one line per holder revoked. The file backend cannot
take a kernel lock from a live process: it prints the holder's pid and host and exits
${EXIT.cannotRevoke}, unless --kill SIGKILLs that process (after checking it is the holder).

Examples:
  baton unlock image-7
  baton unlock image-7 --member nova-3
  baton unlock nightly --kill            # file backend: SIGKILL to the holder`,
    )
    .action(async (name: string, options: UnlockOptions) => {
      const coord = await open(options);
      try {
        const revoked = await coord.revoke(name, {
          kind: options.kind,
          immediate: options.immediate === true,
          ...(options.member === undefined ? {} : { memberId: options.member }),
          ...(options.timeout === undefined ? {} : { timeoutMs: options.timeout }),
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

/**
 * `--kill`: SIGKILL to each holder whose identity the backend verified (its pid holds the
 * holder's mesh socket) and whose start time still matches right before the signal (the
 * pid was not reused). SIGKILL, not SIGTERM: a `baton lock` holder ending on SIGTERM
 * releases cleanly, leaving no takeover for the next holder to fence. Left: the instant
 * between the start-time check and kill(2), which only a pidfd would close (Node has none).
 */
function kill(error: CannotRevokeError, really: boolean): number {
  if (!really) {
    process.stderr.write(`baton: ${error.message}\n`);
    return EXIT.cannotRevoke;
  }
  let status: number = EXIT.cannotRevoke;
  for (const holder of error.holders) {
    const { pid, startTime } = holder;
    if (pid === undefined || startTime === undefined) {
      process.stderr.write(
        `baton: not signalling ${holder.memberId}: cannot verify that pid ${pid ?? "(unknown)"} is the holding process (another PID or network namespace, or no permission to read its /proc entry)\n`,
      );
      continue;
    }
    if (processStartTime(pid) !== startTime) {
      process.stderr.write(
        `baton: not signalling pid ${pid}: it is no longer the holder (it exited, or the pid was reused)\n`,
      );
      continue;
    }
    try {
      process.kill(pid, "SIGKILL");
      process.stdout.write(`sent SIGKILL to ${holder.memberId} (pid ${pid})\n`);
      status = 0;
    } catch (cause) {
      process.stderr.write(`baton: cannot signal pid ${pid}: ${(cause as Error).message}\n`);
    }
  }
  return status;
}
