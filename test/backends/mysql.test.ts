/**
 * The mysql backend against a private MariaDB server (see test/harness/mariadb.ts): the
 * whole conformance suite, then what only this backend has.
 */
import { after } from "node:test";
import { conformance } from "../conformance/suite.js";
import { type MariadbServer, startMariadb } from "../harness/mariadb.js";

let server: MariadbServer | undefined;
let starting: Promise<MariadbServer> | undefined;
const ensureServer = async (): Promise<MariadbServer> => {
  starting ??= startMariadb().then((s) => {
    server = s;
    return s;
  });
  return starting;
};
after(async () => {
  await server?.stop();
});

conformance({
  name: "mysql",
  url: () => server?.url ?? "mysql://127.0.0.1:1/unstarted",
  shortTtlMs: 4000,
  contention: { clients: 20, rounds: 30 },
  setup: async () => {
    await ensureServer();
  },
});
