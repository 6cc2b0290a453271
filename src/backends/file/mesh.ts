import { randomBytes } from "node:crypto";
import { chmodSync, lstatSync, renameSync, unlinkSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { createServer, type Server, type Socket, connect as netConnect } from "node:net";
import { debug } from "../../core/debug.js";
import { PEERS_FOLDER } from "./directory.js";
import { MAX_LINE_CHARS, PEER_ID, type Push, parseLine, ProtocolError, type Request } from "./protocol.js";

/**
 * The processes using one Baton directory find each other and talk over Unix sockets that
 * live in the directory itself, `<dir>/peers/<pid>-<random>`: connecting to one needs
 * search permission on the directory and write permission on the socket (mode 0600), so
 * only the directory's owner (and root) can join, exactly who can take its locks. Abstract
 * sockets, which any local user can find in /proc/net/unix and connect to, are not used.
 * The kernel closes a dead process's sockets at once, which is how the others learn it
 * died; the socket file it leaves behind is removed by the next peer that finds nobody
 * listening on it. Messages are newline-delimited JSON, each checked by protocol.ts.
 *
 * Paths go through `/proc/self/fd/<directory fd>`, so the socket path stays far below the
 * kernel's 108-byte limit however deep the directory is.
 *
 * Message kinds: `hello`; `req`/`res` with an id (subscriptions, inspect, record listing);
 * `push` (a slot was freed, a record changed).
 */

/** How long discovery waits for a new peer's hello before going on without it. */
const HELLO_WAIT_MS = 300;
/** How long an accepted connection has to say hello. */
const HELLO_DEADLINE_MS = 5000;

let lastWarning = 0;

/** A message sent to a peer. */
export type Message = { readonly [key: string]: unknown };

/** A connection to another process. */
export class Link {
  readonly #socket: Socket;
  readonly #pending = new Map<number, { resolve: (m: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  #nextId = 0;
  #buffer = "";
  /** The peer's id once it said hello; nothing but hello is accepted before. */
  peerId: string | null = null;
  closed = false;
  #ready: () => void = () => {};
  /** Resolves once the peer said hello (or the link closed). */
  readonly ready = new Promise<void>((resolve) => {
    this.#ready = resolve;
  });

  constructor(
    socket: Socket,
    /** The peer this process dialed, whose hello must name it; null for an accepted link. */
    readonly dialed: string | null,
    private readonly handlers: {
      hello(link: Link, peer: string): void;
      request(link: Link, id: number, request: Request): void;
      push(link: Link, push: Push): void;
      close(link: Link): void;
    },
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

  /**
   * Sends a request and resolves with the peer's answer checked by `check`; rejects if the
   * link closes, the peer answers with an error, or the answer breaks the protocol (which
   * also closes the link).
   */
  request<T>(
    op: Request["op"],
    body: Message,
    check: (body: Record<string, unknown>) => T,
    timeoutMs = 5000,
  ): Promise<T> {
    if (this.closed) return Promise.reject(new Error("peer gone"));
    const id = ++this.#nextId;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.get(id)?.reject(new Error(`peer ${this.peerId} did not answer ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      const settle = () => {
        clearTimeout(timer);
        this.#pending.delete(id);
        this.#updateRef();
      };
      this.#pending.set(id, {
        resolve: (answer) => {
          settle();
          if (typeof answer.error === "string") {
            reject(new Error(`peer ${this.peerId} refused ${op}: ${answer.error}`));
            return;
          }
          try {
            resolve(check(answer));
          } catch (error) {
            this.#broken(error);
            reject(error);
          }
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

  reply(id: number, body: Message): void {
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
    if (this.closed) return;
    let start = 0;
    let newline = chunk.indexOf("\n");
    while (newline >= 0) {
      const line = this.#buffer + chunk.slice(start, newline);
      this.#buffer = "";
      start = newline + 1;
      newline = chunk.indexOf("\n", start);
      if (!this.#line(line)) return;
    }
    this.#buffer += chunk.slice(start);
    if (this.#buffer.length > MAX_LINE_CHARS) this.#broken(new ProtocolError("line too long"));
  }

  /** Handles one line; false when it broke the protocol and the link is closed. */
  #line(line: string): boolean {
    try {
      const message = parseLine(line);
      if (message.t === "hello") {
        if (this.peerId !== null) throw new ProtocolError("second hello");
        if (this.dialed !== null && message.peer !== this.dialed) throw new ProtocolError("hello names another peer");
        this.peerId = message.peer;
        this.#ready();
        this.#updateRef();
        this.handlers.hello(this, message.peer);
        return true;
      }
      if (this.peerId === null) throw new ProtocolError(`${message.t} before hello`);
      if (message.t === "res") this.#pending.get(message.id)?.resolve(message.body);
      else if (message.t === "req") this.handlers.request(this, message.id, message.request);
      else this.handlers.push(this, message.push);
      return true;
    } catch (error) {
      this.#broken(error);
      return false;
    }
  }

  /** The peer broke the protocol (or handling its message failed): drop the link, say why. */
  #broken(error: unknown): void {
    if (this.closed) return;
    const why = error instanceof Error ? error.message : String(error);
    debug("closing the link to peer %s: %s", this.peerId ?? "(before hello)", why);
    if (Date.now() - lastWarning > 10_000) {
      lastWarning = Date.now();
      process.emitWarning(`baton: closed a file-backend mesh link that broke the protocol (${why})`, {
        code: "BATON_MESH_PROTOCOL",
      });
    }
    this.#buffer = "";
    this.destroy();
    this.#closed();
  }

  #closed(): void {
    if (this.closed) return;
    this.closed = true;
    this.#ready();
    for (const pending of this.#pending.values()) pending.reject(new Error("peer gone"));
    this.#pending.clear();
    this.handlers.close(this);
  }
}

/** Handlers the mesh calls. */
export interface MeshHandlers {
  /** A request from a peer; the returned body is sent back. */
  request(link: Link, request: Request): Message | Promise<Message>;
  /** A pushed message. */
  push(link: Link, push: Push): void;
  /** A new peer said hello. */
  joined(link: Link): void;
  /** A peer's link closed: it died or closed its directory. */
  left(link: Link): void;
}

/** This process's presence in one directory's mesh. */
export class Mesh {
  readonly peerId = `${process.pid}-${randomBytes(4).toString("hex")}`;
  /** The peers folder, through this process's descriptor of the directory. */
  readonly #folder: string;
  readonly #handlers: MeshHandlers;
  readonly #links = new Map<string, Link>();
  readonly #connecting = new Map<string, Promise<void>>();
  #server: Server | null = null;
  readonly #unlinkOnExit = () => this.#unlinkOwn();

  constructor(directoryFd: number, handlers: MeshHandlers) {
    this.#folder = `/proc/self/fd/${directoryFd}/${PEERS_FOLDER}`;
    this.#handlers = handlers;
  }

  /** Live peers that said hello. */
  get links(): Link[] {
    return [...this.#links.values()];
  }

  /** Listens, then connects to every peer already there. */
  async start(): Promise<void> {
    const server = createServer((socket) => this.#adopt(socket, null));
    // Bound under a hidden name first and renamed once it listens: between bind() and
    // listen() a connect is refused, and a peer must never take a refusal from a socket
    // under a peer's name for one left by a dead process (it would remove it).
    const staging = `${this.#folder}/.${this.peerId}`;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(staging, () => resolve());
    });
    // Owner only, whatever the umask: the folder (0700) already keeps others out, this
    // keeps them out of a folder someone made group-accessible too.
    chmodSync(staging, 0o600);
    renameSync(staging, `${this.#folder}/${this.peerId}`);
    server.unref();
    this.#server = server;
    process.on("exit", this.#unlinkOnExit);
    await this.discover();
  }

  /** Connects to peers not yet linked (new processes). Cheap when nothing changed. */
  async discover(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.#folder);
    } catch {
      return;
    }
    // A hidden name is a socket still being set up, or one whose process died before it
    // was renamed: remove those of processes that no longer exist.
    for (const name of names) {
      if (name.startsWith(".") && PEER_ID.test(name.slice(1)) && !alive(Number(name.slice(1).split("-")[0]))) {
        removeStale(`${this.#folder}/${name}`);
      }
    }
    const fresh = names.filter(
      (p) => p !== this.peerId && PEER_ID.test(p) && !this.#links.has(p) && this.#server !== null,
    );
    await Promise.all(fresh.map((p) => this.#connect(p)));
  }

  close(): void {
    process.off("exit", this.#unlinkOnExit);
    this.#server?.close();
    this.#server = null;
    this.#unlinkOwn();
    for (const link of this.#links.values()) link.destroy();
    this.#links.clear();
  }

  #unlinkOwn(): void {
    try {
      unlinkSync(`${this.#folder}/${this.peerId}`);
    } catch {
      // Already gone (net.Server removes it on close).
    }
  }

  #connect(peer: string): Promise<void> {
    let pending = this.#connecting.get(peer);
    if (pending) return pending;
    const path = `${this.#folder}/${peer}`;
    pending = new Promise<void>((resolve) => {
      const socket = netConnect(path);
      const done = () => {
        this.#connecting.delete(peer);
        resolve();
      };
      socket.once("error", (error: NodeJS.ErrnoException) => {
        // Nobody listens: the socket of a process that died without closing. Peer ids are
        // never reused, so nobody else can be behind this name: remove it.
        if (error.code === "ECONNREFUSED") removeStale(path);
        done();
      });
      socket.once("connect", () => {
        socket.removeAllListeners("error");
        // Wait for the peer's hello so that the link is usable when discover() returns,
        // but not for long: a paused (SIGSTOP) or busy peer must not hold us up.
        const timer = setTimeout(done, HELLO_WAIT_MS);
        this.#adopt(socket, peer).ready.then(() => {
          clearTimeout(timer);
          done();
        });
      });
    });
    this.#connecting.set(peer, pending);
    return pending;
  }

  #adopt(socket: Socket, dialed: string | null): Link {
    const link = new Link(socket, dialed, {
      hello: (l, peer) => {
        const existing = this.#links.get(peer);
        // Two processes may dial each other at once; keep one link and keep both usable.
        if (existing && !existing.closed) return;
        this.#links.set(peer, l);
        this.#handlers.joined(l);
      },
      request: (l, id, request) => {
        Promise.resolve()
          .then(() => this.#handlers.request(l, request))
          .then(
            (body) => l.reply(id, body),
            (error: unknown) => l.reply(id, { error: String(error) }),
          );
      },
      push: (l, push) => this.#handlers.push(l, push),
      close: (l) => {
        if (l.peerId && this.#links.get(l.peerId) === l) {
          this.#links.delete(l.peerId);
          this.#handlers.left(l);
        }
      },
    });
    link.send({ t: "hello", peer: this.peerId });
    // A process that connects and never says hello is not a peer: drop it.
    if (dialed === null) setTimeout(() => link.peerId === null && link.destroy(), HELLO_DEADLINE_MS).unref();
    return link;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function removeStale(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // Someone else removed it first.
  }
}
