/**
 * Lock holders in their own processes (test/backends/fixtures/etcd-holder.ts, which works
 * with any backend URL) and the fenced resource they write to, for the fault tests of
 * every networked backend.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { waitFor } from "../conformance/helpers.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const fixtures = join(root, "test", "backends", "fixtures");

/**
 * The resource a lock protects, checking fencing tokens the way it should: a write with a
 * token lower than the highest one seen is rejected.
 */
export class FencedResource {
  highest = -1n;
  readonly rejected: { token: bigint; who: string }[] = [];

  write(token: bigint, who: string): boolean {
    if (token < this.highest) {
      this.rejected.push({ token, who });
      return false;
    }
    this.highest = token;
    return true;
  }

  /** Serves `POST {token, who}` -> `{accepted}` on a loopback port, for other processes. */
  async serve(): Promise<{ url: string; close: () => Promise<void> }> {
    const server: Server = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk: Buffer) => {
        body += chunk.toString();
      });
      request.on("end", () => {
        const { token, who } = JSON.parse(body) as { token: string; who: string };
        const accepted = this.write(BigInt(token), who);
        response.setHeader("content-type", "application/json");
        response.end(JSON.stringify({ accepted }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : 0;
    return {
      url: `http://127.0.0.1:${port}/write`,
      close: () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  }
}

export interface HolderEvent {
  event: string;
  message?: string;
  token?: string;
  session?: string;
  why?: string;
  accepted?: boolean;
  lost?: boolean;
  reason?: string;
  /** Epoch ms of the event (`lost`). */
  at?: number;
}

/** A holder process (fixtures/etcd-holder.ts) and the events it printed. */
export class Holder {
  readonly child: ChildProcess;
  readonly events: HolderEvent[] = [];
  readonly #exited: Promise<void>;
  #stderr = "";

  /**
   * `acquire`: extra acquire options (JSON), e.g. `{ fenceInfo, lockDelayMs }`; `busyMs`:
   * block the holder's event loop that long in every `busyMs + 50` ms once it holds.
   */
  constructor(
    url: string,
    lockName: string,
    ttlMs: number,
    resource?: string,
    acquire?: Record<string, unknown>,
    busyMs?: number,
  ) {
    const args = ["--import", "tsx", join(fixtures, "etcd-holder.ts"), url, lockName, String(ttlMs)];
    if (resource) args.push(resource);
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (acquire) env.BATON_HOLDER_ACQUIRE = JSON.stringify(acquire);
    if (busyMs) env.BATON_HOLDER_BUSY_MS = String(busyMs);
    this.child = spawn(process.execPath, args, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    this.#exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      this.events.push(JSON.parse(line) as HolderEvent);
    });
    this.child.stderr!.on("data", (chunk: Buffer) => {
      this.#stderr += chunk.toString();
    });
  }

  /** Waits for the first event matching `match`. */
  async next(match: (e: HolderEvent) => boolean, what: string, timeoutMs = 30_000): Promise<HolderEvent> {
    await waitFor(
      () => {
        if (this.child.exitCode !== null) assert.fail(`holder exited (${this.child.exitCode}): ${this.#stderr}`);
        const failed = this.events.find((e) => e.event === "error");
        if (failed) assert.fail(`holder failed: ${JSON.stringify(failed)}`);
        return this.events.some(match);
      },
      what,
      timeoutMs,
    );
    return this.events.find(match)!;
  }

  /** Resolves once this test process has seen the holder exit (its `signalCode` is set then). */
  get exited(): Promise<void> {
    return this.#exited;
  }

  signal(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  async stop(): Promise<void> {
    this.signal("SIGCONT");
    this.signal("SIGKILL");
    await this.#exited;
  }
}
