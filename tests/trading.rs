//! What trading screens need: a maximum update rate per subscription, with
//! conflation (docs/protocol.md, "Maximum update rate").

mod support;

use std::time::Instant;

use serde_json::json;
use support::*;

fn updates<'a>(c: &'a Client, symbol: &str) -> Vec<&'a serde_json::Value> {
    c.tick_values(Some(symbol))
}

/// A client asks for AAPL at 4 Hz and MSFT unlimited on one connection,
/// another client for AAPL unlimited; the feed sends 400 ticks of each as
/// fast as it can. The 4 Hz subscription gets at most four updates a second
/// (counted against the time the client itself measured, so a slow machine
/// only makes the bound looser), each the latest tick with the number of
/// ticks it stands for, ending on the last tick; the others get every tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hz_conflates_one_subscription_and_leaves_the_rest_alone() {
    const N: i64 = 400;
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    edge.ready().await;
    let mut screen = Client::connect(edge.addr).await;
    let mut tape = Client::connect(edge.addr).await;
    let start = Instant::now();
    screen
        .send(json!({"op":"subscribe","symbols":["AAPL"],"max_hz":4}))
        .await;
    assert_eq!(screen.next_other().await["type"], "subscribed");
    screen.subscribe(&["MSFT"]).await;
    tape.subscribe(&["AAPL"]).await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;

    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    for _ in 0..N {
        feed.ticks("AAPL", 1).await;
        feed.ticks("MSFT", 1).await;
    }
    feed.flush().await;
    tape.read_until("every AAPL tick", |f| {
        f.iter()
            .any(|t| matches!(t, Frame::Tick { symbol, seq, .. } if symbol == "AAPL" && *seq == N))
    })
    .await;
    screen
        .read_until("the last AAPL tick and every MSFT tick", |f| {
            let last = |sym: &str| {
                f.iter().any(
                    |t| matches!(t, Frame::Tick { symbol, seq, .. } if symbol == sym && *seq == N),
                )
            };
            last("AAPL") && last("MSFT")
        })
        .await;
    let elapsed = start.elapsed().as_secs_f64();

    let aapl = updates(&screen, "AAPL");
    assert!(
        aapl.len() as f64 <= elapsed * 4.0 + 2.0,
        "{} AAPL updates in {elapsed:.2} s at 4 Hz",
        aapl.len()
    );
    let seqs: Vec<i64> = aapl.iter().map(|t| t["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        *seqs.last().unwrap(),
        N,
        "the last update is the latest tick"
    );
    let stood_for: i64 = aapl
        .iter()
        .map(|t| 1 + t.get("conflated").map_or(0, |n| n.as_i64().unwrap()))
        .sum();
    assert_eq!(
        stood_for, N,
        "each update says how many it stands for: {seqs:?}"
    );
    assert!(
        aapl.iter().any(|t| t.get("conflated").is_some()),
        "400 ticks did not fit in {} updates without conflation",
        aapl.len()
    );
    assert_eq!(screen.gaps("AAPL"), vec![], "conflated ticks are not gaps");
    // The unlimited subscription on the same connection, and the other client.
    let msft: Vec<i64> = screen.ticks("MSFT").iter().map(|t| t.0).collect();
    assert_eq!(msft, (1..=N).collect::<Vec<_>>());
    let all: Vec<i64> = tape.ticks("AAPL").iter().map(|t| t.0).collect();
    assert_eq!(all, (1..=N).collect::<Vec<_>>());
    assert!(updates(&tape, "AAPL")
        .iter()
        .all(|t| t.get("conflated").is_none()));
    edge.stop().await;
}

/// A bad `max_hz` is refused with `bad_max_hz` (a bad `mode` with
/// `bad_mode`), and the edge's cap lowers what a client asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_max_hz_is_refused_and_the_edge_cap_applies() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| c.gateway.max_hz = 2.0).await;
    edge.ready().await;
    let mut c = Client::connect(edge.addr).await;
    for bad in [json!(-1), json!("4"), json!(1e9)] {
        c.send(json!({"op":"subscribe","symbols":["AAPL"],"max_hz":bad}))
            .await;
        let e = c.next_other().await;
        assert_eq!(e["code"], "bad_max_hz", "{bad}: {e}");
    }
    c.send(json!({"op":"subscribe","symbols":["AAPL"],"mode":"newest"}))
        .await;
    assert_eq!(c.next_other().await["code"], "bad_mode");
    // Asking for every tick (0) under a 2 Hz cap.
    let start = Instant::now();
    c.send(json!({"op":"subscribe","symbols":["AAPL"],"max_hz":0}))
        .await;
    assert_eq!(c.next_other().await["type"], "subscribed");
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks("AAPL", 200).await;
    feed.flush().await;
    c.read_until("the last tick", |f| {
        f.iter().any(|t| matches!(t, Frame::Tick { seq: 200, .. }))
    })
    .await;
    let n = updates(&c, "AAPL").len();
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        n as f64 <= elapsed * 2.0 + 2.0,
        "{n} updates in {elapsed:.2} s under a 2 Hz cap"
    );
    edge.stop().await;
}

/// Sends `rounds` ticks of each symbol (seqs 1..=rounds), as fast as the
/// producer takes them, and waits until Kafka has them all.
async fn burst(feed: &Feed, symbols: &[String], rounds: i64) {
    use rdkafka::producer::BaseRecord;
    for seq in 1..=rounds {
        for s in symbols {
            let value = feed.codec.encode(&tick(s, seq));
            let mut record = BaseRecord::to(&feed.topic).key(s.as_str()).payload(&value);
            loop {
                match feed.producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        feed.producer.poll(std::time::Duration::from_millis(5));
                    }
                }
            }
        }
    }
    feed.flush().await;
}

/// A quote screen that stops reading, with `"mode":"latest"`: its outbox
/// holds the newest tick of each of its symbols, so it never overflows (far
/// more ticks arrive than it holds) and, reading again, the screen gets the
/// last price of every symbol with no gap; each tick says how many it
/// replaced, and together they account for every tick sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_quote_screen_in_latest_mode_ends_on_the_last_price_of_every_symbol() {
    const ROUNDS: i64 = 500;
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.outbox_capacity = 64;
    })
    .await;
    edge.ready().await;
    let syms: Vec<String> = (0..20).map(|i| format!("Q{i}")).collect();
    let refs: Vec<&str> = syms.iter().map(String::as_str).collect();
    let mut screen = Client::connect_with_recv_buffer(edge.addr, Some(4096)).await;
    screen
        .send(json!({"op":"subscribe","symbols":refs,"mode":"latest"}))
        .await;
    assert_eq!(screen.next_other().await["type"], "subscribed");
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;
    // The screen reads nothing while 10,000 ticks (about 1.3 MB) go out.
    let feed = Feed::new(&broker.bootstrap(), &topic);
    burst(&feed, &syms, ROUNDS).await;
    edge.metric_reaches("tickfan_ticks_consumed_total", (ROUNDS * 20) as f64)
        .await;
    screen
        .read_until("the last tick of every symbol", |f| {
            syms.iter().all(|s| {
                f.iter().any(|t| matches!(t, Frame::Tick { symbol, seq, .. } if symbol == s && *seq == ROUNDS))
            })
        })
        .await;
    for s in &syms {
        assert_eq!(screen.gaps(s), vec![], "{s}: nothing dropped");
        let ticks = updates(&screen, s);
        let seqs: Vec<i64> = ticks.iter().map(|t| t["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{s}: {seqs:?}");
        let stood_for: i64 = ticks
            .iter()
            .map(|t| 1 + t.get("conflated").map_or(0, |n| n.as_i64().unwrap()))
            .sum();
        assert_eq!(stood_for, ROUNDS, "{s}: every tick delivered or counted");
    }
    assert_eq!(
        edge.metric("tickfan_drops_total{reason=\"outbox_full\"}")
            .await,
        0.0
    );
    let conflated = edge.metric("tickfan_conflated_total").await;
    assert!(
        conflated > 0.0,
        "1.3 MB to a client that read nothing: ticks were replaced"
    );
    edge.stop().await;
}

/// The edge's `--default-max-hz` on a busy feed of several symbols: every
/// symbol keeps being updated, turn after turn (not only once), at most at
/// the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_rate_keeps_every_symbol_updating_turn_after_turn() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.default_max_hz = 10.0
    })
    .await;
    edge.ready().await;
    let syms: Vec<String> = (0..5).map(|i| format!("T{i}")).collect();
    let refs: Vec<&str> = syms.iter().map(String::as_str).collect();
    let mut c = Client::connect(edge.addr).await;
    let start = Instant::now();
    c.subscribe(&refs).await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let feed = steady_feed(
        broker.bootstrap(),
        topic.clone(),
        syms.clone(),
        500,
        stop.clone(),
    );
    c.read_until("five updates of every symbol", |f| {
        syms.iter().all(|s| {
            f.iter()
                .filter(|t| matches!(t, Frame::Tick { symbol, .. } if symbol == s))
                .count()
                >= 5
        })
    })
    .await;
    stop.cancel();
    feed.await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    for s in &syms {
        let n = updates(&c, s).len();
        assert!(
            n as f64 <= elapsed * 10.0 + 2.0,
            "{s}: {n} updates in {elapsed:.2} s at 10 Hz"
        );
    }
    edge.stop().await;
}
