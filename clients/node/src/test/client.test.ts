/**
 * Client behaviour against an in-process fake sidecar (timing and wire details a real
 * sidecar cannot be made to show on demand), plus the codec and frame reader.
 */

import assert from "node:assert/strict";
import { once } from "node:events";
import { after, afterEach, before, describe, test } from "node:test";

import { ValueDecoder, Writer, decode, encode } from "../codec.js";
import {
  CallTimeoutError,
  Client,
  ConnectionClosedError,
  ExtData,
  Float64,
  FrameLimitError,
  ProtocolViolationError,
  ServerError,
  type ConnectionLost,
} from "../index.js";
import { FrameReader, encodeRequest, resolveSocketPath, type Message } from "../protocol.js";
import { FakeSidecar, frameOf } from "./fake.js";

describe("codec", () => {
  test("integers take the shortest form Python's msgpack gives them", () => {
    const hex = (v: unknown): string => encode(v).toString("hex");
    assert.equal(hex(0), "00");
    assert.equal(hex(127), "7f");
    assert.equal(hex(128), "cc80");
    assert.equal(hex(-32), "e0");
    assert.equal(hex(-33), "d0df");
    assert.equal(hex(65535), "cdffff");
    assert.equal(hex(2 ** 32), "cf0000000100000000");
    assert.equal(hex(-(2 ** 31)), "d280000000");
    assert.equal(hex(-(2 ** 31) - 1), "d3ffffffff7fffffff");
    assert.equal(hex(5n), "05", "a small bigint is a small int");
    assert.equal(hex(-1n), "ff");
    assert.equal(hex(2n ** 53n + 1n), "cf0020000000000001");
    assert.equal(hex(2n ** 64n - 1n), "cfffffffffffffffff");
    assert.equal(hex(-(2n ** 63n)), "d38000000000000000");
    assert.equal(hex(2 ** 60), "cf1000000000000000", "an integral number past 2**53 is an int");
    assert.throws(() => encode(2n ** 64n), RangeError);
    assert.equal(hex(1.5), "cb3ff8000000000000");
    assert.equal(hex(new Float64(2)), "cb4000000000000000");
  });

  test("decoding: 64-bit ints exact, maps with non-str keys as Map, bin and ext kept", () => {
    const cases: unknown[] = [
      2n ** 64n - 1n,
      -(2n ** 63n),
      2n ** 53n,
      Number.MAX_SAFE_INTEGER,
      Number.MIN_SAFE_INTEGER,
      new Map<unknown, unknown>([
        [1, "one"],
        [new Uint8Array([1]), [2n ** 60n]],
        ["s", 1],
      ]),
      { nested: new Map([[-1, null]]) },
      new ExtData(-1, new Uint8Array([0, 0, 0, 1])),
      new ExtData(7, new Uint8Array(300)),
      "é".repeat(100),
      "x".repeat(70_000),
    ];
    for (const v of cases) assert.deepStrictEqual(decode(encode(v)), v);
    assert.equal(decode(encode(2 ** 32)), 2 ** 32);
    assert.equal(typeof decode(Buffer.from("cf0000000100000000", "hex")), "number");
    assert.throws(() => decode(Buffer.from("c0c0", "hex")), "exactly one value");
    const d = new ValueDecoder();
    const bin = d.decode(Buffer.from("c403010203", "hex"));
    assert.ok(bin instanceof Uint8Array && !Buffer.isBuffer(bin));
  });

  test("requests: canonical argument order, unknown arguments after, undefined left out", () => {
    const a = encodeRequest(1, "lock.acquire", { wait_ms: 5, name: "n", renew: undefined });
    const b = encodeRequest(1, "lock.acquire", { name: "n", wait_ms: 5 });
    assert.deepEqual(a, b);
    assert.deepEqual(decode(a.subarray(4)), [0, 1, "lock.acquire", [{ name: "n", wait_ms: 5 }]]);
    const c = encodeRequest(2, "ping", { extra: 1 });
    assert.deepEqual(decode(c.subarray(4)), [0, 2, "ping", [{ extra: 1 }]]);
    assert.deepEqual(decode(encodeRequest(3, "ping", { x: undefined }).subarray(4)), [0, 3, "ping", []]);
    const w = new Writer(1);
    w.str("é".repeat(40)); // header size guessed from the UTF-16 length, corrected after
    assert.deepEqual(decode(w.take()), "é".repeat(40));
  });

  test("the socket path: explicit, else $MADSIDECAR_SOCKET, else the default", () => {
    const saved = process.env["MADSIDECAR_SOCKET"];
    try {
      process.env["MADSIDECAR_SOCKET"] = "/tmp/from-env.sock";
      assert.equal(resolveSocketPath("/x.sock"), "/x.sock");
      assert.equal(resolveSocketPath(), "/tmp/from-env.sock");
      delete process.env["MADSIDECAR_SOCKET"];
      assert.equal(resolveSocketPath(), "/run/madsidecar/madsidecar.sock");
    } finally {
      if (saved !== undefined) process.env["MADSIDECAR_SOCKET"] = saved;
    }
  });
});

describe("frame reader", () => {
  const frames = Buffer.concat([
    frameOf([1, 1, null, "pong"]),
    frameOf([2, "shutdown", [{ deadline_ms: 5 }]]),
    frameOf([1, 2, null, "x".repeat(1000)]),
  ]);

  test("frames split anywhere (one byte at a time) come out whole, in order", () => {
    const reader = new FrameReader();
    const out: Message[] = [];
    for (let i = 0; i < frames.length; i++) reader.feed(frames.subarray(i, i + 1), (m) => out.push(m));
    assert.equal(out.length, 3);
    assert.deepEqual(out[0], { kind: 1, msgid: 1, error: null, result: "pong" });
    assert.deepEqual(out[1], { kind: 2, name: "shutdown", payload: { deadline_ms: 5 } });
  });

  test("a header over the limit is refused before any of its body arrives", () => {
    const reader = new FrameReader(100);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(4 * 1024 * 1024);
    assert.throws(() => reader.feed(header, () => undefined), FrameLimitError);
    assert.throws(() => new FrameReader().feed(Buffer.alloc(4), () => undefined), ProtocolViolationError);
  });
});

describe("client against a fake sidecar", () => {
  let fake: FakeSidecar;
  const clients: Client[] = [];
  const connect = async (options = {}): Promise<Client> => {
    const c = await Client.connect({ socketPath: fake.socketPath, ...options });
    clients.push(c);
    return c;
  };

  before(async () => {
    fake = await new FakeSidecar().start();
  });
  afterEach(() => fake.clear());
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await fake.stop();
  });

  test("responses matched by msgid, whatever their order", async () => {
    const c = await connect();
    fake.answer = false;
    const p1 = c.call("ping");
    const p2 = c.call("stats");
    const r1 = await fake.next();
    const r2 = await fake.next();
    fake.push(Buffer.concat([frameOf([1, r2.msgid, null, "second"]), frameOf([1, r1.msgid, null, "first"])]));
    assert.equal(await p1, "first");
    assert.equal(await p2, "second");
    fake.answer = true;
  });

  test("a timed-out call fails with CallTimeoutError; its late reply is dropped quietly", async () => {
    const c = await connect();
    fake.answer = false;
    const slow = c.call("ping", null, { timeoutMs: 50 });
    const req = await fake.next();
    await assert.rejects(slow, CallTimeoutError);
    const after = c.call("ping", null, { timeoutMs: 5000 });
    const req2 = await fake.next();
    assert.notEqual(req2.msgid, req.msgid, "a timed-out call's msgid is not reused while unanswered");
    fake.push(frameOf([1, req.msgid, null, "late"])); // dropped
    fake.push(frameOf([1, req2.msgid, null, "on time"]));
    assert.equal(await after, "on time");
    fake.answer = true;
  });

  test("a call sending wait_ms gets that much more time", async () => {
    const c = await connect();
    fake.answer = false;
    const t0 = Date.now();
    const p = c.lockAcquire({ name: "n", wait_ms: 300 }, { timeoutMs: 100 });
    await fake.next();
    await assert.rejects(p, CallTimeoutError);
    assert.ok(Date.now() - t0 >= 390, `${Date.now() - t0} ms`);
    fake.answer = true;
  });

  test("AbortSignal aborts a call", async () => {
    const c = await connect();
    fake.answer = false;
    const controller = new AbortController();
    const p = c.ping({ signal: controller.signal });
    await fake.next();
    controller.abort();
    await assert.rejects(p, { name: "AbortError" });
    await assert.rejects(c.ping({ signal: AbortSignal.abort() }), { name: "AbortError" });
    fake.answer = true;
  });

  test("msgids wrap around after 2**32 - 1", async () => {
    const c = await connect();
    c._setNextMsgid(0xffff_ffff);
    await c.ping();
    await c.ping();
    // (The fake answered both: their msgids were 4294967295 and 0.)
    c._setNextMsgid(0xffff_ffff);
    fake.answer = false;
    const p = c.ping();
    const q = c.ping();
    const a = await fake.next();
    const b = await fake.next();
    assert.deepEqual([a.msgid, b.msgid], [0xffff_ffff, 0]);
    fake.push(Buffer.concat([frameOf([1, a.msgid, null, 1]), frameOf([1, b.msgid, null, 2])]));
    assert.deepEqual(await Promise.all([p, q]), [1, 2]);
    fake.answer = true;
  });

  test("a throwing listener and an unheard `error` notification break nothing", async () => {
    const c = await connect();
    const warned = once(process, "warning");
    c.on("pubsub.message", () => {
      throw new Error("listener bug");
    });
    const seen: unknown[] = [];
    c.on("pubsub.message", (m) => seen.push(m));
    fake.push(frameOf([2, "pubsub.message", [{ channel: "c", message: 1 }]]));
    fake.push(frameOf([2, "error", [{ code: "BAD_FRAME", message: "x" }]]));
    assert.equal(await c.ping(), null);
    assert.deepEqual(seen, [{ channel: "c", message: 1 }]);
    const [warning] = (await warned) as [Error];
    assert.match(warning.message, /listener bug/);
    const errors: ServerError[] = [];
    c.on("error", (e) => errors.push(e));
    fake.push(frameOf([2, "error", [{ code: "BAD_REQUEST", message: "y" }]]));
    assert.equal(await c.ping(), null);
    assert.equal(errors[0]?.code, "BAD_REQUEST");
  });

  test("an over-limit frame closes the connection and fails pending calls", async () => {
    const c = await connect({ maxFrameBytes: 200, reconnect: false });
    fake.answer = false;
    const p = c.ping();
    const req = await fake.next();
    const lost = once(c, "connection.lost");
    fake.push(frameOf([1, req.msgid, null, "z".repeat(500)]));
    await assert.rejects(p, FrameLimitError);
    const [info] = (await lost) as [ConnectionLost];
    assert.equal(info.reconnecting, false);
    await assert.rejects(c.ping(), ConnectionClosedError);
    fake.answer = true;
    await c.open(); // reconnect off: only an explicit open() connects again
    assert.equal(await c.ping(), null);
  });

  test("an unreadable frame is a protocol violation", async () => {
    const c = await connect({ reconnect: false });
    fake.answer = false;
    const p = c.ping();
    await fake.next();
    fake.push(Buffer.from("00000001c1", "hex"));
    await assert.rejects(p, ProtocolViolationError);
    fake.answer = true;
  });

  test("shutdown: new calls wait for the next connection, which says hello and nothing else", async () => {
    // Only this client on the fake: the others would reconnect too.
    await Promise.all(clients.map((x) => x.close()));
    const c = await connect({ namespace: "default" });
    const back = once(c, "reconnected");
    fake.push(frameOf([2, "shutdown", [{ deadline_ms: 0 }]]));
    await once(c, "shutdown");
    const waiting = c.ping();
    for (const s of fake.sockets) s.destroy(); // the drained sidecar closes the connection
    const hellosBefore = fake.hellos.length;
    await back;
    assert.equal(await waiting, null);
    assert.equal(fake.hellos.length, hellosBefore + 1);
    assert.deepEqual(fake.hellos.at(-1), {
      client: "madsidecar-node",
      version: "0.1.0",
      namespace: "default",
    });
    // After the hello, only the call the application made: nothing replayed.
    const sent = await fake.next();
    assert.equal(sent.method, "ping");
  });

  test("close() fails pending calls; calls after it fail at once", async () => {
    const c = await connect();
    fake.answer = false;
    const p = c.ping();
    await fake.next();
    const failed = assert.rejects(p, ConnectionClosedError);
    await c.close();
    await failed;
    await assert.rejects(c.ping(), ConnectionClosedError);
    fake.answer = true;
  });

  test("connect to a missing socket: a clear error (reconnect off) or after connectTimeoutMs", async () => {
    await assert.rejects(
      Client.connect({ socketPath: "/nonexistent/madsidecar.sock", reconnect: false }),
      (e: unknown) => e instanceof ConnectionClosedError && /ENOENT/.test(e.message),
    );
    const t0 = Date.now();
    await assert.rejects(
      Client.connect({ socketPath: "/nonexistent/madsidecar.sock", connectTimeoutMs: 300 }),
      ConnectionClosedError,
    );
    assert.ok(Date.now() - t0 < 5000);
  });
});
