//! The front door: HTTP routes and WebSocket sessions.
//!
//! | route | answer |
//! |---|---|
//! | `GET /ws` | WebSocket upgrade; protocol in docs/protocol.md |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once Kafka metadata is fetched and the edge is not draining, else 503 |
//! | `GET /metrics` | Prometheus text (on the admin listener only, when there is one) |
//! | `GET /symbols` | JSON array of symbols whose latest tick is cached or that the symbol directory sampled from any partition (with auth on, on the public port: a token is required and only its entitled symbols are listed) |
//! | `GET /partitions` | JSON array of assigned partitions and positions (on the admin listener only, when there is one) |
//! | `GET /` | the demo ticker page, when enabled |
//! | `GET /client.js` | the browser client (ES module), always |
//!
//! The admin listener (`--admin-listen`, [`admin`]) serves `/healthz`,
//! `/readyz`, `/metrics`, `/partitions` and `/symbols` (all of them).
//!
//! Every connection passes the [`door`] (HTTP-phase cap, write deadline,
//! descriptor reserve) before it is served.
//!
//! It never talks to Kafka: ticks reach it only through the [`crate::fanout`]
//! registry and the clients' outboxes.

pub mod admin;
pub mod admission;
pub mod auth;
mod deadline;
pub mod door;
pub mod fds;
mod handshake;
mod lean;
pub mod meter;
pub mod protocol;
pub mod server;
pub mod session;

pub use server::serve;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::Serialize;
use tokio::net::TcpListener;
use warp::{http::StatusCode, Filter, Reply};

use crate::{fanout::Outbox, fanout::Registry, telemetry::Metrics};
use door::Port;

/// Client-facing limits and behaviour.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "gateway")]
#[command(next_help_heading = "Clients (WebSocket)")]
pub struct Config {
    /// Ticks buffered per client. When full, the oldest is dropped and the
    /// client gets a `gap` frame naming the lost seqs.
    #[arg(long, env = "TICKFAN_OUTBOX_CAPACITY", default_value_t = 1024)]
    pub outbox_capacity: usize,

    /// Updates per second per symbol for subscriptions that do not say
    /// (`"max_hz"` in a subscribe); the rest of a symbol's ticks are
    /// conflated: each update is the latest tick, with the number it stands
    /// for. 0: every tick.
    #[arg(long, env = "TICKFAN_DEFAULT_MAX_HZ", default_value_t = 0.0)]
    pub default_max_hz: f64,

    /// How old a resume's position may be (the `ts` of the client's last
    /// tick): an older one gets a `gap` and the snapshot. Also how far back
    /// the edge keeps recent ticks in memory for resumes.
    #[arg(long, env = "TICKFAN_RESUME_WINDOW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub resume_window: Duration,

    /// Most ticks one connection's resumes may queue beyond
    /// `--outbox-capacity` at once, and most live ticks the edge holds for
    /// them while they are read from Kafka (all symbols together); a resume
    /// that would pass it gets a `gap` and the snapshot.
    #[arg(long, env = "TICKFAN_RESUME_MAX_TICKS", default_value_t = 5000)]
    pub resume_max_ticks: usize,

    /// Bytes of recent ticks kept in memory for resumes, all symbols
    /// together (a symbol adding a tick while over it forgets its own
    /// oldest). 0: every resume is read from Kafka.
    #[arg(long, env = "TICKFAN_RESUME_MEMORY", default_value_t = 64 << 20)]
    pub resume_memory: usize,

    /// The most updates per second per symbol any subscription gets, whatever
    /// it asks (`max_hz` above it, or 0, is lowered to it). 0: no cap.
    #[arg(long, env = "TICKFAN_MAX_HZ", default_value_t = 0.0)]
    pub max_hz: f64,

    /// Most symbols one connection may subscribe to, and most symbols in
    /// one request; more get a `too_many_symbols` error (a longer request is
    /// refused whole).
    #[arg(long, env = "TICKFAN_MAX_SYMBOLS", default_value_t = 1000)]
    pub max_symbols: usize,

    /// Subscriptions of one connection to symbols this edge holds no tick
    /// of, counted until their first tick arrives; more get
    /// `unknown_symbol` (retry later). Bounds what one client can make the
    /// edge fetch and remember for names the feed may never carry.
    #[arg(long, env = "TICKFAN_MAX_UNKNOWN_SYMBOLS", default_value_t = 50)]
    pub max_unknown_symbols: usize,

    /// Subscriptions (client × symbol) on this edge in all; more get
    /// `edge_full`.
    #[arg(long, env = "TICKFAN_MAX_SUBSCRIPTIONS", default_value_t = 1_000_000)]
    pub max_subscriptions: usize,

    /// Symbols per second one connection may subscribe and unsubscribe (a
    /// request costs one per symbol it names); over it the request is
    /// ignored with a `rate_limited` error.
    #[arg(long, env = "TICKFAN_SYMBOL_RATE", default_value_t = 1000)]
    pub symbol_rate: u32,

    /// Symbols a connection may (un)subscribe at once above that rate; at
    /// least `--max-symbols`.
    #[arg(long, env = "TICKFAN_SYMBOL_BURST", default_value_t = 2000)]
    pub symbol_burst: u32,

    /// Frames per second a client may send, of any kind (messages, their
    /// fragments, pings, pongs), with bursts of as many; more close the
    /// connection with 1008.
    #[arg(long, env = "TICKFAN_CLIENT_FRAME_RATE", default_value_t = 200)]
    pub client_frame_rate: u32,

    /// Bytes per second a client may send, with bursts of up to
    /// 4 × `--max-message-bytes`; more close the connection with 1008.
    #[arg(long, env = "TICKFAN_CLIENT_BYTE_RATE", default_value_t = 262144)]
    pub client_byte_rate: u32,

    /// Frames one client message may be split into; more close the
    /// connection with 1008.
    #[arg(long, env = "TICKFAN_MAX_FRAGMENTS", default_value_t = 32)]
    pub max_fragments: u32,

    /// Largest client message (and frame) accepted, in bytes; larger ones
    /// close the connection with code 1009.
    #[arg(long, env = "TICKFAN_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    pub max_message_bytes: usize,

    /// Size cap of one outgoing ticks frame, in bytes (a single larger tick is
    /// still sent alone).
    #[arg(long, env = "TICKFAN_MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,

    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it
    /// (browsers do): frames of at least `--deflate-min-bytes` go
    /// compressed, once for all the clients getting the same ticks,
    /// and no compression context is kept per connection
    /// (`server_no_context_takeover; client_no_context_takeover`).
    #[arg(long, env = "TICKFAN_PERMESSAGE_DEFLATE", default_value_t = false)]
    pub permessage_deflate: bool,

    /// Frames shorter than this (in bytes, uncompressed) go uncompressed
    /// even when permessage-deflate is negotiated: small frames gain little
    /// and still cost the client an inflate.
    #[arg(long, env = "TICKFAN_DEFLATE_MIN_BYTES", default_value_t = 256)]
    pub deflate_min_bytes: usize,

    /// Kernel send buffer per connection (SO_SNDBUF), in bytes; 0 keeps the
    /// OS default. Small values bound kernel memory held for slow clients.
    #[arg(long, env = "TICKFAN_SOCKET_SEND_BUFFER", default_value_t = 262144)]
    pub socket_send_buffer: u32,

    /// Serve the demo ticker page at `/`.
    #[arg(long, env = "TICKFAN_PAGE", default_value_t = false)]
    pub page: bool,

    /// A connection must send its complete HTTP request (the WebSocket
    /// handshake) within this time, or it is dropped.
    #[arg(long, env = "TICKFAN_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// The edge pings each WebSocket this often.
    #[arg(long, env = "TICKFAN_PING_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// A WebSocket that has not answered the edge's pings for this long is
    /// a dead peer and is dropped. Only a pong answering one of the edge's
    /// own pings counts.
    #[arg(long, env = "TICKFAN_IDLE_TIMEOUT", default_value = "45s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// A write to a client that makes no progress for this long (the client
    /// stopped reading) closes the connection. A client that stalls for
    /// less resumes and is told, with `gap` frames, what it missed.
    /// `--write-timeout` + `--ping-interval` must stay below
    /// `--idle-timeout`, so a stall shorter than this is never taken for a
    /// dead peer.
    #[arg(long, env = "TICKFAN_WRITE_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Control messages (subscribe, unsubscribe, auth) per second per
    /// connection; more are ignored with a `rate_limited` error.
    #[arg(long, env = "TICKFAN_CONTROL_RATE", default_value_t = 20)]
    pub control_rate: u32,

    /// Control messages a connection may send at once above its rate.
    #[arg(long, env = "TICKFAN_CONTROL_BURST", default_value_t = 50)]
    pub control_burst: u32,

    /// On SIGTERM, clients are closed (code 1012, after a `reconnect` hint) at
    /// random points spread over this window, so they do not all reconnect
    /// elsewhere at once.
    #[arg(long, env = "TICKFAN_DRAIN_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_window: Duration,

    /// Hard limit on shutdown: sessions still open this long after SIGTERM
    /// are dropped and the process exits. Must exceed the drain window.
    #[arg(long, env = "TICKFAN_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Per-connection WebSocket read buffer, in bytes, and the most one read
    /// takes from the socket. Every idle connection holds it (tungstenite
    /// zero-fills all of it); a larger client message grows it as needed and
    /// is read in reads of this size. 256: 0.25 KiB less per idle connection
    /// than 512, for a few more reads of the rare long request.
    #[arg(long, env = "TICKFAN_READ_BUFFER_BYTES", default_value_t = 256)]
    pub read_buffer_bytes: usize,

    /// Per-connection WebSocket write buffer, in bytes (writes are flushed
    /// when it fills).
    #[arg(long, env = "TICKFAN_WRITE_BUFFER_BYTES", default_value_t = 16384)]
    pub write_buffer_bytes: usize,

    #[command(flatten)]
    pub http: door::Config,
}

impl Config {
    /// The least time between two updates of a symbol for a subscription
    /// asking `asked` (`None`: every tick).
    pub fn update_interval(&self, asked: Option<protocol::MaxHz>) -> Option<Duration> {
        let mut hz = asked.map_or(self.default_max_hz, |m| m.0);
        if self.max_hz > 0.0 && (hz == 0.0 || hz > self.max_hz) {
            hz = self.max_hz;
        }
        (hz > 0.0).then(|| Duration::from_secs_f64(1.0 / hz))
    }

    /// What the registry keeps for resumes.
    pub fn history(&self) -> crate::fanout::History {
        crate::fanout::History {
            budget: self.resume_memory,
            window: self.resume_window,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.outbox_capacity >= 1, "--outbox-capacity must be >= 1");
        anyhow::ensure!(!self.resume_window.is_zero(), "--resume-window must be > 0");
        for (flag, hz) in [
            ("--default-max-hz", self.default_max_hz),
            ("--max-hz", self.max_hz),
        ] {
            anyhow::ensure!(
                (0.0..=protocol::MAX_HZ_LIMIT).contains(&hz),
                "{flag} must be from 0 to {}",
                protocol::MAX_HZ_LIMIT
            );
        }
        anyhow::ensure!(self.max_symbols >= 1, "--max-symbols must be >= 1");
        anyhow::ensure!(
            self.max_message_bytes >= 256,
            "--max-message-bytes must be >= 256"
        );
        anyhow::ensure!(
            self.max_frame_bytes >= 1024,
            "--max-frame-bytes must be >= 1024"
        );
        anyhow::ensure!(!self.ping_interval.is_zero(), "--ping-interval must be > 0");
        anyhow::ensure!(
            self.idle_timeout > self.ping_interval,
            "--idle-timeout must exceed --ping-interval"
        );
        anyhow::ensure!(!self.write_timeout.is_zero(), "--write-timeout must be > 0");
        anyhow::ensure!(
            self.write_timeout + self.ping_interval < self.idle_timeout,
            "--write-timeout ({}) + --ping-interval ({}) must be below --idle-timeout ({}): \
             a client stalled for less than the write timeout must not be taken for a dead peer",
            humantime::format_duration(self.write_timeout),
            humantime::format_duration(self.ping_interval),
            humantime::format_duration(self.idle_timeout)
        );
        anyhow::ensure!(
            self.symbol_rate >= 1 && self.symbol_burst as usize >= self.max_symbols,
            "--symbol-rate must be >= 1 and --symbol-burst >= --max-symbols"
        );
        anyhow::ensure!(
            self.max_unknown_symbols >= 1,
            "--max-unknown-symbols must be >= 1"
        );
        anyhow::ensure!(
            self.max_subscriptions >= 1,
            "--max-subscriptions must be >= 1"
        );
        anyhow::ensure!(
            self.client_frame_rate >= 10,
            "--client-frame-rate must be >= 10"
        );
        anyhow::ensure!(
            self.client_byte_rate >= 1024,
            "--client-byte-rate must be >= 1024"
        );
        anyhow::ensure!(self.max_fragments >= 1, "--max-fragments must be >= 1");
        anyhow::ensure!(
            self.shutdown_grace > self.drain_window,
            "--shutdown-grace must exceed --drain-window"
        );
        anyhow::ensure!(
            self.control_rate >= 1 && self.control_burst >= 1,
            "--control-rate/--control-burst must be >= 1"
        );
        anyhow::ensure!(
            self.read_buffer_bytes >= 128,
            "--read-buffer-bytes must be >= 128"
        );
        anyhow::ensure!(
            self.write_buffer_bytes >= 512,
            "--write-buffer-bytes must be >= 512"
        );
        self.http.validate()
    }
}

/// Open sessions' outboxes, for the queued-ticks gauge, and the edge-wide
/// subscription count.
#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Outbox>>>,
    subscriptions: AtomicUsize,
}

impl Sessions {
    /// Reserves up to `n` of the edge's `max` subscriptions; returns how
    /// many it got.
    fn reserve(&self, n: usize, max: usize) -> usize {
        let mut got = 0;
        let _ = self
            .subscriptions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                got = n.min(max.saturating_sub(cur));
                Some(cur + got)
            });
        got
    }

    /// Gives back `n` reserved subscriptions.
    fn release(&self, n: usize) {
        if n > 0 {
            self.subscriptions.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Subscriptions held on the edge.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Acquire)
    }

    fn insert(&self, outbox: Arc<Outbox>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap().insert(id, outbox);
        id
    }

    fn remove(&self, id: u64) {
        self.open.lock().unwrap().remove(&id);
    }

    /// Tells every open session the feed's new status (through its outbox).
    pub fn feed_changed(&self, status: crate::fanout::FeedStatus) {
        let open: Vec<_> = self.open.lock().unwrap().values().cloned().collect();
        for outbox in open {
            outbox.set_feed(status);
        }
    }

    /// Ticks queued across all open sessions.
    pub fn queued(&self) -> usize {
        let open: Vec<_> = self.open.lock().unwrap().values().cloned().collect();
        open.iter().map(|o| o.len()).sum()
    }
}

/// Readiness as reported by the rest of the edge.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready, else why not.
    fn check(&self) -> Result<(), &'static str>;
    /// Assigned partitions, for `/partitions`.
    fn partitions(&self) -> serde_json::Value;
}

/// What every route and session shares.
pub struct Shared {
    pub config: Config,
    pub registry: Arc<Registry>,
    /// Symbols sampled from every partition (`/symbols` lists them too).
    pub directory: Arc<crate::fanout::Directory>,
    pub metrics: Metrics,
    pub sessions: Sessions,
    pub readiness: Box<dyn Readiness>,
    /// Connection admission (rates, connection cap).
    pub admission: admission::Admission,
    /// Token verification; `None` when auth is off.
    pub verifier: Option<Arc<auth::Verifier>>,
    /// Feed status: a session sends it first when stale; changes reach
    /// sessions through [`Sessions::feed_changed`].
    pub feed: tokio::sync::watch::Receiver<crate::fanout::FeedStatus>,
}

/// The demo page, compiled in.
const PAGE: &str = include_str!("../../static/index.html");

/// The browser client (an ES module the page imports), compiled in. Served
/// whether or not the page is: it is a library for any page, holds no data,
/// and may be imported cross-origin (hence `Access-Control-Allow-Origin: *`).
const CLIENT_JS: &str = include_str!("../../static/client.js");

/// Binds a listener with the configured socket options; accepted sockets
/// inherit SO_SNDBUF from it.
pub fn bind(addr: std::net::SocketAddr, config: &Config) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if config.socket_send_buffer > 0 {
        socket.set_send_buffer_size(config.socket_send_buffer)?;
    }
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The plain HTTP routes of a listener (everything but `/ws`, which
/// [`server`] upgrades itself). The operators' routes (`/metrics`,
/// `/partitions`) are on the admin listener when there is one, else on the
/// public port; the page and `/client.js` only on the public port.
fn routes(
    shared: Arc<Shared>,
    port: Port,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with = {
        let shared = shared.clone();
        warp::any().map(move || shared.clone())
    };
    // Passes when `on`, else the route is not found.
    let only = |on: bool| {
        warp::any()
            .and_then(move || async move {
                if on {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            })
            .untuple_one()
    };
    let admin_elsewhere = shared.config.http.admin_listen.is_some();
    let operators = port == Port::Admin || !admin_elsewhere;
    let public = port == Port::Public;
    let healthz = warp::path("healthz").and(warp::path::end()).map(|| "ok\n");
    let readyz = warp::path("readyz")
        .and(warp::path::end())
        .and(with.clone())
        .map(|s: Arc<Shared>| match s.readiness.check() {
            Ok(()) => warp::reply::with_status("ready\n".to_string(), StatusCode::OK),
            Err(why) => warp::reply::with_status(
                format!("not ready: {why}\n"),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        });
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(only(operators))
        .and(with.clone())
        .map(|s: Arc<Shared>| {
            s.metrics.outbox_queued.set(s.sessions.queued() as i64);
            s.metrics
                .resume_memory
                .set(s.registry.history_bytes() as i64);
            warp::reply::with_header(
                s.metrics.encode(),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
        });
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    let symbols = warp::path("symbols")
        .and(warp::path::end())
        .and(with.clone())
        .and(warp::header::headers_cloned())
        .and(query)
        .map(
            move |s: Arc<Shared>, headers: warp::http::HeaderMap, query: Option<String>| {
                symbols(&s, port, &headers, query.as_deref())
            },
        );
    let partitions = warp::path("partitions")
        .and(warp::path::end())
        .and(only(operators))
        .and(with.clone())
        .map(|s: Arc<Shared>| warp::reply::json(&s.readiness.partitions()));
    let client_js = warp::path("client.js")
        .and(warp::path::end())
        .and(only(public))
        .map(|| {
            let reply = warp::reply::with_header(
                CLIENT_JS,
                "content-type",
                "text/javascript; charset=utf-8",
            );
            let reply = warp::reply::with_header(reply, "access-control-allow-origin", "*");
            warp::reply::with_header(reply, "cache-control", "no-cache")
        });
    let page =
        warp::path::end()
            .and(only(public))
            .and(with)
            .and_then(|s: Arc<Shared>| async move {
                if s.config.page {
                    Ok(warp::reply::html(PAGE))
                } else {
                    Err(warp::reject::not_found())
                }
            });
    warp::get()
        .and(
            healthz
                .or(readyz)
                .or(metrics)
                .or(symbols)
                .or(partitions)
                .or(client_js)
                .or(page),
        )
        .recover(|rej: warp::Rejection| async move {
            let (status, error) = if rej.is_not_found() {
                (StatusCode::NOT_FOUND, "not found")
            } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            } else {
                (StatusCode::BAD_REQUEST, "bad request")
            };
            Ok::<_, Infallible>(warp::reply::with_status(
                warp::reply::json(&HttpError { error }),
                status,
            ))
        })
}

/// `/symbols`: every cached symbol and every symbol of the directory,
/// sorted, each once; on the public port with auth on, only those the
/// caller's token entitles it to, and 401 without a valid token (the token
/// is taken as at the handshake: header, subprotocol or query).
fn symbols(
    s: &Shared,
    port: Port,
    headers: &warp::http::HeaderMap,
    query: Option<&str>,
) -> warp::reply::Response {
    let held = s.registry.cached();
    let directory = s.directory.symbols();
    let cached = crate::fanout::directory::union_sorted(&held, &directory);
    let verifier = match (&s.verifier, port) {
        (Some(v), Port::Public) => v,
        _ => return warp::reply::json(&cached).into_response(),
    };
    let verified = auth::token_from_request(headers, query)
        .ok_or(auth::AuthError::Missing)
        .and_then(|token| verifier.verify(&token));
    match verified {
        Ok(grant) => {
            let visible: Vec<_> = cached
                .iter()
                .filter(|sym| grant.entitlements.allows(sym.as_str()))
                .collect();
            warp::reply::json(&visible).into_response()
        }
        Err(e) => {
            s.metrics.auth_failure(e.label());
            let reply = warp::reply::with_status(
                warp::reply::json(&HttpError { error: e.reason() }),
                StatusCode::UNAUTHORIZED,
            );
            warp::reply::with_header(reply, "www-authenticate", "Bearer").into_response()
        }
    }
}

#[derive(Serialize)]
struct HttpError {
    error: &'static str,
}
