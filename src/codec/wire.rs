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
    price: f64,
    size: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ask: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    venue: Option<&'a str>,
    ts: i64,
    seq: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attrs: &'a BTreeMap<String, String>,
}

/// Encodes a tick as its client JSON object, e.g.
/// `{"symbol":"AAPL","price":189.25,"size":300.0,"bid":189.24,"ts":1764270000123456,"seq":42}`,
/// with `"attrs":{"k":"v",...}` (sorted by key) after `seq` when the tick has
/// attributes.
pub fn encode_tick(tick: &Tick) -> Bytes {
    let wire = WireTick {
        symbol: tick.symbol.as_str(),
        price: tick.price,
        size: tick.size,
        bid: tick.bid,
        ask: tick.ask,
        venue: tick.venue.as_deref(),
        ts: tick.ts,
        seq: tick.seq,
        attrs: &tick.attrs,
    };
    Bytes::from(serde_json::to_vec(&wire).expect("a tick always serializes"))
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
}
