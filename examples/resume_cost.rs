//! The cost of a resume (docs/protocol.md, "Resume after a reconnect"):
//! a client that missed N ticks of a symbol resumes on an edge that holds
//! them in memory, and on one that must read them from Kafka. Prints one
//! JSON line per run: the wall time from the subscribe to the last replayed
//! tick, and the edge's CPU over that time (from /proc). Figures go to
//! BENCHMARKS.md, "Resume".
//!
//! `cargo run --release --example resume_cost -- --brokers 127.0.0.1:9092`
//! (a real broker; the release binary must be built). Not part of
//! `cargo test`: it measures.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    producer::Producer,
    ClientConfig,
};
use serde_json::{json, Value};
use tickfan::{codec::avro::TickCodec, feed, kafka::KafkaConfig, market::Tick};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The edge binary.
    #[arg(long, default_value = "target/release/tickfan")]
    edge: String,
    /// Ticks missed, comma-separated.
    #[arg(long, default_value = "1000,5000", value_delimiter = ',')]
    ticks: Vec<i64>,
    /// Records of other symbols in the partition per tick of the resumed
    /// one (what the reader from Kafka skips).
    #[arg(long, default_value_t = 9)]
    others: usize,
    /// Runs of each case.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

struct Edge {
    child: Child,
    port: u16,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn edge(a: &Args, topic: &str, extra: &[&str]) -> Edge {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&a.edge)
        .args(["edge", "--brokers", &a.brokers, "--topic", topic])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--resume-max-ticks", "100000"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the edge");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http_get(port, "/readyz").await.starts_with("HTTP/1.1 200");
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "edge not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Edge { child, port }
}

/// The answer to `GET path` (status line, headers and body), empty if
/// the edge does not answer.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

async fn connect(port: u16) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("connect")
        .0
}

/// Reads until a tick of `symbol` with `seq` arrives; returns the ticks of
/// `symbol` and the gap frames seen.
async fn read_to(ws: &mut Ws, symbol: &str, seq: i64) -> (usize, usize) {
    let (mut ticks, mut gaps) = (0, 0);
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("gap") => gaps += 1,
            Some("ticks") => {
                for t in v["ticks"].as_array().unwrap() {
                    if t["symbol"] == symbol {
                        ticks += 1;
                        if t["seq"].as_i64() == Some(seq) {
                            return (ticks, gaps);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .create()
        .unwrap();
    let codec = TickCodec::new(usize::MAX);
    for &n in &a.ticks {
        for run in 0..a.runs {
            for source in ["memory", "kafka"] {
                let topic = format!("resume-cost-{}-{n}-{run}-{source}", std::process::id());
                admin
                    .create_topics(
                        &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
                        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
                    )
                    .await
                    .unwrap();
                // The memory case: an edge that consumes the partition
                // (a watcher subscribed) before the ticks are written.
                let warm = if source == "memory" {
                    let e = edge(&a, &topic, &[]).await;
                    let mut w = connect(e.port).await;
                    w.send(Message::text(
                        json!({"op":"subscribe","symbols":["RSM"]}).to_string(),
                    ))
                    .await
                    .unwrap();
                    Some((e, w))
                } else {
                    None
                };
                if let Some((e, _)) = &warm {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !http_get(e.port, "/partitions")
                        .await
                        .contains("\"warming\":false")
                    {
                        assert!(Instant::now() < deadline, "partition not assigned");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let (producer, _) =
                    feed::producer(&KafkaConfig::plain(&a.brokers, &topic), 5).unwrap();
                let mut first_ts = 0;
                for seq in 1..=n + 1 {
                    let tick = Tick {
                        seq,
                        ts: feed::now_micros(),
                        ..feed::Generator::new(
                            vec![tickfan::market::Symbol::parse("RSM").unwrap()],
                            0.0,
                            1,
                        )
                        .next_tick(0)
                    };
                    if seq == 1 {
                        first_ts = tick.ts;
                    }
                    feed::send(&producer, &topic, "RSM", &codec.encode(&tick), None)
                        .await
                        .unwrap();
                    for o in 0..a.others {
                        let sym = format!("OTH{o}");
                        let other = Tick {
                            symbol: tickfan::market::Symbol::parse(&sym).unwrap(),
                            seq,
                            ..tick.clone()
                        };
                        feed::send(&producer, &topic, &sym, &codec.encode(&other), None)
                            .await
                            .unwrap();
                    }
                }
                producer.flush(Duration::from_secs(30)).unwrap();
                let e = match warm {
                    Some((e, mut w)) => {
                        read_to(&mut w, "RSM", n + 1).await;
                        e
                    }
                    None => edge(&a, &topic, &[]).await,
                };
                let mut c = connect(e.port).await;
                let pid = e.child.id();
                let cpu0 = cpu_seconds(pid);
                let t0 = Instant::now();
                c.send(Message::text(
                    json!({"op":"subscribe","symbols":["RSM"],
                           "resume":{"RSM":{"seq":1,"ts":first_ts}}})
                    .to_string(),
                ))
                .await
                .unwrap();
                let (got, gaps) = read_to(&mut c, "RSM", n + 1).await;
                let wall = t0.elapsed();
                let cpu = cpu_seconds(pid) - cpu0;
                println!(
                    "{}",
                    json!({"source": source, "ticks": n, "records_in_partition": (n + 1) * (a.others as i64 + 1),
                           "run": run, "ticks_received": got, "gaps": gaps,
                           "wall_ms": wall.as_secs_f64() * 1e3, "edge_cpu_ms": cpu * 1e3})
                );
                drop(e);
                let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
            }
        }
    }
}
