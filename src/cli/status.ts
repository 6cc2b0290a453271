/**
 * The `baton status` renderings, which live in the library (src/status/) so that the status
 * page and `Inspection.toJSON` share them without importing the CLI.
 *
 * @module
 */
export { inspectionToJson as statusJson } from "../status/json.js";
export { formatStatus } from "../status/text.js";
