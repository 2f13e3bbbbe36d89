//! A company's Avro feed read through a `--mapping`
//! (`tickfan::codec::mapping::TopicReader` with `format=avro`), where both
//! the writer schema (from the Schema Registry, which any producer with
//! `auto.register.schemas` can write to) and the record are hostile.
//!
//! Input: a 2-byte big-endian length N, N bytes of writer schema JSON, then
//! the Kafka record value (its Confluent frame, byte 0 and the schema id 1,
//! is added here). Each input gets a fresh reader, so its schema is compiled.
//!
//! Invariants checked (any violation aborts the run as a crash):
//! * `decode` never panics, and a schema that parses never makes it run
//!   away with memory (run with `-malloc_limit_mb`, see docs/fuzzing.md);
//! * a decoded tick honours the contract: valid symbol, finite numbers, at
//!   most `MAX_ATTRS` attrs whose text (names and values) is at most the
//!   reader's `max_record_bytes`, an exact price of at most 64 digits.
#![no_main]

use std::{
    cell::Cell,
    sync::{Arc, Once},
};

use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;
use tickfan::{
    codec::{
        avro::MAX_ATTRS,
        mapping::{Lookup, Record, TopicReader, WriterSchemas, MAX_DECIMAL_DIGITS},
    },
    ingest::schemas::writer_schema,
    market::Symbol,
};

const MAX_RECORD_BYTES: usize = 4096;

const MAPPING: &str = "t:format=avro,symbol=symbol,price=price,size=size,bid=quote.bid,ask=quote.ask,venue=venue,ts=ts,forward=*";

thread_local! {
    static PARSING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with libFuzzer's abort-on-panic hook muted, so that the
/// `catch_unwind` inside `f` sees the panic.
fn parsing<T>(f: impl FnOnce() -> T) -> T {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let libfuzzer = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PARSING.with(Cell::get) {
                libfuzzer(info)
            }
        }));
    });
    PARSING.with(|p| p.set(true));
    let out = f();
    PARSING.with(|p| p.set(false));
    out
}

struct One(Arc<Schema>);

impl WriterSchemas for One {
    fn lookup(&self, id: u32) -> Lookup {
        if id == 1 {
            Lookup::Found(self.0.clone())
        } else {
            Lookup::Missing
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else { return };
    let n = usize::from(u16::from_be_bytes([*a, *b]));
    if rest.len() < n {
        return;
    }
    let (schema, datum) = rest.split_at(n);
    let Ok(schema) = std::str::from_utf8(schema) else {
        return;
    };
    // As the edge parses what the registry answers: `writer_schema` catches
    // apache-avro's panics on some invalid schemas, which libFuzzer's panic
    // hook would otherwise report as crashes (it aborts before unwinding).
    let Some(schema) = parsing(|| writer_schema(schema, &[])) else {
        return;
    };
    let mut value = vec![0, 0, 0, 0, 1];
    value.extend_from_slice(datum);
    let mut reader = TopicReader::new(MAPPING.parse().unwrap(), MAX_RECORD_BYTES);
    let record = Record {
        key: Some(b"KEY"),
        value: &value,
        offset: 7,
        timestamp_ms: Some(1),
    };
    if let Ok(d) = reader.decode(&record, &One(Arc::new(schema))) {
        let t = &d.tick;
        assert_eq!(Symbol::parse(t.symbol.as_str()), Ok(t.symbol.clone()));
        assert!(t.price.is_finite() && t.size.is_finite());
        assert!(t.bid.is_none_or(f64::is_finite) && t.ask.is_none_or(f64::is_finite));
        assert!(t.attrs.len() <= MAX_ATTRS);
        let text: usize = t.attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(text <= MAX_RECORD_BYTES, "attrs of {text} bytes");
        if let Some(exact) = &d.exact {
            for x in [&exact.price, &exact.size, &exact.bid, &exact.ask]
                .into_iter()
                .flatten()
            {
                assert!(x.len() <= MAX_DECIMAL_DIGITS + 3, "{x}");
            }
        }
    }
});
