/**
 * `node --import tsx bench/etcd-watch-sync.ts`: why an etcd waiter's watch starts at the
 * server's current revision (issue 17's handoff tail). A watch whose start revision is
 * already past is "unsynced": etcd catches those up in a loop every 100 ms. This measures,
 * on a real etcd, the time from a delete's answer to the watcher's event for a watch that
 * starts at an older read's revision + 1 after another write (as a waiter's did), and for
 * one that starts "now" (as it does now), interleaved.
 */
import { Etcd3 } from "etcd3";
import { startEtcd } from "../test/harness/etcd.js";

const ROUNDS = Number(process.env.ROUNDS ?? 40);

async function once(client: Etcd3, other: Etcd3, fromPast: boolean, i: number): Promise<number> {
  const key = `sync/${fromPast ? "past" : "now"}/${i}`;
  const put = await client.put(key).value("x").exec();
  const readRevision = BigInt(put.header.revision);
  // Another client writes meanwhile: the watch's start is now in the past.
  await other.put(`sync/other/${i}`).value("y").exec();
  let builder = client.watch().key(key).only("delete");
  if (fromPast) builder = builder.startRevision((readRevision + 1n).toString());
  const watcher = await builder.create();
  const event = new Promise<bigint>((resolve) => watcher.once("delete", () => resolve(process.hrtime.bigint())));
  await other.delete().key(key).exec();
  const deleted = process.hrtime.bigint();
  const seen = await event;
  await watcher.cancel();
  return Number(seen - deleted) / 1e6;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!;

const server = await startEtcd();
const client = new Etcd3({ hosts: server.endpoints });
const other = new Etcd3({ hosts: server.endpoints });
try {
  const past: number[] = [];
  const now: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    past.push(await once(client, other, true, i));
    now.push(await once(client, other, false, i));
  }
  const line = (what: string, xs: number[]) =>
    `${what}: median ${median(xs).toFixed(2)} ms, p90 ${p90(xs).toFixed(2)} ms, max ${Math.max(...xs).toFixed(2)} ms`;
  console.log(line("watch from the read's revision + 1", past));
  console.log(line("watch from now (synced)          ", now));
  console.log(`ratio of medians: ${(median(past) / median(now)).toFixed(1)}x`);
} finally {
  client.close();
  other.close();
  await server.stop();
}
