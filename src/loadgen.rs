//! `tickfan loadgen`: N WebSocket clients against one or more edges, a
//! scenario of subscriptions, a warm-up, then a measured window. Per-tick
//! end-to-end latency (now − the tick's `ts`) goes into an HDR histogram;
//! deliveries, frames, bytes and gap notices are counted; the edge's own CPU
//! and RSS are read from /proc when its pid is given. Prints a progress line
//! per second and a JSON summary; optionally writes an SVG plot of latency
//! over time.
//!
//! The clients here are deliberately thinner than [`crate::client`]: no event
//! per tick, one histogram lock per frame, so the generator costs little next
//! to the edge it measures (both share this machine's two cores).

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::{rngs::SmallRng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::feed::{now_micros, SymbolSpec};

/// Who subscribes to what.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every client subscribes to all symbols.
    Broadcast,
    /// Each client subscribes to `--per-client` symbols, Zipf-skewed.
    Wall,
    /// Client i subscribes to symbol i only.
    OneEach,
    /// Like `wall`, but `--slow-fraction` of the clients stop reading after
    /// the warm-up.
    Slow,
}

/// Load generator settings.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "loadgen")]
#[command(next_help_heading = "Load generator")]
pub struct Config {
    /// Edge WebSocket URLs, comma-separated; clients are spread round-robin.
    #[arg(
        long,
        env = "TICKFAN_LOADGEN_URL",
        default_value = "ws://127.0.0.1:8080/ws",
        value_delimiter = ','
    )]
    pub url: Vec<String>,

    /// What the clients subscribe to.
    #[arg(long, env = "TICKFAN_LOADGEN_SCENARIO", value_enum, default_value_t = Scenario::Wall)]
    pub scenario: Scenario,

    /// WebSocket clients.
    #[arg(long, env = "TICKFAN_LOADGEN_CLIENTS", default_value_t = 100)]
    pub clients: usize,

    /// The feed's symbols: a count (as `produce --symbols N` names them) or a
    /// comma-separated list.
    #[arg(
        long = "symbols",
        env = "TICKFAN_LOADGEN_SYMBOLS",
        default_value = "50"
    )]
    pub symbols: SymbolSpec,

    /// Symbols per client in `wall` and `slow`.
    #[arg(long, env = "TICKFAN_LOADGEN_PER_CLIENT", default_value_t = 10)]
    pub per_client: usize,

    /// Fraction of clients that stop reading in `slow`.
    #[arg(long, env = "TICKFAN_LOADGEN_SLOW_FRACTION", default_value_t = 0.1)]
    pub slow_fraction: f64,

    /// Time after connecting before measuring.
    #[arg(long, env = "TICKFAN_LOADGEN_WARMUP", default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Measured window.
    #[arg(long, env = "TICKFAN_LOADGEN_DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Spread clients over source addresses 127.0.0.1 ..= 127.0.0.N (past
    /// ~28,000 ephemeral ports per address pair).
    #[arg(long, env = "TICKFAN_LOADGEN_SOURCE_ADDRESSES", default_value_t = 1)]
    pub source_addresses: u8,

    /// Pid of the edge process, to report its CPU per delivered tick and RSS
    /// per connection from /proc.
    #[arg(long, env = "TICKFAN_LOADGEN_EDGE_PID")]
    pub edge_pid: Option<u32>,

    /// Write the JSON summary here too.
    #[arg(long, env = "TICKFAN_LOADGEN_JSON")]
    pub json: Option<PathBuf>,

    /// Write an SVG plot of per-second latency percentiles here.
    #[arg(long, env = "TICKFAN_LOADGEN_PLOT")]
    pub plot: Option<PathBuf>,
}

#[derive(Default)]
struct Counters {
    ticks: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    gaps: AtomicU64,
    connected: AtomicU64,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ticks: Vec<WireTick>,
}

#[derive(Deserialize)]
struct WireTick {
    ts: i64,
}

struct Shared {
    counters: Counters,
    /// Latencies in microseconds, for the measured window and for the
    /// current second (plot).
    window: Mutex<Histogram<u64>>,
    second: Mutex<Histogram<u64>>,
    measuring: AtomicBool,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

fn subscriptions(c: &Config, symbols: &[String], rng: &mut SmallRng) -> Vec<Vec<String>> {
    let zipf = Zipf::new(symbols.len() as f64, 1.0).expect("valid zipf");
    (0..c.clients)
        .map(|i| match c.scenario {
            Scenario::Broadcast => symbols.to_vec(),
            Scenario::OneEach => vec![symbols[i % symbols.len()].clone()],
            Scenario::Wall | Scenario::Slow => {
                let mut mine: Vec<String> = Vec::new();
                let want = c.per_client.min(symbols.len());
                while mine.len() < want {
                    let s = &symbols[(zipf.sample(rng) as usize - 1).min(symbols.len() - 1)];
                    if !mine.contains(s) {
                        mine.push(s.clone());
                    }
                }
                mine
            }
        })
        .collect()
}

/// CPU seconds (user + system) and RSS in KiB of a process.
fn proc_sample(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; utime is field 14 → [11], stime [12].
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    // USER_HZ is 100 on Linux.
    Some((ticks / 100.0, rss))
}

async fn run_client(
    url: String,
    from: Option<IpAddr>,
    symbols: Vec<String>,
    stall: Arc<AtomicBool>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let uri: http::Uri = url.parse()?;
    let addr = tokio::net::lookup_host((
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(80),
    ))
    .await?
    .next()
    .ok_or_else(|| anyhow::anyhow!("no address for {url}"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = from {
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream).await?;
    for chunk in symbols.chunks(500) {
        let req = serde_json::json!({"op": "subscribe", "symbols": chunk}).to_string();
        ws.send(Message::text(req)).await?;
    }
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut mine = 0u64;
    loop {
        if stall.load(Ordering::Relaxed) {
            // A stalled client: keep the socket, read nothing.
            stop.cancelled().await;
            return Ok(mine);
        }
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(mine),
            m = ws.next() => match m { Some(m) => m?, None => return Ok(mine) },
        };
        let Message::Text(text) = msg else { continue };
        let now = now_micros();
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        let c = &shared.counters;
        c.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        match frame.kind.as_str() {
            "ticks" => {
                let n = frame.ticks.len() as u64;
                mine += n;
                c.ticks.fetch_add(n, Ordering::Relaxed);
                c.frames.fetch_add(1, Ordering::Relaxed);
                if shared.measuring.load(Ordering::Relaxed) {
                    let mut w = shared.window.lock().unwrap();
                    let mut s = shared.second.lock().unwrap();
                    for t in &frame.ticks {
                        let lat = (now - t.ts).max(1) as u64;
                        let _ = w.record(lat);
                        let _ = s.record(lat);
                    }
                }
            }
            "gap" => {
                c.gaps.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Runs the load and prints the summary; returns it as JSON.
pub async fn run(c: Config, shutdown: CancellationToken) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        !c.url.is_empty() && c.clients > 0,
        "need --url and --clients"
    );
    let symbols: Vec<String> = c.symbols.resolve()?.iter().map(|s| s.to_string()).collect();
    let mut rng = SmallRng::seed_from_u64(7);
    let subs = subscriptions(&c, &symbols, &mut rng);
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        window: Mutex::new(histogram()),
        second: Mutex::new(histogram()),
        measuring: AtomicBool::new(false),
    });
    let edge_before = c.edge_pid.and_then(proc_sample);
    let stop = CancellationToken::new();
    let slow_n = if c.scenario == Scenario::Slow {
        (c.clients as f64 * c.slow_fraction).round() as usize
    } else {
        0
    };
    let stalls: Vec<Arc<AtomicBool>> = (0..c.clients)
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let mut tasks = Vec::with_capacity(c.clients);
    for (i, mine) in subs.into_iter().enumerate() {
        let url = c.url[i % c.url.len()].clone();
        let from = (c.source_addresses > 1)
            .then(|| IpAddr::from([127, 0, 0, 1 + (i % c.source_addresses as usize) as u8]));
        tasks.push(tokio::spawn(run_client(
            url,
            from,
            mine,
            stalls[i].clone(),
            shared.clone(),
            stop.clone(),
        )));
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    let started = Instant::now();
    while (shared.counters.connected.load(Ordering::Relaxed) as usize) < c.clients {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "clients could not all connect"
        );
        if shutdown.is_cancelled() {
            stop.cancel();
            anyhow::bail!("interrupted");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "loadgen: {} clients connected in {:.1?}; warming up {:?}",
        c.clients,
        started.elapsed(),
        c.warmup
    );
    tokio::time::sleep(c.warmup).await;
    for s in stalls.iter().take(slow_n) {
        s.store(true, Ordering::Relaxed);
    }
    let edge_start = c.edge_pid.and_then(proc_sample);
    let base = snapshot(&shared.counters);
    shared.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut series: Vec<(u64, u64, u64, u64)> = Vec::new(); // second, p50, p99, max (µs)
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = base;
    while t0.elapsed() < c.duration && !shutdown.is_cancelled() {
        tick.tick().await;
        let now = snapshot(&shared.counters);
        let h = std::mem::replace(&mut *shared.second.lock().unwrap(), histogram());
        let (p50, p99, max) = (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max());
        series.push((series.len() as u64 + 1, p50, p99, max));
        println!(
            "loadgen: {:>4}s deliveries/s {:>9} frames/s {:>8} MB/s {:>6.2} gaps {:>6} latency p50 {:>7.2} ms p99 {:>7.2} ms",
            series.len(),
            now.0 - last.0,
            now.1 - last.1,
            (now.2 - last.2) as f64 / 1e6,
            now.3 - last.3,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
        );
        last = now;
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let end = snapshot(&shared.counters);
    let edge_end = c.edge_pid.and_then(proc_sample);
    stop.cancel();
    let mut per_client = Vec::with_capacity(tasks.len());
    for t in tasks {
        per_client.push(t.await.ok().and_then(|r| r.ok()).unwrap_or(0));
    }
    let h = shared.window.lock().unwrap().clone();
    let delivered = end.0 - base.0;
    let ms = |v: u64| v as f64 / 1000.0;
    let edge = match (edge_before, edge_start, edge_end) {
        (Some(b), Some(s), Some(e)) => serde_json::json!({
            "cpu_seconds": e.0 - s.0,
            "cpu_us_per_delivery": if delivered > 0 { (e.0 - s.0) * 1e6 / delivered as f64 } else { 0.0 },
            "rss_kib_before_clients": b.1, "rss_kib": e.1,
            "rss_kib_per_connection": (e.1 as f64 - b.1 as f64) / c.clients as f64,
        }),
        _ => serde_json::Value::Null,
    };
    let summary = serde_json::json!({
        "scenario": c.scenario, "clients": c.clients, "symbols": symbols.len(),
        "slow_clients": slow_n, "seconds": secs,
        "deliveries_per_sec": delivered as f64 / secs,
        "frames_per_sec": (end.1 - base.1) as f64 / secs,
        "bytes_per_sec": (end.2 - base.2) as f64 / secs,
        "gap_frames": end.3 - base.3,
        "latency_ms": {
            "p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
            "p99": ms(h.value_at_quantile(0.99)), "p99_9": ms(h.value_at_quantile(0.999)),
            "max": ms(h.max()), "samples": h.len(),
        },
        "per_client_ticks": { "min": per_client.iter().min(), "max": per_client.iter().max() },
        "edge": edge,
    });
    println!("{summary}");
    if let Some(p) = &c.json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)?;
    }
    if let Some(p) = &c.plot {
        std::fs::write(
            p,
            svg(&series, &format!("{:?}, {} clients", c.scenario, c.clients)),
        )?;
    }
    Ok(summary)
}

fn snapshot(c: &Counters) -> (u64, u64, u64, u64) {
    (
        c.ticks.load(Ordering::Relaxed),
        c.frames.load(Ordering::Relaxed),
        c.bytes.load(Ordering::Relaxed),
        c.gaps.load(Ordering::Relaxed),
    )
}

/// A small line chart of per-second p50/p99/max latency. Hand-written: the
/// plotting crates pull in font rendering and image codecs for 40 lines of SVG.
fn svg(series: &[(u64, u64, u64, u64)], title: &str) -> String {
    let (w, h, pad) = (800.0, 400.0, 50.0);
    let max_x = series.len().max(1) as f64;
    let max_y = series.iter().map(|s| s.3).max().unwrap_or(1).max(1) as f64 / 1000.0;
    let line = |pick: fn(&(u64, u64, u64, u64)) -> u64, color: &str| {
        let pts: Vec<String> = series
            .iter()
            .map(|s| {
                let x = pad + (s.0 as f64 / max_x) * (w - 2.0 * pad);
                let y = h - pad - (pick(s) as f64 / 1000.0 / max_y) * (h - 2.0 * pad);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        )
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="monospace" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20">tickfan loadgen: end-to-end latency per second ({title})</text>
<line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{y0}" stroke="black"/>
<text x="5" y="{pad}">{max_y:.1} ms</text><text x="5" y="{y0}">0</text><text x="{x1}" y="{yl}" text-anchor="end">{n} s</text>
{p50}{p99}{mx}
<text x="{lx}" y="40" fill="#2a7">p50</text><text x="{lx2}" y="40" fill="#d80">p99</text><text x="{lx3}" y="40" fill="#c22">max</text>
</svg>
"##,
        y0 = h - pad,
        x1 = w - pad,
        yl = h - pad + 20.0,
        n = series.len(),
        p50 = line(|s| s.1, "#2a7"),
        p99 = line(|s| s.2, "#d80"),
        mx = line(|s| s.3, "#c22"),
        lx = w - 200.0,
        lx2 = w - 150.0,
        lx3 = w - 100.0,
    )
}
