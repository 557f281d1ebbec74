/**
 * MessagePack for the madsidecar protocol.
 *
 * Decoding is done by `@msgpack/msgpack` (a spec-complete, well-tested decoder that takes
 * hostile input safely), configured and post-processed so nothing is lost:
 *   - 64-bit integers: decoded as `bigint` by the library, then turned into `number` when
 *     they fit in the safe range (|n| <= 2**53 - 1). So an integer is a `number` when it is
 *     exact as one, else a `bigint`: never a silently rounded number.
 *   - maps: a map whose keys are all str becomes a plain object; a map with any other key
 *     (int, bin, array, ...) becomes a `Map`, keys kept with their type.
 *   - bin: a `Uint8Array` (a copy, not a view holding the whole read buffer alive).
 *   - ext (the timestamp type -1 included): an `ExtData {type, data}`, so it round-trips.
 *   - floats: a `number`. JavaScript cannot tell 2.0 from 2, so a float with an integral
 *     value decodes as that integer `number` (the one known difference; see the README).
 *
 * Encoding is this module's own small writer, because the bytes must be those of the
 * Python reference (the conformance vectors), which neither JS library can produce
 * through its public API: a `bigint` goes out as the smallest int that holds it (Python's
 * rule: uint64 `cf` for positive, int64 `d3` for negative, smaller types when it fits),
 * a `Float64` wrapper forces a float 64 even for an integral value (`2.0`), and a `Map`
 * is encoded as a map with keys of any type.
 */

import { Decoder, ExtData, ExtensionCodec } from "@msgpack/msgpack";

export { ExtData };

/** A MessagePack float 64 whatever its value: `new Float64(2)` is sent as `2.0`, not `2`. */
export class Float64 {
  constructor(public readonly value: number) {}
  valueOf(): number {
    return this.value;
  }
  toJSON(): number {
    return this.value;
  }
}

/** Shorthand for `new Float64(value)`. */
export function float64(value: number): Float64 {
  return new Float64(value);
}

/** Any value the protocol can carry (cache values, session data, presence meta, messages). */
export type Value =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Float64
  | ExtData
  | Value[]
  | Map<Value, Value>
  | { [key: string]: Value | undefined };

/** A 64-bit integer as decoded: `number` when exact as one, else `bigint`. */
export type Int64 = number | bigint;

/** `x` as a bigint, for arithmetic or comparisons that must be exact whatever its size. */
export function toBigInt(x: Int64): bigint {
  return typeof x === "bigint" ? x : BigInt(x);
}

// ---------------------------------------------------------------------------------------
// Encoding

const U32 = 0x1_0000_0000;
const MAX_DEPTH = 512;

/** A growable byte buffer that MessagePack values are written into. */
export class Writer {
  buf: Buffer;
  pos = 0;

  constructor(size = 1024) {
    this.buf = Buffer.allocUnsafe(size);
  }

  ensure(n: number): void {
    const need = this.pos + n;
    if (need > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < need) size *= 2;
      const next = Buffer.allocUnsafe(size);
      this.buf.copy(next, 0, 0, this.pos);
      this.buf = next;
    }
  }

  /** The bytes written so far (a copy-free view), and a fresh buffer for what follows. */
  take(nextSize = 1024): Buffer {
    const out = this.buf.subarray(0, this.pos);
    this.buf = Buffer.allocUnsafe(nextSize);
    this.pos = 0;
    return out;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }

  head(tag: number, v: number, bytes: 1 | 2 | 4): void {
    this.ensure(1 + bytes);
    const b = this.buf;
    b[this.pos++] = tag;
    if (bytes === 1) b[this.pos] = v;
    else if (bytes === 2) b.writeUInt16BE(v, this.pos);
    else b.writeUInt32BE(v, this.pos);
    this.pos += bytes;
  }

  value(v: unknown, depth = 0): void {
    if (depth > MAX_DEPTH) throw new TypeError("value nested too deeply to encode");
    switch (typeof v) {
      case "string":
        return this.str(v);
      case "number":
        return this.num(v);
      case "boolean":
        return this.u8(v ? 0xc3 : 0xc2);
      case "bigint":
        return this.bigint(v);
      case "undefined":
        return this.u8(0xc0);
      case "object":
        break;
      default:
        throw new TypeError(`cannot encode a ${typeof v} as MessagePack`);
    }
    if (v === null) return this.u8(0xc0);
    if (Array.isArray(v)) {
      this.arrayHeader(v.length);
      for (const item of v) this.value(item, depth + 1);
      return;
    }
    if (v instanceof Uint8Array) return this.bin(v);
    if (v instanceof Float64) return this.f64(v.value);
    if (v instanceof Map) {
      this.mapHeader(v.size);
      for (const [key, item] of v) {
        this.value(key, depth + 1);
        this.value(item, depth + 1);
      }
      return;
    }
    if (v instanceof ExtData) return this.ext(v);
    if (ArrayBuffer.isView(v)) {
      return this.bin(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    }
    if (v instanceof ArrayBuffer) return this.bin(new Uint8Array(v));
    this.object(v as Record<string, unknown>, depth);
  }

  /** A str-keyed map; properties whose value is `undefined` are left out. */
  object(v: Record<string, unknown>, depth = 0): void {
    const keys = Object.keys(v);
    let size = 0;
    for (const k of keys) if (v[k] !== undefined) size++;
    this.mapHeader(size);
    for (const k of keys) {
      const item = v[k];
      if (item === undefined) continue;
      this.str(k);
      this.value(item, depth + 1);
    }
  }

  arrayHeader(n: number): void {
    if (n < 16) this.u8(0x90 | n);
    else if (n < 0x10000) this.head(0xdc, n, 2);
    else this.head(0xdd, n, 4);
  }

  mapHeader(n: number): void {
    if (n < 16) this.u8(0x80 | n);
    else if (n < 0x10000) this.head(0xde, n, 2);
    else this.head(0xdf, n, 4);
  }

  str(s: string): void {
    const len = s.length;
    if (len < 32) {
      // Fast path for the short keys and names most requests are made of.
      let ascii = true;
      for (let i = 0; i < len; i++) {
        if (s.charCodeAt(i) > 0x7f) {
          ascii = false;
          break;
        }
      }
      if (ascii) {
        this.ensure(1 + len);
        const b = this.buf;
        let p = this.pos;
        b[p++] = 0xa0 | len;
        for (let i = 0; i < len; i++) b[p++] = s.charCodeAt(i);
        this.pos = p;
        return;
      }
    }
    const max = len * 3;
    const headerBytes = max < 32 ? 1 : max < 0x100 ? 2 : max < 0x10000 ? 3 : 5;
    this.ensure(headerBytes + max);
    const start = this.pos + headerBytes;
    const written = this.buf.write(s, start, "utf8");
    // Write the header for the real byte length; move the text if the header is shorter.
    const realHeader = written < 32 ? 1 : written < 0x100 ? 2 : written < 0x10000 ? 3 : 5;
    if (realHeader !== headerBytes) {
      this.buf.copy(this.buf, this.pos + realHeader, start, start + written);
    }
    if (written < 32) this.u8(0xa0 | written);
    else if (written < 0x100) this.head(0xd9, written, 1);
    else if (written < 0x10000) this.head(0xda, written, 2);
    else this.head(0xdb, written, 4);
    this.pos += written;
  }

  bin(v: Uint8Array): void {
    const n = v.byteLength;
    if (n < 0x100) this.head(0xc4, n, 1);
    else if (n < 0x10000) this.head(0xc5, n, 2);
    else this.head(0xc6, n, 4);
    this.ensure(n);
    this.buf.set(v, this.pos);
    this.pos += n;
  }

  ext(v: ExtData): void {
    const data = typeof v.data === "function" ? v.data(0) : v.data;
    const n = data.byteLength;
    const fixed: Record<number, number> = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 };
    const tag = fixed[n];
    if (tag !== undefined) this.u8(tag);
    else if (n < 0x100) this.head(0xc7, n, 1);
    else if (n < 0x10000) this.head(0xc8, n, 2);
    else this.head(0xc9, n, 4);
    this.ensure(1 + n);
    this.buf.writeInt8(v.type, this.pos++);
    this.buf.set(data, this.pos);
    this.pos += n;
  }

  f64(v: number): void {
    this.ensure(9);
    this.buf[this.pos++] = 0xcb;
    this.buf.writeDoubleBE(v, this.pos);
    this.pos += 8;
  }

  /** An integer in the shortest form, exactly as Python's msgpack writes it. */
  num(v: number): void {
    if (!Number.isSafeInteger(v)) {
      // An integral number past 2**53 is still an integer (the exact one it holds).
      if (Number.isInteger(v) && v >= -(2 ** 63) && v < 2 ** 64) return this.bigint(BigInt(v));
      return this.f64(v); // non-integral, or out of every int type's range
    }
    if (v >= 0) {
      if (v < 0x80) return this.u8(v);
      if (v < 0x100) return this.head(0xcc, v, 1);
      if (v < 0x10000) return this.head(0xcd, v, 2);
      if (v < U32) return this.head(0xce, v, 4);
      this.ensure(9);
      this.buf[this.pos++] = 0xcf;
      this.buf.writeUInt32BE(Math.floor(v / U32), this.pos);
      this.buf.writeUInt32BE(v % U32, this.pos + 4);
      this.pos += 8;
      return;
    }
    if (v >= -0x20) return this.u8(v & 0xff);
    this.ensure(9);
    const b = this.buf;
    if (v >= -0x80) {
      b[this.pos++] = 0xd0;
      b.writeInt8(v, this.pos++);
    } else if (v >= -0x8000) {
      b[this.pos++] = 0xd1;
      b.writeInt16BE(v, this.pos);
      this.pos += 2;
    } else if (v >= -0x8000_0000) {
      b[this.pos++] = 0xd2;
      b.writeInt32BE(v, this.pos);
      this.pos += 4;
    } else {
      b[this.pos++] = 0xd3;
      b.writeBigInt64BE(BigInt(v), this.pos);
      this.pos += 8;
    }
  }

  bigint(v: bigint): void {
    if (v >= -0x8000_0000n && v < 0x1_0000_0000n) return this.num(Number(v));
    this.ensure(9);
    if (v > 0n) {
      if (v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`${v} does not fit in a uint64`);
      this.buf[this.pos++] = 0xcf;
      this.buf.writeBigUInt64BE(v, this.pos);
    } else {
      if (v < -0x8000_0000_0000_0000n) throw new RangeError(`${v} does not fit in an int64`);
      this.buf[this.pos++] = 0xd3;
      this.buf.writeBigInt64BE(v, this.pos);
    }
    this.pos += 8;
  }
}

/** One MessagePack value as bytes. */
export function encode(value: unknown): Buffer {
  const w = new Writer(256);
  w.value(value);
  return w.take(0);
}

// ---------------------------------------------------------------------------------------
// Decoding

const KEY_MARK = "\u0000\u0001msgpack-key:";

/** Decodes one MessagePack value per call, losslessly (see the module comment). */
export class ValueDecoder {
  private readonly keys: unknown[] = [];
  private readonly decoder: Decoder;

  constructor() {
    const extensionCodec = new ExtensionCodec();
    // Keep the timestamp type as ext (the library would make it a Date): values round-trip.
    extensionCodec.register({
      type: -1,
      encode: () => null,
      decode: (data: Uint8Array, type: number) => new ExtData(type, data),
    });
    const keys = this.keys;
    this.decoder = new Decoder({
      useBigInt64: true,
      extensionCodec,
      mapKeyConverter: (key: unknown): string => {
        if (typeof key === "string" && !key.startsWith(KEY_MARK)) return key;
        keys.push(key);
        return KEY_MARK + (keys.length - 1);
      },
    });
  }

  /** Decodes `bytes`, which must hold exactly one value (else it throws). */
  decode(bytes: Uint8Array): unknown {
    this.keys.length = 0;
    const raw = this.decoder.decode(bytes);
    return normalise(raw, this.keys);
  }
}

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function normalise(v: unknown, keys: unknown[]): unknown {
  if (typeof v !== "object" || v === null) {
    if (typeof v === "bigint" && v >= MIN_SAFE && v <= MAX_SAFE) return Number(v);
    return v;
  }
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = normalise(v[i], keys);
    return v;
  }
  // Copies (plain Uint8Array), so a small value does not keep the whole read buffer alive.
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (v instanceof ExtData) {
    return v.data instanceof Uint8Array ? new ExtData(v.type, new Uint8Array(v.data)) : v;
  }
  const obj = v as Record<string, unknown>;
  let special = false;
  for (const k in obj) {
    obj[k] = normalise(obj[k], keys);
    if (keys.length > 0 && k.startsWith(KEY_MARK)) special = true;
  }
  if (!special) return obj;
  const map = new Map<unknown, unknown>();
  for (const k in obj) {
    const key = k.startsWith(KEY_MARK) ? keys[Number(k.slice(KEY_MARK.length))] : k;
    map.set(normalise(key, keys), obj[k]);
  }
  return map;
}

let shared: ValueDecoder | undefined;

/** One MessagePack value from bytes (exactly one: extra bytes are an error). */
export function decode(bytes: Uint8Array): unknown {
  shared ??= new ValueDecoder();
  return shared.decode(bytes);
}
