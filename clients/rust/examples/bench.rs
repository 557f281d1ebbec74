//! Ping latency and pipelined throughput against the sidecar at `$MADSIDECAR_SOCKET`:
//!
//!     cargo run --release --example bench -- --pings 20000 --pipelined 100000
//!
//! Prints one JSON line: `{"sdk": "rust", "ping_p50_us", "ping_p99_us", "pipelined_per_s"}`.
//! Sequential pings (after 1000 warm-up ones), then pings on one connection with at most
//! 256 in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use madsidecar_client::{Client, Error};

const WARMUP: usize = 1000;
const IN_FLIGHT: usize = 256;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let pings = arg("--pings", 20_000);
    let pipelined = arg("--pipelined", 100_000);
    let client = Client::connect().await?;

    for _ in 0..WARMUP.min(pings.max(1)) {
        client.ping().await?;
    }
    let mut samples = Vec::with_capacity(pings);
    for _ in 0..pings {
        let start = Instant::now();
        client.ping().await?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);

    // At most IN_FLIGHT calls at once: IN_FLIGHT tasks taking pings from one counter.
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT.min(pipelined.max(1)) {
        let client = client.clone();
        let next = next.clone();
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < pipelined {
                client.ping().await?;
            }
            Ok::<(), Error>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("a bench task panicked")?;
    }
    let elapsed = start.elapsed().as_secs_f64();

    println!(
        "{{\"sdk\": \"rust\", \"ping_p50_us\": {:.2}, \"ping_p99_us\": {:.2}, \"pipelined_per_s\": {:.1}}}",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        if elapsed > 0.0 {
            pipelined as f64 / elapsed
        } else {
            0.0
        },
    );
    Ok(())
}
