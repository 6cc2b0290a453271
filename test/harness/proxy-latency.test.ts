/**
 * The proxy's added latency: a round trip through it takes at least the two delays, chunks
 * keep their order under jitter, and bad settings are refused with what is allowed.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, before, test } from "node:test";
import { startProxy } from "./proxy.js";

let echo: net.Server;
let port: number;
before(async () => {
  echo = net.createServer((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  echo.listen(0, "127.0.0.1");
  await once(echo, "listening");
  port = (echo.address() as net.AddressInfo).port;
});
after(() => echo.close());

async function roundTrip(socket: net.Socket): Promise<number> {
  const t0 = performance.now();
  socket.write("x");
  await once(socket, "data");
  return performance.now() - t0;
}

test("a round trip through the proxy takes at least up + down", async () => {
  const proxy = await startProxy({ host: "127.0.0.1", port }, { latency: { up: { ms: 20 }, down: { ms: 30 } } });
  const socket = net.connect(proxy.port, "127.0.0.1");
  try {
    await once(socket, "connect");
    const samples = [await roundTrip(socket), await roundTrip(socket), await roundTrip(socket)];
    for (const ms of samples) assert.ok(ms >= 49, `round trip ${ms.toFixed(1)} ms, expected >= 50`);
    proxy.setLatency({ up: { ms: 100 } });
    assert.ok((await roundTrip(socket)) >= 99, "a new latency applies to what is sent next");
  } finally {
    socket.destroy();
    await proxy.close();
  }
});

test("jitter never reorders chunks, and the end comes after the last chunk", async () => {
  const proxy = await startProxy(
    { host: "127.0.0.1", port },
    { latency: { up: { ms: 10, jitterMs: 10 }, down: { ms: 10, jitterMs: 10 } } },
  );
  const socket = net.connect(proxy.port, "127.0.0.1");
  try {
    await once(socket, "connect");
    let received = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      received += d;
    });
    const expected = Array.from({ length: 200 }, (_, i) => `${i},`).join("");
    for (let i = 0; i < 200; i++) {
      socket.write(`${i},`);
      if (i % 20 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    socket.end();
    await once(socket, "end");
    assert.equal(received, expected);
  } finally {
    socket.destroy();
    await proxy.close();
  }
});

test("bad latency settings are refused with what is allowed", async () => {
  await assert.rejects(
    startProxy({ host: "127.0.0.1", port }, { latency: { up: { ms: -1 } } }),
    /ms must be a finite number >= 0/,
  );
  const proxy = await startProxy({ host: "127.0.0.1", port });
  try {
    assert.throws(() => proxy.setLatency({ down: { ms: 5, jitterMs: 6 } }), /jitterMs between 0 and ms/);
    assert.throws(() => proxy.setLatency({ down: { ms: Number.NaN } }), RangeError);
  } finally {
    await proxy.close();
  }
});

test("the proxy adds no Nagle delay: write-write-read exchanges do not wait for delayed ACKs", async () => {
  // A server (no Nagle of its own) that answers in two writes 2 ms apart once it has both
  // halves of a request: the proxy receives the second while the first is unacknowledged.
  const server = net.createServer((s) => {
    let got = "";
    s.setNoDelay(true);
    s.on("error", () => {});
    s.on("data", (d) => {
      got += d;
      if (got.length >= 2) {
        got = "";
        s.write("o");
        setTimeout(() => s.write("k"), 2);
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const proxy = await startProxy({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port });
  const socket = net.connect({ port: proxy.port, host: "127.0.0.1", noDelay: true });
  try {
    await once(socket, "connect");
    const samples: number[] = [];
    for (let i = 0; i < 21; i++) {
      const t0 = performance.now();
      socket.write("a");
      await new Promise((r) => setImmediate(r));
      socket.write("b");
      let answer = "";
      while (answer.length < 2) answer += (await once(socket, "data"))[0];
      samples.push(performance.now() - t0);
    }
    samples.sort((x, y) => x - y);
    // With Nagle on the proxy's sockets every exchange waits ~40 ms for a delayed ACK.
    assert.ok((samples[10] as number) < 20, `median exchange ${samples[10]?.toFixed(1)} ms`);
  } finally {
    socket.destroy();
    await proxy.close();
    server.close();
  }
});
