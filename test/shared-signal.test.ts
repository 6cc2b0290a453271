/**
 * One caller signal passed to many waits: Baton keeps one listener on it, whatever the
 * number of waits (Node warns past ten listeners on one signal, and each costs), and every
 * wait still ends on its abort.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { getEventListeners } from "node:events";
import { describe, it } from "node:test";
import { AbortedError, AbortError, connect } from "../src/index.js";
import { abortable, onAbort } from "../src/core/abortable.js";

const listeners = (signal: AbortSignal) => getEventListeners(signal, "abort").length;

describe("one signal shared by many waits", () => {
  it("a thousand waits on one signal hold one listener, all end on its abort, in order", async () => {
    const controller = new AbortController();
    const order: number[] = [];
    const waits = Array.from({ length: 1000 }, (_, i) =>
      abortable<void>(controller.signal, () => undefined).catch((error: unknown) => {
        order.push(i);
        return error;
      }),
    );
    assert.equal(listeners(controller.signal), 1);
    const reason = new Error("stop all");
    controller.abort(reason);
    for (const outcome of await Promise.all(waits)) assert.equal(outcome, reason);
    assert.deepEqual(
      order,
      Array.from({ length: 1000 }, (_, i) => i),
    );
  });

  it("the listener goes with the last wait; a detached action never runs", async () => {
    const controller = new AbortController();
    const detach = Array.from({ length: 20 }, () => onAbort(controller.signal, () => {}));
    assert.equal(listeners(controller.signal), 1);
    for (const undo of detach) undo();
    assert.equal(listeners(controller.signal), 0);
    const ran: string[] = [];
    onAbort(controller.signal, () => ran.push("first"));
    const undo = onAbort(controller.signal, () => ran.push("detached"));
    onAbort(controller.signal, () => ran.push("second"));
    undo();
    assert.equal(listeners(controller.signal), 1);
    controller.abort();
    assert.deepEqual(ran, ["first", "second"]);
    assert.equal(listeners(controller.signal), 0);
  });

  it("many acquisitions cancelled by one caller signal: no MaxListenersExceededWarning", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => {
      if (warning.name === "MaxListenersExceededWarning") warnings.push(warning.message);
    };
    process.on("warning", onWarning);
    const url = `memory://shared-signal-${randomUUID()}`;
    const holder = await connect(url);
    const crowd = await connect(url);
    try {
      const held = await holder.lock("busy").acquire();
      const stop = new AbortController();
      const waits = Array.from({ length: 50 }, (_, i) =>
        crowd
          .lock(i % 2 === 0 ? "busy" : `busy-${i}`)
          .acquire({ signal: stop.signal, timeoutMs: 60_000 })
          .then(
            async (handle) => {
              await handle.release();
              return null;
            },
            (error: unknown) => error,
          ),
      );
      stop.abort(new Error("enough"));
      const outcomes = await Promise.all(waits);
      // The busy lock's waiters were cancelled; the free names may have been granted first.
      assert.ok(outcomes.filter((_, i) => i % 2 === 0).every((o) => o instanceof AbortError));
      // The class's old name is the same class; its name and code agree with the platform's.
      const aborted = outcomes[0] as AbortError;
      assert.ok(aborted instanceof AbortedError);
      assert.equal(aborted.name, AbortError.name);
      assert.equal(aborted.code, "ABORTED");
      await held.release();
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(warnings, []);
      assert.equal(listeners(stop.signal), 0);
    } finally {
      process.off("warning", onWarning);
      await holder.close();
      await crowd.close();
    }
  });
});
