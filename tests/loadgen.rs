//! `tickfan loadgen` against a real edge: it connects its clients, counts
//! what they receive, and reports latency from the ticks' own timestamps.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tickfan::{
    config::{defaults, EdgeConfig},
    loadgen::{self, Mode, Scenario},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SYMBOLS: [&str; 4] = ["LG0", "LG1", "LG2", "LG3"];

/// Ticks of every symbol in [`SYMBOLS`] every 2 ms until cancelled; the task
/// returns how many it sent.
fn feed(broker: &Broker, topic: &str) -> (CancellationToken, JoinHandle<u64>) {
    let stop = CancellationToken::new();
    let (brokers, topic, stopped) = (broker.bootstrap(), topic.to_owned(), stop.clone());
    let feeding = tokio::spawn(async move {
        let mut feed = Feed::new(&brokers, &topic);
        let mut pace = tokio::time::interval(Duration::from_millis(2));
        let mut n = 0u64;
        while !stopped.is_cancelled() {
            pace.tick().await;
            for s in SYMBOLS {
                feed.ticks(s, 1).await;
                n += 1;
            }
        }
        feed.flush().await;
        n
    });
    (stop, feeding)
}

/// 20 clients on `edge`, two of [`SYMBOLS`] each, short warm-up and window.
fn config(edge: &Edge) -> loadgen::Config {
    let mut config: loadgen::Config = defaults();
    config.url = vec![format!("ws://{}/ws", edge.addr)];
    config.clients = 20;
    config.symbols = SYMBOLS.join(",").parse().unwrap();
    config.per_client = 2;
    config.warmup = Duration::from_secs(1);
    config.duration = Duration::from_secs(3);
    config
}

/// A mock (or `TICKFAN_TEST_BROKERS`) broker, a 2-partition topic and a ready
/// edge on it, with `tweak` applied to the edge's settings.
async fn ready_edge(tweak: impl FnOnce(&mut EdgeConfig)) -> (Broker, String, Edge) {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, tweak).await;
    edge.ready().await;
    (broker, topic, edge)
}

/// Workers are the `tickfan` binary (the test binary is `current_exe`).
fn two_processes(config: &mut loadgen::Config) {
    config.processes = 2;
    config.worker_exe = Some(env!("CARGO_BIN_EXE_tickfan").into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_measures_deliveries_latency_and_stalls() {
    let (broker, topic, edge) = ready_edge(|c| {
        c.gateway.outbox_capacity = 64;
        c.gateway.socket_send_buffer = 4096;
    })
    .await;
    let (stop, feeding) = feed(&broker, &topic);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut config = config(&edge);
    config.scenario = Scenario::Slow;
    config.slow_fraction = 0.25;
    config.source_addresses = 3;
    config.edge_pid = Some(std::process::id());
    config.json = Some(dir.join("loadgen-summary.json"));
    config.plot = Some(dir.join("loadgen-latency.svg"));
    let summary = loadgen::run(config, CancellationToken::new())
        .await
        .unwrap();
    stop.cancel();
    feeding.await.unwrap();

    assert_eq!(summary["clients"], 20);
    assert_eq!(summary["slow_clients"], 5);
    assert!(
        summary["deliveries_per_sec"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(summary["frames_per_sec"].as_f64().unwrap() > 0.0);
    let lat = &summary["latency_ms"];
    assert!(lat["samples"].as_u64().unwrap() > 0);
    let (p50, p99, max) = (
        lat["p50"].as_f64().unwrap(),
        lat["p99"].as_f64().unwrap(),
        lat["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
    // The stalled clients got less than the busiest reader.
    let per = &summary["per_client_ticks"];
    assert!(per["min"].as_u64().unwrap() < per["max"].as_u64().unwrap());
    // Edge cost read from /proc (here the test process itself hosts the edge).
    assert!(summary["edge"]["cpu_seconds"].as_f64().is_some());
    assert!(summary["edge"]["rss_kib"].as_u64().unwrap() > 0);
    // The clients' own CPU (their threads in this process).
    assert_clients_cpu(&summary);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("loadgen-summary.json")).unwrap()).unwrap();
    assert_eq!(written["scenario"], "slow");
    assert_eq!(
        written["latency_ms"]["samples"],
        summary["latency_ms"]["samples"]
    );
    let svg = std::fs::read_to_string(dir.join("loadgen-latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    edge.stop().await;
}

/// `--produce-brokers`: loadgen runs the feed itself (no `Feed` here), at the
/// given rate and tick size, and stops it with the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_drives_the_feed_at_a_fixed_rate_and_tick_size() {
    let (broker, topic, edge) = ready_edge(|_| {}).await;
    let mut config = config(&edge);
    config.scenario = Scenario::Broadcast;
    config.produce_brokers = Some(broker.bootstrap());
    config.produce_topic = topic.clone();
    config.produce_rate = 400.0;
    config.produce_tick_bytes = 300;
    let summary = loadgen::run(config, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(summary["producer"]["rate"], 400.0);
    assert_eq!(summary["producer"]["tick_bytes"], 300);
    let deliveries = summary["deliveries_per_sec"].as_f64().unwrap();
    assert!(deliveries > 0.0, "{summary}");
    // Every client subscribed to every symbol and got ticks of the feed.
    assert!(
        summary["per_client_ticks"]["min"].as_u64().unwrap() > 0,
        "{summary}"
    );
    // The padded ticks reached the clients: a natural tick is under 200
    // bytes of JSON, a 300-byte Kafka value carries a ~230-byte pad.
    let bytes_per_tick = summary["bytes_per_sec"].as_f64().unwrap() / deliveries;
    assert!(
        bytes_per_tick > 250.0,
        "{bytes_per_tick} bytes per tick: {summary}"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_spreads_clients_over_worker_processes_and_merges_their_results() {
    let (broker, topic, edge) = ready_edge(|_| {}).await;
    let (stop, feeding) = feed(&broker, &topic);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut config = config(&edge);
    config.scenario = Scenario::Wall;
    config.duration = Duration::from_secs(2);
    config.source_addresses = 3;
    config.plot = Some(dir.join("loadgen-processes.svg"));
    two_processes(&mut config);
    let summary = loadgen::run(config, CancellationToken::new())
        .await
        .unwrap();
    stop.cancel();
    feeding.await.unwrap();

    assert_eq!(summary["clients"], 20);
    assert_eq!(summary["processes"], 2);
    assert_eq!(summary["scenario"], "wall");
    assert!(
        summary["deliveries_per_sec"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(summary["latency_ms"]["samples"].as_u64().unwrap() > 0);
    // Every client (in either process) connected and received ticks: each
    // subscribes to two symbols that all tick.
    let per = &summary["per_client_ticks"];
    assert!(per["min"].as_u64().unwrap() > 0, "{summary}");
    assert!(per["min"].as_u64() <= per["max"].as_u64());
    assert!(summary["storm"].is_null());
    let svg = std::fs::read_to_string(dir.join("loadgen-processes.svg")).unwrap();
    assert!(svg.contains("<polyline"));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_reconnects_every_client_within_the_admission_rate() {
    const RATE: u32 = 10;
    const BURST: u32 = 5;
    let (broker, topic, edge) = ready_edge(global_admission_only(RATE, BURST)).await;
    let (stop, feeding) = feed(&broker, &topic);
    let mut config = config(&edge);
    config.scenario = Scenario::Storm;
    // The window lasts until every client is back, however long that takes.
    config.duration = Duration::from_secs(1);
    two_processes(&mut config);
    let summary = loadgen::run(config, CancellationToken::new())
        .await
        .unwrap();
    stop.cancel();
    feeding.await.unwrap();

    assert_eq!(summary["scenario"], "storm");
    assert_eq!(summary["processes"], 2);
    let storm = &summary["storm"];
    assert_eq!(storm["reconnected"], 20, "{storm}");
    // ... and every client got ticks after resubscribing.
    assert_eq!(storm["back"], 20, "{storm}");
    assert!(storm["all_back_seconds"].as_f64().unwrap() > 0.0);
    let rejected: u64 = storm["rejections"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(
        rejected > 0,
        "20 clients at once over a burst of 5: {storm}"
    );
    assert!(storm["rejections"]["429"].as_u64().unwrap() > 0, "{storm}");
    let per_second: Vec<u64> = storm["admitted_per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(per_second.iter().sum::<u64>(), 20, "{storm}");
    let max = storm["max_admitted_per_second"].as_u64().unwrap();
    assert_eq!(Some(&max), per_second.iter().max());
    assert!(max <= (RATE + BURST) as u64, "{storm}");
    let t = &storm["reconnect_ms"];
    let (p50, p99, max) = (
        t["p50"].as_f64().unwrap(),
        t["p99"].as_f64().unwrap(),
        t["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{t}");
    assert!(summary["deliveries_per_sec"].as_f64().unwrap() > 0.0);
    assert!(summary["latency_ms"]["samples"].as_u64().unwrap() > 0);
    assert!(
        edge.metric("tickfan_admission_rejections_total{reason=\"global_rate\"}")
            .await
            > 0.0
    );
    edge.stop().await;
}

/// The clients' CPU in the window is in the summary, total and per delivery.
fn assert_clients_cpu(summary: &serde_json::Value) {
    let cpu = &summary["clients_cpu"];
    let seconds = cpu["cpu_seconds"]
        .as_f64()
        .expect("clients_cpu.cpu_seconds");
    let per = cpu["cpu_us_per_delivery"]
        .as_f64()
        .expect("clients_cpu.cpu_us_per_delivery");
    assert!(seconds >= 0.0 && per >= 0.0, "{summary}");
}

/// `--max-hz` (and `--mode`) ride on every subscribe, including the
/// resubscribe after the storm's reconnect: each client's symbols arrive at
/// most once a second instead of every 2 ms, the ticks say how many they
/// replaced, and the edge counts them. Clients in two processes, whose CPU
/// adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hz_reaches_the_edge_on_every_subscribe_and_clients_report_their_cpu() {
    const HZ: f64 = 1.0;
    let (broker, topic, edge) = ready_edge(|_| {}).await;
    let (stop, feeding) = feed(&broker, &topic);
    let mut config = config(&edge);
    config.scenario = Scenario::Storm;
    config.duration = Duration::from_secs(2);
    config.max_hz = Some(HZ);
    config.mode = Some(Mode::Latest);
    two_processes(&mut config);
    let per_client = config.per_client as f64;
    let started = Instant::now();
    let summary = loadgen::run(config, CancellationToken::new())
        .await
        .unwrap();
    // No client was connected longer than this.
    let lived = started.elapsed().as_secs_f64();
    stop.cancel();
    let fed = feeding.await.unwrap();

    assert_eq!(summary["storm"]["back"], 20, "{summary}");
    // Per symbol and connection (two: before and after the storm): the
    // snapshot, a first tick at once, then at most one a turn.
    let bound = per_client * 2.0 * (3.0 + HZ * lived);
    let most = summary["per_client_ticks"]["max"].as_u64().unwrap();
    assert!(
        (most as f64) <= bound,
        "{most} ticks to one client in {lived:.1} s at {HZ} Hz (the feed sent {fed}): {summary}"
    );
    assert!(summary["per_client_ticks"]["min"].as_u64().unwrap() > 0);
    assert!(
        summary["conflated_ticks"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(edge.metric("tickfan_conflated_total").await > 0.0);
    assert_clients_cpu(&summary);
    edge.stop().await;
}

/// A broadcast run that drives its own feed of padded ticks (a 600-byte
/// Kafka value: ~450 bytes of `x` filler, which compresses well), every
/// connection offering permessage-deflate (`--deflate`).
fn deflate_run(edge: &Edge, broker: &Broker, topic: &str) -> loadgen::Config {
    let mut config = config(edge);
    config.scenario = Scenario::Broadcast;
    config.duration = Duration::from_secs(2);
    config.produce_brokers = Some(broker.bootstrap());
    config.produce_topic = topic.to_owned();
    config.produce_rate = 400.0;
    config.produce_tick_bytes = 600;
    config.deflate = true;
    config
}

/// `summary[field]` as a number.
fn number(summary: &serde_json::Value, field: &str) -> f64 {
    summary[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field}: {summary}"))
}

/// `--deflate` against an edge with `--permessage-deflate`: every
/// connection (in either worker process) negotiates it, and the ticks
/// arrive in far fewer bytes on the wire than they decode to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_deflate_negotiated_the_wire_carries_fewer_bytes_than_decoded() {
    let (broker, topic, edge) = ready_edge(|c| c.gateway.permessage_deflate = true).await;
    let mut config = deflate_run(&edge, &broker, &topic);
    two_processes(&mut config);
    let summary = loadgen::run(config, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(
        summary["deflate"],
        serde_json::json!({
            "offered": true, "negotiated_connections": 20,
            "not_negotiated_connections": 0, "warning": null,
        }),
        "{summary}"
    );
    assert!(number(&summary, "deliveries_per_sec") > 0.0, "{summary}");
    let decoded = number(&summary, "bytes_per_delivery");
    let wire = number(&summary, "wire_bytes_per_delivery");
    // The padded ticks reached the clients inflated...
    assert!(decoded > 500.0, "{decoded} bytes per delivery: {summary}");
    // ... and came compressed: the filler is nearly free on the wire.
    assert!(
        wire > 0.0 && wire < decoded / 2.0,
        "{wire} wire bytes per delivery, {decoded} decoded: {summary}"
    );
    assert!(number(&summary, "wire_bytes") < number(&summary, "bytes"));
    let per_sec = number(&summary, "wire_bytes_per_sec");
    let secs = number(&summary, "seconds");
    assert!(
        (per_sec * secs - number(&summary, "wire_bytes")).abs() < 1.0,
        "{summary}"
    );
    assert!(edge.metric("tickfan_deflate_frames_total").await > 0.0);
    edge.stop().await;
}

/// `--deflate` against an edge without `--permessage-deflate`: nothing is
/// negotiated, the summary says so in a warning, and the wire carries the
/// text plus the frames' headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_deflate_refused_the_run_is_flagged_and_wire_bytes_cover_the_text() {
    let (broker, topic, edge) = ready_edge(|_| {}).await;
    let config = deflate_run(&edge, &broker, &topic);
    let summary = loadgen::run(config, CancellationToken::new())
        .await
        .unwrap();

    let deflate = &summary["deflate"];
    assert_eq!(deflate["offered"], true, "{summary}");
    assert_eq!(deflate["negotiated_connections"], 0, "{summary}");
    assert_eq!(deflate["not_negotiated_connections"], 20, "{summary}");
    let warning = deflate["warning"].as_str().expect("a warning");
    assert!(
        warning.contains("on 20 of 20 connections") && warning.contains("--permessage-deflate"),
        "{warning}"
    );
    assert!(number(&summary, "deliveries_per_sec") > 0.0, "{summary}");
    let decoded = number(&summary, "bytes_per_delivery");
    let wire = number(&summary, "wire_bytes_per_delivery");
    assert!(decoded > 500.0, "{decoded} bytes per delivery: {summary}");
    // Wire bytes are counted as read: a read (at most 16 KiB a client)
    // straddling the window's start or end lands on the wrong side, at most
    // 20 x 2 x 16 KiB of the run's ~10 MB. Beyond that margin the wire
    // carries the text plus frame headers.
    assert!(
        wire >= decoded * 0.9,
        "{wire} wire bytes per delivery, {decoded} decoded: {summary}"
    );
    assert_eq!(edge.metric("tickfan_deflate_frames_total").await, 0.0);
    edge.stop().await;
}

/// A worker that cannot start fails the run with its stderr in the error.
#[tokio::test]
async fn a_failing_worker_fails_the_run_with_its_stderr() {
    let mut config: loadgen::Config = defaults();
    config.clients = 2;
    config.processes = 2;
    // `sh loadgen --worker 0/2`: no script called `loadgen`, an error on stderr.
    config.worker_exe = Some("/bin/sh".into());
    let err = loadgen::run(config, CancellationToken::new())
        .await
        .expect_err("workers that are not tickfan fail")
        .to_string();
    assert!(
        err.starts_with("loadgen worker ") && err.contains("/2 failed"),
        "{err}"
    );
    let (_, tail) = err.split_once("the end of its stderr:\n").expect(&err);
    assert!(tail.contains("loadgen"), "{err}");
}
