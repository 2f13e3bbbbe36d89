//! Writes the committed seed corpora under `fuzz/corpus/<target>/seeds/`.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//!
//! Deterministic: re-running it rewrites identical files. The avro_decode
//! seeds are real `TickCodec::encode` outputs, so the fuzzer starts past the
//! single-object header and fingerprint check instead of having to guess 10
//! exact bytes. The mapped_avro seeds are writer schemas with datums
//! apache-avro encoded for them.
use std::{fs, path::Path};

use tickfan::{
    codec::avro::TickCodec,
    market::{Symbol, Tick},
};

fn tick(symbol: &str) -> Tick {
    Tick {
        symbol: Symbol::parse(symbol).unwrap(),
        price: 189.25,
        size: 300.0,
        bid: Some(189.24),
        ask: Some(189.26),
        venue: Some("XNAS".into()),
        ts: 1_764_270_000_123_456,
        seq: 42,
        attrs: Default::default(),
    }
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    let codec = TickCodec::new(usize::MAX);
    let avro: Vec<(&str, Tick)> = vec![
        ("full", tick("AAPL")),
        (
            "no_optionals",
            Tick {
                bid: None,
                ask: None,
                venue: None,
                ..tick("MSFT")
            },
        ),
        (
            "odd_symbol_extremes",
            Tick {
                price: f64::MAX,
                size: -0.0,
                bid: Some(f64::MIN_POSITIVE),
                ask: None,
                venue: Some(String::new()),
                ts: i64::MIN,
                seq: i64::MAX,
                ..tick("ES:Z6_c-1/EUR.USD")
            },
        ),
        (
            "max_len_symbol",
            Tick {
                venue: Some("VENUE-ü-€".into()),
                ts: 0,
                seq: -1,
                ..tick(&"Z".repeat(32))
            },
        ),
        (
            "attrs",
            Tick {
                attrs: [("cond", "@F"), ("flags", ""), (&*"k".repeat(64), "ü€")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..tick("IBM")
            },
        ),
    ];
    let dir = root.join("avro_decode/seeds");
    fs::create_dir_all(&dir)?;
    let mut written = 0;
    for (name, t) in &avro {
        let bytes = codec.encode(t);
        assert_eq!(codec.decode(&bytes).as_ref(), Ok(t), "seed {name}");
        fs::write(dir.join(format!("{name}.bin")), &bytes)?;
        written += 1;
        // The same tick as contract version 1, under both headers edges
        // accept for it: the v2 datum without its last field, the empty
        // `attrs` map (one zero byte).
        if t.attrs.is_empty() {
            let datum = &bytes[codec.header().len()..bytes.len() - 1];
            for (prefix, header) in [
                ("v1", codec.v1_header()),
                ("v1_legacy", codec.v1_legacy_header()),
            ] {
                let v1 = [&header[..], datum].concat();
                assert_eq!(codec.decode(&v1).as_ref(), Ok(t), "seed {prefix}_{name}");
                fs::write(dir.join(format!("{prefix}_{name}.bin")), v1)?;
                written += 1;
            }
        }
    }

    let json: &[(&str, &str)] = &[
        (
            "subscribe",
            r#"{"op":"subscribe","symbols":["AAPL","MSFT"]}"#,
        ),
        (
            "unsubscribe_id",
            r#"{"op":"unsubscribe","symbols":[],"id":7}"#,
        ),
        (
            "subscribe_mixed",
            r#"{"symbols":["BRK.B","EUR/USD","ES:Z6_c-1","not ok","\u00c4PL",""],"op":"subscribe"}"#,
        ),
        (
            "bad_symbol_type",
            r#"{"op":"subscribe","symbols":["A",1,null]}"#,
        ),
        ("unknown_op", r#"{"op":"nuke","symbols":["A"]}"#),
        ("op_not_string", r#"{"op":5,"symbols":"AAPL"}"#),
        ("not_object", r#"["subscribe",{"op":"subscribe"}]"#),
        (
            "auth",
            r#"{"op":"auth","token":"eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}"#,
        ),
        ("auth_empty_token", r#"{"op":"auth","token":""}"#),
    ];
    let dir = root.join("client_message/seeds");
    fs::create_dir_all(&dir)?;
    for (name, text) in json {
        fs::write(dir.join(format!("{name}.json")), text)?;
    }
    // mapped_avro: a 2-byte schema length, the writer schema, the datum
    // (encoded by apache-avro itself).
    use apache_avro::{to_avro_datum, types::Value, Decimal, Schema};
    let quote = r#"{"type":"record","name":"Q","namespace":"com.example","fields":[
        {"name":"symbol","type":"string"},
        {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
        {"name":"size","type":["null","double"],"default":null},
        {"name":"quote","type":{"type":"record","name":"BA","fields":[{"name":"bid","type":"float"},{"name":"ask","type":"long"}]}},
        {"name":"venue","type":{"type":"enum","name":"V","symbols":["XNAS","XNYS"]}},
        {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"legs","type":{"type":"array","items":"com.example.BA"}},
        {"name":"tags","type":{"type":"map","values":"string"}},
        {"name":"raw","type":{"type":"fixed","name":"F","size":4}}]}"#;
    let ba = |b: f32, a: i64| {
        Value::Record(vec![
            ("bid".into(), Value::Float(b)),
            ("ask".into(), Value::Long(a)),
        ])
    };
    let quote_value = Value::Record(vec![
        ("symbol".into(), Value::String("AAPL".into())),
        (
            "price".into(),
            Value::Decimal(Decimal::from(1_892_500i64.to_be_bytes().to_vec())),
        ),
        (
            "size".into(),
            Value::Union(1, Box::new(Value::Double(300.0))),
        ),
        ("quote".into(), ba(189.24, 18926)),
        ("venue".into(), Value::Enum(1, "XNYS".into())),
        ("ts".into(), Value::TimestampMillis(1_764_770_000_123)),
        ("legs".into(), Value::Array(vec![ba(1.0, 2), ba(3.0, 4)])),
        (
            "tags".into(),
            Value::Map(
                [("cond".to_string(), Value::String("@F".into()))]
                    .into_iter()
                    .collect(),
            ),
        ),
        ("raw".into(), Value::Fixed(4, vec![0, 1, 2, 255])),
    ]);
    let flat = r#"{"type":"record","name":"T","fields":[{"name":"symbol","type":"string"},{"name":"price","type":"double"}]}"#;
    let flat_value = Value::Record(vec![
        ("symbol".into(), Value::String("EUR/USD".into())),
        ("price".into(), Value::Double(1.08455)),
    ]);
    let mapped: [(&str, &str, Value); 2] =
        [("quote", quote, quote_value), ("flat", flat, flat_value)];
    let dir = root.join("mapped_avro/seeds");
    fs::create_dir_all(&dir)?;
    for (name, schema, value) in &mapped {
        let datum = to_avro_datum(&Schema::parse_str(schema).unwrap(), value.clone()).unwrap();
        let mut seed = u16::try_from(schema.len()).unwrap().to_be_bytes().to_vec();
        seed.extend(schema.as_bytes());
        seed.extend(datum);
        fs::write(dir.join(format!("{name}.bin")), seed)?;
    }
    println!(
        "wrote {} avro_decode, {} client_message and {} mapped_avro seeds",
        written,
        json.len(),
        mapped.len()
    );
    Ok(())
}
