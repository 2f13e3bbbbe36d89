//! Test support: a broker (the embedded mock cluster, or the real one named by
//! `TICKFAN_TEST_BROKERS`), an edge spawned in-process on port 0, a WebSocket
//! client over a real socket, a tick producer, and condition waits with
//! deadlines.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    mocking::MockCluster,
    producer::{Producer, ThreadedProducer},
    ClientConfig,
};
use serde_json::{json, Value};
use tickfan::{
    codec::avro::TickCodec,
    config::{defaults, EdgeConfig, KafkaConfig},
    feed::{self, Counting},
    gateway,
    market::{Symbol, Tick},
};
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{
    tungstenite::{protocol::CloseFrame, Message},
    WebSocketStream,
};
use tokio_util::sync::CancellationToken;

/// Upper bound for any single wait in these tests. Generous: CI machines are
/// shared and slow; a passing run never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `cond` until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Kafka cluster a test runs against.
pub enum Broker {
    Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    Real(String),
}

impl Broker {
    /// The real broker if `TICKFAN_TEST_BROKERS` is set, else a fresh
    /// embedded mock cluster.
    pub fn start() -> Broker {
        match std::env::var("TICKFAN_TEST_BROKERS") {
            Ok(b) if !b.trim().is_empty() => Broker::Real(b),
            _ => Broker::Mock(MockCluster::new(1).expect("mock cluster")),
        }
    }

    /// The real broker named by `TICKFAN_TEST_BROKERS`, for the tests that
    /// need one (`tests/secure.rs`, `tests/real_kafka.rs`).
    pub fn real() -> Broker {
        match std::env::var("TICKFAN_TEST_BROKERS") {
            Ok(b) if !b.trim().is_empty() => Broker::Real(b),
            _ => panic!(
                "this test needs a real broker: scripts/kafka.sh up, then \
                 TICKFAN_TEST_BROKERS=127.0.0.1:9092 cargo test --test secure --test real_kafka"
            ),
        }
    }

    /// A fresh embedded mock cluster, whatever `TICKFAN_TEST_BROKERS` says
    /// (for tests that inject faults only the mock cluster can).
    pub fn mock() -> Broker {
        Broker::Mock(MockCluster::new(1).expect("mock cluster"))
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(m) => m.bootstrap_servers(),
            Broker::Real(b) => b.clone(),
        }
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client")
    }

    /// Creates a fresh topic with a unique name and returns the name.
    pub async fn topic(&self, partitions: i32) -> String {
        let name = format!("t-{}", rand::random::<u64>());
        self.create_topic(&name, partitions).await;
        name
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Broker::Mock(m) => m
                .create_topic(name, partitions, 1)
                .expect("mock create topic"),
            Broker::Real(b) => create_topic_on(b, name, partitions).await,
        }
    }

    pub async fn add_partitions(&self, name: &str, total: usize) {
        let res = self
            .admin()
            .create_partitions(&[NewPartitions::new(name, total)], &AdminOptions::new())
            .await
            .expect("create partitions");
        for r in res {
            r.expect("partitions added");
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, Broker::Real(_))
    }
}

/// An edge running in-process on an ephemeral port.
pub struct Edge {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Edge {
    pub async fn spawn(brokers: &str, topic: &str, tweak: impl FnOnce(&mut EdgeConfig)) -> Edge {
        let mut config: EdgeConfig = defaults();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.kafka = KafkaConfig::plain(brokers, topic);
        config.ingest.metadata_refresh = Duration::from_millis(500);
        config.gateway.drain_window = Duration::from_millis(200);
        config.gateway.shutdown_grace = Duration::from_secs(5);
        tweak(&mut config);
        let listener = gateway::bind(config.listen, &config.gateway).expect("bind");
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(tickfan::app::run_edge(config, listener, shutdown.clone()));
        Edge {
            addr,
            shutdown,
            task,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("json body")
    }

    /// Waits until /readyz answers 200.
    pub async fn ready(&self) {
        eventually("edge ready", || async {
            (self.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }

    /// A client subscribed to `symbols` once the edge consumes partition 0
    /// (of a one-partition topic): records produced from then on reach it.
    pub async fn subscribed_on_partition_0(&self, symbols: &[&str]) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.subscribe(symbols).await;
        eventually("partition 0 assigned", || async {
            (self.partitions().await == vec![0]).then_some(())
        })
        .await;
        c
    }

    /// Assigned partitions of `topic`, sorted.
    pub async fn partitions(&self) -> Vec<i32> {
        let v = self.json("/partitions").await;
        let mut p: Vec<i32> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["partition"].as_i64().unwrap() as i32)
            .collect();
        p.sort();
        p
    }

    /// Next offset the edge will process for `partition`, if assigned.
    pub async fn next_offset(&self, partition: i32) -> Option<i64> {
        let v = self.json("/partitions").await;
        v.as_array()
            .unwrap()
            .iter()
            .find(|x| x["partition"].as_i64() == Some(partition as i64))
            .map(|x| x["next_offset"].as_i64().unwrap())
    }

    /// One sample (without labels, or with the exact label text) from /metrics.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("metric {series} missing"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until a counter or gauge reads `want`: the ingest adds a
    /// batch's counts after it wakes the batch's writers, so a client may
    /// see a tick before /metrics counts it. A counter that goes past
    /// `want` never equals it, and fails the wait.
    pub async fn metric_reaches(&self, series: &str, want: f64) {
        let end = Instant::now() + DEADLINE;
        loop {
            let got = self.metric(series).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < end, "{series} is {got}, expected {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most [`DEADLINE`]) for the edge to end on its own, and
    /// returns what it returned.
    pub async fn finished(self) -> anyhow::Result<()> {
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the edge ends")
            .expect("the edge's task did not panic")
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("edge stops")
            .unwrap()
            .unwrap();
    }
}

/// Waits until `addr` answers `path` with 200.
async fn answers_200(addr: SocketAddr, path: &str) {
    eventually(&format!("edge answers {path}"), || async move {
        (TcpStream::connect(addr).await.is_ok() && http_get(addr, path).await.0 == 200)
            .then_some(())
    })
    .await;
}

/// One `/metrics` sample of the edge at `addr` (exact series text).
pub async fn metric_at(addr: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {series} missing"))
        .trim()
        .parse()
        .unwrap()
}

/// Minimal HTTP/1.1 GET over a real socket: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path).await
}

/// Minimal HTTP/1.1 request without a body: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.into()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// What a client saw, frame by frame.
#[derive(Debug, Clone)]
pub enum Frame {
    Tick {
        symbol: String,
        seq: i64,
        snapshot: bool,
        raw: Value,
    },
    Gap {
        symbol: String,
        from_seq: i64,
        to_seq: i64,
    },
    /// `{"type":"status","feed":...}`
    Status(String),
    /// `{"type":"error","code":"unknown_symbol",...}` without
    /// `retry_after_ms`: a notice that may come at any time after
    /// `subscribed` (not an answer, so [`Client::next_other`] skips it).
    Unknown(Value),
    Other(Value),
    Close(Option<u16>),
}

/// A WebSocket client over a real TCP socket.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    pub frames: Vec<Frame>,
    /// Every text message, as sent (to check numbers written as text).
    pub texts: Vec<String>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::connect_with_recv_buffer(addr, None).await
    }

    /// Connects with a small kernel receive buffer, so a client that stops
    /// reading backs up into the edge quickly.
    pub async fn connect_with_recv_buffer(addr: SocketAddr, recv_buffer: Option<u32>) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).unwrap();
        }
        let stream = socket.connect(addr).await.expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .expect("ws handshake");
        Client {
            ws,
            frames: Vec::new(),
            texts: Vec::new(),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// Wraps an already connected WebSocket.
    pub fn from_ws(ws: WebSocketStream<TcpStream>) -> Client {
        Client {
            ws,
            frames: Vec::new(),
            texts: Vec::new(),
        }
    }

    pub fn ws_mut(&mut self) -> &mut WebSocketStream<TcpStream> {
        &mut self.ws
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// Next frame (ticks frames expand to one `Frame::Tick` each, appended to
    /// `self.frames`); returns how many frames were added.
    pub async fn read(&mut self) -> usize {
        let before = self.frames.len();
        let msg = tokio::time::timeout(DEADLINE, self.ws.next())
            .await
            .expect("timed out waiting for a frame");
        match msg {
            None => self.frames.push(Frame::Close(None)),
            Some(Err(e)) => panic!("websocket error: {e}"),
            Some(Ok(Message::Close(c))) => self
                .frames
                .push(Frame::Close(c.map(|CloseFrame { code, .. }| code.into()))),
            Some(Ok(Message::Text(t))) => {
                self.texts.push(t.to_string());
                let v: Value = serde_json::from_str(&t).expect("edge sends JSON");
                match v["type"].as_str() {
                    Some("ticks") => {
                        let ticks = v["ticks"].as_array().expect("ticks array");
                        assert!(!ticks.is_empty(), "empty ticks frame");
                        for t in ticks {
                            self.frames.push(Frame::Tick {
                                symbol: t["symbol"].as_str().unwrap().into(),
                                seq: t["seq"].as_i64().unwrap(),
                                snapshot: t["snapshot"].as_bool().unwrap_or(false),
                                raw: t.clone(),
                            });
                        }
                    }
                    Some("gap") => self.frames.push(Frame::Gap {
                        symbol: v["symbol"].as_str().unwrap().into(),
                        from_seq: v["from_seq"].as_i64().unwrap(),
                        to_seq: v["to_seq"].as_i64().unwrap(),
                    }),
                    Some("status") => self
                        .frames
                        .push(Frame::Status(v["feed"].as_str().unwrap().into())),
                    Some("error")
                        if v["code"] == "unknown_symbol" && v.get("retry_after_ms").is_none() =>
                    {
                        self.frames.push(Frame::Unknown(v))
                    }
                    _ => self.frames.push(Frame::Other(v)),
                }
            }
            Some(Ok(Message::Binary(_))) => panic!("edge sent a binary frame"),
            Some(Ok(_)) => {}
        }
        self.frames.len() - before
    }

    /// Reads until `pred` holds over everything received.
    pub async fn read_until(&mut self, what: &str, pred: impl Fn(&[Frame]) -> bool) {
        let end = Instant::now() + DEADLINE;
        while !pred(&self.frames) {
            assert!(
                Instant::now() < end,
                "timed out waiting for: {what}; got {:?}",
                self.frames.last()
            );
            self.read().await;
        }
    }

    /// Every tick object received (of `symbol`, or of all with `None`), as sent.
    pub fn tick_values(&self, symbol: Option<&str>) -> Vec<&Value> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Tick { symbol: s, raw, .. } if symbol.is_none_or(|w| w == s) => Some(raw),
                _ => None,
            })
            .collect()
    }

    /// Feed statuses received, in order.
    pub fn statuses(&self) -> Vec<String> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Status(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// Reads the next control frame (not a tick, gap, status or
    /// `unknown_symbol` notice).
    pub async fn next_other(&mut self) -> Value {
        let start = self.frames.len();
        loop {
            let seen = self.frames.len();
            self.read().await;
            for f in &self.frames[seen.max(start)..] {
                match f {
                    Frame::Other(v) => return v.clone(),
                    Frame::Close(c) => panic!("closed ({c:?}) while waiting for a control frame"),
                    _ => {}
                }
            }
        }
    }

    pub async fn subscribe(&mut self, symbols: &[&str]) -> Value {
        self.send(json!({"op":"subscribe","symbols":symbols})).await;
        let v = self.next_other().await;
        assert_eq!(v["type"], "subscribed", "{v}");
        v
    }

    /// Highest seq received per symbol.
    pub fn last_seq(&self, symbol: &str) -> Option<i64> {
        self.ticks(symbol).last().map(|t| t.0)
    }

    /// (seq, snapshot) of every tick of `symbol`, in arrival order.
    pub fn ticks(&self, symbol: &str) -> Vec<(i64, bool)> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Tick {
                    symbol: s,
                    seq,
                    snapshot,
                    ..
                } if s == symbol => Some((*seq, *snapshot)),
                _ => None,
            })
            .collect()
    }

    pub fn gaps(&self, symbol: &str) -> Vec<(i64, i64)> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Gap {
                    symbol: s,
                    from_seq,
                    to_seq,
                } if s == symbol => Some((*from_seq, *to_seq)),
                _ => None,
            })
            .collect()
    }

    pub fn symbols_seen(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .frames
            .iter()
            .filter_map(|f| match f {
                Frame::Tick { symbol, .. } => Some(symbol.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Checks the delivery promise for one symbol: seqs strictly increasing, and
/// every hole announced by a gap frame that arrived before the tick after it.
/// Returns the number of ticks announced as dropped.
pub fn assert_contiguous_or_announced(frames: &[Frame], symbol: &str) -> i64 {
    let mut last: Option<i64> = None;
    let mut announced_to: Option<i64> = None;
    let mut dropped = 0;
    for f in frames {
        match f {
            Frame::Gap {
                symbol: s,
                from_seq,
                to_seq,
            } if s == symbol => {
                assert!(from_seq <= to_seq, "gap {from_seq}..{to_seq}");
                if let Some(l) = last {
                    assert!(
                        *from_seq > l,
                        "gap {from_seq}..{to_seq} covers already delivered seq {l}"
                    );
                }
                announced_to = Some(*to_seq);
                dropped += to_seq - from_seq + 1;
            }
            Frame::Tick { symbol: s, seq, .. } if s == symbol => {
                if let Some(l) = last {
                    assert!(
                        *seq > l,
                        "{symbol}: seq {seq} after {l} (duplicate or reorder)"
                    );
                    if *seq != l + 1 {
                        assert!(
                            announced_to.is_some_and(|to| to + 1 == *seq),
                            "{symbol}: hole {}..{} not announced by a gap frame",
                            l + 1,
                            seq - 1
                        );
                    }
                }
                last = Some(*seq);
                announced_to = None;
            }
            _ => {}
        }
    }
    dropped
}

/// Writes ticks (and raw records) to a topic, keyed by symbol.
pub struct Feed {
    pub producer: std::sync::Arc<ThreadedProducer<Counting>>,
    pub topic: String,
    pub codec: TickCodec,
    /// Delivery reports and client errors, as `tickfan produce` reports them.
    pub counts: std::sync::Arc<feed::DeliveryCounts>,
    seqs: BTreeMap<String, i64>,
}

impl Feed {
    pub fn new(brokers: &str, topic: &str) -> Feed {
        let kafka = KafkaConfig::plain(brokers, topic);
        let (producer, counts) = feed::producer(&kafka, 1).expect("producer");
        Feed {
            producer: std::sync::Arc::new(producer),
            topic: topic.into(),
            codec: TickCodec::new(usize::MAX),
            counts,
            seqs: BTreeMap::new(),
        }
    }

    /// Sends the next `n` ticks of `symbol` (seq continues per symbol).
    pub async fn ticks(&mut self, symbol: &str, n: usize) -> i64 {
        let mut seq = 0;
        for _ in 0..n {
            let s = self.seqs.entry(symbol.into()).or_insert(0);
            *s += 1;
            seq = *s;
            let value = self.codec.encode(&tick(symbol, seq));
            feed::send(&self.producer, &self.topic, symbol, &value, None)
                .await
                .unwrap();
        }
        seq
    }

    /// Sends an arbitrary value keyed by `symbol`.
    pub async fn raw(&mut self, symbol: &str, value: &[u8]) {
        feed::send(&self.producer, &self.topic, symbol, value, None)
            .await
            .unwrap();
    }

    /// Waits until everything sent is acknowledged.
    pub async fn flush(&self) {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("flush");
    }
}

pub fn tick(symbol: &str, seq: i64) -> Tick {
    Tick {
        symbol: Symbol::parse(symbol).unwrap(),
        price: 100.0 + seq as f64 / 100.0,
        size: 100.0,
        bid: Some(99.5),
        ask: Some(100.5),
        venue: Some("XTST".into()),
        ts: feed::now_micros(),
        seq,
        attrs: BTreeMap::new(),
    }
}

/// Picks `n` symbols that live in `n` different partitions of a topic with
/// `partitions` partitions, from a prefix.
pub fn distinct_partition_symbols(prefix: &str, n: usize, partitions: i32) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> = Vec::new();
    for i in 0.. {
        let s = format!("{prefix}{i}");
        let p = tickfan::partition::partition_for(s.as_bytes(), partitions);
        if out.iter().all(|(_, q)| *q != p) {
            out.push((s, p));
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// A Kafka broker of the test's own (`scripts/kafka.sh` with a private home
/// and port), so a test can kill and restart it without disturbing others.
/// Only where real Kafka is available (`TICKFAN_TEST_BROKERS` set).
pub struct PrivateKafka {
    pub port: u16,
    home: std::path::PathBuf,
}

impl PrivateKafka {
    /// A stopped broker definition on `port`.
    pub fn new(port: u16) -> PrivateKafka {
        let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kafka-{port}"));
        let _ = std::fs::remove_dir_all(&home);
        PrivateKafka { port, home }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
            .args(args)
            .env("TICKFAN_KAFKA_HOME", &self.home)
            .env("TICKFAN_KAFKA_PORT", self.port.to_string())
            .output()
            .expect("run scripts/kafka.sh")
    }

    /// Starts (or restarts) the broker and waits until it answers.
    pub async fn up(&self) {
        let this = PrivateKafka {
            port: self.port,
            home: self.home.clone(),
        };
        let out = tokio::task::spawn_blocking(move || {
            let out = this.script(&["up"]);
            std::mem::forget(this); // not a second owner: don't run Drop
            out
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "kafka.sh up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kill -9 the broker process.
    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.home.join("kafka.pid")).expect("pid file");
        let status = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = self.script(&["down", "--wipe"]);
    }
}

/// Creates a topic through an admin client on `brokers`.
pub async fn create_topic_on(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let res = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic");
    for r in res {
        r.expect("topic created");
    }
}

/// An edge as a child process of the `tickfan` binary (for crashes and
/// signals); killed when dropped.
/// Edge settings admitting `rate` new connections per second (burst `burst`)
/// in all, with the per-IP limit out of the way (test clients share a few
/// loopback addresses).
pub fn global_admission_only(rate: u32, burst: u32) -> impl FnOnce(&mut EdgeConfig) {
    move |c| {
        c.admission.connect_rate = rate;
        c.admission.connect_burst = burst;
        c.admission.connect_rate_per_ip = 10_000;
        c.admission.connect_burst_per_ip = 10_000;
    }
}

/// Starts `tickfan demo ARGS` on a free loopback port (stdout as given)
/// and waits until it answers `/readyz`; killed when dropped.
pub async fn spawn_demo(
    args: &[&str],
    stdout: std::process::Stdio,
) -> (tokio::process::Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickfan"))
        .arg("demo")
        .args(args)
        .args(["--listen", &addr.to_string()])
        .stdout(stdout)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tickfan demo");
    eventually("the demo answers /readyz", || async {
        let ok = tokio::net::TcpStream::connect(addr).await.is_ok()
            && http_get(addr, "/readyz").await.0 == 200;
        ok.then_some(())
    })
    .await;
    (demo, addr)
}

pub struct EdgeProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl EdgeProcess {
    /// Starts `tickfan edge` on a free port with `extra` flags and waits
    /// until it is ready.
    pub async fn spawn(brokers: &str, topic: &str, extra: &[&str]) -> EdgeProcess {
        EdgeProcess::spawn_env(brokers, topic, extra, &[]).await
    }

    /// [`EdgeProcess::spawn`] with extra environment variables.
    pub async fn spawn_env(
        brokers: &str,
        topic: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> EdgeProcess {
        let p = EdgeProcess::start(brokers, topic, extra, envs);
        answers_200(p.addr, "/readyz").await;
        p
    }

    /// An edge that may never be ready (Kafka unreachable or refusing it):
    /// waits until it answers `/healthz`.
    pub async fn spawn_unready(
        brokers: &str,
        topic: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> EdgeProcess {
        let p = EdgeProcess::start(brokers, topic, extra, envs);
        answers_200(p.addr, "/healthz").await;
        p
    }

    /// The edge's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("edge-{}.log", self.addr.port()))
    }

    fn start(brokers: &str, topic: &str, extra: &[&str], envs: &[(&str, &str)]) -> EdgeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("edge-{port}.log")),
        )
        .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickfan"))
            .args([
                "edge",
                "--listen",
                &addr.to_string(),
                "--brokers",
                brokers,
                "--topic",
                topic,
            ])
            .args(extra)
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tickfan edge");
        EdgeProcess { child, addr }
    }

    /// The edge's WebSocket URL.
    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Sends a signal (`-TERM`, `-KILL`, ...) to the edge.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
}

// ---- steady feeds and readers shared by tests/faults.rs and tests/real_kafka.rs

/// Produces ticks of `symbols` round-robin at about `rate` per second until
/// cancelled; returns the last seq per symbol once everything is delivered.
pub fn steady_feed(
    brokers: String,
    topic: String,
    symbols: Vec<String>,
    rate: u64,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<BTreeMap<String, i64>> {
    let sent = Arc::new(AtomicU64::new(0));
    steady(Feed::new(&brokers, &topic), symbols, rate, sent, stop)
}

/// As [`steady_feed`], counting the ticks sent in `sent`.
pub fn steady(
    mut feed: Feed,
    symbols: Vec<String>,
    rate: u64,
    sent: Arc<AtomicU64>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<BTreeMap<String, i64>> {
    tokio::spawn(async move {
        let mut last = BTreeMap::new();
        let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mut i = 0;
        while !stop.is_cancelled() {
            pace.tick().await;
            let s = &symbols[i % symbols.len()];
            last.insert(s.clone(), feed.ticks(s, 1).await);
            sent.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
        feed.flush().await;
        last
    })
}

pub async fn read_to(client: &mut Client, last: &BTreeMap<String, i64>) {
    for (s, &seq) in last {
        let s2 = s.clone();
        client
            .read_until(&format!("{s} up to {seq}"), move |f| {
                f.iter().any(|x| matches!(x, Frame::Tick { symbol, seq: q, .. } if *symbol == s2 && *q == seq))
            })
            .await;
    }
}

/// The partitions, sorted and distinct, that hold `syms` in a topic of
/// `partitions` partitions.
pub fn partitions_of(syms: &[String], partitions: i32) -> Vec<i32> {
    let mut p: Vec<i32> = syms
        .iter()
        .map(|s| tickfan::partition::partition_for(s.as_bytes(), partitions))
        .collect();
    p.sort();
    p.dedup();
    p
}

/// A WebSocket handshake written by hand over a fresh socket (bound to
/// `from`, if given) for `path` (`/ws`, maybe with a query), with `headers`
/// (`Name: value\r\n` lines) added: the socket after the response head,
/// and the head, whatever its status.
pub async fn raw_handshake(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    path: &str,
    headers: &str,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    let mut s = socket.connect(addr).await.expect("tcp connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(DEADLINE, s.read_exact(&mut b))
            .await
            .expect("an answer")
            .unwrap();
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// The HS256 secret of [`jwt`]'s tokens (`--jwt-secret`).
pub const JWT_SECRET: &str = "test-only-secret-of-at-least-32-bytes!!";

/// A token signed with [`JWT_SECRET`], valid for 10 minutes, entitled to
/// `symbols` (exact names, `PREFIX*` or `*`).
pub fn jwt(symbols: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "trader-1", "exp": exp, "symbols": symbols}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}
