//! Soak: two edge processes, a producer, and thousands of reference clients
//! for a fixed time under steady load. Samples each edge's RSS and open file
//! descriptors from /proc, checks that every client's ticks stay contiguous,
//! and prints a summary (JSON on the last line). Run it with `scripts/soak.sh`.
//!
//! Not part of `cargo test`: it runs for minutes by design.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Parser;
use rand::{rngs::SmallRng, seq::IndexedRandom, SeedableRng};
use tickfan::client::{self, Event};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
struct Args {
    /// Minutes of measured load (after warm-up).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Warm-up seconds before the baseline sample.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// WebSocket clients, spread evenly over the two edges.
    #[arg(long, default_value_t = 3000)]
    clients: usize,
    /// Symbols each client subscribes to.
    #[arg(long, default_value_t = 5)]
    per_client: usize,
    /// Symbols in the feed.
    #[arg(long, default_value_t = 200)]
    symbols: usize,
    /// Ticks per second produced.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Kafka bootstrap servers; default: an embedded mock cluster.
    #[arg(long)]
    brokers: Option<String>,
    /// Path of the tickfan binary (default: next to this example).
    #[arg(long)]
    tickfan: Option<String>,
}

#[derive(Default)]
struct Totals {
    ticks: AtomicU64,
    gaps: AtomicU64,
    holes: AtomicU64,
    disconnects: AtomicU64,
}

fn proc_sample(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss_kib, fds)
}

/// A child process, killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, args: &[&str], log: &str) -> Proc {
    Proc(
        Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}")),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = args.tickfan.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("tickfan")
            .to_string_lossy()
            .into_owned()
    });
    let mock = match args.brokers {
        Some(_) => None,
        None => Some(rdkafka::mocking::MockCluster::new(1)?),
    };
    let brokers = args
        .brokers
        .clone()
        .unwrap_or_else(|| mock.as_ref().unwrap().bootstrap_servers());
    let topic = format!("soak-{}", rand::random::<u32>());
    match &mock {
        Some(m) => m.create_topic(&topic, 8, 1)?,
        None => {
            let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
                rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .create()?;
            let t = rdkafka::admin::NewTopic::new(
                &topic,
                8,
                rdkafka::admin::TopicReplication::Fixed(1),
            );
            for r in admin
                .create_topics(&[t], &rdkafka::admin::AdminOptions::new())
                .await?
            {
                r.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
            }
        }
    }
    let tmp = std::env::temp_dir();
    let ports = [18181u16, 18182];
    let edges: Vec<Proc> = ports
        .iter()
        .map(|p| {
            let listen = format!("127.0.0.1:{p}");
            let log = tmp.join(format!("soak-edge-{p}.log"));
            spawn(
                &bin,
                &[
                    "edge",
                    "--listen",
                    &listen,
                    "--brokers",
                    &brokers,
                    "--topic",
                    &topic,
                    // The soak measures the steady state, not the front door
                    // (tests/front_door.rs and the storm scenario do): every
                    // client comes from 127.0.0.1, which the default per-IP
                    // admission limit would spread over minutes of 429s.
                    "--connect-rate-per-ip",
                    "100000",
                    "--connect-burst-per-ip",
                    "100000",
                    "--max-connections-per-ip",
                    "100000",
                    "--connect-rate",
                    "100000",
                    "--connect-burst",
                    "100000",
                ],
                log.to_str().unwrap(),
            )
        })
        .collect();
    let symbols: Vec<String> = (0..args.symbols).map(|i| format!("SOAK{i:04}")).collect();
    let rate = args.rate.to_string();
    let producer = spawn(
        &bin,
        &[
            "produce",
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--symbols",
            &symbols.join(","),
            "--rate",
            &rate,
            "--zipf",
            "0",
        ],
        tmp.join("soak-produce.log").to_str().unwrap(),
    );
    for p in ports {
        let url = format!("http://127.0.0.1:{p}/readyz");
        let end = Instant::now() + Duration::from_secs(60);
        while !ready(&url).await {
            anyhow::ensure!(Instant::now() < end, "edge on {p} never became ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let totals = Arc::new(Totals::default());
    let shutdown = CancellationToken::new();
    let mut rng = SmallRng::seed_from_u64(42);
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let mine: Vec<String> = symbols
            .choose_multiple(&mut rng, args.per_client)
            .cloned()
            .collect();
        let config = client::Config {
            endpoints: vec![format!("ws://127.0.0.1:{}/ws", ports[i % 2])],
            symbols: mine,
            ..client::Config::default()
        };
        let (mut rx, task) = client::spawn(config, shutdown.clone());
        let t = totals.clone();
        tasks.push(task);
        tokio::spawn(async move {
            let mut last: HashMap<String, i64> = HashMap::new();
            while let Some(e) = rx.recv().await {
                match e {
                    Event::Tick(tick) => {
                        t.ticks.fetch_add(1, Ordering::Relaxed);
                        if let Some(prev) = last.insert(tick.symbol, tick.seq) {
                            if !tick.snapshot && tick.seq != prev + 1 {
                                t.holes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Event::Gap { symbol, to_seq, .. } => {
                        t.gaps.fetch_add(1, Ordering::Relaxed);
                        last.insert(symbol, to_seq);
                    }
                    Event::Disconnected { .. } => {
                        t.disconnects.fetch_add(1, Ordering::Relaxed);
                        last.clear();
                    }
                    _ => {}
                }
            }
        });
        if i % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    println!(
        "soak: {} clients connecting, warming up {} s",
        args.clients, args.warmup_secs
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    let pids: Vec<u32> = edges.iter().map(|c| c.0.id()).collect();
    let baseline: Vec<(u64, usize)> = pids.iter().map(|p| proc_sample(*p)).collect();
    let base_ticks = totals.ticks.load(Ordering::Relaxed);
    // Failed attempts while connecting count as disconnects too; only those
    // in the measured window fail the soak.
    let warmup_disconnects = totals.disconnects.load(Ordering::Relaxed);
    let disconnects = || totals.disconnects.load(Ordering::Relaxed) - warmup_disconnects;
    let start = Instant::now();
    let measured = Duration::from_secs_f64(args.minutes * 60.0);
    let mut samples = Vec::new();
    while start.elapsed() < measured {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let s: Vec<(u64, usize)> = pids.iter().map(|p| proc_sample(*p)).collect();
        let secs = start.elapsed().as_secs();
        let delivered = totals.ticks.load(Ordering::Relaxed) - base_ticks;
        println!(
            "soak: t={secs}s edges rss_kib={:?} fds={:?} delivered={delivered} ({:.0}/s) gaps={} holes={} disconnects={}",
            s.iter().map(|x| x.0).collect::<Vec<_>>(),
            s.iter().map(|x| x.1).collect::<Vec<_>>(),
            delivered as f64 / start.elapsed().as_secs_f64(),
            totals.gaps.load(Ordering::Relaxed),
            totals.holes.load(Ordering::Relaxed),
            disconnects(),
        );
        samples.push(s);
    }
    let last = samples.last().cloned().unwrap_or_else(|| baseline.clone());
    let max_rss: Vec<u64> = (0..2)
        .map(|i| samples.iter().map(|s| s[i].0).max().unwrap_or(0))
        .collect();
    let rss_growth: Vec<f64> = (0..2)
        .map(|i| max_rss[i] as f64 / baseline[i].0 as f64 - 1.0)
        .collect();
    let fd_growth: Vec<i64> = (0..2)
        .map(|i| last[i].1 as i64 - baseline[i].1 as i64)
        .collect();
    let delivered = totals.ticks.load(Ordering::Relaxed) - base_ticks;
    let ok = rss_growth.iter().all(|g| *g <= 0.10)
        && fd_growth.iter().all(|g| *g <= 0)
        && totals.gaps.load(Ordering::Relaxed) == 0
        && totals.holes.load(Ordering::Relaxed) == 0
        && disconnects() == 0;
    let summary = serde_json::json!({
        "ok": ok,
        "minutes": args.minutes, "clients": args.clients, "per_client": args.per_client,
        "symbols": args.symbols, "rate": args.rate, "brokers": if mock.is_some() { "mock" } else { "real" },
        "baseline_rss_kib": baseline.iter().map(|x| x.0).collect::<Vec<_>>(),
        "max_rss_kib": max_rss, "rss_growth": rss_growth,
        "baseline_fds": baseline.iter().map(|x| x.1).collect::<Vec<_>>(),
        "final_fds": last.iter().map(|x| x.1).collect::<Vec<_>>(),
        "delivered": delivered, "deliveries_per_sec": delivered as f64 / start.elapsed().as_secs_f64(),
        "gaps": totals.gaps.load(Ordering::Relaxed), "holes": totals.holes.load(Ordering::Relaxed),
        "disconnects": disconnects(),
        "warmup_disconnects": warmup_disconnects,
    });
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    drop(producer);
    drop(edges);
    println!("{summary}");
    anyhow::ensure!(ok, "soak criteria not met");
    Ok(())
}

async fn ready(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return false;
    };
    let req = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}
