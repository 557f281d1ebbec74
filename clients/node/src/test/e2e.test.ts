/**
 * End to end against a real Redis and a real sidecar (tests/sdk_harness.py): one harness
 * for this file, unique names per test. The tests that stop or restart the sidecar run last.
 */

import assert from "node:assert/strict";
import { once } from "node:events";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import {
  BadRequestError,
  CallTimeoutError,
  Client,
  ConnectionClosedError,
  ExtData,
  FrameLimitError,
  NotHeldError,
  UnknownMethodError,
  float64,
  isCacheHit,
  type ClientOptions,
  type ConnectionLost,
  type LockLost,
  type PresenceDiff,
  type PubsubMessage,
} from "../index.js";
import { Harness } from "./harness.js";

const run = promisify(execFile);
const RUN = `node${process.pid}x${Date.now().toString(36)}`;
let seq = 0;
const unique = (what: string): string => `${RUN}:${what}:${++seq}`;

/** Waits for one event, failing (not hanging) after a generous bound. */
async function next<T>(client: Client, event: string, ms = 15_000): Promise<T> {
  const [value] = (await once(client, event, { signal: AbortSignal.timeout(ms) })) as [T];
  return value;
}

let harness: Harness;
const clients: Client[] = [];

async function connect(options: ClientOptions = {}): Promise<Client> {
  const c = await Client.connect({ socketPath: harness.socket, timeoutMs: 10_000, ...options });
  clients.push(c);
  return c;
}

before(async () => {
  harness = await Harness.start();
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await harness.stop();
});

describe("connection", () => {
  test("hello, ping, stats, health", async () => {
    const c = await connect({ namespace: "default" });
    assert.equal(c.serverInfo?.server, "madsidecar");
    assert.equal(c.serverInfo?.protocol, 1);
    assert.equal(c.serverInfo?.namespace, "default");
    assert.equal(c.serverInfo?.max_frame_bytes, 4 * 1024 * 1024);
    assert.ok(c.serverInfo?.methods.includes("ratelimit.hit_many"));
    const again = await c.hello({ namespace: "default" });
    assert.equal(again.namespace, "default");
    assert.equal(await c.ping(), "pong");
    const stats = await c.stats();
    assert.equal(typeof stats.uptime_ms, "number");
    assert.ok(stats.connections >= 1);
    assert.equal(stats.redis.connected, true);
    assert.equal(typeof stats.cache.l1_hits, "number");
    assert.equal(typeof stats.locks.held, "number");
    assert.equal(typeof stats.presence.tracked, "number");
    const health = await c.health();
    assert.equal(health.ok, true);
    assert.equal(typeof health.redis_latency_us, "number");
  });

  test("the socket path comes from $MADSIDECAR_SOCKET when not given", async () => {
    const saved = process.env["MADSIDECAR_SOCKET"];
    process.env["MADSIDECAR_SOCKET"] = harness.socket;
    try {
      const c = new Client();
      clients.push(c);
      assert.equal(c.socketPath, harness.socket);
      assert.equal(await c.ping(), "pong"); // the first call connects
    } finally {
      if (saved === undefined) delete process.env["MADSIDECAR_SOCKET"];
      else process.env["MADSIDECAR_SOCKET"] = saved;
    }
  });
});

describe("cache", () => {
  test("set/get round-trip every kind of value exactly", async () => {
    const c = await connect();
    const values: unknown[] = [
      null,
      true,
      -33,
      4294967296,
      2n ** 64n - 1n,
      -(2n ** 63n),
      2n ** 53n + 1n,
      1.5,
      "héllo, 世界 🎉",
      new Uint8Array([0, 255, 109, 97, 100, 128]),
      [1, "two", [3.25, null], false],
      { a: { b: [1, 2, { c: new Uint8Array([1]) }] }, n: -1 },
      new Map<unknown, unknown>([
        [1, "one"],
        [2, "two"],
      ]),
      new ExtData(5, new Uint8Array([1, 2, 3])),
    ];
    for (const value of values) {
      const key = unique("v");
      assert.deepEqual(await c.cacheSet({ key, value: value as never }), { ok: true });
      const entry = await c.cacheGet({ key });
      assert.ok(entry, `a hit for ${String(value)}`);
      assert.deepStrictEqual(entry.value, value);
      assert.ok(entry.source === "l1" || entry.source === "l2");
    }
    // A float 64 with an integral value: sent as 2.0 with float64(); it comes back as 2.
    const key = unique("f");
    await c.cacheSet({ key, value: float64(2) });
    assert.equal((await c.cacheGet({ key }))?.value, 2);
  });

  test("get miss, mget, delete, invalidate, warm, ttl_ms", async () => {
    const c = await connect();
    const prefix = unique("p") + ":";
    assert.equal(await c.cacheGet({ key: prefix + "missing" }), null);
    await c.cacheSet({ key: prefix + "a", value: 1, ttl_ms: 60_000 });
    await c.cacheSet({ key: prefix + "b", value: "two" });
    const entries = await c.cacheMget({ keys: [prefix + "a", prefix + "nope", prefix + "b"] });
    assert.equal(entries.length, 3);
    assert.equal(entries[0]?.value, 1);
    assert.ok((entries[0]?.ttl_ms ?? 0) <= 60_000);
    assert.equal(entries[1], null);
    assert.equal(entries[2]?.value, "two");
    assert.deepEqual(await c.cacheWarm({ prefix }), { loaded: 2 });
    assert.deepEqual(await c.cacheDelete({ keys: [prefix + "a", prefix + "nope"] }), { deleted: 1 });
    assert.equal(await c.cacheGet({ key: prefix + "a" }), null);
    await c.cacheSet({ key: prefix + "c", value: 3 });
    assert.deepEqual(await c.cacheInvalidate({ prefix }), { deleted: 2 });
    assert.deepEqual(await c.cacheMget({ keys: [prefix + "b", prefix + "c"] }), [null, null]);
  });

  test("fetch/fill: one lease, a waiter on another connection gets the filled value", async () => {
    const a = await connect();
    const b = await connect();
    const key = unique("fetch");
    const first = await a.cacheFetch({ key, lease_ms: 10_000 });
    assert.ok(!isCacheHit(first) && typeof first.lease === "string");
    const waiter = b.cacheFetch({ key, wait_ms: 10_000 });
    // The waiter is parked on the sidecar until the fill (no sleep needed: fill wakes it).
    assert.deepEqual(await a.cacheFill({ key, lease: first.lease, value: { computed: 42 } }), {
      ok: true,
    });
    const got = await waiter;
    assert.ok(isCacheHit(got));
    assert.deepEqual(got.value, { computed: 42 });
    // A hit now; a stale lease is refused with NOT_HELD.
    const hit = await a.cacheFetch({ key });
    assert.ok(isCacheHit(hit));
    await assert.rejects(a.cacheFill({ key, lease: first.lease, value: 0 }), NotHeldError);
    // A set voids a lease: the fill of a value computed before it never lands.
    const key2 = unique("fetch");
    const lease = await a.cacheFetch({ key: key2 });
    assert.ok(!isCacheHit(lease));
    await b.cacheSet({ key: key2, value: "fresh" });
    await assert.rejects(a.cacheFill({ key: key2, lease: lease.lease, value: "stale" }), NotHeldError);
    assert.equal((await a.cacheGet({ key: key2 }))?.value, "fresh");
  });
});

describe("locks", () => {
  test("acquire, a second connection sees it held, extend, inspect, release", async () => {
    const a = await connect();
    const b = await connect();
    const name = unique("lock");
    const got = await a.lockAcquire({ name, ttl_ms: 30_000 });
    assert.ok(got.acquired);
    assert.equal(typeof got.token, "string");
    assert.ok(typeof got.fence === "number" || typeof got.fence === "bigint");
    assert.equal(got.ttl_ms, 30_000);
    const other = await b.lockAcquire({ name });
    assert.equal(other.acquired, false);
    assert.ok(other.ttl_ms > 0);
    const seen = await b.lockInspect({ name });
    assert.equal(seen.held, true);
    assert.equal(seen.fence, got.fence);
    assert.deepEqual(await a.lockExtend({ name, token: got.token, ttl_ms: 20_000 }), {
      extended: true,
      ttl_ms: 20_000,
    });
    assert.deepEqual(await a.lockExtend({ name, token: "not-the-token", ttl_ms: 20_000 }), {
      extended: false,
      ttl_ms: 0,
    });
    // A waiter on b is woken by the release itself.
    const waiting = b.lockAcquire({ name, wait_ms: 10_000 });
    assert.deepEqual(await a.lockRelease({ name, token: got.token }), { released: true });
    const next = await waiting;
    assert.ok(next.acquired);
    assert.ok(next.fence > got.fence, "fences only grow");
    assert.deepEqual(await a.lockRelease({ name, token: got.token }), { released: false });
    await b.lockRelease({ name, token: next.token });
    const free = await a.lockInspect({ name });
    assert.equal(free.held, false);
  });
});

describe("sessions", () => {
  test("create, get, update, rotate, revoke, revoke_user, list", async () => {
    const c = await connect();
    const user_id = unique("user");
    const s1 = await c.sessionCreate({ user_id, data: { role: "admin", big: 2n ** 60n } });
    assert.equal(typeof s1.token, "string");
    assert.equal(typeof s1.session_id, "string");
    assert.equal(typeof s1.expires_at_ms, "number");
    const got = await c.sessionGet({ token: s1.token });
    assert.ok(got);
    assert.equal(got.user_id, user_id);
    assert.equal(got.session_id, s1.session_id);
    assert.deepStrictEqual(got.data, { role: "admin", big: 2n ** 60n });
    assert.ok(got.created_at_ms <= got.expires_at_ms);
    assert.deepEqual(await c.sessionUpdate({ token: s1.token, data: ["replaced"] }), { updated: true });
    assert.deepEqual((await c.sessionGet({ token: s1.token, touch: false }))?.data, ["replaced"]);
    const rotated = await c.sessionRotate({ token: s1.token });
    assert.ok(rotated);
    assert.equal(await c.sessionGet({ token: s1.token }), null, "the old token stops working");
    assert.equal((await c.sessionGet({ token: rotated.token }))?.session_id, s1.session_id);
    assert.equal(await c.sessionRotate({ token: s1.token }), null);
    const s2 = await c.sessionCreate({ user_id, idle_ttl_ms: 60_000, absolute_ttl_ms: 120_000 });
    const s3 = await c.sessionCreate({ user_id });
    const list = await c.sessionList({ user_id });
    assert.equal(list.length, 3);
    assert.ok(list.every((s) => typeof s.session_id === "string" && "data" in s));
    assert.deepEqual(await c.sessionRevoke({ session_id: s2.session_id }), { revoked: true });
    assert.equal(await c.sessionGet({ token: s2.token }), null);
    assert.deepEqual(await c.sessionRevoke({ token: s2.token }), { revoked: false });
    assert.deepEqual(await c.sessionRevokeUser({ user_id, except_session_id: s3.session_id }), {
      revoked: 1,
    });
    assert.ok(await c.sessionGet({ token: s3.token }));
    assert.deepEqual(await c.sessionRevokeUser({ user_id }), { revoked: 1 });
    assert.deepEqual(await c.sessionList({ user_id }), []);
  });
});

describe("presence", () => {
  test("track, update, list, count, subscribe + presence.diff, untrack, unsubscribe", async () => {
    const a = await connect();
    const watcher = await connect();
    const channel = unique("room");
    const sub = await watcher.presenceSubscribe({ channel });
    assert.deepEqual(sub.members, {});
    assert.equal(typeof sub.version, "number");
    const joined = next<PresenceDiff>(watcher, "presence.diff");
    const { ref } = await a.presenceTrack({ channel, key: "alice", meta: { status: "online" } });
    assert.equal(typeof ref, "string");
    const diff = await joined;
    assert.equal(diff.channel, channel);
    assert.ok(diff.version > sub.version);
    assert.equal(diff.joins["alice"]?.[0]?.ref, ref);
    assert.deepEqual(diff.joins["alice"]?.[0]?.meta, { status: "online" });
    await a.presenceTrack({ channel, key: "bob" });
    assert.deepEqual(await a.presenceCount({ channel }), { keys: 2, refs: 2 });
    assert.deepEqual(await a.presenceUpdate({ channel, ref, meta: { status: "away" } }), {
      updated: true,
    });
    const list = await a.presenceList({ channel });
    const alice = list.members["alice"]?.[0];
    assert.ok(alice);
    assert.deepEqual(alice.meta, { status: "away" });
    assert.equal(typeof alice.node_id, "string");
    assert.equal(typeof alice.online_at_ms, "number");
    assert.deepEqual(await a.presenceUntrack({ channel, ref }), { removed: true });
    assert.deepEqual(await a.presenceUntrack({ channel, ref }), { removed: false });
    assert.deepEqual(await watcher.presenceUnsubscribe({ channel }), { ok: true });
  });
});

describe("pub/sub", () => {
  test("subscribe, publish, a message received, unsubscribe", async () => {
    const pub = await connect();
    const sub = await connect();
    const channel = unique("news");
    assert.deepEqual(await sub.pubsubSubscribe({ channel }), { ok: true });
    const stream = sub.notifications();
    const received = next<PubsubMessage>(sub, "pubsub.message");
    const message = { body: "hi", id: 2n ** 53n + 1n, raw: new Uint8Array([0, 1]) };
    const { receivers } = await pub.pubsubPublish({ channel, message });
    assert.ok(receivers >= 1);
    const got = await received;
    assert.equal(got.channel, channel);
    assert.deepStrictEqual(got.message, message);
    const item = await stream.next();
    assert.equal(item.value?.name, "pubsub.message");
    await stream.return?.();
    assert.deepEqual(await sub.pubsubUnsubscribe({ channel }), { ok: true });
  });
});

describe("rate limits", () => {
  test("hit until denied, peek, hit_many, reset", async () => {
    const c = await connect();
    const key = unique("ip");
    const check = { key, limit: 2, window_ms: 60_000 };
    const first = await c.ratelimitHit(check);
    assert.equal(first.allowed, true);
    assert.equal(first.remaining, 1);
    assert.equal(first.retry_after_ms, 0);
    assert.equal((await c.ratelimitHit(check)).allowed, true);
    const denied = await c.ratelimitHit(check);
    assert.equal(denied.allowed, false);
    assert.ok(denied.retry_after_ms > 0);
    const peek = await c.ratelimitPeek(check);
    assert.equal(peek.remaining, 0);
    const other = unique("user");
    const many = await c.ratelimitHitMany({
      checks: [
        { key: other, limit: 10, window_ms: 1000, algorithm: "gcra" },
        { key, limit: 2, window_ms: 60_000, cost: 1 },
      ],
    });
    assert.equal(many.allowed, false);
    assert.equal(many.results.length, 2);
    assert.equal(many.results[1]?.allowed, false);
    // All or nothing: the allowed check consumed nothing.
    assert.equal((await c.ratelimitPeek({ key: other, limit: 10, window_ms: 1000, algorithm: "gcra" })).remaining, 10);
    assert.deepEqual(await c.ratelimitReset({ key }), { ok: true });
    assert.equal((await c.ratelimitHit(check)).allowed, true);
  });

  test("the rule form: sdk-test allows 2", async () => {
    const c = await connect();
    const key = unique("rule");
    assert.ok(harness.info.rules.some((r) => r.name === "sdk-test"));
    assert.equal((await c.ratelimitHit({ rule: "sdk-test", key })).allowed, true);
    const second = await c.ratelimitHit({ rule: "sdk-test", key });
    assert.equal(second.limit, 2);
    assert.equal(second.remaining, 0);
    const third = await c.ratelimitHit({ rule: "sdk-test", key });
    assert.equal(third.allowed, false);
    assert.ok(third.retry_after_ms > 0);
    assert.equal((await c.ratelimitPeek({ rule: "sdk-test", key })).allowed, false);
    assert.deepEqual(await c.ratelimitReset({ key, rule: "sdk-test" }), { ok: true });
    assert.equal((await c.ratelimitHit({ rule: "sdk-test", key, cost: 2 })).allowed, true);
  });
});

describe("errors", () => {
  test("BAD_REQUEST names the argument; UNKNOWN_METHOD via the generic call", async () => {
    const c = await connect();
    const bad = await c.cacheSet({ key: unique("k"), value: 1, ttl_ms: 0 }).catch((e: unknown) => e);
    assert.ok(bad instanceof BadRequestError);
    assert.equal(bad.argument, "ttl_ms");
    const unknownArg = await c.call("ping", { loud: true }).catch((e: unknown) => e);
    assert.ok(unknownArg instanceof BadRequestError);
    assert.equal(unknownArg.argument, "loud");
    const nope = await c.call("no.such.method").catch((e: unknown) => e);
    assert.ok(nope instanceof UnknownMethodError);
    assert.equal(nope.code, "UNKNOWN_METHOD");
    // The connection is still fine.
    assert.equal(await c.call("ping"), "pong");
  });
});

describe("pipelining and limits", () => {
  test("20,000 requests pipelined in one go complete (read while writing)", async () => {
    const c = await connect({ timeoutMs: 60_000 });
    const calls: Array<[string, object | null]> = [];
    const value = "x".repeat(1024);
    for (let i = 0; i < 20_000; i++) {
      calls.push(i % 4 === 0 ? ["cache.set", { key: `${RUN}:pipe:${i % 100}`, value }] : ["ping", null]);
    }
    const results = await c.pipeline(calls);
    assert.equal(results.length, 20_000);
    assert.ok(results.every((r, i) => (i % 4 === 0 ? (r as { ok: boolean }).ok === true : r === "pong")));
    const many = await Promise.all(Array.from({ length: 20_000 }, () => c.ping()));
    assert.ok(many.every((r) => r === "pong"));
  });

  test("frame limit: a reply over maxFrameBytes fails cleanly, and the next call works", async () => {
    const big = await connect();
    const key = unique("big");
    await big.cacheSet({ key, value: "y".repeat(4096) });
    const small = await connect({ maxFrameBytes: 1024 });
    const lost = next<ConnectionLost>(small, "connection.lost");
    const error = await small.cacheGet({ key }).catch((e: unknown) => e);
    assert.ok(error instanceof FrameLimitError, String(error));
    assert.ok(error.frameBytes > 4096);
    assert.equal(error.maxFrameBytes, 1024);
    assert.ok((await lost).error instanceof FrameLimitError);
    const fresh = await connect({ maxFrameBytes: 1024 });
    assert.equal(await fresh.ping(), "pong");
    assert.equal(await small.ping(), "pong", "the same client reconnected");
    // Outgoing: a request over the sidecar's limit is refused before it is sent.
    const huge = await big.cacheSet({ key, value: "z".repeat(5 * 1024 * 1024) }).catch((e: unknown) => e);
    assert.ok(huge instanceof FrameLimitError);
    assert.equal(await big.ping(), "pong");
  });
});

describe("example", () => {
  test("examples/quickstart.mjs runs against the sidecar", async () => {
    const script = fileURLToPath(new URL("../../examples/quickstart.mjs", import.meta.url));
    const { stdout } = await run(process.execPath, [script], {
      env: { ...process.env, MADSIDECAR_SOCKET: harness.socket },
      timeout: 60_000,
    });
    assert.match(stdout, /^ok$/m);
    assert.match(stdout, /pubsub.message: hi/);
  });
});

// These stop or restart the sidecar: every connection of the file is dropped.
describe("faults", () => {
  // FLUSHALL also drops the node's presence lease until its next heartbeat: after the
  // presence tests.
  test("lock.lost arrives after the lease is lost (harness flush)", async () => {
    const c = await connect();
    const name = unique("lost");
    const got = await c.lockAcquire({ name, ttl_ms: 600 });
    assert.ok(got.acquired);
    const stream = c.notifications();
    const lost = next<LockLost>(c, "lock.lost");
    await harness.command("flush");
    const note = await lost;
    assert.equal(note.name, name);
    assert.equal(note.token, got.token);
    assert.equal(note.fence, got.fence);
    const item = await stream.next();
    assert.equal(item.value?.name, "lock.lost");
    await stream.return?.();
  });

  test("reconnect after a restart: told of the loss, calls work again, the lock is not re-taken", async () => {
    const c = await connect();
    const name = unique("relock");
    const held = await c.lockAcquire({ name, ttl_ms: 1000 });
    assert.ok(held.acquired);
    const stream = c.notifications();
    const lost = next<ConnectionLost>(c, "connection.lost", 30_000);
    const back = next(c, "reconnected", 30_000);
    // A call parked on the sidecar (waiting for another connection's fill) when it dies.
    const leaseKey = unique("parked");
    const holder = await connect();
    assert.ok(!isCacheHit(await holder.cacheFetch({ key: leaseKey })));
    const parked = c.cacheFetch({ key: leaseKey, wait_ms: 60_000 }).catch((e: unknown) => e);
    await harness.command("restart");
    const loss = await lost;
    assert.equal(loss.reconnecting, true);
    assert.ok((await parked) instanceof ConnectionClosedError, "a pending call fails on the loss");
    assert.equal((await stream.next()).value?.name, "connection.lost");
    await stream.return?.();
    await back;
    assert.equal(await c.ping(), "pong");
    // Not re-taken: the new sidecar holds no lease for anyone, and a fresh connection
    // gets the lock once the old lease runs out (nobody renews it).
    const stats = await c.stats();
    assert.equal(stats.locks.held, 0);
    const fresh = await connect();
    const retaken = await fresh.lockAcquire({ name, ttl_ms: 5000, wait_ms: 10_000 });
    assert.ok(retaken.acquired, "the old lease was left to expire");
    assert.ok(retaken.fence > held.fence);
    assert.deepEqual(await c.lockRelease({ name, token: held.token }), { released: false });
  });

  test("a stopped sidecar: client timeout while reconnecting; with reconnect off, closed", async () => {
    const reconnecting = await connect();
    const noReconnect = await connect({ reconnect: false });
    const lostA = next<ConnectionLost>(reconnecting, "connection.lost");
    const lostB = next<ConnectionLost>(noReconnect, "connection.lost");
    await harness.command("stop");
    assert.equal((await lostA).reconnecting, true);
    assert.equal((await lostB).reconnecting, false);
    const t0 = Date.now();
    const timedOut = await reconnecting.ping({ timeoutMs: 300 }).catch((e: unknown) => e);
    assert.ok(timedOut instanceof CallTimeoutError, String(timedOut));
    assert.ok(Date.now() - t0 >= 290);
    await assert.rejects(noReconnect.ping(), ConnectionClosedError);
    const back = next(reconnecting, "reconnected", 30_000);
    const waiting = reconnecting.ping({ timeoutMs: 30_000 }); // waits for the reconnect
    await harness.command("start");
    await back;
    assert.equal(await waiting, "pong");
    await assert.rejects(noReconnect.ping(), ConnectionClosedError);
    const fresh = await connect({ reconnect: false });
    assert.equal(await fresh.ping(), "pong");
  });
});
