//! Client behaviour against a scripted fake sidecar on a Unix socket: msgid matching with
//! replies out of order, notifications between replies, timeouts and late replies, the
//! frame limit, and what a reconnect sends (hello, and nothing else).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use madsidecar_client::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

struct Fake {
    listener: UnixListener,
    path: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "msc-rust-fake-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        Fake { listener, path }
    }

    fn builder(&self) -> ClientBuilder {
        Client::builder()
            .socket(self.path.to_str().unwrap())
            .timeout(Some(Duration::from_secs(10)))
    }

    async fn accept(&self) -> Peer {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), self.listener.accept())
            .await
            .expect("the client connects")
            .unwrap();
        Peer { stream }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Peer {
    stream: UnixStream,
}

struct Req {
    msgid: u32,
    method: String,
    args: Value,
}

impl Peer {
    async fn recv(&mut self) -> Req {
        let mut header = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut header))
            .await
            .expect("a request comes")
            .unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        self.stream.read_exact(&mut body).await.unwrap();
        let value = rmpv::decode::read_value(&mut &body[..]).unwrap();
        let items = value.as_array().unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_u64(), Some(0));
        let params = items[3].as_array().unwrap();
        Req {
            msgid: u32::try_from(items[1].as_u64().unwrap()).unwrap(),
            method: items[2].as_str().unwrap().to_owned(),
            args: params.first().cloned().unwrap_or(Value::Nil),
        }
    }

    async fn send(&mut self, value: Value) {
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &value).unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn reply(&mut self, msgid: u32, result: Value) {
        self.send(Value::Array(vec![
            1.into(),
            msgid.into(),
            Value::Nil,
            result,
        ]))
        .await;
    }

    async fn notify(&mut self, name: &str, payload: Value) {
        self.send(Value::Array(vec![
            2.into(),
            name.into(),
            Value::Array(vec![payload]),
        ]))
        .await;
    }

    /// Expect `hello` and answer it; returns its arguments.
    async fn hello(&mut self) -> Value {
        let req = self.recv().await;
        assert_eq!(
            req.method, "hello",
            "the first request on a connection is hello"
        );
        let namespace = req.args["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let result = Value::Map(vec![
            ("server".into(), "madsidecar".into()),
            ("version".into(), "0.0.0-fake".into()),
            ("protocol".into(), 1.into()),
            ("node_id".into(), "fake".into()),
            ("namespace".into(), namespace.into()),
            ("max_frame_bytes".into(), 4_194_304.into()),
            ("methods".into(), Value::Array(vec!["ping".into()])),
            ("something_new".into(), true.into()),
        ]);
        self.reply(req.msgid, result).await;
        req.args
    }
}

async fn next_note(notes: &mut Notifications) -> Notification {
    tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .expect("a notification comes")
        .expect("the stream is open")
}

#[tokio::test]
async fn replies_in_any_order_are_matched_by_msgid_and_notifications_interleave() {
    let fake = Fake::new();
    let connecting = tokio::spawn(fake.builder().client_name("test-client").connect());
    let mut peer = fake.accept().await;
    let hello = peer.hello().await;
    assert_eq!(hello["client"].as_str(), Some("test-client"));
    let client = connecting.await.unwrap().unwrap();
    assert_eq!(client.server_info().unwrap().node_id, "fake");
    let mut notes = client.notifications();

    // 200 concurrent calls, each with its own key.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let client = client.clone();
        calls.spawn(async move { (i, client.cache_get(format!("k{i}")).await) });
    }
    let mut reqs = Vec::new();
    for _ in 0..200 {
        reqs.push(peer.recv().await);
    }
    let mut ids: Vec<u32> = reqs.iter().map(|r| r.msgid).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "msgids are unique among in-flight calls");

    // Answer in reverse order, with notifications in between.
    peer.notify("something.new", Value::Map(vec![("x".into(), 1.into())]))
        .await;
    for (n, req) in reqs.iter().rev().enumerate() {
        let key = req.args["key"].as_str().unwrap().to_owned();
        let entry = Value::Map(vec![
            ("value".into(), key.into()),
            ("source".into(), "l2".into()),
            ("ttl_ms".into(), 5.into()),
            ("unknown_field".into(), 1.into()),
        ]);
        peer.reply(req.msgid, entry).await;
        if n == 100 {
            peer.notify(
                "lock.lost",
                Value::Map(vec![
                    ("name".into(), "jobs".into()),
                    ("token".into(), "t".into()),
                    ("fence".into(), Value::from(u64::MAX)),
                ]),
            )
            .await;
        }
    }
    while let Some(done) = calls.join_next().await {
        let (i, got) = done.unwrap();
        let entry = got.unwrap().unwrap();
        assert_eq!(entry.value, Value::from(format!("k{i}")));
    }
    match next_note(&mut notes).await {
        Notification::Other { name, payload } => {
            assert_eq!(name, "something.new");
            assert_eq!(payload["x"], Value::from(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next_note(&mut notes).await,
        Notification::LockLost(LockLost {
            name: "jobs".into(),
            token: "t".into(),
            fence: u64::MAX
        })
    );
}

#[tokio::test]
async fn a_timed_out_call_fails_and_its_late_reply_is_dropped() {
    let fake = Fake::new();
    let connecting = tokio::spawn(fake.builder().connect());
    let mut peer = fake.accept().await;
    peer.hello().await;
    let client = connecting.await.unwrap().unwrap();

    let quick = client.with_timeout(Some(Duration::from_millis(100)));
    let call = tokio::spawn(async move { quick.ping().await });
    let req = peer.recv().await;
    assert_eq!(req.method, "ping");
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::ClientTimeout(d) if d == Duration::from_millis(100)));

    // The late reply arrives; the next call gets its own reply, not that one.
    peer.reply(req.msgid, "late".into()).await;
    let next = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let req2 = peer.recv().await;
    assert_ne!(req2.msgid, req.msgid);
    peer.reply(req2.msgid, "pong".into()).await;
    assert_eq!(next.await.unwrap().unwrap(), "pong");
    assert!(client.is_connected());
}

#[tokio::test]
async fn a_call_that_sends_wait_ms_gets_that_much_more_time() {
    let fake = Fake::new();
    let connecting = tokio::spawn(fake.builder().connect());
    let mut peer = fake.accept().await;
    peer.hello().await;
    let client = connecting
        .await
        .unwrap()
        .unwrap()
        .with_timeout(Some(Duration::from_millis(100)));

    let call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .lock_acquire(LockAcquire {
                    wait_ms: Some(2_000),
                    ..LockAcquire::new("jobs")
                })
                .await
        }
    });
    let req = peer.recv().await;
    assert_eq!(req.args["wait_ms"], Value::from(2_000));
    // Answer well after the bare 100 ms timeout, well within 100 ms + wait_ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    peer.reply(
        req.msgid,
        Value::Map(vec![
            ("acquired".into(), false.into()),
            ("ttl_ms".into(), 1000.into()),
        ]),
    )
    .await;
    let got = call.await.unwrap().unwrap();
    assert!(!got.acquired);
    assert_eq!(got.ttl_ms, 1000);
}

#[tokio::test]
async fn a_frame_header_over_the_limit_closes_without_reading_the_body() {
    let fake = Fake::new();
    let connecting = tokio::spawn(fake.builder().max_frame_bytes(1024).connect());
    let mut peer = fake.accept().await;
    peer.hello().await;
    let client = connecting.await.unwrap().unwrap();
    let mut notes = client.notifications();

    let call = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    peer.recv().await;
    // Announce almost 4 GiB and send nothing more: the client must not wait for it.
    peer.stream
        .write_all(&0xffff_fff0u32.to_be_bytes())
        .await
        .unwrap();
    let err = call.await.unwrap().unwrap_err();
    match err {
        Error::FrameLimitExceeded { size, limit } => {
            assert_eq!(size, 0xffff_fff0);
            assert_eq!(limit, 1024);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next_note(&mut notes).await,
        Notification::ConnectionLost { .. }
    ));
    // The client closed its side.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), peer.stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_reconnect_sends_hello_with_the_namespace_and_nothing_else() {
    let fake = Fake::new();
    let connecting = tokio::spawn(fake.builder().namespace("tenant-a").connect());
    let mut peer = fake.accept().await;
    let hello = peer.hello().await;
    assert_eq!(hello["namespace"].as_str(), Some("tenant-a"));
    let client = connecting.await.unwrap().unwrap();
    let mut notes = client.notifications();

    // Take a lock and track presence on the first connection.
    let acquire = tokio::spawn({
        let client = client.clone();
        async move { client.lock_acquire("jobs").await }
    });
    let req = peer.recv().await;
    assert_eq!(req.method, "lock.acquire");
    peer.reply(
        req.msgid,
        Value::Map(vec![
            ("acquired".into(), true.into()),
            ("token".into(), "tok".into()),
            ("fence".into(), Value::from(1u64 << 62)),
            ("ttl_ms".into(), 30_000.into()),
        ]),
    )
    .await;
    let got = acquire.await.unwrap().unwrap();
    assert_eq!(got.fence, Some(1 << 62));

    // A call in flight when the connection drops fails with a connection error.
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    assert_eq!(peer.recv().await.method, "ping");
    drop(peer);
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
    assert!(matches!(
        next_note(&mut notes).await,
        Notification::ConnectionLost { .. }
    ));

    // The next call reconnects: hello (same namespace) first, then that call, and
    // nothing else: the lock is not taken again.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let mut peer = fake.accept().await;
    let hello = peer.hello().await;
    assert_eq!(hello["namespace"].as_str(), Some("tenant-a"));
    let req = peer.recv().await;
    assert_eq!(req.method, "ping", "nothing is replayed after a reconnect");
    peer.reply(req.msgid, "pong".into()).await;
    assert_eq!(call.await.unwrap().unwrap(), "pong");
    assert_eq!(next_note(&mut notes).await, Notification::Reconnected);

    // Nothing else was sent.
    let mut byte = [0u8; 1];
    let idle = tokio::time::timeout(Duration::from_millis(200), peer.stream.read(&mut byte)).await;
    assert!(idle.is_err(), "the client sent nothing more");
}

#[tokio::test]
async fn server_error_notifications_and_responses_are_typed() {
    let fake = Fake::new();
    let connecting = tokio::spawn(fake.builder().connect());
    let mut peer = fake.accept().await;
    peer.hello().await;
    let client = connecting.await.unwrap().unwrap();
    let mut notes = client.notifications();

    let call = tokio::spawn({
        let client = client.clone();
        async move { client.cache_set(CacheSet::new("k", 1)).await }
    });
    let req = peer.recv().await;
    peer.notify(
        "error",
        Value::Map(vec![
            ("code".into(), "BAD_FRAME".into()),
            ("message".into(), "zero-length frame".into()),
        ]),
    )
    .await;
    peer.send(Value::Array(vec![
        1.into(),
        req.msgid.into(),
        Value::Map(vec![
            ("code".into(), "UNAVAILABLE".into()),
            ("message".into(), "Redis is unreachable".into()),
            ("retry_after_ms".into(), 250.into()),
            ("extra".into(), "kept".into()),
        ]),
        Value::Nil,
    ]))
    .await;
    match call.await.unwrap().unwrap_err() {
        Error::Unavailable {
            retry_after_ms,
            data,
            ..
        } => {
            assert_eq!(retry_after_ms, 250);
            assert_eq!(data.get_str("extra"), Some("kept"));
        }
        other => panic!("{other:?}"),
    }
    match next_note(&mut notes).await {
        Notification::Error(e) => {
            assert_eq!(e.code, "BAD_FRAME");
            assert!(matches!(e.to_error(), Error::BadFrame { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_socket_path_comes_from_the_option_then_the_environment() {
    let client = Client::builder().socket("/tmp/explicit.sock").build();
    assert_eq!(client.socket_path(), "/tmp/explicit.sock");
    let client = Client::builder().build();
    let expected = std::env::var("MADSIDECAR_SOCKET")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/run/madsidecar/madsidecar.sock".into());
    assert_eq!(client.socket_path(), expected);
}

#[tokio::test]
async fn connecting_with_reconnect_off_fails_at_once_when_nothing_listens() {
    let path = std::env::temp_dir().join(format!("msc-rust-none-{}.sock", std::process::id()));
    let err = Client::builder()
        .socket(path.to_str().unwrap())
        .reconnect(false)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
}
