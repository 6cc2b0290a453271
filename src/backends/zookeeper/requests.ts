/**
 * The requests `node-zookeeper-client` has no method for, built from its wire records and
 * queued on its connection: a create that passes on the answer's zxid, container nodes
 * (3.5+), and persistent recursive watches (3.6+). client.ts sends them through its own
 * call path, so they are bounded and renew the local deadline like any other request.
 *
 * @module
 */
import type { Cb, Jute, Manager, RawResponse } from "./package.js";

/** Opcodes of the requests sent by hand. */
const OP = { create: 1, delete: 2, removeWatches: 18, createContainer: 19, addWatch: 106 } as const;

/** Node kinds (CreateMode). */
export const FLAGS = { persistent: 0, ephemeral: 1, ephemeralSequential: 3, container: 4 } as const;

/** How a hand-built request goes out: described by `what`, answered through `cb`. */
export type Call = (what: string, send: (cb: Cb) => void) => Promise<unknown[]>;

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
