//! The door every connection passes before it is a WebSocket: the HTTP
//! phase, from `accept` until the connection is upgraded or closed.
//!
//! A client on the open internet can pipeline requests and never read the
//! answers, or hold connections open doing nothing. The bounds:
//!
//! * **a cap on connections in the HTTP phase** (`--max-http-connections`),
//!   separate from the WebSocket sessions' `--max-connections`: over it, a
//!   connection gets a canned `503` with `Retry-After` and is closed;
//! * **a write deadline** (`--http-write-timeout`, `WriteDeadline`): once
//!   writing a response blocks, the rest of it must be written within the
//!   deadline, or the connection is reset;
//! * **a small send buffer** ([`HTTP_SEND_BUFFER`]) until the upgrade: a
//!   client that pipelines requests and reads nothing gets only as many
//!   answers rendered as fit in it (and hyper's queue) before its writes
//!   block; a session gets `--socket-send-buffer` back on its first write;
//! * **an idle limit**: hyper's header read timeout (`--handshake-timeout`)
//!   runs from the moment a connection is ready for its next request, so it
//!   bounds the wait for the first request and the idle time between
//!   keep-alive requests alike;
//! * **a descriptor reserve** ([`fds`]): connections that land in the last
//!   descriptors, or are taken with the spare after `EMFILE`, get an answer
//!   only if they are probes (`/healthz`, `/readyz`), a canned `503`
//!   otherwise.
//!
//! Answers without hyper (the canned `503`s and the probes on the reserve)
//! are "lean" (`gateway::lean`): at most [`LEAN_MAX`] in flight per listener.
//!
//! It never runs a WebSocket session: once a connection is upgraded it
//! belongs to [`super::session`].

use std::{
    convert::Infallible,
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    deadline::{Socket, WriteDeadline},
    fds,
    lean::{self, Why},
    Shared,
};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body of every route.
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;

/// Plain-HTTP limits, descriptors, and the admin listener.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "http")]
#[command(next_help_heading = "Plain HTTP and file descriptors")]
pub struct Config {
    /// Most connections in the HTTP phase at once (accepted, not yet
    /// upgraded to a WebSocket, not closed): plain requests and WebSocket
    /// handshakes in progress. Over it a connection gets a canned 503 with
    /// `Retry-After` (probes are still answered). Keep it above
    /// `--connect-burst`.
    #[arg(long, env = "TICKFAN_MAX_HTTP_CONNECTIONS", default_value_t = 2048)]
    pub max_http_connections: usize,

    /// Once writing an HTTP response blocks (the client is not reading), the
    /// rest of it must be written within this time, or the connection is
    /// dropped.
    #[arg(long, env = "TICKFAN_HTTP_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_write_timeout: Duration,

    /// File descriptors kept for probes, Kafka and the edge itself: a
    /// connection accepted on one of the last N below the limit is answered
    /// only if it is `/healthz` or `/readyz`, with a 503 otherwise.
    #[arg(long, env = "TICKFAN_FD_RESERVE", default_value_t = 64)]
    pub fd_reserve: u64,

    /// Second listener for operators: `/metrics`, `/partitions`, `/symbols`
    /// (all of them), `/healthz`, `/readyz`. When set, the public listener no
    /// longer serves `/metrics` and `/partitions`.
    #[arg(long, env = "TICKFAN_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_http_connections >= 1,
            "--max-http-connections must be >= 1"
        );
        anyhow::ensure!(
            !self.http_write_timeout.is_zero(),
            "--http-write-timeout must be > 0"
        );
        anyhow::ensure!(
            (8..=65536).contains(&self.fd_reserve),
            "--fd-reserve must be between 8 and 65536"
        );
        Ok(())
    }

    /// Descriptors this configuration may hold for clients: WebSocket
    /// sessions, HTTP-phase connections on both listeners, lean answers and
    /// the reserve. (Refusals sent in band hold theirs for two seconds at
    /// most and are not counted.)
    pub fn descriptors_needed(&self, max_sessions: usize) -> u64 {
        let admin = if self.admin_listen.is_some() {
            ADMIN_MAX_CONNECTIONS + LEAN_MAX
        } else {
            0
        };
        (max_sessions + self.max_http_connections + LEAN_MAX + admin) as u64 + self.fd_reserve
    }
}

/// Which listener a door belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Public,
    Admin,
}

impl Port {
    fn label(self) -> &'static str {
        match self {
            Port::Public => "public",
            Port::Admin => "admin",
        }
    }
}

/// Most connections the admin listener holds in the HTTP phase.
pub const ADMIN_MAX_CONNECTIONS: usize = 256;
/// Most lean answers in flight per listener; past it, a connection the edge
/// cannot serve is closed at once.
pub const LEAN_MAX: usize = 256;
/// SO_SNDBUF of a connection in the HTTP phase (the kernel doubles it), when
/// `--socket-send-buffer` sets one at all (0 leaves the kernel's autotuning
/// alone). 64 KiB in flight still moves a large `/symbols` at 640 KB/s over a
/// 100 ms round trip.
pub const HTTP_SEND_BUFFER: usize = 32 * 1024;

/// A listener's door: its HTTP-phase slots, its descriptor reserve.
pub struct Door {
    shared: Arc<Shared>,
    port: Port,
    cap: usize,
    open: Arc<AtomicUsize>,
    lean: Arc<AtomicUsize>,
    reserve: fds::Reserve,
    accept_errors: Throttle,
    refusals: Throttle,
}

/// A connection just accepted.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Descriptors are scarce: answer probes only.
    scarce: bool,
}

impl Door {
    pub fn new(shared: Arc<Shared>, port: Port) -> Door {
        let http = &shared.config.http;
        let cap = match port {
            Port::Public => http.max_http_connections,
            Port::Admin => ADMIN_MAX_CONNECTIONS,
        };
        let reserve = fds::Reserve::new(http.fd_reserve);
        Door {
            shared,
            port,
            cap,
            open: Default::default(),
            lean: Default::default(),
            reserve,
            accept_errors: Throttle::default(),
            refusals: Throttle::default(),
        }
    }

    /// The next connection. Accept errors never end this: out of
    /// descriptors, the spare is given up to take one connection (answered
    /// as scarce); otherwise it pauses briefly and tries again. Each error is
    /// counted, and logged at most once a second.
    pub async fn accept(&mut self, listener: &TcpListener) -> Accepted {
        loop {
            self.reserve.restore_spare();
            let e = match listener.accept().await {
                Ok((stream, peer)) => {
                    let scarce = self.reserve.scarce(stream.as_raw_fd());
                    return Accepted {
                        stream,
                        peer,
                        scarce,
                    };
                }
                Err(e) => e,
            };
            self.shared.metrics.accept_errors.inc();
            if let Some(suppressed) = self.accept_errors.due() {
                tracing::warn!(error = %e, port = self.port.label(), suppressed, "accept failed");
            }
            let exhausted = fds::exhausted(&e);
            if exhausted && self.reserve.release_spare() {
                if let Ok((stream, peer)) = listener.accept().await {
                    return Accepted {
                        stream,
                        peer,
                        scarce: true,
                    };
                }
                continue;
            }
            use std::io::ErrorKind::*;
            if !matches!(e.kind(), ConnectionAborted | ConnectionReset) {
                // Out of descriptors with the spare given, or out of memory:
                // a lean answer or a closing connection frees one soon.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Takes an HTTP-phase slot for `a`, or answers it lean (a probe, else a
    /// canned 503) when descriptors are scarce or the slots are all taken.
    pub fn admit(&mut self, a: Accepted) -> Option<Conn> {
        let _ = a.stream.set_nodelay(true);
        let why = if a.scarce {
            Some(Why::Descriptors)
        } else if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .is_err()
        {
            Some(Why::Cap)
        } else {
            None
        };
        let Some(why) = why else {
            self.shared.metrics.http_connections.inc();
            return Some(Conn {
                stream: a.stream,
                peer: a.peer,
                slot: Slot {
                    open: self.open.clone(),
                    shared: self.shared.clone(),
                },
            });
        };
        if let Some(suppressed) = self.refusals.due() {
            tracing::warn!(
                port = self.port.label(),
                reason = why.label(),
                suppressed,
                "{}: answering probes only",
                why.error()
            );
        }
        self.answer_lean(a.stream, why);
        None
    }

    fn answer_lean(&self, stream: TcpStream, why: Why) {
        let taken = self
            .lean
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < LEAN_MAX).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.shared.metrics.http_rejected(why.label());
            return;
        }
        let (lean, shared) = (self.lean.clone(), self.shared.clone());
        tokio::spawn(async move {
            lean::answer(stream, why, &shared).await;
            lean.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// An admitted connection, holding its HTTP-phase slot.
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
}

impl Conn {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Serves HTTP/1.1 with `svc` until the connection closes, is upgraded,
    /// or `stop` fires (then the request in progress is finished, for at most
    /// two seconds). Its slot is released then, and the write deadline no
    /// longer applies: an upgraded WebSocket keeps the socket under the
    /// session's own rules.
    pub async fn serve<S>(self, svc: S, stop: CancellationToken)
    where
        S: hyper::service::Service<
                Request<Incoming>,
                Response = Response<Body>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let Conn { stream, peer, slot } = self;
        let config = &slot.shared.config;
        let session_send_buffer = match config.socket_send_buffer as usize {
            0 => None,
            bytes if bytes <= HTTP_SEND_BUFFER => None,
            bytes => {
                stream.set_send_buffer(HTTP_SEND_BUFFER);
                Some(bytes)
            }
        };
        let http_phase = Arc::new(AtomicBool::new(true));
        let io = WriteDeadline::new(
            stream,
            config.http.http_write_timeout,
            http_phase.clone(),
            session_send_buffer,
            slot.shared.metrics.http_write_timeouts.clone(),
        );
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.handshake_timeout)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "http connection ended");
                }
            }
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
            }
        }
        http_phase.store(false, Ordering::Release);
        drop(slot);
    }
}

/// An HTTP-phase slot; released when dropped.
struct Slot {
    open: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.http_connections.dec();
    }
}

/// Says when a repeated warning is due: at most once a second, with the
/// number of occurrences not logged since.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn warnings_are_throttled_to_one_a_second() {
        let mut t = Throttle::default();
        assert_eq!(t.due(), Some(0));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(t.due(), Some(2));
    }
}
