//! One client's WebSocket session: a single task that reads control messages,
//! applies them to the registry, and writes whatever the outbox holds as one
//! frame per wake. It also keeps the connection honest: ping/pong with
//! dead-peer detection, a per-connection rate limit on control messages,
//! token expiry and in-band refresh, and a paced close when the edge drains.
//!
//! Generic over the socket (any `Sink` + `Stream` of WebSocket messages), so
//! it is tested over in-memory channels as well as real sockets.

use std::{
    collections::HashSet,
    error::Error as StdError,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    self,
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};
use tokio_util::sync::CancellationToken;

use super::{
    auth::{Entitlements, Grant},
    protocol::{self, ErrorCode, Reply, Request},
    Shared,
};
use crate::{
    codec::wire,
    fanout::{FeedStatus, Out, Outbox},
    market::{Symbol, SymbolError},
};

/// Frames written per wake before the session turns back to reading, so a
/// client with a deep backlog still gets its requests answered.
const FRAMES_PER_WAKE: usize = 8;
/// At most this many rejected symbols are echoed back, each cut to this length.
const ECHO_MAX: usize = 50;
const ECHO_LEN: usize = 40;

/// Close code for a message larger than the configured maximum (RFC 6455).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code when the edge drains for a restart (RFC 6455 "service restart").
pub const CLOSE_RESTART: u16 = 1012;
/// Close code when the session's token expired and was not refreshed.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// How a session ends.
enum End {
    /// Send this close frame.
    Close(u16, &'static str),
    /// The peer is gone or broke the protocol: just drop the connection.
    Drop,
    /// The client closed with this code (1005: it gave none); tungstenite
    /// has queued the close reply.
    ClientClosed(u16),
}

/// Runs a session until the client leaves, errs, or the edge drains
/// (`drain` fires): then the client gets a `reconnect` hint at a random
/// point of the drain window and is closed with 1012 when it comes.
///
/// The first frame is the feed `status` when it is stale, or always with
/// `announce` (a client that asked for refusals in band learns at once that
/// it was admitted).
///
/// Not an `async fn`: an async fn keeps its arguments (the socket, the
/// grant) in the future for its whole life, next to what they were moved
/// into. Every idle connection holds this future, so the set-up happens here
/// and the returned future holds only what the session needs.
pub fn run<S, E>(
    socket: S,
    shared: Arc<Shared>,
    drain: CancellationToken,
    grant: Option<Grant>,
    announce: bool,
) -> impl std::future::Future<Output = ()>
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: StdError + 'static,
{
    let outbox = Arc::new(Outbox::new(shared.config.outbox_capacity));
    let handle = shared.sessions.insert(outbox.clone());
    shared.metrics.connections.inc();
    let c = &shared.config;
    let per_sec = NonZeroU32::new(c.control_rate.max(1)).expect("max(1)");
    let burst = NonZeroU32::new(c.control_burst.max(1)).expect("max(1)");
    let auth = grant.map(|g| {
        Box::new(Auth {
            closes_at: closes_at(g.expires_at, &shared),
            expires: g.expires_at,
            subject: g.subject,
            entitlements: g.entitlements,
        })
    });
    let mut session = Session {
        shared,
        outbox,
        symbols: HashSet::new(),
        auth,
        control: RateLimiter::direct(Quota::per_second(per_sec).allow_burst(burst)),
        last_limited_notice: None,
    };
    let (mut tx, mut rx) = socket.split();
    async move {
        let end = session.drive(&mut tx, &mut rx, &drain, announce).await;
        match &end {
            End::Close(code, reason) => tracing::debug!(code, reason, "session closing"),
            End::Drop => tracing::debug!("session dropped (peer gone or protocol error)"),
            End::ClientClosed(code) => tracing::debug!(code, "client closed"),
        }
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ =
                tokio::time::timeout(Duration::from_secs(1), tx.send(Message::Close(Some(frame))))
                    .await;
        }
        session.leave();
        session.shared.sessions.remove(handle);
        session.shared.metrics.connections.dec();
    }
}

struct Session {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    symbols: HashSet<Symbol>,
    /// The token's terms (auth on); boxed, as most deployments' sessions
    /// have none and every idle connection holds a `Session`.
    auth: Option<Box<Auth>>,
    /// Control messages per second (GCRA).
    control: DefaultDirectRateLimiter,
    last_limited_notice: Option<Instant>,
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

impl Session {
    /// The session loop; returns how to end.
    async fn drive<Tx, Rx, E>(
        &mut self,
        tx: &mut Tx,
        rx: &mut Rx,
        drain: &CancellationToken,
        announce: bool,
    ) -> End
    where
        Tx: Sink<Message> + Unpin,
        Rx: Stream<Item = Result<Message, E>> + Unpin,
        E: StdError + 'static,
    {
        let mut feed = self.shared.feed.clone();
        let status = *feed.borrow_and_update();
        if (announce || status == FeedStatus::Stale)
            && tx
                .send(Message::text(protocol::status_json(status)))
                .await
                .is_err()
        {
            return End::Drop;
        }
        // One timer for everything time-driven (the next ping, the drain
        // close, token expiry): a connection holds one timer entry, not three.
        let ping_every = self.shared.config.ping_interval;
        let mut next_ping = Instant::now() + ping_every;
        let mut last_heard = Instant::now();
        let mut close_at: Option<Instant> = None;
        let timer = tokio::time::sleep_until(next_ping);
        tokio::pin!(timer);
        loop {
            let expiry = self.auth.as_ref().and_then(|a| a.closes_at);
            let due = [Some(next_ping), close_at, expiry]
                .into_iter()
                .flatten()
                .min()
                .expect("next_ping is always set");
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            tokio::select! {
                biased;
                _ = drain.cancelled(), if close_at.is_none() => {
                    let window = self.shared.config.drain_window;
                    let after = if window.is_zero() {
                        Duration::ZERO
                    } else {
                        rand::rng().random_range(Duration::ZERO..window)
                    };
                    let hint = Reply::Reconnect { after_ms: after.as_millis() as u64 }.to_json();
                    if tx.send(Message::text(hint)).await.is_err() {
                        return End::Drop;
                    }
                    close_at = Some(Instant::now() + after);
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if close_at.is_some_and(|t| t <= now) {
                        return End::Close(CLOSE_RESTART, "edge restarting; reconnect");
                    }
                    if expiry.is_some_and(|t| t <= now) {
                        return End::Close(CLOSE_TOKEN_EXPIRED, "token expired");
                    }
                    if next_ping <= now {
                        if last_heard.elapsed() > self.shared.config.idle_timeout {
                            return End::Drop; // dead peer: nothing heard, not even a pong
                        }
                        // Like `MissedTickBehavior::Delay`: the next ping is
                        // an interval after this one was sent.
                        next_ping = now + ping_every;
                        if tx.send(Message::Ping(Default::default())).await.is_err() {
                            return End::Drop;
                        }
                    }
                }
                changed = feed.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let status = *feed.borrow_and_update();
                    if tx.send(Message::text(protocol::status_json(status))).await.is_err() {
                        return End::Drop;
                    }
                }
                incoming = rx.next() => match incoming {
                    None => return End::Drop,
                    Some(Err(e)) => {
                        return if is_too_big(&e) { End::Close(CLOSE_TOO_BIG, "message too big") } else { End::Drop };
                    }
                    Some(Ok(msg)) => {
                        last_heard = Instant::now();
                        if let Message::Close(frame) = &msg {
                            // 1005: "no status received" (RFC 6455, 7.1.5).
                            return End::ClientClosed(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                        }
                        let replies = self.on_message(&msg);
                        for r in replies {
                            if tx.feed(Message::text(r)).await.is_err() {
                                return End::Drop;
                            }
                        }
                        if self.write_ready(tx).await.is_err() {
                            return End::Drop;
                        }
                    }
                },
                _ = self.outbox.woken() => {
                    if self.write_ready(tx).await.is_err() {
                        return End::Drop;
                    }
                }
            }
        }
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
            _ => return Vec::new(), // ping/pong: answered by the WebSocket layer
        };
        if self.control.check().is_err() {
            // Over the per-connection limit: the message is ignored, and the
            // client is told at most once a second.
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
            let msg = format!(
                "more than {} control messages per second; message ignored",
                self.shared.config.control_rate
            );
            return vec![protocol::error_json(ErrorCode::RateLimited, &msg, None)];
        }
        match protocol::parse(text) {
            Err(r) => vec![self.error(r.code, &r.message, None)],
            Ok(Request::Subscribe(symbols)) => self.subscribe(symbols),
            Ok(Request::Unsubscribe(symbols)) => self.unsubscribe(symbols),
            Ok(Request::Auth(token)) => self.refresh(&token),
        }
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

    fn subscribe(&mut self, requested: Vec<String>) -> Vec<String> {
        let max = self.shared.config.max_symbols;
        let (mut accepted, mut invalid, mut over, mut denied) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut first_problem: Option<SymbolError> = None;
        let mut seen = HashSet::new();
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
                accepted.push(symbol);
            } else if self.symbols.len() < max {
                self.shared.registry.subscribe(&symbol, &self.outbox);
                self.symbols.insert(symbol.clone());
                self.shared.metrics.subscriptions.inc();
                accepted.push(symbol);
            } else {
                over.push(raw);
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
        out
    }

    fn unsubscribe(&mut self, requested: Vec<String>) -> Vec<String> {
        let (mut done, mut invalid) = (Vec::new(), Vec::new());
        let mut first_problem = None;
        for raw in requested {
            match Symbol::parse(&raw) {
                Ok(symbol) => {
                    if self.symbols.remove(&symbol) {
                        self.shared.registry.unsubscribe(&symbol, &self.outbox);
                        self.shared.metrics.subscriptions.dec();
                        // Ticks already queued for it are not sent after the confirmation.
                        self.outbox.purge(&symbol);
                    }
                    if !done.contains(&symbol) {
                        done.push(symbol);
                    }
                }
                Err(e) => {
                    first_problem.get_or_insert(e);
                    invalid.push(raw);
                }
            }
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

    /// Writes what the outbox holds: drop notices first, then ticks in frames
    /// of at most `max_frame_bytes`, with upstream gap notices in their
    /// place in the stream; flushed once.
    async fn write_ready<Tx: Sink<Message> + Unpin>(
        &mut self,
        tx: &mut Tx,
    ) -> Result<(), Tx::Error> {
        let cap = self
            .shared
            .config
            .max_frame_bytes
            .saturating_sub(wire::FRAME_OVERHEAD);
        for _ in 0..FRAMES_PER_WAKE {
            let d = self.outbox.drain(cap);
            if d.is_empty() {
                break;
            }
            let (mut frames, mut gaps) = (0u64, d.dropped.len() as u64);
            for g in &d.dropped {
                tx.feed(Message::text(protocol::gap_json(g))).await?;
            }
            let mut run: Vec<&bytes::Bytes> = Vec::with_capacity(d.ticks);
            for entry in &d.entries {
                match entry {
                    Out::Tick(b) => run.push(b),
                    Out::Gap(g) => {
                        if !run.is_empty() {
                            tx.feed(Message::text(wire::ticks_frame(run.drain(..), d.bytes)))
                                .await?;
                            frames += 1;
                        }
                        tx.feed(Message::text(protocol::gap_json(g))).await?;
                        gaps += 1;
                    }
                }
            }
            if !run.is_empty() {
                tx.feed(Message::text(wire::ticks_frame(run.drain(..), d.bytes)))
                    .await?;
                frames += 1;
            }
            let m = &self.shared.metrics;
            m.outbox_depth.observe(d.entries.len() as f64);
            if d.oldest_ts > 0 {
                let lag_us = crate::feed::now_micros() - d.oldest_ts;
                m.e2e_latency.observe(lag_us.max(0) as f64 / 1e6);
            }
            m.gaps.inc_by(gaps);
            m.frames.inc_by(frames);
            m.deliveries.inc_by(d.ticks as u64);
            if !d.more {
                break;
            }
            // Let the next wake pick up the rest after reading requests.
            self.outbox.wake();
        }
        tx.flush().await
    }

    /// Removes every subscription (the client is gone).
    fn leave(&mut self) {
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

/// Whether a read error means the client sent a message or frame over the
/// configured limit.
fn is_too_big(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}
