//! The client wire form of a tick: one JSON object, encoded once per tick and
//! shared (as [`Bytes`]) by every subscriber. Frames are built by
//! concatenating these pre-encoded objects; nothing is formatted per client.
//!
//! It never parses what clients send (that is `gateway::protocol`) and never
//! writes to a socket.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock, OnceLock},
};

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

/// An encoded tick as the fan-out shares it: the JSON object, and its
/// permessage-deflate piece, compressed the first time a compressing session
/// sends the tick and then shared by all of them (`codec::deflate`). Cloning
/// it is one reference count, as cloning `Bytes` is.
#[derive(Clone)]
pub struct Encoded(Arc<EncodedInner>);

struct EncodedInner {
    json: Bytes,
    piece: OnceLock<Box<[u8]>>,
}

impl Encoded {
    pub fn new(json: Bytes) -> Encoded {
        Encoded(Arc::new(EncodedInner {
            json,
            piece: OnceLock::new(),
        }))
    }

    /// The tick's JSON object.
    pub fn json(&self) -> &Bytes {
        &self.0.json
    }

    /// The object as a raw-deflate piece ([`deflate::piece`]), compressed
    /// once however many sessions ask.
    ///
    /// [`deflate::piece`]: super::deflate::piece
    pub fn piece(&self) -> &[u8] {
        self.0
            .piece
            .get_or_init(|| super::deflate::piece(&self.0.json).into_boxed_slice())
    }
}

impl Encoded {
    /// Whether [`Encoded::piece`] was computed (tests: it is shared, not
    /// recomputed per session).
    pub fn piece_is_cached(&self) -> bool {
        self.0.piece.get().is_some()
    }
}

impl std::ops::Deref for Encoded {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.json
    }
}

impl From<Bytes> for Encoded {
    fn from(json: Bytes) -> Encoded {
        Encoded::new(json)
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Encoded").field(&self.0.json).finish()
    }
}

impl PartialEq for Encoded {
    fn eq(&self, other: &Encoded) -> bool {
        self.0.json == other.0.json
    }
}

const FRAME_HEAD: &str = r#"{"type":"ticks","ticks":["#;
const FRAME_TAIL: &str = "]}";

/// Bytes a ticks frame adds around its tick objects.
pub const FRAME_OVERHEAD: usize = FRAME_HEAD.len() + FRAME_TAIL.len();

/// Builds one `{"type":"ticks","ticks":[...]}` frame from pre-encoded ticks.
pub fn ticks_frame<'a>(ticks: impl IntoIterator<Item = &'a Encoded>, size_hint: usize) -> String {
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

/// The frame [`ticks_frame`] builds, as a permessage-deflate message
/// payload (RSV1 set on its frame): the pieces of the frame's head, of each
/// tick (compressed once per tick, see [`Encoded::piece`]), of the commas
/// and of the tail, back to back. Nothing is compressed per client but a
/// tick no compressing session has sent before.
pub fn deflated_ticks_frame(ticks: &[&Encoded]) -> Vec<u8> {
    static HEAD: LazyLock<Vec<u8>> = LazyLock::new(|| super::deflate::piece(FRAME_HEAD.as_bytes()));
    static COMMA: LazyLock<Vec<u8>> = LazyLock::new(|| super::deflate::piece(b","));
    static TAIL: LazyLock<Vec<u8>> = LazyLock::new(|| super::deflate::piece(FRAME_TAIL.as_bytes()));
    let pieces = || {
        std::iter::once(HEAD.as_slice())
            .chain(ticks.iter().enumerate().flat_map(|(i, t)| {
                let comma: &[u8] = if i > 0 { &COMMA } else { &[] };
                [comma, t.piece()]
            }))
            .chain(std::iter::once(TAIL.as_slice()))
    };
    let size: usize = pieces().map(<[u8]>::len).sum();
    super::deflate::message(pieces(), size)
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
    fn frame_is_valid_json_with_snapshot_flags() {
        let live = encode_tick(&tick(1));
        let snap = snapshot_of(&encode_tick(&tick(2)));
        let frame = ticks_frame([&snap.into(), &live.into()], 0);
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
