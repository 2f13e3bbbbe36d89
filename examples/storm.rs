//! Reconnect storm load: N reference clients connect to an edge at once from
//! several loopback source addresses, each retrying with exponential backoff
//! and full jitter and honouring `Retry-After`. Prints admissions per second
//! and, on the last line, a JSON summary. `scripts/storm.sh` runs several of
//! these processes against one edge (one process tops out near 19,000
//! sockets on this machine).

use std::time::Duration;

use clap::Parser;
use tickfan::client::{self, Event};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
struct Args {
    /// Edge WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:18300/ws")]
    url: String,
    /// Clients in this process.
    #[arg(long, default_value_t = 5000)]
    clients: usize,
    /// Source addresses 127.0.0.(first)..(first+addresses-1).
    #[arg(long, default_value_t = 1)]
    first_address: u8,
    #[arg(long, default_value_t = 20)]
    addresses: u8,
    /// Give up after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let octet = args.first_address as usize + i % args.addresses.max(1) as usize;
        let config = client::Config {
            endpoints: vec![args.url.clone()],
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            local_addr: Some(format!("127.0.0.{}", octet.min(254)).parse()?),
            ..client::Config::default()
        };
        let (mut events, task) = client::spawn(config, shutdown.clone());
        tasks.push(task);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut rejected = 0u32;
            while let Some(e) = events.recv().await {
                match e {
                    Event::Connected { .. } => {
                        let _ = tx.send(Instant::now());
                    }
                    Event::Disconnected { .. } => rejected += 1,
                    _ => {}
                }
            }
            rejected
        });
    }
    let mut per_second: Vec<usize> = Vec::new();
    let mut admitted = 0;
    let end = start + args.deadline;
    while admitted < args.clients {
        let Ok(Some(t)) = tokio::time::timeout_at(end, rx.recv()).await else {
            break;
        };
        let s = t.duration_since(start).as_secs() as usize;
        if per_second.len() <= s {
            per_second.resize(s + 1, 0);
        }
        per_second[s] += 1;
        admitted += 1;
    }
    let took = start.elapsed();
    for (s, n) in per_second.iter().enumerate() {
        println!("storm: second {s:>3}: {n} admitted");
    }
    println!(
        "{}",
        serde_json::json!({
            "clients": args.clients, "admitted": admitted, "seconds": took.as_secs_f64(),
            "max_per_second": per_second.iter().max().copied().unwrap_or(0), "per_second": per_second,
        })
    );
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    anyhow::ensure!(
        admitted == args.clients,
        "only {admitted} of {} admitted",
        args.clients
    );
    Ok(())
}
