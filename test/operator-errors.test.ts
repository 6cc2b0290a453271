/**
 * Errors an operator reads: an unreachable server is named, with what failed and what to
 * check, in one sentence, the client's own error kept as `cause`; and the file backend's
 * refusal off Linux names what works instead.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { explainNetwork, networkFailure } from "../src/backends/explain.js";
import { platformRefusal } from "../src/backends/file/platform.js";
import { BackendUnavailableError, connect } from "../src/index.js";
import { baton } from "./fixtures/cli.js";
import { freePort } from "./harness/ports.js";

describe("errors an operator reads", () => {
  for (const [server, url] of [
    ["etcd", (port: number) => `etcd://127.0.0.1:${port}`],
    ["PostgreSQL", (port: number) => `postgres://postgres@127.0.0.1:${port}/baton`],
  ] as const) {
    it(`${server} on a port nobody listens on: endpoint, what failed, what to check; cause kept`, async () => {
      const port = await freePort();
      const error = await connect(url(port)).then(
        (c) => c.close().then(() => assert.fail("connected to a port nobody listens on")),
        (e: unknown) => e,
      );
      assert.ok(error instanceof BackendUnavailableError, String(error));
      assert.match(
        error.message,
        new RegExp(
          `${server} at 127\\.0\\.0\\.1:${port} refused the connection \\(nothing listens there\\); check that ${server} runs and listens on that address`,
        ),
      );
      assert.doesNotMatch(error.message, /Resolution note|UNAVAILABLE|\n/);
      assert.ok(error.cause instanceof Error, "the client's error is the cause");
      assert.match((error.cause as Error).message, /ECONNREFUSED/);
      const cli = await baton(["lock", "x", "--url", url(port), "--", "true"], process.env);
      assert.equal(cli.status, 69);
      assert.equal(cli.stderr, `baton: ${error.message}\n`);
    });
  }

  // The shape of each network failure, from the forms the clients report them in.
  const failures: [unknown, string][] = [
    [
      new Error(
        "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 10.1.2.3:2379. Resolution note: ",
      ),
      "etcd at 10.1.2.3:2379 refused the connection (nothing listens there); check that etcd runs",
    ],
    [
      new Error("14 UNAVAILABLE: Name resolution failed for target dns:nohost.example:2379"),
      "etcd at nohost.example:2379 does not resolve (unknown host name); check the host name in the URL and DNS",
    ],
    [
      Object.assign(new Error("getaddrinfo ENOTFOUND db.example"), { code: "ENOTFOUND", hostname: "db.example" }),
      "etcd at db.example does not resolve",
    ],
    [
      Object.assign(new Error("connect ETIMEDOUT"), { code: "ETIMEDOUT", address: "10.0.0.9", port: 5432 }),
      "etcd at 10.0.0.9:5432 did not answer in time; check that etcd is up, and the network path and firewalls to it",
    ],
    [new Error("4 DEADLINE_EXCEEDED: Deadline exceeded"), "etcd did not answer in time"],
    [
      new Error("wrapped", { cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }) }),
      "etcd closed the connection abruptly; check the etcd server's log",
    ],
  ];
  for (const [error, sentence] of failures) {
    it(`words "${(error as Error).message.slice(0, 50)}" as one sentence`, () => {
      const failure = networkFailure(error);
      assert.ok(failure, "recognised as a network failure");
      const text = explainNetwork("connecting", "etcd", failure);
      assert.ok(text.startsWith(`connecting: ${sentence}`), text);
    });
  }

  it("does not take other errors for network failures", () => {
    for (const error of [new Error("permission denied for schema baton"), new Error("ERRORS happen"), "text"]) {
      assert.equal(networkFailure(error), undefined, String(error));
    }
  });

  it("lets the file backend run on Linux only, and says in one line what works elsewhere", () => {
    assert.equal(platformRefusal("linux"), null);
    for (const platform of ["darwin", "win32", "freebsd"]) {
      const refusal = platformRefusal(platform);
      assert.ok(refusal, platform);
      assert.equal(refusal.code, "UNSUPPORTED");
      assert.doesNotMatch(refusal.message, /\n/);
      assert.match(refusal.message, new RegExp(`runs on Linux only.*this is ${platform}`));
      assert.match(refusal.message, /memory:\/\/ within one process/);
      assert.match(refusal.message, /server backend across processes \(etcd:\/\/host:2379 or postgres:\/\//);
    }
  });
});
