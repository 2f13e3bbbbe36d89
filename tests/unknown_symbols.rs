//! Symbols the edge cannot serve, end to end (issue 17, item 1): a
//! subscription to a symbol the topic has not held is told so
//! (`unknown_symbol` without `retry_after_ms`) once the symbol's partition
//! has been read, and stays subscribed; and the symbol directory lists the
//! symbols of partitions nobody on the edge consumes, bounded by
//! `--directory-max`. Against the embedded mock cluster or, with
//! `TICKFAN_TEST_BROKERS`, a real broker (a fresh topic per test).

mod support;

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use serde_json::Value;
use support::*;
use tickfan::partition::partition_for;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The `unknown_symbol` notices (no `retry_after_ms`) received so far.
fn notices(frames: &[Frame]) -> Vec<&Value> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Unknown(v) => Some(v),
            Frame::Other(v) if v["code"] == "unknown_symbol" => panic!("a refusal: {v}"),
            _ => None,
        })
        .collect()
}

/// The symbols named by those notices, in arrival order (repeats kept).
fn told(frames: &[Frame]) -> Vec<String> {
    notices(frames)
        .iter()
        .flat_map(|v| v["symbols"].as_array().unwrap().iter())
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A symbol from `prefix` that lives in `partition` (of `partitions`).
fn symbol_in(prefix: &str, partition: i32, partitions: i32) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|s| partition_for(s.as_bytes(), partitions) == partition)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbol_the_topic_has_not_held_is_told_unknown_once_its_partition_is_read() {
    let broker = Broker::start();
    let partitions = 4;
    let topic = broker.topic(partitions).await;
    // Three traded symbols in three partitions; the fourth partition holds
    // nothing at all.
    let known: Vec<String> = distinct_partition_symbols("K", 3, partitions)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let used = partitions_of(&known, partitions);
    let empty = (0..partitions).find(|p| !used.contains(p)).unwrap();
    // Never traded: one in a busy partition, one in the empty one.
    let busy_unknown = symbol_in(
        "ZB",
        partition_for(known[0].as_bytes(), partitions),
        partitions,
    );
    let lone_unknown = symbol_in("ZE", empty, partitions);
    // The busy partition holds more than the 1,000-record snapshot rewind.
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks(&known[0], 1500).await;
    for s in &known[1..] {
        feed.ticks(s, 5).await;
    }
    feed.flush().await;
    let stop = CancellationToken::new();
    let ticking = steady(
        feed,
        known.clone(),
        200,
        Arc::new(AtomicU64::new(0)),
        stop.clone(),
    );

    let edge = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    edge.ready().await;
    let mut bystander = Client::connect(edge.addr).await;
    bystander.subscribe(&[&known[1]]).await;

    // A client asks for the traded symbols and the two unknown ones.
    let mut a = Client::connect(edge.addr).await;
    let all: Vec<&str> = known
        .iter()
        .chain([&busy_unknown, &lone_unknown])
        .map(String::as_str)
        .collect();
    let asked = Instant::now();
    let sub = a.subscribe(&all).await;
    assert_eq!(sub["symbols"].as_array().unwrap().len(), 5, "{sub}");
    let mut took = Vec::new();
    for u in [&busy_unknown, &lone_unknown] {
        let u2 = u.clone();
        a.read_until(&format!("{u} told unknown"), move |f| told(f).contains(&u2))
            .await;
        took.push((u.clone(), asked.elapsed()));
    }
    eprintln!(
        "time to unknown_symbol from the subscribe, partitions assigned and rewound ({} Kafka): {took:?}",
        if broker.is_real() { "real" } else { "mock" }
    );
    // The traded symbols got their snapshot and live ticks.
    for s in &known {
        let s2 = s.clone();
        a.read_until(&format!("{s}: snapshot, then a live tick"), move |f| {
            let ticks: Vec<_> = f
                .iter()
                .filter(|x| matches!(x, Frame::Tick { symbol, .. } if *symbol == s2))
                .collect();
            ticks.len() >= 2
        })
        .await;
        assert!(a.ticks(s)[0].1, "{s}: first tick is the snapshot");
    }
    for v in notices(&a.frames) {
        assert!(
            v.get("retry_after_ms").is_none(),
            "a notice, not a refusal: {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    for s in &known {
        assert!(
            !told(&a.frames).contains(s),
            "{s} is traded: {:?}",
            told(&a.frames)
        );
    }

    // Partitions live: a second client is told at once, after `subscribed`,
    // both unknown symbols in one frame.
    let mut b = Client::connect(edge.addr).await;
    let at = Instant::now();
    let sub = b
        .subscribe(&[&busy_unknown, &lone_unknown, &known[0]])
        .await;
    assert_eq!(sub["symbols"].as_array().unwrap().len(), 3, "{sub}");
    b.read_until("the notice", |f| !notices(f).is_empty()).await;
    let next = notices(&b.frames)[0].clone();
    // Queued by the subscribe itself: after `subscribed`, before even the
    // snapshot of the traded symbol subscribed with it.
    let at_notice = b
        .frames
        .iter()
        .position(|f| matches!(f, Frame::Unknown(_)))
        .unwrap();
    let at_subscribed = b
        .frames
        .iter()
        .position(|f| matches!(f, Frame::Other(v) if v["type"] == "subscribed"))
        .unwrap();
    assert!(at_subscribed < at_notice, "{:?}", b.frames);
    assert!(
        !b.frames[..at_notice]
            .iter()
            .any(|f| matches!(f, Frame::Tick { .. })),
        "{:?}",
        b.frames
    );
    let mut both = vec![busy_unknown.clone(), lone_unknown.clone()];
    both.sort();
    assert_eq!(next["code"], "unknown_symbol", "{next}");
    assert_eq!(
        next["symbols"],
        serde_json::json!(both),
        "one frame: {next}"
    );
    assert!(next.get("retry_after_ms").is_none(), "{next}");
    eprintln!(
        "time to unknown_symbol on a live partition: {:?}",
        at.elapsed()
    );

    // The subscriptions stay: the symbol trades, its first tick arrives as
    // a snapshot on both connections.
    let mut late = Feed::new(&broker.bootstrap(), &topic);
    late.ticks(&busy_unknown, 1).await;
    late.flush().await;
    for c in [&mut a, &mut b] {
        let u = busy_unknown.clone();
        c.read_until("the once unknown symbol's first tick", move |f| {
            f.iter()
                .any(|x| matches!(x, Frame::Tick { symbol, .. } if *symbol == u))
        })
        .await;
        assert_eq!(c.ticks(&busy_unknown), vec![(1, true)], "a snapshot");
    }

    // The bystander kept receiving throughout; nobody was told twice.
    stop.cancel();
    let last = ticking.await.unwrap();
    let only_k1: std::collections::BTreeMap<String, i64> = last
        .iter()
        .filter(|(s, _)| **s == known[1])
        .map(|(s, q)| (s.clone(), *q))
        .collect();
    read_to(&mut bystander, &only_k1).await;
    assert_contiguous_or_announced(&bystander.frames, &known[1]);
    assert!(notices(&bystander.frames).is_empty());
    read_to(&mut a, &last).await;
    let mut once = told(&a.frames);
    once.sort();
    assert_eq!(once, both, "each subscription told once");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_lists_symbols_of_partitions_nobody_consumes() {
    let broker = Broker::start();
    let partitions = 4;
    let topic = broker.topic(partitions).await;
    let early: Vec<String> = distinct_partition_symbols("DIR", 4, partitions)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    for s in &early {
        feed.ticks(s, 3).await;
    }
    feed.raw("not a symbol!", b"x").await;
    feed.flush().await;
    // The default --directory-interval (60 s): passes start 1 s, 2 s, 4 s...
    // apart, so a symbol that starts trading just after the edge is listed
    // within seconds (below), not a minute later.
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        assert_eq!(c.ingest.directory_interval, Duration::from_secs(60));
    })
    .await;
    edge.ready().await;
    let listed = |want: Vec<String>| {
        let edge = &edge;
        async move {
            let v = edge.json("/symbols").await;
            let got: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            want.iter().all(|w| got.contains(w)).then_some(got)
        }
    };
    let got = eventually("the directory lists every partition's symbols", || {
        listed(early.clone())
    })
    .await;
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "sorted");
    assert!(!got.iter().any(|s| s.contains(' ')), "{got:?}");
    assert_eq!(
        edge.metric("tickfan_assigned_partitions").await,
        0.0,
        "nothing consumed: the directory reads on its own"
    );
    // A symbol first traded after the edge started shows up at a later pass.
    feed.ticks("LATECOMER", 1).await;
    feed.flush().await;
    let later = eventually("a later pass adds a new symbol", || {
        listed(vec!["LATECOMER".into()])
    });
    tokio::time::timeout(Duration::from_secs(30), later)
        .await
        .expect("a symbol first traded after the start is listed well before --directory-interval");
    assert!(edge.metric("tickfan_directory_passes_total").await >= 2.0);
    edge.stop().await;
}

/// With auth on, the directory's symbols (of partitions nobody consumes, so
/// none of them is cached) are listed by `/symbols` only as far as the
/// caller's token entitles it, exactly like cached ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_lists_only_what_the_token_entitles() {
    let broker = Broker::start();
    let partitions = 4;
    let topic = broker.topic(partitions).await;
    let names: Vec<String> = distinct_partition_symbols("ENT", 4, partitions)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    for s in names.iter().chain([&"OTHER".to_string()]) {
        feed.ticks(s, 1).await;
    }
    feed.flush().await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.auth.jwt_secret = Some(JWT_SECRET.into());
    })
    .await;
    edge.ready().await;
    let listed = |symbols: &[&str]| {
        let path = format!("/symbols?token={}", jwt(symbols));
        let edge = &edge;
        async move {
            let (status, body) = edge.get(&path).await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Vec<String>>(&body).unwrap()
        }
    };
    let mut everything: Vec<String> = names.clone();
    everything.push("OTHER".into());
    everything.sort();
    eventually(
        "the directory lists every symbol to a token for all",
        || async { (listed(&["*"]).await == everything).then_some(()) },
    )
    .await;
    assert_eq!(
        edge.metric("tickfan_assigned_partitions").await,
        0.0,
        "nothing consumed: every symbol listed is the directory's"
    );
    assert_eq!(
        listed(&[names[0].as_str(), "NOT_TRADED"]).await,
        vec![names[0].clone()],
        "an exact entitlement: that symbol only"
    );
    let mut prefixed = names.clone();
    prefixed.sort();
    assert_eq!(listed(&["ENT*"]).await, prefixed, "a prefix entitlement");
    assert_eq!(listed(&["NOT_TRADED"]).await, Vec::<String>::new());
    let (status, body) = edge.get("/symbols").await;
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"missing token"}"#)
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_holds_at_most_directory_max_symbols_and_counts_the_rest() {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    for i in 0..20 {
        feed.ticks(&format!("M{i:02}"), 1).await;
    }
    feed.flush().await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.directory_max = 5;
    })
    .await;
    edge.ready().await;
    eventually("a directory pass", || async {
        (edge.metric("tickfan_directory_passes_total").await >= 1.0).then_some(())
    })
    .await;
    let listed = edge.json("/symbols").await;
    assert_eq!(listed.as_array().unwrap().len(), 5, "{listed}");
    assert_eq!(edge.metric("tickfan_directory_symbols").await, 5.0);
    assert!(
        edge.metric("tickfan_directory_dropped_keys_total").await >= 15.0,
        "the 15 keys past the bound are counted"
    );
    edge.stop().await;
}
