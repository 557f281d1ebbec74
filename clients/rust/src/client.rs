//! The client: one multiplexed connection, a reader task, a writer task, reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::BytesMut;
use rmpv::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::notification::{Notification, Notifications};
use crate::protocol::{
    DEFAULT_MAX_FRAME_BYTES, FrameDecoder, Message, decode_message, encode_request, socket_path,
};
use crate::types::*;

/// The default client-side timeout of a call (a call that sends `wait_ms` gets that much
/// more).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The name sent in `hello`'s `client`.
pub const CLIENT_NAME: &str = "madsidecar-rust";
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Options for a [`Client`]; start from [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    socket: Option<String>,
    namespace: Option<String>,
    client_name: String,
    timeout: Option<Duration>,
    reconnect: bool,
    reconnect_initial: Duration,
    reconnect_max: Duration,
    max_frame_bytes: usize,
    notification_capacity: usize,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            socket: None,
            namespace: None,
            client_name: CLIENT_NAME.to_owned(),
            timeout: Some(DEFAULT_TIMEOUT),
            reconnect: true,
            reconnect_initial: RECONNECT_FIRST,
            reconnect_max: RECONNECT_MAX,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            notification_capacity: 4096,
        }
    }
}

impl ClientBuilder {
    /// The socket path. Default: `$MADSIDECAR_SOCKET`, else `/run/madsidecar/madsidecar.sock`.
    pub fn socket(mut self, path: impl Into<String>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// The namespace to select with `hello` on every (re)connection. Default: the
    /// sidecar's (`"default"`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The `client` name sent in `hello`. Default `"madsidecar-rust"`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// The default client-side timeout of every call, connecting included (`None`: wait
    /// for ever). Default 10 s. A call that sends `wait_ms` gets that much more.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether a call after a lost connection makes a new one (with backoff). Default
    /// true. With false, every call after a loss fails with [`Error::ConnectionClosed`].
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// The backoff between connection attempts: the first delay and the cap (it doubles
    /// in between, with ±20% jitter). Default 50 ms and 2 s.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max.max(initial);
        self
    }

    /// The largest frame the client accepts (and sends). Default 4 MiB, the sidecar's
    /// default. A reply whose header announces more closes the connection (without
    /// reading the body) and fails the pending calls with [`Error::FrameLimitExceeded`].
    pub fn max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max.max(1);
        self
    }

    /// How many notifications each [`Notifications`] stream buffers before it lags.
    /// Default 4096.
    pub fn notification_capacity(mut self, capacity: usize) -> Self {
        self.notification_capacity = capacity.max(1);
        self
    }

    /// A client with these options, not yet connected: the first call connects.
    pub fn build(self) -> Client {
        let (notes, _) = broadcast::channel(self.notification_capacity);
        let path = socket_path(self.socket.as_deref());
        Client {
            inner: Arc::new(Inner {
                path,
                state: Mutex::new(State {
                    conn: None,
                    ever_connected: false,
                    closed: false,
                    namespace: self.namespace.clone(),
                    server_info: None,
                }),
                backoff: tokio::sync::Mutex::new(Backoff {
                    delay: self.reconnect_initial,
                    not_before: None,
                }),
                notes,
                next_msgid: AtomicU32::new(1),
                next_conn_id: AtomicU64::new(1),
                opts: self,
            }),
            timeout: None,
        }
    }

    /// Build the client and connect (sending `hello`) within the timeout.
    pub async fn connect(self) -> Result<Client> {
        let client = self.build();
        client.connect_now().await?;
        Ok(client)
    }
}

/// A connection to the sidecar, cheap to clone and shareable across tasks.
///
/// Calls may run concurrently: each gets its own msgid and the replies are matched by
/// msgid. One task reads the socket continuously, so a pipeline of any size completes.
///
/// When the connection is lost, the pending calls fail with [`Error::ConnectionClosed`],
/// the [`Notifications`] streams get [`Notification::ConnectionLost`], and the next call
/// reconnects (with backoff) and sends `hello` again, with the same namespace. Nothing
/// else is replayed: the locks, cache leases, presence entries and subscriptions belonged
/// to the old connection and the sidecar released them when it closed. Taking a lock
/// again silently would let two holders believe they hold it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Option<Option<Duration>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.inner.path)
            .field("connected", &self.is_connected())
            .finish()
    }
}

struct Inner {
    path: String,
    opts: ClientBuilder,
    state: Mutex<State>,
    backoff: tokio::sync::Mutex<Backoff>,
    notes: broadcast::Sender<Notification>,
    next_msgid: AtomicU32,
    next_conn_id: AtomicU64,
}

struct State {
    conn: Option<Arc<Conn>>,
    ever_connected: bool,
    closed: bool,
    namespace: Option<String>,
    server_info: Option<HelloResult>,
}

struct Backoff {
    delay: Duration,
    not_before: Option<Instant>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let conn = lock(&self.state).conn.take();
        if let Some(conn) = conn {
            conn.fail(Error::ConnectionClosed {
                reason: "client dropped".into(),
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Reply = oneshot::Sender<Result<Value>>;

/// One socket connection and the calls waiting on it.
struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<Pending>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// The sidecar's `max_frame_bytes` (from `hello`), 0 until known.
    server_max_frame: AtomicU64,
}

struct Pending {
    calls: HashMap<u32, Reply>,
    /// Set once the connection is gone: no call may wait on it any more.
    failed: Option<Error>,
}

impl Conn {
    /// Fail every pending call with `err`, stop the tasks; the first call wins.
    fn fail(&self, err: Error) -> bool {
        let calls = {
            let mut pending = lock(&self.pending);
            if pending.failed.is_some() {
                return false;
            }
            pending.failed = Some(err.clone());
            std::mem::take(&mut pending.calls)
        };
        for (_, reply) in calls {
            let _ = reply.send(Err(err.clone()));
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        true
    }

    fn deliver(&self, msgid: u32, outcome: Result<Value>) {
        let reply = lock(&self.pending).calls.remove(&msgid);
        if let Some(reply) = reply {
            let _ = reply.send(outcome); // a call that timed out is gone: dropped quietly
        }
    }
}

/// A registered call: removes its msgid from the pending map if dropped unanswered
/// (timed out or cancelled), so a late reply is dropped quietly.
struct Registered {
    conn: Arc<Conn>,
    msgid: u32,
    rx: oneshot::Receiver<Result<Value>>,
    answered: bool,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if !self.answered {
            // msgids are unique among in-flight calls: an entry under ours is ours.
            lock(&self.conn.pending).calls.remove(&self.msgid);
        }
    }
}

impl Registered {
    async fn reply(mut self) -> Result<Value> {
        let outcome = (&mut self.rx).await;
        self.answered = true;
        match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::ConnectionClosed {
                reason: "connection closed".into(),
            }),
        }
    }
}

impl Client {
    /// Options for a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connect with the default options (socket from `$MADSIDECAR_SOCKET`, else
    /// `/run/madsidecar/madsidecar.sock`).
    pub async fn connect() -> Result<Client> {
        ClientBuilder::default().connect().await
    }

    /// Connect to the socket at `path` with the default options.
    pub async fn connect_to(path: impl Into<String>) -> Result<Client> {
        ClientBuilder::default().socket(path).connect().await
    }

    /// A handle on the same connection whose calls use `timeout` (`None`: no limit)
    /// instead of the client's default.
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout: Some(timeout),
        }
    }

    /// The socket path in use.
    pub fn socket_path(&self) -> &str {
        &self.inner.path
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        lock(&self.inner.state).conn.is_some()
    }

    /// What the sidecar said in its last `hello` reply.
    pub fn server_info(&self) -> Option<HelloResult> {
        lock(&self.inner.state).server_info.clone()
    }

    /// Every notification from now on (and the client's connection events), in order.
    pub fn notifications(&self) -> Notifications {
        Notifications::new(self.inner.notes.subscribe())
    }

    /// Connect now (if not connected), within the timeout.
    pub async fn connect_now(&self) -> Result<()> {
        let limit = self.timeout_for(0);
        with_limit(limit, self.inner.connection()).await.map(|_| ())
    }

    /// Close the connection: pending calls fail with [`Error::ConnectionClosed`], and
    /// every later call too. What the connection held is released by the sidecar.
    pub fn close(&self) {
        let conn = {
            let mut state = lock(&self.inner.state);
            state.closed = true;
            state.conn.take()
        };
        if let Some(conn) = conn {
            conn.fail(Error::ConnectionClosed {
                reason: "client closed".into(),
            });
        }
    }

    fn timeout_for(&self, server_wait_ms: u64) -> Option<Duration> {
        let base = self.timeout.unwrap_or(self.inner.opts.timeout)?;
        Some(base + Duration::from_millis(server_wait_ms))
    }

    /// Send a typed request and return its typed result.
    pub async fn request<R: Request>(&self, req: R) -> Result<R::Response> {
        let limit = self.timeout_for(req.server_wait_ms());
        let value = self.call_value(R::METHOD, &req, limit).await?;
        from_result(R::METHOD, value)
    }

    /// The escape hatch: call any `method` with `args` (a map of named arguments, or
    /// `Value::Nil` for none) and get the raw result. A `wait_ms` argument extends the
    /// timeout as for typed calls.
    pub async fn call(&self, method: &str, args: Value) -> Result<Value> {
        let wait = match &args {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some("wait_ms"))
                .and_then(|(_, v)| v.as_u64()),
            Value::Nil => None,
            _ => {
                return Err(Error::Codec(format!(
                    "{method}: the arguments must be a map"
                )));
            }
        };
        let wait = wait.unwrap_or(if method == "cache.fetch" { 5000 } else { 0 });
        let limit = self.timeout_for(wait);
        self.call_value(method, &args, limit).await
    }

    async fn call_value<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        limit: Option<Duration>,
    ) -> Result<Value> {
        with_limit(limit, async {
            let conn = self.inner.connection().await?;
            let call = self.inner.register(&conn, method, params)?;
            call.reply().await
        })
        .await
    }

    /// Send many requests of one kind in one write and wait for them all: results in
    /// order, each a result or the error of that request. Replies are read while the
    /// batch is still being written, so a batch of any size completes. The timeout (the
    /// client's, plus the largest `wait_ms`) applies to the whole batch.
    pub async fn pipeline<R: Request>(
        &self,
        reqs: impl IntoIterator<Item = R>,
    ) -> Result<Vec<Result<R::Response>>> {
        let reqs: Vec<R> = reqs.into_iter().collect();
        let wait = reqs.iter().map(Request::server_wait_ms).max().unwrap_or(0);
        let limit = self.timeout_for(wait);
        with_limit(limit, async {
            let conn = self.inner.connection().await?;
            let mut batch = Vec::with_capacity(reqs.len() * 32);
            let mut calls = Vec::with_capacity(reqs.len());
            for req in &reqs {
                let (call, frame) = self.inner.prepare(&conn, R::METHOD, req)?;
                batch.extend_from_slice(&frame);
                calls.push(call);
                if batch.len() >= WRITE_BATCH_BYTES {
                    self.inner.send(&conn, std::mem::take(&mut batch))?;
                }
            }
            if !batch.is_empty() {
                self.inner.send(&conn, batch)?;
            }
            let mut out = Vec::with_capacity(calls.len());
            for call in calls {
                out.push(
                    call.reply()
                        .await
                        .and_then(|value| from_result(R::METHOD, value)),
                );
            }
            Ok(out)
        })
        .await
    }

    // -- connection methods ----------------------------------------------------------

    /// `hello`: introduce the client and select a namespace. The namespace is kept and
    /// selected again on every reconnection. Send it before pipelining other work.
    pub async fn hello(&self, mut req: Hello) -> Result<HelloResult> {
        if req.client.is_none() {
            req.client = Some(self.inner.opts.client_name.clone());
        }
        let asked = req.namespace.clone();
        let info = self.request(req).await?;
        let mut state = lock(&self.inner.state);
        if asked.is_some() {
            state.namespace = asked;
        }
        state.server_info = Some(info.clone());
        Ok(info)
    }

    /// `ping` → `"pong"`: is the sidecar up?
    pub async fn ping(&self) -> Result<String> {
        self.request(Ping {}).await
    }

    /// `stats`: counters.
    pub async fn stats(&self) -> Result<StatsResult> {
        self.request(Stats {}).await
    }

    /// `health`: can this node reach Redis?
    pub async fn health(&self) -> Result<HealthResult> {
        self.request(Health {}).await
    }
}

macro_rules! methods {
    ($($(#[$doc:meta])* $name:ident($req:ty);)*) => {
        impl Client {
            $(
                $(#[$doc])*
                pub async fn $name(&self, req: impl Into<$req>) -> Result<<$req as Request>::Response> {
                    self.request(req.into()).await
                }
            )*
        }
    };
}

methods! {
    /// `cache.get {key}` → `None` on a miss.
    cache_get(CacheGet);
    /// `cache.mget {keys}` → one entry or `None` per key, in order.
    cache_mget(CacheMget);
    /// `cache.set {key, value, ttl_ms?}`.
    cache_set(CacheSet);
    /// `cache.delete {keys}` → `{deleted}`.
    cache_delete(CacheDelete);
    /// `cache.invalidate {prefix}` → `{deleted}`.
    cache_invalidate(CacheInvalidate);
    /// `cache.fetch {key, ...}` → a hit, or a lease to compute and `cache.fill`.
    cache_fetch(CacheFetch);
    /// `cache.fill {key, lease, value, ttl_ms?}`; [`Error::NotHeld`] for a stale lease.
    cache_fill(CacheFill);
    /// `cache.warm {prefix}` → `{loaded}`.
    cache_warm(CacheWarm);
    /// `lock.acquire {name, ttl_ms?, wait_ms?, renew?, wait_replicas?}`.
    lock_acquire(LockAcquire);
    /// `lock.release {name, token}` → `{released}`.
    lock_release(LockRelease);
    /// `lock.extend {name, token, ttl_ms}` → `{extended, ttl_ms}`.
    lock_extend(LockExtend);
    /// `lock.inspect {name}` → `{held, ttl_ms, fence}`.
    lock_inspect(LockInspect);
    /// `session.create {user_id, data?, idle_ttl_ms?, absolute_ttl_ms?}`.
    session_create(SessionCreate);
    /// `session.get {token, touch?}` → `None` for an unknown token.
    session_get(SessionGet);
    /// `session.update {token, data}` → `{updated}`.
    session_update(SessionUpdate);
    /// `session.rotate {token}` → `None` or the new token.
    session_rotate(SessionRotate);
    /// `session.revoke {token}` or `{session_id}` → `{revoked}`.
    session_revoke(SessionRevoke);
    /// `session.revoke_user {user_id, except_session_id?}` → `{revoked}`.
    session_revoke_user(SessionRevokeUser);
    /// `session.list {user_id}`.
    session_list(SessionList);
    /// `presence.track {channel, key, meta?}` → `{ref}`.
    presence_track(PresenceTrack);
    /// `presence.update {channel, ref, meta}` → `{updated}`.
    presence_update(PresenceUpdate);
    /// `presence.untrack {channel, ref}` → `{removed}`.
    presence_untrack(PresenceUntrack);
    /// `presence.list {channel}` → `{members}`.
    presence_list(PresenceList);
    /// `presence.count {channel}` → `{keys, refs}`.
    presence_count(PresenceCount);
    /// `presence.subscribe {channel}` → `{members, version}`, then `presence.diff`s.
    presence_subscribe(PresenceSubscribe);
    /// `presence.unsubscribe {channel}`.
    presence_unsubscribe(PresenceUnsubscribe);
    /// `pubsub.publish {channel, message}` → `{receivers}`.
    pubsub_publish(PubsubPublish);
    /// `pubsub.subscribe {channel}`, then `pubsub.message`s.
    pubsub_subscribe(PubsubSubscribe);
    /// `pubsub.unsubscribe {channel}`.
    pubsub_unsubscribe(PubsubUnsubscribe);
    /// `ratelimit.hit {key, limit, window_ms, ...}` or `{key, rule, cost?}`.
    ratelimit_hit(RatelimitHit);
    /// `ratelimit.hit_many {checks}`: all consume, or none does.
    ratelimit_hit_many(RatelimitHitMany);
    /// `ratelimit.peek`: `hit` without consuming.
    ratelimit_peek(RatelimitPeek);
    /// `ratelimit.reset {key, rule?}`.
    ratelimit_reset(RatelimitReset);
}

macro_rules! from_str {
    ($($ty:ident),*) => {
        $(
            impl From<&str> for $ty {
                fn from(s: &str) -> Self {
                    $ty::new(s)
                }
            }
            impl From<String> for $ty {
                fn from(s: String) -> Self {
                    $ty::new(s)
                }
            }
        )*
    };
}

from_str!(
    CacheGet,
    CacheInvalidate,
    CacheFetch,
    CacheWarm,
    LockAcquire,
    LockInspect,
    SessionCreate,
    SessionGet,
    SessionRotate,
    SessionRevokeUser,
    SessionList,
    PresenceList,
    PresenceCount,
    PresenceSubscribe,
    PresenceUnsubscribe,
    PubsubSubscribe,
    PubsubUnsubscribe,
    RatelimitReset
);

fn from_result<T: DeserializeOwned>(method: &str, value: Value) -> Result<T> {
    rmpv::ext::from_value(value)
        .map_err(|e| Error::Codec(format!("{method}: unexpected result shape: {e}")))
}

async fn with_limit<T>(limit: Option<Duration>, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match limit {
        None => fut.await,
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::ClientTimeout(limit)),
        },
    }
}

impl Inner {
    fn current(&self) -> Result<Option<Arc<Conn>>> {
        let state = lock(&self.state);
        if let Some(conn) = &state.conn {
            return Ok(Some(conn.clone()));
        }
        if state.closed {
            return Err(Error::ConnectionClosed {
                reason: "client closed".into(),
            });
        }
        if state.ever_connected && !self.opts.reconnect {
            return Err(Error::ConnectionClosed {
                reason: format!("connection to {} lost; reconnect is off", self.path),
            });
        }
        Ok(None)
    }

    /// The connection, made (with backoff between attempts) if there is none.
    async fn connection(self: &Arc<Self>) -> Result<Arc<Conn>> {
        if let Some(conn) = self.current()? {
            return Ok(conn);
        }
        let mut backoff = self.backoff.lock().await;
        loop {
            if let Some(conn) = self.current()? {
                return Ok(conn);
            }
            if let Some(at) = backoff.not_before {
                tokio::time::sleep_until(at).await;
            }
            match self.connect_once().await {
                Ok(conn) => {
                    backoff.delay = self.opts.reconnect_initial;
                    backoff.not_before = None;
                    return Ok(conn);
                }
                Err(err) => {
                    let jitter = 0.8 + fastrand::f64() * 0.4;
                    backoff.not_before = Some(Instant::now() + backoff.delay.mul_f64(jitter));
                    backoff.delay = (backoff.delay * 2).min(self.opts.reconnect_max);
                    let first = !lock(&self.state).ever_connected;
                    // A refused hello is an answer, not a failure to connect: report it.
                    if err.is_server_error() || (first && !self.opts.reconnect) {
                        return Err(err);
                    }
                }
            }
        }
    }

    async fn connect_once(self: &Arc<Self>) -> Result<Arc<Conn>> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|e| Error::ConnectionClosed {
                    reason: format!("cannot connect to {}: {e}", self.path),
                })?;
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            id: self.next_conn_id.fetch_add(1, Ordering::Relaxed),
            tx,
            pending: Mutex::new(Pending {
                calls: HashMap::new(),
                failed: None,
            }),
            tasks: Mutex::new(Vec::new()),
            server_max_frame: AtomicU64::new(0),
        });
        // Stops the tasks if this future is dropped (timed out) before it is published.
        struct Unpublished(Option<Arc<Conn>>);
        impl Drop for Unpublished {
            fn drop(&mut self) {
                if let Some(conn) = self.0.take() {
                    conn.fail(Error::ConnectionClosed {
                        reason: "connection attempt abandoned".into(),
                    });
                }
            }
        }
        let mut guard = Unpublished(Some(conn.clone()));
        let reader = tokio::spawn(read_loop(
            Arc::downgrade(self),
            conn.clone(),
            rd,
            self.opts.max_frame_bytes,
        ));
        let writer = tokio::spawn(write_loop(Arc::downgrade(self), conn.clone(), rx, wr));
        lock(&conn.tasks).extend([reader.abort_handle(), writer.abort_handle()]);

        let hello = Hello {
            client: Some(self.opts.client_name.clone()),
            version: Some(Value::from(env!("CARGO_PKG_VERSION"))),
            namespace: lock(&self.state).namespace.clone(),
        };
        let reply = self.register(&conn, Hello::METHOD, &hello)?.reply().await;
        let info: HelloResult = match reply.and_then(|v| from_result(Hello::METHOD, v)) {
            Ok(info) => info,
            Err(err) => {
                conn.fail(err.clone());
                return Err(err);
            }
        };
        conn.server_max_frame
            .store(info.max_frame_bytes, Ordering::Relaxed);
        let reconnected = {
            let mut state = lock(&self.state);
            if state.closed {
                drop(state);
                conn.fail(Error::ConnectionClosed {
                    reason: "client closed".into(),
                });
                return Err(Error::ConnectionClosed {
                    reason: "client closed".into(),
                });
            }
            state.conn = Some(conn.clone());
            state.server_info = Some(info);
            std::mem::replace(&mut state.ever_connected, true)
        };
        guard.0 = None;
        if reconnected {
            let _ = self.notes.send(Notification::Reconnected);
        }
        Ok(conn)
    }

    /// Register a call (fresh msgid) and encode its frame, without sending it.
    fn prepare<P: Serialize + ?Sized>(
        &self,
        conn: &Arc<Conn>,
        method: &str,
        params: &P,
    ) -> Result<(Registered, Vec<u8>)> {
        let (reply, rx) = oneshot::channel();
        let msgid = {
            let mut pending = lock(&conn.pending);
            if let Some(err) = &pending.failed {
                return Err(err.clone());
            }
            let mut msgid = self.next_msgid.fetch_add(1, Ordering::Relaxed);
            while pending.calls.contains_key(&msgid) {
                msgid = self.next_msgid.fetch_add(1, Ordering::Relaxed);
            }
            pending.calls.insert(msgid, reply);
            msgid
        };
        let call = Registered {
            conn: conn.clone(),
            msgid,
            rx,
            answered: false,
        };
        let frame = encode_request(msgid, method, params)?;
        let body = (frame.len() - 4) as u64;
        let server_max = conn.server_max_frame.load(Ordering::Relaxed);
        let limit = if server_max > 0 {
            server_max.min(self.opts.max_frame_bytes as u64)
        } else {
            self.opts.max_frame_bytes as u64
        };
        if body > limit {
            return Err(Error::FrameLimitExceeded { size: body, limit });
        }
        Ok((call, frame))
    }

    fn send(&self, conn: &Conn, bytes: Vec<u8>) -> Result<()> {
        conn.tx.send(bytes).map_err(|_| {
            lock(&conn.pending)
                .failed
                .clone()
                .unwrap_or(Error::ConnectionClosed {
                    reason: "connection closed".into(),
                })
        })
    }

    fn register<P: Serialize + ?Sized>(
        &self,
        conn: &Arc<Conn>,
        method: &str,
        params: &P,
    ) -> Result<Registered> {
        let (call, frame) = self.prepare(conn, method, params)?;
        self.send(conn, frame)?;
        Ok(call)
    }

    /// The connection `conn` is gone because of `err`.
    fn lost(&self, conn: &Arc<Conn>, err: Error) {
        let reason = err.to_string();
        if !conn.fail(err) {
            return;
        }
        let published = {
            let mut state = lock(&self.state);
            match &state.conn {
                Some(current) if current.id == conn.id => {
                    state.conn = None;
                    !state.closed
                }
                _ => false,
            }
        };
        if published {
            let _ = self.notes.send(Notification::ConnectionLost { reason });
        }
    }
}

async fn read_loop(
    inner: Weak<Inner>,
    conn: Arc<Conn>,
    mut rd: OwnedReadHalf,
    max_frame_bytes: usize,
) {
    let decoder = FrameDecoder::new(max_frame_bytes);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let err = 'outer: loop {
        loop {
            match decoder.check(&buf) {
                Ok(Some(n)) => {
                    let frame = buf.split_to(4 + n);
                    match decode_message(&frame[4..]) {
                        Ok(Message::Response { msgid, outcome }) => {
                            conn.deliver(msgid, outcome.map_err(Error::from_error_map));
                        }
                        Ok(Message::Notification(note)) => {
                            if let Some(inner) = inner.upgrade() {
                                let _ = inner.notes.send(note);
                            }
                        }
                        Err(err) => break 'outer err,
                    }
                }
                Ok(None) => {
                    if buf.len() >= 4 {
                        // The header passed the limit check: room for the whole frame.
                        let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        buf.reserve(4 + n - buf.len());
                    }
                    break;
                }
                Err(err) => break 'outer err,
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                break Error::ConnectionClosed {
                    reason: "the sidecar closed the connection".into(),
                };
            }
            Ok(_) => {}
            Err(err) => break Error::from(err),
        }
    };
    match inner.upgrade() {
        Some(inner) => inner.lost(&conn, err),
        None => {
            conn.fail(err);
        }
    }
}

async fn write_loop(
    inner: Weak<Inner>,
    conn: Arc<Conn>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    mut wr: OwnedWriteHalf,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let result = match rx.try_recv() {
            Err(_) => wr.write_all(&first).await,
            Ok(second) => {
                batch.clear();
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&second);
                while batch.len() < WRITE_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                wr.write_all(&batch).await
            }
        };
        if let Err(err) = result {
            if let Some(inner) = inner.upgrade() {
                inner.lost(&conn, Error::from(err));
            } else {
                conn.fail(Error::from(err));
            }
            return;
        }
    }
}
