//! The client wire form of a tick: one JSON object, encoded once per tick and
//! shared (as [`Bytes`]) by every subscriber. Frames are built by
//! concatenating these pre-encoded objects; nothing is formatted per client.
//!
//! It never parses what clients send (that is `gateway::protocol`) and never
//! writes to a socket.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::market::Tick;

#[derive(Serialize)]
struct WireTick<'a> {
    symbol: &'a str,
    price: Num<'a>,
    size: Num<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bid: Option<Num<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ask: Option<Num<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    venue: Option<&'a str>,
    ts: i64,
    seq: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attrs: &'a BTreeMap<String, String>,
}

/// The decimal text of a tick's numbers that came as decimals (an Avro
/// `decimal`, a JSON string), written to clients as that text, so a price of
/// `0.1` or of 19 significant digits reaches them as the feed wrote it, not
/// as the nearest double. Each text is a valid JSON number
/// ([`is_json_number`]); the tick's `f64` fields hold the same values,
/// rounded, for whatever computes with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exact {
    pub price: Option<Box<str>>,
    pub size: Option<Box<str>>,
    pub bid: Option<Box<str>>,
    pub ask: Option<Box<str>>,
}

/// A number as clients get it: a double, or decimal text written as is.
enum Num<'a> {
    F(f64),
    Text(&'a str),
}

impl Num<'_> {
    fn of<'a>(x: f64, text: Option<&'a str>) -> Num<'a> {
        match text {
            Some(t) => Num::Text(t),
            None => Num::F(x),
        }
    }
}

impl Serialize for Num<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Num::F(x) => s.serialize_f64(*x),
            Num::Text(t) => {
                // Checked when the `Exact` was built; RawValue checks again.
                let raw: &serde_json::value::RawValue =
                    serde_json::from_str(t).map_err(serde::ser::Error::custom)?;
                raw.serialize(s)
            }
        }
    }
}

/// Whether `s` is a JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Encodes a tick as its client JSON object, e.g.
/// `{"symbol":"AAPL","price":189.25,"size":300.0,"bid":189.24,"ts":1764270000123456,"seq":42}`,
/// with `"attrs":{"k":"v",...}` (sorted by key) after `seq` when the tick has
/// attributes.
pub fn encode_tick(tick: &Tick) -> Bytes {
    encode_tick_exact(tick, None)
}

/// [`encode_tick`], with the numbers `exact` holds written as its text.
pub fn encode_tick_exact(tick: &Tick, exact: Option<&Exact>) -> Bytes {
    let text = |f: fn(&Exact) -> &Option<Box<str>>| exact.and_then(|e| f(e).as_deref());
    let wire = WireTick {
        symbol: tick.symbol.as_str(),
        price: Num::of(tick.price, text(|e| &e.price)),
        size: Num::of(tick.size, text(|e| &e.size)),
        bid: tick.bid.map(|x| Num::of(x, text(|e| &e.bid))),
        ask: tick.ask.map(|x| Num::of(x, text(|e| &e.ask))),
        venue: tick.venue.as_deref(),
        ts: tick.ts,
        seq: tick.seq,
        attrs: &tick.attrs,
    };
    // Sized up front: growing the buffer while serializing a tick with a
    // few hundred bytes of attrs took 7% of the ingest thread (issue 18).
    let attrs: usize = tick.attrs.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    let guess =
        192 + tick.symbol.as_str().len() + tick.venue.as_deref().map_or(0, str::len) + attrs;
    let mut out = Vec::with_capacity(guess);
    serde_json::to_writer(&mut out, &wire).expect("a tick always serializes");
    Bytes::from(out)
}

const SNAPSHOT_SUFFIX: &[u8] = br#","snapshot":true}"#;

/// The snapshot variant of an encoded tick: the same object with
/// `"snapshot":true` appended. Built once per cached tick, on demand.
pub fn snapshot_of(encoded: &[u8]) -> Bytes {
    debug_assert_eq!(encoded.last(), Some(&b'}'));
    let mut out = BytesMut::with_capacity(encoded.len() + SNAPSHOT_SUFFIX.len());
    out.put_slice(&encoded[..encoded.len() - 1]);
    out.put_slice(SNAPSHOT_SUFFIX);
    out.freeze()
}

/// A live tick sent for a rate-limited subscription, standing for `n` more
/// that were skipped: the same object with `"conflated":n` appended. Built
/// per client, at most at the client's rate.
pub fn with_conflated(encoded: &[u8], n: u32) -> Bytes {
    debug_assert_eq!(encoded.last(), Some(&b'}'));
    let suffix = format!(",\"conflated\":{n}}}");
    let mut out = BytesMut::with_capacity(encoded.len() + suffix.len());
    out.put_slice(&encoded[..encoded.len() - 1]);
    out.put_slice(suffix.as_bytes());
    out.freeze()
}

const FRAME_HEAD: &str = r#"{"type":"ticks","ticks":["#;
const FRAME_TAIL: &str = "]}";

/// Bytes a ticks frame adds around its tick objects.
pub const FRAME_OVERHEAD: usize = FRAME_HEAD.len() + FRAME_TAIL.len();

/// Builds one `{"type":"ticks","ticks":[...]}` frame from pre-encoded ticks.
pub fn ticks_frame<'a>(ticks: impl IntoIterator<Item = &'a Bytes>, size_hint: usize) -> String {
    let mut out = String::with_capacity(size_hint + FRAME_OVERHEAD);
    out.push_str(FRAME_HEAD);
    for (i, t) in ticks.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Encoded ticks are serde_json output, hence valid UTF-8.
        out.push_str(std::str::from_utf8(t).expect("encoded ticks are UTF-8"));
    }
    out.push_str(FRAME_TAIL);
    out
}

/// The frame [`ticks_frame`] builds, as a permessage-deflate message payload
/// (RSV1 set on its frame), compressed at most once per edge thread however
/// many clients get the same frame.
///
/// The frame is compressed whole, as one stream, so its ticks share a
/// window: ten typical ticks compress to a third, where ticks compressed
/// apart (and shared between frames) each kept nine tenths, their field
/// names being what repeats, and made receivers inflate a block per tick
/// (measured: BENCHMARKS.md). Writers woken by the same ingest batch drain
/// the same ticks in the same order, so the frame is looked up by its ticks'
/// identity in a small per-thread cache of recent frames, and compressed only
/// when none matches: a broadcast batch is compressed once per thread, not
/// once per client. Also says whether this call compressed it (`false`:
/// found in the cache).
pub fn deflated_frame(ticks: &[&Bytes], size_hint: usize) -> (Bytes, bool) {
    FRAMES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(hit) = cache.get(ticks) {
            return (hit, false);
        }
        let text = ticks_frame(ticks.iter().copied(), size_hint);
        let z: Bytes =
            super::deflate::message([super::deflate::piece(text.as_bytes()).as_slice()], 0).into();
        cache.put(ticks, z.clone());
        (z, true)
    })
}

/// Recent compressed frames of one thread, by their ticks. An entry holds
/// its ticks (so no address is reused while it is kept) and is matched by
/// identity (address and length of each tick's encoding), not content.
struct FrameCache {
    entries: [Option<(Vec<Bytes>, Bytes)>; FRAME_CACHE],
    next: usize,
}

/// Frames a thread remembers: enough for a few batches in flight; each
/// holds at most one `--max-frame-bytes` frame.
const FRAME_CACHE: usize = 4;

thread_local! {
    static FRAMES: std::cell::RefCell<FrameCache> = const {
        std::cell::RefCell::new(FrameCache { entries: [const { None }; FRAME_CACHE], next: 0 })
    };
}

fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

impl FrameCache {
    fn get(&self, ticks: &[&Bytes]) -> Option<Bytes> {
        self.entries.iter().flatten().find_map(|(key, z)| {
            (key.len() == ticks.len() && key.iter().zip(ticks).all(|(a, b)| same(a, b)))
                .then(|| z.clone())
        })
    }

    fn put(&mut self, ticks: &[&Bytes], z: Bytes) {
        self.entries[self.next] = Some((ticks.iter().map(|t| (*t).clone()).collect(), z));
        self.next = (self.next + 1) % FRAME_CACHE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Symbol;

    fn tick(seq: i64) -> Tick {
        Tick {
            symbol: Symbol::parse("AAPL").unwrap(),
            price: 189.25,
            size: 300.0,
            bid: Some(189.24),
            ask: None,
            venue: None,
            ts: 1_764_270_000_123_456,
            seq,
            attrs: BTreeMap::new(),
        }
    }

    #[test]
    fn deflated_frames_inflate_to_the_text_frame_and_are_compressed_once_per_batch() {
        let ticks: Vec<Bytes> = (1..=10).map(|s| encode_tick(&tick(s))).collect();
        let refs: Vec<&Bytes> = ticks.iter().collect();
        let size: usize = ticks.iter().map(|t| t.len()).sum();
        let text = ticks_frame(refs.iter().copied(), size);
        let inflate = |z: &[u8]| super::super::deflate::inflate(z, 1 << 20).unwrap();
        // A batch: compressed whole, a third of the text or less.
        let (z, fresh) = deflated_frame(&refs, size);
        assert!(fresh);
        assert_eq!(inflate(&z), text.as_bytes());
        assert!(z.len() * 3 < text.len(), "{} of {}", z.len(), text.len());
        // The same ticks again (another client's writer on this thread):
        // the same compressed bytes, not compressed again.
        let (again, fresh) = deflated_frame(&refs, size);
        assert!(!fresh);
        assert_eq!(again.as_ptr(), z.as_ptr());
        // Other ticks, or the same in another order: compressed for them.
        let mut other = refs.clone();
        other.swap(0, 1);
        let (z2, _) = deflated_frame(&other, size);
        assert_ne!(z2.as_ptr(), z.as_ptr());
        assert_eq!(
            inflate(&z2),
            ticks_frame(other.iter().copied(), size).as_bytes()
        );
        // Equal content but other ticks (identity, not bytes, is the key).
        let copies: Vec<Bytes> = ticks.iter().map(|t| Bytes::copy_from_slice(t)).collect();
        let copy_refs: Vec<&Bytes> = copies.iter().collect();
        assert_ne!(deflated_frame(&copy_refs, size).0.as_ptr(), z.as_ptr());
        // A prefix of the batch (another length) is another frame.
        let (part, _) = deflated_frame(&refs[..1], 0);
        assert_eq!(
            inflate(&part),
            ticks_frame(refs[..1].iter().copied(), 0).as_bytes()
        );
    }

    #[test]
    fn frame_is_valid_json_with_snapshot_flags() {
        let live = encode_tick(&tick(1));
        let snap = snapshot_of(&encode_tick(&tick(2)));
        let frame = ticks_frame([&snap, &live], 0);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "ticks");
        let ticks = v["ticks"].as_array().unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!(ticks[0]["snapshot"], true);
        assert_eq!(ticks[0]["seq"], 2);
        assert!(ticks[1].get("snapshot").is_none());
        assert_eq!(ticks[1]["ts"], 1_764_270_000_123_456i64);
        assert_eq!(ticks[1]["bid"], 189.24);
        assert!(ticks[1].get("ask").is_none());
        assert!(ticks[1].get("venue").is_none());
    }

    #[test]
    fn attrs_are_encoded_only_when_present() {
        // Without attrs, the bytes are what they were before attrs existed.
        assert_eq!(
            &encode_tick(&tick(42))[..],
            br#"{"symbol":"AAPL","price":189.25,"size":300.0,"bid":189.24,"ts":1764270000123456,"seq":42}"#
        );
        let mut t = tick(42);
        t.attrs.insert("exch".into(), "Q".into());
        t.attrs.insert("cond".into(), "@F \"\u{1}".into());
        let encoded = encode_tick(&t);
        assert_eq!(
            &encoded[..],
            br#"{"symbol":"AAPL","price":189.25,"size":300.0,"bid":189.24,"ts":1764270000123456,"seq":42,"attrs":{"cond":"@F \"\u0001","exch":"Q"}}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&snapshot_of(&encoded)).unwrap();
        assert_eq!(v["attrs"]["cond"], "@F \"\u{1}");
        assert_eq!(v["snapshot"], true);
    }

    #[test]
    fn exact_numbers_are_written_as_their_decimal_text() {
        let mut t = tick(7);
        t.price = 0.1 + 0.2;
        let exact = Exact {
            price: Some("0.3".into()),
            bid: Some("1234567890.123456789".into()),
            ..Exact::default()
        };
        assert_eq!(
            &encode_tick_exact(&t, Some(&exact))[..],
            br#"{"symbol":"AAPL","price":0.3,"size":300.0,"bid":1234567890.123456789,"ts":1764270000123456,"seq":7}"#
        );
        // Without the text, the double as serde_json writes it.
        assert!(std::str::from_utf8(&encode_tick(&t))
            .unwrap()
            .contains("0.30000000000000004"));
    }

    #[test]
    fn json_numbers_are_recognised() {
        for ok in [
            "0",
            "-0",
            "12",
            "1.50",
            "-0.001",
            "1e5",
            "2.5E-3",
            "123456789012345678901234567890",
        ] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "+1", "NaN", "1_0", "1.2.3", " 1", "0x10",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }
}
