/**
 * The requests `node-zookeeper-client` has no method for, built from its wire records and
 * queued on its connection: a create that passes on the answer's zxid, container nodes
 * (3.5+), and persistent recursive watches (3.6+). client.ts sends them through its own
 * call path, so they are bounded and renew the local deadline like any other request.
 *
 * @module
 */
import { ZkMultiError } from "./errors.js";
import type { Cb, Jute, Manager, RawResponse, RawStat } from "./package.js";

/** Opcodes of the requests sent by hand. */
const OP = {
  create: 1,
  delete: 2,
  setData: 5,
  sync: 9,
  check: 13,
  multi: 14,
  removeWatches: 18,
  createContainer: 19,
  addWatch: 106,
} as const;

/** One op of a multi. A `version` of -1 matches any version. */
export type MultiOp =
  | { readonly op: "create"; readonly path: string; readonly data: string; readonly flags: number }
  | { readonly op: "check"; readonly path: string; readonly version: number }
  | { readonly op: "set"; readonly path: string; readonly data: string; readonly version: number }
  | { readonly op: "delete"; readonly path: string; readonly version: number };

/** What a multi that succeeded did: its zxid, the stat of each `set` and the path of each `create` (by op index). */
export interface MultiDone {
  readonly zxid: bigint;
  readonly stats: ReadonlyMap<number, RawStat>;
  readonly paths: ReadonlyMap<number, string>;
}

/** The code ZooKeeper gives the ops of a failed multi that did not fail themselves. */
const RUNTIME_INCONSISTENCY = -2;

/** Node kinds (CreateMode). */
export const FLAGS = { persistent: 0, ephemeral: 1, ephemeralSequential: 3, container: 4 } as const;

/** How a hand-built request goes out: described by `what`, answered through `cb`. */
export type Call = (what: string | (() => string), send: (cb: Cb) => void) => Promise<unknown[]>;

/** Hand-built requests on one client's connection. */
export class HandBuilt {
  readonly #jute: Jute;
  readonly #acl: readonly { toRecord(): object }[];
  readonly #manager: () => Manager;
  readonly #call: Call;

  constructor(jute: Jute, acl: readonly { toRecord(): object }[], manager: () => Manager, call: Call) {
    this.#jute = jute;
    this.#acl = acl;
    this.#manager = manager;
    this.#call = call;
  }

  /**
   * Creates a node; resolves with its path and creation zxid. The zxid is the answer's
   * header's (the server puts the zxid of the transaction it just applied there, and it
   * applies one session's writes in order), which the package's `create` does not pass on.
   */
  createNode(path: string, data: string, flags: number): Promise<{ path: string; czxid: bigint }> {
    const payload = new this.#jute.protocol.CreateRequest();
    payload.path = path;
    payload.data = Buffer.from(data);
    payload.acl = this.#acl.map((a) => a.toRecord());
    payload.flags = flags;
    const header = new this.#jute.protocol.RequestHeader();
    header.type = OP.create;
    const request = new this.#jute.Request(header, payload);
    const manager = this.#manager();
    return this.#call(`creating ${path}`, (cb) =>
      manager.queue(request, (error, response) => cb(error, response as RawResponse)),
    ).then(([response]) => {
      const { header: reply, payload: created } = response as RawResponse;
      const zxid = reply.zxid;
      return {
        path: created?.path as string,
        czxid: Buffer.isBuffer(zxid) ? zxid.readBigInt64BE(0) : BigInt(zxid as number),
      };
    });
  }

  /**
   * Applies `ops` atomically (MULTI): all of them or none. Built here rather than with the
   * package's `transaction()`, whose `check`, `setData` and `remove` turn a version of 0
   * into -1 (any version), and which does not pass on the zxid. Rejects with a
   * {@link ZkMultiError} naming the first op that failed.
   */
  multi(ops: readonly MultiOp[]): Promise<MultiDone> {
    const records = ops.map((o) =>
      o.op === "create"
        ? { type: OP.create, path: o.path, data: Buffer.from(o.data), acls: this.#acl, mode: o.flags }
        : o.op === "set"
          ? { type: OP.setData, path: o.path, data: Buffer.from(o.data), version: o.version }
          : { type: o.op === "check" ? OP.check : OP.delete, path: o.path, version: o.version },
    );
    const header = new this.#jute.protocol.RequestHeader();
    header.type = OP.multi;
    const request = new this.#jute.Request(header, new this.#jute.TransactionRequest(records));
    const manager = this.#manager();
    const what = () => `applying ${ops.map((o) => `${o.op} ${o.path}`).join(", ")}`;
    return this.#call(what, (cb) =>
      manager.queue(request, (error, response) => cb(error, response as RawResponse)),
    ).then(([response]) => {
      const { header: reply, payload } = response as RawResponse;
      const results = payload?.results ?? [];
      const failed = results.findIndex((r) => r.err !== undefined && r.err !== 0 && r.err !== RUNTIME_INCONSISTENCY);
      if (failed >= 0) throw new ZkMultiError(results[failed]?.err as number, failed, what());
      const stats = new Map<number, RawStat>();
      const paths = new Map<number, string>();
      results.forEach((r, i) => {
        if (r.stat) stats.set(i, r.stat);
        if (r.path !== undefined) paths.set(i, r.path);
      });
      const zxid = reply.zxid;
      return { zxid: Buffer.isBuffer(zxid) ? zxid.readBigInt64BE(0) : BigInt(zxid as number), stats, paths };
    });
  }

  /**
   * Creates a container node (ZooKeeper 3.5+): the server deletes it some time after its
   * last child is gone, so lock and group parents leave no litter. The package has no method
   * for it, so the request goes out as CREATE_CONTAINER (opcode 19) and its answer is read
   * as a CREATE's (the path comes first; the stat after it is skipped with the packet).
   */
  createContainer(path: string): Promise<void> {
    const payload = new this.#jute.protocol.CreateRequest();
    payload.path = path;
    payload.data = Buffer.alloc(0);
    payload.acl = this.#acl.map((a) => a.toRecord());
    payload.flags = FLAGS.container;
    return this.#sendAs(`creating ${path}`, OP.create, OP.createContainer, payload);
  }

  /**
   * SYNC (opcode 9): answered once the server this client is connected to has applied every
   * write the leader committed before it, so a read sent after it sees them (ZooKeeper's
   * read-your-writes holds within one session only). The package has no SYNC: it goes out
   * in a GET_ACL's shape (a path alone) and its answer (a path) is read as a CREATE's.
   */
  sync(path: string): Promise<void> {
    const payload = new this.#jute.protocol.GetACLRequest();
    payload.path = path;
    return this.#sendAs(`syncing ${path}`, OP.create, OP.sync, payload);
  }

  /**
   * ADD_WATCH (opcode 106), mode PERSISTENT_RECURSIVE. The package knows no ADD_WATCH, so
   * it goes out in a DELETE's shape (a path and an int, and an empty answer).
   */
  addWatch(path: string): Promise<void> {
    const payload = new this.#jute.protocol.DeleteRequest();
    payload.path = path;
    payload.version = 1; // AddWatchMode.PERSISTENT_RECURSIVE
    return this.#sendAs(`watching ${path}`, OP.delete, OP.addWatch, payload);
  }

  /** REMOVE_WATCHES (opcode 18), kind PERSISTENT_RECURSIVE (5); the same shape again. */
  removeWatch(path: string): Promise<void> {
    const payload = new this.#jute.protocol.DeleteRequest();
    payload.path = path;
    payload.version = 5;
    return this.#sendAs(`unwatching ${path}`, OP.delete, OP.removeWatches, payload);
  }

  /**
   * Sends a request the package has no method for: serialized as `payload` with opcode
   * `wire`, its answer parsed as the package parses answers to `parseAs`.
   */
  #sendAs(what: string, parseAs: number, wire: number, payload: object): Promise<void> {
    const { protocol, Request } = this.#jute;
    const header = new protocol.RequestHeader();
    header.type = parseAs;
    const request = new Request(header, payload);
    const toBuffer = request.toBuffer.bind(request);
    request.toBuffer = () => {
      header.type = wire;
      try {
        return toBuffer();
      } finally {
        header.type = parseAs;
      }
    };
    const manager = this.#manager();
    return this.#call(what, (cb) => manager.queue(request, (error) => cb(error))).then(() => {});
  }
}
