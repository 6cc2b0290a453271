/**
 * What a member id tells about its process. Baton keeps no member metadata besides the id,
 * so the default id carries it: `host:pid:random` (connect()), and the CLI's
 * `host:pid:random/command` adds the command it runs, with `%` and white space
 * percent-encoded so that the id stays one word (for `baton unlock --member ID`, for
 * scripts splitting `BATON_PREVIOUS_MEMBER`). Ids in another form tell nothing, and the
 * status shows them as they are.
 *
 * @module
 */

/** The process behind a member id, as far as the id tells. */
export interface MemberDetails {
  readonly host: string;
  readonly pid: number;
  /** The command the CLI ran under this member (decoded, maybe truncated), if the id carries one. */
  readonly command?: string;
}

const FORM = /^([^\s:/]+):(\d{1,10}):([0-9a-f]{6})(?:\/(\S+))?$/;

// biome-ignore lint/suspicious/noControlCharactersInRegex: member ids refuse control characters.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** Longest command kept in a CLI member id, in characters (before encoding). */
export const MEMBER_COMMAND_CHARS = 120;

const encode = (text: string) => text.replace(/[%\s]/gu, (c) => encodeURIComponent(c));
const decode = (text: string) =>
  text.replace(/(?:%[0-9A-F]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      // Not UTF-8 (a hand-made id): decode the ASCII escapes, keep the others as written.
      return run.replace(/%([0-7][0-9A-F])/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    }
  });

/** Splits a member id of the default or the CLI form; `null` for any other. */
export function memberDetails(memberId: string): MemberDetails | null {
  const match = FORM.exec(memberId);
  if (!match) return null;
  const [, host = "", pid = "0", , command] = match;
  return { host, pid: Number(pid), ...(command === undefined ? {} : { command: decode(command) }) };
}

/**
 * A member id of the CLI form for `defaultId` (`host:pid:random`) running `argv`: the
 * command joined by spaces, control characters dropped, cut to {@link MEMBER_COMMAND_CHARS},
 * `%` and white space percent-encoded.
 */
export function memberIdWithCommand(defaultId: string, argv: readonly string[]): string {
  const command = argv.join(" ").replace(CONTROL, " ").trim();
  if (command === "") return defaultId;
  const cut = command.length > MEMBER_COMMAND_CHARS ? `${command.slice(0, MEMBER_COMMAND_CHARS - 1)}…` : command;
  return `${defaultId}/${encode(cut)}`;
}
