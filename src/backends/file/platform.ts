import { UnsupportedError } from "../../core/errors.js";
import { BACKEND } from "./definition.js";

/**
 * Why the file backend cannot run on `platform` (pass `process.platform`), or null on
 * Linux. It needs Linux open-file-description locks; the refusal is one line that also
 * names what works instead.
 */
export function platformRefusal(platform: string): UnsupportedError | null {
  if (platform === "linux") return null;
  return new UnsupportedError(
    `the file backend (file://, the default) runs on Linux only, as it needs Linux open-file-description locks; this is ${platform}. Use memory:// within one process, or a server backend across processes (etcd://host:2379 or postgres://user@host/db)`,
    { backend: BACKEND },
  );
}
