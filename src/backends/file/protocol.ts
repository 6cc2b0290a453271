import type { LockMode, QueueKind, RecordEntry, RecordEvent } from "../../core/driver.js";

/**
 * The mesh's wire format: newline-delimited JSON, one message a line. Every line a peer
 * sends is checked here, field by field, before any of it is used: a peer may be a broken
 * or hostile process of the directory's owner, and one bad line must cost only that link,
 * never an exception in the process that read it.
 */

/** Longest line accepted from a peer: an inspect answer of a process holding many locks is long. */
export const MAX_LINE_CHARS = 64 * 1024 * 1024;
/** Longest string field (space, namespace, key, ids) in characters; names are at most 512 bytes. */
const MAX_STRING = 4096;
/** Longest record value (JSON text). */
const MAX_VALUE = 1024 * 1024;
/** Most slots in one subscription: a semaphore's limit is below 2^20. */
const MAX_SLOTS = 2 ** 20;
/** Slots are below 64 * 2^47 = 2^53 (see kernel.ts). */
const MAX_SLOT = Number.MAX_SAFE_INTEGER;

/** A peer's id: its pid and 8 random hex digits, also the name of its socket. */
export const PEER_ID = /^[1-9][0-9]{0,9}-[0-9a-f]{8}$/;

/** What a process holds or awaits, as peers see it in `inspect`. */
export interface LocalQueueState {
  readonly namespace: string;
  readonly kind: QueueKind;
  readonly name: string;
  readonly limit: number;
  readonly memberId: string;
  readonly sessionId: string;
  readonly mode: LockMode;
  readonly since: number;
  /** Present for holders, as a decimal string; absent for waiters. */
  readonly token?: string;
}

/** The records of one space a process publishes. */
export interface SpaceEntries {
  readonly space: string;
  readonly entries: RecordEntry[];
}

/** A request a peer may send, and what each one carries. */
export type Request =
  | { readonly op: "sub"; readonly slots: number[] }
  | { readonly op: "rsub"; readonly space: string }
  | { readonly op: "list"; readonly space: string }
  | { readonly op: "inspect"; readonly namespace: string; readonly prefix: string }
  | { readonly op: "namespaces" };

/** A message pushed without an answer. */
export type Push =
  | { readonly k: "free"; readonly slot: number }
  | { readonly k: "pass"; readonly slot: number }
  | { readonly k: "unsub"; readonly slots: number[] }
  | { readonly k: "runsub"; readonly space: string }
  | { readonly k: "rec"; readonly space: string; readonly event: RecordEvent };

/** A line, parsed and checked. */
export type Incoming =
  | { readonly t: "hello"; readonly peer: string }
  | { readonly t: "req"; readonly id: number; readonly request: Request }
  | { readonly t: "res"; readonly id: number; readonly body: Record<string, unknown> }
  | { readonly t: "push"; readonly push: Push };

/** A line that breaks the protocol: the link that sent it is closed. */
export class ProtocolError extends Error {}

type Obj = Record<string, unknown>;

function fail(what: string): never {
  throw new ProtocolError(what);
}

function object(value: unknown, what: string): Obj {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(`${what} is not an object`);
  return value as Obj;
}

function string(value: unknown, what: string, max = MAX_STRING): string {
  if (typeof value !== "string" || value.length > max) fail(`${what} is not a string of at most ${max} characters`);
  return value;
}

function integer(value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    fail(`${what} is not an integer in [${min}, ${max}]`);
  }
  return value;
}

function slots(value: unknown): number[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_SLOTS) fail("slots is not a list of slots");
  for (const slot of value) integer(slot, "slot", 0, MAX_SLOT);
  return value as number[];
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], what: string): T {
  if (!allowed.includes(value as T)) fail(`${what} is not one of ${allowed.join(", ")}`);
  return value as T;
}

function list<T>(value: unknown, what: string, item: (v: unknown) => T): T[] {
  if (!Array.isArray(value)) fail(`${what} is not a list`);
  return value.map(item);
}

/** A record entry from a peer; its value must be JSON, as the core parses it. */
export function recordEntry(value: unknown): RecordEntry {
  const o = object(value, "record entry");
  const entry: RecordEntry = {
    key: string(o.key, "record key"),
    value: string(o.value, "record value", MAX_VALUE),
    sessionId: string(o.sessionId, "record sessionId"),
    createdAt: integer(o.createdAt, "record createdAt", 0, Number.MAX_SAFE_INTEGER),
  };
  try {
    JSON.parse(entry.value);
  } catch {
    fail("record value is not JSON");
  }
  return entry;
}

function recordEvent(value: unknown): RecordEvent {
  const o = object(value, "record event");
  if (o.type === "put") return { type: "put", entry: recordEntry(o.entry) };
  if (o.type === "delete") return { type: "delete", key: string(o.key, "record key") };
  return fail("record event type is not put or delete");
}

const KINDS: readonly QueueKind[] = ["lock", "semaphore", "election"];
const MODES: readonly LockMode[] = ["exclusive", "shared"];

function queueState(value: unknown): LocalQueueState {
  const o = object(value, "queue state");
  const state: LocalQueueState = {
    namespace: string(o.namespace, "namespace"),
    kind: oneOf(o.kind, KINDS, "kind"),
    name: string(o.name, "name"),
    limit: integer(o.limit, "limit", 1, Number.MAX_SAFE_INTEGER),
    memberId: string(o.memberId, "memberId"),
    sessionId: string(o.sessionId, "sessionId"),
    mode: oneOf(o.mode, MODES, "mode"),
    since: integer(o.since, "since", 0, Number.MAX_SAFE_INTEGER),
  };
  if (o.token === undefined) return state;
  if (typeof o.token !== "string" || !/^[0-9]{1,30}$/.test(o.token)) fail("token is not a decimal string");
  return { ...state, token: o.token };
}

function spaceEntries(value: unknown): SpaceEntries {
  const o = object(value, "space");
  return { space: string(o.space, "space"), entries: list(o.entries, "entries", recordEntry) };
}

/** Answers, by request: each checks the body of a `res`. */
export const answers = {
  entries: (body: Obj): RecordEntry[] => list(body.entries, "entries", recordEntry),
  inspect: (body: Obj): { queues: LocalQueueState[]; spaces: SpaceEntries[] } => ({
    queues: list(body.queues, "queues", queueState),
    spaces: list(body.spaces, "spaces", spaceEntries),
  }),
  namespaces: (body: Obj): string[] => list(body.namespaces, "namespaces", (v) => string(v, "namespace")),
  none: (_body: Obj): null => null,
};

function request(o: Obj): Request {
  switch (o.op) {
    case "sub":
      return { op: "sub", slots: slots(o.slots) };
    case "rsub":
    case "list":
      return { op: o.op, space: string(o.space, "space") };
    case "inspect":
      return { op: "inspect", namespace: string(o.namespace, "namespace"), prefix: string(o.prefix, "prefix") };
    case "namespaces":
      return { op: "namespaces" };
    default:
      return fail("unknown request");
  }
}

function push(o: Obj): Push {
  switch (o.k) {
    case "free":
    case "pass":
      return { k: o.k, slot: integer(o.slot, "slot", 0, MAX_SLOT) };
    case "unsub":
      return { k: "unsub", slots: slots(o.slots) };
    case "runsub":
      return { k: "runsub", space: string(o.space, "space") };
    case "rec":
      return { k: "rec", space: string(o.space, "space"), event: recordEvent(o.event) };
    default:
      return fail("unknown push");
  }
}

/** Parses and checks one line; throws {@link ProtocolError} when it breaks the protocol. */
export function parseLine(line: string): Incoming {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    fail("not JSON");
  }
  const o = object(parsed, "message");
  switch (o.t) {
    case "hello": {
      const peer = string(o.peer, "peer");
      if (!PEER_ID.test(peer)) fail("peer id is malformed");
      return { t: "hello", peer };
    }
    case "req":
      return { t: "req", id: integer(o.id, "id", 1, Number.MAX_SAFE_INTEGER), request: request(o) };
    case "res":
      return { t: "res", id: integer(o.id, "id", 1, Number.MAX_SAFE_INTEGER), body: o };
    case "push":
      return { t: "push", push: push(o) };
    default:
      return fail("unknown message type");
  }
}
