//! The edge end to end over real sockets, against the embedded mock cluster
//! or, with `TICKFAN_TEST_BROKERS`, a real Kafka broker (a fresh topic per test).

mod support;

use std::{collections::HashMap, time::Duration};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    ClientConfig, Message as _, Offset, TopicPartitionList,
};
use serde_json::json;
use support::*;
use tickfan::partition::partition_for;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioner_matches_librdkafka_murmur2_random() {
    let broker = Broker::start();
    let partitions = 7;
    let topic = broker.topic(partitions).await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    let keys: Vec<String> = (0..60)
        .map(|i| format!("K{i}.X"))
        .chain(["AAPL", "MSFT", "BRK.B"].map(String::from))
        .collect();
    for k in &keys {
        feed.ticks(k, 1).await;
    }
    feed.flush().await;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut placed: HashMap<String, i32> = HashMap::new();
    eventually("all keys consumed", || {
        while let Some(m) = consumer.poll(Duration::from_millis(10)) {
            let m = m.unwrap();
            placed.insert(
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                m.partition(),
            );
        }
        let done = placed.len() == keys.len();
        async move { done.then_some(()) }
    })
    .await;
    for k in &keys {
        assert_eq!(
            placed[k],
            partition_for(k.as_bytes(), partitions),
            "key {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_live_only_subscribed_partitions() {
    let broker = Broker::start();
    let partitions = 6;
    let topic = broker.topic(partitions).await;
    let syms = distinct_partition_symbols("SNAP", 3, partitions);
    let (a, b, other) = (&syms[0].0, &syms[1].0, &syms[2].0);
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    // History before anyone subscribes: the snapshot must come from the rewind.
    for s in [a, b, other] {
        feed.ticks(s, 3).await;
    }
    feed.flush().await;

    // No symbol directory: /symbols then lists only the cached symbols,
    // which must be those of the consumed partitions.
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.directory_sample = 0;
    })
    .await;
    edge.ready().await;
    assert!(
        edge.partitions().await.is_empty(),
        "nothing assigned before any subscription"
    );

    let mut c1 = Client::connect(edge.addr).await;
    let sub = c1.subscribe(&[a, b]).await;
    assert_eq!(sub["symbols"], json!([a, b]));
    c1.read_until("both snapshots", |_| true).await;
    c1.read_until("both snapshots", |f| {
        f.iter().filter(|x| matches!(x, Frame::Tick { .. })).count() >= 2
    })
    .await;
    assert_eq!(
        c1.ticks(a),
        vec![(3, true)],
        "latest tick of {a} as snapshot"
    );
    assert_eq!(c1.ticks(b), vec![(3, true)]);

    let mut want = vec![syms[0].1, syms[1].1];
    want.sort();
    assert_eq!(
        edge.partitions().await,
        want,
        "only the partitions of subscribed symbols"
    );

    // Live ticks follow with no hole or duplicate; the unsubscribed symbol never shows.
    for s in [a, other, b] {
        feed.ticks(s, 20).await;
    }
    feed.flush().await;
    c1.read_until("live ticks", |_| true).await;
    let (a2, b2) = (a.clone(), b.clone());
    c1.read_until("23 ticks each", move |f| {
        let last = |s: &str| {
            f.iter().rev().find_map(|x| match x {
                Frame::Tick { symbol, seq, .. } if symbol == s => Some(*seq),
                _ => None,
            })
        };
        last(&a2) == Some(23) && last(&b2) == Some(23)
    })
    .await;
    for s in [a, b] {
        let seqs = c1.ticks(s);
        assert_eq!(
            seqs.iter().map(|t| t.0).collect::<Vec<_>>(),
            (3..=23).collect::<Vec<_>>(),
            "{s}"
        );
        assert!(
            seqs[1..].iter().all(|t| !t.1),
            "only the first is a snapshot"
        );
        assert_eq!(assert_contiguous_or_announced(&c1.frames, s), 0);
    }
    assert_eq!(c1.symbols_seen(), {
        let mut v = vec![a.clone(), b.clone()];
        v.sort();
        v
    });

    // A later subscriber gets the cached latest tick as its snapshot, then live.
    let mut c2 = Client::connect(edge.addr).await;
    c2.subscribe(&[a]).await;
    c2.read_until("snapshot", |f| {
        f.iter().any(|x| matches!(x, Frame::Tick { .. }))
    })
    .await;
    assert_eq!(c2.ticks(a), vec![(23, true)]);
    feed.ticks(a, 1).await;
    feed.flush().await;
    c2.read_until("live 24", |f| {
        f.iter().any(|x| matches!(x, Frame::Tick { seq: 24, .. }))
    })
    .await;
    assert_eq!(c2.ticks(a), vec![(23, true), (24, false)]);

    // The tick object carries the documented fields, ts exactly as produced.
    let Frame::Tick { raw, .. } = c2
        .frames
        .iter()
        .rev()
        .find(|f| matches!(f, Frame::Tick { .. }))
        .unwrap()
    else {
        unreachable!()
    };
    for field in [
        "symbol", "price", "size", "bid", "ask", "venue", "ts", "seq",
    ] {
        assert!(raw.get(field).is_some(), "tick lacks {field}: {raw}");
    }
    assert!(raw["ts"].is_i64());
    assert!(raw.get("snapshot").is_none());

    let symbols = edge.json("/symbols").await;
    for s in [a, b] {
        assert!(
            symbols.as_array().unwrap().contains(&json!(s)),
            "/symbols lists {s}: {symbols}"
        );
    }
    assert!(
        !symbols.as_array().unwrap().contains(&json!(other)),
        "{other} is not consumed"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_and_releases_partition_after_linger() {
    let broker = Broker::start();
    let partitions = 4;
    let topic = broker.topic(partitions).await;
    let syms = distinct_partition_symbols("UNS", 2, partitions);
    let ((x, px), (y, py)) = (&syms[0], &syms[1]);
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.release_linger = Duration::from_millis(1500)
    })
    .await;
    edge.ready().await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);

    let mut ca = Client::connect(edge.addr).await;
    let mut cb = Client::connect(edge.addr).await;
    ca.subscribe(&[x, y]).await;
    cb.subscribe(&[y]).await;
    eventually("both partitions assigned", || async {
        let mut want = vec![*px, *py];
        want.sort();
        (edge.partitions().await == want).then_some(())
    })
    .await;
    feed.ticks(x, 5).await;
    feed.ticks(y, 5).await;
    feed.flush().await;
    ca.read_until("x and y to 5", |f| {
        let n = |s: &str| {
            f.iter()
                .filter(|t| matches!(t, Frame::Tick { symbol, .. } if symbol == s))
                .count()
        };
        n(x) == 5 && n(y) == 5
    })
    .await;

    ca.send(json!({"op":"unsubscribe","symbols":[x]})).await;
    let v = ca.next_other().await;
    assert_eq!(v, json!({"type":"unsubscribed","symbols":[x]}));
    let frames_at_unsub = ca.frames.len();

    // Ticks of x produced now are consumed (the partition lingers) but not sent.
    feed.ticks(x, 10).await;
    feed.flush().await;
    eventually("x's partition consumed past the new ticks", || async {
        edge.next_offset(*px).await.filter(|o| *o >= 15).map(|_| ())
    })
    .await;
    feed.ticks(y, 3).await;
    feed.flush().await;
    ca.read_until("y to 8", |f| {
        f.iter()
            .any(|t| matches!(t, Frame::Tick { symbol, seq: 8, .. } if symbol == y))
    })
    .await;
    cb.read_until("y to 8", |f| {
        f.iter()
            .any(|t| matches!(t, Frame::Tick { symbol, seq: 8, .. } if symbol == y))
    })
    .await;
    assert!(
        ca.frames[frames_at_unsub..]
            .iter()
            .all(|f| !matches!(f, Frame::Tick { symbol, .. } if symbol == x)),
        "no tick of {x} after unsubscribed"
    );
    assert_eq!(
        cb.ticks(y).iter().map(|t| t.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );

    // After the linger, x's partition is released; y's stays.
    eventually("x's partition released", || async {
        (edge.partitions().await == vec![*py]).then_some(())
    })
    .await;
    assert_eq!(edge.metric("tickfan_assigned_partitions").await, 1.0);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_gets_gap_notices_within_its_outbox_cap() {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let capacity = 512;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.outbox_capacity = capacity;
        c.gateway.socket_send_buffer = 4096;
    })
    .await;
    edge.ready().await;
    let sym = "SLOW";
    let mut slow = Client::connect_with_recv_buffer(edge.addr, Some(4096)).await;
    let mut fast = Client::connect(edge.addr).await;
    slow.subscribe(&[sym]).await;
    fast.subscribe(&[sym]).await;
    eventually("partition assigned", || async {
        (!edge.partitions().await.is_empty()).then_some(())
    })
    .await;

    // Produce in chunks smaller than the outbox, each fully received by the
    // fast client before the next, until the edge has dropped ticks for the
    // stalled client.
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    let mut last;
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        last = feed.ticks(sym, 200).await;
        feed.flush().await;
        fast.read_until("fast client keeps up", |f| {
            f.iter()
                .any(|t| matches!(t, Frame::Tick { seq, .. } if *seq == last))
        })
        .await;
        if edge
            .metric("tickfan_drops_total{reason=\"outbox_full\"}")
            .await
            > 0.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "edge never dropped for the stalled client"
        );
    }
    // Memory held for the clients is bounded by their outbox caps.
    let queued = edge.metric("tickfan_outbox_queued_ticks").await;
    assert!(
        queued <= (2 * capacity) as f64,
        "queued {queued} exceeds the caps"
    );

    // The slow client reads again: everything it gets is in order, and every
    // hole is announced by a gap frame first.
    slow.read_until("slow client catches up", |f| {
        f.iter()
            .any(|t| matches!(t, Frame::Tick { seq, .. } if *seq == last))
    })
    .await;
    let dropped = assert_contiguous_or_announced(&slow.frames, sym);
    assert!(dropped > 0, "the slow client was told about dropped ticks");
    assert!(!slow.gaps(sym).is_empty());
    let got = slow.ticks(sym).len() as i64;
    assert_eq!(
        got + dropped,
        last,
        "received + announced-as-dropped = produced"
    );

    // The normal client on the same edge saw everything, with no gap.
    assert!(fast.gaps(sym).is_empty());
    assert_eq!(
        fast.ticks(sym).iter().map(|t| t.0).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_input_gets_documented_answers() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.max_symbols = 5;
        c.gateway.max_message_bytes = 1024;
    })
    .await;
    let mut c = Client::connect(edge.addr).await;

    async fn expect_error(c: &mut Client, code: &str) -> serde_json::Value {
        let v = c.next_other().await;
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        v
    }

    c.send_raw(Message::text("{not json")).await;
    expect_error(&mut c, "bad_json").await;
    c.send_raw(Message::text("[1,2,3]")).await;
    expect_error(&mut c, "bad_json").await;
    c.send(json!({"op":"launch","symbols":["A"]})).await;
    expect_error(&mut c, "unknown_op").await;
    c.send(json!({"symbols":["A"]})).await;
    expect_error(&mut c, "unknown_op").await;
    c.send(json!({"op":"subscribe"})).await;
    expect_error(&mut c, "bad_symbols").await;
    c.send(json!({"op":"subscribe","symbols":"AAPL"})).await;
    expect_error(&mut c, "bad_symbols").await;
    c.send(json!({"op":"subscribe","symbols":["AAPL", 7]}))
        .await;
    expect_error(&mut c, "bad_symbols").await;
    c.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    expect_error(&mut c, "binary_not_supported").await;

    // Invalid symbols are rejected by name; the valid ones in the same request are taken.
    let long = "X".repeat(33);
    c.send(json!({"op":"subscribe","symbols":["OK1", "", long, "bad sym", "ÄÖ"]}))
        .await;
    assert_eq!(
        c.next_other().await,
        json!({"type":"subscribed","symbols":["OK1"]})
    );
    let e = expect_error(&mut c, "invalid_symbol").await;
    assert_eq!(e["symbols"], json!(["", long, "bad sym", "ÄÖ"]));

    // The per-connection limit (5 here): the excess is rejected by name.
    c.send(json!({"op":"subscribe","symbols":["OK2", "OK3", "OK4", "OK5", "OK6"]}))
        .await;
    assert_eq!(
        c.next_other().await,
        json!({"type":"subscribed","symbols":["OK2", "OK3", "OK4", "OK5"]})
    );
    let e = expect_error(&mut c, "too_many_symbols").await;
    assert_eq!(e["symbols"], json!(["OK6"]));

    // A request naming more symbols than a connection may hold is refused
    // whole, whatever it asks: nothing of it is done.
    let six = json!(["OK1", "OK2", "OK3", "OK4", "OK5", "OK6"]);
    c.send(json!({"op":"unsubscribe","symbols":six})).await;
    let e = expect_error(&mut c, "too_many_symbols").await;
    assert!(e.get("symbols").is_none(), "{e}");
    assert_eq!(edge.metric("tickfan_subscriptions").await, 5.0);

    // Unknown but valid symbols were accepted; the connection still works.
    c.send(json!({"op":"unsubscribe","symbols":["OK1"]})).await;
    assert_eq!(
        c.next_other().await,
        json!({"type":"unsubscribed","symbols":["OK1"]})
    );
    c.send(json!({"op":"subscribe","symbols":["OK6"]})).await;
    assert_eq!(
        c.next_other().await,
        json!({"type":"subscribed","symbols":["OK6"]})
    );

    assert_eq!(edge.metric("tickfan_subscriptions").await, 5.0);
    assert!(
        edge.metric("tickfan_protocol_errors_total{code=\"bad_json\"}")
            .await
            >= 2.0
    );

    // A message over the maximum closes the connection with 1009.
    c.send_raw(Message::text(format!(
        "{{\"op\":\"subscribe\",\"symbols\":[\"{}\"]}}",
        "A".repeat(2000)
    )))
    .await;
    c.read_until("close", |f| matches!(f.last(), Some(Frame::Close(_))))
        .await;
    assert!(
        matches!(c.frames.last(), Some(Frame::Close(Some(1009)))),
        "{:?}",
        c.frames.last()
    );

    // Other clients are unaffected, and the closed session's state is gone.
    let mut d = Client::connect(edge.addr).await;
    d.subscribe(&["OK9"]).await;
    eventually("closed session cleaned up", || async {
        (edge.metric("tickfan_subscriptions").await == 1.0).then_some(())
    })
    .await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_counted_and_skipped() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.max_record_bytes = 512
    })
    .await;
    edge.ready().await;
    let mut c = Client::connect(edge.addr).await;
    let sym = "BAD.REC";
    c.subscribe(&[sym]).await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;

    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    let good = feed.codec.encode(&tick(sym, 1));
    let mut unknown_fp = good.clone();
    unknown_fp[4] ^= 0x55;
    let truncated = &good[..good.len() - 3];
    let mut oversized = good.clone();
    oversized.resize(600, 0);

    feed.ticks(sym, 2).await;
    feed.raw(sym, b"\x00\x01garbage that is not avro").await;
    feed.ticks(sym, 2).await;
    feed.raw(sym, truncated).await;
    feed.raw(sym, &unknown_fp).await;
    feed.ticks(sym, 2).await;
    feed.raw(sym, &oversized).await;
    feed.raw(sym, b"").await;
    feed.ticks(sym, 2).await;
    feed.flush().await;

    c.read_until("all 8 good ticks", |f| {
        f.iter().any(|t| matches!(t, Frame::Tick { seq: 8, .. }))
    })
    .await;
    assert_eq!(
        c.ticks(sym).iter().map(|t| t.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    let m = |r: &'static str| format!("tickfan_decode_errors_total{{reason=\"{r}\"}}");
    assert_eq!(edge.metric(&m("not_single_object")).await, 2.0);
    assert_eq!(edge.metric(&m("malformed")).await, 1.0);
    assert_eq!(edge.metric(&m("unknown_fingerprint")).await, 1.0);
    assert_eq!(edge.metric(&m("oversized")).await, 1.0);
    assert_eq!(edge.metric("tickfan_ticks_consumed_total").await, 8.0);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_and_readiness() {
    let broker = Broker::start();
    let topic = format!("late-{}", rand::random::<u32>());
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    assert_eq!(edge.get("/healthz").await.0, 200);
    let (status, body) = edge.get("/readyz").await;
    assert_eq!(
        status, 503,
        "not ready while the topic does not exist: {body}"
    );
    assert_eq!(
        edge.get("/nope").await,
        (404, r#"{"error":"not found"}"#.to_string())
    );
    assert_eq!(http(edge.addr, "POST", "/healthz").await.0, 405);
    assert_eq!(edge.get("/ws").await.0, 400, "no upgrade headers");
    assert_eq!(edge.get("/").await.0, 404, "the page is off unless enabled");
    let metrics = edge.get("/metrics").await.1;
    for name in [
        "tickfan_connections",
        "tickfan_subscriptions",
        "tickfan_ticks_consumed_total",
        "tickfan_deliveries_total",
        "tickfan_frames_total",
        "tickfan_drops_total",
        "tickfan_decode_errors_total",
        "tickfan_assigned_partitions",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert_eq!(edge.json("/symbols").await, json!([]));

    broker.create_topic(&topic, 2).await;
    edge.ready().await;

    let mut c = Client::connect(edge.addr).await;
    c.subscribe(&["HTTP1"]).await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks("HTTP1", 3).await;
    feed.flush().await;
    c.read_until("3 ticks", |f| {
        f.iter().any(|t| matches!(t, Frame::Tick { seq: 3, .. }))
    })
    .await;
    assert_eq!(edge.metric("tickfan_connections").await, 1.0);
    assert_eq!(edge.metric("tickfan_subscriptions").await, 1.0);
    eventually("deliveries counted", || async {
        (edge.metric("tickfan_deliveries_total").await == 3.0).then_some(())
    })
    .await;
    assert!(edge.metric("tickfan_frames_total").await >= 1.0);
    assert_eq!(edge.json("/symbols").await, json!(["HTTP1"]));
    edge.stop().await;
}

/// GET `path` over a real socket: (status, lower-cased head, body).
async fn get_with_head(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok());
    (
        status.expect("status"),
        head.to_ascii_lowercase(),
        body.into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_js_is_served_with_or_without_the_page() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let plain = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    let paged = Edge::spawn(&broker.bootstrap(), &topic, |c| c.gateway.page = true).await;
    for edge in [&plain, &paged] {
        let (status, head, body) = get_with_head(edge.addr, "/client.js").await;
        assert_eq!(status, 200, "GET /client.js: {head}");
        assert!(
            head.contains("\r\ncontent-type: text/javascript; charset=utf-8"),
            "content type: {head}"
        );
        assert!(
            head.contains("\r\naccess-control-allow-origin: *"),
            "importable cross-origin: {head}"
        );
        assert!(
            body.contains("export class TickfanClient"),
            "an ES module exporting the client"
        );
        assert_eq!(
            http(edge.addr, "POST", "/client.js").await.0,
            405,
            "GET only"
        );
    }
    assert_eq!(
        plain.get("/").await.0,
        404,
        "the page is off unless enabled"
    );
    let (status, page) = paged.get("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("from '/client.js'"),
        "the page imports the served client"
    );
    plain.stop().await;
    paged.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_seq_jumps_regressions_and_resets_follow_the_documented_rules() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    edge.ready().await;
    let mut c = Client::connect(edge.addr).await;
    let sym = "SEQ.RULES";
    c.subscribe(&[sym]).await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;

    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    for seq in [1, 2, 3, 7, 5, 8, 1, 2] {
        let value = feed.codec.encode(&tick(sym, seq));
        feed.raw(sym, &value).await;
    }
    feed.flush().await;
    c.read_until("8 frames", |f| {
        f.iter()
            .filter(|x| matches!(x, Frame::Tick { .. } | Frame::Gap { .. }))
            .count()
            >= 8
    })
    .await;
    let seen: Vec<String> = c
        .frames
        .iter()
        .filter_map(|f| match f {
            Frame::Tick { seq, snapshot, .. } => {
                Some(format!("{seq}{}", if *snapshot { "s" } else { "" }))
            }
            Frame::Gap {
                from_seq, to_seq, ..
            } => Some(format!("gap{from_seq}-{to_seq}")),
            _ => None,
        })
        .collect();
    // First tick is the snapshot; the jump to 7 is announced; 5 is skipped;
    // the reset to 1 arrives as a new snapshot baseline.
    assert_eq!(seen, ["1s", "2", "3", "gap4-6", "7", "8", "1s", "2"]);
    let m = |k: &str| format!("tickfan_seq_anomalies_total{{kind=\"{k}\"}}");
    assert_eq!(edge.metric(&m("jump")).await, 1.0);
    assert_eq!(edge.metric(&m("regress")).await, 1.0);
    assert_eq!(edge.metric(&m("reset")).await, 1.0);
    edge.stop().await;
}

/// /metrics moves with the traffic: connections and subscriptions, one
/// end-to-end latency and one outbox-depth sample per write, the ingest lag of
/// the assigned partition (0 once caught up; gone once released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_connections_deliveries_latency_and_lag() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.release_linger = Duration::from_millis(200);
    })
    .await;
    edge.ready().await;
    let mut c = Client::connect(edge.addr).await;
    let sym = "MET1";
    c.subscribe(&[sym]).await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;
    assert_eq!(edge.metric("tickfan_connections").await, 1.0);
    assert_eq!(edge.metric("tickfan_subscriptions").await, 1.0);

    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks(sym, 5).await;
    feed.flush().await;
    c.read_until("5 ticks", |f| {
        f.iter().any(|t| matches!(t, Frame::Tick { seq: 5, .. }))
    })
    .await;
    eventually("5 deliveries counted", || async {
        (edge.metric("tickfan_deliveries_total").await == 5.0).then_some(())
    })
    .await;
    let writes = edge.metric("tickfan_outbox_depth_ticks_count").await;
    assert!(writes >= 1.0, "one depth sample per write");
    assert_eq!(
        edge.metric("tickfan_outbox_depth_ticks_sum").await,
        5.0,
        "the writes drained the 5 ticks"
    );
    assert_eq!(
        edge.metric("tickfan_e2e_latency_seconds_count").await,
        writes,
        "one latency sample per write"
    );
    let latency = edge.metric("tickfan_e2e_latency_seconds_sum").await;
    assert!(
        latency > 0.0 && latency < 60.0 * writes,
        "latency sum {latency} s over {writes} writes"
    );
    let lag = format!("tickfan_ingest_lag_records{{topic=\"{topic}\",partition=\"0\"}}");
    eventually("lag reported and caught up", || async {
        let (_, body) = edge.get("/metrics").await;
        body.lines().any(|l| l == format!("{lag} 0")).then_some(())
    })
    .await;

    drop(c);
    eventually("connection and subscription gone", || async {
        (edge.metric("tickfan_connections").await == 0.0
            && edge.metric("tickfan_subscriptions").await == 0.0)
            .then_some(())
    })
    .await;
    eventually("released partition's lag gone", || async {
        let (_, body) = edge.get("/metrics").await;
        (!body.contains(&lag)).then_some(())
    })
    .await;
    edge.stop().await;
}

/// `--log-format json`: every line a real `tickfan edge` writes to stderr is
/// one JSON object with a level and a message; with RUST_LOG at debug/trace,
/// events carry their span: `session` (per connection, with the peer) and
/// `ingest_batch` (per poll batch, with its record count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_spans() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let rust_log = "info,tickfan::gateway=debug,tickfan::ingest::consumer=trace";
    let mut edge = EdgeProcess::spawn_env(
        &broker.bootstrap(),
        &topic,
        &["--log-format", "json"],
        &[("RUST_LOG", rust_log)],
    )
    .await;
    let mut c = Client::connect(edge.addr).await;
    c.subscribe(&["LOG1"]).await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks("LOG1", 3).await;
    feed.flush().await;
    c.read_until("3 ticks", |f| {
        f.iter().any(|t| matches!(t, Frame::Tick { seq: 3, .. }))
    })
    .await;
    drop(c);
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("edge-{}.log", edge.addr.port()));
    // Assigning the subscribed symbol's partition is logged at info.
    let lines = eventually("assignment, batch and session end logged", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("assigning partition")
            && text.contains("ingest batch handled")
            && text.contains("session dropped"))
        .then(|| text.lines().map(str::to_owned).collect::<Vec<_>>())
    })
    .await;
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "no level: {line}");
        assert!(v["timestamp"].is_string(), "no timestamp: {line}");
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
    }
    let assigned = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["fields"]["message"] == "assigning partition")
        .expect("assignment line");
    assert_eq!(assigned["fields"]["topic"], topic.as_str());
    assert_eq!(assigned["level"], "INFO");
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ended = parsed
        .iter()
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("session dropped"))
        })
        .unwrap();
    assert_eq!(ended["span"]["name"], "session", "{ended}");
    assert!(
        ended["span"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{ended}"
    );
    let batch = parsed
        .iter()
        .find(|v| v["fields"]["message"] == "ingest batch handled")
        .unwrap();
    assert_eq!(batch["span"]["name"], "ingest_batch", "{batch}");
    edge.child.kill().await.unwrap();
}

/// `tickfan demo` on SIGTERM keeps its feed running while its sessions
/// drain: clients still get fresh ticks (stamped after the signal) until
/// the edge closes them at their `reconnect` hint. Before, the feed stopped
/// with the signal and the page showed frozen prices as live for up to the
/// drain window. Ten clients: the latest close among them is almost surely
/// well after the signal (each is uniform over the 5 s window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_feed_runs_until_its_sessions_have_drained() {
    let (demo, addr) = spawn_demo(
        &[
            "--rate",
            "200",
            "--symbols",
            "AAPL,MSFT",
            "--drain-window",
            "5s",
            "--shutdown-grace",
            "10s",
        ],
        std::process::Stdio::null(),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut c = Client::connect(addr).await;
        c.subscribe(&["AAPL", "MSFT"]).await;
        c.read_until("a live tick", |f| {
            f.iter().any(|t| {
                matches!(
                    t,
                    Frame::Tick {
                        snapshot: false,
                        ..
                    }
                )
            })
        })
        .await;
        clients.push(c);
    }
    let signalled = tickfan::market::now_micros();
    let pid = demo.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Each client reads until its close; the one closed last shows whether
    // ticks kept coming.
    let mut latest: Option<(u64, i64)> = None;
    for c in &mut clients {
        c.read_until("the drain's close", |f| {
            f.iter().any(|x| matches!(x, Frame::Close(_)))
        })
        .await;
        let hint = c
            .frames
            .iter()
            .find_map(|f| match f {
                Frame::Other(v) if v["type"] == "reconnect" => v["after_ms"].as_u64(),
                _ => None,
            })
            .expect("a reconnect hint before the close");
        let newest = c
            .tick_values(None)
            .iter()
            .filter_map(|t| t["ts"].as_i64())
            .max()
            .unwrap();
        if latest.is_none_or(|(h, _)| hint > h) {
            latest = Some((hint, newest));
        }
    }
    let (hint, newest) = latest.unwrap();
    assert!(
        hint >= 1000,
        "the latest close was {hint} ms after the signal"
    );
    // A tick stamped at least half a second after the signal reached the
    // client that stayed longest.
    assert!(
        newest >= signalled + 500_000,
        "the newest tick was stamped {} ms after the signal; the client stayed {hint} ms",
        (newest - signalled) / 1000
    );
}

/// The binary starts jemalloc's background thread (`_rjem_malloc_conf` in
/// src/bin/tickfan.rs), which returns freed pages to the OS while the edge
/// is idle: without it the pages of a connect storm stay resident
/// (BENCHMARKS.md, "Idle connections").
#[cfg(feature = "jemalloc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_jemallocs_background_thread() {
    let (demo, _addr) = spawn_demo(&[], std::process::Stdio::null()).await;
    let pid = demo.id().unwrap();
    eventually("a jemalloc_bg_thd thread in the process", || async {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .any(|name| name.trim() == "jemalloc_bg_thd")
            .then_some(())
    })
    .await;
}
