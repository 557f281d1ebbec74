//! A tour of the SDK against a running sidecar:
//!
//!     MADSIDECAR_SOCKET=/path/to/madsidecar.sock cargo run --example quickstart
//!
//! The end-to-end tests run `run` against their own sidecar.

use std::time::Duration;

use madsidecar_client::{
    CacheSet, Client, Error, LockAcquire, LockRelease, Notification, PubsubPublish, RatelimitHit,
    Value,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // The socket: $MADSIDECAR_SOCKET, else /run/madsidecar/madsidecar.sock.
    let client = Client::connect().await?;
    run(&client, "quickstart").await
}

/// Everything the example does, with names under `prefix`.
pub async fn run(client: &Client, prefix: &str) -> Result<(), Error> {
    println!("ping: {}", client.ping().await?);
    let info = client.server_info().expect("hello was answered");
    println!("sidecar {} on node {}", info.version, info.node_id);

    // Cache: any MessagePack value; 64-bit integers stay exact.
    let key = format!("{prefix}:config");
    let value = Value::Map(vec![
        ("retries".into(), 3.into()),
        ("big".into(), u64::MAX.into()),
    ]);
    client
        .cache_set(CacheSet {
            ttl_ms: Some(60_000),
            ..CacheSet::new(key.as_str(), value.clone())
        })
        .await?;
    let entry = client.cache_get(key.as_str()).await?.expect("just set");
    assert_eq!(entry.value, value);
    println!("cache: {} from {}", entry.value, entry.source);

    // Locks: a lease owned by this connection, renewed by the sidecar.
    let name = format!("{prefix}:migrations");
    let lock = client
        .lock_acquire(LockAcquire {
            ttl_ms: Some(30_000),
            wait_ms: Some(1_000),
            ..LockAcquire::new(name.as_str())
        })
        .await?;
    if let (true, Some(token), Some(fence)) = (lock.acquired, lock.token, lock.fence) {
        println!("lock held with fence {fence}");
        let released = client.lock_release(LockRelease::new(name, token)).await?;
        println!("released: {}", released.released);
    }

    // Pub/sub: notifications arrive on a stream, without holding up replies.
    let mut notes = client.notifications();
    let channel = format!("{prefix}:news");
    client.pubsub_subscribe(channel.as_str()).await?;
    client
        .pubsub_publish(PubsubPublish::new(channel.as_str(), "hello"))
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), notes.recv()).await {
            Ok(Some(Notification::PubsubMessage(m))) if m.channel == channel => {
                println!("message on {}: {}", m.channel, m.message);
                break;
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return Err(Error::Protocol("no message came".into())),
        }
    }

    // Rate limits: 2 per minute; the third hit is denied.
    let limit_key = format!("{prefix}:ip");
    for _ in 0..3 {
        let hit = client
            .ratelimit_hit(RatelimitHit::new(limit_key.as_str(), 2, 60_000))
            .await?;
        println!(
            "allowed: {}, retry after {} ms",
            hit.allowed, hit.retry_after_ms
        );
    }

    // Errors: one variant per code, with the whole error map.
    match client.call("no.such.method", Value::Nil).await {
        Err(Error::UnknownMethod { message, .. }) => println!("as expected: {message}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
