import net from "node:net";

/**
 * Ports handed out by this process. The OS may return the same ephemeral port
 * twice once the probe socket has been closed, and a server that has not yet
 * bound its port would then collide with another one; remembering what we have
 * handed out avoids that within one test process.
 */
const handedOut = new Set<number>();

function probe(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close((err) => {
        if (err) reject(err);
        else if (port === 0) reject(new Error("freePort: could not determine bound port"));
        else resolve(port);
      });
    });
  });
}

/**
 * Returns a TCP port on 127.0.0.1 that was free at the time of the call and
 * has not been returned before by this process.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await probe(host);
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("freePort: no unused port found after 100 attempts");
}

/** Convenience: `n` distinct free ports. */
export async function freePorts(n: number, host = "127.0.0.1"): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort(host));
  return ports;
}
