/** The runner's side of the worker processes (bench/worker.ts). */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";

const WORKER = fileURLToPath(new URL("../worker.js", import.meta.url));

export type WorkerEvent = { event: string } & Record<string, unknown>;

export class Worker {
  readonly child: ChildProcess;
  readonly up: Promise<void>;
  #next = 0;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #listeners = new Set<(event: WorkerEvent) => void>();
  #exited = false;

  constructor() {
    this.child = fork(WORKER, [], {
      // BENCH_WORKER_ARGS: extra node flags for diagnosis, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p".
      execArgv: ["--expose-gc", ...(process.env.BENCH_WORKER_ARGS?.split(" ").filter(Boolean) ?? [])],
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    let up!: () => void;
    this.up = new Promise((resolve) => {
      up = resolve;
    });
    this.child.on(
      "message",
      (message: { id?: number; ok?: boolean; result?: unknown; error?: string } & WorkerEvent) => {
        if (message.event === "up") up();
        if (message.event === "log") process.stderr.write(`${String(message.text)}\n`);
        if (message.event !== undefined) {
          for (const listener of this.#listeners) listener(message);
          return;
        }
        const pending = this.#pending.get(message.id as number);
        this.#pending.delete(message.id as number);
        if (!pending) return;
        if (message.ok) pending.resolve(message.result);
        else pending.reject(new Error(message.error));
      },
    );
    this.child.on("exit", () => {
      this.#exited = true;
      for (const pending of this.#pending.values()) pending.reject(new Error(`worker ${this.pid} exited`));
      this.#pending.clear();
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get exited(): boolean {
    return this.#exited;
  }

  call<T = unknown>(op: string, params: Record<string, unknown> = {}, timeoutMs = 600_000): Promise<T> {
    if (this.#exited) return Promise.reject(new Error(`worker ${this.pid} has exited`));
    const id = ++this.#next;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`worker ${this.pid}: ${op} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ id, op, ...params });
    });
  }

  on(listener: (event: WorkerEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (!this.#exited) this.child.kill(signal);
  }
}

/** Worker processes, started on demand and reused across scenarios. */
export class Pool {
  readonly #workers: Worker[] = [];
  readonly base: bigint;

  constructor(base: bigint) {
    this.base = base;
  }

  /** The first `n` live workers, starting more as needed. */
  async take(n: number): Promise<Worker[]> {
    for (let i = 0; i < this.#workers.length; i++) {
      if (this.#workers[i]!.exited) this.#workers.splice(i--, 1);
    }
    const fresh: Worker[] = [];
    while (this.#workers.length < n) {
      const worker = new Worker();
      this.#workers.push(worker);
      fresh.push(worker);
    }
    // Started a few at a time: 64 node processes booting at once on two cores time out.
    for (let i = 0; i < fresh.length; i += 8) {
      await Promise.all(
        fresh.slice(i, i + 8).map(async (w) => {
          await w.up;
          await w.call("base", { base: String(this.base) });
        }),
      );
    }
    return this.#workers.slice(0, n);
  }

  /** A worker of its own, outside the pool (to be killed). */
  async spawnOne(): Promise<Worker> {
    const worker = new Worker();
    await worker.up;
    await worker.call("base", { base: String(this.base) });
    return worker;
  }

  close(): void {
    for (const worker of this.#workers) {
      if (worker.child.connected) worker.child.disconnect();
      worker.kill("SIGTERM");
    }
    this.#workers.length = 0;
  }
}
