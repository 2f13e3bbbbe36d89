//! A write deadline for the HTTP phase of a connection.
//!
//! hyper has a timeout for reading a request head but none for writing a
//! response: a client that pipelines requests and never reads the answers
//! fills its receive window and the edge's send buffer, and from then on the
//! connection waits for writability forever. [`WriteDeadline`] wraps the
//! socket: when a write is refused (`Pending`) it starts a clock, and if the
//! output has not been flushed within the deadline the next write attempt
//! fails with `TimedOut`, which ends hyper's connection.
//!
//! A connection that runs out of time is reset (`SO_LINGER` 0), not closed:
//! its client is not reading, and a graceful close would leave the kernel
//! holding the unsent answer (up to the send buffer) for an orphaned socket.
//!
//! The clock runs from the first refused write until hyper flushes (which it
//! does once its buffer is empty, i.e. after each response or pipelined
//! batch). Progress does not restart it: a client that reads one byte now
//! and then cannot keep a connection for long, only one that reads each
//! response within the deadline.
//!
//! After a WebSocket upgrade the socket leaves hyper but this wrapper stays
//! around it; the connection clears the shared flag then, and the wrapper
//! becomes a pass-through (the session has its own rules for slow readers),
//! after giving the socket back its session send buffer (see
//! [`super::door`]: the HTTP phase runs with a small one).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// What the wrapper needs of a socket.
pub trait Socket {
    /// From now on, closing discards unsent data and resets the connection.
    fn reset_on_close(&self);
    /// Sets the kernel send buffer (SO_SNDBUF).
    fn set_send_buffer(&self, bytes: usize);
}

impl Socket for tokio::net::TcpStream {
    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }

    fn set_send_buffer(&self, bytes: usize) {
        let _ = socket2::SockRef::from(self).set_send_buffer_size(bytes);
    }
}

/// A socket whose refused writes must be flushed within a deadline.
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// The clock of the current stall; allocated at the first one.
    clock: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    /// Cleared when the connection leaves the HTTP phase; dropped here once
    /// seen cleared (the phase never comes back), so a session's writes do
    /// not reach into another allocation every time (a cache miss per
    /// delivery when each connection writes rarely, issue 18).
    http_phase: Option<Arc<AtomicBool>>,
    /// The send buffer to restore once the HTTP phase is over, if any.
    session_send_buffer: Option<usize>,
    timeouts: Counter,
}

impl<S: Socket> WriteDeadline<S> {
    /// Wraps `inner`; `session_send_buffer`: the SO_SNDBUF to set once the
    /// HTTP phase is over (before the first write after it).
    pub fn new(
        inner: S,
        limit: Duration,
        http_phase: Arc<AtomicBool>,
        session_send_buffer: Option<usize>,
        timeouts: Counter,
    ) -> Self {
        WriteDeadline {
            inner,
            limit,
            clock: None,
            stalled: false,
            http_phase: Some(http_phase),
            session_send_buffer,
            timeouts,
        }
    }

    /// Whether the deadline applies: the connection is still plain HTTP.
    /// The first call after that restores the session's send buffer.
    fn armed(&mut self) -> bool {
        let Some(phase) = &self.http_phase else {
            return false;
        };
        if phase.load(Ordering::Acquire) {
            return true;
        }
        self.http_phase = None;
        if let Some(bytes) = self.session_send_buffer.take() {
            self.inner.set_send_buffer(bytes);
        }
        false
    }

    /// A write was refused: start the clock if it is not running, and fail
    /// once it has run out (its waker brings hyper back to find out).
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.limit;
            match &mut self.clock {
                Some(clock) => clock.as_mut().reset(deadline),
                None => self.clock = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let clock = self.clock.as_mut().expect("set above");
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timeouts.inc();
                self.inner.reset_on_close();
                tracing::debug!(limit = ?self.limit, "http response not written in time; dropping the connection");
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "response not written within the write timeout",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn on_write(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Pending if self.armed() => self.poll_stall(cx).map(Err),
            r => r,
        }
    }

    /// Before a write: leaving the HTTP phase restores the send buffer.
    fn before_write(&mut self) {
        let _ = self.armed();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Socket + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.before_write();
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.before_write();
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if r.is_ready() {
            // hyper flushes the socket once its own buffer is empty: the
            // output is written, the stall is over.
            self.stalled = false;
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A pipe that records the send buffer set on it.
    struct Pipe(tokio::io::DuplexStream, std::sync::Mutex<Option<usize>>);

    impl Socket for Pipe {
        fn reset_on_close(&self) {}
        fn set_send_buffer(&self, bytes: usize) {
            *self.1.lock().unwrap() = Some(bytes);
        }
    }

    impl AsyncRead for Pipe {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    fn wrapped(
        limit: Duration,
    ) -> (
        WriteDeadline<Pipe>,
        tokio::io::DuplexStream,
        Arc<AtomicBool>,
        Counter,
    ) {
        let (a, b) = tokio::io::duplex(64);
        let phase = Arc::new(AtomicBool::new(true));
        let timeouts = Counter::default();
        (
            WriteDeadline::new(
                Pipe(a, Default::default()),
                limit,
                phase.clone(),
                Some(1 << 18),
                timeouts.clone(),
            ),
            b,
            phase,
            timeouts,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stays_blocked_fails_at_the_deadline() {
        let (mut w, _peer, _, timeouts) = wrapped(Duration::from_secs(5));
        let start = Instant::now();
        let e = w.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(timeouts.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn trickling_reads_do_not_restart_the_clock() {
        let (mut w, mut peer, _, _) = wrapped(Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 1];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if peer.read(&mut b).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        });
        let start = Instant::now();
        let e = w.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() <= Duration::from_secs(6));
        drop(w);
        reader.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_ends_the_stall() {
        let (mut w, mut peer, _, timeouts) = wrapped(Duration::from_secs(5));
        // Each response is read within the deadline: none fails, though the
        // stalls add up to more than the deadline.
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 512];
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if peer.read(&mut b).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        });
        let start = Instant::now();
        for _ in 0..8 {
            w.write_all(&[0u8; 50]).await.unwrap();
            w.flush().await.unwrap();
        }
        assert!(start.elapsed() > Duration::from_secs(10));
        assert_eq!(timeouts.get(), 0);
        drop(w);
        reader.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_http_phase_writes_may_wait() {
        let (mut w, mut peer, phase, timeouts) = wrapped(Duration::from_secs(5));
        phase.store(false, Ordering::Release);
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all.len()
        });
        w.write_all(&[0u8; 1024]).await.unwrap();
        assert_eq!(
            *w.inner.1.lock().unwrap(),
            Some(1 << 18),
            "session send buffer"
        );
        drop(w);
        assert_eq!(reader.await.unwrap(), 1024);
        assert_eq!(timeouts.get(), 0);
    }
}
