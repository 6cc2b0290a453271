/**
 * Redis Sentinel with one process silently cut off from everyone (a proxy in front of each
 * process, announced as its address, stops forwarding without closing anything): first a
 * sentinel, then the primary, under 20 contending clients. See fixtures/member-cut.ts for
 * what must hold; "a quorum" here is the sentinels' majority and the replica they promote.
 */
import { describe, it } from "node:test";
import { waitFor } from "../conformance/helpers.js";
import { startSentinelSetup } from "../harness/redis.js";
import { memberCutScenario } from "./fixtures/member-cut.js";

// The sentinels call the primary down after 1 s of silence and promote within about 2 s
// more; sessions must outlive that.
const TTL_MS = 10_000;

describe("redis sentinel member cut silently", () => {
  it("keeps granting while a sentinel and then the primary are cut", async (t) => {
    const setup = await startSentinelSetup({ proxied: true });
    t.after(() => setup.stop());
    const proxies = setup.proxies!;
    const first = proxies.primary.port;
    await memberCutScenario(t, {
      url: setup.url,
      ttlMs: TTL_MS,
      words: { bystander: "sentinel", leader: "primary" },
      // Clients ask the sentinels for the primary every 500 ms (link.ts), then reconnect.
      resumeWithinMs: 3000,
      // The sentinel clients are told first: the one most likely in use.
      bystander: async () => ({
        name: "sentinel 0",
        cut: () => proxies.sentinels[0]!.cut(),
        heal: () => proxies.sentinels[0]!.heal({ resumeExisting: true }),
      }),
      leader: async () => ({
        name: "primary",
        cut: () => proxies.primary.cut(),
        heal: () => proxies.primary.heal({ resumeExisting: true }),
      }),
      async successor() {
        let port = first;
        await waitFor(
          async () => {
            port = await setup.currentPrimaryPort(1).catch(() => first);
            return port !== first;
          },
          "the sentinels to promote the replica",
          20_000,
        );
        return port === proxies.replica.port ? "the replica" : `:${port}`;
      },
    });
  });
});
