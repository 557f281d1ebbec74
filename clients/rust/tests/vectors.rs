//! Conformance vectors (`tests/vectors/protocol-v1.json`, made by the Python protocol
//! module): every request is built as its typed request and encoded by the normal
//! encoder, byte for byte; every response and notification is decoded by the normal
//! decoder into its typed result or notification and compared with the expected value.

use std::path::PathBuf;

use madsidecar_client::protocol::{FrameDecoder, Message, decode_message, encode_request};
use madsidecar_client::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn load(name: &str) -> Json {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The vectors' tagged JSON → a MessagePack value.
fn tagged(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                panic!("a plain JSON number must be an int: {n}")
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(tagged).collect()),
        Json::Object(map) => {
            if map.len() == 1 {
                let (key, inner) = map.iter().next().unwrap();
                match key.as_str() {
                    "$int" => {
                        let text = inner.as_str().unwrap();
                        return match text.parse::<u64>() {
                            Ok(u) => Value::from(u),
                            Err(_) => Value::from(text.parse::<i64>().unwrap()),
                        };
                    }
                    "$float" => return Value::F64(inner.as_f64().unwrap()),
                    "$bin" => return Value::Binary(hex(inner.as_str().unwrap())),
                    "$map" => {
                        return Value::Map(
                            inner
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|pair| (tagged(&pair[0]), tagged(&pair[1])))
                                .collect(),
                        );
                    }
                    _ => {}
                }
            }
            Value::Map(
                map.iter()
                    .map(|(k, v)| (Value::from(k.as_str()), tagged(v)))
                    .collect(),
            )
        }
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal values, maps compared as sets of entries (key order aside); types are exact: a
/// bin is not a str, a float not an int, every integer exact.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.iter()
                        .find(|(k2, _)| same(k, k2))
                        .is_some_and(|(_, v2)| same(v, v2))
                })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// A typed value back to MessagePack, to compare it with the vector.
fn reencode<T: Serialize>(typed: &T) -> Value {
    let bytes = rmp_serde::to_vec_named(typed).unwrap();
    rmpv::decode::read_value(&mut &bytes[..]).unwrap()
}

/// The typed request for `method`, built from the vector's args, encoded by the normal
/// encoder.
fn encode_typed(method: &str, msgid: u32, args: Value) -> Vec<u8> {
    fn enc<R: Request + DeserializeOwned>(method: &str, msgid: u32, args: Value) -> Vec<u8> {
        assert_eq!(R::METHOD, method);
        let req: R = rmpv::ext::from_value(args)
            .unwrap_or_else(|e| panic!("{method}: args do not fit the typed request: {e}"));
        encode_request(msgid, R::METHOD, &req).unwrap()
    }
    match method {
        "hello" => enc::<Hello>(method, msgid, args),
        "ping" => enc::<Ping>(method, msgid, args),
        "stats" => enc::<Stats>(method, msgid, args),
        "health" => enc::<Health>(method, msgid, args),
        "cache.get" => enc::<CacheGet>(method, msgid, args),
        "cache.mget" => enc::<CacheMget>(method, msgid, args),
        "cache.set" => enc::<CacheSet>(method, msgid, args),
        "cache.delete" => enc::<CacheDelete>(method, msgid, args),
        "cache.invalidate" => enc::<CacheInvalidate>(method, msgid, args),
        "cache.fetch" => enc::<CacheFetch>(method, msgid, args),
        "cache.fill" => enc::<CacheFill>(method, msgid, args),
        "cache.warm" => enc::<CacheWarm>(method, msgid, args),
        "lock.acquire" => enc::<LockAcquire>(method, msgid, args),
        "lock.release" => enc::<LockRelease>(method, msgid, args),
        "lock.extend" => enc::<LockExtend>(method, msgid, args),
        "lock.inspect" => enc::<LockInspect>(method, msgid, args),
        "session.create" => enc::<SessionCreate>(method, msgid, args),
        "session.get" => enc::<SessionGet>(method, msgid, args),
        "session.update" => enc::<SessionUpdate>(method, msgid, args),
        "session.rotate" => enc::<SessionRotate>(method, msgid, args),
        "session.revoke" => enc::<SessionRevoke>(method, msgid, args),
        "session.revoke_user" => enc::<SessionRevokeUser>(method, msgid, args),
        "session.list" => enc::<SessionList>(method, msgid, args),
        "pubsub.publish" => enc::<PubsubPublish>(method, msgid, args),
        "pubsub.subscribe" => enc::<PubsubSubscribe>(method, msgid, args),
        "pubsub.unsubscribe" => enc::<PubsubUnsubscribe>(method, msgid, args),
        "presence.track" => enc::<PresenceTrack>(method, msgid, args),
        "presence.update" => enc::<PresenceUpdate>(method, msgid, args),
        "presence.untrack" => enc::<PresenceUntrack>(method, msgid, args),
        "presence.list" => enc::<PresenceList>(method, msgid, args),
        "presence.count" => enc::<PresenceCount>(method, msgid, args),
        "presence.subscribe" => enc::<PresenceSubscribe>(method, msgid, args),
        "presence.unsubscribe" => enc::<PresenceUnsubscribe>(method, msgid, args),
        "ratelimit.hit" => enc::<RatelimitHit>(method, msgid, args),
        "ratelimit.hit_many" => enc::<RatelimitHitMany>(method, msgid, args),
        "ratelimit.peek" => enc::<RatelimitPeek>(method, msgid, args),
        "ratelimit.reset" => enc::<RatelimitReset>(method, msgid, args),
        other => panic!("no typed request for {other}"),
    }
}

/// Decode a result into the method's typed result, and encode that back.
fn decode_typed(method: &str, result: Value) -> Value {
    fn dec<R: Request>(result: Value) -> Value
    where
        R::Response: Serialize,
    {
        let typed: R::Response = rmpv::ext::from_value(result)
            .unwrap_or_else(|e| panic!("{}: result does not fit: {e}", R::METHOD));
        reencode(&typed)
    }
    match method {
        "hello" => dec::<Hello>(result),
        "ping" => dec::<Ping>(result),
        "health" => dec::<Health>(result),
        "cache.get" => dec::<CacheGet>(result),
        "cache.mget" => dec::<CacheMget>(result),
        "cache.set" => dec::<CacheSet>(result),
        "cache.delete" => dec::<CacheDelete>(result),
        "cache.invalidate" => dec::<CacheInvalidate>(result),
        "cache.fetch" => dec::<CacheFetch>(result),
        "cache.fill" => dec::<CacheFill>(result),
        "cache.warm" => dec::<CacheWarm>(result),
        "lock.acquire" => dec::<LockAcquire>(result),
        "lock.release" => dec::<LockRelease>(result),
        "lock.extend" => dec::<LockExtend>(result),
        "lock.inspect" => dec::<LockInspect>(result),
        "session.create" => dec::<SessionCreate>(result),
        "session.get" => dec::<SessionGet>(result),
        "session.update" => dec::<SessionUpdate>(result),
        "session.rotate" => dec::<SessionRotate>(result),
        "session.revoke" => dec::<SessionRevoke>(result),
        "session.revoke_user" => dec::<SessionRevokeUser>(result),
        "session.list" => dec::<SessionList>(result),
        "pubsub.publish" => dec::<PubsubPublish>(result),
        "pubsub.subscribe" => dec::<PubsubSubscribe>(result),
        "pubsub.unsubscribe" => dec::<PubsubUnsubscribe>(result),
        "presence.track" => dec::<PresenceTrack>(result),
        "presence.update" => dec::<PresenceUpdate>(result),
        "presence.untrack" => dec::<PresenceUntrack>(result),
        "presence.list" => dec::<PresenceList>(result),
        "presence.count" => dec::<PresenceCount>(result),
        "presence.subscribe" => dec::<PresenceSubscribe>(result),
        "presence.unsubscribe" => dec::<PresenceUnsubscribe>(result),
        "ratelimit.hit" => dec::<RatelimitHit>(result),
        "ratelimit.hit_many" => dec::<RatelimitHitMany>(result),
        "ratelimit.peek" => dec::<RatelimitPeek>(result),
        "ratelimit.reset" => dec::<RatelimitReset>(result),
        other => panic!("no typed result for {other}"),
    }
}

/// The frame through the normal frame check, then the normal message decoder.
fn decode_frame(frame_hex: &str) -> Message {
    let frame = hex(frame_hex);
    let n = FrameDecoder::new(4 * 1024 * 1024)
        .check(&frame)
        .unwrap()
        .expect("a whole frame");
    assert_eq!(n + 4, frame.len());
    decode_message(&frame[4..]).unwrap()
}

#[test]
fn request_vectors_encode_byte_for_byte() {
    let vectors = load("protocol-v1.json");
    let requests = vectors["requests"].as_array().unwrap();
    assert!(requests.len() >= 60);
    for v in requests {
        let name = v["name"].as_str().unwrap();
        let method = v["method"].as_str().unwrap();
        let msgid = u32::try_from(v["msgid"].as_u64().unwrap()).unwrap();
        let args = v.get("args").map(tagged).unwrap_or(Value::Map(vec![]));
        let frame = encode_typed(method, msgid, args);
        assert_eq!(
            to_hex(&frame),
            v["frame"].as_str().unwrap(),
            "request vector {name:?}"
        );
    }
}

#[test]
fn hand_built_requests_match_the_vectors() {
    let vectors = load("protocol-v1.json");
    let frame_of = |name: &str| {
        vectors["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no vector {name}"))["frame"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ping", encode_request(1, "ping", &Ping {}).unwrap()),
        (
            "ping (msgid uint32 max)",
            encode_request(u32::MAX, "ping", &Ping {}).unwrap(),
        ),
        (
            "lock.acquire (every argument)",
            encode_request(
                31,
                LockAcquire::METHOD,
                &LockAcquire {
                    ttl_ms: Some(30_000),
                    wait_ms: Some(86_400_000),
                    renew: Some(false),
                    ..LockAcquire::new("jobs")
                },
            )
            .unwrap(),
        ),
        (
            "ratelimit.hit (by rule)",
            encode_request(
                82,
                RatelimitHit::METHOD,
                &RatelimitHit {
                    cost: Some(2),
                    ..RatelimitHit::rule("api", "user:7")
                },
            )
            .unwrap(),
        ),
        (
            "session.revoke (by session_id)",
            encode_request(
                47,
                SessionRevoke::METHOD,
                &SessionRevoke::session_id("uOBjpUKtgkMFoy5pTdbAuA"),
            )
            .unwrap(),
        ),
        (
            "cache.set (value int_u64_max)",
            encode_request(12, CacheSet::METHOD, &CacheSet::new("k", u64::MAX)).unwrap(),
        ),
        (
            "cache.set (value int_i64_min)",
            encode_request(12, CacheSet::METHOD, &CacheSet::new("k", i64::MIN)).unwrap(),
        ),
        (
            "cache.set (value bin)",
            encode_request(
                12,
                CacheSet::METHOD,
                &CacheSet::new("k", Value::Binary(vec![0x00, 0xff, 0x6d, 0x61, 0x64, 0x80])),
            )
            .unwrap(),
        ),
        (
            "cache.set (value float_integral)",
            encode_request(12, CacheSet::METHOD, &CacheSet::new("k", 2.0f64)).unwrap(),
        ),
        (
            "hello",
            encode_request(
                2,
                Hello::METHOD,
                &Hello {
                    client: Some("madsidecar-rust".into()),
                    version: Some("0.1.0".into()),
                    namespace: Some("gateway".into()),
                },
            )
            .unwrap(),
        ),
    ];
    for (name, frame) in cases {
        assert_eq!(to_hex(&frame), frame_of(name), "{name}");
    }
}

#[test]
fn every_method_is_typed_with_arguments_in_canonical_order() {
    let methods = load("methods.json");
    let methods = methods["methods"].as_array().unwrap();
    assert!(methods.len() >= 37);
    for m in methods {
        let method = m["name"].as_str().unwrap();
        let mut args = Vec::new();
        let mut order = Vec::new();
        for a in m["args"].as_array().unwrap() {
            let name = a["name"].as_str().unwrap();
            let value = match (method, name, a["type"].as_str().unwrap()) {
                ("ratelimit.hit_many", "checks", _) => Value::Array(vec![Value::Map(vec![
                    ("key".into(), "k".into()),
                    ("rule".into(), "r".into()),
                ])]),
                (_, _, "int") => Value::from(a["minimum"].as_u64().unwrap_or(1)),
                (_, _, "bool") => Value::Boolean(false),
                (_, _, "names") => Value::Array(vec!["x".into()]),
                _ => Value::from("x"),
            };
            args.push((Value::from(name), value));
            order.push(name.to_owned());
        }
        let frame = encode_typed(method, 1, Value::Map(args));
        let Value::Array(request) = rmpv::decode::read_value(&mut &frame[4..]).unwrap() else {
            panic!("{method}: not an array");
        };
        let sent: Vec<String> = match &request[3] {
            Value::Array(params) if params.is_empty() => vec![],
            Value::Array(params) => params[0]
                .as_map()
                .unwrap()
                .iter()
                .map(|(k, _)| k.as_str().unwrap().to_owned())
                .collect(),
            other => panic!("{method}: params {other}"),
        };
        assert_eq!(sent, order, "{method}: argument order");
    }
}

#[test]
fn response_vectors_decode_into_typed_results() {
    let vectors = load("protocol-v1.json");
    let responses = vectors["responses"].as_array().unwrap();
    assert!(responses.len() >= 70);
    let mut errors = 0;
    for v in responses {
        let name = v["name"].as_str().unwrap();
        let method = v["method"].as_str().unwrap();
        let Message::Response { msgid, outcome } = decode_frame(v["frame"].as_str().unwrap())
        else {
            panic!("{name}: not a response");
        };
        assert_eq!(u64::from(msgid), v["msgid"].as_u64().unwrap(), "{name}");
        if let Some(expected) = v.get("error") {
            errors += 1;
            let map = outcome.expect_err(name);
            let err = Error::from_error_map(map);
            check_error(name, &err, expected);
            continue;
        }
        let result = outcome.unwrap_or_else(|e| panic!("{name}: error {e}"));
        let expected = tagged(&v["result"]);
        if method == "stats" {
            let stats: StatsResult = rmpv::ext::from_value(result).unwrap();
            assert!(same(&stats.raw, &expected), "{name}: raw");
            let exp = |path: &[&str]| {
                let mut at = &expected;
                for key in path {
                    at = at
                        .as_map()
                        .unwrap()
                        .iter()
                        .find(|(k, _)| k.as_str() == Some(key))
                        .map(|(_, v)| v)
                        .unwrap();
                }
                at.clone()
            };
            assert_eq!(Value::from(stats.uptime_ms), exp(&["uptime_ms"]));
            assert_eq!(Value::from(stats.connections), exp(&["connections"]));
            assert_eq!(Value::from(stats.requests), exp(&["requests"]));
            assert_eq!(
                Value::from(stats.redis.connected),
                exp(&["redis", "connected"])
            );
            assert_eq!(stats.redis.latency_ms, None);
            assert_eq!(Value::from(stats.cache.l1_hits), exp(&["cache", "l1_hits"]));
            assert_eq!(Value::from(stats.cache.l2_hits), exp(&["cache", "l2_hits"]));
            assert_eq!(Value::from(stats.cache.misses), exp(&["cache", "misses"]));
            assert_eq!(
                Value::from(stats.cache.l1_entries),
                exp(&["cache", "l1_entries"])
            );
            assert_eq!(
                Value::from(stats.cache.l1_bytes),
                exp(&["cache", "l1_bytes"])
            );
            assert_eq!(Value::from(stats.locks.held), exp(&["locks", "held"]));
            assert_eq!(
                Value::from(stats.presence.tracked),
                exp(&["presence", "tracked"])
            );
            continue;
        }
        let typed = decode_typed(method, result);
        assert!(
            same(&typed, &expected),
            "response vector {name:?}:\n typed    {typed}\n expected {expected}"
        );
    }
    assert!(errors >= 9);
}

fn check_error(name: &str, err: &Error, expected: &Json) {
    let expected_map = tagged(expected);
    let code = expected["code"].as_str().unwrap();
    assert_eq!(err.code(), Some(code), "{name}");
    assert!(
        same(&err.data().unwrap().to_value(), &expected_map),
        "{name}: the whole error map is kept"
    );
    assert_eq!(
        err.server_message(),
        expected["message"].as_str(),
        "{name}: message"
    );
    match (code, err) {
        ("BAD_REQUEST", Error::BadRequest { argument, .. }) => {
            assert_eq!(argument.as_deref(), expected["argument"].as_str())
        }
        ("UNKNOWN_METHOD", Error::UnknownMethod { .. }) => {}
        ("FORBIDDEN", Error::Forbidden { .. }) => {}
        (
            "UNAVAILABLE",
            Error::Unavailable {
                retry_after_ms,
                message,
                ..
            },
        ) => {
            assert_eq!(Some(*retry_after_ms), expected["retry_after_ms"].as_u64());
            assert_eq!(message, expected["message"].as_str().unwrap());
        }
        ("NOT_HELD", Error::NotHeld { .. }) => {}
        ("TIMEOUT", Error::Timeout { .. }) => {}
        ("SHUTTING_DOWN", Error::ShuttingDown { .. }) => {}
        ("INTERNAL", Error::Internal { error_id, .. }) => {
            assert_eq!(error_id.as_deref(), expected["error_id"].as_str())
        }
        ("BAD_FRAME", Error::BadFrame { .. }) => {}
        ("FRAME_TOO_LARGE", Error::FrameTooLarge { .. }) => {}
        (_, Error::UnknownCode { code: c, .. }) => {
            assert_eq!(c, code);
            assert!(
                ![
                    "BAD_FRAME",
                    "FRAME_TOO_LARGE",
                    "BAD_REQUEST",
                    "UNKNOWN_METHOD",
                    "FORBIDDEN",
                    "UNAVAILABLE",
                    "NOT_HELD",
                    "TIMEOUT",
                    "SHUTTING_DOWN",
                    "INTERNAL"
                ]
                .contains(&code)
            );
        }
        (code, err) => panic!("{name}: code {code} became {err:?}"),
    }
}

#[test]
fn notification_vectors_decode_into_typed_notifications() {
    let vectors = load("protocol-v1.json");
    let notes = vectors["notifications"].as_array().unwrap();
    assert!(notes.len() >= 12);
    for v in notes {
        let name = v["name"].as_str().unwrap();
        let wire_name = v["notification"].as_str().unwrap();
        let expected = tagged(&v["payload"]);
        let Message::Notification(note) = decode_frame(v["frame"].as_str().unwrap()) else {
            panic!("{name}: not a notification");
        };
        assert_eq!(note.name(), wire_name, "{name}");
        let payload = match &note {
            Notification::LockLost(n) => reencode(n),
            Notification::PresenceDiff(n) => reencode(n),
            Notification::PresenceState(n) => reencode(n),
            Notification::PubsubMessage(n) => reencode(n),
            Notification::PubsubDropped(n) => reencode(n),
            Notification::Shutdown(n) => reencode(n),
            Notification::Error(n) => {
                assert_eq!(n.code, expected["code"].as_str().unwrap());
                assert_eq!(n.message, expected["message"].as_str().unwrap());
                assert!(matches!(n.to_error(), Error::BadFrame { .. }));
                n.data.to_value()
            }
            Notification::Other {
                name: other,
                payload,
            } => {
                // Only names this SDK does not know may come out untyped.
                assert_eq!(other, "something.new", "{name}: known names are typed");
                payload.clone()
            }
            other => panic!("{name}: a client event from the wire: {other:?}"),
        };
        assert!(
            same(&payload, &expected),
            "notification vector {name:?}:\n typed    {payload}\n expected {expected}"
        );
    }
}

#[test]
fn big_integers_stay_exact() {
    let vectors = load("protocol-v1.json");
    let v = vectors["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "lock.acquire (fence past 2**53)")
        .unwrap();
    let Message::Response { outcome, .. } = decode_frame(v["frame"].as_str().unwrap()) else {
        panic!()
    };
    let typed: LockAcquireResult = rmpv::ext::from_value(outcome.unwrap()).unwrap();
    assert_eq!(typed.fence, Some(4_611_686_018_427_387_907));
}

#[test]
fn the_comparison_is_strict_about_types() {
    assert!(!same(&Value::F64(2.0), &Value::from(2)));
    assert!(!same(&Value::Binary(b"ab".to_vec()), &Value::from("ab")));
    assert!(!same(
        &Value::from(u64::MAX),
        &Value::F64(18_446_744_073_709_551_615.0)
    ));
    assert!(!same(
        &Value::Map(vec![("a".into(), 1.into())]),
        &Value::Map(vec![("a".into(), 1.into()), ("b".into(), 2.into())])
    ));
    assert!(same(
        &Value::Map(vec![("a".into(), 1.into()), ("b".into(), 2.into())]),
        &Value::Map(vec![("b".into(), 2.into()), ("a".into(), 1.into())])
    ));
    // A tagged value through the typed decoder keeps bin and exact ints.
    let entry: CacheEntry = rmpv::ext::from_value(Value::Map(vec![
        ("value".into(), Value::Binary(vec![0, 255])),
        ("source".into(), "l1".into()),
        ("ttl_ms".into(), Value::Nil),
    ]))
    .unwrap();
    assert_eq!(entry.value, Value::Binary(vec![0, 255]));
    assert_eq!(entry.ttl_ms, None);
    // An ext value (timestamp) round-trips through the typed decoder and encoder.
    let ext = Value::Ext(-1, vec![0, 0, 0, 1]);
    let entry: CacheEntry = rmpv::ext::from_value(Value::Map(vec![
        ("value".into(), ext.clone()),
        ("source".into(), "l2".into()),
        ("ttl_ms".into(), 5.into()),
    ]))
    .unwrap();
    assert_eq!(entry.value, ext);
    let frame = encode_request(1, CacheSet::METHOD, &CacheSet::new("k", ext.clone())).unwrap();
    let Value::Array(req) = rmpv::decode::read_value(&mut &frame[4..]).unwrap() else {
        panic!()
    };
    assert_eq!(req[3][0]["value"], ext);
}
