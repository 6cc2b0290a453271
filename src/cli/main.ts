#!/usr/bin/env node
/**
 * `baton`: run a command while holding a lock, a semaphore permit or leadership (like
 * flock(1) or `etcdctl lock`), and show who holds what. Backend from `--url`, else
 * `$BATON_URL`, else the serverless file backend.
 *
 * @module
 */
import { Command, CommanderError, Option } from "commander";
import { existsSync, readFileSync } from "node:fs";
import { connect, type Coordinator } from "../index.js";
import { defaultMemberId } from "../core/connect.js";
import { memberIdWithCommand } from "../status/member.js";
import { cellCommand } from "./cell.js";
import { completionCommand } from "./completion.js";
import { holdUntilSignal } from "./hold-open.js";
import { listen } from "./listen.js";
import { statusCommand } from "./status-command.js";
import { redactedUrl, steps } from "./verbose.js";
import { durationFlag, namespaceFlag, positiveIntFlag, ttlFlag } from "./flags.js";
import { heldDescriptors } from "./guard.js";
import { whoHolds } from "./holders.js";
import { closeWithin, releaseWithin } from "./release.js";
import { EXIT, exitStatusFor, runHolding, showWaiting } from "./run.js";
import { previousEnv, type TakeoverFlags, takeoverFlags, takeoverOptions, unlockCommand } from "./takeover.js";

const DURATION_HELP = "durations: 500ms, 10s, 2m, 1h; a bare number is seconds";

interface HoldOptions {
  url?: string;
  namespace?: string;
  timeout?: number;
  ttl?: number;
  wait: boolean;
  killAfter: number;
  verbose?: boolean;
}

const urlOption = () => new Option("--url <url>", "backend URL (default: $BATON_URL, else the file backend)");
const namespaceOption = () =>
  new Option("--namespace <ns>", "namespace of the names (default: none, or ?namespace= in the URL)").argParser(
    namespaceFlag,
  );

function holdOptions(command: Command): Command {
  return command
    .addOption(urlOption())
    .addOption(namespaceOption())
    .option("--timeout <duration>", `give up after this long (exit ${EXIT.notAcquired})`, durationFlag("--timeout"))
    .option("--ttl <duration>", "session TTL on lease-based backends (1s to 24h)", ttlFlag)
    .option("--no-wait", `fail at once if busy (exit ${EXIT.notAcquired}), saying who holds it`)
    .addOption(
      new Option("--kill-after <duration>", "after a loss, SIGKILL the command this long after SIGTERM")
        .argParser(durationFlag("--kill-after"))
        .default(10_000, "10s"),
    )
    .option("--verbose", "report each step on stderr: connecting, waiting behind whom, granted, lost, released")
    .argument("[command...]", "the command to run, after --; none: hold until SIGINT/SIGTERM, printing the token");
}

async function open(options: {
  url?: string;
  namespace?: string;
  ttl?: number;
  memberId?: string;
}): Promise<Coordinator> {
  return connect(options.url, {
    ...(options.memberId === undefined ? {} : { memberId: options.memberId }),
    ...(options.ttl === undefined ? {} : { ttlMs: options.ttl }),
    ...(options.namespace === undefined ? {} : { namespace: options.namespace }),
  });
}

/** Cancels waiting when the user interrupts baton before the command started. */
function interruptible(): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => controller.abort(new Error(`interrupted by ${signal}`));
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) process.on(s, onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      for (const s of signals) process.off(s, onSignal);
    },
  };
}

/**
 * Set when a release or close could not be confirmed in time: `main` then exits at once
 * instead of letting the pending calls keep the process alive.
 */
let abandoned = false;

/**
 * Acquires with `get`, runs the command, releases, and returns the exit status. The
 * release and close are bounded (release.ts): a dead backend never keeps baton waiting.
 */
async function hold(
  options: HoldOptions,
  argv: string[],
  label: string,
  waitingOn: { kind: "locks" | "semaphores" | "elections"; name: string },
  get: (
    coord: Coordinator,
    signal: AbortSignal,
    timeoutMs: number | undefined,
  ) => Promise<{
    /** What is held (a lock or semaphore handle, a leadership): only its loss signal is read. */
    handle: { readonly signal: AbortSignal } | null;
    env: Record<string, string>;
    release: () => Promise<unknown>;
  }>,
): Promise<number> {
  const step = steps(options.verbose === true);
  const url = options.url ?? process.env.BATON_URL;
  step(`connecting to ${url === undefined ? "the file backend (default)" : redactedUrl(url)}`);
  // The command goes into the member id: `baton status` shows who runs what.
  const coord = await open({ ...options, memberId: memberIdWithCommand(defaultMemberId(), argv) });
  step(`connected to the ${coord.backend} backend as member ${coord.memberId}`);
  let closed = false;
  try {
    const stop = interruptible();
    const clear = options.wait ? showWaiting(label, coord, waitingOn.kind, waitingOn.name) : () => {};
    let got: Awaited<ReturnType<typeof get>>;
    try {
      await step.behind(coord, waitingOn.kind, waitingOn.name, label);
      got = await get(coord, stop.signal, options.wait ? options.timeout : 0);
    } catch (error) {
      stop.dispose();
      step(`gave up on ${label}: ${(error as Error).message}`);
      if (stop.signal.aborted) return 130;
      throw error;
    } finally {
      clear();
    }
    if (got.handle) {
      step(`granted ${label} with fencing token ${got.env.BATON_FENCING_TOKEN}`);
      got.handle.signal.addEventListener("abort", () =>
        step(`lost ${label}: ${(got.handle?.signal.reason as Error)?.message}`),
      );
    }
    if (!got.handle) {
      stop.dispose();
      const who = await whoHolds(coord, waitingOn.kind, waitingOn.name);
      process.stderr.write(`baton: ${label} is busy${who ? `: ${who}` : ""}\n`);
      return EXIT.notAcquired;
    }
    // runHolding (and holdUntilSignal) put their signal handlers in place synchronously;
    // only then are the wait's handlers removed, so a signal never meets the default action.
    const running =
      argv.length === 0
        ? holdUntilSignal(label, BigInt(got.env.BATON_FENCING_TOKEN ?? "0"), got.handle.signal)
        : runHolding(argv, { ...process.env, ...got.env }, got.handle.signal, options.killAfter, heldDescriptors());
    stop.dispose();
    const status = await running;
    if (!(await releaseWithin(label, got.release, () => coord.close()))) abandoned = true;
    else step(`released ${label}`);
    closed = true;
    return status;
  } finally {
    if (!closed && !(await closeWithin(() => coord.close()))) abandoned = true;
  }
}

/** The version in the package.json above this file (dist/src/cli or src/cli). */
function packageVersion(): string {
  for (let dir = new URL(".", import.meta.url); ; dir = new URL("..", dir)) {
    const file = new URL("package.json", dir);
    if (existsSync(file)) return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
    if (dir.pathname === "/") return "unknown";
  }
}

function program(): Command {
  const root = new Command("baton")
    .description("Locks, semaphores and leader election for shell commands and scripts, on one host or a cluster.")
    .version(packageVersion(), "-V, --version", "print the version")
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();

  holdOptions(
    takeoverFlags(
      root
        .command("lock")
        .description("run a command while holding a lock")
        .argument("<name>", "lock name")
        .option("--shared", "take a shared (reader) lock instead of an exclusive one"),
    ),
  )
    .addHelpText(
      "after",
      `
The command gets BATON_LOCK_NAME and BATON_FENCING_TOKEN in its environment, and after a
takeover (the previous holder, acquired with --fence-info, --lock-delay or --on-takeover, was
lost rather than released) BATON_PREVIOUS_FENCE_INFO, BATON_PREVIOUS_TOKEN and
BATON_PREVIOUS_MEMBER, which --on-takeover's command gets too, before the command runs.
Exit status: the command's own; ${EXIT.usage} bad usage; ${EXIT.unavailable} backend unreachable;
${EXIT.notAcquired} not acquired (busy with --no-wait, or timed out); ${EXIT.lost} the lock was lost while
the command ran (it got SIGTERM, then SIGKILL after --kill-after); ${EXIT.fenceFailed} --on-takeover failed
(the lock was released, the command did not run). ${DURATION_HELP}.

Examples:
  baton lock nightly-report -- ./report.sh
  baton lock db-migrate --timeout 2m -- npm run migrate
  baton lock cache --shared -- ./read-cache.sh
  baton lock deploy --no-wait -- ./deploy.sh || echo "someone else is deploying"
  baton lock maintenance          # no command: prints the token, holds until Ctrl-C or SIGTERM
  baton lock image-7 --fence-info '{"host":"nova-3"}' --lock-delay 5s \\
    --on-takeover './fence.sh "$BATON_PREVIOUS_FENCE_INFO"' -- ./age-image.sh
  BATON_URL=etcd://10.0.0.5:2379 baton lock leader-task -- ./task.sh`,
    )
    .action(async (name: string, argv: string[], options: HoldOptions & TakeoverFlags & { shared?: boolean }) => {
      process.exitCode = await hold(
        options,
        argv,
        `lock "${name}"`,
        { kind: "locks", name },
        async (coord, signal, timeoutMs) => {
          const mode = options.shared ? "shared" : "exclusive";
          const lock = coord.lock(name);
          const takeover = takeoverOptions(options, name);
          const handle =
            timeoutMs === 0
              ? await lock.tryAcquire({ mode, ...takeover })
              : await lock.acquire({ mode, signal, ...takeover, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
          return {
            handle,
            env: {
              BATON_LOCK_NAME: name,
              BATON_FENCING_TOKEN: String(handle?.token ?? ""),
              ...previousEnv(handle?.takeover ?? null),
            },
            release: () => handle?.release() ?? Promise.resolve(),
          };
        },
      );
    });

  holdOptions(
    root
      .command("semaphore")
      .description("run a command while holding one of --limit permits")
      .argument("<name>", "semaphore name")
      .requiredOption("--limit <n>", "permits in all (every user must give the same)", positiveIntFlag("--limit")),
  )
    .addHelpText(
      "after",
      `
Same environment and exit statuses as "baton lock" (BATON_SEMAPHORE_NAME, BATON_FENCING_TOKEN).

Examples:
  baton semaphore transcoders --limit 4 -- ffmpeg -i in.mov out.mp4
  baton semaphore api-quota --limit 2 --timeout 30s -- ./call-api.sh`,
    )
    .action(async (name: string, argv: string[], options: HoldOptions & { limit: number }) => {
      process.exitCode = await hold(
        options,
        argv,
        `semaphore "${name}"`,
        { kind: "semaphores", name },
        async (coord, signal, timeoutMs) => {
          const semaphore = coord.semaphore(name, { limit: options.limit });
          const handle =
            timeoutMs === 0
              ? await semaphore.tryAcquire()
              : await semaphore.acquire({ signal, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
          return {
            handle,
            env: { BATON_SEMAPHORE_NAME: name, BATON_FENCING_TOKEN: String(handle?.token ?? "") },
            release: () => handle?.release() ?? Promise.resolve(),
          };
        },
      );
    });

  holdOptions(
    root
      .command("elect")
      .description("run a command only while this process is the elected leader")
      .argument("<election>", "election name")
      .option("--value <value>", "value announced to observers while leading (default: the member id)")
      .option("--listen", "do not campaign: print the leader and each change of leader until interrupted"),
  )
    .addHelpText(
      "after",
      `
The command starts once this process wins and is stopped (SIGTERM, then SIGKILL) if
leadership is lost (exit ${EXIT.lost}). It gets BATON_ELECTION_NAME and BATON_FENCING_TOKEN.

Examples:
  baton elect scheduler -- ./run-scheduler.sh
  baton elect primary --value "$(hostname):8080" -- ./serve.sh
  baton elect primary --listen                # one line per change of leader`,
    )
    .action(async (election: string, argv: string[], options: HoldOptions & { value?: string; listen?: boolean }) => {
      if (options.listen) {
        process.exitCode = await listenOnly(election, argv, options);
        return;
      }
      process.exitCode = await hold(
        options,
        argv,
        `leadership of "${election}"`,
        { kind: "elections", name: election },
        async (coord, signal, timeoutMs) => {
          const leadership = await coord
            .election(election)
            .campaign(options.value ?? coord.memberId, { signal, ...(timeoutMs === undefined ? {} : { timeoutMs }) })
            .catch((error: unknown) => {
              if (timeoutMs === 0 && (error as { code?: string }).code === "TIMEOUT") return null;
              throw error;
            });
          return {
            handle: leadership,
            env: { BATON_ELECTION_NAME: election, BATON_FENCING_TOKEN: String(leadership?.token ?? "") },
            release: () => leadership?.resign() ?? Promise.resolve(),
          };
        },
      );
    });

  statusCommand(root, { url: urlOption, namespace: namespaceOption }, open);
  cellCommand(root, { url: urlOption, namespace: namespaceOption }, open);
  unlockCommand(root, { url: urlOption, namespace: namespaceOption }, open);
  completionCommand(root);

  return root;
}

/** `baton elect NAME --listen`: observe, never campaign. */
async function listenOnly(election: string, argv: string[], options: HoldOptions): Promise<number> {
  if (argv.length > 0) {
    process.stderr.write("baton: --listen takes no command: it only prints the leader's changes\n");
    return EXIT.usage;
  }
  const coord = await open(options);
  try {
    return await listen(coord, election);
  } finally {
    await closeWithin(() => coord.close());
  }
}

async function main(): Promise<void> {
  // `baton ... --help | head` closes the pipe early: that is not an error.
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") throw error;
  });
  try {
    await program().parseAsync(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode === 0 ? 0 : EXIT.usage;
      return;
    }
    process.exitCode = exitStatusFor(error);
  }
  // Pending calls to an unreachable backend must not keep baton alive.
  if (abandoned) process.exit();
}

await main();
