//! What a WebSocket session's socket carries, measured below tungstenite.
//!
//! [`Meter`] wraps the upgraded connection and sees every byte:
//!
//! * **Reads.** It follows the client's frame headers as the bytes pass (a
//!   few integer operations per frame; payloads are skipped, never copied)
//!   and enforces per-connection budgets that tungstenite does not have:
//!   frames per second, bytes per second, and fragments per message. An empty
//!   continuation frame is six bytes, so a client can send millions a second
//!   and tungstenite, which folds fragments into messages, never yields one
//!   of them to the session. Over a budget, the read fails with a [`Flood`]
//!   error and the session closes with 1008 (policy violation).
//! * **Writes.** It notes when the socket stops taking bytes and when it
//!   takes some again ([`WriteStall`]), so the session can close a connection
//!   whose writes have made no progress for `--write-timeout`, while it keeps
//!   enforcing its other timers.
//!
//! Budgets are GCRA limiters (governor) on tokio's clock, so tests with a
//! paused clock control them.
//!
//! It never closes a connection itself: it fails the read or reports the
//! stall, and the session decides.

use std::{
    io,
    num::NonZeroU32,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use governor::{clock::Clock, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// governor's clock on tokio's time (`tokio::time::Instant`, which a test can
/// pause and advance), as a std `Instant`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A per-connection GCRA limiter on [`TokioClock`].
pub type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<std::time::Instant>,
>;

/// A limiter allowing `per_sec` a second with bursts of `burst` (both at
/// least 1).
pub fn limiter(per_sec: u32, burst: u32) -> Limiter {
    let rate = NonZeroU32::new(per_sec.max(1)).expect("max(1)");
    let burst = NonZeroU32::new(burst.max(1)).expect("max(1)");
    RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), TokioClock)
}

/// Takes `n` cells from `l`, or says the budget is spent. More than the
/// burst at once counts as the whole burst.
pub fn take(l: &Limiter, n: usize, burst: u32) -> bool {
    let n = (n.min(burst as usize) as u32).max(1);
    matches!(l.check_n(NonZeroU32::new(n).expect("max(1)")), Ok(Ok(())))
}

/// Read budgets of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames a second (any opcode), with bursts of as many.
    pub frames_per_sec: u32,
    /// Bytes a second, with bursts of `bytes_burst`.
    pub bytes_per_sec: u32,
    pub bytes_burst: u32,
    /// Frames one message may be split into.
    pub max_fragments: u32,
}

/// Which read budget a client overspent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodKind {
    Frames,
    Bytes,
    Fragments,
}

/// The read error a [`Meter`] returns once a budget is overspent; the
/// session finds it in tungstenite's `Error::Io` and closes with 1008.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood(pub FloodKind);

impl std::fmt::Display for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "read budget exceeded: {:?}", self.0)
    }
}

impl std::error::Error for Flood {}

/// When the socket last refused bytes without taking any since; shared by
/// the [`Meter`] (which writes it) and the session (which reads it).
#[derive(Debug)]
pub struct WriteStall {
    base: tokio::time::Instant,
    /// Nanoseconds after `base`, plus one, at which a write was first refused
    /// with nothing written since; 0 while writes make progress.
    since: AtomicU64,
}

impl Default for WriteStall {
    fn default() -> Self {
        WriteStall {
            base: tokio::time::Instant::now(),
            since: AtomicU64::new(0),
        }
    }
}

impl WriteStall {
    /// Since when writes have made no progress, if they are blocked.
    pub fn blocked_since(&self) -> Option<tokio::time::Instant> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    fn blocked(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let n = tokio::time::Instant::now()
                .saturating_duration_since(self.base)
                .as_nanos() as u64;
            self.since.store(n + 1, Ordering::Relaxed);
        }
    }

    /// Bytes were taken, or the writer has nothing left to write.
    pub fn clear(&self) {
        self.since.store(0, Ordering::Relaxed);
    }
}

/// Follows WebSocket frame headers through a byte stream.
#[derive(Debug, Default)]
struct FrameScan {
    /// Header bytes gathered so far (a header is 2 to 14 bytes).
    head: [u8; 14],
    head_len: u8,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    /// Frames of the fragmented message in progress (0: none).
    fragments: u32,
}

impl FrameScan {
    /// Length of the header that starts with `b0 b1`.
    fn header_len(b1: u8) -> usize {
        crate::codec::deflate::header_len(b1)
    }

    /// Passes `data` through; returns how many frame headers it completed,
    /// or the overspent budget when a message has more than `max_fragments`
    /// frames.
    fn feed(&mut self, mut data: &[u8], max_fragments: u32) -> Result<u32, FloodKind> {
        let mut frames = 0u32;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let have = self.head_len as usize;
            let want = if have < 2 {
                2
            } else {
                Self::header_len(self.head[1])
            };
            let n = (want - have).min(data.len());
            self.head[have..have + n].copy_from_slice(&data[..n]);
            self.head_len += n as u8;
            data = &data[n..];
            let have = self.head_len as usize;
            if have < 2 || have < Self::header_len(self.head[1]) {
                continue;
            }
            // A whole header.
            let (b0, b1) = (self.head[0], self.head[1]);
            let len = match b1 & 0x7f {
                126 => u16::from_be_bytes([self.head[2], self.head[3]]) as u64,
                127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
                n => n as u64,
            };
            self.head_len = 0;
            self.skip = len;
            frames += 1;
            let fin = b0 & 0x80 != 0;
            match b0 & 0x0f {
                // Continuation.
                0 => {
                    self.fragments = self.fragments.saturating_add(1);
                    if self.fragments > max_fragments {
                        return Err(FloodKind::Fragments);
                    }
                    if fin {
                        self.fragments = 0;
                    }
                }
                // Text or binary: a new message, fragmented unless final.
                1 | 2 => self.fragments = if fin { 0 } else { 1 },
                // Control frames may come between fragments; anything else
                // is tungstenite's to refuse.
                _ => {}
            }
        }
        Ok(frames)
    }
}

/// A connection's socket with read budgets and write-progress tracking.
pub struct Meter<IO> {
    io: IO,
    scan: FrameScan,
    frames: Limiter,
    bytes: Limiter,
    limits: Limits,
    stall: Arc<WriteStall>,
    flooded: Option<FloodKind>,
}

impl<IO> Meter<IO> {
    pub fn new(io: IO, limits: Limits, stall: Arc<WriteStall>) -> Meter<IO> {
        Meter {
            io,
            scan: FrameScan::default(),
            frames: limiter(limits.frames_per_sec, limits.frames_per_sec),
            bytes: limiter(limits.bytes_per_sec, limits.bytes_burst),
            limits,
            stall,
            flooded: None,
        }
    }

    fn flood(&mut self, kind: FloodKind) -> io::Error {
        self.flooded = Some(kind);
        io::Error::other(Flood(kind))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Meter<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(kind) = this.flooded {
            return Poll::Ready(Err(io::Error::other(Flood(kind))));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if new.is_empty() {
            return Poll::Ready(Ok(())); // end of stream
        }
        let n = new.len();
        let frames = match this.scan.feed(new, this.limits.max_fragments) {
            Ok(f) => f,
            Err(kind) => return Poll::Ready(Err(this.flood(kind))),
        };
        if !take(&this.bytes, n, this.limits.bytes_burst) {
            return Poll::Ready(Err(this.flood(FloodKind::Bytes)));
        }
        if frames > 0 && !take(&this.frames, frames as usize, this.limits.frames_per_sec) {
            return Poll::Ready(Err(this.flood(FloodKind::Frames)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Meter<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.track(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Meter<IO> {
    /// A lingering close, after the close frame is written: sends FIN, then
    /// reads and discards what the client still sends (at most `max_bytes`,
    /// for at most `within`), so the kernel does not answer that data with
    /// a reset that would destroy the close frame before the client reads
    /// it (a client flooding the edge has plenty in flight).
    pub async fn linger(&mut self, within: Duration, max_bytes: usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = &mut self.io;
        let _ = tokio::time::timeout(within, async move {
            if io.shutdown().await.is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            let mut read = 0;
            while read < max_bytes {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        })
        .await;
    }
}

impl<IO> Meter<IO> {
    fn track(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => self.stall.blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.stall.clear(),
            _ => {}
        }
    }
}

/// The [`Flood`] behind a read error, if that is what it is.
pub fn flood_of(e: &(dyn std::error::Error + 'static)) -> Option<FloodKind> {
    cause::<Flood>(e).map(|f| f.0)
}

/// The `T` a stream layer (this meter, `codec::deflate::Inflating`) put
/// behind a read error, in an `io::Error`, maybe in tungstenite's; if any.
pub fn cause<T: std::error::Error + Copy + 'static>(
    e: &(dyn std::error::Error + 'static),
) -> Option<T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(f) = io.get_ref().and_then(|i| i.downcast_ref::<T>()) {
                return Some(*f);
            }
        }
        if let Some(tokio_tungstenite::tungstenite::Error::Io(io)) =
            err.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            if let Some(f) = io.get_ref().and_then(|i| i.downcast_ref::<T>()) {
                return Some(*f);
            }
        }
        if let Some(f) = err.downcast_ref::<T>() {
            return Some(*f);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame: first byte `b0` (FIN, RSV bits, opcode), then
    /// `payload` (7-, 16- or 64-bit length as needed).
    pub(crate) fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![b0];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        client_frame(if fin { 0x80 } else { 0 } | opcode, &vec![0xaa; len])
    }

    #[test]
    fn counts_frames_across_any_split_of_the_bytes() {
        let mut bytes = Vec::new();
        bytes.extend(frame(true, 1, 5));
        bytes.extend(frame(true, 9, 0)); // ping
        bytes.extend(frame(true, 2, 300)); // 16-bit length
        bytes.extend(frame(true, 2, 70_000)); // 64-bit length
        bytes.extend(frame(false, 1, 3));
        bytes.extend(frame(false, 0, 0));
        bytes.extend(frame(true, 0, 2));
        for chunk in [1, 2, 3, 7, 64, 1000, bytes.len()] {
            let mut scan = FrameScan::default();
            let mut frames = 0;
            for piece in bytes.chunks(chunk) {
                frames += scan.feed(piece, 8).unwrap();
            }
            assert_eq!(frames, 7, "chunks of {chunk}");
            assert_eq!((scan.head_len, scan.skip, scan.fragments), (0, 0, 0));
        }
    }

    #[test]
    fn a_message_in_too_many_fragments_is_refused() {
        let mut scan = FrameScan::default();
        assert_eq!(scan.feed(&frame(false, 1, 1), 3), Ok(1));
        assert_eq!(scan.feed(&frame(false, 0, 0), 3), Ok(1));
        // A ping between fragments is fine and does not count as one.
        assert_eq!(scan.feed(&frame(true, 9, 0), 3), Ok(1));
        assert_eq!(scan.feed(&frame(false, 0, 0), 3), Ok(1));
        assert_eq!(scan.feed(&frame(false, 0, 0), 3), Err(FloodKind::Fragments));
        // Finished messages reset the count.
        let mut scan = FrameScan::default();
        for _ in 0..10 {
            assert_eq!(scan.feed(&frame(false, 1, 1), 3), Ok(1));
            assert_eq!(scan.feed(&frame(false, 0, 1), 3), Ok(1));
            assert_eq!(scan.feed(&frame(true, 0, 1), 3), Ok(1));
        }
    }

    fn limits() -> Limits {
        Limits {
            frames_per_sec: 100,
            bytes_per_sec: 1 << 20,
            bytes_burst: 1 << 20,
            max_fragments: 1000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frame_budget_refills_with_time_and_trips_when_overspent() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut m = Meter::new(server, limits(), Arc::default());
        let mut buf = vec![0u8; 1 << 16];
        // 100 frames at once: the whole burst.
        let ping = frame(true, 9, 0);
        client.write_all(&ping.repeat(100)).await.unwrap();
        let mut got = 0;
        while got < ping.len() * 100 {
            got += m.read(&mut buf).await.unwrap();
        }
        // A second later the budget is back.
        tokio::time::advance(Duration::from_secs(1)).await;
        client.write_all(&ping.repeat(100)).await.unwrap();
        let mut got = 0;
        while got < ping.len() * 100 {
            got += m.read(&mut buf).await.unwrap();
        }
        // Without waiting, one more frame is over.
        client.write_all(&ping).await.unwrap();
        let e = m.read(&mut buf).await.unwrap_err();
        assert_eq!(flood_of(&e), Some(FloodKind::Frames));
        // And it stays refused.
        assert!(m.read(&mut buf).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn byte_budget_trips() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let l = Limits {
            bytes_per_sec: 1000,
            bytes_burst: 1000,
            ..limits()
        };
        let mut m = Meter::new(server, l, Arc::default());
        let mut buf = vec![0u8; 1 << 16];
        client.write_all(&frame(true, 2, 900)).await.unwrap();
        let mut got = 0;
        while got < 906 {
            got += m.read(&mut buf).await.unwrap();
        }
        client.write_all(&frame(true, 2, 200)).await.unwrap();
        let e = m.read(&mut buf).await.unwrap_err();
        assert_eq!(flood_of(&e), Some(FloodKind::Bytes));
    }

    #[tokio::test(start_paused = true)]
    async fn write_stall_is_noted_and_cleared_by_progress() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let stall = Arc::new(WriteStall::default());
        let mut m = Meter::new(server, limits(), stall.clone());
        m.write_all(&[0; 64]).await.unwrap();
        assert_eq!(stall.blocked_since(), None);
        let t0 = tokio::time::Instant::now();
        let blocked = tokio::time::timeout(Duration::from_secs(5), m.write_all(&[0; 10])).await;
        assert!(blocked.is_err(), "the pipe is full");
        assert_eq!(stall.blocked_since(), Some(t0));
        let mut sink = [0u8; 64];
        client.read_exact(&mut sink).await.unwrap();
        m.write_all(&[0; 10]).await.unwrap();
        assert_eq!(stall.blocked_since(), None);
    }
}
