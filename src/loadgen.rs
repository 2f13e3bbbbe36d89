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
//! to the edge it measures (both share this machine's two cores). They do
//! share its reconnect policy: a rejected or failed connect is retried after
//! [`client::backoff_delay`] (full jitter), and at least the `Retry-After`
//! of a 429/503 answer.
//!
//! # Processes
//!
//! The clients run in `Workers`: in this process (`--processes 1`), or in
//! P child processes of this same binary (`tickfan loadgen --worker I/P`),
//! each with its own open-files limit. Either way the run is driven by the
//! same loop through the same `Request`s and merged `Report`s: a child
//! gets the `Plan` and then one request per line as JSON on stdin and
//! answers each with one JSON line on stdout (histograms in hdrhistogram's V2
//! format, base64); it logs to stderr only. Worker I runs the clients whose
//! index i has i % P == I; subscriptions, slow clients and source addresses
//! are computed over all clients, so they are the same for any P.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context as _;
use base64::{prelude::BASE64_STANDARD, Engine as _};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::{
    serialization::{Deserializer as HistogramReader, Serializer as _, V2Serializer},
    Histogram,
};
use rand::{rngs::SmallRng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    net::TcpStream,
    process::{ChildStdin, ChildStdout},
    time::Instant,
};
use tokio_tungstenite::{
    tungstenite::{self, Message},
    WebSocketStream,
};
use tokio_util::sync::CancellationToken;

use crate::{
    client,
    feed::{now_micros, SymbolSpec},
};

/// Who subscribes to what.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Like `wall`, but at the start of the measured window every client
    /// closes its connection at once and reconnects (backoff with full
    /// jitter, honouring `Retry-After`), then resubscribes.
    Storm,
}

/// Which share of the clients a worker process runs: `I/P` runs the clients
/// whose index i has i % P == I.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub index: usize,
    pub of: usize,
}

impl std::str::FromStr for Slot {
    type Err = String;
    fn from_str(s: &str) -> Result<Slot, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, p)| Some((i.trim().parse().ok()?, p.trim().parse().ok()?)));
        match parsed {
            Some((index, of)) if index < of => Ok(Slot { index, of }),
            _ => Err(format!("expected I/P with I < P, got {s:?}")),
        }
    }
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

    /// WebSocket clients, over all processes.
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

    /// Symbols per client in `wall`, `slow` and `storm`.
    #[arg(long, env = "TICKFAN_LOADGEN_PER_CLIENT", default_value_t = 10)]
    pub per_client: usize,

    /// Fraction of clients that stop reading in `slow`.
    #[arg(long, env = "TICKFAN_LOADGEN_SLOW_FRACTION", default_value_t = 0.1)]
    pub slow_fraction: f64,

    /// Time after connecting before measuring.
    #[arg(long, env = "TICKFAN_LOADGEN_WARMUP", default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Measured window (`storm`: at least this, and until every client is
    /// back).
    #[arg(long, env = "TICKFAN_LOADGEN_DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Clients start connecting at this many per second, in order (0: all at
    /// once). A server that cannot take every client at once while its feed
    /// runs (the Redis baseline) is measured after a ramp rather than in a
    /// reconnect spiral.
    #[arg(long, env = "TICKFAN_LOADGEN_RAMP_RATE", default_value_t = 0.0)]
    pub ramp_rate: f64,

    /// Spread clients over source addresses 127.0.0.1 ..= 127.0.0.N (past
    /// ~28,000 ephemeral ports per address pair).
    #[arg(long, env = "TICKFAN_LOADGEN_SOURCE_ADDRESSES", default_value_t = 1)]
    pub source_addresses: u8,

    /// Run the clients in this many worker processes (past the open-files
    /// limit of one process); results are merged as if from one.
    #[arg(long, env = "TICKFAN_LOADGEN_PROCESSES", default_value_t = 1)]
    pub processes: usize,

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

    /// Also drive the feed: produce ticks of `--symbols` (uniformly, as
    /// `tickfan produce --zipf 0`) to these Kafka bootstrap servers for the
    /// whole run, so one command is a complete benchmark.
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_BROKERS")]
    pub produce_brokers: Option<String>,

    /// Topic the driven feed writes to.
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_TOPIC", default_value = "ticks")]
    pub produce_topic: String,

    /// Ticks per second of the driven feed, over all symbols.
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_RATE", default_value_t = 1000.0)]
    pub produce_rate: f64,

    /// Kafka value size of the driven feed's ticks (as `produce --tick-bytes`;
    /// 0: natural size).
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_TICK_BYTES", default_value_t = 0)]
    pub produce_tick_bytes: usize,

    /// Internal: run as worker I of P of a `--processes` parent, which sends
    /// the settings and commands on stdin.
    #[arg(long, hide = true, value_name = "I/P")]
    pub worker: Option<Slot>,

    /// Internal: the binary to start workers from (default: this one).
    #[arg(long, hide = true, value_name = "PATH")]
    pub worker_exe: Option<PathBuf>,
}

/// How long clients may take to connect, and a storm to come back.
const CONNECT_DEADLINE: Duration = Duration::from_secs(120);
/// How long a worker process may take to answer a request.
const REPLY_DEADLINE: Duration = Duration::from_secs(60);
/// Lines of a worker's stderr kept for the error when it fails.
const STDERR_TAIL: usize = 20;

/// What the clients of every process do: sent to each worker process as its
/// first line of input.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Plan {
    urls: Vec<String>,
    scenario: Scenario,
    clients: usize,
    symbols: Vec<String>,
    per_client: usize,
    /// Clients 0..slow_clients stall when the window starts.
    slow_clients: usize,
    source_addresses: u8,
    /// Clients per second at the start (0: all at once).
    #[serde(default)]
    ramp_rate: f64,
}

impl Plan {
    /// When client `i` starts connecting, after the start.
    fn start_delay(&self, i: usize) -> Duration {
        if self.ramp_rate > 0.0 {
            Duration::from_secs_f64(i as f64 / self.ramp_rate)
        } else {
            Duration::ZERO
        }
    }

    /// How long connecting may take: the ramp, then [`CONNECT_DEADLINE`].
    fn connect_deadline(&self) -> Duration {
        self.start_delay(self.clients) + CONNECT_DEADLINE
    }
}

/// A command to the clients (of one process, or of every worker process).
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    /// How many clients are connected (and the last connect failure).
    Status,
    /// Start the measured window: stall the slow clients, record latency,
    /// and in `storm` close and reconnect every client. `epoch_us` (wall
    /// clock) starts the per-second admission counts of every process.
    Measure { epoch_us: i64 },
    /// Counters, the latency since the last sample, storm progress.
    Sample,
    /// End the window: counters, the window's latency, the storm.
    End,
    /// Close every client: ticks per client.
    Stop,
}

/// The answer to a [`Request`]; answers of several processes merge into one.
#[derive(Serialize, Deserialize, Debug, Default)]
struct Report {
    #[serde(default)]
    connected: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(default)]
    totals: Totals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency: Option<Hist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storm: Option<StormReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_client: Option<TickRange>,
}

impl Report {
    fn merge(mut self, o: Report) -> Report {
        self.connected += o.connected;
        self.last_error = self.last_error.or(o.last_error);
        self.totals = self.totals.plus(o.totals);
        self.latency = merge(self.latency, o.latency, |a, b| a.add(&b));
        self.storm = merge(self.storm, o.storm, StormReport::add);
        self.per_client = merge(self.per_client, o.per_client, |a, b| TickRange {
            min: a.min.into_iter().chain(b.min).min(),
            max: a.max.into_iter().chain(b.max).max(),
        });
        self
    }
}

fn merge<T>(a: Option<T>, b: Option<T>, f: impl FnOnce(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// Cumulative counts of everything the clients received.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
struct Totals {
    ticks: u64,
    frames: u64,
    bytes: u64,
    gaps: u64,
}

impl Totals {
    fn plus(self, o: Totals) -> Totals {
        Totals {
            ticks: self.ticks + o.ticks,
            frames: self.frames + o.frames,
            bytes: self.bytes + o.bytes,
            gaps: self.gaps + o.gaps,
        }
    }
}

/// Fewest and most ticks a client received.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
struct TickRange {
    min: Option<u64>,
    max: Option<u64>,
}

/// What the storm did so far.
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct StormReport {
    /// Clients connected and resubscribed again.
    reconnected: u64,
    /// Clients that got a tick frame since.
    back: u64,
    /// Successful handshakes per second since the storm.
    admitted: Vec<u64>,
    /// Rejected handshakes by HTTP status.
    rejected: BTreeMap<u16, u64>,
    /// Other failed attempts (refused, reset, timed out).
    errors: u64,
    /// Per client, from the close to the first tick frame after resubscribing (µs).
    times: Hist,
}

impl StormReport {
    fn add(mut self, o: StormReport) -> StormReport {
        self.reconnected += o.reconnected;
        self.back += o.back;
        if self.admitted.len() < o.admitted.len() {
            self.admitted.resize(o.admitted.len(), 0);
        }
        for (a, b) in self.admitted.iter_mut().zip(o.admitted) {
            *a += b;
        }
        for (status, n) in o.rejected {
            *self.rejected.entry(status).or_default() += n;
        }
        self.errors += o.errors;
        self.times = self.times.add(&o.times);
        self
    }

    fn admitted_total(&self) -> u64 {
        self.admitted.iter().sum()
    }

    fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// A latency histogram (µs); on the wire, hdrhistogram's V2 format in base64.
#[derive(Debug, Clone)]
struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Hist {
        Hist(Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"))
    }
}

impl Hist {
    fn add(mut self, o: &Hist) -> Hist {
        // Value by value: a value past this one's bounds is clamped.
        for v in o.0.iter_recorded() {
            let (value, count) = (v.value_iterated_to(), v.count_at_value());
            self.0.saturating_record_n(value, count);
        }
        self
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&BASE64_STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hist, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(d)?;
        let bytes = BASE64_STANDARD.decode(text).map_err(D::Error::custom)?;
        let h = HistogramReader::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(D::Error::custom)?;
        Ok(Hist(h))
    }
}

#[derive(Default)]
struct Counters {
    ticks: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    gaps: AtomicU64,
    connected: AtomicU64,
}

impl Counters {
    fn totals(&self) -> Totals {
        Totals {
            ticks: self.ticks.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
        }
    }
}

/// The storm as the clients of one process see it.
#[derive(Default)]
struct Storm {
    epoch_us: AtomicI64,
    reconnected: AtomicU64,
    back: AtomicU64,
    errors: AtomicU64,
    admitted: Mutex<Vec<u64>>,
    rejected: Mutex<BTreeMap<u16, u64>>,
    times: Mutex<Hist>,
}

impl Storm {
    fn admitted(&self) {
        let since = now_micros() - self.epoch_us.load(Ordering::Relaxed);
        let second = (since.max(0) / 1_000_000) as usize;
        let mut a = self.admitted.lock().unwrap();
        if a.len() <= second {
            a.resize(second + 1, 0);
        }
        a[second] += 1;
    }

    fn report(&self) -> StormReport {
        StormReport {
            reconnected: self.reconnected.load(Ordering::Relaxed),
            back: self.back.load(Ordering::Relaxed),
            admitted: self.admitted.lock().unwrap().clone(),
            rejected: self.rejected.lock().unwrap().clone(),
            errors: self.errors.load(Ordering::Relaxed),
            times: self.times.lock().unwrap().clone(),
        }
    }
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
    /// Snapshots carry the `ts` of an older tick: not a latency sample.
    #[serde(default)]
    snapshot: bool,
}

struct Shared {
    counters: Counters,
    /// Latencies in microseconds, for the measured window and for the
    /// current second (plot).
    window: Mutex<Histogram<u64>>,
    second: Mutex<Histogram<u64>>,
    measuring: AtomicBool,
    storm: Storm,
    last_error: Mutex<Option<String>>,
}

fn histogram() -> Histogram<u64> {
    Hist::default().0
}

fn subscriptions(plan: &Plan, rng: &mut SmallRng) -> Vec<Vec<String>> {
    let symbols = &plan.symbols;
    let zipf = Zipf::new(symbols.len() as f64, 1.0).expect("valid zipf");
    (0..plan.clients)
        .map(|i| match plan.scenario {
            Scenario::Broadcast => symbols.to_vec(),
            Scenario::OneEach => vec![symbols[i % symbols.len()].clone()],
            Scenario::Wall | Scenario::Slow | Scenario::Storm => {
                let mut mine: Vec<String> = Vec::new();
                let want = plan.per_client.min(symbols.len());
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

type Ws = WebSocketStream<TcpStream>;

/// Where one client connects, and from which source address.
struct Target {
    url: String,
    from: Option<IpAddr>,
}

/// Why one connection attempt failed.
enum Failure {
    /// The handshake got an HTTP answer other than 101.
    Rejected {
        status: u16,
        retry_after: Option<Duration>,
    },
    Other(String),
}

async fn tcp(t: &Target) -> anyhow::Result<TcpStream> {
    let uri: http::Uri = t.url.parse()?;
    let addr = tokio::net::lookup_host((
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(80),
    ))
    .await?
    .next()
    .ok_or_else(|| anyhow::anyhow!("no address for {}", t.url))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = t.from {
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection attempt: TCP, then the WebSocket handshake.
async fn handshake(t: &Target) -> Result<Ws, Failure> {
    let stream = tcp(t)
        .await
        .map_err(|e| Failure::Other(format!("connect {}: {e:#}", t.url)))?;
    match tokio_tungstenite::client_async(t.url.as_str(), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(r)) => Err(Failure::Rejected {
            status: r.status().as_u16(),
            retry_after: client::retry_after(&r),
        }),
        Err(e) => Err(Failure::Other(format!("handshake with {}: {e}", t.url))),
    }
}

/// Connects, retrying as the reference client does: full-jitter exponential
/// backoff ([`client::backoff_delay`] with [`client::Config`]'s defaults),
/// and at least `Retry-After`. Counts into the storm when `storm`. `None`
/// when stopped first.
async fn connect(
    target: &Target,
    shared: &Shared,
    stop: &CancellationToken,
    storm: bool,
) -> Option<Ws> {
    let policy = client::Config::default();
    let mut attempt = 0u32;
    loop {
        let tried = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            r = tokio::time::timeout(client::CONNECT_TIMEOUT, handshake(target)) => {
                r.unwrap_or_else(|_| Err(Failure::Other(format!("connect {}: timed out", target.url))))
            }
        };
        let floor = match tried {
            Ok(ws) => {
                if storm {
                    shared.storm.admitted();
                }
                return Some(ws);
            }
            Err(Failure::Rejected {
                status,
                retry_after,
            }) => {
                if storm {
                    let mut rejected = shared.storm.rejected.lock().unwrap();
                    *rejected.entry(status).or_default() += 1;
                }
                *shared.last_error.lock().unwrap() =
                    Some(format!("handshake with {}: HTTP {status}", target.url));
                retry_after
            }
            Err(Failure::Other(reason)) => {
                if storm {
                    shared.storm.errors.fetch_add(1, Ordering::Relaxed);
                }
                *shared.last_error.lock().unwrap() = Some(reason);
                None
            }
        };
        let (base, cap) = (policy.backoff_base, policy.backoff_cap);
        let delay = client::backoff_delay(attempt, base, cap, &mut rand::rng());
        let delay = delay.max(floor.unwrap_or_default());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn subscribe(ws: &mut Ws, symbols: &[String]) -> Result<(), tungstenite::Error> {
    for chunk in symbols.chunks(client::SUBSCRIBE_CHUNK) {
        let req = serde_json::json!({"op": "subscribe", "symbols": chunk}).to_string();
        ws.send(Message::text(req)).await?;
    }
    Ok(())
}

/// Resolves when the storm starts; never without one.
async fn storm_started(storm: Option<&CancellationToken>) {
    match storm {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// One client: connects, subscribes, reads until stopped; returns the ticks
/// it received.
async fn run_client(
    start_delay: Duration,
    target: Target,
    symbols: Vec<String>,
    stall: Arc<AtomicBool>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    mut storm: Option<CancellationToken>,
) -> anyhow::Result<u64> {
    tokio::select! {
        _ = stop.cancelled() => return Ok(0),
        _ = tokio::time::sleep(start_delay) => {}
    }
    let Some(mut ws) = connect(&target, &shared, &stop, false).await else {
        return Ok(0);
    };
    subscribe(&mut ws, &symbols).await?;
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut mine = 0u64;
    // Storm: when this client closed its connection, until its first tick
    // frame after reconnecting.
    let mut closed_at: Option<Instant> = None;
    loop {
        if stall.load(Ordering::Relaxed) {
            // A stalled client: keep the socket, read nothing.
            stop.cancelled().await;
            return Ok(mine);
        }
        let msg = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(mine),
            _ = storm_started(storm.as_ref()) => None,
            m = ws.next() => match m { Some(m) => Some(m?), None => return Ok(mine) },
        };
        let Some(msg) = msg else {
            // The storm: close now, reconnect at once (retrying), resubscribe.
            storm = None;
            let closed = Instant::now();
            let _ = tokio::time::timeout(client::CLOSE_TIMEOUT, ws.close(None)).await;
            ws = match connect(&target, &shared, &stop, true).await {
                Some(ws) => ws,
                None => return Ok(mine),
            };
            subscribe(&mut ws, &symbols).await?;
            shared.storm.reconnected.fetch_add(1, Ordering::Relaxed);
            closed_at = Some(closed);
            continue;
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
                if let Some(at) = closed_at.take() {
                    let took = at.elapsed().as_micros() as u64;
                    shared.storm.times.lock().unwrap().0.saturating_record(took);
                    shared.storm.back.fetch_add(1, Ordering::Relaxed);
                }
                if shared.measuring.load(Ordering::Relaxed) {
                    let mut w = shared.window.lock().unwrap();
                    let mut s = shared.second.lock().unwrap();
                    for t in frame.ticks.iter().filter(|t| !t.snapshot) {
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

/// The feed `--produce-brokers` drives: `tickfan produce` in this process.
struct Producer {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Producer {
    fn start(c: &Config, brokers: &str) -> anyhow::Result<Producer> {
        let mut kafka: crate::config::KafkaConfig = crate::config::defaults();
        kafka.brokers = brokers.to_owned();
        kafka.topics = vec![c.produce_topic.clone()];
        kafka.validate()?;
        let mut feed: crate::feed::Config = crate::config::defaults();
        feed.symbols = c.symbols.clone();
        feed.rate = c.produce_rate;
        feed.zipf = 0.0;
        feed.tick_bytes = c.produce_tick_bytes;
        feed.validate()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::feed::run(
            kafka,
            feed,
            Default::default(),
            stop.clone(),
        ));
        Ok(Producer {
            task,
            _stop: stop.drop_guard(),
        })
    }

    /// Stops the feed (it flushes what is in flight); what it was.
    async fn stop(self, c: &Config) -> anyhow::Result<serde_json::Value> {
        let Producer { task, _stop } = self;
        drop(_stop);
        task.await??;
        Ok(serde_json::json!({
            "topic": c.produce_topic, "rate": c.produce_rate,
            "tick_bytes": c.produce_tick_bytes,
        }))
    }
}

/// The clients of one process: all of them, or one worker's share.
struct Load {
    shared: Arc<Shared>,
    /// This share's slow clients.
    stalls: Vec<Arc<AtomicBool>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
    stop: CancellationToken,
    storm: CancellationToken,
    scenario: Scenario,
}

impl Load {
    /// Starts the clients of `slot` (they connect in the background).
    async fn start(plan: &Plan, slot: Slot) -> Load {
        let mut rng = SmallRng::seed_from_u64(7);
        let subs = subscriptions(plan, &mut rng);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            window: Mutex::new(histogram()),
            second: Mutex::new(histogram()),
            measuring: AtomicBool::new(false),
            storm: Storm::default(),
            last_error: Mutex::new(None),
        });
        let (stop, storm) = (CancellationToken::new(), CancellationToken::new());
        let mut load = Load {
            shared,
            stalls: Vec::new(),
            tasks: Vec::with_capacity(plan.clients / slot.of + 1),
            stop,
            storm,
            scenario: plan.scenario,
        };
        let mine = subs.into_iter().enumerate().skip(slot.index);
        for (n, (i, symbols)) in mine.step_by(slot.of).enumerate() {
            let stall = Arc::new(AtomicBool::new(false));
            if i < plan.slow_clients {
                load.stalls.push(stall.clone());
            }
            let target = Target {
                url: plan.urls[i % plan.urls.len()].clone(),
                from: (plan.source_addresses > 1).then(|| {
                    IpAddr::from([127, 0, 0, 1 + (i % plan.source_addresses as usize) as u8])
                }),
            };
            let storm = (plan.scenario == Scenario::Storm).then(|| load.storm.clone());
            load.tasks.push(tokio::spawn(run_client(
                plan.start_delay(i),
                target,
                symbols,
                stall,
                load.shared.clone(),
                load.stop.clone(),
                storm,
            )));
            if n % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        load
    }

    async fn handle(&mut self, request: Request) -> Report {
        let s = &self.shared;
        match request {
            Request::Status => Report {
                connected: s.counters.connected.load(Ordering::Relaxed),
                last_error: s.last_error.lock().unwrap().clone(),
                ..Report::default()
            },
            Request::Measure { epoch_us } => {
                for stall in &self.stalls {
                    stall.store(true, Ordering::Relaxed);
                }
                s.storm.epoch_us.store(epoch_us, Ordering::Relaxed);
                let totals = s.counters.totals();
                s.measuring.store(true, Ordering::Relaxed);
                self.storm.cancel();
                Report {
                    totals,
                    ..Report::default()
                }
            }
            Request::Sample => Report {
                totals: s.counters.totals(),
                latency: Some(Hist(std::mem::replace(
                    &mut *s.second.lock().unwrap(),
                    histogram(),
                ))),
                storm: self.storm_report(),
                ..Report::default()
            },
            Request::End => {
                s.measuring.store(false, Ordering::Relaxed);
                Report {
                    totals: s.counters.totals(),
                    latency: Some(Hist(s.window.lock().unwrap().clone())),
                    storm: self.storm_report(),
                    ..Report::default()
                }
            }
            Request::Stop => {
                self.stop.cancel();
                let mut range = TickRange::default();
                for t in std::mem::take(&mut self.tasks) {
                    let n = t.await.ok().and_then(|r| r.ok()).unwrap_or(0);
                    range.min = Some(range.min.map_or(n, |m| m.min(n)));
                    range.max = Some(range.max.map_or(n, |m| m.max(n)));
                }
                Report {
                    per_client: Some(range),
                    ..Report::default()
                }
            }
        }
    }

    fn storm_report(&self) -> Option<StormReport> {
        (self.scenario == Scenario::Storm).then(|| self.shared.storm.report())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One worker process and its pipes; killed when dropped.
struct Child {
    slot: Slot,
    process: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: tokio::task::JoinHandle<()>,
}

impl Child {
    fn spawn(exe: &std::path::Path, slot: Slot) -> anyhow::Result<Child> {
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("loadgen")
            .arg("--worker")
            .arg(format!("{}/{}", slot.index, slot.of))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Everything a worker needs comes in the plan on stdin.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TICKFAN_LOADGEN_") {
                command.env_remove(key);
            }
        }
        let mut process = command
            .spawn()
            .with_context(|| format!("start loadgen worker {}", exe.display()))?;
        let stdin = process.stdin.take().expect("piped");
        let stdout = BufReader::new(process.stdout.take().expect("piped")).lines();
        let mut stderr = BufReader::new(process.stderr.take().expect("piped")).lines();
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        let stderr_done = tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "loadgen worker {}/{}: {line}",
                    slot.index,
                    slot.of
                );
                let mut tail = tail.lock().unwrap();
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Ok(Child {
            slot,
            process,
            stdin,
            stdout,
            stderr_tail,
            stderr_done,
        })
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let sent = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await
        };
        sent.await.context("write to its stdin")
    }

    async fn receive(&mut self) -> anyhow::Result<Report> {
        let line = tokio::time::timeout(REPLY_DEADLINE, self.stdout.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {REPLY_DEADLINE:?}"))??
            .ok_or_else(|| anyhow::anyhow!("it closed its stdout (exited?)"))?;
        serde_json::from_str(&line).with_context(|| format!("bad answer {line:?}"))
    }

    /// The error for a worker that failed: what went wrong, how it exited,
    /// and the end of its stderr.
    async fn failure(&mut self, what: anyhow::Error) -> anyhow::Error {
        let exited = tokio::time::timeout(Duration::from_secs(2), self.process.wait());
        let status = match exited.await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => "still running".to_owned(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.stderr_done).await;
        let tail = Vec::from(self.stderr_tail.lock().unwrap().clone()).join("\n");
        anyhow::anyhow!(
            "loadgen worker {}/{} failed: {what:#} ({status}); the end of its stderr:\n{tail}",
            self.slot.index,
            self.slot.of
        )
    }
}

/// Where the clients run. One measurement loop drives either.
enum Workers {
    /// In this process.
    Local(Load),
    /// In worker processes, over stdin/stdout.
    Children(Vec<Child>),
}

impl Workers {
    async fn start(c: &Config, plan: &Plan) -> anyhow::Result<Workers> {
        if c.processes <= 1 {
            let all = Slot { index: 0, of: 1 };
            return Ok(Workers::Local(Load::start(plan, all).await));
        }
        let exe = match &c.worker_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().context("find this binary to start workers")?,
        };
        let mut plan_line = serde_json::to_string(plan)?;
        plan_line.push('\n');
        let mut children = Vec::with_capacity(c.processes);
        for index in 0..c.processes {
            let slot = Slot {
                index,
                of: c.processes,
            };
            let mut child = Child::spawn(&exe, slot)?;
            if let Err(e) = child.send(&plan_line).await {
                return Err(child.failure(e).await);
            }
            children.push(child);
        }
        Ok(Workers::Children(children))
    }

    /// Asks every worker and merges their answers.
    async fn ask(&mut self, request: Request) -> anyhow::Result<Report> {
        match self {
            Workers::Local(load) => Ok(load.handle(request).await),
            Workers::Children(children) => {
                let mut line = serde_json::to_string(&request)?;
                line.push('\n');
                // Everyone first, so they act at (nearly) the same moment.
                for child in children.iter_mut() {
                    if let Err(e) = child.send(&line).await {
                        return Err(child.failure(e).await);
                    }
                }
                let mut merged = Report::default();
                for child in children.iter_mut() {
                    match child.receive().await {
                        Ok(report) => merged = merged.merge(report),
                        Err(e) => return Err(child.failure(e).await),
                    }
                }
                Ok(merged)
            }
        }
    }

    /// Lets stopped workers exit (they do after [`Request::Stop`]); any still
    /// running after a moment are killed on drop.
    async fn finish(self) {
        if let Workers::Children(children) = self {
            for mut child in children {
                let _ = tokio::time::timeout(Duration::from_secs(5), child.process.wait()).await;
            }
        }
    }
}

/// A worker process: the plan, then requests, on stdin; answers on stdout.
/// Ends after [`Request::Stop`], or when stdin closes (the parent is gone).
async fn worker(slot: Slot) -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut output = tokio::io::stdout();
    let Some(line) = input.next_line().await? else {
        return Ok(());
    };
    let plan: Plan = serde_json::from_str(&line).context("bad plan on stdin")?;
    let mut load = Load::start(&plan, slot).await;
    while let Some(line) = input.next_line().await? {
        let request: Request =
            serde_json::from_str(&line).with_context(|| format!("bad request {line:?}"))?;
        let mut answer = serde_json::to_vec(&load.handle(request).await)?;
        answer.push(b'\n');
        output.write_all(&answer).await?;
        output.flush().await?;
        if matches!(request, Request::Stop) {
            break;
        }
    }
    Ok(())
}

/// Runs the load and prints the summary; returns it as JSON. As a worker
/// (`--worker`), serves its parent instead and returns `null`.
pub async fn run(c: Config, shutdown: CancellationToken) -> anyhow::Result<serde_json::Value> {
    if let Some(slot) = c.worker {
        // A worker ignores `shutdown`: Ctrl-C reaches the whole process
        // group, and the parent, which stops on it, still needs the workers'
        // final counts. They end on its `Stop`, or when it is gone.
        worker(slot).await?;
        return Ok(serde_json::Value::Null);
    }
    anyhow::ensure!(
        !c.url.is_empty() && c.clients > 0,
        "need --url and --clients"
    );
    anyhow::ensure!(
        (1..=c.clients).contains(&c.processes),
        "--processes must be between 1 and --clients"
    );
    anyhow::ensure!(
        c.ramp_rate >= 0.0 && c.ramp_rate.is_finite(),
        "--ramp-rate must be >= 0"
    );
    let symbols: Vec<String> = c.symbols.resolve()?.iter().map(|s| s.to_string()).collect();
    let slow_n = if c.scenario == Scenario::Slow {
        (c.clients as f64 * c.slow_fraction).round() as usize
    } else {
        0
    };
    let plan = Plan {
        urls: c.url.clone(),
        scenario: c.scenario,
        clients: c.clients,
        symbols,
        per_client: c.per_client,
        slow_clients: slow_n,
        source_addresses: c.source_addresses,
        ramp_rate: c.ramp_rate,
    };
    // Dropped on any early return: the driven feed stops with the run.
    let producer = match &c.produce_brokers {
        Some(brokers) => Some(Producer::start(&c, brokers)?),
        None => None,
    };
    let edge_before = c.edge_pid.and_then(proc_sample);
    let mut workers = Workers::start(&c, &plan).await?;
    let started = Instant::now();
    loop {
        let status = workers.ask(Request::Status).await?;
        if status.connected as usize >= c.clients {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < plan.connect_deadline(),
            "clients could not all connect: {} of {} in {:?} (last failure: {})",
            status.connected,
            c.clients,
            plan.connect_deadline(),
            status.last_error.as_deref().unwrap_or("none")
        );
        if shutdown.is_cancelled() {
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
    tokio::select! {
        _ = tokio::time::sleep(c.warmup) => {}
        _ = shutdown.cancelled() => {}
    }
    let edge_start = c.edge_pid.and_then(proc_sample);
    let epoch_us = now_micros();
    let base = workers.ask(Request::Measure { epoch_us }).await?.totals;
    let t0 = Instant::now();
    let mut series: Vec<(u64, u64, u64, u64)> = Vec::new(); // second, p50, p99, max (µs)
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = base;
    let mut last_storm = StormReport::default();
    let storm = c.scenario == Scenario::Storm;
    let mut all_back = !storm;
    let more = |t: Duration, all_back: bool| {
        t < c.duration || (!all_back && t < c.duration + CONNECT_DEADLINE)
    };
    while more(t0.elapsed(), all_back) && !shutdown.is_cancelled() {
        tick.tick().await;
        let sample = workers.ask(Request::Sample).await?;
        let now = sample.totals;
        let h = sample.latency.unwrap_or_default().0;
        let (p50, p99, max) = (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max());
        series.push((series.len() as u64 + 1, p50, p99, max));
        let mut line = format!(
            "loadgen: {:>4}s deliveries/s {:>9} frames/s {:>8} MB/s {:>6.2} gaps {:>6} latency p50 {:>7.2} ms p99 {:>7.2} ms",
            series.len(),
            now.ticks - last.ticks,
            now.frames - last.frames,
            (now.bytes - last.bytes) as f64 / 1e6,
            now.gaps - last.gaps,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
        );
        if let (true, Some(s)) = (storm, sample.storm) {
            let _ = write!(
                line,
                " storm: back {:>6}/{} admitted/s {:>6} rejected/s {:>6}",
                s.back,
                c.clients,
                s.admitted_total() - last_storm.admitted_total(),
                s.rejected_total() - last_storm.rejected_total(),
            );
            all_back = s.back as usize >= c.clients;
            last_storm = s;
        }
        println!("{line}");
        last = now;
    }
    let end = workers.ask(Request::End).await?;
    let secs = t0.elapsed().as_secs_f64();
    let edge_end = c.edge_pid.and_then(proc_sample);
    let stopped = workers.ask(Request::Stop).await?;
    let per_client = stopped.per_client.unwrap_or_default();
    workers.finish().await;
    let producer = match producer {
        Some(p) => p.stop(&c).await?,
        None => serde_json::Value::Null,
    };
    let h = end.latency.unwrap_or_default().0;
    let (base, end_storm, end) = (base, end.storm, end.totals);
    let delivered = end.ticks - base.ticks;
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
    let storm_summary = match end_storm {
        Some(s) if storm => {
            let t = &s.times.0;
            serde_json::json!({
                "reconnected": s.reconnected, "back": s.back,
                "rejections": s.rejected, "connect_errors": s.errors,
                "admitted_per_second": s.admitted,
                "max_admitted_per_second": s.admitted.iter().max().copied().unwrap_or(0),
                "all_back_seconds": (s.back as usize >= c.clients).then(|| t.max() as f64 / 1e6),
                "reconnect_ms": {
                    "p50": ms(t.value_at_quantile(0.5)), "p99": ms(t.value_at_quantile(0.99)),
                    "max": ms(t.max()),
                },
            })
        }
        _ => serde_json::Value::Null,
    };
    let summary = serde_json::json!({
        "scenario": c.scenario, "clients": c.clients, "processes": c.processes,
        "symbols": plan.symbols.len(),
        "slow_clients": slow_n, "seconds": secs,
        "deliveries_per_sec": delivered as f64 / secs,
        "frames_per_sec": (end.frames - base.frames) as f64 / secs,
        "bytes_per_sec": (end.bytes - base.bytes) as f64 / secs,
        "gap_frames": end.gaps - base.gaps,
        "latency_ms": {
            "p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
            "p99": ms(h.value_at_quantile(0.99)), "p99_9": ms(h.value_at_quantile(0.999)),
            "max": ms(h.max()), "samples": h.len(),
        },
        "per_client_ticks": { "min": per_client.min, "max": per_client.max },
        "storm": storm_summary,
        "producer": producer,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_slots_parse() {
        assert_eq!("1/3".parse(), Ok(Slot { index: 1, of: 3 }));
        for bad in ["3/3", "1", "a/2", "1/0", ""] {
            assert!(bad.parse::<Slot>().is_err(), "{bad}");
        }
    }

    /// What the workers send merges into what one process would have seen.
    #[test]
    fn reports_survive_the_wire_and_merge() {
        let report = |latencies: &[u64], admitted: Vec<u64>, status: u16, ticks: u64| {
            let mut latency = Hist::default();
            let mut times = Hist::default();
            for &v in latencies {
                latency.0.record(v).unwrap();
                times.0.record(v * 10).unwrap();
            }
            let report = Report {
                totals: Totals {
                    ticks,
                    frames: 1,
                    bytes: 10,
                    gaps: 0,
                },
                latency: Some(latency),
                storm: Some(StormReport {
                    reconnected: 1,
                    back: 1,
                    admitted,
                    rejected: BTreeMap::from([(status, 2)]),
                    errors: 0,
                    times,
                }),
                per_client: Some(TickRange {
                    min: Some(ticks),
                    max: Some(ticks),
                }),
                ..Report::default()
            };
            let line = serde_json::to_string(&report).unwrap();
            serde_json::from_str::<Report>(&line).unwrap()
        };
        let merged = Report::default()
            .merge(report(&[100, 200], vec![3, 1], 429, 7))
            .merge(report(&[300_000], vec![2], 503, 5));
        assert_eq!(merged.totals.ticks, 12);
        assert_eq!(merged.totals.bytes, 20);
        let latency = merged.latency.unwrap().0;
        assert_eq!(latency.len(), 3);
        assert!(latency.equivalent(latency.max(), 300_000));
        let storm = merged.storm.unwrap();
        assert_eq!(storm.admitted, [5, 1]);
        assert_eq!(storm.rejected, BTreeMap::from([(429, 2), (503, 2)]));
        assert_eq!((storm.reconnected, storm.back), (2, 2));
        assert_eq!(storm.times.0.len(), 3);
        let range = merged.per_client.unwrap();
        assert_eq!((range.min, range.max), (Some(5), Some(7)));
    }
}
