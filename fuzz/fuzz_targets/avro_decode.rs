//! Kafka record values: `tickfan::codec::avro::TickCodec::decode`, with the
//! edge's default-sized limit (`TickCodec::new(65536)`).
//!
//! Invariants checked (any violation aborts the run as a crash):
//! * `decode` never panics;
//! * inputs over the limit are `Oversized`, inputs without `C3 01` are
//!   `NotSingleObject` (the cheap checks come first and are exact);
//! * a decoded input starts with one of the headers `decode` accepts
//!   (`accepted_headers`: version 2, version 1, version 1 under apache-avro's
//!   legacy fingerprint);
//! * a decoded tick honours the contract: valid symbol, finite price, size,
//!   bid and ask;
//! * a decoded tick re-encodes (`encode` must not panic) and that encoding
//!   decodes to an equal tick; the re-encoding is itself a fixed point.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tickfan::{
    codec::avro::{DecodeError, TickCodec},
    market::Symbol,
};

const MAX_RECORD_BYTES: usize = 65536;

fn codec() -> &'static TickCodec {
    static CODEC: OnceLock<TickCodec> = OnceLock::new();
    CODEC.get_or_init(|| TickCodec::new(MAX_RECORD_BYTES))
}

fuzz_target!(|data: &[u8]| {
    let codec = codec();
    match codec.decode(data) {
        Ok(tick) => {
            assert!(codec
                .accepted_headers()
                .iter()
                .any(|header| data.starts_with(*header)));
            assert_eq!(Symbol::parse(tick.symbol.as_str()), Ok(tick.symbol.clone()));
            assert!(tick.price.is_finite() && tick.size.is_finite());
            assert!(tick.bid.is_none_or(f64::is_finite));
            assert!(tick.ask.is_none_or(f64::is_finite));

            let bytes = codec.encode(&tick);
            let again = codec.decode(&bytes);
            assert_eq!(again.as_ref(), Ok(&tick), "re-encoded tick: {bytes:02x?}");
            assert_eq!(
                codec.encode(&again.unwrap()),
                bytes,
                "encoding is not stable"
            );
        }
        Err(e) => {
            if data.len() > MAX_RECORD_BYTES {
                assert_eq!(e, DecodeError::Oversized);
            } else if !data.starts_with(&[0xC3, 0x01]) {
                assert_eq!(e, DecodeError::NotSingleObject);
            }
            let _ = e.reason();
        }
    }
});
