import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { describe, it } from "node:test";
import {
  abortable,
  atMost,
  graceAfterAbort,
  linked,
  onAbort,
  raceSignal,
  sleep,
  within,
} from "../src/core/abortable.js";

const listeners = (signal: AbortSignal) => getEventListeners(signal, "abort").length;

describe("the wait helper (core/abortable.ts)", () => {
  it("abortable: settles on resolve, runs the stop function once and leaves no listener", async () => {
    const controller = new AbortController();
    let stops = 0;
    let resolveIt!: (value: string) => void;
    const wait = abortable<string>(controller.signal, (resolve) => {
      resolveIt = resolve;
      return () => stops++;
    });
    assert.equal(listeners(controller.signal), 1);
    resolveIt("done");
    resolveIt("again");
    assert.equal(await wait, "done");
    controller.abort(new Error("late"));
    assert.equal(stops, 1);
    assert.equal(listeners(controller.signal), 0);
  });

  it("abortable: rejects with signal.reason on abort and stops the wait", async () => {
    const controller = new AbortController();
    let stops = 0;
    const wait = abortable<void>(controller.signal, () => () => stops++);
    const reason = new Error("cancelled");
    controller.abort(reason);
    await assert.rejects(wait, (error) => error === reason);
    assert.equal(stops, 1);
  });

  it("abortable: an already-aborted signal rejects without starting", async () => {
    const reason = new Error("before");
    let started = false;
    const wait = abortable<void>(AbortSignal.abort(reason), () => {
      started = true;
      return undefined;
    });
    await assert.rejects(wait, (error) => error === reason);
    assert.equal(started, false);
  });

  it("abortable: a synchronous settle inside start still runs the stop function", async () => {
    const controller = new AbortController();
    let stops = 0;
    const value = await abortable<number>(controller.signal, (resolve) => {
      resolve(7);
      return () => stops++;
    });
    assert.equal(value, 7);
    assert.equal(stops, 1);
    assert.equal(listeners(controller.signal), 0);
  });

  it("sleep: resolves without a signal, rejects with the reason when aborted first", async () => {
    await sleep(1);
    const controller = new AbortController();
    const wait = sleep(60_000, controller.signal);
    const reason = new Error("stop");
    controller.abort(reason);
    await assert.rejects(wait, (error) => error === reason);
  });

  it("raceSignal: the promise's outcome, or the reason when the signal aborts first", async () => {
    const controller = new AbortController();
    assert.equal(await raceSignal(Promise.resolve(3), controller.signal), 3);
    assert.equal(listeners(controller.signal), 0);
    const reason = new Error("gone");
    const never = new Promise<never>(() => {});
    const raced = raceSignal(never, controller.signal);
    controller.abort(reason);
    await assert.rejects(raced, (error) => error === reason);
  });

  it("onAbort: runs the action once on abort, at once if already aborted, never after detach", () => {
    const controller = new AbortController();
    let runs = 0;
    onAbort(controller.signal, () => runs++);
    assert.equal(runs, 0);
    controller.abort();
    controller.abort();
    assert.equal(runs, 1);

    let early = 0;
    onAbort(AbortSignal.abort(), () => early++);
    assert.equal(early, 1);

    const other = new AbortController();
    let detached = 0;
    const detach = onAbort(other.signal, () => detached++);
    detach();
    assert.equal(listeners(other.signal), 0);
    other.abort();
    assert.equal(detached, 0);
  });

  it("onAbort: `until` aborting detaches, and an ended `until` attaches nothing", () => {
    const source = new AbortController();
    const until = new AbortController();
    let runs = 0;
    onAbort(source.signal, () => runs++, until.signal);
    assert.equal(listeners(source.signal), 1);
    until.abort();
    assert.equal(listeners(source.signal), 0);
    onAbort(source.signal, () => runs++, until.signal);
    assert.equal(listeners(source.signal), 0);
    source.abort();
    assert.equal(runs, 0);
  });

  it("within: the promise's value in time, else a rejection naming the bound", async () => {
    assert.equal(await within(Promise.resolve(1), 1000), 1);
    // The slow promise's own timer keeps the process up: the bound's timer is unref'd.
    await assert.rejects(within(sleep(500), 5), /no answer within 5 ms/);
  });

  it("atMost: the promise's value in time, undefined after the bound, its rejection before it", async () => {
    assert.equal(await atMost(Promise.resolve(2), 1000), 2);
    assert.equal(
      await atMost(
        sleep(500).then(() => 3),
        5,
      ),
      undefined,
    );
    const failure = new Error("withdraw failed");
    await assert.rejects(atMost(Promise.reject(failure), 1000), (error) => error === failure);
  });

  it("graceAfterAbort: the promise's outcome, even after an abort within the grace; else the reason, and a late value goes to `late`", async () => {
    const lates: number[] = [];
    const late = (value: number) => void lates.push(value);
    // No abort: waits as long as the promise takes.
    assert.equal(
      await graceAfterAbort(
        sleep(30).then(() => 1),
        new AbortController().signal,
        5,
        late,
      ),
      1,
    );
    // Aborted, settled within the grace: its own outcome.
    const quick = new AbortController();
    const settling = graceAfterAbort(
      sleep(20).then(() => 2),
      quick.signal,
      1000,
      late,
    );
    quick.abort(new Error("cancelled"));
    assert.equal(await settling, 2);
    // Aborted, not settled within the grace: the reason; its value comes to `late`.
    const slow = new AbortController();
    let finish: (value: number) => void = () => {};
    const hanging = new Promise<number>((resolve) => {
      finish = resolve;
    });
    const waiting = graceAfterAbort(hanging, slow.signal, 20, late);
    const reason = new Error("timed out");
    slow.abort(reason);
    await assert.rejects(waiting, (error) => error === reason);
    assert.deepEqual(lates, []);
    finish(3);
    await hanging;
    assert.deepEqual(lates, [3]);
    assert.equal(getEventListeners(slow.signal, "abort").length, 0);
  });

  it("linked: aborts with the first source's reason, then holds no listener; dispose detaches", () => {
    const a = new AbortController();
    const b = new AbortController();
    const link = linked([a.signal, b.signal]);
    const reason = new Error("b first");
    b.abort(reason);
    assert.equal(link.signal.reason, reason);
    assert.equal(listeners(a.signal), 0);

    const early = linked([AbortSignal.abort(reason), a.signal]);
    assert.equal(early.signal.reason, reason);
    assert.equal(listeners(a.signal), 0);

    const kept = linked([a.signal]);
    kept.dispose();
    assert.equal(listeners(a.signal), 0);
    a.abort();
    assert.equal(kept.signal.aborted, false);
  });
});
