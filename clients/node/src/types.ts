/**
 * Typed arguments and results of every method, and the notifications' payloads.
 *
 * Argument and field names are the contract's, exactly as on the wire (`ttl_ms`,
 * `wait_ms`, `user_id`...). Optional arguments left `undefined` are not sent (the sidecar's
 * default applies). Results are the decoded maps: fields this SDK does not know are kept on
 * the object (and ignored by the types), so a newer sidecar's additions do no harm.
 *
 * Integers: durations and counts are `number`. Fences and points in time (`fence`,
 * `*_at_ms`, `last_seen_ms`) are `Int64` (`number | bigint`): a `number` whenever the value
 * is exact as one (every real epoch-ms time is), a `bigint` past 2**53. Nothing is rounded.
 */

import type { Int64, Value } from "./codec.js";

// -- connection ---------------------------------------------------------------------------

export interface HelloArgs {
  client?: string;
  version?: Value;
  namespace?: string;
}
export interface HelloResult {
  server: string;
  version: string;
  protocol: number;
  node_id: string;
  namespace: string;
  max_frame_bytes: number;
  methods: string[];
}

export interface StatsResult {
  uptime_ms: number;
  connections: number;
  requests: number;
  redis: { connected: boolean; latency_ms: number | null } & Record<string, unknown>;
  cache: {
    l1_hits: number;
    l2_hits: number;
    misses: number;
    l1_entries: number;
    l1_bytes: number;
  } & Record<string, unknown>;
  locks: { held: number } & Record<string, unknown>;
  presence: { tracked: number } & Record<string, unknown>;
  [field: string]: unknown;
}

export interface HealthResult {
  ok: boolean;
  redis_latency_ms: number;
  redis_latency_us: number;
}

// -- cache --------------------------------------------------------------------------------

/** A cache entry: what a read returns for a key that has a value. */
export interface CacheEntry<T = Value> {
  value: T;
  source: "l1" | "l2";
  /** Remaining lifetime in Redis; null when the key has no TTL. */
  ttl_ms: number | null;
  /** Present (true) only on an L1 answer that could not be checked with Redis. */
  stale?: boolean;
  /** Only from `cache.fetch` with `refresh_ahead_ms`: recompute and `cache.fill`. */
  lease?: string;
}
export interface CacheGetArgs {
  key: string;
}
export interface CacheMgetArgs {
  keys: string[];
}
export interface CacheSetArgs {
  key: string;
  value: Value;
  ttl_ms?: number;
}
export interface CacheDeleteArgs {
  keys: string[];
}
export interface CacheInvalidateArgs {
  prefix: string;
}
export interface CacheFetchArgs {
  key: string;
  ttl_ms?: number;
  lease_ms?: number;
  wait_ms?: number;
  refresh_ahead_ms?: number;
}
/** `cache.fetch` on a miss, for the one caller that must compute and `cache.fill`. */
export interface CacheLease {
  lease: string;
}
/** A hit (an entry, possibly with a refresh `lease`) or a miss's `{lease}`. */
export type CacheFetchResult<T = Value> = CacheEntry<T> | CacheLease;
export interface CacheFillArgs {
  key: string;
  lease: string;
  value: Value;
  ttl_ms?: number;
}
export interface CacheWarmArgs {
  prefix: string;
}
export interface OkResult {
  ok: true;
}
export interface DeletedResult {
  deleted: number;
}
export interface LoadedResult {
  loaded: number;
}

/** True when a `cache.fetch` result is a hit (it has a `value`). */
export function isCacheHit<T>(r: CacheFetchResult<T>): r is CacheEntry<T> {
  return "value" in r;
}

// -- locks --------------------------------------------------------------------------------

export interface LockAcquireArgs {
  name: string;
  ttl_ms?: number;
  wait_ms?: number;
  renew?: boolean;
  /** Granted only once this many replicas hold the lock (Redis WAIT); an addition. */
  wait_replicas?: number;
}
export type LockAcquireResult =
  | { acquired: true; token: string; fence: Int64; ttl_ms: number }
  | { acquired: false; ttl_ms: number };
export interface LockReleaseArgs {
  name: string;
  token: string;
}
export interface LockReleaseResult {
  released: boolean;
}
export interface LockExtendArgs {
  name: string;
  token: string;
  ttl_ms: number;
}
export interface LockExtendResult {
  extended: boolean;
  ttl_ms: number;
}
export interface LockInspectArgs {
  name: string;
}
export interface LockInspectResult {
  held: boolean;
  ttl_ms: number;
  fence: Int64;
}

// -- sessions -----------------------------------------------------------------------------

export interface SessionCreateArgs {
  user_id: string;
  data?: Value;
  idle_ttl_ms?: number;
  absolute_ttl_ms?: number;
}
export interface SessionCreateResult {
  token: string;
  session_id: string;
  expires_at_ms: Int64;
}
export interface SessionGetArgs {
  token: string;
  touch?: boolean;
}
export interface Session<D = Value> {
  session_id: string;
  user_id: string;
  data: D;
  created_at_ms: Int64;
  last_seen_ms: Int64;
  expires_at_ms: Int64;
}
export interface SessionUpdateArgs {
  token: string;
  data: Value;
}
export interface SessionUpdateResult {
  updated: boolean;
}
export interface SessionRotateArgs {
  token: string;
}
export interface SessionRotateResult {
  token: string;
}
/** Exactly one of `token` and `session_id`. */
export type SessionRevokeArgs = { token: string; session_id?: undefined } | { session_id: string; token?: undefined };
export interface SessionRevokeResult {
  revoked: boolean;
}
export interface SessionRevokeUserArgs {
  user_id: string;
  except_session_id?: string;
}
export interface SessionRevokeUserResult {
  revoked: number;
}
export interface SessionListArgs {
  user_id: string;
}
export interface SessionSummary<D = Value> {
  session_id: string;
  created_at_ms: Int64;
  last_seen_ms: Int64;
  expires_at_ms: Int64;
  data: D;
}

// -- presence -----------------------------------------------------------------------------

export interface PresenceEntry<M = Value> {
  ref: string;
  meta: M;
  node_id: string;
  online_at_ms: Int64;
}
/** key -> that key's entries (one per tracking connection). */
export type PresenceMembers<M = Value> = Record<string, PresenceEntry<M>[]>;

export interface PresenceTrackArgs {
  channel: string;
  key: string;
  meta?: Value;
}
export interface PresenceTrackResult {
  ref: string;
}
export interface PresenceUpdateArgs {
  channel: string;
  ref: string;
  meta: Value;
}
export interface PresenceUpdateResult {
  updated: boolean;
}
export interface PresenceUntrackArgs {
  channel: string;
  ref: string;
}
export interface PresenceUntrackResult {
  removed: boolean;
}
export interface PresenceChannelArgs {
  channel: string;
}
export interface PresenceListResult {
  members: PresenceMembers;
}
export interface PresenceCountResult {
  keys: number;
  refs: number;
}
export interface PresenceSubscribeResult {
  members: PresenceMembers;
  version: number;
}

// -- pub/sub ------------------------------------------------------------------------------

export interface PubsubPublishArgs {
  channel: string;
  message: Value;
}
export interface PubsubPublishResult {
  /** Nodes subscribed to the channel (not end subscribers). */
  receivers: number;
}
export interface PubsubChannelArgs {
  channel: string;
}

// -- rate limits --------------------------------------------------------------------------

export type RatelimitAlgorithm = "sliding_window" | "sliding_counter" | "gcra";
export type OnRedisDown = "allow" | "deny" | "local";

/** An ad-hoc check: `limit` units per `window_ms`. */
export interface RatelimitAdhoc {
  key: string;
  limit: number;
  window_ms: number;
  algorithm?: RatelimitAlgorithm | (string & {});
  on_redis_down?: OnRedisDown | (string & {});
  rule?: undefined;
}
/** A check by a rule from the sidecar's configuration. */
export interface RatelimitByRule {
  key: string;
  rule: string;
  limit?: undefined;
  window_ms?: undefined;
  algorithm?: undefined;
  on_redis_down?: undefined;
}
export type RatelimitHitArgs = (RatelimitAdhoc | RatelimitByRule) & { cost?: number };
export type RatelimitPeekArgs = RatelimitAdhoc | RatelimitByRule;
export interface RatelimitHitManyArgs {
  checks: RatelimitHitArgs[];
}
export interface RatelimitResult {
  allowed: boolean;
  limit: number;
  remaining: number;
  reset_ms: number;
  retry_after_ms: number;
  /** Redis did not answer in time; `on_redis_down` decided. */
  degraded?: boolean;
  /** A shadow rule: `allowed` is always true, `would_deny` says what enforcing would do. */
  shadow?: boolean;
  would_deny?: boolean;
  /** In `hit_many`: false for a check not evaluated (another was known to deny). */
  evaluated?: boolean;
}
export interface RatelimitHitManyResult {
  allowed: boolean;
  results: RatelimitResult[];
}
export interface RatelimitResetArgs {
  key: string;
  rule?: string;
}

// -- notifications ------------------------------------------------------------------------

export interface LockLost {
  name: string;
  token: string;
  fence: Int64;
}
export interface PresenceDiff {
  channel: string;
  version: number;
  joins: PresenceMembers;
  leaves: PresenceMembers;
}
export interface PresenceState {
  channel: string;
  version: number;
  members: PresenceMembers;
}
export interface PubsubMessage<T = Value> {
  channel: string;
  message: T;
}
export interface PubsubDropped {
  channel: string;
  dropped: number;
}
export interface Shutdown {
  deadline_ms: number;
}
/** The `error` notification: an error map that could not be tied to a msgid. */
export interface ErrorNotification {
  code: string;
  message: string;
  [field: string]: unknown;
}
/** Sent by this client itself (not the sidecar) when its connection is lost. */
export interface ConnectionLost {
  /** Why: the socket error, a protocol violation, or the sidecar closing. */
  error: Error;
  /** Whether the client is reconnecting (in the background, with backoff). */
  reconnecting: boolean;
}

/** Payload types of the notifications this SDK knows, by name. */
export interface NotificationPayloads {
  "lock.lost": LockLost;
  "presence.diff": PresenceDiff;
  "presence.state": PresenceState;
  "pubsub.message": PubsubMessage;
  "pubsub.dropped": PubsubDropped;
  shutdown: Shutdown;
  error: ErrorNotification;
}
export type KnownNotificationName = keyof NotificationPayloads;
export const KNOWN_NOTIFICATIONS: readonly KnownNotificationName[] = [
  "lock.lost",
  "presence.diff",
  "presence.state",
  "pubsub.message",
  "pubsub.dropped",
  "shutdown",
  "error",
];

/**
 * A notification as the async iterator yields it: the known ones typed by name, and
 * `connection.lost` from the client itself. Unknown names (a newer sidecar's) are left
 * out of the iterator; the `notification` event still sees them.
 */
export type Notification =
  | { [N in KnownNotificationName]: { name: N; payload: NotificationPayloads[N] } }[KnownNotificationName]
  | { name: "connection.lost"; payload: ConnectionLost };
