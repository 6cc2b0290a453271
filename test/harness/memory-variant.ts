/**
 * The memory backend registered again under its own scheme with its driver changed by
 * `change` (a seam left out, a fault injected): for core behaviour that needs a backend
 * memory is not, in one process and with no server.
 */
import { memoryBackend } from "../../src/backends/index.js";
import type { Driver } from "../../src/core/driver.js";
import { registerBackend } from "../../src/index.js";

/** Registers `scheme` as the memory backend with each driver passed through `change`. */
export function registerMemoryVariant(scheme: string, change: (driver: Driver) => Driver): void {
  registerBackend({
    ...memoryBackend,
    name: scheme,
    schemes: [scheme],
    load: async () => {
      const module = await memoryBackend.load();
      return { createDriver: async (context) => change(await module.createDriver(context)) };
    },
  });
}
