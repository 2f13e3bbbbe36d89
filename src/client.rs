//! The reference WebSocket client of the edge protocol (`docs/protocol.md`),
//! used by the integration tests and the load generator.
//!
//! [`spawn`] starts one connection task that turns every frame into [`Event`]s
//! on a bounded channel of [`EVENT_CAPACITY`]. When the consumer lags, the task
//! waits rather than drops, so the backpressure reaches the edge through TCP
//! (which then drops ticks and announces them with `gap` frames).
//! [`spawn_client`] also returns a [`Client`] that changes the subscriptions at
//! runtime.
//!
//! # Reconnect policy
//!
//! * Endpoints are tried round-robin, one per attempt, each over a fresh TCP
//!   socket (with `SO_RCVBUF` = [`Config::recv_buffer`] when set).
//! * After a successful handshake the task emits [`Event::Connected`], sends
//!   `subscribe` for its whole current symbol set (ops of at most
//!   [`SUBSCRIBE_CHUNK`] symbols) and resets the attempt counter.
//! * **Resume** ([`Config::resume`], on by default): the task remembers, per
//!   subscribed symbol, the `seq` and `ts` of the last tick it delivered as an
//!   [`Event::Tick`], and each `subscribe` sent on a reconnect carries
//!   `"resume"` with those of the symbols of that op that have one
//!   (`docs/protocol.md`, "Resume after a reconnect"): the edge then sends the
//!   ticks after it instead of a snapshot. The first connect, symbols with no
//!   tick yet and `subscribe`s sent while connected carry none. The position
//!   is the highest `seq` delivered, with that tick's `ts` exactly as it came;
//!   a snapshot tick sets it to its own `seq` (a feed that restarted its
//!   numbering starts over); a `gap` frame does not move it. Ticks at or below
//!   the position (the edge promises none) are delivered all the same, not
//!   filtered, so a test sees a duplicate if an edge ever sends one. An
//!   unsubscribe forgets the symbol's position; ticks of symbols not in the
//!   current set (still in flight after an unsubscribe) are not tracked.
//!   Tracking costs one map lookup per tick and allocates nothing.
//! * When a connection ends (close frame, read error, EOF) or an attempt fails
//!   (refused, no answer within [`CONNECT_TIMEOUT`], a non-101 answer), it emits
//!   [`Event::Disconnected`] and sleeps before trying the next endpoint:
//!   - normally `uniform(0, min(cap, base * 2^attempt))` ("full jitter", see
//!     [`backoff_delay`]), then `attempt += 1`;
//!   - `Retry-After` seconds plus that jittered delay when the handshake got
//!     HTTP 429 or 503 with that header (so clients refused together do not
//!     all come back at the same second);
//!   - exactly `after_ms` instead, when the connection that just ended carried
//!     a `{"type":"reconnect","after_ms":N}` hint (the counter is unchanged).
//! * Cancelling the shutdown token stops the task at once, wherever it is; an
//!   open connection is closed with code 1000. After a close frame from the
//!   edge, the task waits at most [`CLOSE_TIMEOUT`] for the edge to end TCP.
//!
//! It never imports the edge: it knows it only through the protocol on the
//! wire, as any client does.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::{self, http, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<crate::codec::deflate::Inflating<TcpStream>>;

/// Capacity of the event channel returned by [`spawn`].
pub const EVENT_CAPACITY: usize = 4096;
/// Most symbols sent in one `subscribe`/`unsubscribe` op.
pub const SUBSCRIBE_CHUNK: usize = 500;
/// Longest a TCP connect plus WebSocket handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a close handshake may take, whichever side started it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// What to connect to and subscribe.
#[derive(Clone, Debug)]
pub struct Config {
    /// `ws://host:port/ws` URLs, tried round-robin.
    pub endpoints: Vec<String>,
    /// Symbols subscribed on every (re)connect.
    pub symbols: Vec<String>,
    /// Backoff ceiling of the first retry (default 100 ms).
    pub backoff_base: Duration,
    /// Highest backoff ceiling (default 10 s).
    pub backoff_cap: Duration,
    /// `SO_RCVBUF` of the TCP socket in bytes; the OS default when `None`.
    pub recv_buffer: Option<u32>,
    /// Source address to connect from (e.g. `127.0.0.7` to spread load tests
    /// over loopback addresses); the OS picks when `None`.
    pub local_addr: Option<std::net::IpAddr>,
    /// Bearer token sent in the handshake's `Authorization` header.
    pub token: Option<String>,
    /// Whether a reconnect resumes each symbol after its last delivered tick
    /// (default `true`); `false`: every reconnect restarts from snapshots.
    pub resume: bool,
    /// Offer permessage-deflate (RFC 7692) in the handshake and inflate the
    /// edge's compressed frames when it accepts (default `false`).
    pub deflate: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: Vec::new(),
            symbols: Vec::new(),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            recv_buffer: None,
            local_addr: None,
            token: None,
            resume: true,
            deflate: false,
        }
    }
}

/// Something that happened on the connection, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The handshake with `endpoint` succeeded; the resubscribe follows.
    Connected { endpoint: String },
    /// A connection ended or an attempt failed; `reason` is for humans and
    /// names the close code (`closed by edge: 1001 ...`), the error or the
    /// HTTP status.
    Disconnected { endpoint: String, reason: String },
    /// A `subscribed` frame: the symbols accepted.
    Subscribed(Vec<String>),
    /// An `unsubscribed` frame.
    Unsubscribed(Vec<String>),
    /// One tick of a `ticks` frame.
    Tick(Tick),
    /// A `gap` frame: ticks of `symbol` with `from_seq ..= to_seq` will not arrive.
    Gap {
        symbol: String,
        from_seq: i64,
        to_seq: i64,
    },
    /// A `status` frame: `feed` is `"stale"` or `"live"`.
    Status { feed: String },
    /// A `reconnect` hint: the next reconnect waits `after_ms` instead of the backoff.
    Reconnect { after_ms: u64 },
    /// An `error` frame: branch on `code`; `symbols` lists the rejected ones.
    Error {
        code: String,
        message: String,
        symbols: Vec<String>,
    },
    /// A frame of unknown type or shape, as JSON (a non-JSON frame is a
    /// [`Value::String`] of its text).
    Other(Value),
}

/// One tick as received (the fields this client does not use are skipped).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Tick {
    /// The symbol.
    pub symbol: String,
    /// Per-symbol sequence number.
    pub seq: i64,
    /// Event time, microseconds since the Unix epoch.
    pub ts: i64,
    /// Last trade price.
    pub price: f64,
    /// Whether this is the snapshot tick sent after subscribing.
    #[serde(default)]
    pub snapshot: bool,
}

/// Changes the subscriptions of a running client; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
}

/// An op to send now and to apply to the set resubscribed on reconnect.
#[derive(Debug)]
struct Command {
    op: &'static str,
    symbols: Vec<String>,
}

impl Client {
    /// Subscribes to `symbols` now if connected, and on every reconnect.
    /// Returns false if the connection task has stopped.
    pub fn subscribe<S: AsRef<str>>(&self, symbols: &[S]) -> bool {
        self.send("subscribe", symbols)
    }

    /// Unsubscribes from `symbols` now if connected, and drops them from the
    /// set resubscribed on reconnect. Returns false if the task has stopped.
    pub fn unsubscribe<S: AsRef<str>>(&self, symbols: &[S]) -> bool {
        self.send("unsubscribe", symbols)
    }

    fn send<S: AsRef<str>>(&self, op: &'static str, symbols: &[S]) -> bool {
        let symbols = symbols.iter().map(|s| s.as_ref().to_owned()).collect();
        self.commands.send(Command { op, symbols }).is_ok()
    }
}

/// Starts the connection task. It runs until `shutdown` is cancelled or the
/// receiver is dropped; it stops at once if `config.endpoints` is empty.
pub fn spawn(
    config: Config,
    shutdown: CancellationToken,
) -> (mpsc::Receiver<Event>, JoinHandle<()>) {
    let (_client, events, task) = spawn_client(config, shutdown);
    (events, task)
}

/// Like [`spawn`], plus a [`Client`] to subscribe and unsubscribe at runtime.
pub fn spawn_client(
    config: Config,
    shutdown: CancellationToken,
) -> (Client, mpsc::Receiver<Event>, JoinHandle<()>) {
    let (events, rx) = mpsc::channel(EVENT_CAPACITY);
    let (commands, command_rx) = mpsc::unbounded_channel();
    let symbols = config.symbols.iter().map(|s| (s.clone(), None)).collect();
    let runner = Runner {
        config,
        symbols,
        events,
        commands: command_rx,
        commands_open: true,
        shutdown,
        hint: None,
    };
    (Client { commands }, rx, tokio::spawn(runner.run()))
}

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base * 2^attempt)]`.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.min(31)).min(cap);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// The wait before the next attempt: the jittered backoff, after the
/// server's `Retry-After` when it gave one. `Retry-After` has whole seconds,
/// so waiting exactly that long would bring everyone it refused together
/// back in the same instant; the jitter spreads them over the next
/// backoff window.
pub fn retry_delay(retry_after: Option<Duration>, jittered: Duration) -> Duration {
    retry_after.unwrap_or_default() + jittered
}

/// The `Retry-After` (in seconds) of a 429 or 503 handshake answer.
pub fn retry_after(response: &http::Response<Option<Vec<u8>>>) -> Option<Duration> {
    if !matches!(response.status().as_u16(), 429 | 503) {
        return None;
    }
    let seconds = response.headers().get(http::header::RETRY_AFTER)?;
    seconds
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Every field of every known frame type, so one typed pass parses any of them.
#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    ticks: Option<Vec<Tick>>,
    symbol: Option<String>,
    from_seq: Option<i64>,
    to_seq: Option<i64>,
    feed: Option<String>,
    after_ms: Option<u64>,
    code: Option<String>,
    message: Option<String>,
    symbols: Option<Vec<String>>,
}

/// Parses one text frame into `out`: one [`Event::Tick`] per tick of a
/// `ticks` frame, one event otherwise; unknown or malformed frames become
/// [`Event::Other`].
pub fn parse_frame(text: &str, out: &mut Vec<Event>) {
    let parsed = serde_json::from_str::<RawFrame>(text)
        .ok()
        .and_then(|f| parse_known(f, out));
    if parsed.is_none() {
        let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
        out.push(Event::Other(value));
    }
}

/// Pushes the events of a frame of known type and shape; `None` otherwise.
fn parse_known(f: RawFrame, out: &mut Vec<Event>) -> Option<()> {
    let event = match f.kind.as_deref()? {
        "ticks" => {
            out.extend(f.ticks?.into_iter().map(Event::Tick));
            return Some(());
        }
        "subscribed" => Event::Subscribed(f.symbols?),
        "unsubscribed" => Event::Unsubscribed(f.symbols?),
        "gap" => Event::Gap {
            symbol: f.symbol?,
            from_seq: f.from_seq?,
            to_seq: f.to_seq?,
        },
        "status" => Event::Status { feed: f.feed? },
        "reconnect" => Event::Reconnect {
            after_ms: f.after_ms?,
        },
        "error" => {
            let (message, symbols) = (f.message.unwrap_or_default(), f.symbols.unwrap_or_default());
            Event::Error {
                code: f.code?,
                message,
                symbols,
            }
        }
        _ => return None,
    };
    out.push(event);
    Some(())
}

/// Why a session ended: stop the task, or reconnect (with this reason).
enum End {
    Stop,
    Lost(String),
}

/// The last tick of a symbol the task delivered: what a resume names.
#[derive(Clone, Copy, Debug)]
struct Position {
    seq: i64,
    ts: i64,
}

/// Moves the position of a subscribed symbol to `tick`: to its `seq` when
/// higher, or always for a snapshot (a new baseline). Ticks of symbols not
/// in `symbols` are ignored.
fn track(symbols: &mut BTreeMap<String, Option<Position>>, tick: &Tick) {
    let Some(position) = symbols.get_mut(tick.symbol.as_str()) else {
        return;
    };
    let newer = match position {
        Some(p) => tick.snapshot || tick.seq > p.seq,
        None => true,
    };
    if newer {
        *position = Some(Position {
            seq: tick.seq,
            ts: tick.ts,
        });
    }
}

/// The `subscribe` op for `chunk`, with `"resume"` naming the symbols of it
/// that have a position (omitted when none do). A negative `seq` (which the
/// protocol's resume refuses) is left out rather than spoil the op.
fn subscribe_op(chunk: &[(&String, Option<Position>)]) -> String {
    let symbols: Vec<&String> = chunk.iter().map(|(s, _)| *s).collect();
    let resume: serde_json::Map<String, Value> = chunk
        .iter()
        .filter_map(|(s, p)| p.filter(|p| p.seq >= 0).map(|p| (s, p)))
        .map(|(s, p)| ((*s).clone(), serde_json::json!({"seq": p.seq, "ts": p.ts})))
        .collect();
    let mut op = serde_json::json!({ "op": "subscribe", "symbols": symbols });
    if !resume.is_empty() {
        op["resume"] = Value::Object(resume);
    }
    op.to_string()
}

struct Runner {
    config: Config,
    /// The symbols resubscribed on reconnect, each with its last delivered
    /// tick (always `None` with [`Config::resume`] off).
    symbols: BTreeMap<String, Option<Position>>,
    events: mpsc::Sender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    shutdown: CancellationToken,
    /// When the last `reconnect` hint of the current connection says to
    /// reconnect (its receipt + `after_ms`).
    hint: Option<tokio::time::Instant>,
}

impl Runner {
    async fn run(mut self) {
        let n = self.config.endpoints.len();
        if n == 0 {
            tracing::error!("client: no endpoints configured");
            return;
        }
        let (mut attempt, mut next) = (0u32, 0usize);
        loop {
            let endpoint = self.config.endpoints[next].clone();
            next = (next + 1) % n;
            let connecting = timeout(CONNECT_TIMEOUT, connect(&endpoint, &self.config));
            let connected = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                r = connecting => r.unwrap_or_else(|_| Err(("connect timed out".into(), None))),
            };
            let (reason, floor) = match connected {
                Ok(mut ws) => {
                    attempt = 0;
                    match self.session(&endpoint, &mut ws).await {
                        End::Stop => return close(&mut ws).await,
                        End::Lost(reason) => (reason, None),
                    }
                }
                Err(failure) => failure,
            };
            tracing::debug!(%endpoint, %reason, "client disconnected");
            if !self.emit(Event::Disconnected { endpoint, reason }).await {
                return;
            }
            let delay = match self.hint.take() {
                Some(at) => at.saturating_duration_since(tokio::time::Instant::now()),
                None => {
                    let (base, cap) = (self.config.backoff_base, self.config.backoff_cap);
                    let jittered = backoff_delay(attempt, base, cap, &mut rand::rng());
                    attempt = attempt.saturating_add(1);
                    retry_delay(floor, jittered)
                }
            };
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Runs one connection until it ends or the task must stop.
    async fn session(&mut self, endpoint: &str, ws: &mut Ws) -> End {
        // Changes made while disconnected go into the full resubscribe below.
        while let Ok(command) = self.commands.try_recv() {
            self.apply(&command);
        }
        let connected = Event::Connected {
            endpoint: endpoint.to_owned(),
        };
        if !self.emit(connected).await {
            return End::Stop;
        }
        if let Some(end) = self.resubscribe(ws).await {
            return end;
        }
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return End::Stop,
                command = self.commands.recv(), if self.commands_open => {
                    let Some(command) = command else {
                        self.commands_open = false;
                        continue;
                    };
                    self.apply(&command);
                    if let Some(end) = self.send_op(ws, command.op, &command.symbols).await {
                        return end;
                    }
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        parse_frame(&text, &mut batch);
                        for event in batch.drain(..) {
                            match &event {
                                Event::Tick(tick) if self.config.resume => {
                                    track(&mut self.symbols, tick);
                                }
                                Event::Reconnect { after_ms } => {
                                    let after = Duration::from_millis(*after_ms);
                                    self.hint = Some(tokio::time::Instant::now() + after);
                                }
                                _ => {}
                            }
                            if !self.emit(event).await {
                                return End::Stop;
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        // Our answer is queued: give the edge a moment to end TCP.
                        let drain = async { while let Some(Ok(_)) = ws.next().await {} };
                        let _ = timeout(CLOSE_TIMEOUT, drain).await;
                        return End::Lost(match frame {
                            Some(CloseFrame { code, reason }) => {
                                format!("closed by edge: {} {reason}", u16::from(code))
                            }
                            None => "closed by edge without a code".to_owned(),
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return End::Lost(format!("read: {e}")),
                    None => return End::Lost("connection closed".to_owned()),
                },
            }
        }
    }

    /// Applies a command to the set; an unsubscribe forgets the positions.
    fn apply(&mut self, command: &Command) {
        if command.op == "subscribe" {
            for symbol in &command.symbols {
                // Subscribing again keeps the position (the edge changes nothing).
                self.symbols.entry(symbol.clone()).or_default();
            }
        } else {
            for symbol in &command.symbols {
                self.symbols.remove(symbol);
            }
        }
    }

    /// Subscribes to the whole set in chunks, each with the resume of its
    /// symbols; `Some` when the session must end.
    async fn resubscribe(&self, ws: &mut Ws) -> Option<End> {
        let all: Vec<(&String, Option<Position>)> =
            self.symbols.iter().map(|(s, p)| (s, *p)).collect();
        for chunk in all.chunks(SUBSCRIBE_CHUNK) {
            if let Some(end) = self.send_text(ws, subscribe_op(chunk)).await {
                return Some(end);
            }
        }
        None
    }

    /// Sends `op` in chunks; `Some` when the session must end.
    async fn send_op(&self, ws: &mut Ws, op: &str, symbols: &[String]) -> Option<End> {
        for chunk in symbols.chunks(SUBSCRIBE_CHUNK) {
            let text = serde_json::json!({ "op": op, "symbols": chunk }).to_string();
            if let Some(end) = self.send_text(ws, text).await {
                return Some(end);
            }
        }
        None
    }

    /// Sends one text frame; `Some` when the session must end.
    async fn send_text(&self, ws: &mut Ws, text: String) -> Option<End> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Some(End::Stop),
            sent = ws.send(Message::text(text)) => {
                sent.err().map(|e| End::Lost(format!("send: {e}")))
            }
        }
    }

    /// Queues an event, waiting while the channel is full; false means stop.
    async fn emit(&self, event: Event) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(event)) => tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => false,
                r = self.events.send(event) => r.is_ok(),
            },
        }
    }
}

/// TCP connect (to each resolved address in turn) and WebSocket handshake.
/// The error carries a reason and the server's `Retry-After`, if any.
async fn connect(endpoint: &str, config: &Config) -> Result<Ws, (String, Option<Duration>)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = endpoint
        .into_client_request()
        .map_err(|e| (format!("bad endpoint: {e}"), None))?;
    if config.deflate {
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            http::HeaderValue::from_static(OFFER),
        );
    }
    if let Some(token) = &config.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ("token is not a valid header value".to_string(), None))?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| (format!("bad endpoint: {e}"), None))?;
    if uri.scheme_str() != Some("ws") {
        return Err(("only ws:// endpoints are supported".into(), None));
    }
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = tokio::net::lookup_host((host, uri.port_u16().unwrap_or(80))).await;
    let addrs = addrs.map_err(|e| (format!("resolve {host}: {e}"), None))?;
    let mut failure = format!("{host} resolved to no address");
    for addr in addrs {
        let tcp = async {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }?;
            if let Some(bytes) = config.recv_buffer {
                socket.set_recv_buffer_size(bytes)?;
            }
            if let Some(ip) = config.local_addr {
                socket.bind(std::net::SocketAddr::new(ip, 0))?;
            }
            let stream = socket.connect(addr).await?;
            stream.set_nodelay(true).map(|()| stream)
        };
        match tcp.await {
            Ok(stream) => {
                let stream = crate::codec::deflate::Inflating::new(stream);
                return match tokio_tungstenite::client_async(request.clone(), stream).await {
                    Ok((mut ws, response)) => {
                        if accepts_deflate(&response) {
                            ws.get_mut().inflate(MAX_INFLATED);
                        }
                        Ok(ws)
                    }
                    Err(tungstenite::Error::Http(r)) => {
                        Err((format!("handshake: HTTP {}", r.status()), retry_after(&r)))
                    }
                    Err(e) => Err((format!("handshake: {e}"), None)),
                };
            }
            Err(e) => failure = format!("connect {addr}: {e}"),
        }
    }
    Err((failure, None))
}

/// What a client offers for permessage-deflate: no context kept either way,
/// as the edge answers anyway.
pub const OFFER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover";

/// Largest message the client inflates (the edge's frames are at most
/// `--max-frame-bytes`, 64 KiB by default).
pub const MAX_INFLATED: usize = 16 << 20;

/// Whether a `101` accepted permessage-deflate.
pub fn accepts_deflate<B>(response: &http::Response<B>) -> bool {
    response
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|e| {
                e.split(';').next().is_some_and(|n| {
                    n.trim()
                        .eq_ignore_ascii_case(crate::codec::deflate::EXTENSION)
                })
            })
        })
}

/// Sends a normal close and waits (briefly) for the edge's answer.
async fn close(ws: &mut Ws) {
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = timeout(CLOSE_TIMEOUT, async {
        if ws.close(Some(normal)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test edge's end of a connection.
    type Ws = WebSocketStream<TcpStream>;
    use rand::{rngs::StdRng, SeedableRng};
    use serde_json::json;
    use tokio::net::TcpListener;

    const DEADLINE: Duration = Duration::from_secs(5);

    #[test]
    fn backoff_is_full_jitter_capped_and_growing() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(10));
        let mut rng = StdRng::seed_from_u64(7);
        let mut sample = |attempt| -> Vec<Duration> {
            let mut draw = || backoff_delay(attempt, base, cap, &mut rng);
            (0..1000).map(|_| draw()).collect()
        };
        let (first, fifth) = (sample(0), sample(5));
        assert!(first.iter().all(|d| *d <= base));
        assert!(fifth.iter().all(|d| *d <= Duration::from_millis(3200)));
        assert!(fifth.iter().any(|d| *d != fifth[0]), "not jittered");
        let mean = fifth.iter().sum::<Duration>() / 1000;
        assert!(mean > *first.iter().max().unwrap(), "not growing");
        for attempt in [20, 31, 32, u32::MAX] {
            assert!(sample(attempt).iter().all(|d| *d <= cap));
        }
    }

    #[test]
    fn retry_after_is_a_floor_with_jitter_on_top() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(10));
        let mut rng = StdRng::seed_from_u64(11);
        let floor = Duration::from_secs(1);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| retry_delay(Some(floor), backoff_delay(3, base, cap, &mut rng)))
            .collect();
        assert!(delays.iter().all(|d| *d >= floor && *d <= floor + base * 8));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 900,
            "spread, not one wave: {}",
            distinct.len()
        );
        assert_eq!(retry_delay(None, base), base);
    }

    #[test]
    fn retry_after_only_for_429_and_503() {
        let answer = |status: u16, value: &str| {
            let response = http::Response::builder()
                .status(status)
                .header("Retry-After", value);
            retry_after(&response.body(None).unwrap())
        };
        assert_eq!(answer(503, "3"), Some(Duration::from_secs(3)));
        assert_eq!(answer(429, " 1 "), Some(Duration::from_secs(1)));
        assert_eq!(answer(500, "3"), None);
        assert_eq!(answer(503, "Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    fn parse(frame: Value) -> Vec<Event> {
        let mut out = Vec::new();
        parse_frame(&frame.to_string(), &mut out);
        out
    }

    fn tick(symbol: &str, seq: i64, ts: i64, price: f64, snapshot: bool) -> Tick {
        Tick {
            symbol: symbol.into(),
            seq,
            ts,
            price,
            snapshot,
        }
    }

    #[test]
    fn parses_every_frame_type() {
        let ticks = json!({"type": "ticks", "ticks": [
            {"symbol": "AAPL", "price": 189.25, "bid": 189.2, "ts": 17, "seq": 41,
             "snapshot": true},
            {"symbol": "MSFT", "price": 411.1, "size": 1.0, "ts": 18, "seq": 7},
        ]});
        let (aapl, msft) = (
            tick("AAPL", 41, 17, 189.25, true),
            tick("MSFT", 7, 18, 411.1, false),
        );
        assert_eq!(parse(ticks), [Event::Tick(aapl), Event::Tick(msft)]);
        let gap = json!({"type": "gap", "symbol": "A", "from_seq": 43, "to_seq": 57});
        let (symbol, from_seq, to_seq) = ("A".into(), 43, 57);
        assert_eq!(
            parse(gap),
            [Event::Gap {
                symbol,
                from_seq,
                to_seq
            }]
        );
        let stale = Event::Status {
            feed: "stale".into(),
        };
        assert_eq!(parse(json!({"type": "status", "feed": "stale"})), [stale]);
        let hint = Event::Reconnect { after_ms: 250 };
        assert_eq!(parse(json!({"type": "reconnect", "after_ms": 250})), [hint]);
        let subscribed = Event::Subscribed(vec!["A".into(), "B".into()]);
        assert_eq!(
            parse(json!({"type": "subscribed", "symbols": ["A", "B"]})),
            [subscribed]
        );
        let unsubscribed = Event::Unsubscribed(vec!["A".into()]);
        assert_eq!(
            parse(json!({"type": "unsubscribed", "symbols": ["A"]})),
            [unsubscribed]
        );
        let error =
            json!({"type": "error", "code": "invalid_symbol", "message": "m", "symbols": ["x y"]});
        let (code, message, symbols) = ("invalid_symbol".into(), "m".into(), vec!["x y".into()]);
        assert_eq!(
            parse(error),
            [Event::Error {
                code,
                message,
                symbols
            }]
        );
        let news = json!({"type": "news", "symbols": {"nested": true}});
        let short_gap = json!({"type": "gap", "symbol": "A"});
        for other in [news, short_gap, json!([1]), json!("not an object")] {
            assert_eq!(parse(other.clone()), [Event::Other(other)]);
        }
        let mut out = Vec::new();
        parse_frame("not json", &mut out);
        assert_eq!(out, [Event::Other(json!("not json"))]);
    }

    async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
        let event = timeout(DEADLINE, events.recv())
            .await
            .expect("no event in time");
        event.expect("event channel closed")
    }

    async fn disconnect_reason(events: &mut mpsc::Receiver<Event>) -> String {
        match next_event(events).await {
            Event::Disconnected { reason, .. } => reason,
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }

    async fn bind() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("ws://{}/ws", listener.local_addr().unwrap());
        (listener, endpoint)
    }

    /// Accepts the next connection and returns it with the first op it sent.
    async fn accept(listener: &TcpListener) -> (Ws, Value) {
        let accepted = timeout(DEADLINE, listener.accept())
            .await
            .expect("no connection");
        let mut ws = tokio_tungstenite::accept_async(accepted.unwrap().0)
            .await
            .unwrap();
        let op = read_op(&mut ws).await;
        (ws, op)
    }

    async fn read_op(ws: &mut Ws) -> Value {
        let message = timeout(DEADLINE, ws.next()).await.expect("no op").unwrap();
        serde_json::from_str(message.unwrap().to_text().unwrap()).unwrap()
    }

    fn op(op: &str, symbols: &[&str]) -> Value {
        json!({"op": op, "symbols": symbols})
    }

    /// A `subscribe` carrying `resume`.
    fn resuming(symbols: &[&str], resume: Value) -> Value {
        json!({"op": "subscribe", "symbols": symbols, "resume": resume})
    }

    /// Sends a `ticks` frame of (symbol, seq, ts, snapshot).
    async fn send_ticks(ws: &mut Ws, ticks: &[(&str, i64, i64, bool)]) {
        let ticks: Vec<Value> = ticks
            .iter()
            .map(|&(symbol, seq, ts, snapshot)| {
                let mut t =
                    json!({"symbol": symbol, "price": 1.0, "size": 1.0, "ts": ts, "seq": seq});
                if snapshot {
                    t["snapshot"] = json!(true);
                }
                t
            })
            .collect();
        let frame = json!({"type": "ticks", "ticks": ticks});
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }

    /// Waits for the next tick event, skipping others (`Connected`, ...).
    async fn next_tick(events: &mut mpsc::Receiver<Event>) -> Tick {
        let tick = async {
            loop {
                if let Event::Tick(t) = next_event(events).await {
                    return t;
                }
            }
        };
        timeout(DEADLINE, tick).await.expect("no tick in time")
    }

    /// Stops the task while the server answers its close on `ws`.
    async fn stop(shutdown: CancellationToken, task: JoinHandle<()>, mut ws: Ws) {
        shutdown.cancel();
        // Dropped once the close is answered: the edge ends TCP.
        let answer = async move { while let Some(Ok(_)) = ws.next().await {} };
        let (_, stopped) = timeout(DEADLINE, async { tokio::join!(answer, task) })
            .await
            .expect("task did not stop");
        stopped.unwrap();
    }

    fn config(endpoints: &[&String], base: Duration) -> Config {
        let endpoints = endpoints.iter().map(|e| e.to_string()).collect();
        let symbols = vec!["MSFT".into(), "AAPL".into()];
        let (backoff_base, backoff_cap, recv_buffer) = (base, base * 4, Some(65536));
        Config {
            endpoints,
            symbols,
            backoff_base,
            backoff_cap,
            recv_buffer,
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn reconnects_and_resubscribes_the_current_set() {
        let (listener, endpoint) = bind().await;
        let server = tokio::spawn(async move {
            let (mut ws, first) = accept(&listener).await;
            assert_eq!(first, op("subscribe", &["AAPL", "MSFT"]));
            let ticks = json!({"type": "ticks", "ticks": [
                {"symbol": "AAPL", "price": 1.5, "size": 1.0, "ts": 10, "seq": 1, "snapshot": true},
            ]});
            ws.send(Message::text(ticks.to_string())).await.unwrap();
            drop(ws); // no close frame: an edge killed mid-stream
            let (mut ws, second) = accept(&listener).await;
            let aapl = json!({"AAPL": {"seq": 1, "ts": 10}});
            assert_eq!(second, resuming(&["AAPL", "MSFT"], aapl.clone()));
            assert_eq!(read_op(&mut ws).await, op("unsubscribe", &["MSFT"]));
            assert_eq!(read_op(&mut ws).await, op("subscribe", &["TSLA"]));
            let away = CloseFrame {
                code: CloseCode::Away,
                reason: "draining".into(),
            };
            ws.close(Some(away)).await.unwrap();
            drop(ws);
            let (mut ws, third) = accept(&listener).await;
            assert_eq!(third, resuming(&["AAPL", "TSLA"], aapl));
            match timeout(DEADLINE, ws.next()).await.expect("no close") {
                Some(Ok(Message::Close(Some(frame)))) => frame.code,
                other => panic!("expected a close frame, got {other:?}"),
            }
        });
        let shutdown = CancellationToken::new();
        let config = config(&[&endpoint], Duration::from_millis(10));
        let (client, mut events, task) = spawn_client(config, shutdown.clone());
        let connected = Event::Connected { endpoint };
        assert_eq!(next_event(&mut events).await, connected);
        let snapshot = tick("AAPL", 1, 10, 1.5, true);
        assert_eq!(next_event(&mut events).await, Event::Tick(snapshot));
        disconnect_reason(&mut events).await;
        assert_eq!(next_event(&mut events).await, connected);
        assert!(client.unsubscribe(&["MSFT"]) && client.subscribe(&["TSLA"]));
        let reason = disconnect_reason(&mut events).await;
        assert!(reason.contains("1001 draining"), "{reason}");
        assert_eq!(next_event(&mut events).await, connected);
        shutdown.cancel();
        timeout(DEADLINE, task)
            .await
            .expect("task did not stop")
            .unwrap();
        assert_eq!(server.await.unwrap(), CloseCode::Normal);
        assert!(!client.subscribe(&["IBM"]), "the task has stopped");
    }

    #[tokio::test]
    async fn reconnect_hint_replaces_backoff_and_next_endpoint_is_used() {
        let ((first, a), (second, b)) = (bind().await, bind().await);
        let server = tokio::spawn(async move {
            let (mut ws, _) = accept(&first).await;
            let hint = json!({"type": "reconnect", "after_ms": 20});
            ws.send(Message::text(hint.to_string())).await.unwrap();
            // Close but keep TCP open: the client must not wait for it.
            ws.close(None).await.unwrap();
            // The backoff alone (base one hour) would not reconnect in time.
            let (_ws, resubscribe) = accept(&second).await;
            resubscribe
        });
        let shutdown = CancellationToken::new();
        let config = config(&[&a, &b], Duration::from_secs(3600));
        let (mut events, task) = spawn(config, shutdown.clone());
        assert_eq!(
            next_event(&mut events).await,
            Event::Connected { endpoint: a }
        );
        assert_eq!(
            next_event(&mut events).await,
            Event::Reconnect { after_ms: 20 }
        );
        disconnect_reason(&mut events).await;
        assert_eq!(
            next_event(&mut events).await,
            Event::Connected { endpoint: b }
        );
        assert_eq!(server.await.unwrap(), op("subscribe", &["AAPL", "MSFT"]));
        shutdown.cancel();
        timeout(DEADLINE, task)
            .await
            .expect("task did not stop")
            .unwrap();
    }

    #[tokio::test]
    async fn resume_carries_the_last_tick_of_each_symbol_chunked_with_its_symbols() {
        // Two chunks: S000..S499 and S500..S599.
        let all: Vec<String> = (0..600).map(|i| format!("S{i:03}")).collect();
        let (a, b) = (
            all[..SUBSCRIBE_CHUNK].to_vec(),
            all[SUBSCRIBE_CHUNK..].to_vec(),
        );
        let (listener, endpoint) = bind().await;
        let server = tokio::spawn(async move {
            let chunk = |c: &[String]| json!({"op": "subscribe", "symbols": c});
            let (mut ws, first) = accept(&listener).await;
            assert_eq!(first, chunk(&a), "no resume on the first connect");
            assert_eq!(read_op(&mut ws).await, chunk(&b));
            send_ticks(&mut ws, &[("S001", 5, 50, true), ("S001", 6, 60, false)]).await;
            // A duplicate and a regression: delivered, but the position stays.
            send_ticks(&mut ws, &[("S001", 6, 61, false), ("S001", 4, 40, false)]).await;
            // A snapshot below the position (the feed restarted its seqs) resets it.
            send_ticks(&mut ws, &[("S550", 9, 90, false), ("S550", 3, 30, true)]).await;
            // Not subscribed: not tracked.
            send_ticks(&mut ws, &[("OTHER", 7, 70, false)]).await;
            drop(ws);
            let (mut ws, first) = accept(&listener).await;
            let mut resume_a = chunk(&a);
            resume_a["resume"] = json!({"S001": {"seq": 6, "ts": 60}});
            assert_eq!(first, resume_a);
            let mut resume_b = chunk(&b);
            resume_b["resume"] = json!({"S550": {"seq": 3, "ts": 30}});
            assert_eq!(read_op(&mut ws).await, resume_b);
            ws
        });
        let shutdown = CancellationToken::new();
        let config = Config {
            symbols: all,
            ..config(&[&endpoint], Duration::from_millis(10))
        };
        let (mut events, task) = spawn(config, shutdown.clone());
        let mut seen = Vec::new();
        for _ in 0..7 {
            let t = next_tick(&mut events).await;
            seen.push((t.symbol, t.seq, t.ts, t.snapshot));
        }
        let expected = [
            ("S001", 5, 50, true),
            ("S001", 6, 60, false),
            ("S001", 6, 61, false),
            ("S001", 4, 40, false),
            ("S550", 9, 90, false),
            ("S550", 3, 30, true),
            ("OTHER", 7, 70, false),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|&(s, q, t, snap)| (s.to_owned(), q, t, snap))
            .collect();
        assert_eq!(seen, expected, "every tick delivered, none filtered");
        let ws = timeout(DEADLINE, server).await.expect("no resume").unwrap();
        stop(shutdown, task, ws).await;
    }

    #[tokio::test]
    async fn resume_off_resubscribes_without_positions() {
        let (listener, endpoint) = bind().await;
        let server = tokio::spawn(async move {
            let (mut ws, _) = accept(&listener).await;
            send_ticks(&mut ws, &[("AAPL", 1, 10, true), ("MSFT", 2, 20, false)]).await;
            drop(ws);
            let (ws, second) = accept(&listener).await;
            assert_eq!(second, op("subscribe", &["AAPL", "MSFT"]));
            ws
        });
        let shutdown = CancellationToken::new();
        let config = Config {
            resume: false,
            ..config(&[&endpoint], Duration::from_millis(10))
        };
        let (mut events, task) = spawn(config, shutdown.clone());
        assert_eq!(next_tick(&mut events).await.symbol, "AAPL");
        assert_eq!(next_tick(&mut events).await.symbol, "MSFT");
        let ws = timeout(DEADLINE, server)
            .await
            .expect("no resubscribe")
            .unwrap();
        stop(shutdown, task, ws).await;
    }

    #[tokio::test]
    async fn an_unsubscribe_forgets_the_position() {
        let (listener, endpoint) = bind().await;
        let server = tokio::spawn(async move {
            let (mut ws, _) = accept(&listener).await;
            send_ticks(&mut ws, &[("AAPL", 1, 10, true), ("MSFT", 2, 20, true)]).await;
            assert_eq!(read_op(&mut ws).await, op("unsubscribe", &["MSFT"]));
            // A tick sent before the edge saw the unsubscribe: delivered,
            // not tracked.
            send_ticks(&mut ws, &[("MSFT", 3, 30, false)]).await;
            // Subscribing again while connected carries no resume.
            assert_eq!(read_op(&mut ws).await, op("subscribe", &["MSFT"]));
            drop(ws);
            let (ws, second) = accept(&listener).await;
            let aapl = json!({"AAPL": {"seq": 1, "ts": 10}});
            assert_eq!(second, resuming(&["AAPL", "MSFT"], aapl));
            ws
        });
        let shutdown = CancellationToken::new();
        let config = config(&[&endpoint], Duration::from_millis(10));
        let (client, mut events, task) = spawn_client(config, shutdown.clone());
        assert_eq!(next_tick(&mut events).await.symbol, "AAPL");
        assert_eq!(next_tick(&mut events).await.symbol, "MSFT");
        assert!(client.unsubscribe(&["MSFT"]));
        let late = next_tick(&mut events).await;
        assert_eq!((late.symbol.as_str(), late.seq), ("MSFT", 3));
        assert!(client.subscribe(&["MSFT"]));
        let ws = timeout(DEADLINE, server)
            .await
            .expect("no resubscribe")
            .unwrap();
        stop(shutdown, task, ws).await;
    }

    #[test]
    fn positions_follow_the_highest_seq_and_reset_on_snapshots() {
        let mut symbols = BTreeMap::from([("A".to_owned(), None)]);
        let at = |symbols: &BTreeMap<String, Option<Position>>| symbols["A"].map(|p| (p.seq, p.ts));
        for (t, position) in [
            (tick("A", 7, 70, 1.0, false), (7, 70)), // the first tick, even without the flag
            (tick("A", 8, 80, 1.0, false), (8, 80)),
            (tick("A", 8, 81, 1.0, false), (8, 80)),
            (tick("A", 2, 20, 1.0, false), (8, 80)),
            (tick("A", 1, 10, 1.0, true), (1, 10)),
        ] {
            track(&mut symbols, &t);
            assert_eq!(at(&symbols), Some(position), "after {t:?}");
        }
        track(&mut symbols, &tick("B", 1, 10, 1.0, true));
        assert_eq!(symbols.len(), 1, "only subscribed symbols are tracked");
        let (a, b, c) = ("A".to_owned(), "B".to_owned(), "C".to_owned());
        let op: Value = serde_json::from_str(&subscribe_op(&[
            (&a, Some(Position { seq: 1, ts: 10 })),
            (&b, None),
            (&c, Some(Position { seq: -1, ts: 5 })),
        ]))
        .unwrap();
        let expected = json!({"op": "subscribe", "symbols": ["A", "B", "C"],
            "resume": {"A": {"seq": 1, "ts": 10}}});
        assert_eq!(op, expected, "only symbols with a valid position");
    }
}
