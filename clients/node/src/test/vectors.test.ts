/**
 * Conformance vectors (tests/vectors/protocol-v1.json, made by the Python protocol module):
 * every request through the typed client methods must produce the frame byte for byte;
 * every response / notification frame must come out of the client as the expected value.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  BadFrameError,
  BadRequestError,
  Client,
  Float64,
  ForbiddenError,
  InternalError,
  METHOD_ARGS,
  NotHeldError,
  ServerError,
  ServerTimeoutError,
  ShuttingDownError,
  UnavailableError,
  UnknownCodeError,
  UnknownMethodError,
  type Notification,
} from "../index.js";
import { FakeSidecar } from "./fake.js";

const VECTORS = fileURLToPath(new URL("../../../../tests/vectors/", import.meta.url));

interface RequestVector {
  name: string;
  method: string;
  msgid: number;
  args?: Record<string, unknown>;
  frame: string;
}
interface ResponseVector {
  name: string;
  method: string;
  msgid: number;
  result?: unknown;
  error?: Record<string, unknown>;
  frame: string;
}
interface NotificationVector {
  name: string;
  notification: string;
  payload: Record<string, unknown>;
  frame: string;
}
const vectors = JSON.parse(readFileSync(VECTORS + "protocol-v1.json", "utf8")) as {
  requests: RequestVector[];
  responses: ResponseVector[];
  notifications: NotificationVector[];
};
const methods = JSON.parse(readFileSync(VECTORS + "methods.json", "utf8")) as {
  methods: Array<{ name: string; args: Array<{ name: string }> }>;
};

type Mode = "request" | "expected";

/** Tagged JSON -> a JS value. For requests a `$float` is sent as a float 64 (a `Float64`
 * wrapper when integral, a plain number otherwise); as an expected decoded value it is a
 * number (JS cannot tell 2.0 from 2: the one documented difference). */
function fromTagged(v: unknown, mode: Mode): unknown {
  if (Array.isArray(v)) return v.map((x) => fromTagged(x, mode));
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 1) {
    if (keys[0] === "$int") return BigInt(o["$int"] as string);
    if (keys[0] === "$float") {
      const x = o["$float"] as number;
      return mode === "request" && Number.isInteger(x) ? new Float64(x) : x;
    }
    if (keys[0] === "$bin") return new Uint8Array(Buffer.from(o["$bin"] as string, "hex"));
    if (keys[0] === "$map") {
      return new Map(
        (o["$map"] as Array<[unknown, unknown]>).map(([k, x]) => [fromTagged(k, mode), fromTagged(x, mode)]),
      );
    }
  }
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = fromTagged(o[k], mode);
  return out;
}

/** Every method through its typed client method (the argument objects are the typed ones). */
/* eslint-disable @typescript-eslint/no-explicit-any */
type Invoke = (c: Client, a: any) => Promise<unknown>;
const TYPED: Record<string, Invoke> = {
  hello: (c, a) => c.hello(a),
  ping: (c) => c.ping(),
  stats: (c) => c.stats(),
  health: (c) => c.health(),
  "cache.get": (c, a) => c.cacheGet(a),
  "cache.mget": (c, a) => c.cacheMget(a),
  "cache.set": (c, a) => c.cacheSet(a),
  "cache.delete": (c, a) => c.cacheDelete(a),
  "cache.invalidate": (c, a) => c.cacheInvalidate(a),
  "cache.fetch": (c, a) => c.cacheFetch(a),
  "cache.fill": (c, a) => c.cacheFill(a),
  "cache.warm": (c, a) => c.cacheWarm(a),
  "lock.acquire": (c, a) => c.lockAcquire(a),
  "lock.release": (c, a) => c.lockRelease(a),
  "lock.extend": (c, a) => c.lockExtend(a),
  "lock.inspect": (c, a) => c.lockInspect(a),
  "session.create": (c, a) => c.sessionCreate(a),
  "session.get": (c, a) => c.sessionGet(a),
  "session.update": (c, a) => c.sessionUpdate(a),
  "session.rotate": (c, a) => c.sessionRotate(a),
  "session.revoke": (c, a) => c.sessionRevoke(a),
  "session.revoke_user": (c, a) => c.sessionRevokeUser(a),
  "session.list": (c, a) => c.sessionList(a),
  "pubsub.publish": (c, a) => c.pubsubPublish(a),
  "pubsub.subscribe": (c, a) => c.pubsubSubscribe(a),
  "pubsub.unsubscribe": (c, a) => c.pubsubUnsubscribe(a),
  "presence.track": (c, a) => c.presenceTrack(a),
  "presence.update": (c, a) => c.presenceUpdate(a),
  "presence.untrack": (c, a) => c.presenceUntrack(a),
  "presence.list": (c, a) => c.presenceList(a),
  "presence.count": (c, a) => c.presenceCount(a),
  "presence.subscribe": (c, a) => c.presenceSubscribe(a),
  "presence.unsubscribe": (c, a) => c.presenceUnsubscribe(a),
  "ratelimit.hit": (c, a) => c.ratelimitHit(a),
  "ratelimit.hit_many": (c, a) => c.ratelimitHitMany(a),
  "ratelimit.peek": (c, a) => c.ratelimitPeek(a),
  "ratelimit.reset": (c, a) => c.ratelimitReset(a),
};

function invoke(c: Client, method: string, args: unknown): Promise<unknown> {
  const typed = TYPED[method];
  return typed ? typed(c, args) : c.call(method, args as object);
}

describe("methods.json", () => {
  test("every method served has a typed client method and the canonical argument order", () => {
    for (const m of methods.methods) {
      assert.ok(TYPED[m.name], `no typed method for ${m.name}`);
      assert.deepEqual(METHOD_ARGS[m.name], m.args.map((a) => a.name), m.name);
    }
    assert.equal(Object.keys(METHOD_ARGS).length, methods.methods.length);
  });
});

describe("conformance vectors", () => {
  let fake: FakeSidecar;
  let client: Client;

  before(async () => {
    fake = await new FakeSidecar().start();
    client = await Client.connect({ socketPath: fake.socketPath, timeoutMs: 5000 });
  });
  after(async () => {
    await client.close();
    await fake.stop();
  });

  test(`requests (${vectors.requests.length}) encode byte for byte through the typed methods`, async () => {
    for (const v of vectors.requests) {
      client._setNextMsgid(v.msgid);
      const pending = invoke(client, v.method, fromTagged(v.args ?? {}, "request"));
      const got = await fake.next();
      assert.equal(got.frame.toString("hex"), v.frame, v.name);
      await pending;
    }
  });

  const sampleArgs = (method: string): unknown =>
    fromTagged(vectors.requests.find((r) => r.method === method)?.args ?? {}, "request");

  test(`responses (${vectors.responses.length}) decode into the typed results`, async () => {
    for (const v of vectors.responses) {
      if (v.error) continue;
      client._setNextMsgid(v.msgid);
      fake.nextReply = Buffer.from(v.frame, "hex");
      const result = await invoke(client, v.method, sampleArgs(v.method));
      assert.deepStrictEqual(result, fromTagged(v.result, "expected"), v.name);
    }
  });

  test("64-bit integers: a bigint past 2**53, a number within", async () => {
    const byName = (name: string): ResponseVector => {
      const v = vectors.responses.find((r) => r.name === name);
      assert.ok(v, name);
      return v;
    };
    client._setNextMsgid(30);
    fake.nextReply = Buffer.from(byName("lock.acquire (fence past 2**53)").frame, "hex");
    const big = await client.lockAcquire({ name: "x" });
    assert.ok(big.acquired);
    assert.equal(big.fence, 4611686018427387907n);
    client._setNextMsgid(30);
    fake.nextReply = Buffer.from(byName("lock.acquire (acquired)").frame, "hex");
    const small = await client.lockAcquire({ name: "x" });
    assert.ok(small.acquired);
    assert.equal(small.fence, 1795687664815445);
    // The one known difference: a float 64 with an integral value decodes as a number.
    client._setNextMsgid(10);
    fake.nextReply = Buffer.from(byName("cache.get (hit float_integral)").frame, "hex");
    const entry = await client.cacheGet({ key: "k" });
    assert.equal(entry?.value, 2);
  });

  const errorClasses: Record<string, new (...a: never[]) => ServerError> = {
    BAD_REQUEST: BadRequestError,
    UNKNOWN_METHOD: UnknownMethodError,
    FORBIDDEN: ForbiddenError,
    UNAVAILABLE: UnavailableError,
    NOT_HELD: NotHeldError,
    TIMEOUT: ServerTimeoutError,
    SHUTTING_DOWN: ShuttingDownError,
    INTERNAL: InternalError,
  };

  test("error responses map to one class per code, with the whole error map", async () => {
    let count = 0;
    for (const v of vectors.responses) {
      if (!v.error) continue;
      count++;
      client._setNextMsgid(v.msgid);
      fake.nextReply = Buffer.from(v.frame, "hex");
      const error = await invoke(client, v.method, sampleArgs(v.method)).then(
        () => assert.fail(`${v.name}: no error`),
        (e: unknown) => e,
      );
      assert.ok(error instanceof ServerError, v.name);
      const code = v.error["code"] as string;
      assert.equal(error.code, code);
      assert.deepStrictEqual({ ...error.data }, fromTagged(v.error, "expected"), v.name);
      const cls = errorClasses[code] ?? UnknownCodeError;
      assert.ok(error instanceof cls, `${v.name}: ${error.name}`);
      if (error instanceof BadRequestError) assert.equal(error.argument, "key");
      if (error instanceof UnavailableError) assert.equal(error.retryAfterMs, 250);
      if (error instanceof InternalError) assert.equal(error.errorId, "7f3a9c");
      if (error instanceof UnknownCodeError) assert.equal(error.code, "SOMETHING_NEW");
    }
    assert.equal(count, 9);
  });
});

describe("notification vectors", () => {
  let fake: FakeSidecar;
  let client: Client;

  before(async () => {
    fake = await new FakeSidecar().start();
    client = await Client.connect({ socketPath: fake.socketPath, timeoutMs: 5000 });
  });
  after(async () => {
    await client.close();
    await fake.stop();
  });

  test(`notifications (${vectors.notifications.length}) arrive typed, unknown names ignored`, async () => {
    const stream = client.notifications();
    const generic: Array<[string, unknown]> = [];
    client.on("notification", (name, payload) => generic.push([name, payload]));
    let known = 0;
    // shutdown makes the client stop sending on this connection: last.
    const ordered = [...vectors.notifications].sort(
      (a, b) => Number(a.notification === "shutdown") - Number(b.notification === "shutdown"),
    );
    for (const v of ordered) {
      const expected = fromTagged(v.payload, "expected");
      if (v.notification === "something.new") {
        fake.push(Buffer.from(v.frame, "hex"));
        // A ping after it proves the stream stayed in step and nothing was raised.
        assert.equal(await client.ping(), null); // the fake answers nil
        assert.deepStrictEqual(generic.at(-1), ["something.new", expected]);
        continue;
      }
      known++;
      const typed = new Promise<unknown>((resolve) =>
        client.once(v.notification as "lock.lost", (payload: unknown) => resolve(payload)),
      );
      fake.push(Buffer.from(v.frame, "hex"));
      const got = await typed;
      if (v.notification === "error") {
        assert.ok(got instanceof BadFrameError);
        assert.deepStrictEqual({ ...got.data }, expected);
      } else {
        assert.deepStrictEqual(got, expected, v.name);
      }
      const item = (await stream.next()).value as Notification;
      assert.equal(item.name, v.notification, v.name);
      assert.deepStrictEqual(item.payload, expected, v.name);
    }
    assert.equal(known, vectors.notifications.length - 1);
    // Unknown names never reach the iterator: after the last, nothing is queued.
    await stream.return?.();
  });
});
