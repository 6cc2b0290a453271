/**
 * The conformance suite every backend runs: one call from `test/backends/<name>.test.ts`.
 * Tests are gated by the backend's declared guarantees, never by its type. Each concern is
 * its own file (`locks.ts`, `semaphores.ts`, `groups.ts`, ...) exporting one function that
 * takes the context below; to add one, write the file and call it here.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe } from "node:test";
import { type ConnectOptions, type Coordinator, type Guarantees, backends, connect } from "../../src/index.js";
import { suspendKeepAlive } from "../../src/testing.js";
import type { ConformanceTarget, RecipeContext, SuiteContext } from "./context.js";
import { locksSuite } from "./locks.js";
import { sessionLossSuite } from "./session-loss.js";
import { sharedLocksSuite } from "./shared-locks.js";
import { semaphoresSuite } from "./semaphores.js";
import { groupsSuite } from "./groups.js";
import { electionSuite } from "./election.js";
import { partitionerSuite } from "./partitioner.js";
import { inspectionSuite } from "./inspection.js";
import { badInputSuite } from "./bad-input.js";
import { cellsSuite } from "./cells.js";
import { grantingSuite } from "./granting.js";
import { inspectJsonSuite } from "./inspect-json.js";
import { namespacesSuite } from "./namespaces.js";
import { optionsSuite } from "./options.js";
import { releaseSuite } from "./release.js";
import { sessionWaitSuite } from "./session-wait.js";
import { takeoverSuite } from "./takeover.js";
import { takeoverDefaultSuite } from "./takeover-default.js";

export type { ConformanceTarget } from "./context.js";

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
    takeoverDefaultSuite(context, target.url);
    grantingSuite(context);

    // One file per recipe.
    const recipes: RecipeContext = { ...context, clients, target };
    locksSuite(recipes);
    sessionLossSuite(recipes);
    sharedLocksSuite(recipes);
    semaphoresSuite(recipes);
    groupsSuite(recipes);
    electionSuite(recipes);
    partitionerSuite(recipes);
    inspectionSuite(recipes);
    badInputSuite(recipes);
  });
}
