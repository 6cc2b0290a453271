/**
 * For tests of the tracked handoff (src/backends/etcd/successor.ts): a head hands the lock
 * to its successor with its release only if it has seen that successor's key, through its
 * queue watch. These wait, on events etcd reports, until it has.
 */
import type { Coordinator } from "../../src/index.js";
import { waitUntil } from "../harness/proc.js";

/** Txns etcd has answered so far (its `grpc_server_handled_total` counter). */
export async function txnsAnswered(clientPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${clientPort}/metrics`)).text();
  return Number(/grpc_server_handled_total\{grpc_code="OK",grpc_method="Txn"[^}]*\} (\d+)/.exec(text)?.[1]);
}

/** etcd's live watchers (its `etcd_debugging_mvcc_watcher_total` gauge). */
export async function watchers(clientPort: number): Promise<number> {
  return gauge(clientPort, "etcd_debugging_mvcc_watcher_total");
}

async function gauge(clientPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${clientPort}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\d+)`, "m").exec(text)?.[1] ?? Number.NaN);
}

/**
 * Returns once `coord` has seen every event etcd has committed so far: at least `atLeast`
 * watchers live (the head's queue watch, which a holding granted by the join of a free lock
 * starts a little after its grant, among them), none catching up (each has been handed
 * every event), and a read through `coord`'s own connection, which carries its watch
 * stream too, came back after them.
 */
export async function followedByHead(clientPort: number, coord: Coordinator, atLeast: number): Promise<void> {
  await waitUntil(
    "the head's queue watch, synced",
    async () =>
      (await watchers(clientPort)) >= atLeast &&
      (await gauge(clientPort, "etcd_debugging_mvcc_slow_watcher_total")) === 0,
    { timeoutMs: 10_000 },
  );
  await coord.inspect();
}
