//! The Kafka value format: Avro single-object encoding of `schemas/tick.avsc`
//! (`C3 01`, the schema's 8-byte CRC-64-AVRO fingerprint, then the datum).
//!
//! The schema file is compiled in; nothing here re-types it. Records are
//! decoded through the schema and mapped by field name.

use std::io::Cursor;

use apache_avro::{from_avro_datum, rabin::Rabin, to_avro_datum, types::Value, Schema};

use crate::market::{Symbol, Tick};

/// The tick schema exactly as shipped in `schemas/tick.avsc`.
pub const TICK_SCHEMA_JSON: &str = include_str!("../../schemas/tick.avsc");

/// Length of the single-object header: 2 magic bytes + 8 fingerprint bytes.
pub const HEADER_LEN: usize = 10;

/// Most bytes the Avro decoder may allocate for one string. apache-avro
/// reserves what a length prefix claims before reading, so without this a
/// 19-byte record claiming a 500 MB symbol makes it allocate 500 MB (found
/// by fuzzing, see docs/fuzzing.md). Process-wide; set by [`TickCodec::new`].
pub const MAX_DECODE_ALLOCATION: usize = 1 << 20;

/// Why a Kafka record value is not a tick. Each variant is a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Does not start with the single-object marker `C3 01` (garbage, JSON,
    /// Confluent framing, an empty value...).
    #[error("not Avro single-object encoding")]
    NotSingleObject,
    /// Single-object encoded, but for a schema this edge does not know.
    #[error("unknown schema fingerprint")]
    UnknownFingerprint,
    /// The datum does not decode with the tick schema (truncated or corrupt),
    /// or has bytes left over.
    #[error("malformed Avro datum")]
    Malformed,
    /// Larger than the configured maximum record size.
    #[error("record too large")]
    Oversized,
    /// Decoded, but a value breaks the contract (bad symbol, non-finite price).
    #[error("invalid field value")]
    InvalidField,
}

impl DecodeError {
    /// Every variant, for pre-registering metric labels.
    pub const ALL: [DecodeError; 5] = [
        DecodeError::NotSingleObject,
        DecodeError::UnknownFingerprint,
        DecodeError::Malformed,
        DecodeError::Oversized,
        DecodeError::InvalidField,
    ];

    /// Stable snake_case name, used as the `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::NotSingleObject => "not_single_object",
            DecodeError::UnknownFingerprint => "unknown_fingerprint",
            DecodeError::Malformed => "malformed",
            DecodeError::Oversized => "oversized",
            DecodeError::InvalidField => "invalid_field",
        }
    }
}

/// Encoder and decoder for the tick contract. Build once, share freely.
#[derive(Debug, Clone)]
pub struct TickCodec {
    schema: Schema,
    header: [u8; HEADER_LEN],
    max_record_bytes: usize,
}

impl TickCodec {
    /// A codec for the compiled-in schema, rejecting values over
    /// `max_record_bytes`.
    pub fn new(max_record_bytes: usize) -> TickCodec {
        apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION);
        let schema = Schema::parse_str(TICK_SCHEMA_JSON).expect("schemas/tick.avsc is valid");
        let fp = schema.fingerprint::<Rabin>();
        let mut header = [0u8; HEADER_LEN];
        header[0] = 0xC3;
        header[1] = 0x01;
        header[2..].copy_from_slice(&fp.bytes[..8]);
        TickCodec {
            schema,
            header,
            max_record_bytes,
        }
    }

    /// The 10-byte single-object header every tick value starts with.
    pub fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// Encodes a tick as a Kafka record value.
    pub fn encode(&self, tick: &Tick) -> Vec<u8> {
        let value = Value::Record(vec![
            (
                "symbol".into(),
                Value::String(tick.symbol.as_str().to_owned()),
            ),
            ("price".into(), Value::Double(tick.price)),
            ("size".into(), Value::Double(tick.size)),
            ("bid".into(), opt(tick.bid.map(Value::Double))),
            ("ask".into(), opt(tick.ask.map(Value::Double))),
            ("venue".into(), opt(tick.venue.clone().map(Value::String))),
            ("ts".into(), Value::TimestampMicros(tick.ts)),
            ("seq".into(), Value::Long(tick.seq)),
        ]);
        let datum = to_avro_datum(&self.schema, value).expect("a Tick always fits its schema");
        let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&datum);
        out
    }

    /// Decodes a Kafka record value.
    pub fn decode(&self, bytes: &[u8]) -> Result<Tick, DecodeError> {
        if bytes.len() > self.max_record_bytes {
            return Err(DecodeError::Oversized);
        }
        if bytes.len() < 2 || bytes[0] != 0xC3 || bytes[1] != 0x01 {
            return Err(DecodeError::NotSingleObject);
        }
        if bytes.len() < HEADER_LEN || bytes[2..HEADER_LEN] != self.header[2..] {
            return Err(DecodeError::UnknownFingerprint);
        }
        let mut cursor = Cursor::new(&bytes[HEADER_LEN..]);
        let value =
            from_avro_datum(&self.schema, &mut cursor, None).map_err(|_| DecodeError::Malformed)?;
        if cursor.position() as usize != bytes.len() - HEADER_LEN {
            return Err(DecodeError::Malformed);
        }
        tick_from_value(value)
    }
}

fn opt(v: Option<Value>) -> Value {
    match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn tick_from_value(value: Value) -> Result<Tick, DecodeError> {
    let Value::Record(fields) = value else {
        return Err(DecodeError::Malformed);
    };
    let (mut symbol, mut price, mut size, mut bid, mut ask, mut venue, mut ts, mut seq) =
        (None, None, None, None, None, None, None, None);
    for (name, v) in fields {
        match (name.as_str(), v) {
            ("symbol", Value::String(s)) => symbol = Some(s),
            ("price", Value::Double(x)) => price = Some(x),
            ("size", Value::Double(x)) => size = Some(x),
            ("bid", u) => bid = Some(union_double(u)?),
            ("ask", u) => ask = Some(union_double(u)?),
            ("venue", u) => venue = Some(union_string(u)?),
            ("ts", Value::TimestampMicros(x) | Value::Long(x)) => ts = Some(x),
            ("seq", Value::Long(x)) => seq = Some(x),
            _ => {}
        }
    }
    let symbol = Symbol::parse(&symbol.ok_or(DecodeError::Malformed)?)
        .map_err(|_| DecodeError::InvalidField)?;
    let tick = Tick {
        symbol,
        price: price.ok_or(DecodeError::Malformed)?,
        size: size.ok_or(DecodeError::Malformed)?,
        bid: bid.ok_or(DecodeError::Malformed)?,
        ask: ask.ok_or(DecodeError::Malformed)?,
        venue: venue.ok_or(DecodeError::Malformed)?,
        ts: ts.ok_or(DecodeError::Malformed)?,
        seq: seq.ok_or(DecodeError::Malformed)?,
    };
    let finite = |x: Option<f64>| x.is_none_or(f64::is_finite);
    if !tick.price.is_finite() || !tick.size.is_finite() || !finite(tick.bid) || !finite(tick.ask) {
        return Err(DecodeError::InvalidField);
    }
    Ok(tick)
}

fn union_double(v: Value) -> Result<Option<f64>, DecodeError> {
    match v {
        Value::Union(_, inner) => match *inner {
            Value::Null => Ok(None),
            Value::Double(x) => Ok(Some(x)),
            _ => Err(DecodeError::Malformed),
        },
        _ => Err(DecodeError::Malformed),
    }
}

fn union_string(v: Value) -> Result<Option<String>, DecodeError> {
    match v {
        Value::Union(_, inner) => match *inner {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            _ => Err(DecodeError::Malformed),
        },
        _ => Err(DecodeError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{GenericSingleObjectWriter, Schema};

    fn tick() -> Tick {
        Tick {
            symbol: Symbol::parse("AAPL").unwrap(),
            price: 189.25,
            size: 300.0,
            bid: Some(189.24),
            ask: None,
            venue: Some("XNAS".into()),
            ts: 1_764_270_000_123_456,
            seq: 42,
        }
    }

    #[test]
    fn a_huge_length_prefix_allocates_nothing() {
        // Fuzzer finding: valid header, then a symbol claiming 500,000,000 bytes.
        let codec = TickCodec::new(1 << 16);
        let mut input = codec.header().to_vec();
        input.extend_from_slice(&[0x80, 0x94, 0xeb, 0xdc, 0x03, b'A', b'A', b'P', b'L']);
        assert_eq!(codec.decode(&input), Err(DecodeError::Malformed));
        assert_eq!(
            apache_avro::util::max_allocation_bytes(usize::MAX),
            MAX_DECODE_ALLOCATION
        );
    }

    #[test]
    fn round_trip() {
        let codec = TickCodec::new(1 << 16);
        let bytes = codec.encode(&tick());
        assert_eq!(codec.decode(&bytes), Ok(tick()));
    }

    #[test]
    fn header_matches_apache_avro_single_object_writer() {
        // The library's own single-object writer is the reference for the
        // header layout (C3 01 + little-endian Rabin fingerprint).
        let codec = TickCodec::new(1 << 16);
        let schema = Schema::parse_str(TICK_SCHEMA_JSON).unwrap();
        let mut w = GenericSingleObjectWriter::new_with_capacity(&schema, 64).unwrap();
        let mut out = Vec::new();
        let ours = codec.encode(&tick());
        let value = from_avro_datum(&schema, &mut &ours[HEADER_LEN..], None).unwrap();
        w.write_value(value, &mut out).unwrap();
        assert_eq!(out, ours);
    }

    #[test]
    fn rejects_what_is_not_a_tick() {
        let codec = TickCodec::new(256);
        let good = codec.encode(&tick());
        assert_eq!(
            codec.decode(b"hello world"),
            Err(DecodeError::NotSingleObject)
        );
        assert_eq!(codec.decode(b""), Err(DecodeError::NotSingleObject));
        assert_eq!(
            codec.decode(b"{\"symbol\":\"AAPL\"}"),
            Err(DecodeError::NotSingleObject)
        );
        let mut other = good.clone();
        other[5] ^= 0xFF;
        assert_eq!(codec.decode(&other), Err(DecodeError::UnknownFingerprint));
        assert_eq!(
            codec.decode(&good[..6]),
            Err(DecodeError::UnknownFingerprint)
        );
        for cut in HEADER_LEN..good.len() {
            assert_eq!(
                codec.decode(&good[..cut]),
                Err(DecodeError::Malformed),
                "cut at {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(codec.decode(&trailing), Err(DecodeError::Malformed));
        assert_eq!(codec.decode(&vec![0xC3; 257]), Err(DecodeError::Oversized));
        let mut bad_sym = tick();
        bad_sym.symbol = Symbol::parse("OK").unwrap();
        let mut bytes = codec.encode(&bad_sym);
        // "OK" is at offset HEADER_LEN + 1 (after the zigzag length byte).
        bytes[HEADER_LEN + 1] = b' ';
        assert_eq!(codec.decode(&bytes), Err(DecodeError::InvalidField));
        let mut nan = tick();
        nan.price = f64::NAN;
        assert_eq!(
            codec.decode(&codec.encode(&nan)),
            Err(DecodeError::InvalidField)
        );
    }
}
