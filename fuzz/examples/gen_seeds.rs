//! Writes the committed seed corpora under `fuzz/corpus/<target>/seeds/`.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//!
//! Deterministic: re-running it rewrites identical files. The avro_decode
//! seeds are real `TickCodec::encode` outputs, so the fuzzer starts past the
//! single-object header and fingerprint check instead of having to guess 10
//! exact bytes.
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
            for (prefix, header) in [("v1", codec.v1_header()), ("v1_legacy", codec.v1_legacy_header())] {
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
    println!(
        "wrote {} avro_decode and {} client_message seeds",
        written,
        json.len()
    );
    Ok(())
}
