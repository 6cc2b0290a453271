import type { Driver, DriverContext } from "../../core/driver.js";
import { UnsupportedError } from "../../core/errors.js";

/** Not built yet. */
export async function createDriver(_context: DriverContext): Promise<Driver> {
  throw new UnsupportedError("the file backend is not built yet", { backend: "file" });
}
