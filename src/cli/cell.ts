/**
 * `baton cell get|set|transition NAME ...`: read and compare-and-set a durable cell from
 * scripts. Values are JSON on the command line and on stdout.
 *
 * @module
 */
import { type Command, Option } from "commander";
import type { Coordinator } from "../core/coordinator.js";
import { cellValueArgument, versionFlag } from "./flags.js";
import { EXIT } from "./run.js";

interface CellCommandOptions {
  url?: string;
  namespace?: string;
  string?: boolean;
  ifVersion?: bigint;
  fence?: bigint;
}

/** Registers `baton cell ...` on `root`; `open` connects as the other commands do. */
export function cellCommand(
  root: Command,
  common: { url: () => Option; namespace: () => Option },
  open: (options: CellCommandOptions) => Promise<Coordinator>,
): void {
  const cell = root
    .command("cell")
    .description("read or compare-and-set a durable versioned cell")
    .addHelpText(
      "after",
      `
Values are JSON ('"available"', 42, '{"size":10}'); --string takes the text as a plain string.
Exit status: 0 done; ${EXIT.conflict} refused (the cell changed, or a later lock holder wrote; the
current state is printed on stderr); ${EXIT.noCell} no such cell (get); ${EXIT.usage} bad usage; ${EXIT.unavailable} backend unreachable.

Examples:
  baton cell set vol-1 --string available
  baton cell transition vol-1 --string available attaching && ./attach.sh
  baton cell get vol-1                  # prints {"value":"attaching","version":"42"}`,
    );
  const withCoord = async (options: CellCommandOptions, fn: (coord: Coordinator) => Promise<void>) => {
    const coord = await open(options);
    try {
      await fn(coord);
    } finally {
      await coord.close();
    }
  };
  const print = (value: unknown, version: bigint) =>
    process.stdout.write(`${JSON.stringify({ value, version: version.toString() })}\n`);
  const withCommon = (command: Command) =>
    command
      .addOption(common.url())
      .addOption(common.namespace())
      .option("--string", "take values as plain strings, not JSON");
  const fence = () =>
    new Option("--fence <token>", "a lock's fencing token: refused if the cell saw a higher one").argParser(
      versionFlag("--fence"),
    );

  withCommon(
    cell.command("get").description("print the value and version as JSON").argument("<name>", "cell name"),
  ).action(async (name: string, options: CellCommandOptions) => {
    await withCoord(options, async (coord) => {
      const state = await coord.cell(name).get();
      if (!state) {
        process.stderr.write(`baton: cell "${name}" does not exist\n`);
        process.exitCode = EXIT.noCell;
        return;
      }
      print(state.value, state.version);
    });
  });

  withCommon(
    cell.command("set").description("store a value, printing the new version").argument("<name>").argument("<value>"),
  )
    .addOption(
      new Option("--if-version <n>", "only if the cell is at this version (0: only if it does not exist)").argParser(
        versionFlag("--if-version"),
      ),
    )
    .addOption(fence())
    .action(async (name: string, text: string, options: CellCommandOptions) => {
      const value = cellValueArgument("the value", text, options.string === true);
      await withCoord(options, async (coord) => {
        const { version } = await coord.cell(name).set(value, {
          ifVersion: options.ifVersion,
          fence: options.fence,
        });
        print(value, version);
      });
    });

  withCommon(
    cell
      .command("transition")
      .description("set <to> only if the value is <from>; exactly one of concurrent callers succeeds")
      .argument("<name>")
      .argument("<from>")
      .argument("<to>"),
  )
    .addOption(fence())
    .action(async (name: string, fromText: string, toText: string, options: CellCommandOptions) => {
      const literal = options.string === true;
      const from = cellValueArgument("<from>", fromText, literal);
      const to = cellValueArgument("<to>", toText, literal);
      await withCoord(options, async (coord) => {
        const { version } = await coord.cell(name).transition(from, to, { fence: options.fence });
        print(to, version);
      });
    });
}
