/**
 * Key and channel names under one namespace: `baton:<namespace>:`. Names and spaces are
 * URI-encoded, so no name can reach into another's keys. See lua.ts for the layout.
 *
 * @module
 */
import type { QueueKind } from "../../core/driver.js";

export class Keyspace {
  readonly prefix: string;

  constructor(namespace: string) {
    this.prefix = `baton:${encodeURIComponent(namespace)}:`;
  }

  queue(kind: QueueKind, name: string): string {
    return `${this.prefix}q:${kind}:${encodeURIComponent(name)}`;
  }

  session(sessionId: string): string {
    return `${this.prefix}s:${sessionId}`;
  }

  /** Grants and upgrades of this session's waiters are published here. */
  sessionChannel(sessionId: string): string {
    return `${this.prefix}c:${sessionId}`;
  }

  space(space: string): string {
    return encodeURIComponent(space);
  }

  recordChannel(space: string): string {
    return `${this.prefix}rc:${this.space(space)}`;
  }
}
