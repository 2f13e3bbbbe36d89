//! Micro-benchmarks of the per-tick hot path: decode, encode, fan-out to N
//! subscribers, outbox push and drain into one frame, registry churn.
//! `cargo bench --bench hot_path`; results belong in BENCHMARKS.md.

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tickfan::{
    codec::{self, avro::TickCodec, wire},
    fanout::{wake_all, History, Item, Out, Outbox, Registry, ResumeFrom, Resumed},
    feed::{encode_padded, Generator},
    market::Symbol,
};

fn symbols(n: usize) -> Vec<Symbol> {
    (0..n)
        .map(|i| Symbol::parse(&format!("SYM{i:05}")).unwrap())
        .collect()
}

fn codec(c: &mut Criterion) {
    let codec = TickCodec::new(1 << 16);
    let mut gen = Generator::new(symbols(100), 1.0, 7);
    let tick = gen.next_tick(1_764_270_000_000_000);
    let bytes = codec.encode(&tick);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("avro_decode", |b| {
        b.iter(|| codec.decode(std::hint::black_box(&bytes)).unwrap())
    });
    // As `produce --tick-bytes 512` sends it: a `pad` attribute of filler.
    let padded = encode_padded(&codec, &mut tick.clone(), 512);
    assert_eq!(padded.len(), 512);
    g.bench_function("avro_decode_512b", |b| {
        b.iter(|| codec.decode(std::hint::black_box(&padded)).unwrap())
    });
    g.bench_function("wire_encode", |b| {
        b.iter(|| wire::encode_tick(std::hint::black_box(&tick)))
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_one_tick");
    let sym = Symbol::parse("AAPL").unwrap();
    let encoded = wire::encode_tick(&Generator::new(vec![sym.clone()], 0.0, 1).next_tick(0));
    for n in [1usize, 100, 10_000] {
        let reg = Registry::new();
        let outboxes: Vec<_> = (0..n).map(|_| Arc::new(Outbox::new(1024))).collect();
        for ob in &outboxes {
            reg.subscribe(&sym, ob);
        }
        g.throughput(Throughput::Elements(n as u64));
        let mut wake = Vec::with_capacity(n);
        let mut seq = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                reg.publish(&sym, seq, encoded.clone(), &mut wake);
                wake_all(&mut wake);
            })
        });
    }
    g.finish();
}

/// What keeping history for resumes adds to publishing a tick when no
/// client resumes: the same fan-out with `--resume-memory 0` and with the
/// default 64 MiB.
fn history(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_history");
    let sym = Symbol::parse("AAPL").unwrap();
    let encoded = wire::encode_tick(&Generator::new(vec![sym.clone()], 0.0, 1).next_tick(0));
    for (name, budget) in [("off", 0usize), ("on", 64 << 20)] {
        for n in [1usize, 100] {
            let reg = Registry::with_history(History {
                budget,
                window: Duration::from_secs(300),
            });
            let outboxes: Vec<_> = (0..n).map(|_| Arc::new(Outbox::new(1024))).collect();
            for ob in &outboxes {
                reg.subscribe(&sym, ob);
            }
            let mut wake = Vec::with_capacity(n);
            let mut seq = 0;
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    seq += 1;
                    reg.publish_at(&sym, seq, encoded.clone(), seq, true, &mut wake);
                    wake_all(&mut wake);
                    if seq % 512 == 0 {
                        for ob in &outboxes {
                            ob.drain(usize::MAX);
                        }
                    }
                })
            });
        }
    }
    g.finish();
}

/// A resume of N ticks served from memory: the registry finds the client's
/// place in the symbol's history and queues the N ticks after it.
fn resume(c: &mut Criterion) {
    let mut g = c.benchmark_group("resume_from_memory");
    let sym = Symbol::parse("AAPL").unwrap();
    let encoded = wire::encode_tick(&Generator::new(vec![sym.clone()], 0.0, 1).next_tick(0));
    let reg = Registry::with_history(History {
        budget: 64 << 20,
        window: Duration::from_secs(300),
    });
    const HELD: i64 = 10_000;
    for seq in 1..=HELD {
        reg.publish_at(&sym, seq, encoded.clone(), seq, true, &mut Vec::new());
    }
    for n in [100i64, 1000, 5000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || Arc::new(Outbox::new(1024).with_replay_room(5000)),
                |ob| {
                    let from = ResumeFrom {
                        seq: HELD - n,
                        ts: Some(HELD - n),
                    };
                    let r = reg.subscribe_resume(&sym, &ob, from, true, HELD);
                    assert_eq!(r, Resumed::Memory(n as usize));
                    reg.unsubscribe(&sym, &ob);
                    ob
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn outbox(c: &mut Criterion) {
    let sym = Symbol::parse("AAPL").unwrap();
    let encoded = wire::encode_tick(&Generator::new(vec![sym.clone()], 0.0, 1).next_tick(0));
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(1));
    let full = Outbox::new(256);
    let mut seq = 0;
    g.bench_function("push_drop_oldest", |b| {
        b.iter(|| {
            seq += 1;
            full.push(Item {
                symbol: sym.clone(),
                seq,
                bytes: encoded.clone(),
                ts: 0,
            })
        })
    });
    // A 4 Hz subscription on a busy symbol: between two turns every tick
    // replaces the waiting one (the per-tick bookkeeping of conflation).
    let conflated = Outbox::new(256);
    conflated.set_max_rate(&sym, Some(std::time::Duration::from_millis(250)));
    g.bench_function("push_conflated_4hz", |b| {
        b.iter(|| {
            seq += 1;
            conflated.push(Item {
                symbol: sym.clone(),
                seq,
                bytes: encoded.clone(),
                ts: 0,
            })
        })
    });
    g.throughput(Throughput::Elements(256));
    g.bench_function("drain_256_into_frame", |b| {
        b.iter_batched(
            || {
                let ob = Outbox::new(256);
                for seq in 0..256 {
                    ob.push(Item {
                        symbol: sym.clone(),
                        seq,
                        bytes: encoded.clone(),
                        ts: 0,
                    });
                }
                ob
            },
            |ob| {
                let d = ob.drain(1 << 20);
                let ticks = d.entries.iter().filter_map(|e| match e {
                    Out::Tick(b) => Some(b),
                    Out::Gap(_) => None,
                });
                wire::ticks_frame(ticks, d.bytes)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn registry(c: &mut Criterion) {
    let reg = Registry::new();
    let syms = symbols(1000);
    let ob = Arc::new(Outbox::new(1024));
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(syms.len() as u64));
    g.bench_function("subscribe_unsubscribe_1000", |b| {
        b.iter(|| {
            for s in &syms {
                reg.subscribe(s, &ob);
            }
            for s in &syms {
                reg.unsubscribe(s, &ob);
            }
        })
    });
    g.finish();
}

/// Partition interest with 100,000 subscribed symbols over 3 topics of 64
/// partitions: one symbol's first subscriber and departure (what a
/// subscribe storm costs per change), against recomputing everything (what
/// a partition-count change costs, and every change cost before).
fn interest(c: &mut Criterion) {
    use tickfan::ingest::interest::Interest;
    let reg = Registry::new();
    let ob = Arc::new(Outbox::new(16));
    for s in symbols(100_000) {
        reg.subscribe(&s, &ob);
    }
    let counts = |n: i32| -> std::collections::HashMap<Arc<str>, i32> {
        ["a", "b", "c"].iter().map(|t| (Arc::from(*t), n)).collect()
    };
    let (c64, c65) = (counts(64), counts(65));
    let mut view = Interest::default();
    view.update(&reg, &c64);
    let extra = Symbol::parse("EXTRA").unwrap();
    let mut g = c.benchmark_group("interest_100k_symbols");
    g.bench_function("one_symbol_in_and_out", |b| {
        b.iter(|| {
            reg.subscribe(&extra, &ob);
            let in_ = view.update(&reg, &c64).len();
            reg.unsubscribe(&extra, &ob);
            in_ + view.update(&reg, &c64).len()
        })
    });
    let mut flip = false;
    g.bench_function("full_recompute", |b| {
        b.iter(|| {
            flip = !flip;
            view.update(&reg, if flip { &c65 } else { &c64 }).len()
        })
    });
    g.finish();
}

/// A record through its topic's reader, as the ingest decodes it: tickfan's
/// own contract (the default mapping: must stay within 20% of
/// `codec/avro_decode`), a company's record in the Confluent wire format
/// (nested instrument, decimal price, millisecond time, two forwarded
/// fields), and the same record as JSON.
fn mapped(c: &mut Criterion) {
    use apache_avro::{to_avro_datum, types::Value, Decimal, Schema};
    use tickfan::codec::mapping::{Lookup, Record, TopicReader, WriterSchemas};

    struct One(Arc<Schema>);
    impl WriterSchemas for One {
        fn lookup(&self, _: u32) -> Lookup {
            Lookup::Found(self.0.clone())
        }
    }
    const QUOTE: &str = r#"{"type":"record","name":"Quote","fields":[
        {"name":"instrument","type":{"type":"record","name":"Instrument","fields":[{"name":"ticker","type":"string"},{"name":"mic","type":["null","string"],"default":null}]}},
        {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
        {"name":"qty","type":"double"},
        {"name":"bid","type":["null","double"],"default":null},
        {"name":"ask","type":["null","double"],"default":null},
        {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"desk","type":"string"},
        {"name":"cond","type":["null","string"],"default":null}]}"#;
    let schema = Schema::parse_str(QUOTE).unwrap();
    let value = Value::Record(vec![
        (
            "instrument".into(),
            Value::Record(vec![
                ("ticker".into(), Value::String("SYM00042".into())),
                (
                    "mic".into(),
                    Value::Union(1, Box::new(Value::String("XNAS".into()))),
                ),
            ]),
        ),
        (
            "px".into(),
            Value::Decimal(Decimal::from(1_892_500i64.to_be_bytes())),
        ),
        ("qty".into(), Value::Double(300.0)),
        (
            "bid".into(),
            Value::Union(1, Box::new(Value::Double(189.24))),
        ),
        (
            "ask".into(),
            Value::Union(1, Box::new(Value::Double(189.26))),
        ),
        (
            "event_time".into(),
            Value::TimestampMillis(1_764_270_000_123),
        ),
        ("desk".into(), Value::String("eq".into())),
        (
            "cond".into(),
            Value::Union(1, Box::new(Value::String("@F".into()))),
        ),
    ]);
    let mut confluent = vec![0, 0, 0, 0, 7];
    confluent.extend(to_avro_datum(&schema, value).unwrap());
    let json = br#"{"instrument":{"ticker":"SYM00042","mic":"XNAS"},"px":"189.2500","qty":300.0,"bid":189.24,"ask":189.26,"event_time":1764270000123,"desk":"eq","cond":"@F"}"#;
    let fields = "symbol=instrument.ticker,price=px,size=qty,venue=instrument.mic,ts=event_time:millis,forward=desk|cond";
    let schemas = One(Arc::new(schema));

    let codec = TickCodec::new(1 << 16);
    let mut gen = Generator::new(symbols(100), 1.0, 7);
    let own = codec.encode(&gen.next_tick(1_764_270_000_000_000));
    let rec = |value: &'static [u8]| Record {
        key: Some(b"SYM00042"),
        value,
        offset: 41,
        timestamp_ms: Some(1_764_270_000_123),
    };
    let own: &'static [u8] = Box::leak(own.into_boxed_slice());
    let confluent: &'static [u8] = Box::leak(confluent.into_boxed_slice());

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    let mut tickfan = TopicReader::new(tickfan::codec::mapping::Mapping::tickfan("t"), 1 << 16);
    g.bench_function("tickfan_default_mapping", |b| {
        b.iter(|| {
            tickfan
                .decode(std::hint::black_box(&rec(own)), &schemas)
                .unwrap()
        })
    });
    let mut avro = TopicReader::new(format!("t:format=avro,{fields}").parse().unwrap(), 1 << 16);
    g.bench_function("confluent_avro_mapped", |b| {
        b.iter(|| {
            avro.decode(std::hint::black_box(&rec(confluent)), &schemas)
                .unwrap()
        })
    });
    let mut from_json =
        TopicReader::new(format!("t:format=json,{fields}").parse().unwrap(), 1 << 16);
    g.bench_function("json_mapped", |b| {
        b.iter(|| {
            from_json
                .decode(std::hint::black_box(&rec(json)), &schemas)
                .unwrap()
        })
    });
    g.finish();
}

/// A client's ticks frame of `n` ticks: as text; compressed (a frame no
/// client on the thread got before); and the same ticks again (another
/// client's writer woken by the same batch: the cached compression).
fn frames(c: &mut Criterion) {
    let mut gen = Generator::new(symbols(100), 1.0, 7);
    let mut g = c.benchmark_group("frame");
    for n in [1usize, 10, 50] {
        let ticks: Vec<bytes::Bytes> = (0..n)
            .map(|i| wire::encode_tick(&gen.next_tick(1_764_270_000_000_000 + i as i64)))
            .collect();
        let refs: Vec<&bytes::Bytes> = ticks.iter().collect();
        let bytes: usize = ticks.iter().map(|t| t.len()).sum();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("text", n), &n, |b, _| {
            b.iter(|| wire::ticks_frame(refs.iter().copied(), bytes))
        });
        g.bench_with_input(BenchmarkId::new("deflate_compressed", n), &n, |b, _| {
            b.iter(|| {
                let text = wire::ticks_frame(refs.iter().copied(), bytes);
                codec::deflate::message([codec::deflate::piece(text.as_bytes()).as_slice()], 0)
            })
        });
        g.bench_with_input(BenchmarkId::new("deflate_same_batch", n), &n, |b, _| {
            b.iter(|| wire::deflated_frame(std::hint::black_box(&refs), bytes))
        });
    }
    g.finish();
}

criterion_group!(
    benches, codec, mapped, fanout, history, resume, outbox, registry, interest, frames
);
criterion_main!(benches);
