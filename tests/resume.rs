//! Resume after a reconnect (docs/protocol.md, "Resume after a reconnect"):
//! on the same edge from memory, on another edge from Kafka after the first
//! was SIGKILLed, and beyond the window. On the embedded mock cluster, or
//! on the real broker named by `TICKFAN_TEST_BROKERS` (CI runs both).

mod support;

use std::{collections::BTreeMap, net::SocketAddr};

use serde_json::{json, Value};
use support::*;
use tokio_util::sync::CancellationToken;

/// The `(seq, ts)` of the last tick of `symbol` a client holds.
fn position(c: &Client, symbol: &str) -> (i64, i64) {
    let t = c.tick_values(Some(symbol));
    let last = t.last().expect("a tick");
    (last["seq"].as_i64().unwrap(), last["ts"].as_i64().unwrap())
}

/// Connects and subscribes to `symbols`, resuming each from its position.
async fn resume_on(addr: SocketAddr, at: &BTreeMap<&str, (i64, i64)>) -> Client {
    let mut c = Client::connect(addr).await;
    let resume: serde_json::Map<String, Value> = at
        .iter()
        .map(|(s, (seq, ts))| (s.to_string(), json!({"seq": seq, "ts": ts})))
        .collect();
    let symbols: Vec<&str> = at.keys().copied().collect();
    c.send(json!({"op":"subscribe","symbols":symbols,"resume":resume}))
        .await;
    assert_eq!(c.next_other().await["type"], "subscribed");
    c
}

/// The seqs a client got of `symbol`, asserting none came as a snapshot
/// and no gap was announced: a resume within the window replays exactly.
fn exact_seqs(c: &Client, symbol: &str) -> Vec<i64> {
    assert_eq!(c.gaps(symbol), vec![], "{symbol}: no gap within the window");
    c.ticks(symbol)
        .into_iter()
        .map(|(seq, snapshot)| {
            assert!(!snapshot, "{symbol}: a resume sends no snapshot");
            seq
        })
        .collect()
}

/// A client reads AAPL to seq 20 and goes; 30 more ticks are published; it
/// comes back to the same edge with its last seq and gets exactly 21..=50
/// (from the edge's memory), then live ticks; one that is up to date gets
/// nothing before the next live tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_the_same_edge_from_memory() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    edge.ready().await;
    let mut first = Client::connect(edge.addr).await;
    first.subscribe(&["AAPL"]).await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks("AAPL", 20).await;
    feed.flush().await;
    read_to(&mut first, &BTreeMap::from([("AAPL".to_string(), 20)])).await;
    let at = position(&first, "AAPL");
    assert_eq!(at.0, 20);
    drop(first);

    // A bystander that stays keeps the symbol live on this edge.
    let mut up_to_date = resume_on(edge.addr, &BTreeMap::from([("AAPL", at)])).await;
    feed.ticks("AAPL", 30).await;
    feed.flush().await;
    read_to(&mut up_to_date, &BTreeMap::from([("AAPL".to_string(), 50)])).await;
    assert_eq!(
        exact_seqs(&up_to_date, "AAPL"),
        (21..=50).collect::<Vec<_>>()
    );

    let mut back = resume_on(edge.addr, &BTreeMap::from([("AAPL", at)])).await;
    read_to(&mut back, &BTreeMap::from([("AAPL".to_string(), 50)])).await;
    feed.ticks("AAPL", 5).await;
    feed.flush().await;
    read_to(&mut back, &BTreeMap::from([("AAPL".to_string(), 55)])).await;
    assert_eq!(exact_seqs(&back, "AAPL"), (21..=55).collect::<Vec<_>>());
    edge.metric_reaches("tickfan_resumes_total{outcome=\"memory\"}", 1.0)
        .await;
    assert_eq!(
        edge.metric("tickfan_replayed_ticks_total{source=\"memory\"}")
            .await,
        30.0
    );
    assert_eq!(
        edge.metric("tickfan_resumes_total{outcome=\"current\"}")
            .await,
        1.0
    );
    // The memory holds the 55 ticks (docs/operations.md), and /partitions
    // says where the partition went live (docs/protocol.md).
    assert!(edge.metric("tickfan_resume_memory_bytes").await > 0.0);
    let p = edge.json("/partitions").await;
    assert!(p[0]["live_from"].as_i64().is_some(), "{p}");
}

/// Two edges; a client on edge A watches two symbols, each in its own
/// partition. Edge B has a bystander on the first symbol only (so B
/// consumes its partition and holds its recent ticks), and does not
/// consume the second symbol's partition at all. The feed runs throughout;
/// A is SIGKILLed; the client resumes both symbols on B. Every tick between
/// the last it saw and the live ones arrives exactly once, the first from
/// B's memory and the second read from Kafka, while the bystander keeps
/// receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_the_other_edge_after_a_sigkill_from_memory_and_kafka() {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let syms = distinct_partition_symbols("RS", 2, 2);
    let (kept, cold) = (syms[0].0.clone(), syms[1].0.clone());
    let a = EdgeProcess::spawn(&broker.bootstrap(), &topic, &[]).await;
    let b = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    b.ready().await;
    let mut bystander = Client::connect(b.addr).await;
    bystander.subscribe(&[kept.as_str()]).await;
    let mut client = Client::connect(a.addr).await;
    client.subscribe(&[kept.as_str(), cold.as_str()]).await;
    eventually("B consumes only the first symbol's partition", || async {
        (b.partitions().await == vec![syms[0].1]).then_some(())
    })
    .await;
    eventually("A consumes both partitions", || async {
        let p: Value = serde_json::from_str(&http_get(a.addr, "/partitions").await.1).ok()?;
        (p.as_array()?.len() == 2).then_some(())
    })
    .await;

    let stop = CancellationToken::new();
    let feed = steady_feed(
        broker.bootstrap(),
        topic.clone(),
        vec![kept.clone(), cold.clone()],
        200,
        stop.clone(),
    );
    client
        .read_until("30 ticks of each symbol on A", |f| {
            [&kept, &cold].iter().all(|s| {
                f.iter().any(
                    |x| matches!(x, Frame::Tick { symbol, seq, .. } if symbol == *s && *seq >= 30),
                )
            })
        })
        .await;
    a.signal("-KILL");
    // The client's position: the last tick it read (what A may still have
    // written to its socket counts as not received).
    let at: BTreeMap<&str, (i64, i64)> = [kept.as_str(), cold.as_str()]
        .into_iter()
        .map(|s| (s, position(&client, s)))
        .collect();
    // Let the feed run on while the client is away.
    let away = at.clone();
    bystander
        .read_until("50 more ticks while the client is away", |f| {
            f.iter().any(|x| matches!(x, Frame::Tick { symbol, seq, .. } if *symbol == kept && *seq >= away[kept.as_str()].0 + 50))
        })
        .await;

    let mut back = resume_on(b.addr, &at).await;
    back.read_until("live ticks of both symbols", |f| {
        [&kept, &cold].iter().all(|s| {
            f.iter().any(|x| matches!(x, Frame::Tick { symbol, seq, .. } if symbol == *s && *seq >= at[s.as_str()].0 + 60))
        })
    })
    .await;
    stop.cancel();
    let last = feed.await.unwrap();
    read_to(&mut back, &last).await;
    read_to(
        &mut bystander,
        &BTreeMap::from([(kept.clone(), last[&kept])]),
    )
    .await;
    for s in [&kept, &cold] {
        let want: Vec<i64> = (at[s.as_str()].0 + 1..=last[s]).collect();
        assert_eq!(
            exact_seqs(&back, s),
            want,
            "{s}: every tick after the last seen, once"
        );
    }
    assert_contiguous_or_announced(&bystander.frames, &kept);
    assert_eq!(bystander.gaps(&kept), vec![]);
    b.metric_reaches("tickfan_resumes_total{outcome=\"memory\"}", 1.0)
        .await;
    b.metric_reaches("tickfan_resumes_total{outcome=\"kafka\"}", 1.0)
        .await;
    assert!(
        b.metric("tickfan_replayed_ticks_total{source=\"kafka\"}")
            .await
            > 0.0
    );
}

/// Beyond the window the client gets a gap for what it missed, then the
/// snapshot, never a silent jump: more ticks missed than
/// `--resume-max-ticks`, and a position older than `--resume-window`
/// (from memory, and on an edge that must read Kafka).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_beyond_the_window_gets_a_gap_and_the_snapshot() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.resume_max_ticks = 10;
    })
    .await;
    edge.ready().await;
    let mut watcher = Client::connect(edge.addr).await;
    watcher.subscribe(&["AAPL"]).await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks("AAPL", 60).await;
    feed.flush().await;
    read_to(&mut watcher, &BTreeMap::from([("AAPL".to_string(), 60)])).await;
    let ts = position(&watcher, "AAPL").1;

    // 55 missed, 10 allowed.
    let mut far = resume_on(edge.addr, &BTreeMap::from([("AAPL", (5, ts))])).await;
    far.read_until("the snapshot", |f| {
        f.iter()
            .any(|x| matches!(x, Frame::Tick { snapshot: true, .. }))
    })
    .await;
    assert_eq!(far.gaps("AAPL"), vec![(6, 59)]);
    assert_eq!(far.ticks("AAPL"), vec![(60, true)]);

    // 5 missed, but an hour ago (older than the 5-minute window).
    let old = ts - 3_600_000_000;
    let mut stale = resume_on(edge.addr, &BTreeMap::from([("AAPL", (55, old))])).await;
    stale
        .read_until("the snapshot", |f| {
            f.iter()
                .any(|x| matches!(x, Frame::Tick { snapshot: true, .. }))
        })
        .await;
    assert_eq!(stale.gaps("AAPL"), vec![(56, 59)]);
    assert_eq!(stale.ticks("AAPL"), vec![(60, true)]);

    // Within both: exact.
    let mut near = resume_on(edge.addr, &BTreeMap::from([("AAPL", (52, ts))])).await;
    read_to(&mut near, &BTreeMap::from([("AAPL".to_string(), 60)])).await;
    assert_eq!(exact_seqs(&near, "AAPL"), (53..=60).collect::<Vec<_>>());

    // An edge with no memory for resumes reads Kafka, with the same window.
    let cold = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.resume_max_ticks = 10;
        c.gateway.resume_memory = 0;
    })
    .await;
    cold.ready().await;
    let mut far = resume_on(cold.addr, &BTreeMap::from([("AAPL", (5, ts))])).await;
    far.read_until("the snapshot", |f| {
        f.iter()
            .any(|x| matches!(x, Frame::Tick { snapshot: true, .. }))
    })
    .await;
    assert_eq!(far.gaps("AAPL"), vec![(6, 59)]);
    assert_eq!(far.ticks("AAPL"), vec![(60, true)]);
    let mut near = resume_on(cold.addr, &BTreeMap::from([("AAPL", (52, ts))])).await;
    read_to(&mut near, &BTreeMap::from([("AAPL".to_string(), 60)])).await;
    assert_eq!(exact_seqs(&near, "AAPL"), (53..=60).collect::<Vec<_>>());
    cold.metric_reaches("tickfan_resumes_total{outcome=\"beyond\"}", 1.0)
        .await;
    cold.metric_reaches("tickfan_resumes_total{outcome=\"kafka\"}", 1.0)
        .await;
    edge.metric_reaches("tickfan_resumes_total{outcome=\"beyond\"}", 2.0)
        .await;
}

/// A malformed resume is refused whole with `bad_resume`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_resume_is_refused() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    edge.ready().await;
    let mut c = Client::connect(edge.addr).await;
    c.send(json!({"op":"subscribe","symbols":["AAPL"],"resume":{"MSFT":{"seq":1}}}))
        .await;
    let v = c.next_other().await;
    assert_eq!(v["code"], "bad_resume", "{v}");
    c.subscribe(&["AAPL"]).await;
}
