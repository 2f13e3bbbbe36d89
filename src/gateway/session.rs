//! One client's WebSocket session: a single task that reads control messages,
//! applies them to the registry, and writes whatever the outbox holds, one
//! frame per drain. It also keeps the connection honest: ping/pong with
//! dead-peer detection (only a pong answering the edge's own ping counts),
//! per-connection budgets for control messages and for the symbols they name,
//! read budgets below tungstenite ([`super::meter`]), a write timeout, token
//! expiry and in-band refresh, and a paced close when the edge drains.
//!
//! Reading and writing are concurrent within the task: the writer is polled
//! next to the reader and the session's one timer, so a write the client does
//! not take never stops the session from enforcing its write timeout, the
//! token's expiry, the drain deadline or the idle timeout.
//!
//! Generic over the connection (any `AsyncRead + AsyncWrite`), so it is
//! tested over in-memory pipes with tokio's paused clock as well as over real
//! sockets.
//!
//! It never decodes a record or encodes a tick: its frames are built from the
//! pre-encoded bytes its outbox holds.

use std::{
    borrow::Cow,
    collections::{HashSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use rand::Rng;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::{Instant, Sleep},
};
use tokio_tungstenite::{
    tungstenite::{
        self,
        error::ProtocolError,
        protocol::{
            frame::{
                coding::{CloseCode, Data as OpData, OpCode},
                Frame, FrameHeader,
            },
            CloseFrame, Role, WebSocketConfig,
        },
        Message,
    },
    WebSocketStream,
};
use tokio_util::sync::CancellationToken;

use super::{
    admission::Permit,
    auth::{Entitlements, Grant},
    meter::{self, FloodKind, Limiter, Meter, WriteStall},
    protocol::{self, ErrorCode, Options, Reply, Request},
    Shared,
};
use crate::{
    codec::{deflate, wire},
    fanout::{FeedStatus, Out, Outbox, Resumed},
    market::{Symbol, SymbolError},
};

/// Outbox drains the writer turns into frames per poll before it lets the
/// reader and the timers run, so a client with a deep backlog still gets its
/// requests answered.
const FRAMES_PER_WAKE: usize = 8;
/// The session stops reading requests while this many frames wait to be
/// written: a client that sends but does not read cannot queue replies
/// without bound (it runs into the write timeout instead).
const READ_PAUSE: usize = 32;
/// At most this many rejected symbols are echoed back, each cut to this length.
const ECHO_MAX: usize = 50;
const ECHO_LEN: usize = 40;
/// How long the edge tries to write its close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// After its close frame, how long and how much the edge reads (and
/// discards) so the close frame is not lost to a TCP reset (see
/// [`Meter::linger`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;
/// Retry hint of an `unknown_symbol` or `edge_full` error.
const RETRY_AFTER_MS: u64 = 1000;
/// Message of the `unknown_symbol` notice (no `retry_after_ms`).
const UNKNOWN_NOTICE: &str = "the topic holds no tick of these symbols: their partitions were read (the snapshot rewind) and none came; still subscribed, a first tick would arrive as a snapshot";

/// Close code for a message that violates a policy: a read budget (RFC 6455).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code for a message larger than the configured maximum (RFC 6455).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for a text message that is not UTF-8 (RFC 6455).
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code for a frame that breaks the protocol, such as reserved bits
/// set without a negotiated extension (RFC 6455).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code when the edge drains for a restart (RFC 6455 "service restart").
pub const CLOSE_RESTART: u16 = 1012;
/// Close code when the session's token expired and was not refreshed.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// How a session ends; `why` is the `reason` label of
/// `tickfan_sessions_ended_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Send this close frame.
    Close {
        code: u16,
        reason: Cow<'static, str>,
        why: &'static str,
    },
    /// The peer is gone, dead or not reading: just drop the connection.
    Drop(&'static str),
    /// The client closed with this code (1005: it gave none); tungstenite
    /// has queued the close reply.
    ClientClosed(u16),
}

impl End {
    fn close(code: u16, reason: impl Into<Cow<'static, str>>, why: &'static str) -> End {
        End::Close {
            code,
            reason: reason.into(),
            why,
        }
    }

    fn why(&self) -> &'static str {
        match self {
            End::Close { why, .. } | End::Drop(why) => why,
            End::ClientClosed(_) => "client_closed",
        }
    }
}

/// Runs a session over `io` (an upgraded connection) until the client
/// leaves, errs, stalls, or the edge drains (`drain` fires): then the client
/// gets a `reconnect` hint at a random point of the drain window and is
/// closed with 1012 when it comes.
///
/// The first frame is the feed `status` when it is stale, or always with
/// `announce` (a client that asked for refusals in band learns at once that
/// it was admitted). `permit` (the connection's admission slot) is held
/// until the session has ended.
///
/// Not an `async fn`: an async fn keeps its arguments (the grant) in the
/// future for its whole life, next to what they were moved into. Every idle
/// connection holds this future, so the set-up happens here and the
/// returned future holds only what the session needs.
pub fn run<IO>(
    io: IO,
    shared: Arc<Shared>,
    drain: CancellationToken,
    grant: Option<Box<Grant>>,
    announce: bool,
    deflate: bool,
    permit: Option<Permit>,
) -> impl Future<Output = ()> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let c = &shared.config;
    let stall = Arc::new(WriteStall::default());
    let limits = meter::Limits {
        frames_per_sec: c.client_frame_rate,
        bytes_per_sec: c.client_byte_rate,
        bytes_burst: c
            .client_byte_rate
            .max(c.max_message_bytes.saturating_mul(4).min(u32::MAX as usize) as u32),
        max_fragments: c.max_fragments,
    };
    // Inflation above the meter: the read budgets count what came on the
    // wire, a compressed frame as the frame it was.
    let mut io = deflate::Inflating::new(Meter::new(io, limits, stall.clone()));
    if deflate {
        io.inflate(c.max_message_bytes);
    }
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(c.write_buffer_bytes)
        .max_write_buffer_size(c.max_frame_bytes.max(c.write_buffer_bytes) * 4)
        .max_message_size(Some(c.max_message_bytes))
        .max_frame_size(Some(c.max_message_bytes));
    let outbox = Arc::new(Outbox::new(c.outbox_capacity).with_replay_room(c.resume_max_ticks));
    let handle = shared.sessions.insert(outbox.clone());
    shared.metrics.connections.inc();
    let auth = grant.map(|g| {
        Box::new(Auth {
            closes_at: closes_at(g.expires_at, &shared),
            expires: g.expires_at,
            subject: g.subject,
            entitlements: g.entitlements,
        })
    });
    let mut session = Session {
        control: meter::limiter(c.control_rate, c.control_burst),
        symbol_budget: meter::limiter(c.symbol_rate, c.symbol_burst),
        writer: Writer {
            queue: VecDeque::new(),
            unflushed: false,
            outbox_ready: false,
            rearm: false,
            stall,
            stall_timer: None,
            timeout: c.write_timeout,
            deflate,
        },
        shared,
        outbox,
        symbols: HashSet::new(),
        unknown: Vec::new(),
        auth,
        last_limited_notice: None,
    };
    // Built here, not in the future: what the future captures it keeps for
    // its whole life, so the raw socket and the config would sit in every
    // idle session's future beside the stream made of them. Without a
    // handshake there is nothing to wait for: the first poll is ready.
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config))
        .now_or_never()
        .expect("a WebSocket without a handshake is ready at once");
    let (mut tx, mut rx) = ws.split();
    async move {
        // In a block: `end` is moved into the ending, and a local whose
        // scope spans an await keeps its room in the future even once moved
        // (48 bytes in every idle session's future).
        let ending = {
            let end = session.drive(&mut tx, &mut rx, &drain, announce).await;
            match &end {
                End::Close { code, reason, why } => {
                    tracing::debug!(code, %reason, reason_label = why, "session closing")
                }
                End::Drop(why) => tracing::debug!(reason = why, "session dropped"),
                End::ClientClosed(code) => tracing::debug!(code, "client closed"),
            }
            session.shared.metrics.session_ended(end.why());
            // Boxed: the ending's futures (timeouts, the linger's read
            // buffer) would otherwise take room in every idle session's
            // future.
            Box::pin(finish(end, tx, rx))
        };
        ending.await;
        session.leave();
        session.shared.sessions.remove(handle);
        session.shared.metrics.connections.dec();
        // The connection's admission slot, released last.
        drop(permit);
    }
}

/// A session's socket as tungstenite reads it: metered, then inflated.
type Wire<IO> = deflate::Inflating<Meter<IO>>;

/// Says goodbye as `end` asks: the close frame, then a lingering close; or
/// the close reply tungstenite queued for a client that closed.
async fn finish<IO>(
    end: End,
    mut tx: futures_util::stream::SplitSink<WebSocketStream<Wire<IO>>, Message>,
    rx: futures_util::stream::SplitStream<WebSocketStream<Wire<IO>>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match end {
        End::Close { code, reason, .. } => {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.as_ref().into(),
            };
            let sent =
                tokio::time::timeout(CLOSE_WRITE_TIMEOUT, tx.send(Message::Close(Some(frame))))
                    .await;
            if let (Ok(Ok(())), Ok(mut ws)) = (sent, tx.reunite(rx)) {
                ws.get_mut().get_mut().linger(LINGER, LINGER_BYTES).await;
            }
        }
        End::ClientClosed(_) => {
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, tx.flush()).await;
        }
        End::Drop(_) => {}
    }
}

struct Session {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    symbols: HashSet<Symbol>,
    /// Subscribed symbols of which the edge held no tick when they were
    /// subscribed, until one arrives (pruned lazily): at most
    /// `--max-unknown-symbols`.
    unknown: Vec<Symbol>,
    /// The token's terms (auth on); boxed, as most deployments' sessions
    /// have none and every idle connection holds a `Session`.
    auth: Option<Box<Auth>>,
    /// Control messages per second (GCRA).
    control: Limiter,
    /// Symbols named by subscribes and unsubscribes per second (GCRA).
    symbol_budget: Limiter,
    last_limited_notice: Option<Instant>,
    writer: Writer,
}

/// What a session's token grants, kept up to date by in-band refreshes.
struct Auth {
    /// When the token expires.
    expires: Option<SystemTime>,
    /// When the session is closed for an expired token: `expires` + grace.
    closes_at: Option<Instant>,
    /// The token's subject; a refresh must keep it.
    subject: Option<String>,
    entitlements: Entitlements,
}

/// When a session whose token expires at `expires` must be closed.
fn closes_at(expires: Option<SystemTime>, shared: &Shared) -> Option<Instant> {
    let grace = shared
        .verifier
        .as_ref()
        .map(|v| v.expiry_grace())
        .unwrap_or_default();
    expires.map(|e| instant_at(e) + grace)
}

/// The instant at which a wall-clock time falls, seen from now.
fn instant_at(t: SystemTime) -> Instant {
    let now = Instant::now();
    match t.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

/// Why the writer gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteEnd {
    /// No byte was taken for `--write-timeout`.
    Stalled,
    /// The connection failed.
    Gone,
    /// The outbox was woken while some symbol is rate-limited: the session
    /// loop re-arms its release timer ([`Outbox::arm_release`]) and goes on.
    Rearm,
}

/// The session's outgoing side: frames waiting to be written (replies,
/// notices, pings, and tick frames drained from the outbox), written as the
/// socket takes them.
struct Writer {
    queue: VecDeque<Message>,
    /// Frames were handed to tungstenite since the last completed flush.
    unflushed: bool,
    /// The outbox was woken and may hold entries.
    outbox_ready: bool,
    /// The outbox was woken while rate-limited: the session loop must pass
    /// again to re-arm its release timer.
    rearm: bool,
    stall: Arc<WriteStall>,
    /// Armed while the socket refuses bytes: fires `--write-timeout` after
    /// the last progress. Allocated only while blocked.
    stall_timer: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    /// permessage-deflate was negotiated.
    deflate: bool,
}

impl Writer {
    fn push(&mut self, text: String, shared: &Shared) {
        let min = self.deflate.then_some(shared.config.deflate_min_bytes);
        self.queue.push_back(text_message(text, min));
    }

    /// Writes what it can; `Pending` while idle or while the socket is full
    /// (within the write timeout), `Ready` only when the session must end.
    fn poll_write<Tx>(
        &mut self,
        cx: &mut Context<'_>,
        tx: &mut Tx,
        outbox: &Outbox,
        shared: &Shared,
    ) -> Poll<WriteEnd>
    where
        Tx: Sink<Message> + Unpin,
    {
        let mut drains = 0;
        // The outbox's wake-up is polled here, in the writer's own poll: a
        // wake-up costs one pass of the session loop, not two.
        if !self.outbox_ready {
            self.take_wake(cx, outbox);
        }
        loop {
            if self.queue.is_empty() && self.outbox_ready {
                if drains == FRAMES_PER_WAKE {
                    // Let the reader and the timers run; come back at once.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                drains += 1;
                self.outbox_ready = fill(&mut self.queue, outbox, shared, self.deflate);
            }
            if !self.queue.is_empty() {
                match tx.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        let msg = self.queue.pop_front().expect("not empty");
                        if tx.start_send_unpin(msg).is_err() {
                            return Poll::Ready(WriteEnd::Gone);
                        }
                        self.unflushed = true;
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(WriteEnd::Gone),
                    Poll::Pending => return self.blocked(cx),
                }
            }
            if self.unflushed {
                match tx.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(WriteEnd::Gone),
                    Poll::Pending => return self.blocked(cx),
                }
            }
            if self.queue.is_empty() && !self.outbox_ready && self.take_wake(cx, outbox) {
                // Woken while writing: come back after the other tasks that
                // are ready, not at once. Meanwhile more ticks gather, and
                // go out in fewer, larger frames: chasing every wake-up
                // within one poll cut broadcast to 1,000 clients from 1.5
                // million deliveries/s to 0.3 million (issue 18).
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.queue.is_empty() && !self.outbox_ready {
                // Everything written: idle until something is queued. An
                // idle connection keeps no queue (an allocation per write
                // cycle is nothing next to its syscall; 256 bytes on each of
                // 15,000 idle connections is not).
                if self.queue.capacity() > 0 {
                    self.queue = VecDeque::new();
                }
                self.stall_timer = None;
                self.stall.clear();
                if std::mem::take(&mut self.rearm) {
                    return Poll::Ready(WriteEnd::Rearm);
                }
                return Poll::Pending;
            }
        }
    }

    /// Takes the outbox's wake-up, if it came (then the outbox is to be
    /// drained, and a rate-limited one's release timer re-armed); registers
    /// the task for the next one otherwise.
    fn take_wake(&mut self, cx: &mut Context<'_>, outbox: &Outbox) -> bool {
        if !outbox.poll_woken(cx) {
            return false;
        }
        self.outbox_ready = true;
        self.rearm |= outbox.is_rate_limited();
        true
    }

    /// The socket took nothing: `Ready(Stalled)` once it has taken nothing
    /// for the write timeout, else `Pending` with the stall timer armed.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<WriteEnd> {
        let Some(since) = self.stall.blocked_since() else {
            return Poll::Pending;
        };
        let deadline = since + self.timeout;
        let timer = match &mut self.stall_timer {
            Some(t) => {
                if t.deadline() != deadline {
                    t.as_mut().reset(deadline);
                }
                t
            }
            slot => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(WriteEnd::Stalled),
            Poll::Pending => Poll::Pending,
        }
    }

    fn has_ping_queued(&self) -> bool {
        self.queue.iter().any(|m| matches!(m, Message::Ping(_)))
    }
}

/// Drains the outbox once into `queue`: a feed status change first, then
/// `unknown_symbol` notices (as few frames as the echo limit allows), then
/// drop notices, then ticks in frames of at most `max_frame_bytes`, with
/// upstream gap notices in their place in the stream. Returns whether more is queued in the outbox.
fn fill(queue: &mut VecDeque<Message>, outbox: &Outbox, shared: &Shared, deflate: bool) -> bool {
    let min = deflate.then_some(shared.config.deflate_min_bytes);
    if let Some(status) = outbox.take_feed() {
        queue.push_back(text_message(protocol::status_json(status), min));
    }
    let cap = shared
        .config
        .max_frame_bytes
        .saturating_sub(wire::FRAME_OVERHEAD);
    let mut d = outbox.drain(cap);
    if d.is_empty() {
        return false;
    }
    if !d.unknown.is_empty() {
        shared
            .metrics
            .unknown_symbols
            .inc_by(d.unknown.len() as u64);
        d.unknown.sort();
        for chunk in d.unknown.chunks(ECHO_MAX) {
            let symbols: Vec<String> = chunk.iter().map(|s| s.to_string()).collect();
            queue.push_back(text_message(
                protocol::error_json(ErrorCode::UnknownSymbol, UNKNOWN_NOTICE, Some(&symbols)),
                min,
            ));
        }
        if d.entries.is_empty() && d.dropped.is_empty() {
            return d.more; // notices only: no write of ticks to measure
        }
    }
    let (mut frames, mut gaps) = (0u64, d.dropped.len() as u64);
    for g in &d.dropped {
        queue.push_back(text_message(protocol::gap_json(g), min));
    }
    let mut run: Vec<&bytes::Bytes> = Vec::with_capacity(d.ticks);
    for entry in &d.entries {
        match entry {
            Out::Tick(b) => run.push(b),
            Out::Gap(g) => {
                if !run.is_empty() {
                    queue.push_back(ticks_message(&mut run, d.bytes, min, &shared.metrics));
                    frames += 1;
                }
                queue.push_back(text_message(protocol::gap_json(g), min));
                gaps += 1;
            }
        }
    }
    if !run.is_empty() {
        queue.push_back(ticks_message(&mut run, d.bytes, min, &shared.metrics));
        frames += 1;
    }
    let m = &shared.metrics;
    m.outbox_depth.observe(d.entries.len() as f64);
    if d.oldest_ts > 0 {
        let lag_us = crate::market::now_micros() - d.oldest_ts;
        m.e2e_latency.observe(lag_us.max(0) as f64 / 1e6);
    }
    m.gaps.inc_by(gaps);
    m.frames.inc_by(frames);
    m.deliveries.inc_by(d.ticks as u64);
    d.more
}

/// A ticks frame of the ticks `run` holds (emptied), `bytes` their encoded
/// size: compressed (once for all the clients getting the same ticks, see
/// [`wire::deflated_frame`]) when permessage-deflate was negotiated (`min`:
/// `--deflate-min-bytes`), the frame is that long and compression shrinks
/// it; as plain text otherwise.
fn ticks_message(
    run: &mut Vec<&bytes::Bytes>,
    bytes: usize,
    min: Option<usize>,
    metrics: &crate::telemetry::Metrics,
) -> Message {
    let plain = bytes + run.len().saturating_sub(1) + wire::FRAME_OVERHEAD;
    if min.is_some_and(|min| plain >= min) {
        let (z, fresh) = wire::deflated_frame(run, bytes);
        if fresh {
            metrics.deflate_compressions.inc();
        }
        if z.len() < plain {
            run.clear();
            metrics.deflate_frames.inc();
            metrics.deflate_text_bytes.inc_by(plain as u64);
            metrics.deflate_sent_bytes.inc_by(z.len() as u64);
            return compressed(z);
        }
    }
    Message::text(wire::ticks_frame(run.drain(..), bytes))
}

/// A reply or notice: compressed (for this client alone) when
/// permessage-deflate was negotiated, it is at least `min` bytes long and
/// compression shrinks it; as plain text otherwise.
fn text_message(text: String, min: Option<usize>) -> Message {
    if min.is_some_and(|min| text.len() >= min) {
        let z = deflate::message([deflate::piece(text.as_bytes()).as_slice()], 0);
        if z.len() < text.len() {
            return compressed(z);
        }
    }
    Message::text(text)
}

/// A text message's compressed payload as its frame: RSV1 set (RFC 7692).
/// tungstenite writes a frame's header bits as given.
fn compressed(payload: impl Into<bytes::Bytes>) -> Message {
    let header = FrameHeader {
        is_final: true,
        rsv1: true,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::Data(OpData::Text),
        mask: None,
    };
    Message::Frame(Frame::from_payload(header, payload.into()))
}

/// Whether a pong's payload answers one of the edge's last two pings.
fn answers(pong: &[u8], pings: &[u64; 2]) -> bool {
    <[u8; 8]>::try_from(pong)
        .map(u64::from_be_bytes)
        .is_ok_and(|p| p != 0 && pings.contains(&p))
}

/// How a read error ends the session.
fn read_error_end(e: &tungstenite::Error, config: &super::Config) -> End {
    if let Some(kind) = meter::flood_of(e) {
        return match kind {
            FloodKind::Frames => End::close(
                CLOSE_POLICY,
                format!("more than {} frames a second", config.client_frame_rate),
                "frame_rate",
            ),
            FloodKind::Bytes => End::close(
                CLOSE_POLICY,
                format!("more than {} bytes a second", config.client_byte_rate),
                "byte_rate",
            ),
            FloodKind::Fragments => End::close(
                CLOSE_POLICY,
                format!("a message in more than {} fragments", config.max_fragments),
                "fragments",
            ),
        };
    }
    if let Some(bad) = meter::cause::<deflate::InflateError>(e) {
        return match bad {
            deflate::InflateError::TooBig => End::close(
                CLOSE_TOO_BIG,
                "compressed message inflates beyond the size limit",
                "message_too_big",
            ),
            deflate::InflateError::Invalid => End::close(
                CLOSE_INVALID_DATA,
                "compressed message is not valid deflate data",
                "invalid_deflate",
            ),
            deflate::InflateError::Protocol => End::close(
                CLOSE_PROTOCOL,
                "data frame inside a compressed message",
                "protocol_error",
            ),
        };
    }
    match e {
        tungstenite::Error::Capacity(_) => {
            End::close(CLOSE_TOO_BIG, "message too big", "message_too_big")
        }
        tungstenite::Error::Utf8(_) => End::close(
            CLOSE_INVALID_DATA,
            "text message is not valid UTF-8",
            "invalid_utf8",
        ),
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            End::Drop("peer_gone")
        }
        tungstenite::Error::Protocol(p) => {
            let reason = match p {
                ProtocolError::NonZeroReservedBits => Cow::Borrowed("reserved bits set"),
                other => {
                    let mut r = other.to_string();
                    r.truncate(100);
                    Cow::Owned(r)
                }
            };
            End::close(CLOSE_PROTOCOL, reason, "protocol_error")
        }
        _ => End::Drop("peer_gone"),
    }
}

impl Session {
    /// The session loop; returns how to end.
    async fn drive<Tx, Rx>(
        &mut self,
        tx: &mut Tx,
        rx: &mut Rx,
        drain: &CancellationToken,
        announce: bool,
    ) -> End
    where
        Tx: Sink<Message> + Unpin,
        Rx: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    {
        // Changes from here on come through the outbox (taken first: one
        // made before this read is in it).
        let _ = self.outbox.take_feed();
        let status = *self.shared.feed.borrow();
        if announce || status == FeedStatus::Stale {
            self.writer
                .push(protocol::status_json(status), &self.shared);
        }
        // One timer for everything time-driven (the next ping, the idle
        // deadline, the drain close, token expiry): a connection holds one
        // timer entry, plus the writer's while a write is blocked.
        // Durations are read from the config where used, not kept in
        // locals: what lives across an await takes room in the future of
        // every idle connection.
        let mut next_ping = Instant::now() + self.shared.config.ping_interval;
        // When the session is dropped unless a pong answers one of our pings
        // (pushed back by each answer).
        let mut silent_at = Instant::now() + self.shared.config.idle_timeout;
        // Payloads of the last two pings sent (random; 0: none).
        let mut pings = [0u64; 2];
        let mut close_at: Option<Instant> = None;
        let timer = tokio::time::sleep_until(next_ping);
        tokio::pin!(timer);
        // Waits that outlive one pass of the loop, so they register with
        // their (shared) notifier once, not on every pass: the drain token is
        // shared by every session, and a busy session passes twice per wake.
        let drained = drain.cancelled();
        tokio::pin!(drained);
        loop {
            // A rate-limited symbol's waiting tick (max_hz).
            // A release already due is the writer's once it is to look at
            // the outbox (its drain releases it): armed then, the timer
            // would fire ahead of the writer on every pass. A future one is
            // always armed: the writer may look and find nothing due yet
            // without this loop passing again.
            let release = self.outbox.arm_release(self.writer.outbox_ready);
            {
                // Scoped, so as not to outlive the await below.
                let due = [
                    Some(next_ping),
                    Some(silent_at),
                    close_at,
                    self.expiry(),
                    release,
                ]
                .into_iter()
                .flatten()
                .min()
                .expect("next_ping is always set");
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
            }
            let reading = self.writer.queue.len() < READ_PAUSE;
            let writer = &mut self.writer;
            let (outbox, shared) = (&self.outbox, &self.shared);
            tokio::select! {
                biased;
                _ = &mut drained, if close_at.is_none() => {
                    let window = self.shared.config.drain_window;
                    let after = if window.is_zero() {
                        Duration::ZERO
                    } else {
                        rand::rng().random_range(Duration::ZERO..window)
                    };
                    let hint = Reply::Reconnect { after_ms: after.as_millis() as u64 }.to_json();
                    self.writer.push(hint, &self.shared);
                    close_at = Some(Instant::now() + after);
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if release.is_some_and(|t| t <= now) {
                        self.writer.outbox_ready = true;
                    }
                    if close_at.is_some_and(|t| t <= now) {
                        return End::close(CLOSE_RESTART, "edge restarting; reconnect", "draining");
                    }
                    if self.expiry().is_some_and(|t| t <= now) {
                        return End::close(CLOSE_TOKEN_EXPIRED, "token expired", "token_expired");
                    }
                    if silent_at <= now {
                        return End::Drop("idle_timeout"); // no pong for our pings
                    }
                    if next_ping <= now {
                        // Like `MissedTickBehavior::Delay`: the next ping is
                        // an interval after this one was queued.
                        next_ping = now + self.shared.config.ping_interval;
                        if !self.writer.has_ping_queued() {
                            let payload = rand::random::<u64>() | 1;
                            pings = [payload, pings[0]];
                            self.writer
                                .queue
                                .push_back(Message::Ping(payload.to_be_bytes().to_vec().into()));
                        }
                    }
                }
                end = std::future::poll_fn(|cx| writer.poll_write(cx, tx, outbox, shared)) => {
                    return match end {
                        WriteEnd::Stalled => End::Drop("write_timeout"),
                        WriteEnd::Gone => End::Drop("peer_gone"),
                        WriteEnd::Rearm => continue,
                    };
                }
                incoming = rx.next(), if reading => match incoming {
                    None => return End::Drop("peer_gone"),
                    Some(Err(e)) => return read_error_end(&e, &self.shared.config),
                    Some(Ok(Message::Close(frame))) => {
                        // 1005: "no status received" (RFC 6455, 7.1.5).
                        return End::ClientClosed(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                    }
                    Some(Ok(Message::Pong(data))) => {
                        // Only an answer to our own ping proves the peer reads.
                        if answers(&data, &pings) {
                            silent_at = Instant::now() + self.shared.config.idle_timeout;
                        }
                    }
                    // Pings are answered by tungstenite.
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                    Some(Ok(msg)) => {
                        for r in self.on_message(&msg) {
                            self.writer.push(r, &self.shared);
                        }
                        // A subscribe queues snapshots without waking the
                        // writer: look at the outbox after the replies.
                        self.writer.outbox_ready = true;
                    }
                },
            }
        }
    }

    /// When the session is closed for its token's expiry, if it has one.
    fn expiry(&self) -> Option<Instant> {
        self.auth.as_ref().and_then(|a| a.closes_at)
    }

    /// Whether the session's token (if any) covers `symbol`.
    fn allows(&self, symbol: &str) -> bool {
        self.auth
            .as_ref()
            .is_none_or(|a| a.entitlements.allows(symbol))
    }

    /// Answers one client message; returns the frames to send.
    fn on_message(&mut self, msg: &Message) -> Vec<String> {
        let text = match msg {
            Message::Text(t) => t.as_str(),
            Message::Binary(_) => {
                return vec![self.error(
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not supported; send JSON text",
                    None,
                )]
            }
            _ => return Vec::new(),
        };
        if self.control.check().is_err() {
            let msg = format!(
                "more than {} control messages per second; message ignored",
                self.shared.config.control_rate
            );
            return self.rate_limited(msg);
        }
        let request = match protocol::parse(text) {
            Err(r) => return vec![self.error(r.code, &r.message, None)],
            Ok(r) => r,
        };
        let symbols = match &request {
            Request::Subscribe(s, _, _) | Request::Unsubscribe(s) => s.len(),
            Request::Auth(_) => 0,
        };
        let c = &self.shared.config;
        if symbols > c.max_symbols {
            // Refused whole, before any work.
            let msg = format!(
                "at most {} symbols per request; request ignored",
                c.max_symbols
            );
            return vec![self.error(ErrorCode::TooManySymbols, &msg, None)];
        }
        if symbols > 0 && !meter::take(&self.symbol_budget, symbols, c.symbol_burst) {
            let msg = format!(
                "more than {} symbols per second in subscribe and unsubscribe requests; request ignored",
                c.symbol_rate
            );
            return self.rate_limited(msg);
        }
        match request {
            Request::Subscribe(symbols, options, resume) => {
                self.subscribe(symbols, options, resume)
            }
            Request::Unsubscribe(symbols) => self.unsubscribe(symbols),
            Request::Auth(token) => self.refresh(&token),
        }
    }

    /// A request over a budget is ignored; the client is told at most once a
    /// second.
    fn rate_limited(&mut self, message: String) -> Vec<String> {
        self.shared
            .metrics
            .protocol_error(ErrorCode::RateLimited.as_str());
        let due = self
            .last_limited_notice
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !due {
            return Vec::new();
        }
        self.last_limited_notice = Some(Instant::now());
        vec![protocol::error_json(ErrorCode::RateLimited, &message, None)]
    }

    /// In-band token refresh: same subject, new expiry and entitlements.
    fn refresh(&mut self, token: &str) -> Vec<String> {
        let Some(verifier) = self.shared.verifier.as_ref() else {
            return vec![self.error(
                ErrorCode::AuthDisabled,
                "authentication is not enabled on this edge",
                None,
            )];
        };
        let grant = match verifier.verify(token) {
            Ok(g) => g,
            Err(e) => {
                self.shared.metrics.auth_failure(e.label());
                return vec![self.error(ErrorCode::AuthFailed, e.reason(), None)];
            }
        };
        let auth = self.auth.get_or_insert_with(|| {
            Box::new(Auth {
                expires: None,
                closes_at: None,
                subject: None,
                entitlements: Entitlements::all(),
            })
        });
        if grant.subject != auth.subject {
            return vec![self.error(
                ErrorCode::AuthFailed,
                "token subject differs from the session's",
                None,
            )];
        }
        auth.expires = grant.expires_at;
        auth.closes_at = closes_at(auth.expires, &self.shared);
        auth.entitlements = grant.entitlements;
        let exp = auth
            .expires
            .and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let mut out = vec![Reply::Authenticated { exp }.to_json()];
        // Subscriptions the new token no longer covers end now.
        let mut lost: Vec<String> = self
            .symbols
            .iter()
            .filter(|s| !self.allows(s.as_str()))
            .map(|s| s.to_string())
            .collect();
        lost.sort(); // stable answers, whatever the set's order
        if !lost.is_empty() {
            out.extend(self.unsubscribe(lost.clone()));
            out.push(self.error(
                ErrorCode::NotEntitled,
                "the refreshed token does not cover these symbols",
                Some(lost),
            ));
        }
        out
    }

    /// Whether the connection already waits for `--max-unknown-symbols`
    /// symbols the edge holds no tick of (forgetting those that got one).
    fn unknown_full(&mut self) -> bool {
        let max = self.shared.config.max_unknown_symbols;
        if self.unknown.len() < max {
            return false;
        }
        let (registry, symbols) = (&self.shared.registry, &self.symbols);
        self.unknown
            .retain(|s| symbols.contains(s) && !registry.has_tick(s.as_str()));
        self.unknown.len() >= max
    }

    /// Linear in the request: one hash lookup per symbol, one registry
    /// insert per new subscription.
    fn subscribe(
        &mut self,
        requested: Vec<String>,
        options: Options,
        mut resume: protocol::Resume,
    ) -> Vec<String> {
        let interval = self.shared.config.update_interval(options.max_hz);
        let every_tick = interval.is_none() && !options.latest;
        let now = crate::market::now_micros();
        let max = self.shared.config.max_symbols;
        let (mut accepted, mut invalid, mut over, mut denied, mut unknown, mut full) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let mut first_problem: Option<SymbolError> = None;
        let mut seen = HashSet::with_capacity(requested.len());
        for raw in requested {
            let symbol = match Symbol::parse(&raw) {
                Ok(s) => s,
                Err(e) => {
                    first_problem.get_or_insert(e);
                    invalid.push(raw);
                    continue;
                }
            };
            if !seen.insert(symbol.clone()) {
                continue;
            }
            if !self.allows(symbol.as_str()) {
                denied.push(raw);
            } else if self.symbols.contains(&symbol) {
                // Subscribing again sets the symbol's rate and mode anew.
                self.outbox.set_max_rate(&symbol, interval);
                self.outbox.set_latest(&symbol, options.latest);
                accepted.push(symbol);
            } else if self.symbols.len() >= max {
                over.push(raw);
            } else {
                let known = self.shared.registry.has_tick(symbol.as_str());
                if !known && self.unknown_full() {
                    unknown.push(raw);
                    continue;
                }
                let c = &self.shared.config;
                if self.shared.sessions.reserve(1, c.max_subscriptions) == 0 {
                    full.push(raw);
                    continue;
                }
                // The rate first: the snapshot the registry queues starts
                // the symbol's first turn.
                self.outbox.set_max_rate(&symbol, interval);
                self.outbox.set_latest(&symbol, options.latest);
                match resume.remove(&raw) {
                    None => {
                        self.shared.registry.subscribe(&symbol, &self.outbox);
                    }
                    Some(from) => {
                        let resumed = self.shared.registry.subscribe_resume(
                            &symbol,
                            &self.outbox,
                            from,
                            every_tick,
                            now,
                        );
                        let m = &self.shared.metrics;
                        match resumed {
                            Resumed::Current => m.resumed("current", "memory", 0),
                            Resumed::Memory(n) => m.resumed("memory", "memory", n),
                            Resumed::Beyond => m.resumed("beyond", "memory", 0),
                            // Counted when the history reader is done.
                            Resumed::Kafka => {}
                        }
                    }
                }
                self.symbols.insert(symbol.clone());
                self.shared.metrics.subscriptions.inc();
                if !known {
                    self.unknown.push(symbol.clone());
                }
                accepted.push(symbol);
            }
        }
        let mut out = Vec::new();
        if !accepted.is_empty() {
            out.push(Reply::Subscribed { symbols: &accepted }.to_json());
        }
        if let Some(problem) = first_problem {
            let msg = format!(
                "invalid symbol: {problem}; symbols are 1-32 characters of A-Z a-z 0-9 . - _ : /"
            );
            out.push(self.error(ErrorCode::InvalidSymbol, &msg, Some(echo(invalid))));
        }
        if !denied.is_empty() {
            let msg = "your token does not entitle you to these symbols";
            out.push(self.error(ErrorCode::NotEntitled, msg, Some(echo(denied))));
        }
        if !over.is_empty() {
            let msg = format!("at most {max} symbols per connection");
            out.push(self.error(ErrorCode::TooManySymbols, &msg, Some(echo(over))));
        }
        if !unknown.is_empty() {
            let msg = format!(
                "no tick of these symbols has been seen, and this connection already waits for {} such symbols; retry later",
                self.shared.config.max_unknown_symbols
            );
            out.push(self.error_retry(ErrorCode::UnknownSymbol, &msg, echo(unknown)));
        }
        if !full.is_empty() {
            let msg = "this edge holds all the subscriptions it may; retry later or connect to another edge";
            out.push(self.error_retry(ErrorCode::EdgeFull, msg, echo(full)));
        }
        out
    }

    /// Linear in the request: one hash lookup per symbol and one pass over
    /// the outbox, whatever the number of symbols.
    fn unsubscribe(&mut self, requested: Vec<String>) -> Vec<String> {
        let (mut done, mut invalid) = (Vec::new(), Vec::new());
        let mut first_problem = None;
        let mut seen = HashSet::with_capacity(requested.len());
        let mut removed = HashSet::new();
        for raw in requested {
            match Symbol::parse(&raw) {
                Ok(symbol) => {
                    if !seen.insert(symbol.clone()) {
                        continue;
                    }
                    if self.symbols.remove(&symbol) {
                        self.shared.registry.unsubscribe(&symbol, &self.outbox);
                        self.shared.metrics.subscriptions.dec();
                        removed.insert(symbol.clone());
                    }
                    done.push(symbol);
                }
                Err(e) => {
                    first_problem.get_or_insert(e);
                    invalid.push(raw);
                }
            }
        }
        if !removed.is_empty() {
            // Ticks already queued for them are not sent after the confirmation.
            self.outbox.purge_all(&removed);
            self.shared.sessions.release(removed.len());
            self.unknown.retain(|s| !removed.contains(s));
        }
        let mut out = Vec::new();
        if !done.is_empty() {
            out.push(Reply::Unsubscribed { symbols: &done }.to_json());
        }
        if let Some(problem) = first_problem {
            let msg = format!("invalid symbol: {problem}");
            out.push(self.error(ErrorCode::InvalidSymbol, &msg, Some(echo(invalid))));
        }
        out
    }

    fn error(&self, code: ErrorCode, message: &str, symbols: Option<Vec<String>>) -> String {
        self.shared.metrics.protocol_error(code.as_str());
        protocol::error_json(code, message, symbols.as_deref())
    }

    fn error_retry(&self, code: ErrorCode, message: &str, symbols: Vec<String>) -> String {
        self.shared.metrics.protocol_error(code.as_str());
        protocol::error_json_retry(code, message, Some(&symbols), Some(RETRY_AFTER_MS))
    }

    /// Removes every subscription (the client is gone).
    fn leave(&mut self) {
        self.shared.sessions.release(self.symbols.len());
        for symbol in self.symbols.drain() {
            self.shared.registry.unsubscribe(&symbol, &self.outbox);
            self.shared.metrics.subscriptions.dec();
        }
    }
}

fn echo(mut v: Vec<String>) -> Vec<String> {
    v.truncate(ECHO_MAX);
    for s in &mut v {
        if let Some((i, _)) = s.char_indices().nth(ECHO_LEN) {
            s.truncate(i);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    //! The session on its own, over an in-memory pipe, with tokio's clock
    //! paused: when every task waits, the clock jumps to the next timer, so
    //! timeouts are exact and cost no real time.

    use super::*;
    use crate::gateway::meter::tests::client_frame;
    use crate::{
        fanout::{wake_all, Registry},
        gateway::{admission::Admission, Readiness, Sessions},
        telemetry::Metrics,
    };
    use bytes::Bytes;
    use serde_json::{json, Value};
    use tokio::{io::DuplexStream, sync::watch, task::JoinHandle};

    struct AlwaysReady;
    impl Readiness for AlwaysReady {
        fn check(&self) -> Result<(), &'static str> {
            Ok(())
        }
        fn partitions(&self) -> Value {
            Value::Null
        }
    }

    struct Edge {
        shared: Arc<Shared>,
        _feed: watch::Sender<FeedStatus>,
    }

    fn edge(tweak: impl FnOnce(&mut super::super::Config)) -> Edge {
        edge_with(tweak, true)
    }

    /// An edge whose config need not pass validation (to test one timer
    /// against another in combinations the flags refuse).
    fn edge_with(tweak: impl FnOnce(&mut super::super::Config), validate: bool) -> Edge {
        let defaults: crate::config::EdgeConfig = crate::config::defaults();
        let mut config = defaults.gateway;
        tweak(&mut config);
        if validate {
            config.validate().expect("valid test config");
        }
        let (feed_tx, feed) = watch::channel(FeedStatus::Live);
        Edge {
            shared: Arc::new(Shared {
                config,
                registry: Arc::new(Registry::new()),
                directory: Default::default(),
                metrics: Metrics::new(),
                sessions: Sessions::default(),
                readiness: Box::new(AlwaysReady),
                admission: Admission::new(&defaults.admission),
                verifier: None,
                feed,
            }),
            _feed: feed_tx,
        }
    }

    pub(super) fn shared_for_wake_tests() -> Arc<Shared> {
        edge(|_| {}).shared.clone()
    }

    type ClientWs = WebSocketStream<DuplexStream>;

    impl Edge {
        /// A session over a pipe buffering `pipe` bytes each way; the
        /// client's end as a WebSocket.
        async fn connect(
            &self,
            pipe: usize,
            grant: Option<Grant>,
        ) -> (ClientWs, JoinHandle<()>, CancellationToken) {
            let (client, server) = tokio::io::duplex(pipe);
            let drain = CancellationToken::new();
            let task = tokio::spawn(run(
                server,
                self.shared.clone(),
                drain.clone(),
                grant.map(Box::new),
                false,
                false,
                None,
            ));
            let ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
            (ws, task, drain)
        }

        fn publish(&self, symbol: &str, seq: i64) {
            let mut wake = Vec::new();
            let bytes = Bytes::from(format!(r#"{{"symbol":"{symbol}","seq":{seq}}}"#));
            self.shared
                .registry
                .publish(&Symbol::parse(symbol).unwrap(), seq, bytes, &mut wake);
            wake_all(&mut wake);
        }

        fn ended(&self, reason: &str) -> u64 {
            let text = self.shared.metrics.encode();
            let series = format!("tickfan_sessions_ended_total{{reason=\"{reason}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .map_or(0, |v| v.trim().parse().unwrap())
        }
    }

    async fn send(ws: &mut ClientWs, v: Value) {
        ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// The next text frame, as JSON (pings are answered on the way).
    async fn next_json(ws: &mut ClientWs) -> Value {
        loop {
            match ws.next().await.expect("open").expect("no error") {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// Seqs of `symbol` in ticks frames and gap ranges, until `until` is seen.
    async fn read_ticks(ws: &mut ClientWs, until: i64) -> (Vec<i64>, Vec<(i64, i64)>) {
        let (mut seqs, mut gaps) = (Vec::new(), Vec::new());
        while seqs.last() != Some(&until) {
            let v = next_json(ws).await;
            match v["type"].as_str() {
                Some("ticks") => {
                    for t in v["ticks"].as_array().unwrap() {
                        seqs.push(t["seq"].as_i64().unwrap());
                    }
                }
                Some("gap") => gaps.push((
                    v["from_seq"].as_i64().unwrap(),
                    v["to_seq"].as_i64().unwrap(),
                )),
                _ => {}
            }
        }
        (seqs, gaps)
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_are_written_when_the_outbox_is_woken() {
        let e = edge(|_| {});
        let (mut ws, _task, _drain) = e.connect(1 << 16, None).await;
        send(&mut ws, json!({"op":"subscribe","symbols":["AAPL"]})).await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        for seq in 1..=3 {
            e.publish("AAPL", seq);
        }
        let (seqs, gaps) = read_ticks(&mut ws, 3).await;
        assert_eq!(seqs, [1, 2, 3]);
        assert!(gaps.is_empty());
        e.publish("AAPL", 4);
        assert_eq!(read_ticks(&mut ws, 4).await.0, [4]);
    }

    /// A waiting tick of a rate-limited symbol goes out when its turn comes
    /// (on the paused clock: exactly one interval after the previous update),
    /// not when some other timer (the next ping, 30 s on) wakes the session.
    #[tokio::test(start_paused = true)]
    async fn feed_status_changes_reach_open_sessions_through_their_outboxes() {
        let e = edge(|_| {});
        let (mut ws, _task, _drain) = e.connect(1 << 16, None).await;
        send(&mut ws, json!({"op":"subscribe","symbols":["AAPL"]})).await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        e.shared.sessions.feed_changed(FeedStatus::Stale);
        let v = next_json(&mut ws).await;
        assert_eq!(
            (v["type"].as_str(), v["feed"].as_str()),
            (Some("status"), Some("stale")),
            "{v}"
        );
        // Two changes before the writer runs: the latest only.
        e.shared.sessions.feed_changed(FeedStatus::Stale);
        e.shared.sessions.feed_changed(FeedStatus::Live);
        e.publish("AAPL", 1);
        let v = next_json(&mut ws).await;
        assert_eq!(
            (v["type"].as_str(), v["feed"].as_str()),
            (Some("status"), Some("live")),
            "{v}"
        );
        let v = next_json(&mut ws).await;
        assert_eq!(v["type"], "ticks", "{v}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_tick_goes_out_when_its_turn_comes() {
        let e = edge(|_| {});
        let (mut ws, _task, _drain) = e.connect(1 << 16, None).await;
        send(
            &mut ws,
            json!({"op":"subscribe","symbols":["AAPL"],"max_hz":10}),
        )
        .await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        for round in 0..3 {
            e.publish("AAPL", 3 * round + 1);
            let first = read_ticks(&mut ws, 3 * round + 1).await.0;
            assert_eq!(first, [3 * round + 1], "at once after a quiet spell");
            let sent = Instant::now();
            e.publish("AAPL", 3 * round + 2);
            e.publish("AAPL", 3 * round + 3);
            assert_eq!(read_ticks(&mut ws, 3 * round + 3).await.0, [3 * round + 3]);
            assert_eq!(
                Instant::now() - sent,
                Duration::from_millis(100),
                "round {round}: released at its turn"
            );
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }

    /// Subscribes `ws` to `symbol` and fills the pipe, tungstenite's buffer
    /// and the outbox with ticks the client does not read, so the session's
    /// writes block.
    async fn block_writes(e: &Edge, ws: &mut ClientWs, symbol: &str) {
        send(ws, json!({"op":"subscribe","symbols":[symbol]})).await;
        assert_eq!(next_json(ws).await["type"], "subscribed");
        let pad = "x".repeat(1000);
        for seq in 1..=300 {
            let mut wake = Vec::new();
            let bytes = Bytes::from(format!(
                r#"{{"symbol":"{symbol}","seq":{seq},"pad":"{pad}"}}"#
            ));
            e.shared
                .registry
                .publish(&Symbol::parse(symbol).unwrap(), seq, bytes, &mut wake);
            wake_all(&mut wake);
            tokio::task::yield_now().await;
        }
        // Let the session write until the pipe is full.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
        let e = edge(|c| c.write_timeout = Duration::from_secs(5));
        let (mut ws, task, _drain) = e.connect(4096, None).await;
        block_writes(&e, &mut ws, "S").await;
        let blocked = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("session ends")
            .unwrap();
        let took = blocked.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took <= Duration::from_secs(6),
            "dropped after {took:?} of no progress, not the 5 s write timeout"
        );
        assert_eq!(e.ended("write_timeout"), 1);
        assert_eq!(e.shared.metrics.connections.get(), 0);
        assert_eq!(
            e.shared.sessions.subscriptions(),
            0,
            "subscriptions released"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_shorter_than_the_write_timeout_resumes_with_gap_notices() {
        let e = edge(|c| {
            c.write_timeout = Duration::from_secs(5);
            c.outbox_capacity = 16;
        });
        let (mut ws, _task, _drain) = e.connect(4096, None).await;
        block_writes(&e, &mut ws, "S").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        e.publish("S", 301);
        let (seqs, gaps) = read_ticks(&mut ws, 301).await;
        // Everything received is in order; what is missing was announced.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let announced: i64 = gaps.iter().map(|(a, b)| b - a + 1).sum();
        assert!(
            announced > 0,
            "the stall cost ticks, and they were announced"
        );
        assert_eq!(seqs.len() as i64 + announced, 301, "{seqs:?} {gaps:?}");
        for reason in crate::telemetry::metrics::SESSION_END_REASONS {
            assert_eq!(e.ended(reason), 0, "{reason}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_expiry_is_enforced_while_a_write_is_blocked() {
        let e = edge(|c| c.write_timeout = Duration::from_secs(20));
        let grant = Grant {
            subject: Some("trader".into()),
            expires_at: Some(SystemTime::now() + Duration::from_secs(2)),
            entitlements: Entitlements::all(),
        };
        let start = Instant::now();
        let (mut ws, task, _drain) = e.connect(4096, Some(grant)).await;
        block_writes(&e, &mut ws, "S").await;
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("session ends")
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(e.ended("token_expired"), 1);
        assert_eq!(e.ended("write_timeout"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_deadline_is_enforced_while_a_write_is_blocked() {
        let e = edge(|c| {
            c.write_timeout = Duration::from_secs(20);
            c.drain_window = Duration::from_secs(1);
            c.shutdown_grace = Duration::from_secs(2);
        });
        let (mut ws, task, drain) = e.connect(4096, None).await;
        block_writes(&e, &mut ws, "S").await;
        let start = Instant::now();
        drain.cancel();
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("session ends")
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(e.ended("draining"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_is_enforced_while_a_write_is_blocked() {
        // A write timeout longer than the idle timeout: a combination the
        // flags refuse, to show the idle timer runs while writes block.
        let e = edge_with(
            |c| {
                c.write_timeout = Duration::from_secs(60);
                c.ping_interval = Duration::from_secs(1);
                c.idle_timeout = Duration::from_secs(4);
            },
            false,
        );
        let (mut ws, task, _drain) = e.connect(4096, None).await;
        let start = Instant::now();
        block_writes(&e, &mut ws, "S").await;
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("session ends")
            .unwrap();
        assert!(
            start.elapsed() <= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(e.ended("idle_timeout"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_pong_answering_the_edges_ping_proves_liveness() {
        let e = edge(|c| {
            c.ping_interval = Duration::from_secs(1);
            c.write_timeout = Duration::from_secs(1);
            c.idle_timeout = Duration::from_secs(3);
        });
        // Reads (so tungstenite answers every ping) and says nothing else.
        let (reader, reader_task, _d1) = e.connect(1 << 16, None).await;
        let reading = tokio::spawn(async move {
            let mut reader = reader;
            while let Some(Ok(_)) = reader.next().await {}
        });
        // Never reads; sends a pong of its own every half second.
        let (mut liar, liar_task, _d2) = e.connect(1 << 16, None).await;
        let start = Instant::now();
        let lying = tokio::spawn(async move {
            loop {
                let pong = Message::Pong(rand::random::<u64>().to_be_bytes().to_vec().into());
                if liar.send(pong).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        tokio::time::timeout(Duration::from_secs(60), liar_task)
            .await
            .expect("the liar is dropped")
            .unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(e.ended("idle_timeout"), 1);
        // The honest reader is still there, long after.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!reader_task.is_finished());
        assert_eq!(e.shared.metrics.connections.get(), 1);
        lying.abort();
        reading.abort();
    }

    /// A session over a pipe whose client end speaks raw bytes, with
    /// permessage-deflate negotiated when `deflate`.
    async fn raw_with(e: &Edge, deflate: bool) -> (DuplexStream, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(run(
            server,
            e.shared.clone(),
            CancellationToken::new(),
            None,
            false,
            deflate,
            None,
        ));
        (client, task)
    }

    /// The next server frame: its first byte (FIN, RSV bits, opcode) and
    /// its payload.
    async fn raw_frame(raw: &mut DuplexStream) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 2];
        raw.read_exact(&mut head).await.expect("a frame");
        let len = match head[1] & 0x7f {
            126 => raw.read_u16().await.unwrap() as usize,
            127 => raw.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        raw.read_exact(&mut payload).await.unwrap();
        (head[0], payload)
    }

    /// The next data message as JSON, inflated when RSV1 says it is
    /// compressed; and whether it was.
    async fn raw_json(raw: &mut DuplexStream) -> (Value, bool) {
        loop {
            let (b0, payload) = raw_frame(raw).await;
            let text = match (b0 & 0x0f, b0 & 0x40 != 0) {
                (1, true) => deflate::inflate(&payload, 1 << 20).expect("valid deflate"),
                (1, false) => payload,
                (8, _) => panic!("closed: {payload:?}"),
                _ => continue, // pings
            };
            return (serde_json::from_slice(&text).unwrap(), b0 & 0x40 != 0);
        }
    }

    /// Reads server frames until a close frame; returns its code and reason.
    async fn close_of(raw: &mut DuplexStream) -> (u16, String) {
        loop {
            let (b0, payload) = raw_frame(raw).await;
            if b0 & 0x0f == 8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
        }
    }

    async fn closed_with(e: &Edge, bytes: Vec<u8>) -> (u16, String) {
        closed_with_deflate(e, bytes, false).await
    }

    async fn closed_with_deflate(e: &Edge, bytes: Vec<u8>, deflate: bool) -> (u16, String) {
        use tokio::io::AsyncWriteExt;
        let (mut raw, task) = raw_with(e, deflate).await;
        // Written from its own task: the edge may stop reading mid-way.
        let writing = tokio::spawn(async move {
            let _ = raw_write(&mut raw, &bytes).await;
            raw
        });
        let mut raw = writing.await.unwrap();
        let close = close_of(&mut raw).await;
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("session ends")
            .unwrap();
        let _ = raw.shutdown().await;
        close
    }

    async fn raw_write(raw: &mut DuplexStream, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        raw.write_all(bytes).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_in_too_many_fragments_closes_with_1008() {
        let e = edge(|c| c.max_fragments = 32);
        let mut bytes = client_frame(0x01, b"{"); // text, not final
        for _ in 0..100 {
            bytes.extend(client_frame(0x00, b"")); // empty continuation
        }
        let (code, reason) = closed_with(&e, bytes).await;
        assert_eq!(code, 1008);
        assert!(reason.contains("32 fragments"), "{reason}");
        assert_eq!(e.ended("fragments"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_flood_closes_with_1008() {
        let e = edge(|c| c.client_frame_rate = 200);
        let bytes = client_frame(0x89, b"").repeat(1000); // 1,000 pings at once
        let (code, reason) = closed_with(&e, bytes).await;
        assert_eq!(code, 1008);
        assert!(reason.contains("200 frames a second"), "{reason}");
        assert_eq!(e.ended("frame_rate"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_flood_closes_with_1008() {
        let e = edge(|c| {
            c.client_byte_rate = 4096;
            c.max_message_bytes = 1024;
        });
        let bytes = client_frame(0x82, &[0u8; 1000]).repeat(40);
        let (code, reason) = closed_with(&e, bytes).await;
        assert_eq!(code, 1008);
        assert!(reason.contains("4096 bytes a second"), "{reason}");
        assert_eq!(e.ended("byte_rate"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_utf8_closes_with_1007_and_reserved_bits_with_1002() {
        let e = edge(|_| {});
        let (code, _) = closed_with(&e, client_frame(0x81, &[0xff, 0xfe, 0x41])).await;
        assert_eq!(code, 1007);
        assert_eq!(e.ended("invalid_utf8"), 1);
        // RSV1 set, no extension negotiated.
        let (code, reason) = closed_with(&e, client_frame(0xc1, b"{}")).await;
        assert_eq!(code, 1002);
        assert_eq!(reason, "reserved bits set");
        assert_eq!(e.ended("protocol_error"), 1);
    }

    /// Every idle connection holds one session task; the edge's <= 4 KiB of
    /// RSS per idle connection (BENCHMARKS.md) rests on that task fitting
    /// jemalloc's 1 KiB size class. The task is tokio's cell (a 32-byte
    /// header, 16 bytes of core, 48 of trailer, aligned to 128) around the
    /// task tracker's token, the handshake's `then` and tokio's stage (24
    /// bytes of tags) around this future: 120 bytes beside it, so the future
    /// may be at most 904 bytes (816 on 2026-12-04 with rustc 1.95, in debug
    /// and release builds alike). A failure means a field, a local held
    /// across an await or a captured value grew the future: box it, scope
    /// it, or re-measure idle connections before raising the bound.
    /// (A session with a debug-level span attached carries 40 bytes more:
    /// that is opt-in, with `RUST_LOG`.)
    #[tokio::test]
    async fn the_session_future_stays_within_jemallocs_1_kib_class() {
        let e = edge(|_| {});
        let (_client, server) = tokio::io::duplex(64);
        let task = run(
            server,
            e.shared.clone(),
            CancellationToken::new(),
            None,
            false,
            false,
            None,
        );
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 904,
            "the session's future is {size} bytes, over 904"
        );
    }

    /// A client message as a browser sends it once permessage-deflate is
    /// negotiated: compressed, RSV1 set, masked.
    fn compressed_frame(text: &[u8]) -> Vec<u8> {
        client_frame(
            0xc1,
            &deflate::message([deflate::piece(text).as_slice()], 0),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn with_permessage_deflate_frames_go_compressed_once_for_all_and_requests_are_inflated() {
        let e = edge(|c| c.deflate_min_bytes = 100);
        // Two compressing clients of the same symbols; their subscribes
        // come compressed, as a browser sends them.
        let mut clients = Vec::new();
        for _ in 0..2 {
            let (mut raw, task) = raw_with(&e, true).await;
            let sub = json!({"op": "subscribe", "symbols": ["AAPL", "MSFT"]}).to_string();
            raw_write(&mut raw, &compressed_frame(sub.as_bytes()))
                .await
                .unwrap();
            let (reply, _) = raw_json(&mut raw).await;
            assert_eq!(reply["type"], "subscribed", "{reply}");
            clients.push((raw, task));
        }
        let pad = "x".repeat(200);
        let publish = |seq: i64| {
            let mut wake = Vec::new();
            let live = Bytes::from(format!(r#"{{"symbol":"AAPL","seq":{seq},"pad":"{pad}"}}"#));
            e.shared
                .registry
                .publish(&Symbol::parse("AAPL").unwrap(), seq, live, &mut wake);
            wake_all(&mut wake);
        };
        // The first tick comes as a snapshot (after the `unknown_symbol`
        // notices for symbols the edge held no tick of), the second live.
        async fn ticks_frame(raw: &mut DuplexStream) -> (Value, bool) {
            loop {
                let (v, z) = raw_json(raw).await;
                if v["type"] == "ticks" {
                    return (v, z);
                }
            }
        }
        publish(1);
        for (raw, _) in &mut clients {
            let (frame, compressed) = ticks_frame(raw).await;
            assert!(
                compressed,
                "a 230-byte frame over a 100-byte threshold goes compressed"
            );
            assert_eq!(frame["ticks"][0]["snapshot"], true);
        }
        let m = &e.shared.metrics;
        let before = m.deflate_compressions.get();
        publish(2);
        for (raw, _) in &mut clients {
            let (frame, compressed) = ticks_frame(raw).await;
            assert!(compressed);
            assert_eq!(frame["ticks"][0]["seq"], 2);
            assert_eq!(frame["ticks"][0]["pad"], pad.as_str());
        }
        // Two compressed frames of the same tick, compressed once.
        assert_eq!(m.deflate_frames.get(), 4);
        assert_eq!(m.deflate_compressions.get() - before, 1);
        // A small frame goes as plain text.
        e.publish("MSFT", 1);
        let (frame, compressed) = ticks_frame(&mut clients[0].0).await;
        assert_eq!((frame["type"].as_str(), compressed), (Some("ticks"), false));
        assert_eq!(m.deflate_frames.get(), 4);
        assert!(m.deflate_sent_bytes.get() < m.deflate_text_bytes.get() / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn hostile_compressed_messages_close_with_their_codes() {
        let e = edge(|c| {
            c.max_message_bytes = 4096;
            c.client_byte_rate = 1 << 20;
        });
        // A bomb: 4 MiB of spaces in 4 KiB, refused once 4 KiB is inflated.
        let mut z = flate2::Compress::new(flate2::Compression::best(), false);
        let mut bomb = Vec::with_capacity(1 << 20);
        z.compress_vec(&vec![b' '; 4 << 20], &mut bomb, flate2::FlushCompress::Sync)
            .unwrap();
        assert_eq!(z.total_in(), 4 << 20);
        bomb.truncate(bomb.len() - 4);
        assert!(bomb.len() < 4096, "{}", bomb.len());
        let mut bytes = client_frame(0x41, &bomb[..bomb.len() / 2]);
        bytes.extend(client_frame(0x80, &bomb[bomb.len() / 2..]));
        let (code, reason) = closed_with_deflate(&e, bytes, true).await;
        assert_eq!(code, 1009, "{reason}");
        assert_eq!(e.ended("message_too_big"), 1);
        // Not deflate data.
        let (code, _) = closed_with_deflate(&e, client_frame(0xc1, b"\xff\xff\xff"), true).await;
        assert_eq!(code, 1007);
        assert_eq!(e.ended("invalid_deflate"), 1);
        // A new message inside a compressed one.
        let mut bytes = client_frame(0x41, b"ab");
        bytes.extend(client_frame(0x81, b"{}"));
        let (code, _) = closed_with_deflate(&e, bytes, true).await;
        assert_eq!(code, 1002);
        // Inflated, but not UTF-8: tungstenite's own check still applies.
        let (code, _) = closed_with_deflate(&e, compressed_frame(&[0xff, 0xfe, 0x41]), true).await;
        assert_eq!(code, 1007);
        assert_eq!(e.ended("invalid_utf8"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn symbol_operations_are_budgeted_by_symbols_not_messages() {
        let e = edge(|c| {
            c.symbol_rate = 100;
            c.symbol_burst = 1000;
            c.max_unknown_symbols = 1000;
        });
        let (mut ws, _task, _drain) = e.connect(1 << 20, None).await;
        let many: Vec<String> = (0..1000).map(|i| format!("S{i}")).collect();
        send(&mut ws, json!({"op":"subscribe","symbols":many})).await;
        let v = next_json(&mut ws).await;
        assert_eq!(v["symbols"].as_array().unwrap().len(), 1000, "{v}");
        // The burst is spent: one more message naming 1,000 symbols is
        // ignored, even though it is only the second message.
        send(&mut ws, json!({"op":"unsubscribe","symbols":many})).await;
        let v = next_json(&mut ws).await;
        assert_eq!(v["code"], "rate_limited", "{v}");
        assert_eq!(e.shared.sessions.subscriptions(), 1000, "nothing done");
        // Ten seconds refill 1,000 symbols at 100 a second.
        tokio::time::sleep(Duration::from_secs(10)).await;
        send(&mut ws, json!({"op":"unsubscribe","symbols":many})).await;
        let v = next_json(&mut ws).await;
        assert_eq!(v["type"], "unsubscribed", "{v}");
        assert_eq!(e.shared.sessions.subscriptions(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn symbols_without_a_tick_are_limited_per_connection_and_subscriptions_per_edge() {
        let e = edge(|c| {
            c.max_unknown_symbols = 3;
            c.max_subscriptions = 6;
        });
        e.publish("KNOWN", 1);
        let (mut ws, _task, _drain) = e.connect(1 << 16, None).await;
        send(
            &mut ws,
            json!({"op":"subscribe","symbols":["A","B","C","D","KNOWN"]}),
        )
        .await;
        assert_eq!(
            next_json(&mut ws).await["symbols"],
            json!(["A", "B", "C", "KNOWN"])
        );
        let err = next_json(&mut ws).await;
        assert_eq!(err["code"], "unknown_symbol", "{err}");
        assert_eq!(err["symbols"], json!(["D"]));
        assert_eq!(err["retry_after_ms"], 1000);
        // Once A has a tick, it no longer counts: D gets in.
        e.publish("A", 1);
        send(&mut ws, json!({"op":"subscribe","symbols":["D"]})).await;
        loop {
            let v = next_json(&mut ws).await;
            if v["type"] == "subscribed" {
                assert_eq!(v["symbols"], json!(["D"]));
                break;
            }
        }
        // Five held here; the edge allows six in all.
        let (mut other, _t2, _d2) = e.connect(1 << 16, None).await;
        send(
            &mut other,
            json!({"op":"subscribe","symbols":["KNOWN","A"]}),
        )
        .await;
        assert_eq!(next_json(&mut other).await["symbols"], json!(["KNOWN"]));
        let err = next_json(&mut other).await;
        assert_eq!(err["code"], "edge_full", "{err}");
        assert_eq!(err["symbols"], json!(["A"]));
        // An unsubscribe gives the slot back.
        send(&mut ws, json!({"op":"unsubscribe","symbols":["B"]})).await;
        loop {
            if next_json(&mut ws).await["type"] == "unsubscribed" {
                break;
            }
        }
        send(&mut other, json!({"op":"subscribe","symbols":["A"]})).await;
        loop {
            let v = next_json(&mut other).await;
            if v["type"] == "subscribed" {
                assert_eq!(v["symbols"], json!(["A"]));
                break;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_to_a_symbol_the_read_partitions_lack_is_told_after_subscribed() {
        let e = edge(|_| {});
        e.shared.registry.set_sources(1);
        // One partition, live: every symbol is settled.
        e.shared
            .registry
            .partition_live(&Arc::from("t"), 0, 1, true);
        e.publish("KNOWN", 1);
        let (mut ws, _task, _drain) = e.connect(1 << 16, None).await;
        send(
            &mut ws,
            json!({"op":"subscribe","symbols":["KNOWN","ZZ1","ZZ2"]}),
        )
        .await;
        assert_eq!(
            next_json(&mut ws).await["symbols"],
            json!(["KNOWN", "ZZ1", "ZZ2"])
        );
        let mut notice = None;
        let mut snapshot = false;
        while notice.is_none() || !snapshot {
            let v = next_json(&mut ws).await;
            match v["type"].as_str() {
                Some("error") => {
                    assert!(notice.is_none(), "one frame: {v}");
                    notice = Some(v);
                }
                Some("ticks") => snapshot = true,
                _ => panic!("{v}"),
            }
        }
        let notice = notice.unwrap();
        assert_eq!(notice["code"], "unknown_symbol");
        assert_eq!(notice["symbols"], json!(["ZZ1", "ZZ2"]));
        assert!(notice.get("retry_after_ms").is_none(), "{notice}");
        assert_eq!(e.shared.metrics.unknown_symbols.get(), 2);
        // Still subscribed: a first tick comes as a snapshot.
        e.publish("ZZ1", 1);
        let v = next_json(&mut ws).await;
        assert_eq!(v["ticks"][0]["symbol"], "ZZ1", "{v}");
        assert_eq!(v["ticks"][0]["snapshot"], true, "{v}");
    }
}

#[cfg(test)]
mod wake_tests {
    //! The writer's wake-up, polled by hand: when the ingest wakes the outbox
    //! while the writer is writing, the writer yields and comes back after
    //! the other ready tasks, so ticks gather into larger frames.

    use super::*;
    use crate::fanout::Item;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Woken(AtomicUsize);
    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Takes every frame at once; the first frame taken runs `during` (the
    /// ingest queueing a tick and waking the outbox mid-write).
    struct Sink<F: FnMut()> {
        frames: Vec<Message>,
        flushes: usize,
        during: Option<F>,
    }

    impl<F: FnMut() + Unpin> futures_util::Sink<Message> for Sink<F> {
        type Error = tungstenite::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, msg: Message) -> Result<(), Self::Error> {
            self.frames.push(msg);
            if let Some(mut f) = self.during.take() {
                f();
            }
            Ok(())
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    fn item(seq: i64) -> Item {
        Item {
            symbol: crate::market::Symbol::parse("AAPL").unwrap(),
            seq,
            bytes: Bytes::from(format!(r#"{{"symbol":"AAPL","seq":{seq}}}"#)),
            ts: 0,
        }
    }

    fn writer() -> Writer {
        Writer {
            queue: VecDeque::new(),
            unflushed: false,
            outbox_ready: false,
            rearm: false,
            stall: Arc::new(WriteStall::default()),
            stall_timer: None,
            timeout: Duration::from_secs(10),
            deflate: false,
        }
    }

    #[tokio::test]
    async fn a_wake_up_during_a_write_reschedules_the_writer_instead_of_chasing_it() {
        let shared = super::tests::shared_for_wake_tests();
        let outbox = Arc::new(Outbox::new(64));
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut w = writer();

        // Idle: nothing to write, and the writer is registered for a wake-up.
        let mut sink = Sink::<fn()> {
            frames: vec![],
            flushes: 0,
            during: None,
        };
        assert!(w
            .poll_write(&mut cx, &mut sink, &outbox, &shared)
            .is_pending());
        outbox.push(item(1));
        outbox.wake();
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the wake-up reaches the writer's task"
        );

        // The write of tick 1 is under way when tick 2 comes and wakes it.
        let during = {
            let outbox = outbox.clone();
            move || {
                outbox.push(item(2));
                outbox.wake();
            }
        };
        let mut sink = Sink {
            frames: vec![],
            flushes: 0,
            during: Some(during),
        };
        assert!(w
            .poll_write(&mut cx, &mut sink, &outbox, &shared)
            .is_pending());
        assert_eq!(sink.frames.len(), 1, "tick 2 waits for the next poll");
        assert_eq!(sink.flushes, 1);
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            2,
            "the writer woke its own task: it comes back after the others"
        );

        // The next poll writes tick 2 and goes idle.
        assert!(w
            .poll_write(&mut cx, &mut sink, &outbox, &shared)
            .is_pending());
        assert_eq!(sink.frames.len(), 2);
        let Message::Text(t) = &sink.frames[1] else {
            panic!("{:?}", sink.frames[1])
        };
        assert!(t.as_str().contains(r#""seq":2"#), "{t}");
        assert!(outbox.is_empty());
        let before = woken.0.load(Ordering::SeqCst);
        assert!(w
            .poll_write(&mut cx, &mut sink, &outbox, &shared)
            .is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), before, "idle: no self-wake");
        outbox.wake();
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            before + 1,
            "registered again"
        );
    }
}
