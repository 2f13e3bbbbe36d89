//! One client's WebSocket session: a single task that reads control messages,
//! applies them to the registry, and writes whatever the outbox holds as one
//! frame per wake.
//!
//! Generic over the socket (any `Sink` + `Stream` of WebSocket messages), so
//! it is tested over in-memory channels as well as real sockets.

use std::{collections::HashSet, error::Error as StdError, sync::Arc};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use warp::ws::Message;

use super::{
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
/// Close code sent when the edge shuts down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Runs a session until the client leaves, errs, or `shutdown` fires.
pub async fn run<S, E>(socket: S, shared: Arc<Shared>, shutdown: CancellationToken)
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: StdError + 'static,
{
    let outbox = Arc::new(Outbox::new(shared.config.outbox_capacity));
    let handle = shared.sessions.insert(outbox.clone());
    shared.metrics.connections.inc();
    let mut session = Session {
        shared: shared.clone(),
        outbox: outbox.clone(),
        symbols: HashSet::new(),
    };
    let (mut tx, mut rx) = socket.split();
    let end = session.drive(&mut tx, &mut rx, &shutdown).await;
    if let Some((code, reason)) = end {
        let _ = tx.send(Message::close_with(code, reason)).await;
    }
    session.leave();
    shared.sessions.remove(handle);
    shared.metrics.connections.dec();
}

struct Session {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    symbols: HashSet<Symbol>,
}

impl Session {
    /// The session loop; returns the close frame to send, if any.
    async fn drive<Tx, Rx, E>(
        &mut self,
        tx: &mut Tx,
        rx: &mut Rx,
        shutdown: &CancellationToken,
    ) -> Option<(u16, &'static str)>
    where
        Tx: Sink<Message> + Unpin,
        Rx: Stream<Item = Result<Message, E>> + Unpin,
        E: StdError + 'static,
    {
        let mut feed = self.shared.feed.clone();
        if *feed.borrow_and_update() == FeedStatus::Stale {
            let stale = protocol::status_json(FeedStatus::Stale);
            if tx.send(Message::text(stale)).await.is_err() {
                return None;
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Some((CLOSE_GOING_AWAY, "edge shutting down")),
                changed = feed.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let status = *feed.borrow_and_update();
                    if tx.send(Message::text(protocol::status_json(status))).await.is_err() {
                        return None;
                    }
                }
                incoming = rx.next() => match incoming {
                    None => return None,
                    Some(Err(e)) => {
                        return is_too_big(&e).then_some((CLOSE_TOO_BIG, "message too big"));
                    }
                    Some(Ok(msg)) => {
                        if msg.is_close() {
                            return None;
                        }
                        let replies = self.on_message(&msg);
                        for r in replies {
                            if tx.feed(Message::text(r)).await.is_err() {
                                return None;
                            }
                        }
                        if self.write_ready(tx).await.is_err() {
                            return None;
                        }
                    }
                },
                _ = self.outbox.woken() => {
                    if self.write_ready(tx).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Answers one client message; returns the frames to send.
    fn on_message(&mut self, msg: &Message) -> Vec<String> {
        if msg.is_binary() {
            return vec![self.error(
                ErrorCode::BinaryNotSupported,
                "binary frames are not supported; send JSON text",
                None,
            )];
        }
        let Ok(text) = msg.to_str() else {
            return Vec::new(); // ping/pong: answered by the WebSocket layer
        };
        match protocol::parse(text) {
            Err(r) => vec![self.error(r.code, &r.message, None)],
            Ok(Request::Subscribe(symbols)) => self.subscribe(symbols),
            Ok(Request::Unsubscribe(symbols)) => self.unsubscribe(symbols),
        }
    }

    fn subscribe(&mut self, requested: Vec<String>) -> Vec<String> {
        let max = self.shared.config.max_symbols;
        let (mut accepted, mut invalid, mut over) = (Vec::new(), Vec::new(), Vec::new());
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
            if self.symbols.contains(&symbol) {
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
