import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer, type Server, type Socket, connect as netConnect } from "node:net";

/**
 * The processes using one Baton directory find each other and talk over Linux abstract
 * Unix sockets (`\0baton.<dir-id>.<peer-id>`): no file is created, and the kernel closes a
 * dead process's sockets at once, which is how the others learn it died. Messages are
 * newline-delimited JSON. Discovery reads `/proc/net/unix`.
 *
 * Message kinds: `hello`; `req`/`res` with an id (subscriptions, inspect, record listing);
 * `push` (a slot was freed, a record changed).
 */

/** How long discovery waits for a new peer's hello before going on without it. */
const HELLO_WAIT_MS = 300;

/** A message pushed or requested between peers. */
export type Message = { readonly [key: string]: unknown };

/** A connection to another process. */
export class Link {
  readonly #socket: Socket;
  readonly #pending = new Map<number, { resolve: (m: Message) => void; reject: (e: Error) => void }>();
  #nextId = 0;
  #buffer = "";
  peerId: string | null = null;
  closed = false;
  #ready: () => void = () => {};
  /** Resolves once the peer said hello (or the link closed). */
  readonly ready = new Promise<void>((resolve) => {
    this.#ready = resolve;
  });

  constructor(
    socket: Socket,
    private readonly onMessage: (link: Link, message: Message) => void,
    private readonly onClose: (link: Link) => void,
  ) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.#data(chunk));
    socket.on("error", () => {});
    socket.on("close", () => this.#closed());
  }

  send(message: Message): void {
    if (!this.closed) this.#socket.write(`${JSON.stringify(message)}\n`);
  }

  /** Sends a request and resolves with the peer's answer; rejects if the link closes. */
  request(op: string, body: Message = {}, timeoutMs = 5000): Promise<Message> {
    if (this.closed) return Promise.reject(new Error("peer gone"));
    const id = ++this.#nextId;
    return new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.get(id)?.reject(new Error(`peer ${this.peerId} did not answer ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      const settle = () => {
        clearTimeout(timer);
        this.#pending.delete(id);
        this.#updateRef();
      };
      this.#pending.set(id, {
        resolve: (m) => {
          settle();
          resolve(m);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      });
      this.#updateRef();
      this.send({ t: "req", id, op, ...body });
    });
  }

  reply(id: unknown, body: Message): void {
    this.send({ t: "res", id, ...body });
  }

  /**
   * An idle link must not keep the process alive; one with a request in flight (or still
   * waiting for the peer's hello) must, or a process awaiting the answer could just exit.
   */
  #updateRef(): void {
    if (this.#pending.size > 0 || this.peerId === null) this.#socket.ref();
    else this.#socket.unref();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #data(chunk: string): void {
    this.#buffer += chunk;
    let newline = this.#buffer.indexOf("\n");
    while (newline >= 0) {
      const line = this.#buffer.slice(0, newline);
      this.#buffer = this.#buffer.slice(newline + 1);
      newline = this.#buffer.indexOf("\n");
      let message: Message;
      try {
        message = JSON.parse(line) as Message;
      } catch {
        continue;
      }
      if (message.t === "res") {
        const pending = this.#pending.get(message.id as number);
        this.#pending.delete(message.id as number);
        pending?.resolve(message);
      } else {
        this.onMessage(this, message);
      }
    }
  }

  /** @internal */
  markReady(): void {
    this.#ready();
    this.#updateRef();
  }

  #closed(): void {
    if (this.closed) return;
    this.closed = true;
    this.#ready();
    for (const pending of this.#pending.values()) pending.reject(new Error("peer gone"));
    this.#pending.clear();
    this.onClose(this);
  }
}

/** Handlers the mesh calls. */
export interface MeshHandlers {
  /** A request from a peer; the returned body is sent back. */
  request(link: Link, op: string, message: Message): Message | Promise<Message>;
  /** A pushed message. */
  push(link: Link, message: Message): void;
  /** A new peer said hello. */
  joined(link: Link): void;
  /** A peer's link closed: it died or closed its directory. */
  left(link: Link): void;
}

/** This process's presence in one directory's mesh. */
export class Mesh {
  readonly peerId = `${process.pid}-${randomBytes(4).toString("hex")}`;
  readonly #prefix: string;
  readonly #handlers: MeshHandlers;
  readonly #links = new Map<string, Link>();
  readonly #connecting = new Map<string, Promise<void>>();
  #server: Server | null = null;

  constructor(directoryId: string, handlers: MeshHandlers) {
    this.#prefix = `baton.${directoryId}.`;
    this.#handlers = handlers;
  }

  /** Live peers that said hello. */
  get links(): Link[] {
    return [...this.#links.values()];
  }

  /** Listens, then connects to every peer already there. */
  async start(): Promise<void> {
    const server = createServer((socket) => this.#adopt(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(`\0${this.#prefix}${this.peerId}`, () => resolve());
    });
    server.unref();
    this.#server = server;
    await this.discover();
  }

  /** Connects to peers not yet linked (new processes). Cheap when nothing changed. */
  async discover(): Promise<void> {
    let table: string;
    try {
      table = await readFile("/proc/net/unix", "utf8");
    } catch {
      return;
    }
    const marker = `@${this.#prefix}`;
    const found = new Set<string>();
    for (const line of table.split("\n")) {
      const at = line.indexOf(marker);
      if (at < 0) continue;
      const peer = line
        .slice(at + marker.length)
        .replace(/@+$/, "")
        .trim();
      if (peer && peer !== this.peerId) found.add(peer);
    }
    await Promise.all([...found].filter((p) => !this.#links.has(p)).map((p) => this.#connect(p)));
  }

  close(): void {
    this.#server?.close();
    for (const link of this.#links.values()) link.destroy();
    this.#links.clear();
  }

  #connect(peer: string): Promise<void> {
    let pending = this.#connecting.get(peer);
    if (pending) return pending;
    pending = new Promise<void>((resolve) => {
      const socket = netConnect(`\0${this.#prefix}${peer}`);
      const done = () => {
        this.#connecting.delete(peer);
        resolve();
      };
      socket.once("error", done);
      socket.once("connect", () => {
        socket.off("error", done);
        // Wait for the peer's hello so that the link is usable when discover() returns,
        // but not for long: a paused (SIGSTOP) or busy peer must not hold us up.
        const timer = setTimeout(done, HELLO_WAIT_MS);
        this.#adopt(socket).ready.then(() => {
          clearTimeout(timer);
          done();
        });
      });
    });
    this.#connecting.set(peer, pending);
    return pending;
  }

  #adopt(socket: Socket): Link {
    const link = new Link(
      socket,
      (l, message) => this.#message(l, message),
      (l) => {
        if (l.peerId && this.#links.get(l.peerId) === l) {
          this.#links.delete(l.peerId);
          this.#handlers.left(l);
        }
      },
    );
    link.send({ t: "hello", peer: this.peerId });
    return link;
  }

  #message(link: Link, message: Message): void {
    if (message.t === "hello") {
      const peer = String(message.peer);
      link.peerId = peer;
      link.markReady();
      const existing = this.#links.get(peer);
      // Two processes may dial each other at once; keep one link and keep both usable.
      if (existing && !existing.closed) return;
      this.#links.set(peer, link);
      this.#handlers.joined(link);
      return;
    }
    if (message.t === "req") {
      Promise.resolve()
        .then(() => this.#handlers.request(link, String(message.op), message))
        .then(
          (body) => link.reply(message.id, body),
          (error: unknown) => link.reply(message.id, { error: String(error) }),
        );
      return;
    }
    if (message.t === "push") this.#handlers.push(link, message);
  }
}
