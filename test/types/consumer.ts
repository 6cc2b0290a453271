/**
 * A consumer's code against the published types (dist/src/*.d.ts), compiled by
 * test/types.test.ts with strict, exactOptionalPropertyTypes and nodenext. Never run:
 * every line is a type assertion; `@ts-expect-error` lines must fail to compile.
 */
import {
  type AcquireOptions,
  type CampaignOptions,
  type ConnectOptions,
  Coordinator,
  connect,
  Election,
  Group,
  type GroupEvent,
  type Inspection,
  type InspectionJson,
  inspectionToJson,
  type Leader,
  Leadership,
  Lock,
  LockHandle,
  Membership,
  Partitioner,
  Semaphore,
  type Takeover,
} from "../../dist/src/index.js";

interface Caps {
  readonly zone: string;
  readonly load: number;
}
interface Announcement {
  readonly url: string;
}
declare const cfg: { timeoutMs?: number; signal?: AbortSignal; ttlMs?: number; namespace?: string };
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assertType = <T extends true>(_: T) => {};

export async function consumer(): Promise<void> {
  // Optional fields take undefined (exactOptionalPropertyTypes).
  const connectOptions: ConnectOptions = { ttlMs: cfg.ttlMs, namespace: cfg.namespace, ttl: undefined };
  await using coord = await connect("memory://", connectOptions);
  const acquireOptions: AcquireOptions = { timeoutMs: cfg.timeoutMs, signal: cfg.signal, mode: undefined };
  await using lock = await coord.lock("x").acquire(acquireOptions);
  await coord.lock("x").acquire({ timeoutMs: cfg.timeoutMs });
  await coord.semaphore("s", { limit: 2 }).acquire({ timeoutMs: cfg.timeoutMs, signal: cfg.signal });
  await lock.upgrade({ timeoutMs: cfg.timeoutMs });
  const campaignOptions: CampaignOptions = { timeoutMs: cfg.timeoutMs };
  await coord.partitioner("p", { weight: undefined, vnodes: undefined, capabilities: undefined });
  await connect("memory://", { require: { fencing: true, fifo: undefined, crashReleaseMs: cfg.timeoutMs } });
  lock.token satisfies bigint;

  // Takeover options take undefined too; the hook and the takeover are typed.
  const trackedOptions: AcquireOptions = {
    fenceInfo: cfg.namespace,
    lockDelayMs: cfg.timeoutMs,
    onTakeover: undefined,
    takeover: undefined,
  };
  const tracked = await coord.lock("t").acquire({
    ...trackedOptions,
    onTakeover: async (previous, signal) => {
      previous.token satisfies bigint;
      previous.fenceInfo satisfies unknown;
      signal satisfies AbortSignal;
    },
  });
  tracked.takeover satisfies Takeover | null;
  (await coord.revoke("t", { memberId: cfg.namespace, kind: undefined }))[0]?.token satisfies bigint | undefined;
  // @ts-expect-error marking a handle as claimed is internal
  tracked.claimed;

  // Group capabilities are generic.
  const group = coord.group<Caps>("workers");
  group satisfies Group<Caps>;
  const membership = await group.join({ zone: "eu", load: 1 });
  membership satisfies Membership<Caps>;
  await membership.update({ zone: "us", load: 2 });
  // @ts-expect-error capabilities must match Caps
  await membership.update({ zone: 1 });
  // @ts-expect-error capabilities must match Caps
  await group.join({ nope: true });
  const members = await group.members();
  assertType<Equal<(typeof members)[number]["capabilities"], Caps>>(true);
  for await (const event of group.watch()) {
    event satisfies GroupEvent<Caps>;
    if (event.type !== "leave") event.member.capabilities.zone satisfies string;
    break;
  }
  // Without a type argument, capabilities are unknown.
  const untyped = await coord.group("any").members();
  assertType<Equal<(typeof untyped)[number]["capabilities"], unknown>>(true);

  // Election values are generic.
  const election = coord.election<Announcement>("scheduler");
  election satisfies Election<Announcement>;
  const leadership = await election.campaign({ url: "http://a" }, campaignOptions);
  leadership satisfies Leadership<Announcement>;
  leadership.value.url satisfies string;
  await leadership.proclaim({ url: "http://b" });
  // @ts-expect-error the value must match Value
  await leadership.proclaim({ port: 1 });
  // @ts-expect-error the value must match Value
  await election.campaign("a string");
  const leader = await election.leader();
  assertType<Equal<typeof leader, Leader<Announcement> | null>>(true);
  for await (const current of election.observe()) {
    current?.value.url satisfies string | undefined;
    break;
  }

  // The inspection serialises as it is, with a typed JSON form.
  const info: Inspection = await coord.inspect();
  const json: InspectionJson = info.toJSON();
  json.locks[0]?.holders[0]?.token satisfies string | undefined;
  inspectionToJson(info) satisfies InspectionJson;
  JSON.stringify(info);

  // Internals are not in the public types.
  // @ts-expect-error no public constructor
  new Coordinator();
  // @ts-expect-error no public constructor
  new Lock();
  // @ts-expect-error no public constructor
  new Semaphore();
  // @ts-expect-error no public constructor
  new LockHandle();
  // @ts-expect-error no public constructor
  new Group();
  // @ts-expect-error no public constructor
  new Membership();
  // @ts-expect-error no public constructor
  new Election();
  // @ts-expect-error no public constructor
  new Leadership();
  // @ts-expect-error no public constructor
  new Partitioner();
  // @ts-expect-error no internal factory
  Lock.create;
  // @ts-expect-error no internal factory
  Coordinator.create;
  // @ts-expect-error lose() is internal
  lock.lose(new Error("x"));
  // @ts-expect-error _core is internal
  coord._core;
  // @ts-expect-error the session of a membership is internal
  membership.session;
  // @ts-expect-error internal
  group.space;
  // @ts-expect-error internal
  group.forget(membership);
  // @ts-expect-error internal
  group.removeRecord;
  // instanceof still works on the exported classes.
  if (lock instanceof LockHandle) lock.held satisfies boolean;
}
