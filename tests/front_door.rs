//! The front door: admission (rates, connection cap), reconnect storms,
//! graceful drain on SIGTERM, and hostile connections. Real sockets, real
//! edge processes where signals are involved.

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::*;
use tickfan::client::{self, Event};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::Instant,
};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

/// A WebSocket handshake from `from`: Ok(stream) or Err((status, Retry-After)).
async fn handshake(
    addr: SocketAddr,
    from: IpAddr,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, (u16, Option<u64>)> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(addr).await.expect("tcp connect");
    match tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(r)) => {
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            Err((r.status().as_u16(), retry))
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_answers_429_with_retry_after_and_503_at_the_cap() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.admission.connect_rate_per_ip = 1;
        c.admission.connect_burst_per_ip = 2;
        c.admission.max_connections = 3;
    })
    .await;
    let a1 = handshake(edge.addr, ip("127.0.0.1"))
        .await
        .expect("1st from .1");
    let a2 = handshake(edge.addr, ip("127.0.0.1"))
        .await
        .expect("2nd from .1");
    let (status, retry) = handshake(edge.addr, ip("127.0.0.1"))
        .await
        .err()
        .unwrap_or_else(|| panic!("3rd from .1 is over its rate"));
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After on 429");
    let b1 = handshake(edge.addr, ip("127.0.0.2"))
        .await
        .expect("other address still admitted");
    let (status, retry) = handshake(edge.addr, ip("127.0.0.3"))
        .await
        .err()
        .unwrap_or_else(|| panic!("cap reached"));
    assert_eq!(status, 503);
    assert!(retry.is_some());
    assert_eq!(
        edge.metric("tickfan_admission_rejections_total{reason=\"ip_rate\"}")
            .await,
        1.0
    );
    assert_eq!(
        edge.metric("tickfan_admission_rejections_total{reason=\"connection_cap\"}")
            .await,
        1.0
    );
    // Closing a connection frees its slot.
    drop(a1);
    eventually("slot freed", || async {
        (edge.metric("tickfan_connections").await == 2.0).then_some(())
    })
    .await;
    let c1 = handshake(edge.addr, ip("127.0.0.3"))
        .await
        .expect("admitted after a slot freed");
    drop((a2, b1, c1));
    edge.stop().await;
}

/// The edge's `tickfan_admissions_total`.
async fn admissions(addr: std::net::SocketAddr) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix("tickfan_admissions_total "))
        .expect("tickfan_admissions_total")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_is_admitted_at_the_configured_rate_without_hurting_connected_clients() {
    const N: usize = 2000;
    const RATE: u32 = 500;
    const BURST: u32 = 100;
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(
        &broker.bootstrap(),
        &topic,
        global_admission_only(RATE, BURST),
    )
    .await;
    edge.ready().await;

    // Clients connected before the storm, with a steady feed.
    let mut before = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(edge.addr).await;
        c.subscribe(&["CALM"]).await;
        before.push(c);
    }
    eventually("partition assigned", || async {
        (!edge.partitions().await.is_empty()).then_some(())
    })
    .await;
    let stop = CancellationToken::new();
    let feeding = {
        let (brokers, topic, stop) = (broker.bootstrap(), topic.clone(), stop.clone());
        tokio::spawn(async move {
            let mut feed = Feed::new(&brokers, &topic);
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            let mut last = 0;
            while !stop.is_cancelled() {
                pace.tick().await;
                last = feed.ticks("CALM", 1).await;
            }
            feed.flush().await;
            last
        })
    };

    // The storm: N reference clients over 20 source addresses, all at once,
    // each retrying with exponential backoff + full jitter and honouring
    // Retry-After.
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::new();
    for i in 0..N {
        let config = client::Config {
            endpoints: vec![format!("ws://{}/ws", edge.addr)],
            symbols: vec![],
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(2),
            local_addr: Some(ip(&format!("127.0.0.{}", 1 + i % 20))),
            ..client::Config::default()
        };
        let (mut events, task) = client::spawn(config, shutdown.clone());
        tasks.push(task);
        let tx = conn_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let Event::Connected { .. } = e {
                    let _ = tx.send(Instant::now());
                }
            }
        });
    }
    // Samples of the edge's admission counter: (request sent, answer got,
    // count), until every client is in.
    let sampler = {
        let addr = edge.addr;
        tokio::spawn(async move {
            let mut samples: Vec<(Instant, Instant, f64)> = Vec::new();
            loop {
                let sent = Instant::now();
                let n = admissions(addr).await;
                samples.push((sent, Instant::now(), n));
                if n >= (N + 3) as f64 {
                    return samples;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut admitted: Vec<Instant> = Vec::with_capacity(N);
    let end = start + DEADLINE;
    while admitted.len() < N {
        let t = tokio::time::timeout_at(end, conn_rx.recv())
            .await
            .expect("storm admitted in time")
            .unwrap();
        admitted.push(t);
    }
    let took = admitted.iter().max().unwrap().duration_since(start);
    // Never faster than the limit, measured where admission happens: the
    // edge's admission counter, sampled. A sample taken between `sent` and
    // `got` holds the count at some instant in between, so between two
    // samples i < j at most RATE x (got_j - sent_i) + BURST were admitted,
    // whatever delays a busy machine puts on the requests (+2: an admission
    // is counted just after it is made, on one of the edge's 2 workers).
    let samples = sampler.await.unwrap();
    assert_eq!(
        samples.last().unwrap().2,
        (N + 3) as f64,
        "the edge counted every admission (the storm and the 3 clients before it)"
    );
    for (i, (sent_i, _, n_i)) in samples.iter().enumerate() {
        for (_, got_j, n_j) in &samples[i + 1..] {
            let window = got_j.duration_since(*sent_i).as_secs_f64();
            assert!(
                n_j - n_i <= RATE as f64 * window + BURST as f64 + 2.0,
                "{} admissions within {window:.2} s (rate {RATE}/s, burst {BURST})",
                n_j - n_i
            );
        }
    }
    // And everyone got in within the time the rate implies, plus slack for
    // the clients' Retry-After (whole seconds) and jitter.
    let implied = (N as f64 - BURST as f64) / RATE as f64;
    assert!(
        took.as_secs_f64() <= implied + 6.0,
        "storm took {took:?}, rate implies {implied:.1}s"
    );
    assert!(
        edge.metric("tickfan_admission_rejections_total{reason=\"global_rate\"}")
            .await
            > 0.0
    );

    // Clients connected before the storm kept receiving, with no gap.
    stop.cancel();
    let last = feeding.await.unwrap();
    for c in &mut before {
        c.read_until("all CALM ticks", |f| {
            f.iter()
                .any(|x| matches!(x, Frame::Tick { seq, .. } if *seq == last))
        })
        .await;
        assert!(c.gaps("CALM").is_empty());
        assert_contiguous_or_announced(&c.frames, "CALM");
        let first = c.ticks("CALM")[0].0;
        assert_eq!(
            c.ticks("CALM").len() as i64,
            last - first + 1,
            "every tick, once"
        );
    }
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_with_paced_reconnect_hints_and_1012() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let window = Duration::from_secs(2);
    let mut edge = EdgeProcess::spawn(
        &broker.bootstrap(),
        &topic,
        &["--drain-window", "2s", "--shutdown-grace", "6s"],
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", edge.addr))
            .await
            .unwrap();
        clients.push(ws);
    }
    // Each client records when its hint and its close arrive.
    let sent = Instant::now();
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let (mut hint, mut close) = (None, None);
                while let Some(Ok(m)) = ws.next().await {
                    match m {
                        Message::Text(t) => {
                            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                            if v["type"] == "reconnect" {
                                hint = Some((Instant::now(), v["after_ms"].as_u64().unwrap()));
                            }
                        }
                        Message::Close(c) => {
                            close = Some((Instant::now(), c.map(|c| u16::from(c.code))));
                            break;
                        }
                        _ => {}
                    }
                }
                (hint, close)
            })
        })
        .collect();
    edge.signal("-TERM");
    let addr = edge.addr;
    eventually("readyz 503 while draining", || async move {
        (http_get(addr, "/readyz").await.0 == 503).then_some(())
    })
    .await;
    let refused = handshake(addr, ip("127.0.0.1"))
        .await
        .err()
        .unwrap_or_else(|| panic!("no new sessions while draining"));
    assert_eq!(refused.0, 503);

    let mut afters = Vec::new();
    for w in watchers {
        let (hint, close) = tokio::time::timeout(DEADLINE, w).await.unwrap().unwrap();
        let (hint_at, after_ms) = hint.expect("every client gets a reconnect hint");
        let (close_at, code) = close.expect("every client is closed");
        assert_eq!(code, Some(1012), "service restart");
        assert!(
            after_ms <= window.as_millis() as u64,
            "hint within the drain window"
        );
        let expected = hint_at + Duration::from_millis(after_ms);
        let off = if close_at > expected {
            close_at - expected
        } else {
            expected - close_at
        };
        assert!(
            off < Duration::from_millis(750),
            "closed {off:?} away from the hinted time"
        );
        afters.push(after_ms);
    }
    // Spread over the window, not all at once.
    let (lo, hi) = (*afters.iter().min().unwrap(), *afters.iter().max().unwrap());
    assert!(
        hi - lo >= 1000,
        "hints spread over the window: {lo}..{hi} ms"
    );
    let per_quarter = afters.iter().fold([0; 4], |mut q, a| {
        q[((*a as usize) * 4 / 2001).min(3)] += 1;
        q
    });
    assert!(
        per_quarter.iter().all(|n| *n < 30),
        "no quarter of the window takes most clients: {per_quarter:?}"
    );

    let status = tokio::time::timeout(Duration::from_secs(10), edge.child.wait())
        .await
        .expect("exits within grace");
    assert!(status.unwrap().success(), "clean exit");
    assert!(sent.elapsed() < Duration::from_secs(6) + Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let mut edge = EdgeProcess::spawn(
        &broker.bootstrap(),
        &topic,
        &["--drain-window", "60s", "--shutdown-grace", "90s"],
    )
    .await;
    let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", edge.addr))
        .await
        .unwrap();
    edge.signal("-TERM");
    let addr = edge.addr;
    eventually("draining", || async move {
        (http_get(addr, "/readyz").await.0 == 503).then_some(())
    })
    .await;
    edge.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), edge.child.wait())
        .await
        .expect("exits at once");
    assert_eq!(status.unwrap().code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_dead_connections_are_dropped_and_floods_are_limited() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.gateway.handshake_timeout = Duration::from_millis(500);
        c.gateway.ping_interval = Duration::from_millis(200);
        c.gateway.idle_timeout = Duration::from_millis(700);
        c.gateway.write_timeout = Duration::from_millis(400);
        c.gateway.control_rate = 5;
        c.gateway.control_burst = 5;
    })
    .await;

    async fn closed_by_edge(mut s: TcpStream) {
        let mut buf = [0u8; 4096];
        let end = Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(end, s.read(&mut buf))
                .await
                .expect("edge closes the connection")
            {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // pings, an error response: ignored
            }
        }
    }
    // A client that opens TCP and says nothing.
    closed_by_edge(TcpStream::connect(edge.addr).await.unwrap()).await;
    // One that starts a handshake and stalls.
    let mut partial = TcpStream::connect(edge.addr).await.unwrap();
    partial
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_edge(partial).await;
    // One that completes the upgrade, then never answers a ping: a dead peer.
    let mut dead = TcpStream::connect(edge.addr).await.unwrap();
    dead.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    dead.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    closed_by_edge(dead).await;
    eventually("dead session cleaned up", || async {
        (edge.metric("tickfan_connections").await == 0.0).then_some(())
    })
    .await;

    // A flood of control messages: the excess is refused, the connection stays.
    let mut c = Client::connect(edge.addr).await;
    for i in 0..30 {
        c.send(json!({"op":"subscribe","symbols":[format!("F{i}")]}))
            .await;
    }
    c.read_until("rate_limited", |f| {
        f.iter()
            .any(|x| matches!(x, Frame::Other(v) if v["code"] == "rate_limited"))
    })
    .await;
    let accepted = c
        .frames
        .iter()
        .filter(|x| matches!(x, Frame::Other(v) if v["type"] == "subscribed"))
        .count();
    assert!(accepted < 30, "not every message of the flood was taken");
    // Once the rate allows again, requests are served. (A message over the
    // limit is ignored, with at most one notice a second, so ask again until
    // an answer comes.)
    let end = Instant::now() + DEADLINE;
    loop {
        c.send(json!({"op":"subscribe","symbols":["AFTER"]})).await;
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), c.next_other()).await {
            if got["type"] == "subscribed" && got["symbols"] == json!(["AFTER"]) {
                break;
            }
        }
        assert!(Instant::now() < end, "never served again");
    }
    let _ = c.ws_mut().send(Message::Close(None)).await;
    edge.stop().await;
}

const SECRET: &str = "test-only-secret-of-at-least-32-bytes!!";

fn token(exp_in_secs: i64, aud: &str, symbols: Option<&[&str]>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims =
        json!({"sub": "trader-1", "aud": aud, "iss": "tickfan-tests", "exp": now + exp_in_secs});
    if let Some(s) = symbols {
        claims["symbols"] = json!(s);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// (status, body) of a handshake with optional bearer header and query.
async fn try_handshake(
    addr: SocketAddr,
    bearer: Option<&str>,
    query: &str,
) -> Result<Client, (u16, String)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, _)) => Ok(Client::from_ws(ws)),
        Err(tungstenite::Error::Http(r)) => {
            let body = r
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err((r.status().as_u16(), body))
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_is_checked_before_the_upgrade_and_entitlements_per_symbol() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.jwt_audience = Some("tickfan".into());
        c.auth.jwt_issuer = Some("tickfan-tests".into());
        c.auth.jwt_leeway = Duration::ZERO;
    })
    .await;
    let a = edge.addr;
    let refused = |r: Result<Client, (u16, String)>| r.err().unwrap_or_else(|| panic!("refused"));
    let (status, body) = refused(try_handshake(a, None, "").await);
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"missing token"}"#)
    );
    let (status, body) = refused(try_handshake(a, Some("not.a.jwt"), "").await);
    assert_eq!(status, 401);
    assert!(
        !body.contains("Base64") && !body.contains("Json"),
        "no internal detail: {body}"
    );
    assert_eq!(
        refused(try_handshake(a, Some(&token(-60, "tickfan", None)), "").await).0,
        401
    );
    let (status, body) =
        refused(try_handshake(a, Some(&token(600, "someone-else", None)), "").await);
    assert_eq!(status, 401);
    assert!(body.contains("audience"), "{body}");
    let tampered = format!("{}x", token(600, "tickfan", None));
    assert_eq!(refused(try_handshake(a, Some(&tampered), "").await).0, 401);
    assert!(
        edge.metric("tickfan_auth_failures_total{reason=\"expired\"}")
            .await
            >= 1.0
    );

    // Header or query parameter (browsers cannot set headers).
    try_handshake(a, Some(&token(600, "tickfan", None)), "")
        .await
        .expect("bearer header");
    let mut c = try_handshake(
        a,
        None,
        &format!("?token={}", token(600, "tickfan", Some(&["AAPL", "FX:*"]))),
    )
    .await
    .expect("query token");
    c.send(json!({"op":"subscribe","symbols":["AAPL","MSFT","FX:EURUSD","FX:GBPUSD"]}))
        .await;
    assert_eq!(
        c.next_other().await,
        json!({"type":"subscribed","symbols":["AAPL","FX:EURUSD","FX:GBPUSD"]})
    );
    let e = c.next_other().await;
    assert_eq!(
        (e["code"].as_str(), &e["symbols"]),
        (Some("not_entitled"), &json!(["MSFT"]))
    );

    // In-band refresh: a narrower token ends the subscriptions it no longer covers.
    c.send(json!({"op":"auth","token": token(600, "tickfan", Some(&["AAPL"]))}))
        .await;
    let ok = c.next_other().await;
    assert_eq!(ok["type"], "authenticated");
    assert!(ok["exp"].as_u64().is_some());
    assert_eq!(
        c.next_other().await,
        json!({"type":"unsubscribed","symbols":["FX:EURUSD","FX:GBPUSD"]})
    );
    assert_eq!(c.next_other().await["code"], "not_entitled");
    c.send(json!({"op":"auth","token":"garbage"})).await;
    assert_eq!(c.next_other().await["code"], "auth_failed");

    // Subprotocol (how browsers keep the token out of the URL): offered as
    // `tickfan, tickfan.bearer.<jwt>`, the edge selects `tickfan`; a refusal
    // delivered in band selects it too, or a browser would fail the socket
    // before reading the close.
    let offer = |jwt: &str, query: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{a}/ws{query}").into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("tickfan, tickfan.bearer.{jwt}").parse().unwrap(),
        );
        async move {
            let stream = TcpStream::connect(a).await.unwrap();
            tokio_tungstenite::client_async(req, stream).await
        }
    };
    let (ws, resp) = offer(&token(600, "tickfan", Some(&["AAPL"])), "")
        .await
        .expect("subprotocol token");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "tickfan");
    let mut c = Client::from_ws(ws);
    assert_eq!(
        c.subscribe(&["AAPL"]).await,
        json!({"type":"subscribed","symbols":["AAPL"]})
    );
    let (ws, resp) = offer("not.a.jwt", "?reject=close")
        .await
        .expect("upgraded to be told");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "tickfan");
    let (code, reason) = refusal_frame(ws).await;
    assert_eq!((code, reason), (4401, json!({"error": "invalid token"})));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_close_with_4001_unless_refreshed() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.jwt_leeway = Duration::ZERO;
        c.auth.jwt_expiry_grace = Duration::from_millis(500);
    })
    .await;
    edge.ready().await;
    // Tokens valid for 2 s; one session refreshes, the other does not.
    let mut stale = try_handshake(edge.addr, Some(&token(2, "any", None)), "")
        .await
        .unwrap();
    let mut fresh = try_handshake(edge.addr, Some(&token(2, "any", None)), "")
        .await
        .unwrap();
    fresh
        .send(json!({"op":"auth","token": token(600, "any", None)}))
        .await;
    assert_eq!(fresh.next_other().await["type"], "authenticated");
    fresh.subscribe(&["ALIVE"]).await;
    stale
        .read_until("closed at expiry", |f| {
            matches!(f.last(), Some(Frame::Close(_)))
        })
        .await;
    assert!(
        matches!(stale.frames.last(), Some(Frame::Close(Some(4001)))),
        "{:?}",
        stale.frames.last()
    );
    let closed_at = std::time::SystemTime::now();
    // The refreshed session still gets ticks produced after the other's deadline.
    eventually("partition assigned", || async {
        (!edge.partitions().await.is_empty()).then_some(())
    })
    .await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks("ALIVE", 1).await;
    feed.flush().await;
    fresh
        .read_until("a tick after the expiry", |f| {
            f.iter().any(|x| matches!(x, Frame::Tick { .. }))
        })
        .await;
    assert!(std::time::SystemTime::now() > closed_at);
    edge.stop().await;
}

/// The first frame of `ws`: must be a close frame; its code and JSON reason.
async fn refusal_frame(
    mut ws: tokio_tungstenite::WebSocketStream<TcpStream>,
) -> (u16, serde_json::Value) {
    let msg = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("a frame before the deadline")
        .expect("stream open")
        .expect("a frame");
    let Message::Close(Some(frame)) = msg else {
        panic!("expected a close frame, got {msg:?}")
    };
    let reason: serde_json::Value =
        serde_json::from_str(&frame.reason).expect("the reason is JSON");
    // The edge ends the connection after the close handshake.
    let end = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("closed");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "nothing after the close"
    );
    (frame.code.into(), reason)
}

/// With `?reject=close` (browsers cannot read a refused handshake), a
/// refusal is `101` and at once a close frame: 1013 with `retry_after_ms` for
/// 429/503, 4401 with the auth error for 401. It is counted like the HTTP
/// refusal and never becomes a connection; without the parameter the answer
/// stays HTTP. An admitted `reject=close` session starts with a `status`
/// frame, so the client knows at once it was admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_as_close_frames_when_the_client_asks() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.admission.connect_rate_per_ip = 1;
        c.admission.connect_burst_per_ip = 1;
    })
    .await;
    let connect = |query: &'static str| async move {
        let stream = TcpStream::connect(edge.addr).await.unwrap();
        tokio_tungstenite::client_async(format!("ws://{}/ws{query}", edge.addr), stream).await
    };
    edge.ready().await;
    let (mut admitted, _) = connect("?reject=close").await.expect("1st admitted");
    let first = tokio::time::timeout(DEADLINE, admitted.next())
        .await
        .expect("a first frame")
        .expect("open")
        .expect("a frame");
    assert_eq!(
        first,
        Message::text(r#"{"type":"status","feed":"live"}"#),
        "admitted in-band clients are told at once"
    );
    let (refused, response) = connect("?reject=close").await.expect("upgraded to be told");
    assert_eq!(response.status(), 101);
    let (code, reason) = refusal_frame(refused).await;
    assert_eq!(code, 1013, "Try Again Later");
    assert_eq!(reason["error"], "too many new connections; retry later");
    assert!(
        reason["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms >= 1000),
        "{reason}"
    );
    match connect("").await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected HTTP 429 without reject=close, got {other:?}"),
    }
    assert_eq!(
        edge.metric("tickfan_admission_rejections_total{reason=\"ip_rate\"}")
            .await,
        2.0
    );
    assert_eq!(edge.metric("tickfan_connections").await, 1.0);
    drop(admitted);
    edge.stop().await;

    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.auth.jwt_secret = Some(SECRET.into());
    })
    .await;
    for (query, error) in [
        ("?reject=close", "missing token"),
        ("?token=not.a.jwt&reject=close", "invalid token"),
    ] {
        let stream = TcpStream::connect(edge.addr).await.unwrap();
        let (ws, _) =
            tokio_tungstenite::client_async(format!("ws://{}/ws{query}", edge.addr), stream)
                .await
                .expect("upgraded to be told");
        let (code, reason) = refusal_frame(ws).await;
        assert_eq!(code, 4401, "{query}");
        assert_eq!(reason, json!({ "error": error }), "{query}");
    }
    assert_eq!(edge.metric("tickfan_connections").await, 0.0);
    edge.stop().await;
}
