//! Faults: several edges, broker outages, Kafka absent at start, partitions
//! added at runtime. Against the embedded mock cluster by default; with
//! `TICKFAN_TEST_BROKERS`, against real Kafka, including brokers of the
//! test's own that it kills with SIGKILL and restarts.

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use support::*;
use tokio_util::sync::CancellationToken;

/// Produces ticks of `symbols` round-robin at about `rate` per second until
/// cancelled; returns the last seq per symbol once everything is delivered.
fn steady_feed(
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
fn steady(
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

async fn read_to(client: &mut Client, last: &BTreeMap<String, i64>) {
    for (s, &seq) in last {
        let s2 = s.clone();
        client
            .read_until(&format!("{s} up to {seq}"), move |f| {
                f.iter().any(|x| matches!(x, Frame::Tick { symbol, seq: q, .. } if *symbol == s2 && *q == seq))
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_each_deliver_everything_to_their_clients() {
    let broker = Broker::start();
    let topic = broker.topic(4).await;
    let a = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    let b = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    a.ready().await;
    b.ready().await;
    let syms = distinct_partition_symbols("TWO", 3, 4);
    let (s0, s1, s2) = (syms[0].0.as_str(), syms[1].0.as_str(), syms[2].0.as_str());
    let mut clients = vec![
        (Client::connect(a.addr).await, vec![s0, s1]),
        (Client::connect(b.addr).await, vec![s0, s1]),
        (Client::connect(b.addr).await, vec![s0, s2]),
        (Client::connect(a.addr).await, vec![s2]),
    ];
    for (c, s) in &mut clients {
        c.subscribe(s).await;
    }
    eventually("both edges assigned the partitions they need", || async {
        let (pa, pb) = (a.partitions().await, b.partitions().await);
        let mut wa = vec![syms[0].1, syms[1].1, syms[2].1];
        wa.sort();
        (pa == wa && pb == wa).then_some(())
    })
    .await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    let mut last = BTreeMap::new();
    for _ in 0..50 {
        for s in [s0, s1, s2] {
            last.insert(s.to_string(), feed.ticks(s, 1).await);
        }
    }
    feed.flush().await;
    for (c, subscribed) in &mut clients {
        let want: BTreeMap<String, i64> = subscribed
            .iter()
            .map(|s| (s.to_string(), last[*s]))
            .collect();
        read_to(c, &want).await;
        for s in subscribed.iter() {
            let seqs: Vec<i64> = c.ticks(s).iter().map(|t| t.0).collect();
            assert_eq!(
                seqs,
                (1..=50).collect::<Vec<_>>(),
                "{s}: every tick, in order, once"
            );
        }
        let mut expected: Vec<String> = subscribed.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(c.symbols_seen(), expected);
    }
    a.stop().await;
    b.stop().await;
}

/// The outage scenario, whatever the broker: clients stay connected, are told
/// the feed is stale and then live, and receive every tick produced. The
/// broker stays down until the producer (200 ticks/s) has produced
/// `outage_ticks` ticks into its buffer.
async fn outage_scenario(
    brokers: String,
    topic: String,
    outage_ticks: u64,
    down: impl FnOnce(),
    up: impl std::future::Future<Output = ()>,
) {
    let edge = Edge::spawn(&brokers, &topic, |c| {
        c.ingest.metadata_refresh = Duration::from_millis(500)
    })
    .await;
    edge.ready().await;
    let syms: Vec<String> = distinct_partition_symbols("OUT", 2, 2)
        .into_iter()
        .map(|s| s.0)
        .collect();
    let mut c1 = Client::connect(edge.addr).await;
    let mut c2 = Client::connect(edge.addr).await;
    c1.subscribe(&[&syms[0], &syms[1]]).await;
    c2.subscribe(&[&syms[1]]).await;
    eventually("partitions assigned", || async {
        (edge.partitions().await.len() == 2).then_some(())
    })
    .await;

    let stop = CancellationToken::new();
    let feed = Feed::new(&brokers, &topic);
    let feed_counts = feed.counts.clone();
    let sent = Arc::new(AtomicU64::new(0));
    let producer = steady(feed, syms.clone(), 200, sent.clone(), stop.clone());
    for c in [&mut c1, &mut c2] {
        c.read_until("live ticks before the outage", |f| f.len() > 10)
            .await;
    }

    down();
    let sent_at_outage = sent.load(Ordering::Relaxed);
    for c in [&mut c1, &mut c2] {
        c.read_until("stale notice", |f| {
            f.iter()
                .any(|x| matches!(x, Frame::Status(s) if s == "stale"))
        })
        .await;
    }
    eventually("readyz 503 during the outage", || async {
        (edge.get("/readyz").await.0 == 503).then_some(())
    })
    .await;
    // The producer noticed too: this is what its progress line prints.
    let fc = feed_counts.clone();
    eventually("producer reports the outage", move || {
        let e = fc.recent_error(Duration::from_secs(60));
        async move { e }
    })
    .await;
    assert_eq!(
        edge.get("/healthz").await.0,
        200,
        "the edge process stays up"
    );
    // The broker stays down while the producer keeps producing into its
    // buffer, until the outage spans `outage_ticks` ticks.
    let produced = sent.clone();
    eventually("ticks produced during the outage", move || {
        let n = produced.load(Ordering::Relaxed) - sent_at_outage;
        async move { (n >= outage_ticks).then_some(()) }
    })
    .await;
    up.await;

    edge.ready().await;
    for c in [&mut c1, &mut c2] {
        c.read_until("live notice", |f| {
            f.iter()
                .skip_while(|x| !matches!(x, Frame::Status(s) if s == "stale"))
                .any(|x| matches!(x, Frame::Status(s) if s == "live"))
        })
        .await;
    }
    stop.cancel();
    let last = producer.await.unwrap();
    let produced: i64 = last.values().sum();
    assert_eq!(
        feed_counts
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed) as i64,
        produced,
        "every tick produced was acknowledged"
    );
    assert_eq!(
        feed_counts
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    read_to(&mut c1, &last).await;
    read_to(
        &mut c2,
        &BTreeMap::from([(syms[1].clone(), last[&syms[1]])]),
    )
    .await;
    for (c, subscribed) in [(&c1, &syms[..]), (&c2, &syms[1..])] {
        for s in subscribed {
            let seqs: Vec<i64> = c.ticks(s).iter().map(|t| t.0).collect();
            assert_eq!(
                seqs,
                (1..=last[s]).collect::<Vec<_>>(),
                "{s}: contiguous across the outage, no duplicate"
            );
            assert!(c.gaps(s).is_empty());
        }
        assert!(
            !c.frames.iter().any(|f| matches!(f, Frame::Close(_))),
            "client stayed connected"
        );
    }
    let statuses = c1.statuses();
    assert_eq!(statuses.first().map(String::as_str), Some("stale"));
    assert_eq!(statuses.last().map(String::as_str), Some("live"));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing() {
    match Broker::start() {
        Broker::Mock(mock) => {
            mock.create_topic("outage", 2, 1).unwrap();
            let m = &mock;
            outage_scenario(
                mock.bootstrap_servers(),
                "outage".into(),
                600, // about 3 s
                || m.broker_down(1).unwrap(),
                async { m.broker_up(1).unwrap() },
            )
            .await;
        }
        Broker::Real(_) => {
            // A broker of our own, killed with SIGKILL while 2,400 ticks
            // (about 12 s) are produced.
            let kafka = PrivateKafka::new(19292);
            kafka.up().await;
            create_topic_on(&kafka.bootstrap(), "outage", 2).await;
            let k = &kafka;
            outage_scenario(
                kafka.bootstrap(),
                "outage".into(),
                2400,
                || k.kill9(),
                k.up(),
            )
            .await;
        }
    }
}

/// The edge starts while Kafka is unreachable: it serves /healthz, reports
/// not ready and a stale feed, and becomes ready when Kafka appears.
async fn kafka_absent_scenario(
    brokers: String,
    topic: &str,
    appear: impl std::future::Future<Output = ()>,
) {
    let edge = Edge::spawn(&brokers, topic, |c| {
        c.ingest.metadata_refresh = Duration::from_millis(500)
    })
    .await;
    assert_eq!(edge.get("/healthz").await.0, 200);
    let mut c = Client::connect(edge.addr).await;
    c.read_until("stale status on connect", |f| {
        f.iter()
            .any(|x| matches!(x, Frame::Status(s) if s == "stale"))
    })
    .await;
    c.subscribe(&["LATE1"]).await;
    assert_eq!(edge.get("/readyz").await.0, 503);
    appear.await;
    edge.ready().await;
    c.read_until("live status", |f| {
        f.iter()
            .any(|x| matches!(x, Frame::Status(s) if s == "live"))
    })
    .await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;
    let mut feed = Feed::new(&brokers, topic);
    feed.ticks("LATE1", 5).await;
    feed.flush().await;
    c.read_until("5 ticks", |f| {
        f.iter().any(|x| matches!(x, Frame::Tick { seq: 5, .. }))
    })
    .await;
    assert_eq!(
        c.ticks("LATE1").iter().map(|t| t.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_started_before_kafka_becomes_ready_when_it_appears() {
    match Broker::start() {
        Broker::Mock(mock) => {
            // The mock cluster cannot start later on a chosen port; a broker
            // that refuses connections until brought up is the same to the edge.
            mock.create_topic("late", 1, 1).unwrap();
            mock.broker_down(1).unwrap();
            let m = &mock;
            kafka_absent_scenario(mock.bootstrap_servers(), "late", async {
                m.broker_up(1).unwrap()
            })
            .await;
        }
        Broker::Real(_) => {
            let kafka = PrivateKafka::new(19392);
            let k = &kafka;
            kafka_absent_scenario(kafka.bootstrap(), "late", async {
                k.up().await;
                create_topic_on(&k.bootstrap(), "late", 1).await;
            })
            .await;
        }
    }
}

/// Real Kafka only: librdkafka's mock cluster does not implement
/// CreatePartitions (see build.rs).
#[cfg(real_kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_at_runtime_keep_every_symbol_flowing() {
    let broker = Broker::start();
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
    let moved: Vec<i32> = {
        let mut p: Vec<i32> = syms
            .iter()
            .map(|s| tickfan::partition::partition_for(s.as_bytes(), 6))
            .collect();
        p.sort();
        p.dedup();
        p.into_iter().filter(|p| *p >= 2).collect()
    };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_edge_reconnect_and_restart_from_snapshots() {
    use tickfan::client::{self, Event};
    let broker = Broker::start();
    let topic = broker.topic(3).await;
    let refresh = ["--metadata-refresh", "500ms"];
    let a = EdgeProcess::spawn(&broker.bootstrap(), &topic, &refresh).await;
    let b = EdgeProcess::spawn(&broker.bootstrap(), &topic, &refresh).await;

    let syms: Vec<String> = distinct_partition_symbols("CRASH", 2, 3)
        .into_iter()
        .map(|s| s.0)
        .collect();
    let stop = CancellationToken::new();
    let producer = steady_feed(
        broker.bootstrap(),
        topic.clone(),
        syms.clone(),
        200,
        stop.clone(),
    );

    // The reference client tries its endpoints round-robin: A first.
    let shutdown = CancellationToken::new();
    let config = client::Config {
        endpoints: vec![a.ws(), b.ws()],
        symbols: syms.clone(),
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_secs(2),
        ..client::Config::default()
    };
    let (mut events, task) = client::spawn(config, shutdown.clone());
    let mut log: Vec<Event> = Vec::new();
    // Wait for live ticks of both symbols through A.
    loop {
        let e = next_event(&mut events).await;
        log.push(e);
        let live = |s: &str| {
            log.iter()
                .filter(|e| matches!(e, Event::Tick(t) if t.symbol == s))
                .count()
                >= 5
        };
        if live(&syms[0]) && live(&syms[1]) {
            break;
        }
    }
    assert!(matches!(&log[0], Event::Connected { endpoint } if *endpoint == a.ws()));

    a.signal("-KILL");
    let crash_at = log.len();
    // The client notices, reconnects (to B: A refuses), resubscribes, and
    // gets a snapshot rebuilt from Kafka, then live ticks.
    loop {
        let e = next_event(&mut events).await;
        log.push(e);
        let after = &log[crash_at..];
        let connected_b = after
            .iter()
            .position(|e| matches!(e, Event::Connected { endpoint } if *endpoint == b.ws()));
        if let Some(i) = connected_b {
            let live = |s: &str| {
                after[i..]
                    .iter()
                    .filter(|e| matches!(e, Event::Tick(t) if t.symbol == s && !t.snapshot))
                    .count()
                    >= 5
            };
            if live(&syms[0]) && live(&syms[1]) {
                break;
            }
        }
    }
    assert!(log[crash_at..]
        .iter()
        .any(|e| matches!(e, Event::Disconnected { .. })));
    let i = crash_at
        + log[crash_at..]
            .iter()
            .position(|e| matches!(e, Event::Connected { endpoint } if *endpoint == b.ws()))
            .unwrap();
    for s in &syms {
        let before = ticks_of(&log[..crash_at], s);
        let after = ticks_of(&log[i..], s);
        assert!(
            after[0].snapshot,
            "{s}: the new session starts with a snapshot"
        );
        assert!(
            after[0].seq >= before.last().unwrap().seq,
            "{s}: the snapshot is not older than what was seen"
        );
        for w in after.windows(2) {
            assert_eq!(
                w[1].seq,
                w[0].seq + 1,
                "{s}: live after the snapshot, contiguous"
            );
            assert!(!w[1].snapshot);
        }
        for w in before.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1, "{s}: contiguous before the crash");
        }
    }
    stop.cancel();
    producer.await.unwrap();
    shutdown.cancel();
    task.await.unwrap();
}

/// The ticks of `symbol` among `events`, in order.
fn ticks_of<'a>(
    events: &'a [tickfan::client::Event],
    symbol: &str,
) -> Vec<&'a tickfan::client::Tick> {
    events
        .iter()
        .filter_map(|e| match e {
            tickfan::client::Event::Tick(t) if t.symbol == symbol => Some(t),
            _ => None,
        })
        .collect()
}

async fn next_event<T>(rx: &mut tokio::sync::mpsc::Receiver<T>) -> T {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("event in time")
        .expect("client alive")
}
