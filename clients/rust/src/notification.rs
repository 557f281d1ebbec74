//! Notifications the sidecar pushes, and the client's own connection events.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use rmpv::Value;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::error::{Error, ErrorMap};
use crate::types::PresenceEntry;

/// `lock.lost {name, token, fence}`: a lock this connection held (with renewal) was found
/// lost. Stop acting on the protected resource at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockLost {
    pub name: String,
    pub token: String,
    pub fence: u64,
}

/// `presence.diff {channel, version, joins, leaves}`: membership changed on a channel this
/// connection subscribed to. `version` rises by one per diff: on a gap, list again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceDiff {
    pub channel: String,
    pub version: u64,
    #[serde(default)]
    pub joins: BTreeMap<String, Vec<PresenceEntry>>,
    #[serde(default)]
    pub leaves: BTreeMap<String, Vec<PresenceEntry>>,
}

/// `presence.state {channel, version, members}` *(addition)*: the whole state of a
/// channel, replacing the subscriber's (its version may go back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceState {
    pub channel: String,
    pub version: u64,
    #[serde(default)]
    pub members: BTreeMap<String, Vec<PresenceEntry>>,
}

/// `pubsub.message {channel, message}`: a message published on a subscribed channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PubsubMessage {
    pub channel: String,
    #[serde(default = "crate::types::nil")]
    pub message: Value,
}

/// `pubsub.dropped {channel, dropped}` *(addition)*: messages dropped for this connection
/// because it was not reading its socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubsubDropped {
    pub channel: String,
    pub dropped: u64,
}

/// `shutdown {deadline_ms}`: the sidecar began draining.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    pub deadline_ms: u64,
}

/// `error {code, message, ...}`: a frame or message the sidecar could not tie to a msgid.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorNotification {
    pub code: String,
    pub message: String,
    /// The whole payload.
    pub data: ErrorMap,
}

impl ErrorNotification {
    /// The same error as an [`Error`] (one variant per code).
    pub fn to_error(&self) -> Error {
        Error::from_error_map(self.data.to_value())
    }
}

/// What [`Client::notifications`](crate::Client::notifications) yields: the sidecar's
/// notifications, typed where the payload is known, and the client's connection events.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Notification {
    LockLost(LockLost),
    PresenceDiff(PresenceDiff),
    PresenceState(PresenceState),
    PubsubMessage(PubsubMessage),
    PubsubDropped(PubsubDropped),
    Shutdown(Shutdown),
    Error(ErrorNotification),
    /// A notification this SDK does not know (or whose payload did not have the known
    /// shape): ignore it unless you know better.
    Other {
        name: String,
        payload: Value,
    },

    /// Client event: the connection to the sidecar was lost. Every lock, cache lease,
    /// presence entry and subscription of that connection died with it; the client will
    /// NOT take them again by itself. Pending calls failed with
    /// [`Error::ConnectionClosed`] (or the error that closed the connection).
    ConnectionLost {
        reason: String,
    },
    /// Client event: a new connection was made (and `hello` answered) after a loss.
    /// Re-acquire, re-track and re-subscribe here if the application needs to.
    Reconnected,
    /// Client event: this receiver fell behind and missed `skipped` notifications.
    Lagged {
        skipped: u64,
    },
}

impl Notification {
    /// Build the notification for a wire `name` and `payload`.
    pub fn from_wire(name: String, payload: Value) -> Notification {
        fn typed<T: serde::de::DeserializeOwned>(payload: &Value) -> Option<T> {
            rmpv::ext::from_value(payload.clone()).ok()
        }
        let known = match name.as_str() {
            "lock.lost" => typed(&payload).map(Notification::LockLost),
            "presence.diff" => typed(&payload).map(Notification::PresenceDiff),
            "presence.state" => typed(&payload).map(Notification::PresenceState),
            "pubsub.message" => typed(&payload).map(Notification::PubsubMessage),
            "pubsub.dropped" => typed(&payload).map(Notification::PubsubDropped),
            "shutdown" => typed(&payload).map(Notification::Shutdown),
            "error" => match &payload {
                Value::Map(entries) => {
                    let data = ErrorMap(entries.clone());
                    Some(Notification::Error(ErrorNotification {
                        code: data.get_str("code").unwrap_or("").to_owned(),
                        message: data.get_str("message").unwrap_or("").to_owned(),
                        data,
                    }))
                }
                _ => None,
            },
            _ => None,
        };
        known.unwrap_or(Notification::Other { name, payload })
    }

    /// The wire name (`"lock.lost"`, ...); client events are named `"connection.lost"`,
    /// `"connection.reconnected"` and `"notifications.lagged"`.
    pub fn name(&self) -> &str {
        match self {
            Notification::LockLost(_) => "lock.lost",
            Notification::PresenceDiff(_) => "presence.diff",
            Notification::PresenceState(_) => "presence.state",
            Notification::PubsubMessage(_) => "pubsub.message",
            Notification::PubsubDropped(_) => "pubsub.dropped",
            Notification::Shutdown(_) => "shutdown",
            Notification::Error(_) => "error",
            Notification::Other { name, .. } => name,
            Notification::ConnectionLost { .. } => "connection.lost",
            Notification::Reconnected => "connection.reconnected",
            Notification::Lagged { .. } => "notifications.lagged",
        }
    }
}

/// A stream of every notification received from the moment it was made, in order.
///
/// Each receiver has its own buffer (the client's `notification_capacity`); one that
/// falls further behind misses the oldest and then gets [`Notification::Lagged`]. The
/// reading of responses is never held up by a slow receiver.
pub struct Notifications {
    inner: BroadcastStream<Notification>,
}

impl Notifications {
    pub(crate) fn new(rx: broadcast::Receiver<Notification>) -> Self {
        Notifications {
            inner: BroadcastStream::new(rx),
        }
    }

    /// The next notification; `None` once the client is dropped.
    pub async fn recv(&mut self) -> Option<Notification> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Notifications {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(note))) => Poll::Ready(Some(note)),
            Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(skipped)))) => {
                Poll::Ready(Some(Notification::Lagged { skipped }))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
