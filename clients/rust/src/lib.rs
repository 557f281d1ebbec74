//! An async (tokio) client for madsidecar, the per-node state sidecar: cache, locks,
//! sessions, presence, pub/sub and rate limits over MessagePack frames on a Unix socket.
//!
//! ```no_run
//! use madsidecar_client::{Client, LockAcquire};
//!
//! # async fn demo() -> madsidecar_client::Result<()> {
//! let client = Client::connect().await?; // $MADSIDECAR_SOCKET or /run/madsidecar/madsidecar.sock
//! assert_eq!(client.ping().await?, "pong");
//! let lock = client
//!     .lock_acquire(LockAcquire { ttl_ms: Some(30_000), ..LockAcquire::new("jobs") })
//!     .await?;
//! if lock.acquired {
//!     println!("fence {}", lock.fence.unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! See the README for the tour: notifications, errors, timeouts, reconnects.

mod client;
mod error;
mod notification;
pub mod protocol;
mod types;

pub use client::{CLIENT_NAME, Client, ClientBuilder, DEFAULT_TIMEOUT};
pub use error::{Error, ErrorMap, Result};
pub use notification::{
    ErrorNotification, LockLost, Notification, Notifications, PresenceDiff, PresenceState,
    PubsubDropped, PubsubMessage, Shutdown,
};
pub use rmpv::{self, Value};
pub use types::*;
