//! Typed requests and results for every method the sidecar serves.
//!
//! Each request struct's fields are the method's arguments, in the protocol's canonical
//! order, named as in the protocol. Optional arguments are `Option`s and are left out of
//! the request when `None`, so the sidecar applies its default. Required ones can be
//! given through `new`; the rest with struct update syntax:
//!
//! ```
//! use madsidecar_client::LockAcquire;
//! let req = LockAcquire { ttl_ms: Some(30_000), ..LockAcquire::new("jobs") };
//! # let _ = req;
//! ```
//!
//! Values the protocol leaves open (cache values, session `data`, presence `meta`, pub/sub
//! `message`) are [`rmpv::Value`]s: they round-trip exactly (bin stays bin, every 64-bit
//! int stays exact, floats stay floats). Results ignore fields they do not know.

use std::collections::BTreeMap;

use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// A typed request: its method name, arguments (the struct's fields) and result type.
pub trait Request: Serialize {
    /// The protocol's method name, such as `"lock.acquire"`.
    const METHOD: &'static str;
    /// What a successful call returns.
    type Response: DeserializeOwned;
    /// How long the sidecar may wait on purpose before it answers (`wait_ms`, with its
    /// default); the client adds it to the call's timeout.
    fn server_wait_ms(&self) -> u64 {
        0
    }
}

pub(crate) fn nil() -> Value {
    Value::Nil
}

fn is_false(b: &bool) -> bool {
    !*b
}

macro_rules! request {
    ($ty:ty, $method:literal, $resp:ty) => {
        impl Request for $ty {
            const METHOD: &'static str = $method;
            type Response = $resp;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Connection methods
// ---------------------------------------------------------------------------------------

/// `hello {client?, version?, namespace?}`: introduce the client and select a namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
request!(Hello, "hello", HelloResult);

/// The result of `hello`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HelloResult {
    pub server: String,
    pub version: String,
    pub protocol: u64,
    pub node_id: String,
    pub namespace: String,
    pub max_frame_bytes: u64,
    #[serde(default)]
    pub methods: Vec<String>,
}

/// `ping {}` → `"pong"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {}
request!(Ping, "ping", String);

/// `stats {}` → counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {}
request!(Stats, "stats", StatsResult);

/// The result of `stats`: the contract's counters, typed, and the whole map in `raw`
/// (the sidecar adds many more counters; see docs/protocol.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct StatsResult {
    pub uptime_ms: u64,
    pub connections: u64,
    pub requests: u64,
    pub redis: RedisStats,
    pub cache: CacheStats,
    pub locks: LockStats,
    pub presence: PresenceStats,
    /// The whole result map, additions included.
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Deserialize)]
struct StatsFields {
    uptime_ms: u64,
    connections: u64,
    requests: u64,
    #[serde(default)]
    redis: RedisStats,
    #[serde(default)]
    cache: CacheStats,
    #[serde(default)]
    locks: LockStats,
    #[serde(default)]
    presence: PresenceStats,
}

impl TryFrom<Value> for StatsResult {
    type Error = rmpv::ext::Error;
    fn try_from(raw: Value) -> Result<Self, Self::Error> {
        let f: StatsFields = rmpv::ext::from_value(raw.clone())?;
        Ok(StatsResult {
            uptime_ms: f.uptime_ms,
            connections: f.connections,
            requests: f.requests,
            redis: f.redis,
            cache: f.cache,
            locks: f.locks,
            presence: f.presence,
            raw,
        })
    }
}

/// `stats.redis`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisStats {
    pub connected: bool,
    /// Nil until the first health probe after each (re)connection.
    pub latency_ms: Option<u64>,
}

/// `stats.cache`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    pub l1_hits: u64,
    pub l2_hits: u64,
    pub misses: u64,
    pub l1_entries: u64,
    pub l1_bytes: u64,
}

/// `stats.locks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStats {
    pub held: u64,
}

/// `stats.presence`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStats {
    pub tracked: u64,
}

/// `health {}` *(addition)*: a Redis round trip through the sidecar.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {}
request!(Health, "health", HealthResult);

/// The result of `health`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    pub ok: bool,
    pub redis_latency_ms: u64,
    pub redis_latency_us: u64,
}

/// `{ok: true}`, the result of several methods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkResult {
    pub ok: bool,
}

// ---------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------

/// A cache entry: what a read returns for a key that has a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The value exactly as stored (`Value::Nil` for a stored nil).
    #[serde(default = "crate::types::nil")]
    pub value: Value,
    /// `"l1"` (this sidecar's memory) or `"l2"` (Redis).
    pub source: String,
    /// Remaining lifetime in Redis; `None` if the key has no TTL.
    pub ttl_ms: Option<u64>,
    /// Served from L1 while Redis is down and the entry could not be proven fresh.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stale: bool,
    /// Only from `cache.fetch` with `refresh_ahead_ms`: recompute and `cache.fill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// `cache.get {key}` → `None` on a miss.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheGet {
    pub key: String,
}
request!(CacheGet, "cache.get", Option<CacheEntry>);

impl CacheGet {
    pub fn new(key: impl Into<String>) -> Self {
        CacheGet { key: key.into() }
    }
}

/// `cache.mget {keys}` → one `None`-or-entry per key, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheMget {
    pub keys: Vec<String>,
}
request!(CacheMget, "cache.mget", Vec<Option<CacheEntry>>);

impl CacheMget {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        CacheMget {
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }
}

/// `cache.set {key, value, ttl_ms?}` → `{ok: true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSet {
    pub key: String,
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}
request!(CacheSet, "cache.set", OkResult);

impl CacheSet {
    pub fn new(key: impl Into<String>, value: impl Into<Value>) -> Self {
        CacheSet {
            key: key.into(),
            value: value.into(),
            ttl_ms: None,
        }
    }
}

/// `cache.delete {keys}` → `{deleted}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDelete {
    pub keys: Vec<String>,
}
request!(CacheDelete, "cache.delete", DeletedResult);

impl CacheDelete {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        CacheDelete {
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }
}

/// `{deleted: int}`: the result of `cache.delete` and `cache.invalidate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedResult {
    pub deleted: u64,
}

/// `cache.invalidate {prefix}` → `{deleted}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheInvalidate {
    pub prefix: String,
}
request!(CacheInvalidate, "cache.invalidate", DeletedResult);

impl CacheInvalidate {
    pub fn new(prefix: impl Into<String>) -> Self {
        CacheInvalidate {
            prefix: prefix.into(),
        }
    }
}

/// `cache.fetch {key, ttl_ms?, lease_ms?, wait_ms?, refresh_ahead_ms?}`: a read that lets
/// exactly one caller fleet-wide compute a missing value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFetch {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Default 5000: the client's timeout for the call is extended by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_ahead_ms: Option<u64>,
}

impl Request for CacheFetch {
    const METHOD: &'static str = "cache.fetch";
    type Response = CacheFetchResult;
    fn server_wait_ms(&self) -> u64 {
        self.wait_ms.unwrap_or(5000)
    }
}

impl CacheFetch {
    pub fn new(key: impl Into<String>) -> Self {
        CacheFetch {
            key: key.into(),
            ..Default::default()
        }
    }
}

/// The result of `cache.fetch`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CacheFetchResult {
    /// A hit. With `refresh_ahead_ms`, `entry.lease` may hold a refresh lease.
    Hit(CacheEntry),
    /// A miss, and this caller holds the lease: compute the value and `cache.fill` it.
    Lease { lease: String },
}

impl<'de> Deserialize<'de> for CacheFetchResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default = "crate::types::nil")]
            value: Value,
            source: Option<String>,
            ttl_ms: Option<u64>,
            #[serde(default)]
            stale: bool,
            lease: Option<String>,
        }
        let raw = Raw::deserialize(deserializer)?;
        match (raw.source, raw.lease) {
            (Some(source), lease) => Ok(CacheFetchResult::Hit(CacheEntry {
                value: raw.value,
                source,
                ttl_ms: raw.ttl_ms,
                stale: raw.stale,
                lease,
            })),
            (None, Some(lease)) => Ok(CacheFetchResult::Lease { lease }),
            (None, None) => Err(serde::de::Error::custom(
                "cache.fetch result has neither source nor lease",
            )),
        }
    }
}

impl CacheFetchResult {
    /// The lease this caller holds (a miss, or a refresh-ahead hit), if any.
    pub fn lease(&self) -> Option<&str> {
        match self {
            CacheFetchResult::Hit(entry) => entry.lease.as_deref(),
            CacheFetchResult::Lease { lease } => Some(lease),
        }
    }

    /// The entry, on a hit.
    pub fn entry(&self) -> Option<&CacheEntry> {
        match self {
            CacheFetchResult::Hit(entry) => Some(entry),
            CacheFetchResult::Lease { .. } => None,
        }
    }
}

/// `cache.fill {key, lease, value, ttl_ms?}` → `{ok: true}`, or [`Error::NotHeld`](crate::Error::NotHeld).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFill {
    pub key: String,
    pub lease: String,
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}
request!(CacheFill, "cache.fill", OkResult);

impl CacheFill {
    pub fn new(key: impl Into<String>, lease: impl Into<String>, value: impl Into<Value>) -> Self {
        CacheFill {
            key: key.into(),
            lease: lease.into(),
            value: value.into(),
            ttl_ms: None,
        }
    }
}

/// `cache.warm {prefix}` *(addition)* → `{loaded}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheWarm {
    pub prefix: String,
}
request!(CacheWarm, "cache.warm", CacheWarmResult);

impl CacheWarm {
    pub fn new(prefix: impl Into<String>) -> Self {
        CacheWarm {
            prefix: prefix.into(),
        }
    }
}

/// The result of `cache.warm`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheWarmResult {
    pub loaded: u64,
}

// ---------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------

/// `lock.acquire {name, ttl_ms?=30000, wait_ms?=0, renew?=true, wait_replicas?=0}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockAcquire {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The client's timeout for the call is extended by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew: Option<bool>,
    /// Granted only once this many replicas hold the lock (Redis `WAIT`), so that a
    /// failover keeps it; too few in time is an `UNAVAILABLE` error (an addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_replicas: Option<u64>,
}

impl Request for LockAcquire {
    const METHOD: &'static str = "lock.acquire";
    type Response = LockAcquireResult;
    fn server_wait_ms(&self) -> u64 {
        self.wait_ms.unwrap_or(0)
    }
}

impl LockAcquire {
    pub fn new(name: impl Into<String>) -> Self {
        LockAcquire {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// The result of `lock.acquire`: `{acquired: true, token, fence, ttl_ms}` or
/// `{acquired: false, ttl_ms}` (the holder's remaining lease, 0 when unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockAcquireResult {
    pub acquired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Strictly greater than every fence issued before for the name, fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    pub ttl_ms: u64,
}

/// `lock.release {name, token}` → `{released}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRelease {
    pub name: String,
    pub token: String,
}
request!(LockRelease, "lock.release", LockReleaseResult);

impl LockRelease {
    pub fn new(name: impl Into<String>, token: impl Into<String>) -> Self {
        LockRelease {
            name: name.into(),
            token: token.into(),
        }
    }
}

/// The result of `lock.release`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReleaseResult {
    pub released: bool,
}

/// `lock.extend {name, token, ttl_ms}` → `{extended, ttl_ms}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockExtend {
    pub name: String,
    pub token: String,
    pub ttl_ms: u64,
}
request!(LockExtend, "lock.extend", LockExtendResult);

impl LockExtend {
    pub fn new(name: impl Into<String>, token: impl Into<String>, ttl_ms: u64) -> Self {
        LockExtend {
            name: name.into(),
            token: token.into(),
            ttl_ms,
        }
    }
}

/// The result of `lock.extend`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockExtendResult {
    pub extended: bool,
    pub ttl_ms: u64,
}

/// `lock.inspect {name}` → `{held, ttl_ms, fence}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInspect {
    pub name: String,
}
request!(LockInspect, "lock.inspect", LockInspectResult);

impl LockInspect {
    pub fn new(name: impl Into<String>) -> Self {
        LockInspect { name: name.into() }
    }
}

/// The result of `lock.inspect` (a snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInspectResult {
    pub held: bool,
    pub ttl_ms: u64,
    /// The last fence issued for the name, 0 if none ever was.
    pub fence: u64,
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

/// `session.create {user_id, data?={}, idle_ttl_ms?, absolute_ttl_ms?}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionCreate {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absolute_ttl_ms: Option<u64>,
}
request!(SessionCreate, "session.create", SessionCreateResult);

impl SessionCreate {
    pub fn new(user_id: impl Into<String>) -> Self {
        SessionCreate {
            user_id: user_id.into(),
            ..Default::default()
        }
    }
}

/// The result of `session.create`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCreateResult {
    /// The secret: at least 256 random bits, URL-safe.
    pub token: String,
    /// A separate, non-secret id.
    pub session_id: String,
    pub expires_at_ms: u64,
}

/// `session.get {token, touch?=true}` → `None` for an unknown, expired or revoked token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionGet {
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touch: Option<bool>,
}
request!(SessionGet, "session.get", Option<Session>);

impl SessionGet {
    pub fn new(token: impl Into<String>) -> Self {
        SessionGet {
            token: token.into(),
            touch: None,
        }
    }
}

/// A session, as `session.get` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub user_id: String,
    #[serde(default = "crate::types::nil")]
    pub data: Value,
    pub created_at_ms: u64,
    pub last_seen_ms: u64,
    pub expires_at_ms: u64,
}

/// `session.update {token, data}` → `{updated}` (replaces `data`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionUpdate {
    pub token: String,
    pub data: Value,
}
request!(SessionUpdate, "session.update", SessionUpdateResult);

impl SessionUpdate {
    pub fn new(token: impl Into<String>, data: impl Into<Value>) -> Self {
        SessionUpdate {
            token: token.into(),
            data: data.into(),
        }
    }
}

/// The result of `session.update`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUpdateResult {
    pub updated: bool,
}

/// `session.rotate {token}` → `None`, or the new token (the old one stops working).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRotate {
    pub token: String,
}
request!(SessionRotate, "session.rotate", Option<SessionRotateResult>);

impl SessionRotate {
    pub fn new(token: impl Into<String>) -> Self {
        SessionRotate {
            token: token.into(),
        }
    }
}

/// The result of `session.rotate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRotateResult {
    pub token: String,
}

/// `session.revoke {token}` or `session.revoke {session_id}` (exactly one) → `{revoked}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRevoke {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}
request!(SessionRevoke, "session.revoke", SessionRevokeResult);

impl SessionRevoke {
    /// Revoke by the session's token.
    pub fn token(token: impl Into<String>) -> Self {
        SessionRevoke {
            token: Some(token.into()),
            session_id: None,
        }
    }

    /// Revoke by the non-secret `session_id`.
    pub fn session_id(session_id: impl Into<String>) -> Self {
        SessionRevoke {
            token: None,
            session_id: Some(session_id.into()),
        }
    }
}

/// The result of `session.revoke`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRevokeResult {
    pub revoked: bool,
}

/// `session.revoke_user {user_id, except_session_id?}` → `{revoked: int}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRevokeUser {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except_session_id: Option<String>,
}
request!(
    SessionRevokeUser,
    "session.revoke_user",
    SessionRevokeUserResult
);

impl SessionRevokeUser {
    pub fn new(user_id: impl Into<String>) -> Self {
        SessionRevokeUser {
            user_id: user_id.into(),
            except_session_id: None,
        }
    }
}

/// The result of `session.revoke_user`: how many live sessions it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRevokeUserResult {
    pub revoked: u64,
}

/// `session.list {user_id}` → the user's live sessions, soonest expiry first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionList {
    pub user_id: String,
}
request!(SessionList, "session.list", Vec<SessionSummary>);

impl SessionList {
    pub fn new(user_id: impl Into<String>) -> Self {
        SessionList {
            user_id: user_id.into(),
        }
    }
}

/// One session in `session.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub created_at_ms: u64,
    pub last_seen_ms: u64,
    pub expires_at_ms: u64,
    #[serde(default = "crate::types::nil")]
    pub data: Value,
}

// ---------------------------------------------------------------------------------------
// Pub/sub
// ---------------------------------------------------------------------------------------

/// `pubsub.publish {channel, message}` → `{receivers}` (nodes, not end subscribers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubPublish {
    pub channel: String,
    pub message: Value,
}
request!(PubsubPublish, "pubsub.publish", PubsubPublishResult);

impl PubsubPublish {
    pub fn new(channel: impl Into<String>, message: impl Into<Value>) -> Self {
        PubsubPublish {
            channel: channel.into(),
            message: message.into(),
        }
    }
}

/// The result of `pubsub.publish`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubsubPublishResult {
    pub receivers: u64,
}

/// `pubsub.subscribe {channel}` → `{ok: true}`, then `pubsub.message` notifications.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSubscribe {
    pub channel: String,
}
request!(PubsubSubscribe, "pubsub.subscribe", OkResult);

impl PubsubSubscribe {
    pub fn new(channel: impl Into<String>) -> Self {
        PubsubSubscribe {
            channel: channel.into(),
        }
    }
}

/// `pubsub.unsubscribe {channel}` → `{ok: true}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubUnsubscribe {
    pub channel: String,
}
request!(PubsubUnsubscribe, "pubsub.unsubscribe", OkResult);

impl PubsubUnsubscribe {
    pub fn new(channel: impl Into<String>) -> Self {
        PubsubUnsubscribe {
            channel: channel.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------

/// One presence entry: one connection tracking one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub r#ref: String,
    #[serde(default = "crate::types::nil")]
    pub meta: Value,
    pub node_id: String,
    pub online_at_ms: u64,
}

/// `presence.track {channel, key, meta?={}}` → `{ref}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceTrack {
    pub channel: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}
request!(PresenceTrack, "presence.track", PresenceTrackResult);

impl PresenceTrack {
    pub fn new(channel: impl Into<String>, key: impl Into<String>) -> Self {
        PresenceTrack {
            channel: channel.into(),
            key: key.into(),
            meta: None,
        }
    }
}

/// The result of `presence.track`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceTrackResult {
    pub r#ref: String,
}

/// `presence.update {channel, ref, meta}` → `{updated}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceUpdate {
    pub channel: String,
    pub r#ref: String,
    pub meta: Value,
}
request!(PresenceUpdate, "presence.update", PresenceUpdateResult);

impl PresenceUpdate {
    pub fn new(
        channel: impl Into<String>,
        r#ref: impl Into<String>,
        meta: impl Into<Value>,
    ) -> Self {
        PresenceUpdate {
            channel: channel.into(),
            r#ref: r#ref.into(),
            meta: meta.into(),
        }
    }
}

/// The result of `presence.update`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUpdateResult {
    pub updated: bool,
}

/// `presence.untrack {channel, ref}` → `{removed}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceUntrack {
    pub channel: String,
    pub r#ref: String,
}
request!(PresenceUntrack, "presence.untrack", PresenceUntrackResult);

impl PresenceUntrack {
    pub fn new(channel: impl Into<String>, r#ref: impl Into<String>) -> Self {
        PresenceUntrack {
            channel: channel.into(),
            r#ref: r#ref.into(),
        }
    }
}

/// The result of `presence.untrack`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUntrackResult {
    pub removed: bool,
}

/// `presence.list {channel}` → `{members: {key: [entry]}}`, across every node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceList {
    pub channel: String,
}
request!(PresenceList, "presence.list", PresenceListResult);

impl PresenceList {
    pub fn new(channel: impl Into<String>) -> Self {
        PresenceList {
            channel: channel.into(),
        }
    }
}

/// The result of `presence.list`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceListResult {
    #[serde(default)]
    pub members: BTreeMap<String, Vec<PresenceEntry>>,
}

/// `presence.count {channel}` → `{keys, refs}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceCount {
    pub channel: String,
}
request!(PresenceCount, "presence.count", PresenceCountResult);

impl PresenceCount {
    pub fn new(channel: impl Into<String>) -> Self {
        PresenceCount {
            channel: channel.into(),
        }
    }
}

/// The result of `presence.count`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceCountResult {
    pub keys: u64,
    pub refs: u64,
}

/// `presence.subscribe {channel}` → `{members, version}`, then `presence.diff`s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSubscribe {
    pub channel: String,
}
request!(
    PresenceSubscribe,
    "presence.subscribe",
    PresenceSubscribeResult
);

impl PresenceSubscribe {
    pub fn new(channel: impl Into<String>) -> Self {
        PresenceSubscribe {
            channel: channel.into(),
        }
    }
}

/// The result of `presence.subscribe`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceSubscribeResult {
    #[serde(default)]
    pub members: BTreeMap<String, Vec<PresenceEntry>>,
    pub version: u64,
}

/// `presence.unsubscribe {channel}` → `{ok: true}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceUnsubscribe {
    pub channel: String,
}
request!(PresenceUnsubscribe, "presence.unsubscribe", OkResult);

impl PresenceUnsubscribe {
    pub fn new(channel: impl Into<String>) -> Self {
        PresenceUnsubscribe {
            channel: channel.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------

/// `ratelimit.hit`: ad hoc `{key, limit, window_ms, algorithm?, on_redis_down?, cost?}`
/// ([`RatelimitHit::new`]) or by rule `{key, rule, cost?}` ([`RatelimitHit::rule`]).
/// Also the shape of one check of `ratelimit.hit_many`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatelimitHit {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// `"sliding_window"` (default), `"sliding_counter"` or `"gcra"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `"allow"` (default), `"deny"` or `"local"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_redis_down: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
}
request!(RatelimitHit, "ratelimit.hit", RatelimitResult);

impl RatelimitHit {
    /// An ad hoc check: at most `limit` units per `window_ms`.
    pub fn new(key: impl Into<String>, limit: u64, window_ms: u64) -> Self {
        RatelimitHit {
            key: key.into(),
            limit: Some(limit),
            window_ms: Some(window_ms),
            ..Default::default()
        }
    }

    /// A check against a rule of the sidecar's configuration.
    pub fn rule(rule: impl Into<String>, key: impl Into<String>) -> Self {
        RatelimitHit {
            key: key.into(),
            rule: Some(rule.into()),
            ..Default::default()
        }
    }
}

/// One check of `ratelimit.hit_many`: `ratelimit.hit`'s arguments.
pub type RatelimitCheck = RatelimitHit;

/// The result of a rate-limit check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatelimitResult {
    pub allowed: bool,
    pub limit: u64,
    /// Units available after this call; `-1` for a `hit_many` check not evaluated.
    pub remaining: i64,
    pub reset_ms: u64,
    /// 0 when allowed, else when the same hit would next be allowed.
    pub retry_after_ms: u64,
    /// Decided by `on_redis_down` because Redis did not answer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub degraded: bool,
    /// A shadow rule: `allowed` is always true, `would_deny` tells.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shadow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_deny: Option<bool>,
    /// `Some(false)` for a `hit_many` check skipped because another one denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated: Option<bool>,
}

/// `ratelimit.hit_many {checks}` → all checks consume, or none does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatelimitHitMany {
    pub checks: Vec<RatelimitCheck>,
}
request!(
    RatelimitHitMany,
    "ratelimit.hit_many",
    RatelimitHitManyResult
);

impl RatelimitHitMany {
    pub fn new(checks: impl IntoIterator<Item = RatelimitCheck>) -> Self {
        RatelimitHitMany {
            checks: checks.into_iter().collect(),
        }
    }
}

/// The result of `ratelimit.hit_many`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatelimitHitManyResult {
    pub allowed: bool,
    pub results: Vec<RatelimitResult>,
}

/// `ratelimit.peek`: `hit`'s arguments without `cost`; consumes nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatelimitPeek {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_redis_down: Option<String>,
}
request!(RatelimitPeek, "ratelimit.peek", RatelimitResult);

impl RatelimitPeek {
    pub fn new(key: impl Into<String>, limit: u64, window_ms: u64) -> Self {
        RatelimitPeek {
            key: key.into(),
            limit: Some(limit),
            window_ms: Some(window_ms),
            ..Default::default()
        }
    }

    pub fn rule(rule: impl Into<String>, key: impl Into<String>) -> Self {
        RatelimitPeek {
            key: key.into(),
            rule: Some(rule.into()),
            ..Default::default()
        }
    }
}

/// `ratelimit.reset {key, rule?}` → `{ok: true}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatelimitReset {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}
request!(RatelimitReset, "ratelimit.reset", OkResult);

impl RatelimitReset {
    pub fn new(key: impl Into<String>) -> Self {
        RatelimitReset {
            key: key.into(),
            rule: None,
        }
    }
}
