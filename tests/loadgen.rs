//! `tickfan loadgen` against a real edge: it connects its clients, counts
//! what they receive, and reports latency from the ticks' own timestamps.

mod support;

use std::time::Duration;

use support::*;
use tickfan::{
    config::defaults,
    loadgen::{self, Scenario},
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_measures_deliveries_latency_and_stalls() {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.outbox_capacity = 64;
        c.gateway.socket_send_buffer = 4096;
    })
    .await;
    edge.ready().await;
    let stop = CancellationToken::new();
    let feeding = {
        let (brokers, topic, stop) = (broker.bootstrap(), topic.clone(), stop.clone());
        tokio::spawn(async move {
            let mut feed = Feed::new(&brokers, &topic);
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            let mut n = 0u64;
            while !stop.is_cancelled() {
                pace.tick().await;
                for s in ["LG0", "LG1", "LG2", "LG3"] {
                    feed.ticks(s, 1).await;
                    n += 1;
                }
            }
            feed.flush().await;
            n
        })
    };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut config: loadgen::Config = defaults();
    config.url = vec![format!("ws://{}/ws", edge.addr)];
    config.scenario = Scenario::Slow;
    config.clients = 20;
    config.symbols = "LG0,LG1,LG2,LG3".parse().unwrap();
    config.per_client = 2;
    config.slow_fraction = 0.25;
    config.warmup = Duration::from_secs(1);
    config.duration = Duration::from_secs(3);
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
