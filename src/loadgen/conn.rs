//! One client's connection: connecting (with the reference client's retry
//! policy, offering permessage-deflate when asked), subscribing, and reading
//! tick frames into the [`Shared`] counts.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{
    tungstenite::{self, Message},
    WebSocketStream,
};
use tokio_util::sync::CancellationToken;

use super::{plan::SubscribeOptions, shared::Shared, Protocol};
use crate::{client, codec::deflate::Inflating, feed::now_micros};

/// Always over [`Inflating`]: it counts the bytes read from the socket, and
/// inflates compressed frames once permessage-deflate is negotiated.
type Ws = WebSocketStream<Inflating<TcpStream>>;

/// Where one client connects, from which source address, and whether it
/// offers permessage-deflate.
pub(super) struct Target {
    pub(super) url: String,
    pub(super) from: Option<IpAddr>,
    pub(super) deflate: bool,
}

/// Why one connection attempt failed.
enum Failure {
    /// The handshake got an HTTP answer other than 101.
    Rejected {
        status: u16,
        retry_after: Option<Duration>,
    },
    Other(String),
}

async fn tcp(t: &Target) -> anyhow::Result<TcpStream> {
    let uri: http::Uri = t.url.parse()?;
    let addr = tokio::net::lookup_host((
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(80),
    ))
    .await?
    .next()
    .ok_or_else(|| anyhow::anyhow!("no address for {}", t.url))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = t.from {
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Most bytes one read takes from a client's socket.
pub(super) const READ_CHUNK: usize = 16 << 10;

/// One connection attempt: TCP, then the WebSocket handshake (offering
/// permessage-deflate as the reference client does when `t.deflate`). The
/// stream inflates when the edge accepted it.
async fn handshake(t: &Target) -> Result<Ws, Failure> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = t
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| Failure::Other(format!("bad URL {}: {e}", t.url)))?;
    if t.deflate {
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            http::HeaderValue::from_static(client::OFFER),
        );
    }
    let stream = tcp(t)
        .await
        .map_err(|e| Failure::Other(format!("connect {}: {e:#}", t.url)))?;
    // Reads of at most READ_CHUNK: wire bytes are counted as read, so a
    // read straddling the window's start or end is charged to the wrong
    // side; tungstenite's default (128 KiB a read) made that up to a third
    // of a short run's bytes.
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_CHUNK);
    match tokio_tungstenite::client_async_with_config(request, Inflating::new(stream), Some(config))
        .await
    {
        Ok((mut ws, response)) => {
            if t.deflate && client::accepts_deflate(&response) {
                ws.get_mut().inflate(client::MAX_INFLATED);
            }
            Ok(ws)
        }
        Err(tungstenite::Error::Http(r)) => Err(Failure::Rejected {
            status: r.status().as_u16(),
            retry_after: client::retry_after(&r),
        }),
        Err(e) => Err(Failure::Other(format!("handshake with {}: {e}", t.url))),
    }
}

/// Connects, retrying as the reference client does: full-jitter exponential
/// backoff ([`client::backoff_delay`] with [`client::Config`]'s defaults),
/// and at least `Retry-After`. Counts into the storm when `storm`. `None`
/// when stopped first.
async fn connect(
    target: &Target,
    shared: &Shared,
    stop: &CancellationToken,
    storm: bool,
) -> Option<Ws> {
    let policy = client::Config::default();
    let mut attempt = 0u32;
    loop {
        let tried = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            r = tokio::time::timeout(client::CONNECT_TIMEOUT, handshake(target)) => {
                r.unwrap_or_else(|_| Err(Failure::Other(format!("connect {}: timed out", target.url))))
            }
        };
        let floor = match tried {
            Ok(ws) => {
                if storm {
                    shared.storm.admitted();
                }
                let c = &shared.counters;
                if ws.get_ref().is_inflating() {
                    c.deflate_connections.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.plain_connections.fetch_add(1, Ordering::Relaxed);
                }
                return Some(ws);
            }
            Err(Failure::Rejected {
                status,
                retry_after,
            }) => {
                if storm {
                    let mut rejected = shared.storm.rejected.lock().unwrap();
                    *rejected.entry(status).or_default() += 1;
                }
                *shared.last_error.lock().unwrap() =
                    Some(format!("handshake with {}: HTTP {status}", target.url));
                retry_after
            }
            Err(Failure::Other(reason)) => {
                if storm {
                    shared.storm.errors.fetch_add(1, Ordering::Relaxed);
                }
                *shared.last_error.lock().unwrap() = Some(reason);
                None
            }
        };
        let (base, cap) = (policy.backoff_base, policy.backoff_cap);
        let delay = client::backoff_delay(attempt, base, cap, &mut rand::rng());
        let delay = delay.max(floor.unwrap_or_default());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One subscribe request: `symbols`, and `max_hz` and `mode` when given.
fn subscribe_request(symbols: &[String], options: SubscribeOptions) -> String {
    let mut req = serde_json::json!({"op": "subscribe", "symbols": symbols});
    if let Some(hz) = options.max_hz {
        req["max_hz"] = hz.into();
    }
    if let Some(mode) = options.mode {
        req["mode"] = serde_json::to_value(mode).expect("a mode is a string");
    }
    req.to_string()
}

/// Centrifugo's JSON protocol: the connect command, then a subscribe per
/// symbol (its channel), newline-delimited, in one frame.
fn centrifugo_frame(symbols: &[String]) -> String {
    let mut frame = serde_json::json!({"id": 1, "connect": {}}).to_string();
    for (i, s) in symbols.iter().enumerate() {
        frame.push('\n');
        frame.push_str(&serde_json::json!({"id": i + 2, "subscribe": {"channel": s}}).to_string());
    }
    frame
}

async fn subscribe(
    ws: &mut Ws,
    symbols: &[String],
    options: SubscribeOptions,
) -> Result<(), tungstenite::Error> {
    if options.protocol == Protocol::Centrifugo {
        return ws.send(Message::text(centrifugo_frame(symbols))).await;
    }
    for chunk in symbols.chunks(client::SUBSCRIBE_CHUNK) {
        let req = subscribe_request(chunk, options);
        ws.send(Message::text(req)).await?;
    }
    Ok(())
}

/// Resolves when the storm starts; never without one.
async fn storm_started(storm: Option<&CancellationToken>) {
    match storm {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ticks: Vec<WireTick>,
}

#[derive(Deserialize)]
struct WireTick {
    ts: i64,
    /// Snapshots carry the `ts` of an older tick: not a latency sample.
    #[serde(default)]
    snapshot: bool,
    /// Ticks of the symbol this one replaced (`max_hz`, `"mode":"latest"`).
    #[serde(default)]
    conflated: u64,
}

/// One client: connects, subscribes (with `options`), reads until stopped;
/// returns the ticks it received.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_client(
    start_delay: Duration,
    target: Target,
    symbols: Vec<String>,
    options: SubscribeOptions,
    stall: Arc<AtomicBool>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    mut storm: Option<CancellationToken>,
) -> anyhow::Result<u64> {
    tokio::select! {
        _ = stop.cancelled() => return Ok(0),
        _ = tokio::time::sleep(start_delay) => {}
    }
    let Some(mut ws) = connect(&target, &shared, &stop, false).await else {
        return Ok(0);
    };
    // Bytes read so far (the handshake's): not counted.
    let mut wire = ws.get_ref().wire_bytes();
    subscribe(&mut ws, &symbols, options).await?;
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut mine = 0u64;
    // Storm: when this client closed its connection, until its first tick
    // frame after reconnecting.
    let mut closed_at: Option<Instant> = None;
    loop {
        if stall.load(Ordering::Relaxed) {
            // A stalled client: keep the socket, read nothing.
            stop.cancelled().await;
            return Ok(mine);
        }
        let msg = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(mine),
            _ = storm_started(storm.as_ref()) => None,
            m = ws.next() => match m { Some(m) => Some(m?), None => return Ok(mine) },
        };
        let Some(msg) = msg else {
            storm = None;
            match storm_reconnect(ws, &target, &symbols, options, &shared, &stop).await? {
                Some((again, closed)) => {
                    (ws, closed_at) = (again, Some(closed));
                    wire = ws.get_ref().wire_bytes();
                }
                None => return Ok(mine),
            }
            continue;
        };
        count_wire(&shared, &ws, &mut wire);
        let Message::Text(text) = msg else { continue };
        if options.protocol == Protocol::Centrifugo {
            let (ticks, pings) = count_centrifugo_frame(&shared, &text, &mut closed_at);
            mine += ticks;
            // Centrifugo's pings are `{}` lines; unanswered, it disconnects.
            for _ in 0..pings {
                ws.send(Message::text("{}")).await?;
            }
        } else {
            mine += count_frame(&shared, &text, &mut closed_at);
        }
    }
}

/// The storm: close now, reconnect at once (retrying), resubscribe (with the
/// same `options`). The new connection and when the old one closed; `None`
/// when stopped first.
async fn storm_reconnect(
    mut ws: Ws,
    target: &Target,
    symbols: &[String],
    options: SubscribeOptions,
    shared: &Shared,
    stop: &CancellationToken,
) -> anyhow::Result<Option<(Ws, Instant)>> {
    let closed = Instant::now();
    let _ = tokio::time::timeout(client::CLOSE_TIMEOUT, ws.close(None)).await;
    ws = match connect(target, shared, stop, true).await {
        Some(ws) => ws,
        None => return Ok(None),
    };
    subscribe(&mut ws, symbols, options).await?;
    shared.storm.reconnected.fetch_add(1, Ordering::Relaxed);
    Ok(Some((ws, closed)))
}

/// Adds what `ws` read from its socket since `seen` (the bytes of the
/// message just received, and of any read ahead with it) to the wire bytes.
fn count_wire(shared: &Shared, ws: &Ws, seen: &mut u64) {
    let now = ws.get_ref().wire_bytes();
    if now > *seen {
        shared
            .counters
            .wire_bytes
            .fetch_add(now - *seen, Ordering::Relaxed);
        *seen = now;
    }
}

/// Counts one text frame: its bytes; a tick frame's ticks, their latency
/// while measuring, and (after a storm reconnect, `closed_at`) how long the
/// client took to be back; a gap notice. Returns the ticks it carried.
fn count_frame(shared: &Shared, text: &str, closed_at: &mut Option<Instant>) -> u64 {
    let now = now_micros();
    let Ok(frame) = serde_json::from_str::<Frame>(text) else {
        return 0;
    };
    let c = &shared.counters;
    c.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
    match frame.kind.as_str() {
        "ticks" => record_ticks(shared, &frame.ticks, now, closed_at),
        "gap" => {
            c.gaps.fetch_add(1, Ordering::Relaxed);
            0
        }
        _ => 0,
    }
}

/// One frame's ticks: counted, their latency recorded while measuring, a
/// storm client's return timed. Returns how many.
fn record_ticks(
    shared: &Shared,
    ticks: &[WireTick],
    now: i64,
    closed_at: &mut Option<Instant>,
) -> u64 {
    let c = &shared.counters;
    let n = ticks.len() as u64;
    c.ticks.fetch_add(n, Ordering::Relaxed);
    c.frames.fetch_add(1, Ordering::Relaxed);
    let conflated: u64 = ticks.iter().map(|t| t.conflated).sum();
    if conflated > 0 {
        c.conflated.fetch_add(conflated, Ordering::Relaxed);
    }
    if let Some(at) = closed_at.take() {
        let took = at.elapsed().as_micros() as u64;
        shared.storm.times.lock().unwrap().0.saturating_record(took);
        shared.storm.back.fetch_add(1, Ordering::Relaxed);
    }
    if shared.measuring.load(Ordering::Relaxed) {
        let mut w = shared.window.lock().unwrap();
        let mut s = shared.second.lock().unwrap();
        for t in ticks.iter().filter(|t| !t.snapshot) {
            let lat = (now - t.ts).max(1) as u64;
            let _ = w.record(lat);
            let _ = s.record(lat);
        }
    }
    n
}

/// One line of a Centrifugo frame: a reply (`id`), a push, or (`{}`) a
/// ping.
#[derive(Deserialize)]
struct CentrifugoLine {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    push: Option<CentrifugoPush>,
}

#[derive(Deserialize)]
struct CentrifugoPush {
    #[serde(default, rename = "pub")]
    publication: Option<CentrifugoPublication>,
}

#[derive(Deserialize)]
struct CentrifugoPublication {
    data: WireTick,
}

/// Counts one Centrifugo frame (newline-delimited replies and pushes): its
/// bytes; the ticks its publications carry, as [`count_frame`] does;
/// errors into `last_error`. Returns the ticks and the pings (`{}` lines)
/// to answer.
fn count_centrifugo_frame(
    shared: &Shared,
    text: &str,
    closed_at: &mut Option<Instant>,
) -> (u64, usize) {
    let now = now_micros();
    shared
        .counters
        .bytes
        .fetch_add(text.len() as u64, Ordering::Relaxed);
    let mut ticks = Vec::new();
    let mut pings = 0;
    for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
        if line == "{}" {
            pings += 1;
            continue;
        }
        let Ok(l) = serde_json::from_str::<CentrifugoLine>(line) else {
            continue;
        };
        if let Some(e) = l.error {
            *shared.last_error.lock().unwrap() =
                Some(format!("centrifugo reply {:?}: error {e}", l.id));
        }
        if let Some(p) = l.push.and_then(|p| p.publication) {
            ticks.push(p.data);
        }
    }
    let n = if ticks.is_empty() {
        0
    } else {
        record_ticks(shared, &ticks, now, closed_at)
    };
    (n, pings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::Mode;

    #[test]
    fn centrifugo_connects_and_subscribes_in_one_frame() {
        let frame = centrifugo_frame(&["AAPL".to_owned(), "MSFT".to_owned()]);
        let lines: Vec<serde_json::Value> = frame
            .split('\n')
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                serde_json::json!({"id": 1, "connect": {}}),
                serde_json::json!({"id": 2, "subscribe": {"channel": "AAPL"}}),
                serde_json::json!({"id": 3, "subscribe": {"channel": "MSFT"}}),
            ]
        );
    }

    #[test]
    fn centrifugo_pushes_count_as_ticks_pings_are_answered_errors_kept() {
        let shared = Shared::new();
        shared.measuring.store(true, Ordering::Relaxed);
        let ts = now_micros() - 2_000;
        let frame = format!(
            "{{\"id\":1,\"connect\":{{\"client\":\"x\",\"ping\":25,\"pong\":true}}}}\n\
             {{\"id\":2,\"subscribe\":{{}}}}\n\
             {{\"push\":{{\"channel\":\"AAPL\",\"pub\":{{\"data\":{{\"symbol\":\"AAPL\",\"price\":1.5,\"ts\":{ts},\"seq\":7}},\"offset\":3}}}}}}\n\
             {{}}\n\
             {{\"id\":3,\"error\":{{\"code\":103,\"message\":\"permission denied\"}}}}\n\
             {{\"push\":{{\"channel\":\"MSFT\",\"pub\":{{\"data\":{{\"symbol\":\"MSFT\",\"price\":2,\"ts\":{ts},\"seq\":1}}}}}}}}"
        );
        let mut closed = None;
        let (ticks, pings) = count_centrifugo_frame(&shared, &frame, &mut closed);
        assert_eq!((ticks, pings), (2, 1));
        assert_eq!(shared.counters.ticks.load(Ordering::Relaxed), 2);
        assert_eq!(shared.counters.frames.load(Ordering::Relaxed), 1);
        assert_eq!(
            shared.counters.bytes.load(Ordering::Relaxed),
            frame.len() as u64
        );
        let w = shared.window.lock().unwrap();
        assert_eq!(w.len(), 2);
        assert!(w.min() >= 2_000, "latency from the tick's ts: {}", w.min());
        drop(w);
        let err = shared.last_error.lock().unwrap().clone().unwrap();
        assert!(err.contains("permission denied"), "{err}");
        // A ping alone: no tick, one answer.
        assert_eq!(count_centrifugo_frame(&shared, "{}", &mut closed), (0, 1));
    }

    #[test]
    fn a_subscribe_carries_max_hz_and_mode_only_when_given() {
        let symbols = ["AAPL".to_owned(), "MSFT".to_owned()];
        let sent = |options| -> serde_json::Value {
            serde_json::from_str(&subscribe_request(&symbols, options)).unwrap()
        };
        assert_eq!(
            sent(SubscribeOptions::default()),
            serde_json::json!({"op": "subscribe", "symbols": ["AAPL", "MSFT"]})
        );
        let both = SubscribeOptions {
            max_hz: Some(4.0),
            mode: Some(Mode::Latest),
            ..Default::default()
        };
        assert_eq!(
            sent(both),
            serde_json::json!({"op": "subscribe", "symbols": ["AAPL", "MSFT"], "max_hz": 4.0, "mode": "latest"})
        );
        let every_tick = SubscribeOptions {
            max_hz: Some(0.0),
            mode: Some(Mode::All),
            ..Default::default()
        };
        assert_eq!(sent(every_tick)["max_hz"], 0.0);
        assert_eq!(sent(every_tick)["mode"], "all");
    }
}
