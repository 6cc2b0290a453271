/**
 * Baton: locks, fencing tokens, semaphores, groups, leader election and partitioning for
 * Node.js, behind one API over pluggable backends.
 *
 * ```ts
 * import { connect } from "baton-coord";
 * await using coord = await connect("file:"); // or memory://, etcd://, postgres://
 * await using lock = await coord.lock("invoice-42").acquire({ timeoutMs: 5000 });
 * await resource.write(data, { fence: lock.token, signal: lock.signal });
 * ```
 *
 * @module
 */
import "./backends/index.js";

export { connect, DEFAULT_URL, requirableGuarantees, type ConnectOptions } from "./core/connect.js";
export {
  Coordinator,
  type HolderInfo,
  type Inspection,
  type LockInfo,
  type SemaphoreOptions,
  type TakeoverRecordInfo,
  type WaiterInfo,
} from "./core/coordinator.js";
export {
  MAX_FENCE_INFO_BYTES,
  MAX_LOCK_DELAY_MS,
  type OnTakeover,
  type Takeover,
  type TakeoverOptions,
} from "./core/takeover.js";
export type { RevokedHolder, RevokeOptions } from "./core/revoke.js";
export {
  Lock,
  LockHandle,
  Semaphore,
  type AcquireOptions,
  type LockMode,
  type ReleaseResult,
  type SemaphoreAcquireOptions,
  type TryAcquireOptions,
  type UpgradeOptions,
} from "./core/lock.js";
export {
  Cell,
  MAX_CELL_VALUE_BYTES,
  type CellChange,
  type CellDeleteOptions,
  type CellSetOptions,
  type CellState,
  type CellTransitionOptions,
  type CellWatchOptions,
} from "./core/cell.js";
export { MAX_MULTI_LOCK_NAMES, MultiLockHandle, type MultiLockOptions } from "./core/multi-lock.js";
export { Group, Membership, type GroupEvent, type Member, type WatchOptions } from "./core/group.js";
export { Election, Leadership, type CampaignOptions, type Leader } from "./core/election.js";
export { Partitioner, type PartitionChange, type PartitionerOptions } from "./core/partitioner.js";
export { HashRing, type HashRingOptions } from "./core/hash-ring.js";
export type { Session } from "./core/session.js";
export { GUARANTEE_NAMES, type Guarantees, type GuaranteeName, type Requirement } from "./core/guarantees.js";
export { backends, registerBackend } from "./core/registry.js";
export type {
  AcquireRequest,
  BackendDefinition,
  CellCondition,
  CellEntry,
  CellWriteResult,
  Driver,
  DriverCells,
  DriverContext,
  DriverGrant,
  DriverModule,
  DriverSession,
  QueueKind,
  RecordEntry,
  RecordEvent,
} from "./core/driver.js";
export { parseDuration } from "./core/duration.js";
export { statusPage, type StatusPageOptions } from "./status-page.js";
export { inspectionToJson, type InspectionJson, type LockJson, type ProcessJson } from "./status/json.js";
export { formatStatus, LONG_WAIT_MS, type StatusTextOptions } from "./status/text.js";
export { memberDetails, type MemberDetails } from "./status/member.js";
export { PROMETHEUS_PACKAGES, prometheusMetrics, type PrometheusMetrics } from "./metrics/prometheus.js";
export { METRIC, type AcquireOutcome, type MeterProviderLike, type MetricsOptions } from "./core/telemetry.js";
export {
  MAX_NAME_BYTES,
  MAX_NAMESPACE_BYTES,
  MIN_TTL_MS,
  MAX_TTL_MS,
  DEFAULT_TTL_MS,
  MAX_TIMER_MS,
} from "./core/validate.js";
export {
  AbortError,
  AbortedError,
  BackendUnavailableError,
  BatonError,
  CannotRevokeError,
  ClosedError,
  ConflictError,
  DeadlockError,
  FencedError,
  FenceFailedError,
  InvalidArgumentError,
  InvalidStateError,
  LockLostError,
  MissingGuaranteeError,
  SessionExpiredError,
  TimeoutError,
  UnsupportedError,
  type BatonErrorCode,
  type BatonErrorOptions,
  type CellStateInfo,
  type RevokeHolderInfo,
} from "./core/errors.js";
