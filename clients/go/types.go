package madsidecar

import "time"

// Request and result types of every method of protocol v1 (docs/protocol.md, sections
// 12 and 13). Request fields are in the method's canonical argument order; optional
// arguments carry `omitempty`, and pointer fields are used where zero is a valid value
// distinct from "not given" (Int64 and Bool make them). Result types ignore fields
// this SDK does not know. Integers are int64 (fences, *_at_ms and counters never lose
// precision); values (cache values, session data, presence meta, pub/sub messages) are
// `any`, decoded without loss (see DecodeValue).

// Int64 returns a pointer to n, for optional arguments such as WaitMs.
func Int64(n int64) *int64 { return &n }

// Bool returns a pointer to b, for optional arguments such as Renew.
func Bool(b bool) *bool { return &b }

func msDuration(p *int64, dflt int64) time.Duration {
	n := dflt
	if p != nil {
		n = *p
	}
	return time.Duration(n) * time.Millisecond
}

// OKResult is the {ok: true} result.
type OKResult struct {
	OK bool `msgpack:"ok"`
}

// ---- connection -----------------------------------------------------------------

// HelloRequest is the arguments of hello.
type HelloRequest struct {
	Client    string `msgpack:"client,omitempty"`
	Version   any    `msgpack:"version,omitempty"`
	Namespace string `msgpack:"namespace,omitempty"`
}

// HelloResult is the result of hello.
type HelloResult struct {
	Server        string   `msgpack:"server"`
	Version       string   `msgpack:"version"`
	Protocol      int64    `msgpack:"protocol"`
	NodeID        string   `msgpack:"node_id"`
	Namespace     string   `msgpack:"namespace"`
	MaxFrameBytes int64    `msgpack:"max_frame_bytes"`
	Methods       []string `msgpack:"methods"`
}

// StatsResult is the result of stats: the contract's counters and the sidecar's
// additions known today, typed; Raw holds the whole map (with counters added later).
type StatsResult struct {
	UptimeMs    int64          `msgpack:"uptime_ms"`
	Connections int64          `msgpack:"connections"`
	Requests    int64          `msgpack:"requests"`
	NodeID      string         `msgpack:"node_id"`
	Version     string         `msgpack:"version"`
	Compiled    bool           `msgpack:"compiled"`
	Redis       StatsRedis     `msgpack:"redis"`
	Cache       StatsCache     `msgpack:"cache"`
	Locks       StatsLocks     `msgpack:"locks"`
	Sessions    StatsSessions  `msgpack:"sessions"`
	Presence    StatsPresence  `msgpack:"presence"`
	PubSub      StatsPubSub    `msgpack:"pubsub"`
	RateLimit   StatsRateLimit `msgpack:"ratelimit"`
	Raw         map[string]any `msgpack:"-"`
}

// StatsRedis is stats' redis section. LatencyMs and LatencyUs are nil until the first
// probe after each (re)connection.
type StatsRedis struct {
	Connected bool    `msgpack:"connected"`
	LatencyMs *int64  `msgpack:"latency_ms"`
	LatencyUs *int64  `msgpack:"latency_us"`
	Embedded  bool    `msgpack:"embedded"`
	LastError *string `msgpack:"last_error"`
	Commands  int64   `msgpack:"commands"`
	Pipelines int64   `msgpack:"pipelines"`
}

// StatsCache is stats' cache section.
type StatsCache struct {
	L1Hits        int64 `msgpack:"l1_hits"`
	L2Hits        int64 `msgpack:"l2_hits"`
	Misses        int64 `msgpack:"misses"`
	L1Entries     int64 `msgpack:"l1_entries"`
	L1Bytes       int64 `msgpack:"l1_bytes"`
	Evictions     int64 `msgpack:"evictions"`
	Invalidations int64 `msgpack:"invalidations"`
	Flushes       int64 `msgpack:"flushes"`
	LeasesGranted int64 `msgpack:"leases_granted"`
	LeaseWaiters  int64 `msgpack:"lease_waiters"`
	Fills         int64 `msgpack:"fills"`
	StaleServed   int64 `msgpack:"stale_served"`
	Undecodable   int64 `msgpack:"undecodable"`
	FeedLive      bool  `msgpack:"feed_live"`
}

// StatsLocks is stats' locks section.
type StatsLocks struct {
	Held           int64 `msgpack:"held"`
	Waiting        int64 `msgpack:"waiting"`
	Acquired       int64 `msgpack:"acquired"`
	Released       int64 `msgpack:"released"`
	Lost           int64 `msgpack:"lost"`
	Timeouts       int64 `msgpack:"timeouts"`
	RedlockMasters int64 `msgpack:"redlock_masters"`
}

// StatsSessions is stats' sessions section.
type StatsSessions struct {
	L1Hits        int64 `msgpack:"l1_hits"`
	Reads         int64 `msgpack:"reads"`
	L1Entries     int64 `msgpack:"l1_entries"`
	Created       int64 `msgpack:"created"`
	Revoked       int64 `msgpack:"revoked"`
	Invalidations int64 `msgpack:"invalidations"`
}

// StatsPresence is stats' presence section.
type StatsPresence struct {
	Tracked         int64 `msgpack:"tracked"`
	ChannelsWatched int64 `msgpack:"channels_watched"`
	Subscribers     int64 `msgpack:"subscribers"`
	Heartbeats      int64 `msgpack:"heartbeats"`
}

// StatsPubSub is stats' pubsub section.
type StatsPubSub struct {
	Channels      int64 `msgpack:"channels"`
	Subscriptions int64 `msgpack:"subscriptions"`
	Published     int64 `msgpack:"published"`
	Received      int64 `msgpack:"received"`
	Delivered     int64 `msgpack:"delivered"`
	Dropped       int64 `msgpack:"dropped"`
}

// StatsRateLimit is stats' ratelimit section.
type StatsRateLimit struct {
	Checks            int64 `msgpack:"checks"`
	Allowed           int64 `msgpack:"allowed"`
	Denied            int64 `msgpack:"denied"`
	DeniedLocally     int64 `msgpack:"denied_locally"`
	ShadowDenied      int64 `msgpack:"shadow_denied"`
	Degraded          int64 `msgpack:"degraded"`
	RedisTimeouts     int64 `msgpack:"redis_timeouts"`
	RememberedDenials int64 `msgpack:"remembered_denials"`
	LocalKeys         int64 `msgpack:"local_keys"`
	Rules             int64 `msgpack:"rules"`
}

// HealthResult is the result of health.
type HealthResult struct {
	OK             bool  `msgpack:"ok"`
	RedisLatencyMs int64 `msgpack:"redis_latency_ms"`
	RedisLatencyUs int64 `msgpack:"redis_latency_us"`
}

// ---- cache ----------------------------------------------------------------------

// CacheEntry is what a cache read returns for a key that has a value. A stored nil
// is an entry with a nil Value (a miss is a nil *CacheEntry).
type CacheEntry struct {
	Value  any    `msgpack:"value"`
	Source string `msgpack:"source"` // "l1" or "l2"
	// TTLMs is the remaining lifetime in Redis; nil if the key has no TTL.
	TTLMs *int64 `msgpack:"ttl_ms"`
	// Stale: answered from L1 while Redis is down, past its freshness.
	Stale bool `msgpack:"stale"`
	// Lease: cache.fetch with refresh_ahead_ms: recompute and cache.fill.
	Lease string `msgpack:"lease"`
}

// CacheGetRequest is the arguments of cache.get.
type CacheGetRequest struct {
	Key string `msgpack:"key"`
}

// CacheMGetRequest is the arguments of cache.mget.
type CacheMGetRequest struct {
	Keys []string `msgpack:"keys"`
}

// CacheSetRequest is the arguments of cache.set. Value nil stores nil.
type CacheSetRequest struct {
	Key   string `msgpack:"key"`
	Value any    `msgpack:"value"`
	TTLMs int64  `msgpack:"ttl_ms,omitempty"`
}

// CacheDeleteRequest is the arguments of cache.delete.
type CacheDeleteRequest struct {
	Keys []string `msgpack:"keys"`
}

// DeletedResult is the result of cache.delete and cache.invalidate.
type DeletedResult struct {
	Deleted int64 `msgpack:"deleted"`
}

// CacheInvalidateRequest is the arguments of cache.invalidate ("" is the whole
// namespace).
type CacheInvalidateRequest struct {
	Prefix string `msgpack:"prefix"`
}

// CacheFetchRequest is the arguments of cache.fetch.
type CacheFetchRequest struct {
	Key            string `msgpack:"key"`
	TTLMs          int64  `msgpack:"ttl_ms,omitempty"`
	LeaseMs        int64  `msgpack:"lease_ms,omitempty"`
	WaitMs         *int64 `msgpack:"wait_ms,omitempty"`
	RefreshAheadMs *int64 `msgpack:"refresh_ahead_ms,omitempty"`
}

func (r CacheFetchRequest) waitTime() time.Duration { return msDuration(r.WaitMs, 5000) }

// CacheFetchResult is the result of cache.fetch: a hit (Source set, Value the value;
// Lease also set when this caller should refresh it), or a miss whose lease this
// caller holds (only Lease set): compute the value and cache.fill it.
type CacheFetchResult struct {
	Value  any    `msgpack:"value"`
	Source string `msgpack:"source"`
	TTLMs  *int64 `msgpack:"ttl_ms"`
	Stale  bool   `msgpack:"stale"`
	Lease  string `msgpack:"lease"`
}

// Hit reports whether the result carries a value.
func (r *CacheFetchResult) Hit() bool { return r.Source != "" }

// CacheFillRequest is the arguments of cache.fill.
type CacheFillRequest struct {
	Key   string `msgpack:"key"`
	Lease string `msgpack:"lease"`
	Value any    `msgpack:"value"`
	TTLMs int64  `msgpack:"ttl_ms,omitempty"`
}

// CacheWarmRequest is the arguments of cache.warm.
type CacheWarmRequest struct {
	Prefix string `msgpack:"prefix"`
}

// CacheWarmResult is the result of cache.warm.
type CacheWarmResult struct {
	Loaded int64 `msgpack:"loaded"`
}

// ---- locks ----------------------------------------------------------------------

// LockAcquireRequest is the arguments of lock.acquire.
type LockAcquireRequest struct {
	Name   string `msgpack:"name"`
	TTLMs  int64  `msgpack:"ttl_ms,omitempty"`
	WaitMs *int64 `msgpack:"wait_ms,omitempty"`
	Renew  *bool  `msgpack:"renew,omitempty"`
	// WaitReplicas: granted only once this many replicas hold the lock (Redis WAIT), so
	// that a failover keeps it; too few in time is an UNAVAILABLE error (an addition).
	WaitReplicas int64 `msgpack:"wait_replicas,omitempty"`
}

func (r LockAcquireRequest) waitTime() time.Duration { return msDuration(r.WaitMs, 0) }

// LockAcquireResult is the result of lock.acquire. When Acquired is false, TTLMs is
// the holder's remaining lease (0 when unknown).
type LockAcquireResult struct {
	Acquired bool   `msgpack:"acquired"`
	Token    string `msgpack:"token"`
	Fence    int64  `msgpack:"fence"`
	TTLMs    int64  `msgpack:"ttl_ms"`
}

// LockReleaseRequest is the arguments of lock.release.
type LockReleaseRequest struct {
	Name  string `msgpack:"name"`
	Token string `msgpack:"token"`
}

// LockReleaseResult is the result of lock.release.
type LockReleaseResult struct {
	Released bool `msgpack:"released"`
}

// LockExtendRequest is the arguments of lock.extend.
type LockExtendRequest struct {
	Name  string `msgpack:"name"`
	Token string `msgpack:"token"`
	TTLMs int64  `msgpack:"ttl_ms"`
}

// LockExtendResult is the result of lock.extend.
type LockExtendResult struct {
	Extended bool  `msgpack:"extended"`
	TTLMs    int64 `msgpack:"ttl_ms"`
}

// LockInspectRequest is the arguments of lock.inspect.
type LockInspectRequest struct {
	Name string `msgpack:"name"`
}

// LockInspectResult is the result of lock.inspect.
type LockInspectResult struct {
	Held  bool  `msgpack:"held"`
	TTLMs int64 `msgpack:"ttl_ms"`
	Fence int64 `msgpack:"fence"`
}

// ---- sessions -------------------------------------------------------------------

// SessionCreateRequest is the arguments of session.create.
type SessionCreateRequest struct {
	UserID        string `msgpack:"user_id"`
	Data          any    `msgpack:"data,omitempty"`
	IdleTTLMs     int64  `msgpack:"idle_ttl_ms,omitempty"`
	AbsoluteTTLMs int64  `msgpack:"absolute_ttl_ms,omitempty"`
}

// SessionCreateResult is the result of session.create.
type SessionCreateResult struct {
	Token       string `msgpack:"token"`
	SessionID   string `msgpack:"session_id"`
	ExpiresAtMs int64  `msgpack:"expires_at_ms"`
}

// SessionGetRequest is the arguments of session.get.
type SessionGetRequest struct {
	Token string `msgpack:"token"`
	Touch *bool  `msgpack:"touch,omitempty"`
}

// Session is the result of session.get (nil: unknown, expired or revoked token).
type Session struct {
	SessionID   string `msgpack:"session_id"`
	UserID      string `msgpack:"user_id"`
	Data        any    `msgpack:"data"`
	CreatedAtMs int64  `msgpack:"created_at_ms"`
	LastSeenMs  int64  `msgpack:"last_seen_ms"`
	ExpiresAtMs int64  `msgpack:"expires_at_ms"`
}

// SessionUpdateRequest is the arguments of session.update (Data replaces the data).
type SessionUpdateRequest struct {
	Token string `msgpack:"token"`
	Data  any    `msgpack:"data"`
}

// SessionUpdateResult is the result of session.update.
type SessionUpdateResult struct {
	Updated bool `msgpack:"updated"`
}

// SessionRotateRequest is the arguments of session.rotate.
type SessionRotateRequest struct {
	Token string `msgpack:"token"`
}

// SessionRotateResult is the result of session.rotate (nil: unknown token).
type SessionRotateResult struct {
	Token string `msgpack:"token"`
}

// SessionRevokeRequest is the arguments of session.revoke: exactly one of Token and
// SessionID.
type SessionRevokeRequest struct {
	Token     string `msgpack:"token,omitempty"`
	SessionID string `msgpack:"session_id,omitempty"`
}

// SessionRevokeResult is the result of session.revoke.
type SessionRevokeResult struct {
	Revoked bool `msgpack:"revoked"`
}

// SessionRevokeUserRequest is the arguments of session.revoke_user.
type SessionRevokeUserRequest struct {
	UserID          string `msgpack:"user_id"`
	ExceptSessionID string `msgpack:"except_session_id,omitempty"`
}

// SessionRevokeUserResult is the result of session.revoke_user.
type SessionRevokeUserResult struct {
	Revoked int64 `msgpack:"revoked"`
}

// SessionListRequest is the arguments of session.list.
type SessionListRequest struct {
	UserID string `msgpack:"user_id"`
}

// SessionInfo is one item of session.list's result.
type SessionInfo struct {
	SessionID   string `msgpack:"session_id"`
	CreatedAtMs int64  `msgpack:"created_at_ms"`
	LastSeenMs  int64  `msgpack:"last_seen_ms"`
	ExpiresAtMs int64  `msgpack:"expires_at_ms"`
	Data        any    `msgpack:"data"`
}

// ---- presence -------------------------------------------------------------------

// PresenceEntry is one tracked entry of a key.
type PresenceEntry struct {
	Ref        string `msgpack:"ref"`
	Meta       any    `msgpack:"meta"`
	NodeID     string `msgpack:"node_id"`
	OnlineAtMs int64  `msgpack:"online_at_ms"`
}

// PresenceTrackRequest is the arguments of presence.track.
type PresenceTrackRequest struct {
	Channel string `msgpack:"channel"`
	Key     string `msgpack:"key"`
	Meta    any    `msgpack:"meta,omitempty"`
}

// PresenceTrackResult is the result of presence.track.
type PresenceTrackResult struct {
	Ref string `msgpack:"ref"`
}

// PresenceUpdateRequest is the arguments of presence.update.
type PresenceUpdateRequest struct {
	Channel string `msgpack:"channel"`
	Ref     string `msgpack:"ref"`
	Meta    any    `msgpack:"meta"`
}

// PresenceUpdateResult is the result of presence.update.
type PresenceUpdateResult struct {
	Updated bool `msgpack:"updated"`
}

// PresenceUntrackRequest is the arguments of presence.untrack.
type PresenceUntrackRequest struct {
	Channel string `msgpack:"channel"`
	Ref     string `msgpack:"ref"`
}

// PresenceUntrackResult is the result of presence.untrack.
type PresenceUntrackResult struct {
	Removed bool `msgpack:"removed"`
}

// PresenceListRequest is the arguments of presence.list.
type PresenceListRequest struct {
	Channel string `msgpack:"channel"`
}

// PresenceListResult is the result of presence.list.
type PresenceListResult struct {
	Members map[string][]PresenceEntry `msgpack:"members"`
}

// PresenceCountRequest is the arguments of presence.count.
type PresenceCountRequest struct {
	Channel string `msgpack:"channel"`
}

// PresenceCountResult is the result of presence.count.
type PresenceCountResult struct {
	Keys int64 `msgpack:"keys"`
	Refs int64 `msgpack:"refs"`
}

// PresenceSubscribeRequest is the arguments of presence.subscribe.
type PresenceSubscribeRequest struct {
	Channel string `msgpack:"channel"`
}

// PresenceSubscribeResult is the result of presence.subscribe; presence.diff
// notifications follow, from Version+1 on.
type PresenceSubscribeResult struct {
	Members map[string][]PresenceEntry `msgpack:"members"`
	Version int64                      `msgpack:"version"`
}

// PresenceUnsubscribeRequest is the arguments of presence.unsubscribe.
type PresenceUnsubscribeRequest struct {
	Channel string `msgpack:"channel"`
}

// ---- pub/sub --------------------------------------------------------------------

// PubSubPublishRequest is the arguments of pubsub.publish.
type PubSubPublishRequest struct {
	Channel string `msgpack:"channel"`
	Message any    `msgpack:"message"`
}

// PubSubPublishResult is the result of pubsub.publish (Receivers counts nodes).
type PubSubPublishResult struct {
	Receivers int64 `msgpack:"receivers"`
}

// PubSubSubscribeRequest is the arguments of pubsub.subscribe.
type PubSubSubscribeRequest struct {
	Channel string `msgpack:"channel"`
}

// PubSubUnsubscribeRequest is the arguments of pubsub.unsubscribe.
type PubSubUnsubscribeRequest struct {
	Channel string `msgpack:"channel"`
}

// ---- rate limits ----------------------------------------------------------------

// Rate-limit algorithms and on_redis_down modes.
const (
	AlgorithmSlidingWindow  = "sliding_window"
	AlgorithmSlidingCounter = "sliding_counter"
	AlgorithmGCRA           = "gcra"
	OnRedisDownAllow        = "allow"
	OnRedisDownDeny         = "deny"
	OnRedisDownLocal        = "local"
)

// RateLimitHitRequest is the arguments of ratelimit.hit, and one check of
// ratelimit.hit_many: either ad hoc (Limit, WindowMs, Algorithm, OnRedisDown) or a
// configured Rule.
type RateLimitHitRequest struct {
	Key         string `msgpack:"key"`
	Limit       int64  `msgpack:"limit,omitempty"`
	WindowMs    int64  `msgpack:"window_ms,omitempty"`
	Algorithm   string `msgpack:"algorithm,omitempty"`
	Rule        string `msgpack:"rule,omitempty"`
	OnRedisDown string `msgpack:"on_redis_down,omitempty"`
	Cost        int64  `msgpack:"cost,omitempty"`
}

// RateLimitPeekRequest is the arguments of ratelimit.peek (hit's, without cost).
type RateLimitPeekRequest struct {
	Key         string `msgpack:"key"`
	Limit       int64  `msgpack:"limit,omitempty"`
	WindowMs    int64  `msgpack:"window_ms,omitempty"`
	Algorithm   string `msgpack:"algorithm,omitempty"`
	Rule        string `msgpack:"rule,omitempty"`
	OnRedisDown string `msgpack:"on_redis_down,omitempty"`
}

// RateLimitResult is the result of ratelimit.hit and ratelimit.peek, and one result
// of ratelimit.hit_many.
type RateLimitResult struct {
	Allowed      bool  `msgpack:"allowed"`
	Limit        int64 `msgpack:"limit"`
	Remaining    int64 `msgpack:"remaining"`
	ResetMs      int64 `msgpack:"reset_ms"`
	RetryAfterMs int64 `msgpack:"retry_after_ms"`
	// Degraded: Redis did not answer and the rule's on_redis_down decided.
	Degraded bool `msgpack:"degraded"`
	// Shadow: a shadow rule (Allowed is always true); WouldDeny says what enforcing it
	// would have answered.
	Shadow    bool `msgpack:"shadow"`
	WouldDeny bool `msgpack:"would_deny"`
	// Evaluated is false (and Remaining -1) for a hit_many check that was not
	// evaluated because another one was known to deny; nil when not sent.
	Evaluated *bool `msgpack:"evaluated"`
}

// RetryAfter is RetryAfterMs as a duration.
func (r *RateLimitResult) RetryAfter() time.Duration {
	return time.Duration(r.RetryAfterMs) * time.Millisecond
}

// RateLimitHitManyRequest is the arguments of ratelimit.hit_many (1 to 64 checks).
type RateLimitHitManyRequest struct {
	Checks []RateLimitHitRequest `msgpack:"checks"`
}

// RateLimitHitManyResult is the result of ratelimit.hit_many: all checks consumed, or
// none did.
type RateLimitHitManyResult struct {
	Allowed bool              `msgpack:"allowed"`
	Results []RateLimitResult `msgpack:"results"`
}

// RateLimitResetRequest is the arguments of ratelimit.reset.
type RateLimitResetRequest struct {
	Key  string `msgpack:"key"`
	Rule string `msgpack:"rule,omitempty"`
}
