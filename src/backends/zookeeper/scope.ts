/**
 * What every operation of one session needs, and the retry rule: a call that failed only
 * because the connection dropped is sent again once the client has reconnected (the
 * server session, and with it every ephemeral node and one-shot watch, survives that;
 * persistent watches are added again, persistent-watches.ts), until the caller's signal or
 * the session ends.
 *
 * @module
 */
import type { ZkHandle } from "./client.js";
import { FLAGS } from "./client.js";
import { hasCode, isTransient, RC, translate } from "./errors.js";
import type { Layout } from "./paths.js";

/** What every operation of one session needs. */
export interface Scope {
  readonly handle: ZkHandle;
  readonly layout: Layout;
  readonly chroot: string;
  readonly memberId: string;
  readonly sessionId: string;
  /** Aborts when the session ends (lost or closed). */
  readonly ended: AbortSignal;
  /** A tag unique to one create request. */
  nextTag(): string;
  /**
   * Queues (parent paths) whose last tracked exclusive acquisition on this session waited
   * (or never got the lock): the next one skips the first try (grant-records.ts), which
   * would likely be refused. A grant without a wait takes the queue out again. Bounded, the
   * least recently contended forgotten first: see {@link markContended}.
   */
  readonly contended: Set<string>;
  /** The session is gone (a node of ours vanished, the server expired it). */
  lost(error: Error): void;
}

/** How many queues {@link Scope.contended} remembers (the least recently contended forgotten first). */
export const CONTENDED_KEPT = 256;

/** Remembers that `parent`'s last tracked acquisition on this session waited (see {@link Scope.contended}). */
export function markContended(scope: Scope, parent: string, contended: boolean): void {
  const { contended: set } = scope;
  if (!contended) {
    set.delete(parent);
    return;
  }
  // Least recently contended forgotten first: a busy lock moves to the back.
  if (set.delete(parent)) {
    set.add(parent);
    return;
  }
  if (set.size >= CONTENDED_KEPT) set.delete(set.values().next().value as string);
  set.add(parent);
}

/** Runs `call`, again after each reconnection while it fails with a connection loss. */
export async function retrying<T>(
  handle: ZkHandle,
  what: string,
  call: () => Promise<T>,
  signal: AbortSignal,
): Promise<T> {
  for (;;) {
    if (signal.aborted) throw signal.reason;
    try {
      return await call();
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (!isTransient(error)) throw translate(error, what);
      await handle.waitConnected(signal).catch((e: unknown) => {
        throw signal.aborted ? signal.reason : translate(e, what);
      });
    }
  }
}

/**
 * Creates `path` and its missing ancestors below `chroot` as container nodes (the server
 * removes each once its last child is gone), tolerating concurrent creators. Every level's
 * create goes out at once, before this returns: one session's requests are handled in
 * order, so each parent exists before its child's create, and a request the caller sends
 * right after this call (a retried create) is handled after them too. One round trip
 * however deep the path is (one create per level, awaited in turn, cost a round trip per
 * level: five for a lock whose queue's parents the server had removed).
 */
export function ensurePath(handle: ZkHandle, chroot: string, path: string, signal: AbortSignal): Promise<void> {
  const parts = path.slice(1).split("/");
  const skip = chroot === "" ? 0 : chroot.slice(1).split("/").length;
  const sendAll = () =>
    Promise.all(
      parts.map((_, i) => {
        const prefix = `/${parts.slice(0, i + 1).join("/")}`;
        const created = i < skip ? handle.create(prefix, "", FLAGS.persistent) : handle.createContainer(prefix);
        return created.catch((error: unknown) => {
          if (!hasCode(error, RC.NODEEXISTS)) throw error;
        });
      }),
    ).then(() => {});
  // Sent now, not on retrying's first call (a microtask later): see above.
  let sent: Promise<void> | null = sendAll();
  sent.catch(() => {}); // if never awaited (`signal` aborted first)
  const attempt = () => {
    const batch = sent ?? sendAll();
    sent = null;
    return batch;
  };
  return retrying(handle, `creating ${path}`, attempt, signal);
}

/**
 * Creates a sequential node whose name starts with `prefix` (unique to this request). If
 * the answer was lost with the connection, the node is looked for by its prefix before
 * creating again, so there is never an orphan or a second one.
 */
export async function createProtected(
  scope: Scope,
  parent: string,
  prefix: string,
  data: string,
  signal: AbortSignal,
): Promise<string> {
  const { handle } = scope;
  for (;;) {
    if (signal.aborted) throw signal.reason;
    try {
      return await handle.create(`${parent}/${prefix}`, data, FLAGS.ephemeralSequential);
    } catch (error) {
      if (hasCode(error, RC.NONODE)) {
        await ensurePath(handle, scope.chroot, parent, signal);
        continue;
      }
      if (!isTransient(error)) throw translate(error, `creating a node under ${parent}`);
      const found = await findByPrefix(scope, parent, prefix, signal);
      if (found) return found;
    }
  }
}

/**
 * The child of `parent` whose name starts with `prefix`, once connected; `null` if none.
 * Listed behind a sync: a create whose answer was lost may have landed on a server ahead of
 * the one reconnected to, whose list would miss it (and a second node would be made).
 */
export async function findByPrefix(
  scope: Scope,
  parent: string,
  prefix: string,
  signal: AbortSignal,
): Promise<string | null> {
  const { handle } = scope;
  const list = async () => {
    await handle.sync(parent);
    return handle.children(parent);
  };
  const listed = await retrying(handle, `listing ${parent}`, list, signal);
  const name = listed?.children.find((c) => c.startsWith(prefix));
  return name === undefined ? null : `${parent}/${name}`;
}

/**
 * Deletes a node of this session, retrying across reconnections until it is gone or the
 * session ends (which removes it anyway). With only a prefix (a create whose answer never
 * came), it is looked for first.
 */
export async function withdraw(scope: Scope, parent: string, target: { path: string } | { prefix: string }) {
  const signal = scope.ended;
  try {
    const path = "path" in target ? target.path : await findByPrefix(scope, parent, target.prefix, signal);
    if (path) await retrying(scope.handle, `deleting ${path}`, () => scope.handle.delete(path), signal);
  } catch {
    // The session ended: the server deletes its ephemeral nodes.
  }
}
