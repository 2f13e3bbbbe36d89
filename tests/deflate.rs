//! permessage-deflate (RFC 7692) end to end (issue 18): what the handshake
//! answers to which offer, and ticks from Kafka reaching compressing and
//! plain clients alike, in order, with the edge's compression counted. The
//! hostile side (deflate bombs, broken compressed frames) is in
//! `tests/hostile.rs`; the browser's own deflate in `tests/browser`.

mod support;

use std::time::Duration;

use support::*;
use tickfan::client::{self, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The response head (lower case) to a handshake for `path` offering
/// `extensions` (if any); and its socket.
async fn handshake_head(
    addr: std::net::SocketAddr,
    path: &str,
    extensions: Option<&str>,
) -> (tokio::net::TcpStream, String) {
    let ext = extensions
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    let (s, head) = raw_handshake(addr, None, path, &ext).await;
    (s, head.to_ascii_lowercase())
}

const ANSWER: &str = "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_accepts_a_valid_offer_only_when_the_edge_is_configured_to() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let on = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.permessage_deflate = true
    })
    .await;
    let capped = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.permessage_deflate = true;
        c.admission.max_connections_per_ip = 1;
    })
    .await;
    let off = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    // What Chromium and Firefox offer.
    let browser = "permessage-deflate; client_max_window_bits";
    let (_, head) = handshake_head(on.addr, "/ws", Some(browser)).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains(ANSWER), "{head}");
    // A refusal delivered in band (`?reject=close`: 101, then a close
    // frame) never negotiates it: the address's one connection is held.
    let (_held, head) = handshake_head(capped.addr, "/ws", Some(browser)).await;
    assert!(head.contains(ANSWER), "{head}");
    let (_, head) = handshake_head(capped.addr, "/ws?reject=close", Some(browser)).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    assert_eq!(
        capped
            .metric("tickfan_admission_rejections_total{reason=\"ip_connection_cap\"}")
            .await,
        1.0
    );
    // Not offered, declined, or not configured: no extension, still a 101.
    for (addr, offer) in [
        (on.addr, None),
        (
            on.addr,
            Some("permessage-deflate; server_max_window_bits=10"),
        ),
        (on.addr, Some("permessage-deflate; unknown_param")),
        (off.addr, Some(browser)),
    ] {
        let (_, head) = handshake_head(addr, "/ws", offer).await;
        assert!(head.starts_with("http/1.1 101"), "{offer:?}: {head}");
        assert!(
            !head.contains("sec-websocket-extensions"),
            "{offer:?}: {head}"
        );
    }
    on.stop().await;
    off.stop().await;
    capped.stop().await;
}

/// A reference client of `symbols`, offering permessage-deflate when
/// `deflate`; its events.
fn spawn_client(
    addr: std::net::SocketAddr,
    symbols: &[&str],
    deflate: bool,
    stop: &CancellationToken,
) -> mpsc::Receiver<Event> {
    let config = client::Config {
        endpoints: vec![format!("ws://{addr}/ws")],
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        deflate,
        ..client::Config::default()
    };
    client::spawn(config, stop.clone()).0
}

/// Reads events until every symbol's live ticks reached `last`; fails on a
/// disconnect, a gap or a tick out of order.
async fn live_ticks_until(events: &mut mpsc::Receiver<Event>, symbols: &[&str], last: i64) {
    let mut seen: std::collections::BTreeMap<String, i64> = Default::default();
    tokio::time::timeout(Duration::from_secs(60), async {
        while symbols
            .iter()
            .any(|s| seen.get(*s).copied().unwrap_or(0) < last)
        {
            match events.recv().await.expect("client running") {
                Event::Tick(t) => {
                    let prev = seen.entry(t.symbol.clone()).or_insert(0);
                    assert!(
                        t.seq == *prev + 1 || (*prev == 0 && t.snapshot),
                        "{}: {} after {}",
                        t.symbol,
                        t.seq,
                        prev
                    );
                    *prev = t.seq;
                }
                Event::Disconnected { reason, .. } => panic!("disconnected: {reason}"),
                Event::Gap { .. } => panic!("gap"),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("ticks up to {last} of {symbols:?}; got {seen:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_from_kafka_reach_compressing_and_plain_clients_in_order() {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let symbols = ["AAPL", "MSFT"];
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    for s in symbols {
        feed.ticks(s, 1).await; // cached, so subscribers start from a snapshot
    }
    feed.flush().await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.permessage_deflate = true;
        c.gateway.deflate_min_bytes = 64;
    })
    .await;
    edge.ready().await;
    let stop = CancellationToken::new();
    let mut compressing = spawn_client(edge.addr, &symbols, true, &stop);
    let mut plain = spawn_client(edge.addr, &symbols, false, &stop);
    edge.metric_reaches("tickfan_subscriptions", 4.0).await;
    for _ in 0..100 {
        for s in symbols {
            feed.ticks(s, 1).await;
        }
    }
    feed.flush().await;
    live_ticks_until(&mut compressing, &symbols, 101).await;
    live_ticks_until(&mut plain, &symbols, 101).await;
    // The compressing client's frames went compressed (ticks of ~150 bytes
    // over a 64-byte threshold), the plain client's did not: at most as
    // many compressed frames as the compressing client's frames.
    let deflated = edge.metric("tickfan_deflate_frames_total").await;
    let frames = edge.metric("tickfan_frames_total").await;
    assert!(
        deflated >= 1.0 && deflated < frames,
        "{deflated} of {frames}"
    );
    let text = edge.metric("tickfan_deflate_text_bytes_total").await;
    let sent = edge.metric("tickfan_deflate_sent_bytes_total").await;
    assert!(sent > 0.0 && sent < text, "{sent} bytes sent for {text}");
    for reason in ["invalid_deflate", "protocol_error", "message_too_big"] {
        let series = format!("tickfan_sessions_ended_total{{reason=\"{reason}\"}}");
        assert_eq!(edge.metric(&series).await, 0.0, "{reason}");
    }
    stop.cancel();
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_deflate_to_an_edge_without_it_gets_plain_frames() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks("AAPL", 1).await;
    feed.flush().await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    edge.ready().await;
    let stop = CancellationToken::new();
    let mut events = spawn_client(edge.addr, &["AAPL"], true, &stop);
    edge.metric_reaches("tickfan_subscriptions", 1.0).await;
    feed.ticks("AAPL", 20).await;
    feed.flush().await;
    live_ticks_until(&mut events, &["AAPL"], 21).await;
    assert_eq!(edge.metric("tickfan_deflate_frames_total").await, 0.0);
    stop.cancel();
    edge.stop().await;
}
