/** What the bench ran on, stated at the top of the report. */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

const require = createRequire(import.meta.url);

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  kernel: string;
  os: string;
  loadAverage: number[];
}

export function machine(): Machine {
  let cpuModel = os.cpus()[0]?.model ?? "unknown";
  try {
    // /proc/cpuinfo can be more precise than libuv's copy (family, MHz).
    const info = readFileSync("/proc/cpuinfo", "utf8");
    const model = /^model name\s*:\s*(.+)$/m.exec(info)?.[1];
    const mhz = /^cpu MHz\s*:\s*(.+)$/m.exec(info)?.[1];
    if (model) cpuModel = `${model.trim()}${mhz ? ` @ ${Math.round(Number(mhz))} MHz` : ""}`;
  } catch {
    // not Linux
  }
  let osName = `${os.type()} ${os.release()}`;
  try {
    const release = readFileSync("/etc/os-release", "utf8");
    osName = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(release)?.[1] ?? osName;
  } catch {
    // keep the generic name
  }
  return {
    cpuModel,
    cores: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    kernel: os.release(),
    os: osName,
    loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

/** Installed versions of the packages compared, or null when one cannot be loaded. */
export function packageVersions(names: readonly string[]): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const name of names) {
    out[name] = installedVersion(name);
  }
  return out;
}

/**
 * A package's version from its package.json. Packages whose `exports` do not list
 * `./package.json` (redlock 5) refuse `require("x/package.json")`: find the file next to
 * the resolved entry point instead.
 */
function installedVersion(name: string): string | null {
  try {
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    // fall through to the search from the entry point
  }
  try {
    let dir = path.dirname(require.resolve(name));
    for (;;) {
      const file = path.join(dir, "package.json");
      if (existsSync(file)) {
        const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
        if (pkg.name === name && pkg.version) return pkg.version;
      }
      const up = path.dirname(dir);
      if (up === dir) return null;
      dir = up;
    }
  } catch {
    return null;
  }
}

export function commandVersion(command: string, args: string[]): string | null {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
      .split("\n")[0]!
      .trim();
  } catch {
    return null;
  }
}
