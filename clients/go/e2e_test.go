package madsidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestE2EConnection(t *testing.T) {
	h := harness(t)
	t.Setenv("MADSIDECAR_SOCKET", h.Socket)
	// No socket path given: $MADSIDECAR_SOCKET.
	c, err := Connect(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Path() != h.Socket {
		t.Fatalf("path %q", c.Path())
	}
	ctx := ctxT(t)
	info := c.ServerInfo()
	if info == nil || info.Server != "madsidecar" || info.Protocol != 1 || info.Namespace != "default" || info.MaxFrameBytes != DefaultMaxFrameBytes {
		t.Fatalf("hello on connect: %+v", info)
	}
	hello := must(c.Hello(ctx, HelloRequest{Namespace: "default"}))(t)
	if len(hello.Methods) == 0 || hello.NodeID == "" {
		t.Fatalf("hello: %+v", hello)
	}
	if pong := must(c.Ping(ctx))(t); pong != "pong" {
		t.Fatalf("ping: %q", pong)
	}
	stats := must(c.Stats(ctx))(t)
	if stats.UptimeMs <= 0 || stats.Connections < 1 || stats.Requests < 1 || !stats.Redis.Connected {
		t.Fatalf("stats: %+v", stats)
	}
	if _, ok := stats.Raw["cache"].(map[string]any); !ok {
		t.Fatalf("stats.Raw: %v", stats.Raw)
	}
	health := must(c.Health(ctx))(t)
	if !health.OK || health.RedisLatencyUs <= 0 {
		t.Fatalf("health: %+v", health)
	}
	// Every method hello lists has a typed method in this SDK.
	for _, m := range hello.Methods {
		if _, ok := requestTypes[m]; !ok {
			t.Errorf("the sidecar serves %s, which this SDK does not type", m)
		}
	}
}

// values: every kind of value, which must come back with the same type and content.
var values = map[string]any{
	"nil":      nil,
	"true":     true,
	"int":      int64(-33),
	"u64max":   uint64(math.MaxUint64),
	"i64min":   int64(math.MinInt64),
	"past2^53": int64(1<<53 + 1),
	"float":    1.5,
	"floatint": 2.0,
	"str":      "héllo, 世界 🎉",
	"bin":      []byte{0, 0xff, 'm', 'a', 'd', 0x80},
	"array":    []any{int64(1), "two", []any{3.25, nil}, false},
	"map":      map[string]any{"a": map[string]any{"b": []any{int64(1), []byte{1}}}, "n": int64(-1)},
	"intkeys":  Map{{Key: int64(1), Value: "one"}, {Key: int64(2), Value: "two"}},
	"ext":      Ext{Type: 5, Data: []byte{1, 2, 3}},
}

func TestE2ECache(t *testing.T) {
	c := connect(t, nil)
	ctx := ctxT(t)
	prefix := unique(t, "k") + ":"
	for name, v := range values {
		key := prefix + name
		if r := must(c.CacheSet(ctx, CacheSetRequest{Key: key, Value: v, TTLMs: 60000}))(t); !r.OK {
			t.Fatal("set not ok")
		}
		e := must(c.CacheGet(ctx, CacheGetRequest{Key: key}))(t)
		if e == nil || !reflect.DeepEqual(e.Value, v) || (e.Source != "l1" && e.Source != "l2") || e.TTLMs == nil || *e.TTLMs <= 0 {
			t.Fatalf("%s: got %#v, want %#v", name, e, v)
		}
	}
	if e := must(c.CacheGet(ctx, CacheGetRequest{Key: prefix + "missing"}))(t); e != nil {
		t.Fatalf("miss: %#v", e)
	}
	entries := must(c.CacheMGet(ctx, CacheMGetRequest{Keys: []string{prefix + "str", prefix + "missing", prefix + "nil"}}))(t)
	if len(entries) != 3 || entries[0] == nil || entries[0].Value != values["str"] || entries[1] != nil || entries[2] == nil || entries[2].Value != nil {
		t.Fatalf("mget: %#v", entries)
	}
	if d := must(c.CacheDelete(ctx, CacheDeleteRequest{Keys: []string{prefix + "str", prefix + "missing"}}))(t); d.Deleted != 1 {
		t.Fatalf("delete: %+v", d)
	}
	if d := must(c.CacheDelete(ctx, CacheDeleteRequest{}))(t); d.Deleted != 0 {
		t.Fatalf("delete of no keys: %+v", d)
	}
	if w := must(c.CacheWarm(ctx, CacheWarmRequest{Prefix: prefix}))(t); w.Loaded != int64(len(values)-1) {
		t.Fatalf("warm: %+v", w)
	}
	if d := must(c.CacheInvalidate(ctx, CacheInvalidateRequest{Prefix: prefix}))(t); d.Deleted != int64(len(values)-1) {
		t.Fatalf("invalidate: %+v", d)
	}
	if e := must(c.CacheGet(ctx, CacheGetRequest{Key: prefix + "int"}))(t); e != nil {
		t.Fatalf("after invalidate: %#v", e)
	}
}

func TestE2ECacheFetchFill(t *testing.T) {
	a := connect(t, nil)
	b := connect(t, nil)
	ctx := ctxT(t)
	key := unique(t, "k")
	first := must(a.CacheFetch(ctx, CacheFetchRequest{Key: key, TTLMs: 60000}))(t)
	if first.Hit() || first.Lease == "" {
		t.Fatalf("first fetch: %+v", first)
	}
	// Another connection waits for the fill.
	type outcome struct {
		r   *CacheFetchResult
		err error
	}
	waiting := make(chan outcome, 1)
	go func() {
		r, err := b.CacheFetch(ctx, CacheFetchRequest{Key: key, WaitMs: Int64(10000)})
		waiting <- outcome{r, err}
	}()
	// The waiter is in the sidecar's queue once stats say so.
	waitFor(t, "the second fetch to wait", func() bool { return must(a.Stats(ctx))(t).Cache.LeaseWaiters > 0 })
	if r := must(a.CacheFill(ctx, CacheFillRequest{Key: key, Lease: first.Lease, Value: "computed"}))(t); !r.OK {
		t.Fatal("fill not ok")
	}
	o := <-waiting
	if o.err != nil || !o.r.Hit() || o.r.Value != "computed" {
		t.Fatalf("waiter: %+v %v", o.r, o.err)
	}
	// A lease voided by a set: the stale fill never lands.
	key2 := unique(t, "k2")
	lease := must(a.CacheFetch(ctx, CacheFetchRequest{Key: key2}))(t)
	must(b.CacheSet(ctx, CacheSetRequest{Key: key2, Value: "fresh"}))(t)
	_, err := a.CacheFill(ctx, CacheFillRequest{Key: key2, Lease: lease.Lease, Value: "stale"})
	if !errors.Is(err, ErrNotHeld) {
		t.Fatalf("stale fill: %v", err)
	}
	// wait_ms 0 on a held lease: TIMEOUT from the sidecar.
	key3 := unique(t, "k3")
	must(a.CacheFetch(ctx, CacheFetchRequest{Key: key3}))(t)
	_, err = b.CacheFetch(ctx, CacheFetchRequest{Key: key3, WaitMs: Int64(0)})
	if !errors.Is(err, ErrServerTimeout) || errors.Is(err, ErrTimeout) {
		t.Fatalf("fetch with wait_ms 0: %v", err)
	}
}

func TestE2ELocks(t *testing.T) {
	a := connect(t, nil)
	b := connect(t, nil)
	ctx := ctxT(t)
	name := unique(t, "lock")
	got := must(a.LockAcquire(ctx, LockAcquireRequest{Name: name, TTLMs: 10000}))(t)
	if !got.Acquired || got.Token == "" || got.Fence <= 0 || got.TTLMs != 10000 {
		t.Fatalf("acquire: %+v", got)
	}
	// A second connection sees it held.
	other := must(b.LockAcquire(ctx, LockAcquireRequest{Name: name}))(t)
	if other.Acquired || other.TTLMs <= 0 {
		t.Fatalf("second acquire: %+v", other)
	}
	ins := must(b.LockInspect(ctx, LockInspectRequest{Name: name}))(t)
	if !ins.Held || ins.Fence != got.Fence || ins.TTLMs <= 0 {
		t.Fatalf("inspect: %+v", ins)
	}
	ext := must(a.LockExtend(ctx, LockExtendRequest{Name: name, Token: got.Token, TTLMs: 20000}))(t)
	if !ext.Extended || ext.TTLMs != 20000 {
		t.Fatalf("extend: %+v", ext)
	}
	if r := must(b.LockRelease(ctx, LockReleaseRequest{Name: name, Token: "not-the-token"}))(t); r.Released {
		t.Fatal("released with a wrong token")
	}
	// A waiter on the second connection is woken by the release.
	waited := make(chan *LockAcquireResult, 1)
	go func() {
		r, err := b.LockAcquire(ctx, LockAcquireRequest{Name: name, WaitMs: Int64(10000), Renew: Bool(false)})
		if err != nil {
			t.Error(err)
		}
		waited <- r
	}()
	waitFor(t, "the lock waiter to wait", func() bool { return must(a.Stats(ctx))(t).Locks.Waiting > 0 })
	if r := must(a.LockRelease(ctx, LockReleaseRequest{Name: name, Token: got.Token}))(t); !r.Released {
		t.Fatal("release failed")
	}
	w := <-waited
	if w == nil || !w.Acquired || w.Fence <= got.Fence {
		t.Fatalf("waiter: %+v", w)
	}
	if ext := must(a.LockExtend(ctx, LockExtendRequest{Name: name, Token: got.Token, TTLMs: 1000}))(t); ext.Extended {
		t.Fatal("extended with a released token")
	}
}

func TestE2ESessions(t *testing.T) {
	c := connect(t, nil)
	ctx := ctxT(t)
	user := unique(t, "user")
	data := map[string]any{"role": "admin", "ids": []any{int64(1), int64(1) << 60}}
	s1 := must(c.SessionCreate(ctx, SessionCreateRequest{UserID: user, Data: data}))(t)
	if len(s1.Token) < 43 || s1.SessionID == "" || s1.ExpiresAtMs <= time.Now().UnixMilli() {
		t.Fatalf("create: %+v", s1)
	}
	s2 := must(c.SessionCreate(ctx, SessionCreateRequest{UserID: user, IdleTTLMs: 60000, AbsoluteTTLMs: 120000}))(t)
	got := must(c.SessionGet(ctx, SessionGetRequest{Token: s1.Token}))(t)
	if got == nil || got.UserID != user || got.SessionID != s1.SessionID || !reflect.DeepEqual(got.Data, data) || got.CreatedAtMs <= 0 {
		t.Fatalf("get: %+v", got)
	}
	if u := must(c.SessionUpdate(ctx, SessionUpdateRequest{Token: s1.Token, Data: []byte{1, 2}}))(t); !u.Updated {
		t.Fatal("update")
	}
	got = must(c.SessionGet(ctx, SessionGetRequest{Token: s1.Token, Touch: Bool(false)}))(t)
	if got == nil || !bytes.Equal(got.Data.([]byte), []byte{1, 2}) {
		t.Fatalf("after update: %+v", got)
	}
	rot := must(c.SessionRotate(ctx, SessionRotateRequest{Token: s1.Token}))(t)
	if rot == nil || rot.Token == s1.Token {
		t.Fatalf("rotate: %+v", rot)
	}
	if old := must(c.SessionGet(ctx, SessionGetRequest{Token: s1.Token}))(t); old != nil {
		t.Fatalf("the rotated-away token still works: %+v", old)
	}
	if r := must(c.SessionRotate(ctx, SessionRotateRequest{Token: s1.Token}))(t); r != nil {
		t.Fatalf("rotate of an unknown token: %+v", r)
	}
	list := must(c.SessionList(ctx, SessionListRequest{UserID: user}))(t)
	if len(list) != 2 {
		t.Fatalf("list: %+v", list)
	}
	if r := must(c.SessionRevoke(ctx, SessionRevokeRequest{SessionID: s2.SessionID}))(t); !r.Revoked {
		t.Fatal("revoke by session id")
	}
	s3 := must(c.SessionCreate(ctx, SessionCreateRequest{UserID: user}))(t)
	if r := must(c.SessionRevokeUser(ctx, SessionRevokeUserRequest{UserID: user, ExceptSessionID: s3.SessionID}))(t); r.Revoked != 1 {
		t.Fatalf("revoke_user: %+v", r)
	}
	if g := must(c.SessionGet(ctx, SessionGetRequest{Token: rot.Token}))(t); g != nil {
		t.Fatalf("revoked session: %+v", g)
	}
	if r := must(c.SessionRevoke(ctx, SessionRevokeRequest{Token: s3.Token}))(t); !r.Revoked {
		t.Fatal("revoke by token")
	}
	if list := must(c.SessionList(ctx, SessionListRequest{UserID: user}))(t); len(list) != 0 {
		t.Fatalf("list after revoking all: %+v", list)
	}
}

func TestE2EPresence(t *testing.T) {
	sub := connect(t, nil)
	c := connect(t, nil)
	ctx := ctxT(t)
	channel := unique(t, "room")
	s := must(sub.PresenceSubscribe(ctx, PresenceSubscribeRequest{Channel: channel}))(t)
	if len(s.Members) != 0 {
		t.Fatalf("subscribe: %+v", s)
	}
	tr := must(c.PresenceTrack(ctx, PresenceTrackRequest{Channel: channel, Key: "alice", Meta: map[string]any{"s": int64(1)}}))(t)
	if tr.Ref == "" {
		t.Fatal("no ref")
	}
	n := waitNote(t, sub, NotifyPresenceDiff, func(n Notification) bool {
		d, _ := n.Payload.(*PresenceDiff)
		return d != nil && d.Channel == channel && len(d.Joins["alice"]) == 1
	})
	diff := n.Payload.(*PresenceDiff)
	if diff.Version <= s.Version || diff.Joins["alice"][0].Ref != tr.Ref || !reflect.DeepEqual(diff.Joins["alice"][0].Meta, map[string]any{"s": int64(1)}) {
		t.Fatalf("diff: %+v", diff)
	}
	if u := must(c.PresenceUpdate(ctx, PresenceUpdateRequest{Channel: channel, Ref: tr.Ref, Meta: "away"}))(t); !u.Updated {
		t.Fatal("update")
	}
	list := must(c.PresenceList(ctx, PresenceListRequest{Channel: channel}))(t)
	if len(list.Members["alice"]) != 1 || list.Members["alice"][0].Meta != "away" || list.Members["alice"][0].NodeID == "" {
		t.Fatalf("list: %+v", list)
	}
	if cnt := must(c.PresenceCount(ctx, PresenceCountRequest{Channel: channel}))(t); cnt.Keys != 1 || cnt.Refs != 1 {
		t.Fatalf("count: %+v", cnt)
	}
	if r := must(c.PresenceUntrack(ctx, PresenceUntrackRequest{Channel: channel, Ref: tr.Ref}))(t); !r.Removed {
		t.Fatal("untrack")
	}
	waitNote(t, sub, NotifyPresenceDiff, func(n Notification) bool {
		d, _ := n.Payload.(*PresenceDiff)
		return d != nil && d.Channel == channel && len(d.Leaves["alice"]) == 1
	})
	if r := must(sub.PresenceUnsubscribe(ctx, PresenceUnsubscribeRequest{Channel: channel}))(t); !r.OK {
		t.Fatal("unsubscribe")
	}
}

func TestE2EPubSub(t *testing.T) {
	sub := connect(t, nil)
	c := connect(t, nil)
	ctx := ctxT(t)
	channel := unique(t, "news")
	if r := must(sub.PubSubSubscribe(ctx, PubSubSubscribeRequest{Channel: channel}))(t); !r.OK {
		t.Fatal("subscribe")
	}
	msg := map[string]any{"body": []byte("hi"), "id": uint64(math.MaxUint64)}
	if p := must(c.PubSubPublish(ctx, PubSubPublishRequest{Channel: channel, Message: msg}))(t); p.Receivers < 1 {
		t.Fatalf("publish: %+v", p)
	}
	n := waitNote(t, sub, NotifyPubSubMessage, nil)
	m := n.Payload.(*PubSubMessage)
	if m.Channel != channel || !reflect.DeepEqual(m.Message, msg) {
		t.Fatalf("message: %+v", m)
	}
	if r := must(sub.PubSubUnsubscribe(ctx, PubSubUnsubscribeRequest{Channel: channel}))(t); !r.OK {
		t.Fatal("unsubscribe")
	}
}

func TestE2ERateLimit(t *testing.T) {
	c := connect(t, nil)
	ctx := ctxT(t)
	key := unique(t, "ip")
	first := must(c.RateLimitHit(ctx, RateLimitHitRequest{Key: key, Limit: 1, WindowMs: 60000}))(t)
	if !first.Allowed || first.Limit != 1 || first.Remaining != 0 || first.RetryAfterMs != 0 {
		t.Fatalf("first hit: %+v", first)
	}
	denied := must(c.RateLimitHit(ctx, RateLimitHitRequest{Key: key, Limit: 1, WindowMs: 60000}))(t)
	if denied.Allowed || denied.RetryAfterMs <= 0 || denied.RetryAfter() <= 0 {
		t.Fatalf("second hit: %+v", denied)
	}
	peek := must(c.RateLimitPeek(ctx, RateLimitPeekRequest{Key: key, Limit: 1, WindowMs: 60000}))(t)
	if peek.Allowed || peek.Remaining != 0 {
		t.Fatalf("peek: %+v", peek)
	}
	if r := must(c.RateLimitReset(ctx, RateLimitResetRequest{Key: key}))(t); !r.OK {
		t.Fatal("reset")
	}
	again := must(c.RateLimitHit(ctx, RateLimitHitRequest{Key: key, Limit: 1, WindowMs: 60000, Algorithm: AlgorithmGCRA}))(t)
	if !again.Allowed {
		t.Fatalf("after reset: %+v", again)
	}
	// hit_many: all or nothing.
	k2 := unique(t, "user")
	many := must(c.RateLimitHitMany(ctx, RateLimitHitManyRequest{Checks: []RateLimitHitRequest{
		{Key: k2, Limit: 10, WindowMs: 60000, Cost: 3},
		{Key: key, Limit: 1, WindowMs: 60000, Algorithm: AlgorithmGCRA},
	}}))(t)
	if many.Allowed || len(many.Results) != 2 || many.Results[1].Allowed {
		t.Fatalf("hit_many: %+v", many)
	}
	if p := must(c.RateLimitPeek(ctx, RateLimitPeekRequest{Key: k2, Limit: 10, WindowMs: 60000}))(t); p.Remaining != 10 {
		t.Fatalf("a denied hit_many consumed: %+v", p)
	}
	// The configured rule sdk-test: limit 2.
	rk := unique(t, "rule")
	for i := 0; i < 2; i++ {
		if r := must(c.RateLimitHit(ctx, RateLimitHitRequest{Key: rk, Rule: "sdk-test"}))(t); !r.Allowed || r.Limit != 2 {
			t.Fatalf("rule hit %d: %+v", i, r)
		}
	}
	if r := must(c.RateLimitHit(ctx, RateLimitHitRequest{Key: rk, Rule: "sdk-test"}))(t); r.Allowed || r.RetryAfterMs <= 0 {
		t.Fatalf("third rule hit: %+v", r)
	}
	if r := must(c.RateLimitReset(ctx, RateLimitResetRequest{Key: rk, Rule: "sdk-test"}))(t); !r.OK {
		t.Fatal("rule reset")
	}
	if r := must(c.RateLimitPeek(ctx, RateLimitPeekRequest{Key: rk, Rule: "sdk-test"}))(t); !r.Allowed || r.Remaining != 2 {
		t.Fatalf("rule peek after reset: %+v", r)
	}
	_, err := c.RateLimitHit(ctx, RateLimitHitRequest{Key: rk, Rule: "no-such-rule"})
	if !errors.Is(err, ErrBadRequest) {
		t.Fatalf("unknown rule: %v", err)
	}
}

func TestE2EErrors(t *testing.T) {
	c := connect(t, nil)
	ctx := ctxT(t)
	_, err := c.Call(ctx, "ping", map[string]any{"loud": true})
	var se *ServerError
	if !errors.Is(err, ErrBadRequest) || !errors.As(err, &se) || se.Argument() != "loud" || !strings.Contains(se.Message, "loud") {
		t.Fatalf("unknown argument: %v", err)
	}
	_, err = c.LockAcquire(ctx, LockAcquireRequest{Name: unique(t, "l"), TTLMs: 1})
	if !errors.As(err, &se) || se.Code != CodeBadRequest || se.Argument() != "ttl_ms" {
		t.Fatalf("ttl_ms out of range: %v", err)
	}
	_, err = c.Call(ctx, "nope.nothing", nil)
	if !errors.Is(err, ErrUnknownMethod) || errors.Is(err, ErrBadRequest) {
		t.Fatalf("unknown method: %v", err)
	}
	// The generic call works for a known method too, and so does CallInto.
	v, err := c.Call(ctx, "ping", nil)
	if err != nil || v != "pong" {
		t.Fatalf("Call ping: %v %v", v, err)
	}
	var ins LockInspectResult
	if err := c.CallInto(ctx, "lock.inspect", map[string]any{"name": unique(t, "l")}, &ins); err != nil || ins.Held {
		t.Fatalf("CallInto: %+v %v", ins, err)
	}
	// A namespace the default policy does not allow.
	_, err = c.Hello(ctx, HelloRequest{Namespace: "not-allowed"})
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("forbidden namespace: %v", err)
	}
	// A request over the sidecar's max_frame_bytes is refused before it is sent.
	_, err = c.CacheSet(ctx, CacheSetRequest{Key: unique(t, "big"), Value: make([]byte, DefaultMaxFrameBytes)})
	var fe *FrameTooLargeError
	if !errors.Is(err, ErrFrameTooLarge) || !errors.As(err, &fe) || fe.Incoming {
		t.Fatalf("too large a request: %v", err)
	}
	if must(c.Ping(ctx))(t) != "pong" {
		t.Fatal("the connection did not survive")
	}
}

func TestE2ETimeouts(t *testing.T) {
	holder := connect(t, nil)
	c := connect(t, &Options{Timeout: 300 * time.Millisecond})
	ctx := ctxT(t)
	name := unique(t, "lock")
	if r := must(holder.LockAcquire(ctx, LockAcquireRequest{Name: name}))(t); !r.Acquired {
		t.Fatal("acquire")
	}
	// The context's deadline is shorter than wait_ms: a client timeout that is also
	// context.DeadlineExceeded.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.LockAcquire(short, LockAcquireRequest{Name: name, WaitMs: Int64(5000)})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrServer) {
		t.Fatalf("short context: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("the timeout took %v", time.Since(start))
	}
	// The default timeout (300 ms) is extended by wait_ms: the sidecar's answer comes.
	r, err := c.LockAcquire(ctx, LockAcquireRequest{Name: name, WaitMs: Int64(600)})
	if err != nil || r.Acquired {
		t.Fatalf("wait_ms past the default timeout: %+v %v", r, err)
	}
	// The late reply of the timed-out call was dropped; the connection works.
	if must(c.Ping(ctx))(t) != "pong" {
		t.Fatal("ping after a timeout")
	}
}

func TestE2EPipeline(t *testing.T) {
	c := connect(t, nil)
	ctx := ctxT(t)
	const n = 20000
	prefix := unique(t, "p")
	reqs := make([]Request, n)
	for i := range reqs {
		if i%2 == 0 {
			reqs[i] = Request{Method: "ping"}
		} else {
			reqs[i] = Request{Method: "cache.set", Args: CacheSetRequest{Key: prefix, Value: int64(i), TTLMs: 60000}}
		}
	}
	start := time.Now()
	res, err := c.Pipeline(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
		if i%2 == 0 && r.Value != "pong" {
			t.Fatalf("request %d: %v", i, r.Value)
		}
		if i%2 == 1 {
			var ok OKResult
			if err := r.Decode(&ok); err != nil || !ok.OK {
				t.Fatalf("request %d: %+v %v", i, r.Value, err)
			}
		}
	}
	t.Logf("%d pipelined requests in %v", n, time.Since(start))
	// Same-key order: the last write won.
	if e := must(c.CacheGet(ctx, CacheGetRequest{Key: prefix}))(t); e == nil || e.Value != int64(n-1) {
		t.Fatalf("last write: %+v", e)
	}
	// Many goroutines on one client: concurrent calls pipelined on the connection.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if _, err := c.Ping(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestE2EFrameLimit(t *testing.T) {
	c := connect(t, nil)
	small := connect(t, &Options{MaxFrameBytes: 1024})
	ctx := ctxT(t)
	key := unique(t, "big")
	must(c.CacheSet(ctx, CacheSetRequest{Key: key, Value: strings.Repeat("x", 4096)}))(t)
	pending := make(chan error, 1)
	name := unique(t, "lock")
	must(c.LockAcquire(ctx, LockAcquireRequest{Name: name}))(t)
	go func() { // a call pending on the connection when it is closed
		_, err := small.LockAcquire(ctx, LockAcquireRequest{Name: name, WaitMs: Int64(10000)})
		pending <- err
	}()
	waitFor(t, "the lock waiter to wait", func() bool { return must(c.Stats(ctx))(t).Locks.Waiting > 0 })
	_, err := small.CacheGet(ctx, CacheGetRequest{Key: key})
	var fe *FrameTooLargeError
	if !errors.Is(err, ErrFrameTooLarge) || !errors.Is(err, ErrProtocol) || !errors.As(err, &fe) || !fe.Incoming || fe.Limit != 1024 {
		t.Fatalf("a 4 KiB reply to a 1 KiB client: %v", err)
	}
	if err := <-pending; !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("the pending call: %v", err)
	}
	// A fresh client works, and so does this one once it has reconnected.
	fresh := connect(t, &Options{MaxFrameBytes: 1024})
	if must(fresh.Ping(ctx))(t) != "pong" {
		t.Fatal("fresh client")
	}
	if must(small.Ping(ctx))(t) != "pong" {
		t.Fatal("the client after reconnecting")
	}
	if e := must(small.CacheGet(ctx, CacheGetRequest{Key: unique(t, "small")}))(t); e != nil {
		t.Fatal("small read")
	}
}

func TestE2EClose(t *testing.T) {
	c := connect(t, nil)
	ctx := ctxT(t)
	must(c.Ping(ctx))(t)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
	if _, open := <-c.Notifications(); open {
		t.Fatal("notifications not closed")
	}
}

// The tests below disturb the shared sidecar (flush, restart, stop): they run last.

func TestE2ELockLost(t *testing.T) {
	h := harness(t)
	c := connect(t, nil)
	ctx := ctxT(t)
	name := unique(t, "lock")
	got := must(c.LockAcquire(ctx, LockAcquireRequest{Name: name, TTLMs: 600}))(t)
	if !got.Acquired {
		t.Fatalf("acquire: %+v", got)
	}
	h.command(t, "flush") // the lease is found lost at its next renewal
	n := waitNote(t, c, NotifyLockLost, func(n Notification) bool {
		l, _ := n.Payload.(*LockLost)
		return l != nil && l.Name == name
	})
	lost := n.Payload.(*LockLost)
	if lost.Token != got.Token || lost.Fence != got.Fence {
		t.Fatalf("lock.lost %+v for %+v", lost, got)
	}
	// FLUSHALL also dropped the node's presence lease; a restarted sidecar starts clean.
	h.command(t, "restart")
}

// TestE2EReconnect: after the sidecar restarts, calls work again, the application was
// told the connection was lost, and the lock it held is not re-taken.
func TestE2EReconnect(t *testing.T) {
	h := harness(t)
	c := connect(t, nil)
	noRe := connect(t, &Options{DisableReconnect: true})
	ctx := ctxT(t)
	name := unique(t, "lock")
	held := must(c.LockAcquire(ctx, LockAcquireRequest{Name: name, TTLMs: 1000}))(t)
	if !held.Acquired {
		t.Fatal("acquire")
	}
	other := unique(t, "other")
	must(noRe.LockAcquire(ctx, LockAcquireRequest{Name: other}))(t)
	pending := make(chan error, 1)
	go func() {
		_, err := c.LockAcquire(ctx, LockAcquireRequest{Name: other, WaitMs: Int64(20000)})
		pending <- err
	}()
	waitFor(t, "the lock waiter to wait", func() bool { return must(noRe.Stats(ctx))(t).Locks.Waiting > 0 })

	h.command(t, "restart")

	lost := waitNote(t, c, NotifyConnectionLost, nil)
	if cl, ok := lost.Payload.(*ConnectionLost); !ok || !errors.Is(cl.Err, ErrConnectionLost) {
		t.Fatalf("connection.lost: %+v", lost.Payload)
	}
	if err := <-pending; !errors.Is(err, ErrConnectionLost) || !errors.Is(err, ErrClosed) {
		t.Fatalf("the pending call: %v", err)
	}
	restored := waitNote(t, c, NotifyConnectionRestored, nil)
	if r, ok := restored.Payload.(*ConnectionRestored); !ok || r.Hello.Server != "madsidecar" {
		t.Fatalf("connection.restored: %+v", restored.Payload)
	}
	if must(c.Ping(ctx))(t) != "pong" {
		t.Fatal("ping after reconnecting")
	}
	// The client with reconnecting off fails fast.
	waitNote(t, noRe, NotifyConnectionLost, nil)
	if _, err := noRe.Ping(ctx); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("no reconnect: %v", err)
	}
	// The lock was not re-taken: a fresh connection gets it (once the dead sidecar's
	// lease runs out), with a greater fence, and the old token no longer releases it.
	fresh := connect(t, nil)
	now := must(fresh.LockAcquire(ctx, LockAcquireRequest{Name: name, WaitMs: Int64(10000)}))(t)
	if !now.Acquired || now.Fence <= held.Fence {
		t.Fatalf("fresh acquire: %+v", now)
	}
	if r := must(c.LockRelease(ctx, LockReleaseRequest{Name: name, Token: held.Token}))(t); r.Released {
		t.Fatal("the old token released the lock")
	}
	if ins := must(c.LockInspect(ctx, LockInspectRequest{Name: name}))(t); !ins.Held || ins.Fence != now.Fence {
		t.Fatalf("inspect: %+v", ins)
	}
}

// TestE2EStopped: calls to a stopped sidecar time out; once it is back, they work.
func TestE2EStopped(t *testing.T) {
	h := harness(t)
	c := connect(t, &Options{Timeout: 300 * time.Millisecond})
	ctx := ctxT(t)
	h.command(t, "stop")
	waitNote(t, c, NotifyConnectionLost, nil)
	start := time.Now()
	_, err := c.Ping(ctx)
	if !errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping while stopped: %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("the timeout took %v", d)
	}
	h.command(t, "start")
	waitNote(t, c, NotifyConnectionRestored, nil)
	if must(c.Ping(ctx))(t) != "pong" {
		t.Fatal("ping after start")
	}
}

// TestE2EPrograms builds and runs the quickstart example and the bench (small numbers)
// against the harness.
func TestE2EPrograms(t *testing.T) {
	h := harness(t)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir, "./examples/quickstart", "./cmd/bench")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(name string, args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(dir, name), args...)
		cmd.Env = append(os.Environ(), "MADSIDECAR_SOCKET="+h.Socket)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s%s", name, err, out, stderr.String())
		}
		return string(out)
	}
	out := run("quickstart")
	for _, want := range []string{"cache.get: map[n:42 text:hello]", "lock held with fence", "pubsub.message on quickstart:news: hi", "unknown method is ErrUnknownMethod: true"} {
		if !strings.Contains(out, want) {
			t.Fatalf("quickstart printed %q, without %q", out, want)
		}
	}
	line := strings.TrimSpace(run("bench", "--pings", "200", "--warmup", "10", "--pipelined", "2000"))
	if strings.Contains(line, "\n") {
		t.Fatalf("bench printed more than one line: %q", line)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("bench output %q: %v", line, err)
	}
	if res["sdk"] != "go" || len(res) != 4 {
		t.Fatalf("bench: %v", res)
	}
	for _, k := range []string{"ping_p50_us", "ping_p99_us", "pipelined_per_s"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Fatalf("bench %s: %v", k, res[k])
		}
	}
}
