/**
 * The client: one Unix-socket connection, multiplexed calls (pipelining by msgid),
 * notifications, per-call timeouts, reconnect with backoff that never re-takes anything.
 */

import { EventEmitter } from "node:events";
import net from "node:net";

import { Writer } from "./codec.js";
import {
  CallTimeoutError,
  ConnectionClosedError,
  FrameLimitError,
  MadsidecarError,
  ServerError,
  errorFromMap,
} from "./errors.js";
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameReader,
  MAX_MSGID,
  writeRequest,
  type Message,
} from "./protocol.js";
import { resolveSocketPath } from "./protocol.js";
import {
  KNOWN_NOTIFICATIONS,
  type CacheDeleteArgs,
  type CacheEntry,
  type CacheFetchArgs,
  type CacheFetchResult,
  type CacheFillArgs,
  type CacheGetArgs,
  type CacheInvalidateArgs,
  type CacheMgetArgs,
  type CacheSetArgs,
  type CacheWarmArgs,
  type ConnectionLost,
  type DeletedResult,
  type HealthResult,
  type HelloArgs,
  type HelloResult,
  type KnownNotificationName,
  type LoadedResult,
  type LockAcquireArgs,
  type LockAcquireResult,
  type LockExtendArgs,
  type LockExtendResult,
  type LockInspectArgs,
  type LockInspectResult,
  type LockLost,
  type LockReleaseArgs,
  type LockReleaseResult,
  type Notification,
  type OkResult,
  type PresenceChannelArgs,
  type PresenceCountResult,
  type PresenceDiff,
  type PresenceListResult,
  type PresenceState,
  type PresenceSubscribeResult,
  type PresenceTrackArgs,
  type PresenceTrackResult,
  type PresenceUntrackArgs,
  type PresenceUntrackResult,
  type PresenceUpdateArgs,
  type PresenceUpdateResult,
  type PubsubChannelArgs,
  type PubsubDropped,
  type PubsubMessage,
  type PubsubPublishArgs,
  type PubsubPublishResult,
  type RatelimitHitArgs,
  type RatelimitHitManyArgs,
  type RatelimitHitManyResult,
  type RatelimitPeekArgs,
  type RatelimitResetArgs,
  type RatelimitResult,
  type Session,
  type SessionCreateArgs,
  type SessionCreateResult,
  type SessionGetArgs,
  type SessionListArgs,
  type SessionRevokeArgs,
  type SessionRevokeResult,
  type SessionRevokeUserArgs,
  type SessionRevokeUserResult,
  type SessionRotateArgs,
  type SessionRotateResult,
  type SessionSummary,
  type SessionUpdateArgs,
  type SessionUpdateResult,
  type Shutdown,
  type StatsResult,
} from "./types.js";

export const SDK_NAME = "madsidecar-node";
export const SDK_VERSION = "0.1.0";
export const DEFAULT_TIMEOUT_MS = 10_000;

export interface ReconnectOptions {
  /** First delay after a failed attempt (default 50 ms); doubles each failure. */
  initialDelayMs?: number;
  /** Cap of the delay (default 2000 ms). */
  maxDelayMs?: number;
  /** Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter] (default 0.2). */
  jitter?: number;
}

export interface ClientOptions {
  /** Socket path; else `$MADSIDECAR_SOCKET`, else `/run/madsidecar/madsidecar.sock`. */
  socketPath?: string;
  /** Namespace selected by `hello` after every (re)connect; default: the sidecar's ("default"). */
  namespace?: string;
  /** Sent as `hello`'s `client` (default "madsidecar-node"). */
  clientName?: string;
  /** Default per-call timeout in ms (default 10000); `null` waits forever. */
  timeoutMs?: number | null;
  /** How long `connect()` keeps trying to reach the sidecar (default: `timeoutMs`). */
  connectTimeoutMs?: number | null;
  /** Reconnect after the connection is lost (default true); `false` turns it off. */
  reconnect?: boolean | ReconnectOptions;
  /** Largest frame accepted from the sidecar (default 4 MiB, the sidecar's default). */
  maxFrameBytes?: number;
}

export interface CallOptions {
  /** This call's timeout in ms (default: the client's); `null` waits forever. A call that
   * sends `wait_ms` gets that much more. */
  timeoutMs?: number | null;
  /** Abort the call (it fails with `signal.reason`; a late reply is dropped). */
  signal?: AbortSignal;
}

export interface NotificationStreamOptions {
  /** Notifications buffered for a slow consumer; newer ones are dropped past it (10000). */
  maxQueue?: number;
}

/** Events of a Client (an EventEmitter). */
export interface ClientEvents {
  "lock.lost": [LockLost];
  "presence.diff": [PresenceDiff];
  "presence.state": [PresenceState];
  "pubsub.message": [PubsubMessage];
  "pubsub.dropped": [PubsubDropped];
  shutdown: [Shutdown];
  /** The sidecar's `error` notification, as the ServerError of its code. Emitted only when
   * someone listens (an unheard `error` event does not crash the process). */
  error: [ServerError];
  /** Every notification, unknown names included (forward compatibility). */
  notification: [name: string, payload: Record<string, unknown>];
  /** The connection was lost: every lock, lease, presence entry and subscription of it
   * is gone. Nothing is re-taken: acquire / track / subscribe again if still needed. */
  "connection.lost": [ConnectionLost];
  /** A new connection is up (and `hello` answered) after a loss. */
  reconnected: [HelloResult];
}

type State = "idle" | "connecting" | "handshake" | "ready" | "draining" | "down" | "closed";

interface Call {
  method: string;
  args: object | null | undefined;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  msgid: number;
  done: boolean;
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

function effectiveTimeout(
  own: number | null | undefined,
  fallback: number | null,
  args: object | null | undefined,
): number | null {
  let limit = own === undefined ? fallback : own;
  if (limit === null || limit === undefined) return null;
  const waitMs = args ? (args as { wait_ms?: unknown }).wait_ms : undefined;
  if (typeof waitMs === "number" && waitMs > 0) limit += waitMs;
  return limit;
}

/**
 * A connection to the sidecar. Make one with `await Client.connect(options)`; calls may be
 * issued concurrently (they are pipelined, each with its own msgid).
 */
export class Client extends EventEmitter<ClientEvents> {
  readonly socketPath: string;
  /** The namespace re-selected after every reconnect (updated by `hello`). */
  namespace: string | undefined;
  readonly clientName: string;
  /** Default per-call timeout (ms), `null` for none. */
  timeoutMs: number | null;
  readonly maxFrameBytes: number;
  /** The last `hello` result: server version, node id, namespace, limits, methods. */
  serverInfo: HelloResult | null = null;

  private readonly connectTimeoutMs: number | null;
  private readonly reconnectEnabled: boolean;
  private readonly backoff: Required<ReconnectOptions>;
  private state: State = "idle";
  private sock: net.Socket | null = null;
  private readonly reader: FrameReader;
  private out = new Writer(2048);
  private flushScheduled = false;
  private readonly pending = new Map<number, Call>();
  /** msgids of calls that timed out or were aborted: still in flight on the sidecar. */
  private readonly abandoned = new Set<number>();
  private readonly waiting = new Set<Call>();
  private msgidCounter = 1;
  private serverMaxFrame = DEFAULT_MAX_FRAME_BYTES;
  private everConnected = false;
  private opening: Promise<HelloResult> | null = null;
  private reconnecting: Promise<HelloResult | null> | null = null;
  private closeReason: Error | null = null;
  private socketError: Error | null = null;
  private sleepTimer: { timer: NodeJS.Timeout; wake: () => void } | null = null;
  private readonly streams = new Set<NotificationQueue>();

  constructor(options: ClientOptions = {}) {
    super();
    this.socketPath = resolveSocketPath(options.socketPath);
    this.namespace = options.namespace;
    this.clientName = options.clientName ?? SDK_NAME;
    this.timeoutMs = options.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : options.timeoutMs;
    this.connectTimeoutMs =
      options.connectTimeoutMs === undefined ? this.timeoutMs : options.connectTimeoutMs;
    const rc = options.reconnect ?? true;
    this.reconnectEnabled = rc !== false;
    const rco = typeof rc === "object" ? rc : {};
    this.backoff = {
      initialDelayMs: rco.initialDelayMs ?? 50,
      maxDelayMs: rco.maxDelayMs ?? 2000,
      jitter: rco.jitter ?? 0.2,
    };
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.reader = new FrameReader(this.maxFrameBytes);
  }

  /** A connected client (`hello` answered). */
  static async connect(options: ClientOptions = {}): Promise<Client> {
    const client = new Client(options);
    await client.open();
    return client;
  }

  /** Connects (if not yet) and says `hello`; resolves with its result. */
  open(): Promise<HelloResult> {
    if (this.state === "closed") return Promise.reject(new ConnectionClosedError("client closed"));
    if ((this.state === "ready" || this.state === "draining") && this.serverInfo) {
      return Promise.resolve(this.serverInfo);
    }
    if (this.reconnecting !== null) {
      // The background loop is at it: wait for it rather than race it with a second socket.
      return this.reconnecting.then((info) => {
        if (info === null) throw new ConnectionClosedError("client closed");
        return info;
      });
    }
    if (this.opening === null) {
      this.opening = this.firstConnect().finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  /** Whether a connection is up and ready for calls. */
  get connected(): boolean {
    return this.state === "ready";
  }

  /** Closes the connection for good: pending calls fail with ConnectionClosedError. */
  async close(): Promise<void> {
    if (this.state === "closed") return;
    this.state = "closed";
    this.sleepTimer?.wake();
    const error = new ConnectionClosedError("client closed");
    this.failWaiting(error);
    this.failPending(error);
    for (const stream of this.streams) stream.end();
    const sock = this.sock;
    this.sock = null;
    if (sock && !sock.destroyed) {
      await new Promise<void>((resolve) => {
        sock.once("close", () => resolve());
        sock.destroy();
      });
    }
  }

  // -- calls ------------------------------------------------------------------------------

  /**
   * Sends one request and resolves with its result; rejects with the ServerError class of
   * the error's code, or CallTimeoutError / ConnectionClosedError / ProtocolViolationError.
   * The generic escape hatch: any method, any arguments (sent in the canonical order for
   * the methods this SDK knows, as given for others).
   */
  call<T = unknown>(method: string, args?: object | null, options?: CallOptions): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const call: Call = {
        method,
        args,
        resolve: resolve as (v: unknown) => void,
        reject,
        msgid: -1,
        done: false,
        timer: undefined,
        signal: options?.signal,
        onAbort: undefined,
      };
      this.start(call, options);
    });
  }

  /**
   * Sends every request at once (reading replies while writing) and resolves with their
   * results in order; a request the sidecar refused has its ServerError in its place.
   * A lost connection or a timeout rejects the whole batch.
   */
  async pipeline(
    calls: ReadonlyArray<readonly [method: string, args?: object | null]>,
    options?: CallOptions,
  ): Promise<unknown[]> {
    return Promise.all(
      calls.map(([method, args]) =>
        this.call(method, args, options).catch((error: unknown) => {
          if (error instanceof ServerError) return error;
          throw error;
        }),
      ),
    );
  }

  private start(call: Call, options: CallOptions | undefined): void {
    const signal = call.signal;
    if (signal?.aborted) {
      call.done = true;
      call.reject(signal.reason);
      return;
    }
    if (this.state === "closed") {
      this.settle(call, new ConnectionClosedError("client closed"));
      return;
    }
    const limit = effectiveTimeout(options?.timeoutMs, this.timeoutMs, call.args);
    if (limit !== null) {
      call.timer = setTimeout(() => this.settle(call, new CallTimeoutError(limit)), limit);
    }
    if (signal) {
      call.onAbort = () => this.settle(call, signal.reason);
      signal.addEventListener("abort", call.onAbort, { once: true });
    }
    switch (this.state) {
      case "ready":
        this.send(call);
        return;
      case "idle":
        this.waiting.add(call);
        this.open().catch((error: unknown) => this.failWaiting(error));
        return;
      case "connecting":
      case "handshake":
        this.waiting.add(call);
        return;
      case "draining":
        if (this.reconnectEnabled) {
          this.waiting.add(call); // sent on the next connection
        } else {
          this.settle(call, new ConnectionClosedError("the sidecar is shutting down; reconnect is off"));
        }
        return;
      case "down":
        this.settle(
          call,
          new ConnectionClosedError(`not connected to ${this.socketPath} (reconnect is off)`),
        );
        return;
    }
  }

  /** Encodes the call into the output buffer (written at the end of this tick). */
  private send(call: Call): void {
    const msgid = this.nextMsgid();
    const w = this.out;
    const mark = w.pos;
    let length: number;
    try {
      length = writeRequest(w, msgid, call.method, call.args as Record<string, unknown> | null);
    } catch (error) {
      w.pos = mark;
      this.settle(call, error);
      return;
    }
    if (length > this.serverMaxFrame) {
      w.pos = mark;
      this.settle(call, new FrameLimitError(length, this.serverMaxFrame, "outgoing"));
      return;
    }
    call.msgid = msgid;
    this.pending.set(msgid, call);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.out.pos === 0) return;
    const bytes = this.out.take(2048);
    const sock = this.sock;
    if (sock && !sock.destroyed) sock.write(bytes);
  };

  private nextMsgid(): number {
    for (;;) {
      const id = this.msgidCounter;
      this.msgidCounter = id >= MAX_MSGID ? 0 : id + 1;
      if (!this.pending.has(id) && !this.abandoned.has(id)) return id;
    }
  }

  /** @internal For the conformance tests: the msgid the next request gets. */
  _setNextMsgid(msgid: number): void {
    this.msgidCounter = msgid;
  }

  /** Ends a call once: with `error`, or with `result` when `error` is undefined. */
  private settle(call: Call, error: unknown, result?: unknown): void {
    if (call.done) return;
    call.done = true;
    if (call.timer !== undefined) clearTimeout(call.timer);
    if (call.onAbort) call.signal?.removeEventListener("abort", call.onAbort);
    this.waiting.delete(call);
    if (call.msgid >= 0 && this.pending.get(call.msgid) === call) {
      this.pending.delete(call.msgid);
      // A reply may still come: keep its msgid out of use until then (or the close).
      if (error !== undefined) this.abandoned.add(call.msgid);
    }
    if (error === undefined) call.resolve(result);
    else call.reject(error);
  }

  private failPending(error: unknown): void {
    const calls = [...this.pending.values()];
    this.pending.clear();
    this.abandoned.clear();
    for (const call of calls) {
      call.msgid = -1;
      this.settle(call, error);
    }
  }

  private failWaiting(error: unknown): void {
    const calls = [...this.waiting];
    this.waiting.clear();
    for (const call of calls) this.settle(call, error);
  }

  // -- connection -------------------------------------------------------------------------

  private async firstConnect(): Promise<HelloResult> {
    const limit = this.connectTimeoutMs;
    const deadline = limit === null ? Infinity : Date.now() + limit;
    let delay = this.backoff.initialDelayMs;
    this.state = "connecting";
    for (;;) {
      let lastError: unknown;
      try {
        return await this.connectOnce(limit);
      } catch (error) {
        lastError = error;
        if (this.isClosed()) throw new ConnectionClosedError("client closed");
        this.state = "connecting";
        if (error instanceof ServerError || !this.reconnectEnabled) {
          this.state = "idle";
          throw this.connectError(error);
        }
      }
      const pause = this.jittered(delay);
      if (Date.now() + pause >= deadline) {
        this.state = "idle";
        throw new ConnectionClosedError(
          `could not connect to ${this.socketPath} within ${limit} ms: ${(lastError as Error).message}`,
          { cause: lastError },
        );
      }
      await this.sleep(pause);
      if (this.isClosed()) throw new ConnectionClosedError("client closed");
      delay = Math.min(delay * 2, this.backoff.maxDelayMs);
    }
  }

  private isClosed(): boolean {
    return this.state === "closed";
  }

  private connectError(error: unknown): Error {
    if (error instanceof MadsidecarError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new ConnectionClosedError(`cannot connect to ${this.socketPath}: ${message}`, {
      cause: error,
    });
  }

  /** In the background after a loss: attempts with capped, jittered exponential backoff. */
  private async reconnectLoop(): Promise<HelloResult | null> {
    let delay = this.backoff.initialDelayMs;
    while (this.state === "connecting") {
      try {
        return await this.connectOnce(this.timeoutMs);
      } catch (error) {
        if (this.isClosed()) return null;
        this.state = "connecting";
        // The sidecar refused our hello (FORBIDDEN...): the waiting calls learn why.
        if (error instanceof ServerError) this.failWaiting(error);
      }
      await this.sleep(this.jittered(delay));
      delay = Math.min(delay * 2, this.backoff.maxDelayMs);
    }
    return null;
  }

  private jittered(delay: number): number {
    const j = this.backoff.jitter;
    return delay * (1 - j + Math.random() * 2 * j);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleepTimer = null;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepTimer = { timer, wake };
    });
  }

  /** One attempt: connect, then `hello` (namespace!) and nothing else. */
  private async connectOnce(helloTimeoutMs: number | null): Promise<HelloResult> {
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection({ path: this.socketPath });
      const onError = (error: Error): void => {
        s.destroy();
        reject(error);
      };
      s.once("error", onError);
      s.once("connect", () => {
        s.off("error", onError);
        resolve(s);
      });
    });
    if (this.isClosed()) {
      sock.destroy();
      throw new ConnectionClosedError("client closed");
    }
    this.attach(sock);
    this.state = "handshake";
    const args: HelloArgs = { client: this.clientName, version: SDK_VERSION };
    if (this.namespace !== undefined) args.namespace = this.namespace;
    let info: HelloResult;
    try {
      info = await new Promise<HelloResult>((resolve, reject) => {
        const call: Call = {
          method: "hello",
          args,
          resolve: resolve as (v: unknown) => void,
          reject,
          msgid: -1,
          done: false,
          timer: undefined,
          signal: undefined,
          onAbort: undefined,
        };
        if (helloTimeoutMs !== null) {
          call.timer = setTimeout(
            () => this.settle(call, new CallTimeoutError(helloTimeoutMs, `no hello reply within ${helloTimeoutMs} ms`)),
            helloTimeoutMs,
          );
        }
        this.send(call);
      });
    } catch (error) {
      if (this.sock === sock) this.sock = null;
      sock.destroy();
      throw error;
    }
    if (this.sock !== sock || (this.state as State) !== "handshake") {
      throw new ConnectionClosedError(`connection to ${this.socketPath} lost during hello`);
    }
    this.serverInfo = info;
    if (typeof info.namespace === "string") this.namespace = info.namespace;
    if (typeof info.max_frame_bytes === "number") this.serverMaxFrame = info.max_frame_bytes;
    this.state = "ready";
    const reconnected = this.everConnected;
    this.everConnected = true;
    const waiting = [...this.waiting];
    this.waiting.clear();
    for (const call of waiting) if (!call.done) this.send(call);
    if (reconnected) this.emitSafe("reconnected", info);
    return info;
  }

  private attach(sock: net.Socket): void {
    this.sock = sock;
    this.reader.reset();
    this.out = new Writer(2048);
    this.closeReason = null;
    this.socketError = null;
    sock.on("data", (chunk: Buffer) => {
      if (this.sock !== sock) return;
      try {
        this.reader.feed(chunk, this.onMessage);
      } catch (error) {
        // Past the frame limit, or unreadable: the stream cannot be trusted any more.
        this.closeReason = error as Error;
        sock.destroy();
      }
    });
    sock.on("error", (error: Error) => {
      this.socketError = error;
    });
    sock.on("close", () => this.onClose(sock));
  }

  private onClose(sock: net.Socket): void {
    if (this.sock !== sock) return;
    this.sock = null;
    const why =
      this.closeReason ??
      new ConnectionClosedError(
        `connection to ${this.socketPath} lost` +
          (this.socketError ? `: ${this.socketError.message}` : ""),
      );
    this.failPending(why);
    const previous = this.state;
    if (previous === "closed") return;
    if (previous === "handshake") {
      this.state = "connecting"; // the connecting loop goes on
      return;
    }
    // Everything this connection owned (locks, leases, presence, subscriptions) is gone.
    this.state = this.reconnectEnabled ? "connecting" : "down";
    if (!this.reconnectEnabled) this.failWaiting(why);
    const lost: ConnectionLost = { error: why, reconnecting: this.reconnectEnabled };
    this.emitSafe("connection.lost", lost);
    for (const stream of this.streams) stream.push({ name: "connection.lost", payload: lost });
    if (this.reconnectEnabled) {
      const loop = this.reconnectLoop().finally(() => {
        if (this.reconnecting === loop) this.reconnecting = null;
      });
      this.reconnecting = loop;
    }
  }

  private readonly onMessage = (message: Message): void => {
    if (message.kind === 1) {
      const call = this.pending.get(message.msgid);
      if (call === undefined) {
        this.abandoned.delete(message.msgid); // a late reply to a timed-out call
        return;
      }
      if (message.error === null || message.error === undefined) {
        this.settle(call, undefined, message.result);
      } else {
        call.msgid = -1; // answered: nothing more will come for it
        this.pending.delete(message.msgid);
        this.settle(call, errorFromMap(message.error));
      }
      return;
    }
    this.deliver(message.name, message.payload);
  };

  private deliver(name: string, payload: Record<string, unknown>): void {
    if (name === "shutdown" && this.state === "ready") {
      // Stop sending: new calls wait for the next connection (the sidecar closes this one
      // once its in-flight requests are done).
      this.state = "draining";
    }
    this.emitSafe("notification", name, payload);
    if (!(KNOWN_NOTIFICATIONS as readonly string[]).includes(name)) return; // unknown: ignored
    const known = name as KnownNotificationName;
    if (known === "error") {
      if (this.listenerCount("error") > 0) {
        this.emitSafe("error", errorFromMap(payload));
      }
    } else {
      (this.emitSafe as (event: string, ...args: unknown[]) => void)(known, payload);
    }
    for (const stream of this.streams) stream.push({ name: known, payload } as Notification);
  }

  /** Calls every listener; one that throws (or rejects) does not stop the others. */
  private emitSafe<K extends keyof ClientEvents>(event: K, ...args: ClientEvents[K]): void {
    const listeners = this.rawListeners(event as never) as Array<(...a: unknown[]) => unknown>;
    for (const listener of listeners) {
      try {
        const result = listener.apply(this, args);
        if (result instanceof Promise) result.catch(reportListenerError);
      } catch (error) {
        reportListenerError(error);
      }
    }
  }

  // -- notifications ----------------------------------------------------------------------

  /**
   * The notifications received from now on, as an async iterator (`for await`), with
   * `connection.lost` when the connection drops. `return()` (or `break`) ends it.
   */
  notifications(options: NotificationStreamOptions = {}): AsyncIterableIterator<Notification> {
    const stream = new NotificationQueue(options.maxQueue ?? 10_000, (s) => this.streams.delete(s));
    this.streams.add(stream);
    if (this.state === "closed") stream.end();
    return stream;
  }

  // -- typed methods: connection ------------------------------------------------------------

  /**
   * Sends `hello` with exactly these arguments (the client already said hello, with its
   * name and namespace, when it connected). A namespace selected here is kept: it is
   * selected again after every reconnect.
   */
  async hello(args: HelloArgs = {}, options?: CallOptions): Promise<HelloResult> {
    const info = await this.call<HelloResult>("hello", args, options);
    if (info !== null && typeof info === "object") {
      this.serverInfo = info;
      if (typeof info.namespace === "string") this.namespace = info.namespace;
    }
    return info;
  }
  ping(options?: CallOptions): Promise<string> {
    return this.call("ping", null, options);
  }
  stats(options?: CallOptions): Promise<StatsResult> {
    return this.call("stats", null, options);
  }
  health(options?: CallOptions): Promise<HealthResult> {
    return this.call("health", null, options);
  }

  // -- cache --------------------------------------------------------------------------------

  cacheGet(args: CacheGetArgs, options?: CallOptions): Promise<CacheEntry | null> {
    return this.call("cache.get", args, options);
  }
  cacheMget(args: CacheMgetArgs, options?: CallOptions): Promise<Array<CacheEntry | null>> {
    return this.call("cache.mget", args, options);
  }
  cacheSet(args: CacheSetArgs, options?: CallOptions): Promise<OkResult> {
    return this.call("cache.set", args, options);
  }
  cacheDelete(args: CacheDeleteArgs, options?: CallOptions): Promise<DeletedResult> {
    return this.call("cache.delete", args, options);
  }
  cacheInvalidate(args: CacheInvalidateArgs, options?: CallOptions): Promise<DeletedResult> {
    return this.call("cache.invalidate", args, options);
  }
  cacheFetch(args: CacheFetchArgs, options?: CallOptions): Promise<CacheFetchResult> {
    return this.call("cache.fetch", args, options);
  }
  cacheFill(args: CacheFillArgs, options?: CallOptions): Promise<OkResult> {
    return this.call("cache.fill", args, options);
  }
  cacheWarm(args: CacheWarmArgs, options?: CallOptions): Promise<LoadedResult> {
    return this.call("cache.warm", args, options);
  }

  // -- locks --------------------------------------------------------------------------------

  lockAcquire(args: LockAcquireArgs, options?: CallOptions): Promise<LockAcquireResult> {
    return this.call("lock.acquire", args, options);
  }
  lockRelease(args: LockReleaseArgs, options?: CallOptions): Promise<LockReleaseResult> {
    return this.call("lock.release", args, options);
  }
  lockExtend(args: LockExtendArgs, options?: CallOptions): Promise<LockExtendResult> {
    return this.call("lock.extend", args, options);
  }
  lockInspect(args: LockInspectArgs, options?: CallOptions): Promise<LockInspectResult> {
    return this.call("lock.inspect", args, options);
  }

  // -- sessions -----------------------------------------------------------------------------

  sessionCreate(args: SessionCreateArgs, options?: CallOptions): Promise<SessionCreateResult> {
    return this.call("session.create", args, options);
  }
  sessionGet(args: SessionGetArgs, options?: CallOptions): Promise<Session | null> {
    return this.call("session.get", args, options);
  }
  sessionUpdate(args: SessionUpdateArgs, options?: CallOptions): Promise<SessionUpdateResult> {
    return this.call("session.update", args, options);
  }
  sessionRotate(args: SessionRotateArgs, options?: CallOptions): Promise<SessionRotateResult | null> {
    return this.call("session.rotate", args, options);
  }
  sessionRevoke(args: SessionRevokeArgs, options?: CallOptions): Promise<SessionRevokeResult> {
    return this.call("session.revoke", args, options);
  }
  sessionRevokeUser(
    args: SessionRevokeUserArgs,
    options?: CallOptions,
  ): Promise<SessionRevokeUserResult> {
    return this.call("session.revoke_user", args, options);
  }
  sessionList(args: SessionListArgs, options?: CallOptions): Promise<SessionSummary[]> {
    return this.call("session.list", args, options);
  }

  // -- pub/sub ------------------------------------------------------------------------------

  pubsubPublish(args: PubsubPublishArgs, options?: CallOptions): Promise<PubsubPublishResult> {
    return this.call("pubsub.publish", args, options);
  }
  pubsubSubscribe(args: PubsubChannelArgs, options?: CallOptions): Promise<OkResult> {
    return this.call("pubsub.subscribe", args, options);
  }
  pubsubUnsubscribe(args: PubsubChannelArgs, options?: CallOptions): Promise<OkResult> {
    return this.call("pubsub.unsubscribe", args, options);
  }

  // -- presence -----------------------------------------------------------------------------

  presenceTrack(args: PresenceTrackArgs, options?: CallOptions): Promise<PresenceTrackResult> {
    return this.call("presence.track", args, options);
  }
  presenceUpdate(args: PresenceUpdateArgs, options?: CallOptions): Promise<PresenceUpdateResult> {
    return this.call("presence.update", args, options);
  }
  presenceUntrack(args: PresenceUntrackArgs, options?: CallOptions): Promise<PresenceUntrackResult> {
    return this.call("presence.untrack", args, options);
  }
  presenceList(args: PresenceChannelArgs, options?: CallOptions): Promise<PresenceListResult> {
    return this.call("presence.list", args, options);
  }
  presenceCount(args: PresenceChannelArgs, options?: CallOptions): Promise<PresenceCountResult> {
    return this.call("presence.count", args, options);
  }
  presenceSubscribe(
    args: PresenceChannelArgs,
    options?: CallOptions,
  ): Promise<PresenceSubscribeResult> {
    return this.call("presence.subscribe", args, options);
  }
  presenceUnsubscribe(args: PresenceChannelArgs, options?: CallOptions): Promise<OkResult> {
    return this.call("presence.unsubscribe", args, options);
  }

  // -- rate limits --------------------------------------------------------------------------

  ratelimitHit(args: RatelimitHitArgs, options?: CallOptions): Promise<RatelimitResult> {
    return this.call("ratelimit.hit", args, options);
  }
  ratelimitHitMany(
    args: RatelimitHitManyArgs,
    options?: CallOptions,
  ): Promise<RatelimitHitManyResult> {
    return this.call("ratelimit.hit_many", args, options);
  }
  ratelimitPeek(args: RatelimitPeekArgs, options?: CallOptions): Promise<RatelimitResult> {
    return this.call("ratelimit.peek", args, options);
  }
  ratelimitReset(args: RatelimitResetArgs, options?: CallOptions): Promise<OkResult> {
    return this.call("ratelimit.reset", args, options);
  }
}

function reportListenerError(error: unknown): void {
  const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.emitWarning(`a madsidecar listener threw: ${message}`, "MadsidecarListenerWarning");
}

/** The queue behind one `notifications()` iterator. */
class NotificationQueue implements AsyncIterableIterator<Notification> {
  private readonly items: Notification[] = [];
  private head = 0;
  private waiter: ((r: IteratorResult<Notification>) => void) | null = null;
  private ended = false;
  /** Notifications dropped because the consumer was `maxQueue` behind. */
  dropped = 0;

  constructor(
    private readonly maxQueue: number,
    private readonly onEnd: (s: NotificationQueue) => void,
  ) {}

  push(item: Notification): void {
    if (this.ended) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w({ value: item, done: false });
      return;
    }
    if (this.items.length - this.head >= this.maxQueue) {
      this.dropped++;
      return;
    }
    this.items.push(item);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd(this);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<Notification>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head++] as Notification;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items.splice(0, this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  return(): Promise<IteratorResult<Notification>> {
    this.end();
    this.items.length = 0;
    this.head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Notification> {
    return this;
  }
}
