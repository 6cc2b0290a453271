/**
 * For tests of the tracked handoff (src/backends/etcd/successor.ts): a head hands the lock
 * to its successor with its release only if the successor was queued before the head was
 * granted (the head names it from the queue it knew then), and the successor hears of it
 * only if it waits second in line by then (it read the queue again when the head was
 * granted). These set that up, waiting on what etcd reports.
 */
import assert from "node:assert/strict";
import type { LockHandle } from "../../src/index.js";
import { waitUntil } from "../harness/proc.js";

/** Txns etcd has answered so far (its `grpc_server_handled_total` counter). */
export async function txnsAnswered(clientPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${clientPort}/metrics`)).text();
  return Number(/grpc_server_handled_total\{grpc_code="OK",grpc_method="Txn"[^}]*\} (\d+)/.exec(text)?.[1]);
}

/** Waits until etcd has answered at least `count` Txns. */
async function txnsReach(clientPort: number, count: number, what: string): Promise<void> {
  await waitUntil(what, async () => (await txnsAnswered(clientPort)) >= count, { timeoutMs: 20_000 });
}

/**
 * With `gate` holding the lock and nothing else writing to etcd: queues the head second
 * (`head` starts its acquire()) and the successor third (`successor` starts its acquire(),
 * in this process or another), releases the gate and resolves once the head holds the lock
 * knowing the successor, and the successor, woken by the head's grant, has read the queue
 * again and waits second in line (its new watch created). Counted in Txns: each waiter's
 * join and its read after creating its watch; then the gate's release, the head's
 * recording transaction (the gate, granted by the join of a free lock, named nobody), and
 * the successor's two reads (the one the head's grant woke, the one after its new watch).
 */
export async function behindHead<T>(
  clientPort: number,
  gate: LockHandle,
  head: () => Promise<LockHandle>,
  successor: () => T,
): Promise<{ held: LockHandle; successor: T }> {
  const start = await txnsAnswered(clientPort);
  const waiting = head();
  await txnsReach(clientPort, start + 2, "the head waiting");
  const started = successor();
  await txnsReach(clientPort, start + 4, "the successor waiting behind the head");
  assert.equal((await gate.release()).status, "released");
  const held = await waiting;
  await txnsReach(clientPort, start + 8, "the successor waiting second in line");
  return { held, successor: started };
}
