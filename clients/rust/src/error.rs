//! One error variant per protocol error code, plus the client's own failures.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;

/// The whole error map the sidecar sent (`{"code", "message", ...}`), kept as it came so
/// that fields this SDK does not know about stay readable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorMap(pub Vec<(Value, Value)>);

impl ErrorMap {
    /// The value of the field `name`, if the map has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .map(|(_, value)| value)
    }

    /// The field `name` as a str, if it is one.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// The field `name` as a u64, if it is a non-negative int.
    pub fn get_u64(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(Value::as_u64)
    }

    /// The map as a MessagePack value.
    pub fn to_value(&self) -> Value {
        Value::Map(self.0.clone())
    }
}

impl fmt::Display for ErrorMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

/// Everything this SDK returns as an error.
///
/// The first ten variants are the sidecar's error codes (matched on `code`, each carrying
/// the sidecar's `message` and the whole error map in `data`); [`Error::UnknownCode`] is a
/// server error whose code this SDK does not know. The rest are the client's own failures.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `BAD_FRAME`: a frame's body was not exactly one MessagePack value.
    #[error("BAD_FRAME: {message}")]
    BadFrame { message: String, data: ErrorMap },
    /// `FRAME_TOO_LARGE`: the sidecar refused a frame over its `max_frame_bytes`.
    #[error("FRAME_TOO_LARGE: {message}")]
    FrameTooLarge {
        message: String,
        max_frame_bytes: Option<u64>,
        data: ErrorMap,
    },
    /// `BAD_REQUEST`: wrong shape, or a missing, unknown, mistyped or out-of-range argument
    /// (named in `argument` when there is one).
    #[error("BAD_REQUEST: {message}")]
    BadRequest {
        message: String,
        argument: Option<String>,
        data: ErrorMap,
    },
    /// `UNKNOWN_METHOD`: no such method.
    #[error("UNKNOWN_METHOD: {message}")]
    UnknownMethod { message: String, data: ErrorMap },
    /// `FORBIDDEN`: the peer's policy does not allow this method or namespace.
    #[error("FORBIDDEN: {message}")]
    Forbidden { message: String, data: ErrorMap },
    /// `UNAVAILABLE`: Redis cannot be reached and no fallback applies.
    #[error("UNAVAILABLE: {message} (retry after {retry_after_ms} ms)")]
    Unavailable {
        message: String,
        retry_after_ms: u64,
        data: ErrorMap,
    },
    /// `NOT_HELD`: a cache lease (or token) is not, or no longer, current.
    #[error("NOT_HELD: {message}")]
    NotHeld { message: String, data: ErrorMap },
    /// `TIMEOUT`: a wait the caller asked the sidecar for (`wait_ms`) ran out.
    #[error("TIMEOUT: {message}")]
    Timeout { message: String, data: ErrorMap },
    /// `SHUTTING_DOWN`: the sidecar is draining.
    #[error("SHUTTING_DOWN: {message}")]
    ShuttingDown { message: String, data: ErrorMap },
    /// `INTERNAL`: a bug in the sidecar, logged there with the same `error_id`.
    #[error("INTERNAL: {message} (error_id {})", error_id.as_deref().unwrap_or("?"))]
    Internal {
        message: String,
        error_id: Option<String>,
        data: ErrorMap,
    },
    /// A server error with a code this SDK does not know.
    #[error("{code}: {message}")]
    UnknownCode {
        code: String,
        message: String,
        data: ErrorMap,
    },

    /// The connection closed (or could not be made) before the reply came; the call
    /// may or may not have run.
    #[error("connection closed: {reason}")]
    ConnectionClosed { reason: String },
    /// An I/O error on the socket.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// No reply within the call's client-side timeout. A late reply is dropped.
    #[error("no reply within {0:?}")]
    ClientTimeout(Duration),
    /// The sidecar sent something this SDK cannot read; the connection was closed.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A frame over the client's `max_frame_bytes`: an incoming header announced one (the
    /// connection was closed without reading the body), or a request would encode to one.
    #[error("frame of {size} bytes is over the limit of {limit} bytes")]
    FrameLimitExceeded { size: u64, limit: u64 },
    /// A request could not be encoded, or a result did not have the expected shape.
    #[error("codec error: {0}")]
    Codec(String),
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(Arc::new(err))
    }
}

impl Error {
    /// The error for a response's error map. Unknown codes become [`Error::UnknownCode`].
    pub fn from_error_map(error: Value) -> Error {
        let entries = match error {
            Value::Map(entries) => entries,
            other => return Error::Protocol(format!("malformed error: {other}")),
        };
        let data = ErrorMap(entries);
        let code = data.get_str("code").unwrap_or("").to_owned();
        let message = data
            .get_str("message")
            .map(str::to_owned)
            .unwrap_or_else(|| code.clone());
        match code.as_str() {
            "BAD_FRAME" => Error::BadFrame { message, data },
            "FRAME_TOO_LARGE" => Error::FrameTooLarge {
                message,
                max_frame_bytes: data.get_u64("max_frame_bytes"),
                data,
            },
            "BAD_REQUEST" => Error::BadRequest {
                message,
                argument: data.get_str("argument").map(str::to_owned),
                data,
            },
            "UNKNOWN_METHOD" => Error::UnknownMethod { message, data },
            "FORBIDDEN" => Error::Forbidden { message, data },
            "UNAVAILABLE" => Error::Unavailable {
                message,
                retry_after_ms: data.get_u64("retry_after_ms").unwrap_or(0),
                data,
            },
            "NOT_HELD" => Error::NotHeld { message, data },
            "TIMEOUT" => Error::Timeout { message, data },
            "SHUTTING_DOWN" => Error::ShuttingDown { message, data },
            "INTERNAL" => Error::Internal {
                message,
                error_id: data.get_str("error_id").map(str::to_owned),
                data,
            },
            _ => Error::UnknownCode {
                code,
                message,
                data,
            },
        }
    }

    /// The server's error code (`"BAD_REQUEST"`, ...), or `None` for a client-side error.
    pub fn code(&self) -> Option<&str> {
        Some(match self {
            Error::BadFrame { .. } => "BAD_FRAME",
            Error::FrameTooLarge { .. } => "FRAME_TOO_LARGE",
            Error::BadRequest { .. } => "BAD_REQUEST",
            Error::UnknownMethod { .. } => "UNKNOWN_METHOD",
            Error::Forbidden { .. } => "FORBIDDEN",
            Error::Unavailable { .. } => "UNAVAILABLE",
            Error::NotHeld { .. } => "NOT_HELD",
            Error::Timeout { .. } => "TIMEOUT",
            Error::ShuttingDown { .. } => "SHUTTING_DOWN",
            Error::Internal { .. } => "INTERNAL",
            Error::UnknownCode { code, .. } => code,
            _ => return None,
        })
    }

    /// The whole error map, for an error the server sent.
    pub fn data(&self) -> Option<&ErrorMap> {
        match self {
            Error::BadFrame { data, .. }
            | Error::FrameTooLarge { data, .. }
            | Error::BadRequest { data, .. }
            | Error::UnknownMethod { data, .. }
            | Error::Forbidden { data, .. }
            | Error::Unavailable { data, .. }
            | Error::NotHeld { data, .. }
            | Error::Timeout { data, .. }
            | Error::ShuttingDown { data, .. }
            | Error::Internal { data, .. }
            | Error::UnknownCode { data, .. } => Some(data),
            _ => None,
        }
    }

    /// The sidecar's own message, for an error the server sent.
    pub fn server_message(&self) -> Option<&str> {
        self.data().and_then(|data| data.get_str("message"))
    }

    /// Whether the sidecar answered (as opposed to a client-side failure).
    pub fn is_server_error(&self) -> bool {
        self.data().is_some()
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
