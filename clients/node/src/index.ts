export { Client, SDK_NAME, SDK_VERSION, DEFAULT_TIMEOUT_MS } from "./client.js";
export type {
  CallOptions,
  ClientEvents,
  ClientOptions,
  NotificationStreamOptions,
  ReconnectOptions,
} from "./client.js";
export * from "./errors.js";
export * from "./types.js";
export { ExtData, Float64, float64, toBigInt, encode, decode } from "./codec.js";
export type { Int64, Value } from "./codec.js";
export {
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_SOCKET_PATH,
  METHOD_ARGS,
  PROTOCOL_VERSION,
  encodeRequest,
  resolveSocketPath,
} from "./protocol.js";
