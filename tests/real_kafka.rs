//! Faults that need a real broker: what librdkafka's mock cluster does not
//! implement (CreatePartitions). `test = false` in Cargo.toml keeps this out
//! of a plain `cargo test`; `.ci/run` runs it with
//! `TICKFAN_TEST_BROKERS=... cargo test --test secure --test real_kafka`.

mod support;

use std::time::Duration;

use support::*;
use tokio_util::sync::CancellationToken;

/// librdkafka's mock cluster does not implement CreatePartitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_at_runtime_keep_every_symbol_flowing() {
    let broker = Broker::real();
    let topic = broker.topic(2).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.metadata_refresh = Duration::from_millis(300)
    })
    .await;
    edge.ready().await;
    let syms: Vec<String> = (0..8).map(|i| format!("GROW{i}")).collect();
    let refs: Vec<&str> = syms.iter().map(String::as_str).collect();
    let mut c = Client::connect(edge.addr).await;
    c.subscribe(&refs).await;
    let stop = CancellationToken::new();
    let producer = steady_feed(
        broker.bootstrap(),
        topic.clone(),
        syms.clone(),
        300,
        stop.clone(),
    );
    c.read_until("ticks before the change", |f| f.len() > 30)
        .await;

    broker.add_partitions(&topic, 6).await;
    // The edge notices, recomputes symbol → partition and assigns the new
    // partitions that hold subscribed symbols.
    let moved: Vec<i32> = partitions_of(&syms, 6)
        .into_iter()
        .filter(|p| *p >= 2)
        .collect();
    assert!(!moved.is_empty(), "some symbols move to new partitions");
    eventually("new partitions assigned", || async {
        let now = edge.partitions().await;
        moved.iter().all(|p| now.contains(p)).then_some(())
    })
    .await;
    // Keep producing until the producer has written to the new partitions.
    eventually("producer writes to new partitions", || async {
        let mut any = false;
        for p in &moved {
            any |= edge.next_offset(*p).await.unwrap_or(0) > 5;
        }
        any.then_some(())
    })
    .await;
    stop.cancel();
    let last = producer.await.unwrap();
    read_to(&mut c, &last).await;
    for s in &syms {
        // Kafka orders records within a partition only: a symbol's last ticks
        // in its old partition and first in its new one may reach the edge in
        // either order. The edge never reorders or duplicates; a hole that
        // results is announced.
        assert_contiguous_or_announced(&c.frames, s);
        assert_eq!(c.last_seq(s), Some(last[s]));
    }
    edge.stop().await;
}
