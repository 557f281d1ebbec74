/**
 * One error class per protocol error code, a fallback for codes this SDK does not know,
 * and the client's own failures. Everything extends `MadsidecarError`.
 */

/** Base of every error this SDK throws. */
export class MadsidecarError extends Error {
  override name = "MadsidecarError";
}

/** The error map the sidecar sent: `{code, message, ...}` (extra fields kept). */
export type ErrorMap = { code: string; message: string } & Record<string, unknown>;

/**
 * The sidecar answered with an error. `code` is the protocol code, `data` the whole error
 * map (for `argument`, `retry_after_ms`, `error_id` and any field added later).
 * An unknown code is thrown as a plain `ServerError` (see `UnknownCodeError`).
 */
export class ServerError extends MadsidecarError {
  override name = "ServerError";
  readonly code: string;
  readonly data: ErrorMap;
  constructor(data: ErrorMap) {
    super(`${data.code}: ${data.message}`);
    this.code = data.code;
    this.data = data;
  }
  /** The sidecar's own words (without the code). */
  get serverMessage(): string {
    return this.data.message;
  }
}

/** The frame body was not exactly one MessagePack value; a zero-length frame. */
export class BadFrameError extends ServerError {
  override name = "BadFrameError";
}
/** The sidecar refused a frame over its `max_frame_bytes`. */
export class FrameTooLargeError extends ServerError {
  override name = "FrameTooLargeError";
  get maxFrameBytes(): number | undefined {
    const v = this.data["max_frame_bytes"];
    return typeof v === "number" ? v : undefined;
  }
}
/** A wrong shape; a missing, unknown, mistyped or out-of-range argument (see `argument`). */
export class BadRequestError extends ServerError {
  override name = "BadRequestError";
  /** The argument at fault, when there is one. */
  get argument(): string | undefined {
    const v = this.data["argument"];
    return typeof v === "string" ? v : undefined;
  }
}
export class UnknownMethodError extends ServerError {
  override name = "UnknownMethodError";
}
export class ForbiddenError extends ServerError {
  override name = "ForbiddenError";
  get argument(): string | undefined {
    const v = this.data["argument"];
    return typeof v === "string" ? v : undefined;
  }
}
/** Redis cannot be reached and no fallback applies; retry after `retryAfterMs`. */
export class UnavailableError extends ServerError {
  override name = "UnavailableError";
  get retryAfterMs(): number {
    const v = this.data["retry_after_ms"];
    return typeof v === "number" ? v : 0;
  }
}
/** A cache lease (or other token) is not, or no longer, current. */
export class NotHeldError extends ServerError {
  override name = "NotHeldError";
}
/** A bounded wait on the sidecar (`wait_ms`) ran out: code `TIMEOUT`. */
export class ServerTimeoutError extends ServerError {
  override name = "ServerTimeoutError";
}
export class ShuttingDownError extends ServerError {
  override name = "ShuttingDownError";
}
/** A bug in the sidecar; its log line `internal_error` carries the same `errorId`. */
export class InternalError extends ServerError {
  override name = "InternalError";
  get errorId(): string | undefined {
    const v = this.data["error_id"];
    return typeof v === "string" ? v : undefined;
  }
}
/** A code this SDK does not know (a newer sidecar's): still a ServerError. */
export class UnknownCodeError extends ServerError {
  override name = "UnknownCodeError";
}

const BY_CODE: Record<string, new (data: ErrorMap) => ServerError> = {
  BAD_FRAME: BadFrameError,
  FRAME_TOO_LARGE: FrameTooLargeError,
  BAD_REQUEST: BadRequestError,
  UNKNOWN_METHOD: UnknownMethodError,
  FORBIDDEN: ForbiddenError,
  UNAVAILABLE: UnavailableError,
  NOT_HELD: NotHeldError,
  TIMEOUT: ServerTimeoutError,
  SHUTTING_DOWN: ShuttingDownError,
  INTERNAL: InternalError,
};

/** The error for an error map (its class chosen by `code`). */
export function errorFromMap(error: unknown): ServerError {
  if (error === null || typeof error !== "object" || Array.isArray(error) || error instanceof Map) {
    return new UnknownCodeError({ code: "", message: `malformed error: ${String(error)}` });
  }
  const raw = error as Record<string, unknown>;
  const code = typeof raw["code"] === "string" ? raw["code"] : "";
  const message = typeof raw["message"] === "string" ? raw["message"] : code;
  const data = { ...raw, code, message } as ErrorMap;
  const Cls = BY_CODE[code] ?? UnknownCodeError;
  return new Cls(data);
}

// -- the client's own failures ------------------------------------------------------------

/**
 * Not connected: the client was closed, the connection was lost before the reply came (the
 * call may or may not have run), or it is down and reconnecting is off.
 */
export class ConnectionClosedError extends MadsidecarError {
  override name = "ConnectionClosedError";
}

/** No reply within the call's client-side timeout. A late reply is dropped quietly. */
export class CallTimeoutError extends MadsidecarError {
  override name = "CallTimeoutError";
  constructor(readonly timeoutMs: number, message?: string) {
    super(message ?? `no reply within ${timeoutMs} ms`);
  }
}

/** The sidecar sent something this SDK cannot read; the connection is closed. */
export class ProtocolViolationError extends MadsidecarError {
  override name = "ProtocolViolationError";
}

/**
 * A frame over the client's `maxFrameBytes` (incoming: the connection is closed before its
 * body is read, pending calls fail with this error) or over the sidecar's (outgoing: the
 * request is not sent).
 */
export class FrameLimitError extends ProtocolViolationError {
  override name = "FrameLimitError";
  constructor(
    readonly frameBytes: number,
    readonly maxFrameBytes: number,
    direction: "incoming" | "outgoing" = "incoming",
  ) {
    super(
      direction === "incoming"
        ? `the sidecar sent a ${frameBytes}-byte frame, over this client's maxFrameBytes (${maxFrameBytes}); connection closed`
        : `the request is ${frameBytes} bytes, over the sidecar's max_frame_bytes (${maxFrameBytes}); not sent`,
    );
  }
}
