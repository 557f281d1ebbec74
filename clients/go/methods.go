// One typed method per protocol method of tests/vectors/methods.json.

package madsidecar

import "context"

// Hello introduces the client and selects a namespace. The namespace it selects is
// the one the client says hello with after a reconnect. Send it before pipelining other
// work: the sidecar refuses to switch namespaces while requests are running.
func (c *Client) Hello(ctx context.Context, req HelloRequest) (*HelloResult, error) {
	if req.Client == "" {
		req.Client = c.opts.ClientName
	}
	res, err := call[HelloResult](ctx, c, "hello", req, 0)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.namespace, c.serverInfo = res.Namespace, &res
	c.mu.Unlock()
	return &res, nil
}

// Ping checks that the sidecar is up; it answers "pong".
func (c *Client) Ping(ctx context.Context) (string, error) {
	return call[string](ctx, c, "ping", nil, 0)
}

// Stats returns the sidecar's counters; Raw holds the whole map.
func (c *Client) Stats(ctx context.Context) (*StatsResult, error) {
	var raw any
	if err := c.callInto(ctx, "stats", nil, 0, &raw); err != nil {
		return nil, err
	}
	var res StatsResult
	if err := Decode(raw, &res); err != nil {
		return nil, err
	}
	res.Raw, _ = raw.(map[string]any)
	return &res, nil
}

// Health checks the whole path to Redis (ErrUnavailable when it cannot be reached).
func (c *Client) Health(ctx context.Context) (*HealthResult, error) {
	res, err := call[HealthResult](ctx, c, "health", nil, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// CacheGet (cache.get) reads a key: nil on a miss.
func (c *Client) CacheGet(ctx context.Context, req CacheGetRequest) (*CacheEntry, error) {
	return call[*CacheEntry](ctx, c, "cache.get", req, 0)
}

// CacheMGet (cache.mget) reads many keys: one entry (nil for a miss) per key, in order.
func (c *Client) CacheMGet(ctx context.Context, req CacheMGetRequest) ([]*CacheEntry, error) {
	if req.Keys == nil {
		req.Keys = []string{}
	}
	return call[[]*CacheEntry](ctx, c, "cache.mget", req, 0)
}

// CacheSet (cache.set) writes a key (and voids any fetch lease on it).
func (c *Client) CacheSet(ctx context.Context, req CacheSetRequest) (*OKResult, error) {
	res, err := call[OKResult](ctx, c, "cache.set", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// CacheDelete (cache.delete) deletes keys.
func (c *Client) CacheDelete(ctx context.Context, req CacheDeleteRequest) (*DeletedResult, error) {
	if req.Keys == nil {
		req.Keys = []string{}
	}
	res, err := call[DeletedResult](ctx, c, "cache.delete", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// CacheInvalidate (cache.invalidate) removes every key of the namespace starting with Prefix, from L2 and every node's L1.
func (c *Client) CacheInvalidate(ctx context.Context, req CacheInvalidateRequest) (*DeletedResult, error) {
	res, err := call[DeletedResult](ctx, c, "cache.invalidate", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// CacheFetch (cache.fetch) reads a key, protecting the backend from a stampede: on a miss exactly one caller fleet-wide gets a Lease and must CacheFill; the others wait up to WaitMs (ErrServerTimeout after). The client-side timeout is extended by WaitMs (5 s when not given).
func (c *Client) CacheFetch(ctx context.Context, req CacheFetchRequest) (*CacheFetchResult, error) {
	res, err := call[CacheFetchResult](ctx, c, "cache.fetch", req, req.waitTime())
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// CacheFill (cache.fill) stores the value for a lease CacheFetch gave; ErrNotHeld when the lease is no longer current.
func (c *Client) CacheFill(ctx context.Context, req CacheFillRequest) (*OKResult, error) {
	res, err := call[OKResult](ctx, c, "cache.fill", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// CacheWarm (cache.warm) loads the namespace's keys starting with Prefix into this node's L1.
func (c *Client) CacheWarm(ctx context.Context, req CacheWarmRequest) (*CacheWarmResult, error) {
	res, err := call[CacheWarmResult](ctx, c, "cache.warm", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// LockAcquire (lock.acquire) takes a lease on a lock name, owned by this connection (renewed while it is open, released when it closes, never re-taken by a reconnect). With WaitMs it waits that long, and the client-side timeout is extended by as much.
func (c *Client) LockAcquire(ctx context.Context, req LockAcquireRequest) (*LockAcquireResult, error) {
	res, err := call[LockAcquireResult](ctx, c, "lock.acquire", req, req.waitTime())
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// LockRelease (lock.release) releases a lock; Released false when the token no longer held it.
func (c *Client) LockRelease(ctx context.Context, req LockReleaseRequest) (*LockReleaseResult, error) {
	res, err := call[LockReleaseResult](ctx, c, "lock.release", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// LockExtend (lock.extend) sets a held lock's remaining lease to TTLMs.
func (c *Client) LockExtend(ctx context.Context, req LockExtendRequest) (*LockExtendResult, error) {
	res, err := call[LockExtendResult](ctx, c, "lock.extend", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// LockInspect (lock.inspect) reports whether a lock is held, its remaining lease and its last fence (a snapshot).
func (c *Client) LockInspect(ctx context.Context, req LockInspectRequest) (*LockInspectResult, error) {
	res, err := call[LockInspectResult](ctx, c, "lock.inspect", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// SessionCreate (session.create) creates a session.
func (c *Client) SessionCreate(ctx context.Context, req SessionCreateRequest) (*SessionCreateResult, error) {
	res, err := call[SessionCreateResult](ctx, c, "session.create", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// SessionGet (session.get) reads a session: nil for an unknown, expired, revoked or rotated-away token.
func (c *Client) SessionGet(ctx context.Context, req SessionGetRequest) (*Session, error) {
	return call[*Session](ctx, c, "session.get", req, 0)
}

// SessionUpdate (session.update) replaces a session's data.
func (c *Client) SessionUpdate(ctx context.Context, req SessionUpdateRequest) (*SessionUpdateResult, error) {
	res, err := call[SessionUpdateResult](ctx, c, "session.update", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// SessionRotate (session.rotate) gives the session a new token (nil for an unknown token); the old one stops working.
func (c *Client) SessionRotate(ctx context.Context, req SessionRotateRequest) (*SessionRotateResult, error) {
	return call[*SessionRotateResult](ctx, c, "session.rotate", req, 0)
}

// SessionRevoke (session.revoke) ends a session, by token or by session id.
func (c *Client) SessionRevoke(ctx context.Context, req SessionRevokeRequest) (*SessionRevokeResult, error) {
	res, err := call[SessionRevokeResult](ctx, c, "session.revoke", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// SessionRevokeUser (session.revoke_user) ends every session of a user, but ExceptSessionID.
func (c *Client) SessionRevokeUser(ctx context.Context, req SessionRevokeUserRequest) (*SessionRevokeUserResult, error) {
	res, err := call[SessionRevokeUserResult](ctx, c, "session.revoke_user", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// SessionList (session.list) lists a user's live sessions, soonest expiry first.
func (c *Client) SessionList(ctx context.Context, req SessionListRequest) ([]SessionInfo, error) {
	return call[[]SessionInfo](ctx, c, "session.list", req, 0)
}

// PresenceTrack (presence.track) tracks Key on Channel, owned by this connection.
func (c *Client) PresenceTrack(ctx context.Context, req PresenceTrackRequest) (*PresenceTrackResult, error) {
	res, err := call[PresenceTrackResult](ctx, c, "presence.track", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PresenceUpdate (presence.update) replaces the meta of an entry this connection tracks.
func (c *Client) PresenceUpdate(ctx context.Context, req PresenceUpdateRequest) (*PresenceUpdateResult, error) {
	res, err := call[PresenceUpdateResult](ctx, c, "presence.update", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PresenceUntrack (presence.untrack) removes an entry this connection tracks.
func (c *Client) PresenceUntrack(ctx context.Context, req PresenceUntrackRequest) (*PresenceUntrackResult, error) {
	res, err := call[PresenceUntrackResult](ctx, c, "presence.untrack", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PresenceList (presence.list) lists a channel's members across every node.
func (c *Client) PresenceList(ctx context.Context, req PresenceListRequest) (*PresenceListResult, error) {
	res, err := call[PresenceListResult](ctx, c, "presence.list", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PresenceCount (presence.count) counts a channel's keys and refs.
func (c *Client) PresenceCount(ctx context.Context, req PresenceCountRequest) (*PresenceCountResult, error) {
	res, err := call[PresenceCountResult](ctx, c, "presence.count", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PresenceSubscribe (presence.subscribe) returns a channel's members and version; presence.diff notifications follow.
func (c *Client) PresenceSubscribe(ctx context.Context, req PresenceSubscribeRequest) (*PresenceSubscribeResult, error) {
	res, err := call[PresenceSubscribeResult](ctx, c, "presence.subscribe", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PresenceUnsubscribe (presence.unsubscribe) stops presence.diff notifications for a channel.
func (c *Client) PresenceUnsubscribe(ctx context.Context, req PresenceUnsubscribeRequest) (*OKResult, error) {
	res, err := call[OKResult](ctx, c, "presence.unsubscribe", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PubSubPublish (pubsub.publish) publishes a message on a channel.
func (c *Client) PubSubPublish(ctx context.Context, req PubSubPublishRequest) (*PubSubPublishResult, error) {
	res, err := call[PubSubPublishResult](ctx, c, "pubsub.publish", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PubSubSubscribe (pubsub.subscribe) subscribes this connection to a channel: pubsub.message notifications follow.
func (c *Client) PubSubSubscribe(ctx context.Context, req PubSubSubscribeRequest) (*OKResult, error) {
	res, err := call[OKResult](ctx, c, "pubsub.subscribe", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PubSubUnsubscribe (pubsub.unsubscribe) unsubscribes this connection from a channel.
func (c *Client) PubSubUnsubscribe(ctx context.Context, req PubSubUnsubscribeRequest) (*OKResult, error) {
	res, err := call[OKResult](ctx, c, "pubsub.unsubscribe", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// RateLimitHit (ratelimit.hit) checks and consumes Cost units of a rate limit (ad hoc, or a configured Rule). A denial is a result (Allowed false, RetryAfterMs), not an error.
func (c *Client) RateLimitHit(ctx context.Context, req RateLimitHitRequest) (*RateLimitResult, error) {
	res, err := call[RateLimitResult](ctx, c, "ratelimit.hit", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// RateLimitHitMany (ratelimit.hit_many) checks several limits at once: all consume, or none does.
func (c *Client) RateLimitHitMany(ctx context.Context, req RateLimitHitManyRequest) (*RateLimitHitManyResult, error) {
	res, err := call[RateLimitHitManyResult](ctx, c, "ratelimit.hit_many", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// RateLimitPeek (ratelimit.peek) reports what a hit would answer, consuming nothing.
func (c *Client) RateLimitPeek(ctx context.Context, req RateLimitPeekRequest) (*RateLimitResult, error) {
	res, err := call[RateLimitResult](ctx, c, "ratelimit.peek", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// RateLimitReset (ratelimit.reset) forgets a key's counters (ad hoc ones, or a Rule's).
func (c *Client) RateLimitReset(ctx context.Context, req RateLimitResetRequest) (*OKResult, error) {
	res, err := call[OKResult](ctx, c, "ratelimit.reset", req, 0)
	if err != nil {
		return nil, err
	}
	return &res, nil
}
