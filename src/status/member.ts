/**
 * What a member id tells about its process. Baton keeps no member metadata besides the id,
 * so the default id carries it: `host:pid:random` (connect()), and the CLI's
 * `host:pid:random command args` adds the command it runs. Ids in another form tell
 * nothing, and the status shows them as they are.
 *
 * @module
 */

/** The process behind a member id, as far as the id tells. */
export interface MemberDetails {
  readonly host: string;
  readonly pid: number;
  /** The command the CLI ran under this member (truncated), if the id carries one. */
  readonly command?: string;
}

const FORM = /^([^\s:][^\s]*?):(\d{1,10}):([0-9a-f]{6})(?: (.+))?$/s;

// biome-ignore lint/suspicious/noControlCharactersInRegex: member ids refuse control characters.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** Longest command kept in a CLI member id, in characters. */
export const MEMBER_COMMAND_CHARS = 120;

/** Splits a member id of the default or the CLI form; `null` for any other. */
export function memberDetails(memberId: string): MemberDetails | null {
  const match = FORM.exec(memberId);
  if (!match) return null;
  const [, host = "", pid = "0", , command] = match;
  return { host, pid: Number(pid), ...(command === undefined ? {} : { command }) };
}

/**
 * A member id of the CLI form for `defaultId` (`host:pid:random`) running `argv`: the
 * command joined by spaces, control characters dropped, cut to {@link MEMBER_COMMAND_CHARS}.
 */
export function memberIdWithCommand(defaultId: string, argv: readonly string[]): string {
  const command = argv.join(" ").replace(CONTROL, " ").trim();
  if (command === "") return defaultId;
  const cut = command.length > MEMBER_COMMAND_CHARS ? `${command.slice(0, MEMBER_COMMAND_CHARS - 1)}…` : command;
  return `${defaultId} ${cut}`;
}
