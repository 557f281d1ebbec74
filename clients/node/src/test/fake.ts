/** An in-process stand-in for the sidecar: records request frames, answers as scripted. */

import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

import { decode, encode } from "../codec.js";

export interface Received {
  frame: Buffer;
  msgid: number;
  method: string;
}

export class FakeSidecar {
  readonly socketPath: string;
  private readonly dir: string;
  private readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();
  private readonly received: Received[] = [];
  private waiters: Array<(r: Received) => void> = [];
  /** Raw bytes to send as the reply to the next non-hello request, instead of `[1, id, nil, nil]`. */
  nextReply: Buffer | null = null;
  /** The arguments of every `hello` (answered by the fake itself, not recorded as requests). */
  readonly hellos: unknown[] = [];
  /** Whether requests are answered at all. */
  answer = true;
  helloResult: Record<string, unknown> = {
    server: "madsidecar",
    version: "0.0.0-fake",
    protocol: 1,
    node_id: "fake",
    namespace: "default",
    max_frame_bytes: 4194304,
    methods: [],
  };

  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), "msc-node-fake-"));
    this.socketPath = path.join(this.dir, "fake.sock");
    this.server = net.createServer((sock) => this.serve(sock));
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(this.socketPath, resolve));
    return this;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The next request frame received (other than hello). */
  next(): Promise<Received> {
    const r = this.received.shift();
    if (r) return Promise.resolve(r);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Forgets the requests recorded so far; answers them again. */
  clear(): void {
    this.received.length = 0;
    this.answer = true;
    this.nextReply = null;
  }

  /** Writes raw bytes to every connected client. */
  push(bytes: Buffer): void {
    for (const s of this.sockets) s.write(bytes);
  }

  private serve(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.on("close", () => this.sockets.delete(sock));
    sock.on("error", () => undefined);
    let buf = Buffer.alloc(0);
    sock.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 4) {
        const n = buf.readUInt32BE(0);
        if (buf.length < 4 + n) break;
        const frame = buf.subarray(0, 4 + n);
        buf = buf.subarray(4 + n);
        const msg = decode(frame.subarray(4)) as [number, number, string, unknown[]];
        const [, msgid, method] = msg;
        if (method === "hello" && !this.helloSeen.has(sock)) {
          this.helloSeen.add(sock);
          this.hellos.push((msg[3] as unknown[])[0] ?? {});
          sock.write(frameOf([1, msgid, null, this.helloResult]));
          continue;
        }
        const received = { frame: Buffer.from(frame), msgid, method };
        const waiter = this.waiters.shift();
        if (waiter) waiter(received);
        else this.received.push(received);
        if (!this.answer) continue;
        if (this.nextReply) {
          sock.write(this.nextReply);
          this.nextReply = null;
        } else {
          sock.write(frameOf([1, msgid, null, null]));
        }
      }
    });
  }

  private readonly helloSeen = new WeakSet<net.Socket>();
}

export function frameOf(value: unknown): Buffer {
  const body = encode(value);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}
