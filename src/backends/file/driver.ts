/**
 * `file:///dir` (default `file:`): coordination between processes on **one host**, with no
 * server. Locks are Linux open-file-description byte-range locks in 64 empty lock files, at
 * offsets derived from the names, so any number of names needs a constant set of files
 * (plus one mesh socket per live process); the kernel frees a dead process's locks at once.
 * Not across hosts, and not on NFS. See docs/backends/file.md.
 *
 * The granting rule (`src/core/grant-rule.ts`) is applied by the kernel's byte locks plus
 * two intent bytes per slot: a writer that waits takes the writer-intent byte and an
 * upgrader the upgrade-intent byte, and a reader first probes both, so readers do not
 * overtake a waiting writer or a pending upgrade, and a second upgrader finds the byte
 * taken and is refused (slot-locks.ts takes those bytes). The kernel does not queue in
 * order, so the backend does not declare `fifo`; the conformance suite replays the rule's
 * table through it, gated by that.
 *
 * @module
 */
import type {
  AcquireRequest,
  Driver,
  DriverContext,
  DriverGrant,
  DriverSession,
  ImmediateRequest,
  LockMode,
  QueueKind,
  RecordEntry,
  SessionHooks,
} from "../../core/driver.js";
import { abortable } from "../../core/abortable.js";
import { InvalidArgumentError, InvalidStateError } from "../../core/errors.js";
import { notHeld, releasedWhileUpgrading, upgradeDeadlock } from "../../core/refusals.js";
import { fileCells } from "./cells.js";
import { defaultDirectory, directoryFromUrl, openDirectory } from "./directory.js";
import { limitBase, nextToken, slotOf, tokenNow, UPGRADE_INTENT } from "./kernel.js";
import { platformRefusal } from "./platform.js";
import { cannotRevoke } from "./revoke.js";
import { FileNode, type LocalQueueState, type SessionView, type Waiter } from "./node.js";
import { LIMIT_SPAN, SlotLocks } from "./slot-locks.js";
import { deleteRecord, deleteRecordNow, type RecordWrites, writeRecordNow } from "./takeover.js";
import { BACKEND } from "./definition.js";

const SEP = "\u0000";

interface FileGrant extends DriverGrant {
  readonly kind: QueueKind;
  readonly name: string;
  readonly limit: number;
  readonly slot: number;
  since: number;
  /** Whether this grant holds its slot's writer intent (see {@link FileSession.claimWriterIntent}). */
  writerIntent: boolean;
  /** Ends this grant's pending upgrade (release does, so the upgrade does not wait forever). */
  upgrade?: AbortController | undefined;
}

class FileSession implements DriverSession, SessionView {
  readonly id: string;
  readonly #node: FileNode;
  readonly #context: DriverContext;
  /** The session's own byte locks (its open file descriptions): slot-locks.ts. */
  readonly #slots: SlotLocks;
  readonly #grants = new Set<FileGrant>();
  readonly #waiting = new Map<Waiter, LocalQueueState>();
  readonly #records = new Set<string>();
  #closed = false;

  /** Synchronous takeover record writes (cells.ts), for grants and releases. */
  readonly #takeover: RecordWrites;

  constructor(node: FileNode, context: DriverContext, records: RecordWrites) {
    this.#node = node;
    this.#context = context;
    this.#takeover = records;
    this.id = node.newSessionId();
    this.#slots = new SlotLocks(node, () => this.#closed);
    node.sessions.set(this.id, this);
  }

  async acquire(request: AcquireRequest): Promise<DriverGrant | null> {
    this.#checkOpen();
    const key = `${this.#context.namespace}${SEP}${request.kind}${SEP}${request.name}`;
    const isSemaphore = request.kind === "semaphore";
    if (isSemaphore && request.limit >= LIMIT_SPAN) {
      throw new InvalidArgumentError(`the file backend supports semaphore limits below ${LIMIT_SPAN}`);
    }
    const slots = isSemaphore
      ? Array.from({ length: request.limit }, (_, i) => slotOf(`${key}${SEP}${i}`))
      : [slotOf(key)];
    const base = isSemaphore ? limitBase(key) : 0;
    if (isSemaphore) await this.#slots.checkLimit(base, request.limit, request.name);
    let chosen = -1;
    const attempt = (): boolean => {
      if (this.#closed) return false;
      chosen = isSemaphore
        ? this.#slots.tryPermit(slots)
        : this.#slots.tryLock(slots[0] as number, request.mode)
          ? (slots[0] as number)
          : -1;
      return chosen >= 0;
    };
    // A waiting writer claims the slot's writer intent, so that readers arriving after it
    // queue behind it instead of overtaking it forever (writer preference, as on etcd and
    // PostgreSQL); it keeps the claim while it holds, so it stays ahead of new readers.
    const writer = !isSemaphore && request.mode === "exclusive";
    let claimed = false;
    if (!attempt()) {
      if (!request.wait) return null;
      const waitingAttempt = () => {
        if (attempt()) return true;
        if (writer && !claimed) claimed = this.#slots.claimWriterIntent(slots[0] as number);
        return false;
      };
      try {
        if (!waitingAttempt()) {
          await this.#wait(slots, waitingAttempt, request, {
            kind: request.kind,
            name: request.name,
            limit: request.limit,
            mode: request.mode,
          });
        }
      } catch (error) {
        if (claimed) this.#slots.dropWriterIntent(slots[0] as number, true);
        throw error;
      }
    }
    if (isSemaphore) this.#slots.markLimit(base, request.limit);
    const grant: FileGrant = {
      token: 0n,
      mode: request.mode,
      kind: request.kind,
      name: request.name,
      limit: request.limit,
      slot: chosen,
      since: Date.now(),
      writerIntent: claimed,
    };
    this.#grants.add(grant);
    try {
      await this.#stamp(grant, request.record);
    } catch (error) {
      this.releaseNow(grant);
      throw error;
    }
    return grant;
  }

  /**
   * Gives a grant its token and writes its record (if tracked) in one critical section of
   * the counter's mutex, yielding while the mutex or an overflow region stays busy (a
   * retry takes a new token: tokens may skip, never repeat).
   */
  async #stamp(grant: FileGrant, record: string | undefined): Promise<void> {
    while (this.#stampNow(grant, record) === "busy") await new Promise((resolve) => setImmediate(resolve));
  }

  /**
   * One try of {@link #stamp}: sets the grant's token, and writes its record if tracked,
   * unless the counter's mutex or the record's bucket is busy (`"busy"`: try again).
   * `"found"`: a live record was there (the grant carries it).
   */
  #stampNow(grant: FileGrant, record: string | undefined): "written" | "found" | "busy" {
    // Set by the callback, which TypeScript's narrowing does not see.
    let outcome = "written" as "written" | "found" | "busy";
    const token = tokenNow(
      this.#node.tokensFd,
      64,
      record === undefined
        ? undefined
        : (next) => {
            grant.token = next;
            outcome = writeRecordNow(this.#takeover, grant, grant.name, record, true);
          },
    );
    if (token === null) return "busy";
    grant.token = token;
    return outcome;
  }

  /**
   * A lock whose slot is free right now: one kernel try-lock and the token, no wait. A
   * semaphore (its limit check may wait) and a busy slot go to `acquire()`.
   */
  grantNow(request: ImmediateRequest): DriverGrant | null {
    if (this.#closed || request.kind === "semaphore") return null;
    const slot = slotOf(`${this.#context.namespace}${SEP}${request.kind}${SEP}${request.name}`);
    if (!this.#slots.tryLock(slot, request.mode)) return null;
    const grant: FileGrant = {
      token: 0n,
      mode: request.mode,
      kind: request.kind,
      name: request.name,
      limit: request.limit,
      slot,
      since: Date.now(),
      writerIntent: false,
    };
    let outcome: "written" | "found" | "busy";
    try {
      outcome = this.#stampNow(grant, request.record);
    } catch {
      outcome = "busy";
    }
    this.#grants.add(grant);
    // A takeover found needs the core's claim, and a busy counter or bucket a wait: give
    // the slot back (waking whoever tried meanwhile) and take the full path.
    if (outcome === "written") return grant;
    grant.previousRecord = undefined;
    grant.recordVersion = undefined;
    this.releaseNow(grant);
    return null;
  }

  async release(driverGrant: DriverGrant): Promise<void> {
    this.releaseNow(driverGrant);
  }

  releaseNow(driverGrant: DriverGrant): void {
    const grant = driverGrant as FileGrant;
    if (!this.#grants.has(grant) || this.#closed) return;
    // The record goes while the kernel lock still keeps the next holder out.
    if (!deleteRecordNow(this.#takeover, grant, grant.name)) {
      const done = () => this.releaseNow(Object.assign(grant, { recordVersion: undefined }));
      void deleteRecord(this.#takeover, grant, grant.name).then(done, done);
      return;
    }
    this.#grants.delete(grant);
    grant.upgrade?.abort(releasedWhileUpgrading({ backend: BACKEND }));
    this.#slots.letGo(grant.slot);
    if (grant.writerIntent) this.#slots.dropWriterIntent(grant.slot, false);
    if (grant.kind === "semaphore") this.#slots.unmarkLimit(limitBase(this.#key(grant)), grant.limit);
    this.#node.freed(grant.slot);
  }

  async convert(driverGrant: DriverGrant, mode: LockMode, signal: AbortSignal): Promise<void> {
    const grant = driverGrant as FileGrant;
    this.#checkOpen();
    const held = this.#slots.held.get(grant.slot);
    if (!this.#grants.has(grant) || !held) throw notHeld({ backend: BACKEND });
    if (mode === "shared") {
      // Converting our own exclusive lock to shared never conflicts.
      this.#slots.locks.tryLock(grant.slot, true);
      held.mode = "shared";
      grant.mode = "shared";
      if (grant.writerIntent) this.#slots.dropWriterIntent(grant.slot, false);
      grant.writerIntent = false;
      this.#node.freed(grant.slot);
      return;
    }
    const intent = grant.slot + UPGRADE_INTENT;
    if (this.#slots.upgrading.has(grant.slot) || !this.#slots.takeIntent(intent)) {
      throw upgradeDeadlock({ backend: BACKEND });
    }
    this.#slots.upgrading.add(grant.slot);
    const ended = new AbortController();
    grant.upgrade = ended;
    try {
      const attempt = () => held.count === 1 && this.#slots.locks.tryLock(grant.slot, false);
      if (!attempt()) {
        await this.#wait(
          [grant.slot],
          attempt,
          { signal: AbortSignal.any([signal, ended.signal]) },
          { kind: grant.kind, name: grant.name, limit: 1, mode: "exclusive" },
        );
      }
      held.mode = "exclusive";
      grant.mode = "exclusive";
      grant.token = await nextToken(this.#node.tokensFd);
    } finally {
      grant.upgrade = undefined;
      this.#slots.upgrading.delete(grant.slot);
      if (!this.#closed) this.#slots.locks.unlock(intent);
    }
  }

  async putRecord(space: string, key: string, value: string): Promise<void> {
    this.#checkOpen();
    const full = this.#space(space);
    const previous = this.#node.localRecord(full, key);
    const createdAt = previous?.sessionId === this.id ? previous.createdAt : Date.now();
    this.#node.putRecord(full, { key, value, sessionId: this.id, createdAt });
    this.#records.add(`${full}${SEP}${key}`);
  }

  async deleteRecord(space: string, key: string): Promise<void> {
    const full = this.#space(space);
    this.#node.deleteRecord(full, key, this.id);
    this.#records.delete(`${full}${SEP}${key}`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const waiter of this.#waiting.keys()) this.#node.removeWaiter(waiter);
    this.#waiting.clear();
    const slots = this.#slots.close();
    this.#grants.clear();
    for (const record of this.#records) {
      const cut = record.lastIndexOf(SEP);
      this.#node.deleteRecord(record.slice(0, cut), record.slice(cut + 1), this.id);
    }
    this.#records.clear();
    this.#node.sessions.delete(this.id);
    for (const slot of slots) this.#node.freed(slot);
  }

  queueState(): LocalQueueState[] {
    const who = { namespace: this.#context.namespace, memberId: this.#context.memberId, sessionId: this.id };
    const out: LocalQueueState[] = [];
    for (const g of this.#grants) {
      out.push({
        ...who,
        kind: g.kind,
        name: g.name,
        limit: g.limit,
        mode: g.mode,
        since: g.since,
        token: String(g.token),
      });
    }
    for (const state of this.#waiting.values()) out.push(state);
    return out;
  }

  /** Waits until `attempt()` succeeds; withdraws without trace when `signal` aborts. */
  async #wait(
    slots: readonly number[],
    attempt: () => boolean,
    request: { readonly signal: AbortSignal },
    what: { kind: QueueKind; name: string; limit: number; mode: LockMode },
  ): Promise<void> {
    return abortable<void>(request.signal, (resolve) => {
      const waiter: Waiter = {
        slots,
        mode: what.mode,
        attempt: () => {
          if (!attempt()) return false;
          resolve();
          return true;
        },
      };
      this.#waiting.set(waiter, {
        namespace: this.#context.namespace,
        memberId: this.#context.memberId,
        sessionId: this.id,
        ...what,
        since: Date.now(),
      });
      this.#node.addWaiter(waiter);
      return () => {
        this.#waiting.delete(waiter);
        this.#node.removeWaiter(waiter);
      };
    });
  }

  #key(grant: FileGrant): string {
    return `${this.#context.namespace}${SEP}${grant.kind}${SEP}${grant.name}`;
  }

  #space(space: string): string {
    return `${this.#context.namespace}${SEP}${space}`;
  }

  #checkOpen(): void {
    if (this.#closed) throw new InvalidStateError(`file session ${this.id} is closed`);
  }
}

/** Creates a file driver. */
export async function createDriver(context: DriverContext): Promise<Driver> {
  const refusal = platformRefusal(process.platform);
  if (refusal) {
    throw refusal;
  }
  const path = directoryFromUrl(context.url, context.href);
  const directory = openDirectory(path, path === defaultDirectory());
  const node = await FileNode.acquire(directory);
  const prefix = `${context.namespace}${SEP}`;
  const sessions = new Set<FileSession>();
  let closed = false;
  const cells = fileCells(directory, context.namespace, node);
  const records: RecordWrites = {
    writeNow: cells.takeoverNow,
    writeHeld: cells.takeoverHeld,
    releaseNow: cells.releaseNow,
  };
  return {
    cells,
    nativeRecords: true,
    async openSession(_hooks: SessionHooks) {
      const session = new FileSession(node, context, records);
      sessions.add(session);
      return session;
    },
    async listRecords(space): Promise<RecordEntry[]> {
      return node.listRecords(`${prefix}${space}`);
    },
    async watchRecords(space, listener, signal) {
      return node.watchRecords(`${prefix}${space}`, listener, signal);
    },
    async inspect() {
      const { queues, records } = await node.inspect(context.namespace, prefix);
      return { queues, records: records.map((r) => ({ space: r.space.slice(prefix.length), entries: r.entries })) };
    },
    async namespaces() {
      return node.namespaces();
    },
    async revokeSession(sessionId) {
      throw cannotRevoke(sessionId, await node.inspect(context.namespace, prefix));
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const session of sessions) await session.close();
      cells.close();
      node.release();
    },
  };
}
