//! permessage-deflate (RFC 7692), as the edge speaks it: negotiation, the
//! compressed form of a ticks frame built from pieces compressed once per
//! tick, and the inflation of compressed frames below tungstenite, which
//! has no extension support and refuses frames with RSV1 set.
//!
//! **No context kept.** The edge always answers
//! `permessage-deflate; server_no_context_takeover; client_no_context_takeover`:
//! every message in either direction is compressed on its own, so a
//! connection keeps no compression state between messages (a deflate
//! context is ~300 KiB to compress, ~40 KiB to inflate; the edge holds
//! thousands of connections in a few KiB each).
//!
//! **Compressed once.** A ticks frame is compressed whole, as one stream
//! (its ticks share a window: their field names are what repeats), and the
//! frames of clients that get the same ticks are compressed once
//! (`wire::deflated_frame`). Tried first and measured worse: compressing each
//! tick once into a piece ending in a sync flush and concatenating pieces
//! per frame (valid deflate, shared by every frame the tick is in): a
//! typical tick alone keeps nine tenths of its size, and receivers inflated
//! a block per tick (BENCHMARKS.md).
//!
//! It does no I/O of its own: [`Inflating`] adapts a stream that someone
//! else reads.

use flate2::{Decompress, FlushDecompress, Status};

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// What the edge answers to an offer it accepts.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The message trailer a sync flush ends with, which RFC 7692 removes from
/// each compressed message and the receiver appends before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The answer to the client's `Sec-WebSocket-Extensions` header values, or
/// `None` when it offers no permessage-deflate the edge can accept.
///
/// Offers are tried in the client's order of preference. One is refused
/// when a parameter is unknown, repeated or has an invalid value (RFC 7692
/// section 5: the server must decline it), or when it asks for
/// `server_max_window_bits` below 15 (the edge compresses with a 32 KiB
/// window). `client_max_window_bits` is accepted and left unanswered: the
/// edge inflates with a 32 KiB window, the most a client may use.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    values
        .into_iter()
        .flat_map(split_unquoted(','))
        .any(acceptable)
        .then_some(RESPONSE)
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(sep: char) -> impl Fn(&str) -> Vec<&str> {
    move |s: &str| {
        let mut parts = Vec::new();
        let (mut start, mut quoted) = (0, false);
        for (i, c) in s.char_indices() {
            match c {
                '"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }
}

/// One extension offer (`name; param; param=value`) the edge accepts.
fn acceptable(offer: &str) -> bool {
    let mut parts = split_unquoted(';')(offer).into_iter().map(str::trim);
    if !parts
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case(EXTENSION))
    {
        return false;
    }
    let mut seen = [false; 4];
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let bits = |v: Option<&str>| {
            v.and_then(|v| {
                (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && v.len() <= 2)
                    .then(|| v.parse::<u8>().ok())
                    .flatten()
            })
            .filter(|b| (8..=15).contains(b))
        };
        let (slot, ok) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            "server_max_window_bits" => (2, bits(value) == Some(15)),
            "client_max_window_bits" => (3, value.is_none() || bits(value).is_some()),
            _ => return false,
        };
        if !ok || std::mem::replace(&mut seen[slot], true) {
            return false;
        }
    }
    true
}

/// `data` as a raw-deflate stream ending in a sync flush (`00 00 ff ff`),
/// compressed on its own; such pieces also concatenate into one valid
/// deflate stream. [`message`] makes a message payload of them.
pub fn piece(data: &[u8]) -> Vec<u8> {
    use miniz_oxide::deflate::core::{
        compress_to_output, create_comp_flags_from_zip_params, deflate_flags, CompressorOxide,
        TDEFLFlush, TDEFLStatus,
    };
    // One compressor of each kind per thread, reset for each piece: making
    // one allocates and clears ~300 KiB of tables. Small inputs (a tick)
    // get deflate's fixed Huffman codes: building dynamic codes for 150
    // bytes took 10 us of a 12 us compression and saved 2 bytes; a reset
    // and a fixed-code compression of a tick take ~5 us
    // (benches/hot_path.rs, `frame/tick_piece_once`). Larger ones (long
    // replies) get dynamic codes, which pay for themselves there.
    const SMALL: usize = 1024;
    fn compressor(fixed: bool) -> CompressorOxide {
        // Level 1, raw deflate (negative window bits), default strategy.
        let mut flags = create_comp_flags_from_zip_params(1, -15, 0);
        if fixed {
            flags |= deflate_flags::TDEFL_FORCE_ALL_STATIC_BLOCKS
                | deflate_flags::TDEFL_GREEDY_PARSING_FLAG;
        }
        CompressorOxide::new(flags)
    }
    thread_local! {
        static FIXED: std::cell::RefCell<CompressorOxide> =
            std::cell::RefCell::new(compressor(true));
        static DYNAMIC: std::cell::RefCell<CompressorOxide> =
            std::cell::RefCell::new(compressor(false));
    }
    let run = |c: &std::cell::RefCell<CompressorOxide>| {
        let mut c = c.borrow_mut();
        c.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let (status, used) = compress_to_output(&mut c, data, TDEFLFlush::Sync, |b| {
            out.extend_from_slice(b);
            true
        });
        assert!(
            status == TDEFLStatus::Okay && used == data.len() && out.ends_with(&TAIL),
            "a sync flush of all the input: {status:?}, {used} of {}",
            data.len()
        );
        out
    };
    if data.len() < SMALL {
        FIXED.with(run)
    } else {
        DYNAMIC.with(run)
    }
}

/// The payload of a compressed message made of `pieces` (each from
/// [`piece`]), in order: concatenated, less the last piece's `00 00 ff ff`.
pub fn message<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, size_hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint);
    for p in pieces {
        out.extend_from_slice(p);
    }
    debug_assert!(out.ends_with(&TAIL), "pieces end in a sync flush");
    out.truncate(out.len().saturating_sub(TAIL.len()));
    out
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates (or its compressed form alone is) beyond the largest
    /// message allowed: the session closes with 1009.
    TooBig,
    /// Not valid deflate data: 1007.
    Invalid,
    /// A frame out of place for the extension (a new data message before a
    /// compressed one ended): 1002.
    Protocol,
}

impl std::fmt::Display for InflateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InflateError::TooBig => "compressed message inflates beyond the message size limit",
            InflateError::Invalid => "compressed message is not valid deflate data",
            InflateError::Protocol => "data frame inside a compressed message",
        })
    }
}

impl std::error::Error for InflateError {}

/// Inflates one message's payload (as sent: without the trailing
/// `00 00 ff ff`), refusing it once the output would pass `max` bytes: the
/// work is bounded by `max`, however small the input (a deflate bomb
/// expands ~1000:1).
pub fn inflate(payload: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    // One decompressor per thread, reset for each message (as `piece`).
    thread_local! {
        static INFLATE: std::cell::RefCell<Decompress> =
            std::cell::RefCell::new(Decompress::new(false));
    }
    INFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(false);
        inflate_with(&mut d, payload, max)
    })
}

fn inflate_with(d: &mut Decompress, payload: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::with_capacity(payload.len().saturating_mul(2).min(max));
    let mut chunk = [0u8; 8192];
    for mut input in [payload, &TAIL[..]] {
        loop {
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress(input, &mut chunk, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            let used = (d.total_in() - in0) as usize;
            let made = (d.total_out() - out0) as usize;
            if out.len() + made > max {
                return Err(InflateError::TooBig);
            }
            out.extend_from_slice(&chunk[..made]);
            input = &input[used..];
            if status == Status::StreamEnd {
                // A final block ends the stream; what follows is ignored.
                return Ok(out);
            }
            if input.is_empty() && made < chunk.len() {
                break; // all taken, nothing more pending
            }
            if used == 0 && made == 0 {
                return Err(InflateError::Invalid); // stuck: not deflate
            }
        }
    }
    Ok(out)
}

/// Where the frame being read is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Passed on as it came.
    Pass,
    /// Part of a compressed message: gathered (unmasked) until it ends.
    Gather,
}

/// The message in progress across frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InProgress {
    None,
    /// An uncompressed fragmented message: its continuations pass.
    Plain,
    /// A compressed message with this opcode (1 text, 2 binary).
    Compressed(u8),
}

/// Rewrites a stream of WebSocket frames so that each compressed message
/// (RSV1 on its first frame) reaches the reader inflated, in one frame with
/// RSV1 clear; every other frame passes byte for byte. Used by the edge on
/// what clients send (masked frames; a rewritten frame gets the all-zero
/// mask, which leaves the payload as is) and by the load generator on what
/// the edge sends (unmasked).
///
/// [`Inflater::feed`] takes the stream's bytes; [`Inflater::drain_to`] gives
/// the reader what they became.
///
/// Memory: the header being read; while a compressed message is in
/// progress its compressed bytes (at most `max`); rewritten bytes until the
/// reader takes them. Both are released once empty: nothing is kept between
/// messages.
#[derive(Debug)]
pub struct Inflater {
    /// Bytes for the reader, from `at`.
    out: Vec<u8>,
    at: usize,
    max: usize,
    head: [u8; 14],
    head_len: u8,
    remaining: u64,
    route: Route,
    mask: Option<[u8; 4]>,
    /// Payload bytes of the current frame read so far (for the mask).
    offset: u64,
    message: InProgress,
    gathered: Vec<u8>,
}

impl Inflater {
    /// Inflates messages of at most `max` bytes (compressed and inflated).
    pub fn new(max: usize) -> Inflater {
        Inflater {
            out: Vec::new(),
            at: 0,
            max,
            head: [0; 14],
            head_len: 0,
            remaining: 0,
            route: Route::Pass,
            mask: None,
            offset: 0,
            message: InProgress::None,
            gathered: Vec::new(),
        }
    }

    /// Whether bytes are waiting for the reader.
    pub fn has_output(&self) -> bool {
        self.at < self.out.len()
    }

    /// Moves waiting bytes to `dst`; returns how many.
    pub fn drain_to(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.out.len() - self.at);
        dst[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        if self.at == self.out.len() {
            self.out = Vec::new();
            self.at = 0;
        }
        n
    }

    /// Takes the next bytes of the stream; what the reader is to get of them
    /// waits for [`Inflater::drain_to`].
    pub fn feed(&mut self, data: &[u8]) -> Result<(), InflateError> {
        let mut out = std::mem::take(&mut self.out);
        let r = self.feed_to(data, &mut out);
        self.out = out;
        r
    }

    fn feed_to(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64) as usize;
                let (now, rest) = data.split_at(n);
                match self.route {
                    Route::Pass => out.extend_from_slice(now),
                    Route::Gather => {
                        let at = self.gathered.len();
                        self.gathered.extend_from_slice(now);
                        if let Some(mask) = self.mask {
                            for (i, b) in self.gathered[at..].iter_mut().enumerate() {
                                *b ^= mask[((self.offset as usize) + i) % 4];
                            }
                        }
                    }
                }
                self.offset += n as u64;
                self.remaining -= n as u64;
                data = rest;
                if self.remaining == 0 {
                    self.frame_done(out)?;
                }
                continue;
            }
            let have = self.head_len as usize;
            let want = if have < 2 {
                2
            } else {
                header_len(self.head[1])
            };
            let n = (want - have).min(data.len());
            self.head[have..have + n].copy_from_slice(&data[..n]);
            self.head_len += n as u8;
            data = &data[n..];
            let have = self.head_len as usize;
            if have >= 2 && have == header_len(self.head[1]) {
                self.header(out)?;
            }
        }
        Ok(())
    }

    /// A whole header is in `head`: decide the frame's route.
    fn header(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let len_bytes = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len = match len_bytes {
            2 => u16::from_be_bytes([self.head[2], self.head[3]]) as u64,
            8 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
            _ => (b1 & 0x7f) as u64,
        };
        self.mask = (b1 & 0x80 != 0).then(|| {
            let m = 2 + len_bytes;
            self.head[m..m + 4].try_into().expect("4 bytes")
        });
        let (rsv1, other_rsv, opcode) = (b0 & 0x40 != 0, b0 & 0x30 != 0, b0 & 0x0f);
        let fin = b0 & 0x80 != 0;
        let compressed_start = rsv1 && !other_rsv && matches!(opcode, 1 | 2);
        self.route = match (opcode, self.message) {
            (1 | 2, InProgress::Compressed(_)) => return Err(InflateError::Protocol),
            (1 | 2, _) if compressed_start => {
                self.message = InProgress::Compressed(opcode);
                Route::Gather
            }
            (1 | 2, _) => {
                self.message = if fin {
                    InProgress::None
                } else {
                    InProgress::Plain
                };
                Route::Pass
            }
            (0, InProgress::Compressed(_)) if b0 & 0x70 == 0 => Route::Gather,
            (0, InProgress::Plain) if fin => {
                self.message = InProgress::None;
                Route::Pass
            }
            // Control frames, and whatever tungstenite is to refuse
            // (reserved bits, stray continuations, unknown opcodes).
            _ => Route::Pass,
        };
        if self.route == Route::Gather
            && (self.gathered.len() as u64).saturating_add(len) > self.max as u64
        {
            return Err(InflateError::TooBig);
        }
        if self.route == Route::Pass {
            out.extend_from_slice(&self.head[..self.head_len as usize]);
        }
        self.head_len = 0;
        self.remaining = len;
        self.offset = 0;
        // The message's last frame: a FIN continuation, or a FIN first frame.
        if self.route == Route::Gather {
            self.head[0] = b0; // remembered for frame_done
        }
        if len == 0 {
            self.frame_done(out)?;
        }
        Ok(())
    }

    /// The current frame's payload is all read.
    fn frame_done(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        if self.route != Route::Gather || self.head[0] & 0x80 == 0 {
            return Ok(());
        }
        let InProgress::Compressed(opcode) = self.message else {
            unreachable!("gathering only inside a compressed message");
        };
        self.message = InProgress::None;
        let gathered = std::mem::take(&mut self.gathered);
        let plain = inflate(&gathered, self.max)?;
        out.push(0x80 | opcode);
        let masked = if self.mask.is_some() { 0x80 } else { 0 };
        match plain.len() {
            n @ 0..=125 => out.push(masked | n as u8),
            n @ 126..=65535 => {
                out.push(masked | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(masked | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked != 0 {
            out.extend_from_slice(&[0; 4]);
        }
        out.extend_from_slice(&plain);
        self.route = Route::Pass;
        Ok(())
    }
}

/// A socket that, once [`Inflating::inflate`] is called (permessage-deflate
/// was negotiated), hands tungstenite the peer's compressed messages
/// inflated by an [`Inflater`] (tungstenite refuses RSV1), and counts the
/// bytes read as they came on the wire. The edge puts it above its
/// `gateway::meter::Meter`, so read budgets count wire bytes and frames;
/// the reference client and the load generator above the TCP stream. An
/// error of the inflater fails every later read with an `io::Error` whose
/// inner error is the [`InflateError`].
pub struct Inflating<IO> {
    io: IO,
    inflater: Option<Box<Inflater>>,
    broken: Option<InflateError>,
    wire_bytes: u64,
}

impl<IO> Inflating<IO> {
    /// Passes bytes through until [`Inflating::inflate`].
    pub fn new(io: IO) -> Inflating<IO> {
        Inflating {
            io,
            inflater: None,
            broken: None,
            wire_bytes: 0,
        }
    }

    /// Inflates compressed messages from now on, each to at most `max` bytes.
    pub fn inflate(&mut self, max: usize) {
        self.inflater = Some(Box::new(Inflater::new(max)));
    }

    /// Whether compressed frames are inflated (permessage-deflate accepted).
    pub fn is_inflating(&self) -> bool {
        self.inflater.is_some()
    }

    /// Bytes read from the socket so far, as they came.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Inflating<IO> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::{ready, Poll};
        let this = self.get_mut();
        loop {
            if let Some(e) = this.broken {
                return Poll::Ready(Err(std::io::Error::other(e)));
            }
            if let Some(inf) = this.inflater.as_deref_mut() {
                if inf.has_output() {
                    let n = inf.drain_to(buf.initialize_unfilled());
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
            }
            let before = buf.filled().len();
            ready!(std::pin::Pin::new(&mut this.io).poll_read(cx, buf))?;
            let n = buf.filled().len() - before;
            this.wire_bytes += n as u64;
            let Some(inf) = this.inflater.as_deref_mut() else {
                return Poll::Ready(Ok(()));
            };
            if n == 0 {
                return Poll::Ready(Ok(())); // end of stream
            }
            let fed = inf.feed(&buf.filled()[before..]);
            buf.set_filled(before);
            if let Err(e) = fed {
                this.broken = Some(e);
            }
        }
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Inflating<IO> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Length of the WebSocket frame header whose second byte is `b1` (2 to
/// 14 bytes: length extension and mask key).
pub fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let m = if mask.is_some() { 0x80 } else { 0 };
        let mut f = vec![b0];
        match payload.len() {
            n @ 0..=125 => f.push(m | n as u8),
            n @ 126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    /// What a client's deflater sends for `text`: one stream, flushed,
    /// the tail removed.
    fn deflated(text: &[u8]) -> Vec<u8> {
        message([piece(text).as_slice()], 0)
    }

    /// Feeds `data` in one go and takes all the output.
    fn run(inf: &mut Inflater, data: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        inf.feed(data)?;
        let mut chunk = [0u8; 7];
        while inf.has_output() {
            let n = inf.drain_to(&mut chunk);
            out.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    /// The frames `bytes` hold: (first byte, payload unmasked).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while !bytes.is_empty() {
            let hl = header_len(bytes[1]);
            let len = match bytes[1] & 0x7f {
                126 => u16::from_be_bytes([bytes[2], bytes[3]]) as usize,
                127 => u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                n => n as usize,
            };
            let mask =
                (bytes[1] & 0x80 != 0).then(|| <[u8; 4]>::try_from(&bytes[hl - 4..hl]).unwrap());
            let p: Vec<u8> = bytes[hl..hl + len]
                .iter()
                .enumerate()
                .map(|(i, b)| mask.map_or(*b, |m| b ^ m[i % 4]))
                .collect();
            v.push((bytes[0], p));
            bytes = &bytes[hl + len..];
        }
        v
    }

    #[test]
    fn offers_are_accepted_only_as_rfc_7692_allows() {
        let n = |v: &[&str]| negotiate(v.iter().copied());
        // What browsers offer.
        assert_eq!(
            n(&["permessage-deflate; client_max_window_bits"]),
            Some(RESPONSE)
        );
        assert_eq!(
            n(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]),
            Some(RESPONSE)
        );
        assert_eq!(
            n(&["Permessage-Deflate; client_max_window_bits=\"10\""]),
            Some(RESPONSE)
        );
        assert_eq!(
            n(&["permessage-deflate; server_max_window_bits=15"]),
            Some(RESPONSE)
        );
        // The first acceptable of several offers, in any header line.
        assert_eq!(
            n(&[
                "x-webkit-deflate-frame",
                "permessage-deflate; server_max_window_bits=10, permessage-deflate"
            ]),
            Some(RESPONSE)
        );
        // Declined: nothing offered, another extension, a smaller window
        // than the edge compresses with, unknown, repeated or bad params.
        for refused in [
            &[][..],
            &["x-webkit-deflate-frame"],
            &["permessage-deflate; server_max_window_bits=10"],
            &["permessage-deflate; server_max_window_bits"],
            &["permessage-deflate; foo"],
            &["permessage-deflate; client_no_context_takeover; client_no_context_takeover"],
            &["permessage-deflate; client_max_window_bits=16"],
            &["permessage-deflate; client_max_window_bits=7"],
            &["permessage-deflate; client_max_window_bits=abc"],
            &["permessage-deflate; server_no_context_takeover=1"],
            &["permessage-deflateX"],
        ] {
            assert_eq!(n(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn pieces_compressed_apart_inflate_as_one_message() {
        let parts: [&[u8]; 5] = [
            br#"{"type":"ticks","ticks":["#,
            br#"{"symbol":"AAPL","price":189.25,"seq":1}"#,
            b",",
            br#"{"symbol":"AAPL","price":189.26,"seq":2}"#,
            b"]}",
        ];
        let pieces: Vec<Vec<u8>> = parts.iter().map(|p| piece(p)).collect();
        let msg = message(pieces.iter().map(Vec::as_slice), 0);
        assert!(!msg.ends_with(&TAIL));
        let plain = inflate(&msg, 1 << 20).unwrap();
        assert_eq!(plain, parts.concat());
        // And through flate2's streaming reader, as a receiver would: the
        // message plus the tail it appends. (Chromium's zlib reads these
        // frames in the page's browser test.)
        use std::io::Read;
        let mut full = msg.clone();
        full.extend_from_slice(&TAIL);
        let mut got = Vec::new();
        let _ = flate2::read::DeflateDecoder::new(&full[..]).read_to_end(&mut got);
        assert_eq!(got, parts.concat());
    }

    #[test]
    fn pieces_of_any_size_and_content_round_trip() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [0, 1, 100, 1023, 1024, 5000, 70_000] {
            // Random bytes (incompressible), text-like, and one repeated byte.
            let random: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let text: Vec<u8> = (0..len).map(|i| b"{\"seq\":12,}"[i % 11]).collect();
            for data in [random, text, vec![b'x'; len]] {
                let z = message([piece(&data).as_slice()], 0);
                assert_eq!(inflate(&z, 1 << 20).unwrap(), data, "{len}");
            }
        }
    }

    #[test]
    fn inflation_is_bounded_however_small_the_input() {
        let bomb = deflated(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < (10 << 20) / 100, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 64 << 10), Err(InflateError::TooBig));
        assert_eq!(inflate(&deflated(&[b'a'; 1000]), 1000).unwrap().len(), 1000);
        assert_eq!(
            inflate(&deflated(&[b'a'; 1001]), 1000),
            Err(InflateError::TooBig)
        );
        assert_eq!(
            inflate(b"\xff\xff\xff\xff\xff", 1000),
            Err(InflateError::Invalid)
        );
        assert_eq!(inflate(&[], 1000).unwrap(), b"");
    }

    #[test]
    fn compressed_messages_are_rewritten_and_the_rest_passes_through_any_split() {
        let mask = Some([9, 8, 7, 6]);
        let text = br#"{"op":"subscribe","symbols":["AAPL","MSFT"]}"#;
        let z = deflated(text);
        let mut input = Vec::new();
        input.extend(frame(0x81, b"plain", mask)); // uncompressed text
        input.extend(frame(0xc1, &z, mask)); // compressed, one frame
                                             // Compressed in three fragments, a ping between them.
        let (a, rest) = z.split_at(3);
        let (b, c) = rest.split_at(4);
        input.extend(frame(0x41, a, mask));
        input.extend(frame(0x00, b, mask));
        input.extend(frame(0x89, b"hi", mask));
        input.extend(frame(0x80, c, mask));
        // A fragmented plain message.
        input.extend(frame(0x01, b"ab", mask));
        input.extend(frame(0x80, b"cd", mask));
        input.extend(frame(0x88, &[0x03, 0xe8], mask)); // close
        for chunk in [1, 2, 5, 13, input.len()] {
            let mut inf = Inflater::new(1 << 20);
            let mut out = Vec::new();
            for piece in input.chunks(chunk) {
                run(&mut inf, piece, &mut out).unwrap();
            }
            let got = frames(&out);
            let want: Vec<(u8, Vec<u8>)> = vec![
                (0x81, b"plain".to_vec()),
                (0x81, text.to_vec()),
                (0x89, b"hi".to_vec()),
                (0x81, text.to_vec()),
                (0x01, b"ab".to_vec()),
                (0x80, b"cd".to_vec()),
                (0x88, vec![0x03, 0xe8]),
            ];
            assert_eq!(got, want, "chunks of {chunk}");
            assert!(
                inf.gathered.capacity() == 0 && inf.out.capacity() == 0,
                "nothing kept between messages"
            );
        }
        // Unmasked (the load generator reading the edge) stays unmasked.
        let mut inf = Inflater::new(1 << 20);
        let mut out = Vec::new();
        run(&mut inf, &frame(0xc1, &z, None), &mut out).unwrap();
        assert_eq!(out, frame(0x81, text, None));
    }

    #[test]
    fn hostile_compressed_frames_are_refused() {
        let mask = Some([1, 2, 3, 4]);
        let feed = |bytes: Vec<u8>, max| Inflater::new(max).feed(&bytes);
        // A bomb: small on the wire, over the limit inflated.
        let bomb = deflated(&vec![b' '; 1 << 20]);
        assert_eq!(
            feed(frame(0xc1, &bomb, mask), 64 << 10),
            Err(InflateError::TooBig)
        );
        // Compressed bytes alone over the limit: refused at the header,
        // before any is gathered.
        assert_eq!(
            feed(frame(0xc2, &[0; 2000], mask), 1000),
            Err(InflateError::TooBig)
        );
        // Not deflate.
        assert_eq!(
            feed(frame(0xc1, b"\xff\xff\xff", mask), 1000),
            Err(InflateError::Invalid)
        );
        // A new message inside a compressed one.
        let mut two = frame(0x41, b"ab", mask);
        two.extend(frame(0x81, b"x", mask));
        assert_eq!(feed(two, 1000), Err(InflateError::Protocol));
        // RSV1 on a control frame passes for tungstenite to refuse (1002).
        let mut out = Vec::new();
        let ping = frame(0xc9, b"", mask);
        run(&mut Inflater::new(1000), &ping, &mut out).unwrap();
        assert_eq!(out, ping);
    }
}
