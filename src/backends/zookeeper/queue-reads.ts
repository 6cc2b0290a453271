/**
 * Reading a queue, and waiting for a change of what a waiter depends on (acquire.ts,
 * convert.ts).
 *
 * @module
 */
import { abortable } from "../../core/abortable.js";
import type { LockMode } from "../../core/driver.js";
import type { Watcher } from "./client.js";
import { isTransient, translate } from "./errors.js";
import { decodeData } from "./paths.js";
import { type QueueView, viewOf } from "./queue.js";
import { retrying, type Scope } from "./scope.js";

/** Reads the queue, and the current mode of every converted writer a shared request must know. */
export async function readView(
  scope: Scope,
  parent: string,
  needModes: boolean,
  stop: AbortSignal,
): Promise<QueueView | null> {
  const { handle } = scope;
  const listed = await retrying(handle, `reading ${parent}`, () => handle.children(parent), stop);
  if (!listed) return null;
  const view = viewOf(listed.children, listed.stat, new Map());
  return needModes ? withModes(scope, parent, view, stop) : view;
}

/** Adds the current modes of the view's writer nodes (a downgrade rewrites the data). */
export async function withModes(scope: Scope, parent: string, view: QueueView, stop: AbortSignal): Promise<QueueView> {
  const writers = view.nodes.filter((n) => n.mode === "exclusive");
  if (writers.length === 0) return view;
  const modes = new Map<string, LockMode>();
  const reads = await Promise.all(
    writers.map((n) =>
      retrying(scope.handle, `reading ${parent}/${n.name}`, () => scope.handle.get(`${parent}/${n.name}`), stop),
    ),
  );
  reads.forEach((read, i) => {
    const data = read ? decodeData(read.data) : null;
    if (data?.m === "s") modes.set((writers[i] as { name: string }).name, "shared");
  });
  return { ...view, modes };
}

/** Resolves when something the waiter depends on changes (or at once if it already has). */
export function nextChange(
  scope: Scope,
  parent: string,
  decision: { readonly watch: readonly string[]; readonly children: boolean },
  view: QueueView,
  stop: AbortSignal,
): Promise<void> {
  const { handle } = scope;
  return abortable<void>(stop, (resolve, reject) => {
    const finish = (error?: unknown) => (error === undefined ? resolve() : reject(error));
    const fire: Watcher = () => finish();
    const arm = async () => {
      if (decision.children) {
        const listed = await handle.children(parent, fire);
        const before = [...view.nodes, ...view.markers].map((n) => n.name).sort();
        if (!listed || listed.children.filter((c) => before.includes(c)).length !== before.length) finish();
        else if (listed.children.length !== before.length) finish();
        return;
      }
      // A read, not exists(): on a node already gone, exists() would leave a watch for its
      // creation, which a sequential node never sees again (a watch leaked per such wait).
      const reads = await Promise.all(decision.watch.map((n) => handle.get(`${parent}/${n}`, fire)));
      if (reads.some((r) => r === null)) finish();
    };
    arm().catch((error: unknown) => {
      // A lost connection: read again once reconnected (watches are re-armed then).
      if (isTransient(error)) handle.waitConnected(stop).then(() => finish(), finish);
      else finish(stop.aborted ? stop.reason : translate(error, `watching ${parent}`));
    });
    return undefined;
  });
}
