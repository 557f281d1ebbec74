/**
 * Protocol v1, without I/O: request frames, the frame reader, message shapes.
 */

import { ValueDecoder, Writer } from "./codec.js";
import { FrameLimitError, ProtocolViolationError } from "./errors.js";

export const PROTOCOL_VERSION = 1;
export const DEFAULT_SOCKET_PATH = "/run/madsidecar/madsidecar.sock";
/** The server's default `max_frame_bytes` (4 MiB), also this client's default limit. */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;
export const MAX_MSGID = 0xffff_ffff;

/** The explicit path, else `$MADSIDECAR_SOCKET`, else `/run/madsidecar/madsidecar.sock`. */
export function resolveSocketPath(explicit?: string | null): string {
  if (explicit) return explicit;
  const fromEnv = process.env["MADSIDECAR_SOCKET"];
  return fromEnv ? fromEnv : DEFAULT_SOCKET_PATH;
}

/**
 * Every method the sidecar serves, with its arguments in the canonical order
 * (`tests/vectors/methods.json`): requests encode their arguments in this order, absent
 * optional ones left out. A `ratelimit.hit_many` check uses `ratelimit.hit`'s order.
 */
export const METHOD_ARGS: Readonly<Record<string, readonly string[]>> = {
  hello: ["client", "version", "namespace"],
  ping: [],
  stats: [],
  health: [],
  "cache.get": ["key"],
  "cache.mget": ["keys"],
  "cache.set": ["key", "value", "ttl_ms"],
  "cache.delete": ["keys"],
  "cache.invalidate": ["prefix"],
  "cache.fetch": ["key", "ttl_ms", "lease_ms", "wait_ms", "refresh_ahead_ms"],
  "cache.fill": ["key", "lease", "value", "ttl_ms"],
  "cache.warm": ["prefix"],
  "lock.acquire": ["name", "ttl_ms", "wait_ms", "renew", "wait_replicas"],
  "lock.release": ["name", "token"],
  "lock.extend": ["name", "token", "ttl_ms"],
  "lock.inspect": ["name"],
  "session.create": ["user_id", "data", "idle_ttl_ms", "absolute_ttl_ms"],
  "session.get": ["token", "touch"],
  "session.update": ["token", "data"],
  "session.rotate": ["token"],
  "session.revoke": ["token", "session_id"],
  "session.revoke_user": ["user_id", "except_session_id"],
  "session.list": ["user_id"],
  "pubsub.publish": ["channel", "message"],
  "pubsub.subscribe": ["channel"],
  "pubsub.unsubscribe": ["channel"],
  "presence.track": ["channel", "key", "meta"],
  "presence.update": ["channel", "ref", "meta"],
  "presence.untrack": ["channel", "ref"],
  "presence.list": ["channel"],
  "presence.count": ["channel"],
  "presence.subscribe": ["channel"],
  "presence.unsubscribe": ["channel"],
  "ratelimit.hit": ["key", "limit", "window_ms", "algorithm", "rule", "on_redis_down", "cost"],
  "ratelimit.hit_many": ["checks"],
  "ratelimit.peek": ["key", "limit", "window_ms", "algorithm", "rule", "on_redis_down"],
  "ratelimit.reset": ["key", "rule"],
};

type Args = Readonly<Record<string, unknown>>;

/** Writes the named arguments as a map: known ones in `order`, then any others as given. */
function writeArgs(w: Writer, args: Args, order: readonly string[] | undefined): void {
  if (order === undefined) {
    w.object(args as Record<string, unknown>);
    return;
  }
  let size = 0;
  for (const k in args) if (args[k] !== undefined) size++;
  w.mapHeader(size);
  let written = 0;
  for (const k of order) {
    const v = args[k];
    if (v === undefined) continue;
    w.str(k);
    if (k === "checks" && order === METHOD_ARGS["ratelimit.hit_many"] && Array.isArray(v)) {
      w.arrayHeader(v.length);
      for (const check of v) {
        if (check !== null && typeof check === "object" && !Array.isArray(check)) {
          writeArgs(w, check as Args, METHOD_ARGS["ratelimit.hit"]);
        } else {
          w.value(check);
        }
      }
    } else {
      w.value(v);
    }
    written++;
  }
  if (written === size) return;
  // Arguments this SDK does not know (a newer sidecar's): after the known ones.
  for (const k in args) {
    const v = args[k];
    if (v === undefined || order.includes(k)) continue;
    w.str(k);
    w.value(v);
  }
}

function hasArgs(args: Args | null | undefined): args is Args {
  if (!args) return false;
  for (const k in args) if (args[k] !== undefined) return true;
  return false;
}

/**
 * Appends the frame of `[0, msgid, method, [args]]` to `w` and returns its body's length.
 * No arguments (or all `undefined`): params is the empty array.
 */
export function writeRequest(
  w: Writer,
  msgid: number,
  method: string,
  args?: Args | null,
): number {
  const start = w.pos;
  w.ensure(4);
  w.pos += 4;
  w.u8(0x94);
  w.u8(0x00);
  w.num(msgid);
  w.str(method);
  if (hasArgs(args)) {
    w.u8(0x91);
    writeArgs(w, args, METHOD_ARGS[method]);
  } else {
    w.u8(0x90);
  }
  const length = w.pos - start - 4;
  w.buf.writeUInt32BE(length, start);
  return length;
}

/** The whole frame (length prefix included) of one request. */
export function encodeRequest(msgid: number, method: string, args?: Args | null): Buffer {
  const w = new Writer(64);
  writeRequest(w, msgid, method, args);
  return w.take(0);
}

/** `[1, msgid, error, result]` */
export interface ResponseMessage {
  kind: 1;
  msgid: number;
  error: unknown;
  result: unknown;
}

/** `[2, name, [payload]]` */
export interface NotificationMessage {
  kind: 2;
  name: string;
  payload: Record<string, unknown>;
}

export type Message = ResponseMessage | NotificationMessage;

/** What a decoded frame holds, or ProtocolViolationError when it is no message we know. */
export function toMessage(value: unknown): Message {
  if (Array.isArray(value)) {
    if (value.length === 4 && value[0] === 1 && typeof value[1] === "number") {
      return { kind: 1, msgid: value[1], error: value[2], result: value[3] };
    }
    if (value.length === 3 && value[0] === 2 && typeof value[1] === "string") {
      const params: unknown = value[2];
      const first: unknown = Array.isArray(params) ? params[0] : undefined;
      const payload =
        first !== null && typeof first === "object" && !Array.isArray(first) && !(first instanceof Map)
          ? (first as Record<string, unknown>)
          : {};
      return { kind: 2, name: value[1], payload };
    }
  }
  let shown: string;
  try {
    shown = JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    shown = String(value);
  }
  throw new ProtocolViolationError(`unexpected message from the sidecar: ${shown.slice(0, 200)}`);
}

/**
 * Splits a byte stream into frames and decodes them. A length over `maxFrameBytes` (or 0)
 * throws FrameLimitError / ProtocolViolationError as soon as its 4 header bytes are in,
 * before any of the body is buffered.
 */
export class FrameReader {
  private parts: Buffer[] = [];
  private partsLength = 0;
  private need = 0;
  private readonly decoder = new ValueDecoder();

  constructor(public maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {}

  reset(): void {
    this.parts = [];
    this.partsLength = 0;
    this.need = 0;
  }

  /** Feeds bytes; calls `onMessage` for every complete message, in order. */
  feed(chunk: Buffer, onMessage: (m: Message) => void): void {
    if (this.partsLength > 0) {
      this.parts.push(chunk);
      this.partsLength += chunk.length;
      if (this.partsLength < this.need) return;
      chunk = this.parts.length === 1 ? chunk : Buffer.concat(this.parts, this.partsLength);
      this.parts = [];
      this.partsLength = 0;
    }
    const size = chunk.length;
    let pos = 0;
    while (size - pos >= 4) {
      const length = chunk.readUInt32BE(pos);
      this.check(length);
      const end = pos + 4 + length;
      if (end > size) break;
      const body = chunk.subarray(pos + 4, end);
      pos = end;
      let value: unknown;
      try {
        value = this.decoder.decode(body);
      } catch (err) {
        throw new ProtocolViolationError(
          `undecodable frame from the sidecar: ${(err as Error).message}`,
        );
      }
      onMessage(toMessage(value));
    }
    if (pos < size) {
      const rest = chunk.subarray(pos);
      this.parts.push(rest);
      this.partsLength = rest.length;
      this.need = rest.length >= 4 ? 4 + rest.readUInt32BE(0) : 4;
    }
  }

  private check(length: number): void {
    if (length === 0) throw new ProtocolViolationError("the sidecar sent a zero-length frame");
    if (length > this.maxFrameBytes) throw new FrameLimitError(length, this.maxFrameBytes);
  }
}
