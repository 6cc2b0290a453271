/**
 * The conformance suite every backend runs: one call from `test/backends/<name>.test.ts`.
 * Tests are gated by the backend's declared guarantees, never by its type.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  AbortedError,
  type BatonError,
  ClosedError,
  type ConnectOptions,
  type Coordinator,
  DeadlockError,
  type GroupEvent,
  type Guarantees,
  HashRing,
  InvalidArgumentError,
  InvalidStateError,
  type Leader,
  LockLostError,
  MissingGuaranteeError,
  type Partitioner,
  TimeoutError,
  backends,
  connect,
} from "../../src/index.js";
import { suspendKeepAlive } from "../../src/testing.js";
import type { SuiteContext } from "./context.js";
import { cellsSuite } from "./cells.js";
import { inspectJsonSuite } from "./inspect-json.js";
import { namespacesSuite } from "./namespaces.js";
import { optionsSuite } from "./options.js";
import { releaseSuite } from "./release.js";
import { sessionWaitSuite } from "./session-wait.js";
import { takeoverSuite } from "./takeover.js";
import {
  ExclusionChecker,
  OrderLog,
  interleave,
  replacer,
  settlesWithin,
  take,
  waitFor,
  waitForWaiters,
} from "./helpers.js";

/** What a backend's test file gives the suite. */
export interface ConformanceTarget {
  /** Backend name, for test titles. */
  readonly name: string;
  /** The backend's URL (each test adds its own namespace). */
  readonly url: () => string;
  /** Short TTL used where a test needs a session to expire (>= 1000). */
  readonly shortTtlMs: number;
  /** Mutual-exclusion load: clients x acquisitions each. */
  readonly contention: { readonly clients: number; readonly rounds: number };
  /**
   * Cuts a client off so that its session is lost: by default its keep-alives stop, so its
   * local deadline fires and then the backend expires the lease.
   */
  readonly loseSession?: (coord: Coordinator) => Promise<void>;
  /** Starts servers; called once before the suite. */
  readonly setup?: () => Promise<void>;
  /** Stops servers; called once after the suite. */
  readonly teardown?: () => Promise<void>;
}

/** Registers the whole conformance suite for `target`. */
export function conformance(target: ConformanceTarget): void {
  describe(`conformance: ${target.name}`, () => {
    // Declared guarantees gate the tests, so they are read from the backend's definition.
    const scheme = new URL(target.url()).protocol.slice(0, -1);
    const definition = backends().find((b) => b.schemes.includes(scheme));
    assert.ok(definition, `no backend registered for ${scheme}:`);
    const guarantees: Guarantees = definition.guarantees;
    const open: Coordinator[] = [];

    /** A fresh client in the test's namespace. */
    const client = async (namespace: string, options: ConnectOptions = {}): Promise<Coordinator> => {
      const coord = await connect(target.url(), { namespace, ...options });
      open.push(coord);
      return coord;
    };
    const clients = (namespace: string, n: number, options: ConnectOptions = {}) =>
      Promise.all(
        Array.from({ length: n }, (_, i) =>
          client(namespace, { memberId: `m${i}-${randomUUID().slice(0, 8)}`, ...options }),
        ),
      );
    const ns = () => `t-${randomUUID().slice(0, 12)}`;
    const loseSession = async (coord: Coordinator) => {
      if (target.loseSession) await target.loseSession(coord);
      else await suspendKeepAlive(coord);
    };

    before(async () => {
      await target.setup?.();
      const probe = await connect(target.url());
      assert.deepEqual(probe.guarantees, guarantees);
      await probe.close();
    });

    after(async () => {
      await Promise.all(open.map((c) => c.close()));
      await target.teardown?.();
    });

    const context: SuiteContext = { guarantees, shortTtlMs: target.shortTtlMs, client, ns, loseSession };
    releaseSuite(context);
    optionsSuite(context, target.url);
    sessionWaitSuite(context);
    inspectJsonSuite(context);
    namespacesSuite(context);
    cellsSuite(context, target.url);
    takeoverSuite(context, target.url);

    const shared = () => (guarantees.sharedLocks ? false : "backend has no shared locks");
    const fifo = () => (guarantees.fifo ? false : "backend does not declare fifo");

    describe("exclusive locks", () => {
      it("never has two exclusive holders, and tokens strictly increase, under contention", async () => {
        const { clients: n, rounds } = target.contention;
        const namespace = ns();
        const coords = await clients(namespace, n);
        const checker = new ExclusionChecker(1);
        await Promise.all(
          coords.map(async (coord) => {
            const lock = coord.lock("hot");
            for (let i = 0; i < rounds; i++) {
              const handle = await lock.acquire({ timeoutMs: 60_000 });
              checker.enter(handle);
              await interleave(i % 3);
              checker.exit();
              const result = await handle.release();
              assert.equal(result.status, "released");
            }
          }),
        );
        assert.deepEqual(checker.violations, []);
        assert.equal(checker.entries, n * rounds);
      });

      it("tryAcquire returns null while held and a handle once free", async () => {
        const [a, b] = await clients(ns(), 2);
        const held = await a!.lock("x").acquire();
        assert.equal(await b!.lock("x").tryAcquire(), null);
        await held.release();
        const mine = await b!.lock("x").tryAcquire();
        assert.ok(mine);
        assert.ok(mine.token > held.token, "token must grow from one holder to the next");
        await mine.release();
      });

      it("keeps tokens increasing per name across release, re-acquire and other names", async () => {
        const [a, b] = await clients(ns(), 2);
        const tokens: bigint[] = [];
        for (let i = 0; i < 5; i++) {
          const h = await (i % 2 ? a! : b!).lock("seq").acquire();
          tokens.push(h.token);
          const other = await a!.lock(`other-${i}`).acquire();
          await other.release();
          await h.release();
        }
        for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!, `tokens ${tokens.join(",")}`);
      });

      it("acquire with timeoutMs 0 fails at once with TimeoutError when busy", async () => {
        const [a, b] = await clients(ns(), 2);
        const held = await a!.lock("z").acquire();
        await assert.rejects(b!.lock("z").acquire({ timeoutMs: 0 }), TimeoutError);
        await held.release();
        const h = await b!.lock("z").acquire({ timeoutMs: 0 });
        await h.release();
      });

      it("times out a waiter with TimeoutError and leaves no trace of it", async () => {
        const [a, b] = await clients(ns(), 2);
        const held = await a!.lock("t").acquire();
        const error = await b!
          .lock("t")
          .acquire({ timeoutMs: 150 })
          .then(
            () => assert.fail("should time out"),
            (e: unknown) => e,
          );
        assert.ok(error instanceof TimeoutError, String(error));
        assert.equal(error.code, "TIMEOUT");
        const info = await a!.inspect();
        assert.deepEqual(info.locks.find((l) => l.name === "t")?.waiters ?? [], []);
        await held.release();
        // The timed-out waiter must not have been granted the lock behind our back.
        const again = await a!.lock("t").tryAcquire();
        assert.ok(again, "lock should be free after the holder released");
        await again.release();
      });

      it("cancels a waiter with its AbortSignal and leaves no trace of it", async () => {
        const [a, b, c] = await clients(ns(), 3);
        const held = await a!.lock("s").acquire();
        const controller = new AbortController();
        const waiting = b!.lock("s").acquire({ signal: controller.signal });
        const behind = c!.lock("s").acquire();
        await waitForWaiters(a!, "s", 2);
        controller.abort(new Error("user gave up"));
        const error = await waiting.then(
          () => assert.fail("should be aborted"),
          (e: unknown) => e,
        );
        assert.ok(error instanceof AbortedError, String(error));
        assert.equal(error.name, "AbortError");
        assert.equal((error.cause as Error).message, "user gave up");
        await waitForWaiters(a!, "s", 1);
        await held.release();
        const next = await behind;
        assert.ok(next.token > held.token);
        await next.release();
      });

      it("rejects at once for an already-aborted signal", async () => {
        const [a] = await clients(ns(), 1);
        await assert.rejects(a!.lock("p").acquire({ signal: AbortSignal.abort() }), AbortedError);
        const h = await a!.lock("p").tryAcquire();
        assert.ok(h, "nothing should be held after an aborted acquire");
        await h.release();
      });

      it("grants waiters in arrival order", { skip: fifo() }, async () => {
        const coords = await clients(ns(), 6);
        const [holder, ...waiters] = coords;
        const held = await holder!.lock("q").acquire();
        const order: number[] = [];
        const pending: Promise<void>[] = [];
        for (const [i, coord] of waiters.entries()) {
          pending.push(
            coord
              .lock("q")
              .acquire()
              .then(async (h) => {
                order.push(i);
                await h.release();
              }),
          );
          await waitForWaiters(holder!, "q", i + 1);
        }
        await held.release();
        await Promise.all(pending);
        assert.deepEqual(order, [0, 1, 2, 3, 4]);
      });

      it("release is idempotent, reports what happened and never throws", async () => {
        const [a] = await clients(ns(), 1);
        const h = await a!.lock("r").acquire();
        assert.equal(h.held, true);
        assert.deepEqual(await h.release(), { status: "released" });
        assert.deepEqual(await h.release(), { status: "already-released" });
        assert.equal(h.held, false);
        assert.equal(h.signal.aborted, false, "a plain release does not abort the signal");
      });

      it("releases on scope exit with await using", async () => {
        const [a, b] = await clients(ns(), 2);
        {
          await using h = await a!.lock("u").acquire();
          assert.equal(await b!.lock("u").tryAcquire(), null);
          assert.equal(h.held, true);
        }
        const h2 = await b!.lock("u").tryAcquire();
        assert.ok(h2, "await using should have released the lock");
        await h2.release();
      });

      it("withLock passes the signal and releases even when fn throws", async () => {
        const [a] = await clients(ns(), 1);
        const result = await a!.withLock("w", async (signal, handle) => {
          assert.ok(signal instanceof AbortSignal);
          assert.equal(signal, handle.signal);
          return 42;
        });
        assert.equal(result, 42);
        await assert.rejects(
          a!.withLock("w", () => {
            throw new Error("boom");
          }),
          /boom/,
        );
        const h = await a!.lock("w").tryAcquire();
        assert.ok(h, "withLock must release after a throw");
        await h.release();
      });

      it("close() releases everything promptly, without waiting for the TTL", async () => {
        const namespace = ns();
        const a = await client(namespace, { ttlMs: 60_000 });
        const b = await client(namespace);
        const h = await a.lock("c").acquire();
        const waiting = b.lock("c").acquire();
        await waitForWaiters(b, "c", 1);
        await a.close();
        assert.ok(h.signal.aborted, "closing aborts the handles' signals");
        assert.ok(h.signal.reason instanceof LockLostError);
        assert.ok(await settlesWithin(waiting, 10_000), "the waiter should get the lock well before the 60 s TTL");
        await (await waiting).release();
      });

      it("close() ends pending waits with ClosedError", async () => {
        const namespace = ns();
        const a = await client(namespace);
        const b = await client(namespace);
        const h = await a.lock("cw").acquire();
        const waiting = b.lock("cw").acquire();
        await waitForWaiters(a, "cw", 1);
        // Observe the rejection before closing: it may come before close() resolves.
        const rejected = assert.rejects(waiting, ClosedError);
        await b.close();
        await rejected;
        await waitForWaiters(a, "cw", 0);
        await h.release();
      });
    });

    describe("session loss", () => {
      it("aborts the holder's signal before anyone else is granted the lock", async () => {
        const namespace = ns();
        const a = await client(namespace, { ttlMs: target.shortTtlMs, memberId: "a" });
        const b = await client(namespace, { memberId: "b" });
        const log = new OrderLog();
        const held = await a.lock("l").acquire();
        held.signal.addEventListener("abort", () => log.add("a-lost"));
        a.session?.signal.addEventListener("abort", () => log.add("a-session-lost"));
        const waiting = b
          .lock("l")
          .acquire()
          .then((h) => {
            log.add("b-granted");
            return h;
          });
        await waitForWaiters(b, "l", 1);
        await loseSession(a);
        const next = await waiting;
        assert.ok(log.indexOf("a-lost") < log.indexOf("b-granted"), `order: ${log.events.join(", ")}`);
        assert.ok(log.indexOf("a-session-lost") < log.indexOf("b-granted"));
        assert.ok(held.signal.reason instanceof LockLostError);
        assert.ok(next.token > held.token, "the next holder's token must be higher");
        assert.equal((await held.release()).status, "lost");
        await next.release();
      });

      it("recovers with a new session by itself after a loss", async () => {
        const namespace = ns();
        const a = await client(namespace, { ttlMs: target.shortTtlMs });
        const first = await a.lock("rec").acquire();
        const firstSession = a.session;
        await loseSession(a);
        await waitFor(() => first.signal.aborted, "the lost signal");
        assert.ok(firstSession?.signal.aborted);
        const second = await a.lock("rec").acquire({ timeoutMs: 30_000 });
        assert.notEqual(a.session?.id, firstSession?.id);
        assert.ok(second.token > first.token);
        await second.release();
      });
    });

    describe("shared locks", () => {
      it("lets shared holders in together and keeps exclusive ones out", { skip: shared() }, async () => {
        const [a, b, c] = await clients(ns(), 3);
        const ra = await a!.lock("rw").acquire({ mode: "shared" });
        const rb = await b!.lock("rw").acquire({ mode: "shared" });
        assert.equal(ra.mode, "shared");
        assert.ok(rb.token > ra.token, "every grant gets its own token");
        assert.equal(await c!.lock("rw").tryAcquire(), null);
        const writer = c!.lock("rw").acquire();
        await waitForWaiters(a!, "rw", 1);
        await ra.release();
        assert.equal(await settlesWithin(writer, 50), false, "writer must wait for the last reader");
        await rb.release();
        const w = await writer;
        assert.ok(w.token > rb.token);
        assert.equal(await a!.lock("rw").tryAcquire({ mode: "shared" }), null);
        await w.release();
      });

      it("makes a new reader wait behind an earlier writer (no writer starvation)", {
        skip: shared() || fifo(),
      }, async () => {
        const [a, b, c] = await clients(ns(), 3);
        const r1 = await a!.lock("ws").acquire({ mode: "shared" });
        const log = new OrderLog();
        const writer = b!
          .lock("ws")
          .acquire()
          .then((h) => {
            log.add("writer");
            return h;
          });
        await waitForWaiters(a!, "ws", 1);
        assert.equal(await c!.lock("ws").tryAcquire({ mode: "shared" }), null);
        const reader = c!
          .lock("ws")
          .acquire({ mode: "shared" })
          .then((h) => {
            log.add("reader");
            return h;
          });
        await waitForWaiters(a!, "ws", 2);
        await r1.release();
        const w = await writer;
        await w.release();
        const r2 = await reader;
        assert.deepEqual(log.events, ["writer", "reader"]);
        await r2.release();
      });

      it("mixes readers and writers under contention without a writer overlapping anyone", {
        skip: shared(),
      }, async () => {
        const coords = await clients(ns(), 8);
        let readers = 0;
        let writers = 0;
        const violations: string[] = [];
        await Promise.all(
          coords.map(async (coord, i) => {
            for (let round = 0; round < 25; round++) {
              const mode = (i + round) % 4 === 0 ? "exclusive" : "shared";
              const h = await coord.lock("mix").acquire({ mode, timeoutMs: 60_000 });
              if (mode === "exclusive") writers++;
              else readers++;
              if (writers > 1 || (writers === 1 && readers > 0))
                violations.push(`writers=${writers} readers=${readers}`);
              await interleave(round % 2);
              if (mode === "exclusive") writers--;
              else readers--;
              await h.release();
            }
          }),
        );
        assert.deepEqual(violations, []);
      });

      it("upgrades a shared lock once the other readers leave, with a new token", { skip: shared() }, async () => {
        const [a, b] = await clients(ns(), 2);
        const ra = await a!.lock("up").acquire({ mode: "shared" });
        const rb = await b!.lock("up").acquire({ mode: "shared" });
        const upgrading = ra.upgrade();
        assert.equal(await settlesWithin(upgrading, 50), false, "upgrade waits for the other reader");
        await rb.release();
        await upgrading;
        assert.equal(ra.mode, "exclusive");
        assert.ok(ra.token > rb.token);
        assert.equal(await b!.lock("up").tryAcquire({ mode: "shared" }), null);
        await ra.release();
      });

      it("puts a pending upgrade ahead of queued writers", { skip: shared() }, async () => {
        const [a, b, c] = await clients(ns(), 3);
        const ra = await a!.lock("ahead").acquire({ mode: "shared" });
        const rb = await b!.lock("ahead").acquire({ mode: "shared" });
        const log = new OrderLog();
        const writer = c!
          .lock("ahead")
          .acquire()
          .then((h) => {
            log.add("writer");
            return h;
          });
        await waitForWaiters(a!, "ahead", 1);
        const upgrading = ra.upgrade().then(() => log.add("upgrade"));
        await rb.release();
        await upgrading;
        await ra.release();
        const w = await writer;
        assert.deepEqual(log.events, ["upgrade", "writer"]);
        assert.ok(w.token > ra.token);
        await w.release();
      });

      it("answers two concurrent upgrades with one DeadlockError instead of hanging", { skip: shared() }, async () => {
        const [a, b] = await clients(ns(), 2);
        const ra = await a!.lock("dl").acquire({ mode: "shared" });
        const rb = await b!.lock("dl").acquire({ mode: "shared" });
        const outcomes = [ra, rb].map((h) =>
          h.upgrade({ timeoutMs: 30_000 }).then(
            () => ({ h, ok: true as const }),
            (error: unknown) => ({ h, ok: false as const, error }),
          ),
        );
        // Whichever is refused is refused at once; the other waits for the loser to leave.
        const first = await Promise.race(outcomes);
        assert.equal(first.ok, false, "the first to settle must be the refused upgrade");
        assert.ok(!first.ok && first.error instanceof DeadlockError, String(!first.ok && first.error));
        assert.equal(first.h.mode, "shared");
        await first.h.release();
        const [x, y] = await Promise.all(outcomes);
        const winner = x!.ok ? x! : y!;
        assert.ok(winner.ok, "the other upgrade completes once the loser released");
        assert.equal(winner.h.mode, "exclusive");
        await winner.h.release();
      });

      it("lets the deadlock loser keep its shared lock and the winner finish after it leaves", {
        skip: shared(),
      }, async () => {
        const [a, b] = await clients(ns(), 2);
        const ra = await a!.lock("dl2").acquire({ mode: "shared" });
        const rb = await b!.lock("dl2").acquire({ mode: "shared" });
        const winner = ra.upgrade();
        await assert.rejects(rb.upgrade(), DeadlockError);
        assert.equal(rb.held, true);
        assert.equal(rb.mode, "shared");
        assert.equal(await settlesWithin(winner, 50), false);
        await rb.release();
        await winner;
        assert.equal(ra.mode, "exclusive");
        await ra.release();
      });

      it("downgrades at once and lets waiting readers in, not writers", { skip: shared() }, async () => {
        const [a, b, c] = await clients(ns(), 3);
        const w = await a!.lock("down").acquire();
        const reader = b!.lock("down").acquire({ mode: "shared" });
        await waitForWaiters(a!, "down", 1);
        const token = w.token;
        await w.downgrade();
        assert.equal(w.mode, "shared");
        assert.equal(w.token, token, "downgrade keeps the token");
        const r = await reader;
        assert.equal(await c!.lock("down").tryAcquire(), null, "no writer while readers hold");
        await r.release();
        await w.release();
      });

      it("refuses to upgrade an exclusive lock or downgrade a shared one", { skip: shared() }, async () => {
        const [a] = await clients(ns(), 1);
        const w = await a!.lock("bad").acquire();
        await assert.rejects(w.upgrade(), InvalidStateError);
        await w.release();
        const r = await a!.lock("bad").acquire({ mode: "shared" });
        await assert.rejects(r.downgrade(), InvalidStateError);
        await r.release();
        await assert.rejects(r.upgrade(), InvalidStateError, "no upgrade after release");
      });

      it("cancels a pending upgrade and keeps the shared lock", { skip: shared() }, async () => {
        const [a, b, c] = await clients(ns(), 3);
        const ra = await a!.lock("cu").acquire({ mode: "shared" });
        const rb = await b!.lock("cu").acquire({ mode: "shared" });
        await assert.rejects(ra.upgrade({ timeoutMs: 100 }), TimeoutError);
        assert.equal(ra.mode, "shared");
        const rc = await c!.lock("cu").tryAcquire({ mode: "shared" });
        assert.ok(rc, "readers may enter again once the upgrade is withdrawn");
        await Promise.all([ra.release(), rb.release(), rc.release()]);
      });
    });

    describe("semaphores", () => {
      it("never exceeds its limit under contention; tokens are unique and above every earlier release", async () => {
        const coords = await clients(ns(), 10);
        const checker = new ExclusionChecker(3);
        await Promise.all(
          coords.map(async (coord) => {
            const sem = coord.semaphore("pool", { limit: 3 });
            for (let i = 0; i < 20; i++) {
              const floor = checker.floor;
              const permit = await sem.acquire({ timeoutMs: 60_000 });
              checker.enter(permit, floor);
              await interleave(1 + (i % 3));
              checker.exit();
              await permit.release();
              checker.released(permit);
            }
          }),
        );
        assert.deepEqual(checker.violations, []);
        assert.equal(checker.maxInside, 3, "the limit should actually be reached under this load");
      });

      it("tryAcquire returns null when full; a mismatched limit is refused", async () => {
        const [a, b] = await clients(ns(), 2);
        const sem = a!.semaphore("s2", { limit: 2 });
        const p1 = await sem.acquire();
        const p2 = await sem.acquire();
        assert.equal(await b!.semaphore("s2", { limit: 2 }).tryAcquire(), null);
        await assert.rejects(b!.semaphore("s2", { limit: 5 }).acquire({ timeoutMs: 1000 }), InvalidArgumentError);
        await p1.release();
        const p3 = await b!.semaphore("s2", { limit: 2 }).tryAcquire();
        assert.ok(p3);
        await assert.rejects(p3.upgrade(), InvalidStateError, "permits have no modes");
        await Promise.all([p2.release(), p3.release()]);
      });
    });

    describe("groups", () => {
      it("pushes join, update and leave events and lists members", async () => {
        const namespace = ns();
        const [a, b, c] = await clients(namespace, 3);
        await a!.group("g").join({ role: "api" });
        const events = b!.group("g").watch();
        const [existing] = await take(events, 1);
        assert.deepEqual(existing, {
          type: "join",
          existing: true,
          member: {
            memberId: a!.memberId,
            capabilities: { role: "api" },
            joinedAt: (existing as { member: { joinedAt: number } }).member.joinedAt,
          },
        });
        const membership = await c!.group("g").join({ role: "worker" });
        await c!.group("g").update({ role: "worker", load: 3 });
        await membership.leave();
        const seen = await take(events, 3);
        assert.deepEqual(
          seen.map((e: GroupEvent) => [e.type, e.type === "leave" ? e.memberId : e.member.memberId]),
          [
            ["join", c!.memberId],
            ["update", c!.memberId],
            ["leave", c!.memberId],
          ],
        );
        assert.deepEqual((seen[1] as { member: { capabilities: unknown } }).member.capabilities, {
          role: "worker",
          load: 3,
        });
        const members = await b!.group("g").members();
        assert.deepEqual(
          members.map((m) => [m.memberId, m.capabilities]),
          [[a!.memberId, { role: "api" }]],
        );
        await events.return?.();
      });

      it("removes a member whose session is lost, and tells watchers", async () => {
        const namespace = ns();
        const a = await client(namespace, { ttlMs: target.shortTtlMs });
        const b = await client(namespace);
        const membership = await a.group("gl").join();
        const events = b.group("gl").watch();
        await take(events, 1);
        await loseSession(a);
        const [left] = await take(events, 1, 30_000);
        assert.deepEqual(left, { type: "leave", memberId: a.memberId });
        assert.ok(membership.signal.aborted);
        assert.deepEqual(await b.group("gl").members(), []);
        await events.return?.();
      });

      it("refuses joining twice and leaving when not a member", async () => {
        const [a] = await clients(ns(), 1);
        const group = a!.group("twice");
        await assert.rejects(group.leave(), InvalidStateError);
        await assert.rejects(group.update({}), InvalidStateError);
        await group.join();
        await assert.rejects(group.join(), InvalidStateError);
        await group.leave();
        await group.join();
        await group.leave();
      });

      it("ends a watch when its signal aborts or the loop breaks", async () => {
        const [a] = await clients(ns(), 1);
        const controller = new AbortController();
        const events = a!.group("w").watch({ signal: controller.signal });
        controller.abort();
        assert.deepEqual(await events.next(), { value: undefined, done: true });
        let count = 0;
        await a!.group("w").join();
        for await (const event of a!.group("w").watch()) {
          count++;
          assert.equal(event.type, "join");
          break;
        }
        assert.equal(count, 1);
      });
    });

    describe("election", () => {
      it("has one leader at a time, in campaign order, with increasing tokens", async () => {
        const coords = await clients(ns(), 5);
        const observer = coords[0]!.election("e").observe();
        assert.deepEqual(await take(observer, 1), [null]);
        let leaders = 0;
        const violations: string[] = [];
        const won: string[] = [];
        const tokens: bigint[] = [];
        await Promise.all(
          coords.map(async (coord) => {
            const leadership = await coord.election("e").campaign({ id: coord.memberId }, { timeoutMs: 60_000 });
            leaders++;
            if (leaders > 1) violations.push(`${leaders} leaders`);
            won.push(coord.memberId);
            tokens.push(leadership.token);
            const current = await coord.election("e").leader();
            assert.equal(current?.memberId, coord.memberId);
            assert.deepEqual(current?.value, { id: coord.memberId });
            await interleave(2);
            leaders--;
            await leadership.resign();
          }),
        );
        assert.deepEqual(violations, []);
        assert.equal(won.length, 5);
        for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!);
        // The observer saw every leader, in order (with nulls in between).
        const seen = (await take(observer, 10)).filter((l): l is Leader => l !== null).map((l) => l.memberId);
        assert.deepEqual(seen, won);
        await observer.return?.();
      });

      it("passes leadership on when the leader's session is lost, signalling it first", async () => {
        const namespace = ns();
        const a = await client(namespace, { ttlMs: target.shortTtlMs });
        const b = await client(namespace);
        const log = new OrderLog();
        const la = await a.election("x").campaign("a");
        la.signal.addEventListener("abort", () => log.add("a-lost"));
        const waiting = b
          .election("x")
          .campaign("b")
          .then((l) => {
            log.add("b-leads");
            return l;
          });
        await waitFor(
          async () => (await b.inspect()).elections.some((e) => e.id === "x" && e.candidates.length === 1),
          "b to be a candidate",
        );
        await loseSession(a);
        const lb = await waiting;
        assert.ok(log.indexOf("a-lost") < log.indexOf("b-leads"));
        assert.ok(lb.token > la.token);
        assert.equal((await b.election("x").leader())?.memberId, b.memberId);
        await lb.proclaim("b2");
        assert.deepEqual((await a.election("x").leader())?.value, "b2");
        await lb.resign();
        assert.equal(await b.election("x").leader(), null);
      });
    });

    describe("partitioner", () => {
      it("agrees on owners across members and moves only the leaver's keys", async () => {
        const coords = await clients(ns(), 4);
        const parts: Partitioner[] = [];
        for (const coord of coords) parts.push(await coord.partitioner("ring", { vnodes: 64 }));
        await waitFor(() => parts.every((p) => p.members.length === 4), "every partitioner to see 4 members");
        const keys = Array.from({ length: 2000 }, (_, i) => `obj-${i}`);
        const before = new Map(keys.map((k) => [k, parts[0]!.owners(k)[0]!]));
        for (const k of keys) {
          assert.equal(parts.filter((p) => p.isMine(k)).length, 1, `exactly one owner of ${k}`);
          for (const p of parts) assert.deepEqual(p.owners(k, 2), parts[0]!.owners(k, 2));
        }
        const changes = parts[1]!.changes();
        const leaver = coords[3]!.memberId;
        await parts[3]!.close();
        const [change] = await take(changes, 1);
        assert.deepEqual(change?.left, [leaver]);
        await waitFor(() => parts.slice(0, 3).every((p) => p.members.length === 3), "the others to see the leave");
        for (const k of keys) {
          const now = parts[0]!.owners(k)[0]!;
          if (before.get(k) !== leaver) assert.equal(now, before.get(k), `key ${k} moved although its owner stayed`);
          else assert.notEqual(now, leaver);
        }
        await changes.return?.();
      });

      it("HashRing balances keys and moves about 1/N of them when a member joins", () => {
        const ring = new HashRing();
        for (let i = 0; i < 5; i++) ring.set(`node-${i}`);
        const keys = Array.from({ length: 20_000 }, (_, i) => `key-${i}`);
        const owner = new Map(keys.map((k) => [k, ring.owners(k)[0]!]));
        const counts = new Map<string, number>();
        for (const o of owner.values()) counts.set(o, (counts.get(o) ?? 0) + 1);
        for (const [node, count] of counts) {
          assert.ok(count > 4000 * 0.75 && count < 4000 * 1.25, `${node} owns ${count} of 20000 (ideal 4000)`);
        }
        ring.set("node-5");
        let moved = 0;
        for (const k of keys) {
          const now = ring.owners(k)[0];
          if (now !== owner.get(k)) {
            moved++;
            assert.equal(now, "node-5", "keys may only move to the new member");
          }
        }
        const share = moved / keys.length;
        assert.ok(share > 0.1 && share < 0.25, `moved ${share} of keys (ideal 1/6)`);
        // Weights: a member of weight 3 owns about three times as much.
        const weighted = new HashRing();
        weighted.set("light", 1);
        weighted.set("heavy", 3);
        const heavy = keys.filter((k) => weighted.owners(k)[0] === "heavy").length / keys.length;
        assert.ok(heavy > 0.65 && heavy < 0.85, `heavy owns ${heavy} (ideal 0.75)`);
        assert.deepEqual(weighted.owners("k", 5).sort(), ["heavy", "light"]);
      });
    });

    describe("introspection", () => {
      it("lists holders, waiters in order, semaphores, groups and leaders", async () => {
        const namespace = ns();
        const [a, b, c] = await clients(namespace, 3);
        const h = await a!.lock("i").acquire();
        const w1 = b!.lock("i").acquire();
        await waitForWaiters(a!, "i", 1);
        const w2 = c!.lock("i").acquire({ mode: guarantees.sharedLocks ? "shared" : "exclusive" });
        await waitForWaiters(a!, "i", 2);
        const p = await a!.semaphore("sem", { limit: 4 }).acquire();
        await b!.group("grp").join({ zone: "z1" });
        const lead = await c!.election("el").campaign({ url: "http://c" });
        const info = await a!.inspect();
        assert.equal(info.backend, a!.backend);
        assert.equal(info.namespace, namespace);
        const lock = info.locks.find((l) => l.name === "i");
        assert.ok(lock, JSON.stringify(info, replacer));
        assert.equal(lock.holders.length, 1);
        assert.equal(lock.holders[0]!.memberId, a!.memberId);
        assert.equal(lock.holders[0]!.mode, "exclusive");
        assert.equal(lock.holders[0]!.token, h.token);
        assert.ok(Math.abs(lock.holders[0]!.since - h.acquiredAt) < 5000);
        assert.deepEqual(
          lock.waiters.map((x) => x.memberId),
          [b!.memberId, c!.memberId],
        );
        assert.ok(lock.waiters.every((x) => x.waitingMs >= 0 && x.since <= info.at));
        const sem = info.semaphores.find((s) => s.name === "sem");
        assert.equal(sem?.limit, 4);
        assert.equal(sem?.holders[0]?.token, p.token);
        assert.deepEqual(
          info.groups.find((g) => g.id === "grp")?.members.map((m) => [m.memberId, m.capabilities]),
          [[b!.memberId, { zone: "z1" }]],
        );
        const el = info.elections.find((e) => e.id === "el");
        assert.equal(el?.leader?.memberId, c!.memberId);
        assert.deepEqual(el?.leader?.value, { url: "http://c" });
        assert.equal(el?.leader?.token, lead.token);
        // Another namespace sees none of it.
        const other = await client(ns());
        const empty = await other.inspect();
        assert.deepEqual([empty.locks, empty.semaphores, empty.groups, empty.elections], [[], [], [], []]);
        await h.release();
        await (await w1).release();
        await (await w2).release();
        await p.release();
        await lead.resign();
      });
    });

    describe("bad input", () => {
      it("rejects bad names at once with InvalidArgumentError", async () => {
        const [a] = await clients(ns(), 1);
        const bad: unknown[] = [
          "",
          42,
          null,
          undefined,
          {},
          "x".repeat(513),
          "é".repeat(300),
          "a\nb",
          "tab\there",
          "nul\u0000",
          "del\u007f",
          "\ud800",
        ];
        for (const name of bad) {
          assert.throws(() => a!.lock(name as string), InvalidArgumentError, `lock(${JSON.stringify(name)})`);
          assert.throws(() => a!.semaphore(name as string, { limit: 1 }), InvalidArgumentError);
          assert.throws(() => a!.group(name as string), InvalidArgumentError);
          assert.throws(() => a!.election(name as string), InvalidArgumentError);
        }
        assert.ok(a!.lock("x".repeat(512)), "512 bytes is allowed");
        assert.ok(a!.lock("ünïcödé ✓ / .. ' ; DROP TABLE"), "any other text is a fine name");
      });

      it("rejects bad options at once, and the lock still works afterwards", async () => {
        const [a] = await clients(ns(), 1);
        const lock = a!.lock("opts");
        for (const timeoutMs of [-1, Number.NaN, Number.POSITIVE_INFINITY, "10" as unknown as number]) {
          await assert.rejects(lock.acquire({ timeoutMs }), InvalidArgumentError, `timeoutMs ${timeoutMs}`);
        }
        await assert.rejects(lock.acquire({ mode: "writer" as "shared" }), InvalidArgumentError);
        await assert.rejects(lock.acquire({ signal: "nope" as unknown as AbortSignal }), InvalidArgumentError);
        await assert.rejects(lock.acquire("fast" as unknown as object), InvalidArgumentError);
        for (const limit of [0, -1, 1.5, Number.NaN, "3" as unknown as number]) {
          assert.throws(() => a!.semaphore("s", { limit }), InvalidArgumentError, `limit ${limit}`);
        }
        await assert.rejects(
          a!.group("g").join(() => 1),
          InvalidArgumentError,
        );
        await assert.rejects(a!.group("g").join(10n), InvalidArgumentError);
        const h = await lock.acquire({ timeoutMs: 1000 });
        assert.equal((await a!.inspect()).locks.find((l) => l.name === "opts")?.holders.length, 1);
        await h.release();
      });

      it("rejects bad connect() arguments with typed errors", async () => {
        await assert.rejects(connect("nosuch://x"), InvalidArgumentError);
        await assert.rejects(connect("not a url"), InvalidArgumentError);
        await assert.rejects(connect(target.url(), { ttlMs: 10 }), /ttlMs must be between 1000/);
        await assert.rejects(connect(target.url(), { ttlMs: Number.NaN }), InvalidArgumentError);
        await assert.rejects(connect(target.url(), { memberId: "" }), InvalidArgumentError);
        await assert.rejects(connect(target.url(), { namespace: "a\u0001" }), InvalidArgumentError);
        await assert.rejects(connect(target.url(), { bogusOption: 1 }), /unknown option "bogusOption"/);
        await assert.rejects(connect(target.url(), { require: ["teleportation" as "fifo"] }), /unknown guarantee/);
        const lacking = (Object.keys(guarantees) as (keyof Guarantees)[]).filter((k) => guarantees[k] === false);
        if (lacking.length > 0) {
          const error = await connect(target.url(), { require: lacking as never }).then(
            () => assert.fail("should refuse"),
            (e: unknown) => e,
          );
          assert.ok(error instanceof MissingGuaranteeError);
          assert.deepEqual(error.missing, lacking);
        }
        const ok = await connect(target.url(), { require: ["fencing"] });
        await ok.close();
      });

      it("refuses every use after close with ClosedError", async () => {
        const namespace = ns();
        const a = await client(namespace);
        const lock = a.lock("late");
        const h = await lock.acquire();
        await a.close();
        await a.close();
        assert.throws(() => a.lock("x"), ClosedError);
        await assert.rejects(lock.acquire(), ClosedError);
        await assert.rejects(lock.tryAcquire(), ClosedError);
        await assert.rejects(a.inspect(), ClosedError);
        assert.throws(() => a.group("g"), ClosedError);
        assert.throws(() => a.election("e"), ClosedError);
        assert.throws(() => a.semaphore("s", { limit: 2 }), ClosedError);
        assert.equal((await h.release()).status, "lost");
        assert.ok(h.signal.aborted);
        const err = h.signal.reason as BatonError;
        assert.ok(err.cause instanceof ClosedError);
      });
    });
  });
}
