//! End to end, against a real Redis and a real sidecar started by `tests/sdk_harness.py`
//! (one harness for this whole test binary; tests use names of their own). Tests that
//! flush Redis or kill the sidecar take the gate exclusively; the others share it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use madsidecar_client::*;
use tokio::sync::RwLock;

#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

// -- the harness --------------------------------------------------------------------------

struct Harness {
    socket: String,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _child: Child,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
static GATE: RwLock<()> = RwLock::const_new(());

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let root = repo_root();
        let python = std::env::var_os("MADSIDECAR_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        if !python.exists() {
            panic!(
                "no Python for the sidecar harness at {}: run `./dev test` from the repository \
                 root once (it makes .venv), or set MADSIDECAR_PYTHON",
                python.display()
            );
        }
        let mut child = Command::new(&python)
            .args(["-m", "tests.sdk_harness"])
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} -m tests.sdk_harness: {e}",
                    python.display()
                )
            });
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("harness said {line:?}, not its JSON line: {e}"));
        Harness {
            socket: ready["socket"].as_str().unwrap().to_owned(),
            io: Mutex::new((stdin, stdout)),
            _child: child,
        }
    })
}

fn command_blocking(cmd: &str) -> String {
    let h = harness();
    let mut io = h.io.lock().unwrap_or_else(|p| p.into_inner());
    writeln!(io.0, "{cmd}").unwrap();
    io.0.flush().unwrap();
    let mut line = String::new();
    io.1.read_line(&mut line).unwrap();
    line
}

/// Send the harness one command (`flush`, `restart`, `stop`, `start`) and wait for `ok`.
async fn command(cmd: &'static str) {
    let answer = tokio::task::spawn_blocking(move || command_blocking(cmd))
        .await
        .unwrap();
    assert_eq!(answer.trim(), "ok", "harness {cmd}");
}

/// Starts the sidecar again if a test that stopped it fails before it does, so that
/// one failure does not fail every later test.
struct StartOnPanic;

impl Drop for StartOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = command_blocking("start");
        }
    }
}

fn socket() -> String {
    harness().socket.clone()
}

fn builder() -> ClientBuilder {
    Client::builder()
        .socket(socket())
        .timeout(Some(Duration::from_secs(10)))
}

async fn client() -> Client {
    builder()
        .connect()
        .await
        .expect("connect to the harness sidecar")
}

fn uniq(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rust-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The next notification `pick` accepts (others are skipped), within a generous bound.
async fn wait_for<T>(
    notes: &mut Notifications,
    what: &str,
    mut pick: impl FnMut(Notification) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(note)) => {
                if let Some(found) = pick(note) {
                    return found;
                }
            }
            Ok(None) => panic!("notifications ended while waiting for {what}"),
            Err(_) => panic!("no {what} within 15 s"),
        }
    }
}

/// Until the sidecar's `stats.<group>.<name>` gauge is at least 1 (a call is waiting).
async fn wait_for_gauge(c: &Client, group: &str, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stats = c.stats().await.unwrap();
        if stats.raw[group][name].as_u64().unwrap_or(0) >= 1 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats.{group}.{name} stayed 0"
        );
        tokio::task::yield_now().await;
    }
}

// -- connection methods -------------------------------------------------------------------

#[tokio::test]
async fn hello_ping_stats_health() {
    let _gate = GATE.read().await;
    let c = client().await;
    let info = c.server_info().unwrap();
    assert_eq!(info.server, "madsidecar");
    assert_eq!(info.protocol, 1);
    assert_eq!(info.namespace, "default");
    assert_eq!(info.max_frame_bytes, 4 * 1024 * 1024);
    for method in ["cache.get", "lock.acquire", "ratelimit.hit_many", "health"] {
        assert!(info.methods.iter().any(|m| m == method), "{method}");
    }
    let again = c
        .hello(Hello {
            namespace: Some("default".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again.namespace, "default");
    assert_eq!(c.ping().await.unwrap(), "pong");
    let stats = c.stats().await.unwrap();
    assert!(stats.connections >= 1);
    assert!(stats.requests >= 3);
    assert!(stats.redis.connected);
    assert!(stats.raw["version"].is_str(), "additions stay readable");
    let health = c.health().await.unwrap();
    assert!(health.ok);
    // The generic escape hatch.
    assert_eq!(
        c.call("ping", Value::Nil).await.unwrap(),
        Value::from("pong")
    );
}

#[tokio::test]
async fn quickstart_example_runs() {
    let _gate = GATE.read().await;
    let c = client().await;
    quickstart::run(&c, &uniq("quickstart")).await.unwrap();
}

#[tokio::test]
async fn a_forbidden_namespace_is_refused_with_forbidden() {
    let _gate = GATE.read().await;
    let err = builder()
        .namespace(uniq("ns"))
        .reconnect(false)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    assert_eq!(err.data().unwrap().get_str("argument"), Some("namespace"));
}

// -- cache --------------------------------------------------------------------------------

#[tokio::test]
async fn cache_set_get_mget_delete_invalidate_warm() {
    let _gate = GATE.read().await;
    let c = client().await;
    let p = uniq("cache");
    let values = [
        Value::Nil,
        Value::from(true),
        Value::from(u64::MAX),
        Value::from(i64::MIN),
        Value::from(9_007_199_254_740_993u64),
        Value::F64(2.0),
        Value::Binary(vec![0, 0xff, 0x80]),
        Value::from("héllo 世界"),
        Value::Array(vec![1.into(), "two".into(), Value::Nil]),
        Value::Map(vec![
            (1.into(), "int key".into()),
            (
                "nested".into(),
                Value::Map(vec![("b".into(), Value::Binary(vec![1]))]),
            ),
        ]),
    ];
    for (i, value) in values.iter().enumerate() {
        let key = format!("{p}:{i}");
        let ok = c
            .cache_set(CacheSet {
                ttl_ms: Some(60_000),
                ..CacheSet::new(key.as_str(), value.clone())
            })
            .await
            .unwrap();
        assert!(ok.ok);
        let entry = c.cache_get(key.as_str()).await.unwrap().expect("a hit");
        assert_eq!(&entry.value, value, "value {i} round-trips exactly");
        assert!(entry.source == "l1" || entry.source == "l2");
        assert!(entry.ttl_ms.unwrap() <= 60_000);
    }
    assert_eq!(c.cache_get(format!("{p}:missing")).await.unwrap(), None);

    let got = c
        .cache_mget(CacheMget::new([
            format!("{p}:2"),
            format!("{p}:missing"),
            format!("{p}:6"),
        ]))
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].as_ref().unwrap().value, Value::from(u64::MAX));
    assert!(got[1].is_none());
    assert_eq!(
        got[2].as_ref().unwrap().value,
        Value::Binary(vec![0, 0xff, 0x80])
    );

    let deleted = c
        .cache_delete(CacheDelete::new([format!("{p}:0"), format!("{p}:missing")]))
        .await
        .unwrap();
    assert_eq!(deleted.deleted, 1);
    assert_eq!(c.cache_get(format!("{p}:0")).await.unwrap(), None);

    let warmed = c.cache_warm(format!("{p}:")).await.unwrap();
    assert_eq!(warmed.loaded, values.len() as u64 - 1);

    let invalidated = c.cache_invalidate(format!("{p}:")).await.unwrap();
    assert_eq!(invalidated.deleted, values.len() as u64 - 1);
    assert_eq!(c.cache_get(format!("{p}:1")).await.unwrap(), None);
}

#[tokio::test]
async fn cache_fetch_lease_fill_and_waiters() {
    let _gate = GATE.read().await;
    let holder = client().await;
    let waiter = client().await;
    let key = uniq("fetch");

    let first = holder.cache_fetch(key.as_str()).await.unwrap();
    let lease = match &first {
        CacheFetchResult::Lease { lease } => lease.clone(),
        other => panic!("a miss gives the lease: {other:?}"),
    };
    assert_eq!(first.lease(), Some(lease.as_str()));

    // Another connection waits for the fill (its timeout is extended by wait_ms).
    let waiting = tokio::spawn({
        let waiter = waiter.with_timeout(Some(Duration::from_secs(1)));
        let key = key.clone();
        async move {
            waiter
                .cache_fetch(CacheFetch {
                    wait_ms: Some(10_000),
                    ..CacheFetch::new(key)
                })
                .await
        }
    });
    // The fill wakes the waiter once it is waiting.
    wait_for_gauge(&holder, "cache", "lease_waiters").await;
    holder
        .cache_fill(CacheFill {
            ttl_ms: Some(60_000),
            ..CacheFill::new(key.as_str(), lease.as_str(), Value::from(42))
        })
        .await
        .unwrap();
    match waiting.await.unwrap().unwrap() {
        CacheFetchResult::Hit(entry) => assert_eq!(entry.value, Value::from(42)),
        other => panic!("the waiter gets the filled value: {other:?}"),
    }

    // A stale lease never lands: NOT_HELD.
    let key2 = uniq("fetch");
    let CacheFetchResult::Lease { lease } = holder.cache_fetch(key2.as_str()).await.unwrap() else {
        panic!("a miss gives the lease")
    };
    holder
        .cache_set(CacheSet::new(key2.as_str(), "newer"))
        .await
        .unwrap();
    let err = holder
        .cache_fill(CacheFill::new(key2.as_str(), lease, "stale"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "{err:?}");
    let entry = holder.cache_get(key2.as_str()).await.unwrap().unwrap();
    assert_eq!(entry.value, Value::from("newer"));
}

// -- locks --------------------------------------------------------------------------------

#[tokio::test]
async fn lock_acquire_extend_inspect_release() {
    let _gate = GATE.read().await;
    let a = client().await;
    let b = client().await;
    let name = uniq("lock");

    let never = a.lock_inspect(name.as_str()).await.unwrap();
    assert_eq!(
        never,
        LockInspectResult {
            held: false,
            ttl_ms: 0,
            fence: 0
        }
    );

    let got = a
        .lock_acquire(LockAcquire {
            ttl_ms: Some(30_000),
            ..LockAcquire::new(name.as_str())
        })
        .await
        .unwrap();
    assert!(got.acquired);
    let token = got.token.unwrap();
    let fence = got.fence.unwrap();
    assert!(fence > 0);

    // A second connection sees it held.
    let other = b.lock_acquire(name.as_str()).await.unwrap();
    assert!(!other.acquired);
    assert!(other.token.is_none());
    assert!(other.ttl_ms > 0);
    let seen = b.lock_inspect(name.as_str()).await.unwrap();
    assert!(seen.held);
    assert_eq!(seen.fence, fence);

    let extended = a
        .lock_extend(LockExtend::new(name.as_str(), token.as_str(), 20_000))
        .await
        .unwrap();
    assert!(extended.extended);
    assert_eq!(extended.ttl_ms, 20_000);

    // A waiter is woken by the release.
    let waiting = tokio::spawn({
        let b = b.clone();
        let name = name.clone();
        async move {
            b.lock_acquire(LockAcquire {
                wait_ms: Some(10_000),
                ..LockAcquire::new(name)
            })
            .await
        }
    });
    let released = a
        .lock_release(LockRelease::new(name.as_str(), token.as_str()))
        .await
        .unwrap();
    assert!(released.released);
    let next = waiting.await.unwrap().unwrap();
    assert!(next.acquired);
    assert!(next.fence.unwrap() > fence, "fences only grow");

    let again = a
        .lock_release(LockRelease::new(name.as_str(), token.as_str()))
        .await
        .unwrap();
    assert!(!again.released, "a stale token is an outcome, not an error");
    let stale = a
        .lock_extend(LockExtend::new(name.as_str(), token, 1_000))
        .await
        .unwrap();
    assert!(!stale.extended);
}

#[tokio::test]
async fn lock_lost_after_redis_is_flushed() {
    let _gate = GATE.write().await;
    let c = client().await;
    let mut notes = c.notifications();
    let name = uniq("lost");
    let got = c
        .lock_acquire(LockAcquire {
            ttl_ms: Some(600),
            ..LockAcquire::new(name.as_str())
        })
        .await
        .unwrap();
    assert!(got.acquired);
    command("flush").await;
    let lost = wait_for(&mut notes, "lock.lost", |n| match n {
        Notification::LockLost(l) if l.name == name => Some(l),
        _ => None,
    })
    .await;
    assert_eq!(Some(lost.token), got.token);
    assert_eq!(Some(lost.fence), got.fence);
    // FLUSHALL also wiped the node's presence registration: leave a fresh sidecar.
    command("restart").await;
}

// -- sessions -----------------------------------------------------------------------------

#[tokio::test]
async fn sessions() {
    let _gate = GATE.read().await;
    let c = client().await;
    let user = uniq("user");
    let data = Value::Map(vec![
        ("role".into(), "admin".into()),
        ("id".into(), Value::from(1u64 << 60)),
    ]);
    let s1 = c
        .session_create(SessionCreate {
            data: Some(data.clone()),
            idle_ttl_ms: Some(60_000),
            ..SessionCreate::new(user.as_str())
        })
        .await
        .unwrap();
    assert!(s1.token.len() >= 43);
    assert!(s1.expires_at_ms > 1_700_000_000_000);
    let s2 = c.session_create(user.as_str()).await.unwrap();

    let got = c.session_get(s1.token.as_str()).await.unwrap().unwrap();
    assert_eq!(got.session_id, s1.session_id);
    assert_eq!(got.user_id, user);
    assert_eq!(got.data, data);

    let updated = c
        .session_update(SessionUpdate::new(s1.token.as_str(), "replaced"))
        .await
        .unwrap();
    assert!(updated.updated);
    let got = c
        .session_get(SessionGet {
            touch: Some(false),
            ..SessionGet::new(s1.token.as_str())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.data, Value::from("replaced"));

    let rotated = c.session_rotate(s1.token.as_str()).await.unwrap().unwrap();
    assert_ne!(rotated.token, s1.token);
    assert_eq!(c.session_get(s1.token.as_str()).await.unwrap(), None);
    assert!(c.session_rotate(s1.token.as_str()).await.unwrap().is_none());

    let list = c.session_list(user.as_str()).await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|s| s.session_id == s2.session_id));

    let revoked = c
        .session_revoke(SessionRevoke::session_id(s2.session_id.as_str()))
        .await
        .unwrap();
    assert!(revoked.revoked);
    assert_eq!(c.session_get(s2.token.as_str()).await.unwrap(), None);
    let again = c
        .session_revoke(SessionRevoke::token(s2.token.as_str()))
        .await
        .unwrap();
    assert!(!again.revoked);

    let s3 = c.session_create(user.as_str()).await.unwrap();
    let all = c
        .session_revoke_user(SessionRevokeUser {
            except_session_id: Some(s3.session_id.clone()),
            ..SessionRevokeUser::new(user.as_str())
        })
        .await
        .unwrap();
    assert_eq!(all.revoked, 1);
    let left = c.session_list(user.as_str()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].session_id, s3.session_id);
}

// -- presence and pub/sub -----------------------------------------------------------------

#[tokio::test]
async fn presence_with_a_subscriber() {
    let _gate = GATE.read().await;
    let watcher = client().await;
    let member = client().await;
    let channel = uniq("room");
    let mut notes = watcher.notifications();

    let sub = watcher.presence_subscribe(channel.as_str()).await.unwrap();
    assert!(sub.members.is_empty());

    let tracked = member
        .presence_track(PresenceTrack {
            meta: Some(Value::Map(vec![("status".into(), "online".into())])),
            ..PresenceTrack::new(channel.as_str(), "alice")
        })
        .await
        .unwrap();
    let diff = wait_for(&mut notes, "presence.diff with alice", |n| match n {
        Notification::PresenceDiff(d) if d.channel == channel && d.joins.contains_key("alice") => {
            Some(d)
        }
        _ => None,
    })
    .await;
    assert!(diff.version > sub.version);
    assert_eq!(diff.joins["alice"][0].r#ref, tracked.r#ref);
    assert_eq!(
        diff.joins["alice"][0].meta,
        Value::Map(vec![("status".into(), "online".into())])
    );

    let updated = member
        .presence_update(PresenceUpdate::new(
            channel.as_str(),
            tracked.r#ref.as_str(),
            Value::Map(vec![("status".into(), "away".into())]),
        ))
        .await
        .unwrap();
    assert!(updated.updated);
    let away = Value::Map(vec![("status".into(), "away".into())]);
    wait_for(&mut notes, "presence.diff with the update", |n| match n {
        Notification::PresenceDiff(d)
            if d.channel == channel && d.joins.get("alice").is_some_and(|e| e[0].meta == away) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    let list = watcher.presence_list(channel.as_str()).await.unwrap();
    assert_eq!(list.members["alice"].len(), 1);
    assert_eq!(
        list.members["alice"][0].meta,
        Value::Map(vec![("status".into(), "away".into())])
    );
    assert!(list.members["alice"][0].online_at_ms > 1_700_000_000_000);
    let count = watcher.presence_count(channel.as_str()).await.unwrap();
    assert_eq!(count, PresenceCountResult { keys: 1, refs: 1 });

    let removed = member
        .presence_untrack(PresenceUntrack::new(
            channel.as_str(),
            tracked.r#ref.as_str(),
        ))
        .await
        .unwrap();
    assert!(removed.removed);
    wait_for(
        &mut notes,
        "presence.diff with alice leaving",
        |n| match n {
            Notification::PresenceDiff(d)
                if d.channel == channel && d.leaves.contains_key("alice") =>
            {
                Some(())
            }
            _ => None,
        },
    )
    .await;
    let ok = watcher
        .presence_unsubscribe(channel.as_str())
        .await
        .unwrap();
    assert!(ok.ok);
    let count = watcher.presence_count(channel.as_str()).await.unwrap();
    assert_eq!(count, PresenceCountResult { keys: 0, refs: 0 });
}

#[tokio::test]
async fn pubsub_message_is_received() {
    let _gate = GATE.read().await;
    let sub = client().await;
    let publisher = client().await;
    let channel = uniq("news");
    let mut notes = sub.notifications();
    assert!(sub.pubsub_subscribe(channel.as_str()).await.unwrap().ok);
    let message = Value::Map(vec![
        ("body".into(), Value::Binary(vec![0, 1, 2])),
        ("id".into(), Value::from(u64::MAX)),
    ]);
    let published = publisher
        .pubsub_publish(PubsubPublish::new(channel.as_str(), message.clone()))
        .await
        .unwrap();
    assert!(published.receivers >= 1);
    let got = wait_for(&mut notes, "pubsub.message", |n| match n {
        Notification::PubsubMessage(m) if m.channel == channel => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(got.message, message);
    assert!(sub.pubsub_unsubscribe(channel.as_str()).await.unwrap().ok);
}

// -- rate limits --------------------------------------------------------------------------

#[tokio::test]
async fn rate_limits() {
    let _gate = GATE.read().await;
    let c = client().await;
    let key = uniq("ip");
    let hit = || RatelimitHit::new(key.as_str(), 2, 60_000);
    let first = c.ratelimit_hit(hit()).await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.limit, 2);
    assert_eq!(first.remaining, 1);
    assert_eq!(first.retry_after_ms, 0);
    assert!(c.ratelimit_hit(hit()).await.unwrap().allowed);
    let denied = c.ratelimit_hit(hit()).await.unwrap();
    assert!(!denied.allowed);
    assert!(denied.retry_after_ms > 0);
    assert_eq!(denied.remaining, 0);

    let peek = c
        .ratelimit_peek(RatelimitPeek::new(key.as_str(), 2, 60_000))
        .await
        .unwrap();
    assert!(!peek.allowed);

    assert!(c.ratelimit_reset(key.as_str()).await.unwrap().ok);
    let after = c.ratelimit_hit(hit()).await.unwrap();
    assert!(after.allowed);
    assert_eq!(after.remaining, 1);

    // hit_many: all consume or none does.
    let other = uniq("user");
    let many = c
        .ratelimit_hit_many(RatelimitHitMany::new([
            RatelimitHit {
                cost: Some(1),
                ..RatelimitHit::new(other.as_str(), 5, 60_000)
            },
            RatelimitHit {
                cost: Some(2),
                algorithm: Some("sliding_counter".into()),
                ..RatelimitHit::new(key.as_str(), 2, 60_000)
            },
        ]))
        .await
        .unwrap();
    assert_eq!(many.results.len(), 2);
    assert!(many.allowed);
    // The sliding_counter counter of `key` is now full: the whole batch is denied.
    let denied_many = c
        .ratelimit_hit_many(RatelimitHitMany::new([
            RatelimitHit::new(other.as_str(), 5, 60_000),
            RatelimitHit {
                algorithm: Some("sliding_counter".into()),
                ..RatelimitHit::new(key.as_str(), 2, 60_000)
            },
        ]))
        .await
        .unwrap();
    assert!(!denied_many.allowed);
    assert!(denied_many.results[0].allowed || denied_many.results[0].evaluated == Some(false));
    assert!(!denied_many.results[1].allowed);
    let untouched = c
        .ratelimit_peek(RatelimitPeek::new(other.as_str(), 5, 60_000))
        .await
        .unwrap();
    assert_eq!(untouched.remaining, 4, "a denied hit_many consumed nothing");

    // The rule form: `sdk-test` allows 2 per minute.
    let rule_key = uniq("rule");
    let by_rule = || RatelimitHit::rule("sdk-test", rule_key.as_str());
    assert!(c.ratelimit_hit(by_rule()).await.unwrap().allowed);
    assert!(c.ratelimit_hit(by_rule()).await.unwrap().allowed);
    let third = c.ratelimit_hit(by_rule()).await.unwrap();
    assert!(!third.allowed);
    assert!(third.retry_after_ms > 0);
    assert_eq!(third.limit, 2);
    let peeked = c
        .ratelimit_peek(RatelimitPeek::rule("sdk-test", rule_key.as_str()))
        .await
        .unwrap();
    assert!(!peeked.allowed);
    assert!(
        c.ratelimit_reset(RatelimitReset {
            rule: Some("sdk-test".into()),
            ..RatelimitReset::new(rule_key.as_str())
        })
        .await
        .unwrap()
        .ok
    );
    assert!(c.ratelimit_hit(by_rule()).await.unwrap().allowed);
}

// -- errors -------------------------------------------------------------------------------

#[tokio::test]
async fn server_errors_map_to_their_variants() {
    let _gate = GATE.read().await;
    let c = client().await;

    let err = c.call("cache.get", Value::Map(vec![])).await.unwrap_err();
    match &err {
        Error::BadRequest {
            argument, message, ..
        } => {
            assert_eq!(argument.as_deref(), Some("key"));
            assert!(message.contains("key"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), Some("BAD_REQUEST"));

    let err = c
        .cache_set(CacheSet {
            ttl_ms: Some(0),
            ..CacheSet::new(uniq("k"), 1)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BadRequest { argument: Some(a), .. } if a == "ttl_ms"),
        "{err:?}"
    );

    let err = c.call("no.such", Value::Nil).await.unwrap_err();
    assert!(matches!(err, Error::UnknownMethod { .. }), "{err:?}");
    assert!(err.is_server_error());

    // The connection is fine after errors.
    assert_eq!(c.ping().await.unwrap(), "pong");
}

// -- pipelining, limits, timeouts, reconnects ---------------------------------------------

#[tokio::test]
async fn a_20000_request_pipeline_completes() {
    let _gate = GATE.read().await;
    let c = client().await;
    let results = c.pipeline(vec![Ping {}; 20_000]).await.unwrap();
    assert_eq!(results.len(), 20_000);
    assert!(results.iter().all(|r| matches!(r.as_deref(), Ok("pong"))));

    // And as many concurrent calls from tasks, sharing the connection.
    let key = uniq("pipe");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20_000u32 {
        let c = c.clone();
        let key = key.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                c.ping().await.map(|_| ())
            } else {
                c.ratelimit_peek(RatelimitPeek::new(key, 10, 1000))
                    .await
                    .map(|_| ())
            }
        });
    }
    let mut n = 0;
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
        n += 1;
    }
    assert_eq!(n, 20_000);
}

#[tokio::test]
async fn a_reply_over_the_frame_limit_fails_cleanly() {
    let _gate = GATE.read().await;
    let writer = client().await;
    let key = uniq("big");
    writer
        .cache_set(CacheSet::new(key.as_str(), Value::Binary(vec![7; 4096])))
        .await
        .unwrap();

    let small = builder().max_frame_bytes(1024).connect().await.unwrap();
    let mut notes = small.notifications();
    let err = small.cache_get(key.as_str()).await.unwrap_err();
    match err {
        Error::FrameLimitExceeded { size, limit } => {
            assert!(size > 4096);
            assert_eq!(limit, 1024);
        }
        other => panic!("{other:?}"),
    }
    wait_for(&mut notes, "connection.lost", |n| {
        matches!(n, Notification::ConnectionLost { .. }).then_some(())
    })
    .await;
    // The same client reconnects for small replies; a fresh client works too.
    assert_eq!(small.ping().await.unwrap(), "pong");
    let fresh = builder().max_frame_bytes(1024).connect().await.unwrap();
    assert_eq!(fresh.ping().await.unwrap(), "pong");
    let entry = writer.cache_get(key.as_str()).await.unwrap().unwrap();
    assert_eq!(entry.value, Value::Binary(vec![7; 4096]));
    // A request over the limit is refused before it is sent.
    let err = small
        .cache_set(CacheSet::new(key.as_str(), Value::Binary(vec![0; 2048])))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FrameLimitExceeded { .. }), "{err:?}");
    assert_eq!(small.ping().await.unwrap(), "pong");
}

#[tokio::test]
async fn reconnect_after_restart_tells_the_app_and_does_not_retake_the_lock() {
    let _gate = GATE.write().await;
    let c = client().await;
    let other = client().await;
    let mut notes = c.notifications();
    let name = uniq("restart");
    let held_by_other = uniq("restart-other");

    let got = c
        .lock_acquire(LockAcquire {
            ttl_ms: Some(1_000),
            ..LockAcquire::new(name.as_str())
        })
        .await
        .unwrap();
    assert!(got.acquired);
    assert!(
        other
            .lock_acquire(held_by_other.as_str())
            .await
            .unwrap()
            .acquired
    );
    // A call pending across the restart fails with a connection error.
    let pending = tokio::spawn({
        let c = c.clone();
        let held_by_other = held_by_other.clone();
        async move {
            c.lock_acquire(LockAcquire {
                wait_ms: Some(30_000),
                ..LockAcquire::new(held_by_other)
            })
            .await
        }
    });
    // Wait until that acquire is waiting in the sidecar.
    wait_for_gauge(&other, "locks", "waiting").await;

    command("restart").await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
    let reason = wait_for(&mut notes, "connection.lost", |n| match n {
        Notification::ConnectionLost { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert!(!reason.is_empty());

    // The next call reconnects (hello again) and works.
    assert_eq!(c.ping().await.unwrap(), "pong");
    wait_for(&mut notes, "connection.reconnected", |n| {
        matches!(n, Notification::Reconnected).then_some(())
    })
    .await;
    assert!(c.is_connected());

    // The lock was not taken again: once the old lease (1 s, no longer renewed: the
    // sidecar died) runs out, a fresh connection gets it.
    let fresh = client().await;
    let taken = fresh
        .lock_acquire(LockAcquire {
            wait_ms: Some(10_000),
            ..LockAcquire::new(name.as_str())
        })
        .await
        .unwrap();
    assert!(taken.acquired, "the old holder did not re-take the lock");
    assert!(taken.fence.unwrap() > got.fence.unwrap());
    let old = c
        .lock_release(LockRelease::new(name.as_str(), got.token.unwrap()))
        .await
        .unwrap();
    assert!(!old.released, "the old token no longer holds it");
}

#[tokio::test]
async fn a_stopped_sidecar_times_calls_out_and_reconnect_can_be_disabled() {
    let _gate = GATE.write().await;
    let c = client().await;
    let mut c_notes = c.notifications();
    let fixed = builder().reconnect(false).connect().await.unwrap();
    let mut notes = fixed.notifications();
    let _restore = StartOnPanic;
    command("stop").await;
    wait_for(&mut c_notes, "connection.lost", |n| {
        matches!(n, Notification::ConnectionLost { .. }).then_some(())
    })
    .await;

    // With reconnects on, a call keeps trying until its timeout.
    let started = std::time::Instant::now();
    let err = c
        .with_timeout(Some(Duration::from_millis(300)))
        .ping()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ClientTimeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // With reconnects off, the loss is told and every later call fails at once.
    wait_for(&mut notes, "connection.lost", |n| {
        matches!(n, Notification::ConnectionLost { .. }).then_some(())
    })
    .await;
    command("start").await;
    let err = fixed.ping().await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");

    assert_eq!(c.ping().await.unwrap(), "pong");
}
