import { conformance } from "../conformance/suite.js";

conformance({
  name: "memory",
  url: () => "memory://conformance",
  shortTtlMs: 1000,
  contention: { clients: 50, rounds: 200 },
});
