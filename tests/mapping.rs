//! A company's own feed: records in the Confluent wire format with writer
//! schemas in a Schema Registry, or JSON, in their own shape, read through
//! a `--mapping`. The registry here is a small in-test server implementing
//! the one call the edge makes (`GET /schemas/ids/{id}`), so the test can
//! take it down; `tests/real_kafka.rs` runs the same path against a real
//! registry with records written by Python's confluent-kafka.

mod support;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use apache_avro::{to_avro_datum, types::Value as Avro, Decimal, Schema};
use support::*;
use warp::Filter;

/// A company's quote, version 1: nested instrument, a decimal price, a
/// millisecond event time, a float size, no seq.
const V1: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
    {"name":"instrument","type":{"type":"record","name":"Instrument","fields":[{"name":"ticker","type":"string"}]}},
    {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
    {"name":"qty","type":"float"},
    {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"desk","type":"string","default":"none"}]}"#;
/// Version 2 adds an optional `cond`.
const V2: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
    {"name":"instrument","type":{"type":"record","name":"Instrument","fields":[{"name":"ticker","type":"string"}]}},
    {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
    {"name":"qty","type":"float"},
    {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"desk","type":"string","default":"none"},
    {"name":"cond","type":["null","string"],"default":null}]}"#;
/// Version 3 removes `desk` (it had a default) and widens `qty` to double.
const V3: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
    {"name":"instrument","type":{"type":"record","name":"Instrument","fields":[{"name":"ticker","type":"string"}]}},
    {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
    {"name":"qty","type":"double"},
    {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"cond","type":["null","string"],"default":null}]}"#;

/// A schema whose `px` is not a number: the mapping does not fit it.
const NO_PRICE: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
    {"name":"instrument","type":{"type":"record","name":"Instrument","fields":[{"name":"ticker","type":"string"}]}},
    {"name":"px","type":{"type":"array","items":"int"}}]}"#;

fn mapping(topic: &str) -> String {
    format!("{topic}:format=avro,symbol=instrument.ticker,price=px,size=qty,ts=event_time,forward=desk|cond")
}

/// The registry's calls the edge makes (`GET /schemas/ids/{id}`, and for
/// schema references `GET /subjects/{subject}/versions/{version}`), with a
/// switch to make it answer 503 and an optional basic-auth password.
#[derive(Clone)]
struct TestRegistry {
    addr: SocketAddr,
    schemas: Arc<Mutex<HashMap<u32, serde_json::Value>>>,
    versions: Arc<Mutex<HashMap<(String, i64), serde_json::Value>>>,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl TestRegistry {
    async fn start(auth: Option<&str>) -> TestRegistry {
        let schemas: Arc<Mutex<HashMap<u32, serde_json::Value>>> = Arc::default();
        let versions: Arc<Mutex<HashMap<(String, i64), serde_json::Value>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let want = auth.map(|a| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        });
        let (d, c) = (down.clone(), calls.clone());
        // The answer to a request for `found`, as the registry gives it.
        let answer = move |authorization: Option<String>, found: Option<serde_json::Value>| {
            c.fetch_add(1, Ordering::SeqCst);
            let reply = |code: u16, body: serde_json::Value| {
                warp::reply::with_status(
                    warp::reply::json(&body),
                    warp::http::StatusCode::from_u16(code).unwrap(),
                )
            };
            if want.is_some() && authorization != want {
                return reply(
                    401,
                    serde_json::json!({"error_code": 401, "message": "Unauthorized"}),
                );
            }
            if d.load(Ordering::SeqCst) {
                return reply(
                    503,
                    serde_json::json!({"error_code": 50003, "message": "down"}),
                );
            }
            match found {
                Some(a) => reply(200, a),
                None => reply(
                    404,
                    serde_json::json!({"error_code": 40403, "message": "Schema not found"}),
                ),
            }
        };
        let (s, a) = (schemas.clone(), answer.clone());
        let by_id = warp::path!("schemas" / "ids" / u32)
            .and(warp::header::optional::<String>("authorization"))
            .map(move |id: u32, authorization| {
                a(authorization, s.lock().unwrap().get(&id).cloned())
            });
        let v = versions.clone();
        let by_version = warp::path!("subjects" / String / "versions" / i64)
            .and(warp::header::optional::<String>("authorization"))
            .map(move |subject: String, version: i64, authorization| {
                let subject = percent_encoding::percent_decode_str(&subject)
                    .decode_utf8()
                    .unwrap()
                    .into_owned();
                answer(
                    authorization,
                    v.lock().unwrap().get(&(subject, version)).cloned(),
                )
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(by_id.or(by_version)).incoming(listener).run());
        TestRegistry {
            addr,
            schemas,
            versions,
            down,
            calls,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn register(&self, id: u32, schema: &str) {
        self.register_answer(id, serde_json::json!({ "schema": schema }));
    }

    /// `answer` is what `GET /schemas/ids/{id}` returns.
    fn register_answer(&self, id: u32, answer: serde_json::Value) {
        self.schemas.lock().unwrap().insert(id, answer);
    }

    /// `answer` is what `GET /subjects/{subject}/versions/{version}` returns.
    fn register_version(&self, subject: &str, version: i64, answer: serde_json::Value) {
        self.versions
            .lock()
            .unwrap()
            .insert((subject.to_string(), version), answer);
    }
}

/// A record in the Confluent wire format.
fn confluent(id: u32, schema: &str, ticker: &str, px: i64, extra: &[(&str, Avro)]) -> Vec<u8> {
    let schema = Schema::parse_str(schema).unwrap();
    let Schema::Record(r) = &schema else { panic!() };
    let mut fields = vec![
        (
            "instrument".to_string(),
            Avro::Record(vec![("ticker".into(), Avro::String(ticker.into()))]),
        ),
        (
            "px".into(),
            Avro::Decimal(Decimal::from(
                num_bigint::BigInt::from(px).to_signed_bytes_be(),
            )),
        ),
    ];
    let qty = if r
        .fields
        .iter()
        .any(|f| f.name == "qty" && f.schema == Schema::Double)
    {
        Avro::Double(0.1)
    } else {
        Avro::Float(100.0)
    };
    fields.push(("qty".into(), qty));
    fields.push((
        "event_time".into(),
        Avro::TimestampMillis(1_764_770_000_000),
    ));
    for (k, v) in extra {
        fields.push((k.to_string(), v.clone()));
    }
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(to_avro_datum(&schema, Avro::Record(fields)).unwrap());
    out
}

fn cond(c: Option<&str>) -> Avro {
    match c {
        Some(c) => Avro::Union(1, Box::new(Avro::String(c.into()))),
        None => Avro::Union(0, Box::new(Avro::Null)),
    }
}

fn decode_errors(reason: &str) -> String {
    format!("tickfan_decode_errors_total{{reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_versions_interleaved_on_one_partition_all_arrive_with_exact_decimals() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let registry = TestRegistry::start(Some("tickfan:s3cret")).await;
    for (id, s) in [(1, V1), (2, V2), (3, V3), (4, NO_PRICE)] {
        registry.register(id, s);
    }
    let password = std::env::temp_dir().join(format!("tickfan-registry-{}", rand::random::<u64>()));
    std::fs::write(&password, "s3cret\n").unwrap();
    let url = registry.url();
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.mappings = vec![mapping(&topic).parse().unwrap()];
        c.ingest.registry.schema_registry = Some(url);
        c.ingest.registry.schema_registry_user = Some("tickfan".into());
        c.ingest.registry.schema_registry_password_file = Some(password);
    })
    .await;
    edge.ready().await;
    let mut c = edge.subscribed_on_partition_0(&["ACME"]).await;

    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    let desk = ("desk", Avro::String("eq".into()));
    let records = [
        confluent(1, V1, "ACME", 1_892_500, std::slice::from_ref(&desk)),
        confluent(
            2,
            V2,
            "ACME",
            1_892_600,
            &[desk.clone(), ("cond", cond(Some("@F")))],
        ),
        confluent(
            3,
            V3,
            "ACME",
            12_345_678_901_234_567,
            &[("cond", cond(None))],
        ),
        confluent(1, V1, "ACME", 1, std::slice::from_ref(&desk)),
        confluent(3, V3, "ACME", -50_000, &[("cond", cond(Some("T")))]),
        confluent(2, V2, "ACME", 1_000_000, &[desk, ("cond", cond(None))]),
    ];
    for (i, r) in records.iter().enumerate() {
        feed.raw("ACME", r).await;
        if i == 2 {
            // A writer schema the mapping cannot be resolved against.
            let schema = Schema::parse_str(NO_PRICE).unwrap();
            let mut bad = vec![0, 0, 0, 0, 4];
            bad.extend(
                to_avro_datum(
                    &schema,
                    Avro::Record(vec![
                        (
                            "instrument".into(),
                            Avro::Record(vec![("ticker".into(), Avro::String("ACME".into()))]),
                        ),
                        ("px".into(), Avro::Array(vec![Avro::Int(1)])),
                    ]),
                )
                .unwrap(),
            );
            feed.raw("ACME", &bad).await;
        }
    }
    feed.flush().await;
    c.read_until("six ticks", |f| {
        f.iter().filter(|t| matches!(t, Frame::Tick { .. })).count() >= 6
    })
    .await;
    let seqs: Vec<i64> = c.ticks("ACME").iter().map(|t| t.0).collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 5, 6, 7],
        "offset + 1, in order; offset 3 did not fit"
    );
    let text = c.texts.join("\n");
    for price in [
        r#""price":189.2500"#,
        r#""price":189.2600"#,
        r#""price":1234567890123.4567"#,
        r#""price":0.0001"#,
        r#""price":-5.0000"#,
        r#""price":100.0000"#,
    ] {
        assert!(text.contains(price), "{price} in {text}");
    }
    let ticks: Vec<&serde_json::Value> = c.tick_values(None);
    assert_eq!(ticks[0]["attrs"]["desk"], "eq");
    assert_eq!(ticks[1]["attrs"]["cond"], "@F");
    assert!(ticks[2].get("attrs").is_none(), "v3: no desk, null cond");
    assert_eq!(ticks[2]["size"], 0.1, "v3 widened qty to double");
    assert_eq!(ticks[0]["ts"], 1_764_770_000_000_000i64);
    assert_eq!(c.gaps("ACME"), vec![], "offset seqs are not gaps");
    edge.metric_reaches("tickfan_ticks_consumed_total", 6.0)
        .await;
    edge.metric_reaches(&decode_errors("unresolvable"), 1.0)
        .await;
    edge.metric_reaches("tickfan_schema_fetches_total{result=\"ok\"}", 4.0)
        .await;
    assert_eq!(
        registry.calls.load(Ordering::SeqCst),
        4,
        "each schema fetched once"
    );
    edge.stop().await;
}

/// A venue, as a shared subject's version 1 (not the one referenced) and 2.
const VENUE_V1: &str =
    r#"{"type":"enum","name":"Venue","namespace":"com.example.ref","symbols":["XLON"]}"#;
const VENUE_V2: &str =
    r#"{"type":"enum","name":"Venue","namespace":"com.example.ref","symbols":["XNAS","XNYS"]}"#;
/// An instrument importing its venue from another subject.
const INSTRUMENT_REF: &str = r#"{"type":"record","name":"Instrument","namespace":"com.example.ref","fields":[
    {"name":"ticker","type":"string"},{"name":"venue","type":"com.example.ref.Venue"}]}"#;
/// A quote importing the instrument (and naming the venue it uses too).
const QUOTE_REF: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
    {"name":"instrument","type":"com.example.ref.Instrument"},
    {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
    {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"legs","type":{"type":"array","items":"com.example.ref.Instrument"}}]}"#;
/// The same quote with its imports written out: what its producer encodes with.
const QUOTE_WHOLE: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
    {"name":"instrument","type":{"type":"record","name":"Instrument","namespace":"com.example.ref","fields":[
        {"name":"ticker","type":"string"},
        {"name":"venue","type":{"type":"enum","name":"Venue","symbols":["XNAS","XNYS"]}}]}},
    {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
    {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"legs","type":{"type":"array","items":"com.example.ref.Instrument"}}]}"#;

/// A writer schema importing named types from other subjects (Confluent
/// schema references; the instrument imports the venue in turn): the edge
/// fetches each referenced version once, and reads the records as if the
/// schema had been written out whole. A schema whose import the registry
/// does not have is `unknown_schema`, and the partition goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_with_references_is_read_through_the_subjects_it_imports() {
    use serde_json::json;
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let registry = TestRegistry::start(None).await;
    let venue = "shared types/venue";
    registry.register_version(
        venue,
        1,
        json!({"subject": venue, "version": 1, "id": 21, "schema": VENUE_V1}),
    );
    registry.register_version(
        venue,
        2,
        json!({"subject": venue, "version": 2, "id": 22, "schema": VENUE_V2}),
    );
    registry.register_version(
        "instrument-value",
        3,
        json!({"subject": "instrument-value", "version": 3, "id": 23, "schema": INSTRUMENT_REF,
               "references": [{"name": "com.example.ref.Venue", "subject": venue, "version": 2}]}),
    );
    registry.register_answer(
        10,
        json!({"schema": QUOTE_REF, "references": [
            {"name": "com.example.ref.Instrument", "subject": "instrument-value", "version": 3},
            {"name": "com.example.ref.Venue", "subject": venue, "version": 2}]}),
    );
    registry.register_answer(
        11,
        json!({"schema": QUOTE_REF, "references": [
            {"name": "com.example.ref.Instrument", "subject": "instrument-value", "version": 4}]}),
    );
    // Past the bounds: 65 imports (64 are fetched, then the schema is
    // refused), and an import whose answer passes 1 MiB.
    let many: Vec<serde_json::Value> = (0..65)
        .map(|i| {
            let subject = format!("many-{i}");
            let schema = format!(r#"{{"type":"enum","name":"E{i}","symbols":["A"]}}"#);
            registry.register_version(&subject, 1, json!({"schema": schema}));
            json!({"name": format!("E{i}"), "subject": subject, "version": 1})
        })
        .collect();
    registry.register_answer(12, json!({"schema": QUOTE_REF, "references": many}));
    let huge = format!(
        r#"{{"type":"enum","name":"Venue","namespace":"com.example.ref","doc":"{}","symbols":["XNAS","XNYS"]}}"#,
        "x".repeat(1 << 20)
    );
    registry.register_version("huge", 1, json!({"schema": huge}));
    registry.register_answer(
        13,
        json!({"schema": QUOTE_REF, "references": [
            {"name": "com.example.ref.Venue", "subject": "huge", "version": 1}]}),
    );
    let url = registry.url();
    let spec = format!("{topic}:format=avro,symbol=instrument.ticker,price=px,venue=instrument.venue,ts=event_time,forward=legs");
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.mappings = vec![spec.parse().unwrap()];
        c.ingest.registry.schema_registry = Some(url);
    })
    .await;
    edge.ready().await;
    let mut c = edge.subscribed_on_partition_0(&["ACME"]).await;

    let whole = Schema::parse_str(QUOTE_WHOLE).unwrap();
    let instrument = |t: &str, v: u32| {
        Avro::Record(vec![
            ("ticker".into(), Avro::String(t.into())),
            (
                "venue".into(),
                Avro::Enum(v, ["XNAS", "XNYS"][v as usize].into()),
            ),
        ])
    };
    let quote = |id: u32, px: i64, venue: u32| {
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        let value = Avro::Record(vec![
            ("instrument".into(), instrument("ACME", venue)),
            (
                "px".into(),
                Avro::Decimal(Decimal::from(
                    num_bigint::BigInt::from(px).to_signed_bytes_be(),
                )),
            ),
            (
                "event_time".into(),
                Avro::TimestampMillis(1_764_770_000_000),
            ),
            ("legs".into(), Avro::Array(vec![instrument("LEG", 0)])),
        ]);
        out.extend(to_avro_datum(&whole, value).unwrap());
        out
    };
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.raw("ACME", &quote(10, 1_892_500, 1)).await;
    feed.raw("ACME", &quote(11, 1, 0)).await;
    feed.raw("ACME", &quote(12, 2, 0)).await;
    feed.raw("ACME", &quote(13, 3, 0)).await;
    feed.raw("ACME", &quote(10, 1_892_600, 0)).await;
    feed.flush().await;
    c.read_until("two ticks", |f| {
        f.iter().filter(|t| matches!(t, Frame::Tick { .. })).count() >= 2
    })
    .await;
    let seqs: Vec<i64> = c.ticks("ACME").iter().map(|t| t.0).collect();
    assert_eq!(
        seqs,
        [1, 5],
        "offsets 1 to 3: an import the registry lacks, too many imports, too large"
    );
    let ticks: Vec<&serde_json::Value> = c.tick_values(None);
    assert_eq!(
        ticks[0]["venue"], "XNYS",
        "the venue of the referenced version 2"
    );
    assert_eq!(ticks[1]["venue"], "XNAS");
    let text = c.texts.join("\n");
    assert!(text.contains(r#""price":189.2500"#), "{text}");
    assert!(text.contains(r#""price":189.2600"#), "{text}");
    assert_eq!(
        ticks[0]["attrs"]["legs"], r#"[{"ticker":"LEG","venue":"XNAS"}]"#,
        "a later use of an imported type"
    );
    edge.metric_reaches(&decode_errors("unknown_schema"), 3.0)
        .await;
    edge.metric_reaches("tickfan_schema_fetches_total{result=\"bad_answer\"}", 2.0)
        .await;
    edge.metric_reaches("tickfan_schema_fetches_total{result=\"ok\"}", 1.0)
        .await;
    edge.metric_reaches("tickfan_schema_fetches_total{result=\"not_found\"}", 1.0)
        .await;
    assert_eq!(
        registry.calls.load(Ordering::SeqCst),
        5 + 65 + 2,
        "id 10, its two imports (the venue once), id 11 and its missing import; \
         id 12 and 64 of its 65 imports; id 13 and its huge import"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_holds_only_the_partition_that_needs_a_schema_and_loses_nothing() {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let syms = distinct_partition_symbols("OUT", 2, 2);
    let (a, b) = (syms[0].0.as_str(), syms[1].0.as_str());
    let registry = TestRegistry::start(None).await;
    registry.register(1, V1);
    let url = registry.url();
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.mappings = vec![mapping(&topic).parse().unwrap()];
        c.ingest.registry.schema_registry = Some(url);
    })
    .await;
    edge.ready().await;
    let mut c = Client::connect(edge.addr).await;
    c.subscribe(&[a, b]).await;
    eventually("both partitions assigned", || async {
        (edge.partitions().await.len() == 2).then_some(())
    })
    .await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    let desk = || ("desk", Avro::String("x".into()));
    feed.raw(a, &confluent(1, V1, a, 1, &[desk()])).await;
    feed.raw(b, &confluent(1, V1, b, 1, &[desk()])).await;
    feed.flush().await;
    c.read_until("one tick of each", |f| {
        [a, b].iter().all(|s| {
            f.iter()
                .any(|t| matches!(t, Frame::Tick { symbol, .. } if symbol == s))
        })
    })
    .await;

    // The registry goes down; A's producer moves to a schema the edge has
    // not seen, B's stays on the cached one.
    registry.register(2, V2);
    registry.down.store(true, Ordering::SeqCst);
    for px in 2..=4 {
        feed.raw(a, &confluent(2, V2, a, px, &[desk(), ("cond", cond(None))]))
            .await;
    }
    for px in 2..=4 {
        feed.raw(b, &confluent(1, V1, b, px, &[desk()])).await;
    }
    feed.flush().await;
    c.read_until("B goes on", |f| {
        f.iter()
            .filter(|t| matches!(t, Frame::Tick { symbol, .. } if symbol == b))
            .count()
            == 4
    })
    .await;
    eventually("A's partition waits, fetches retried", || async {
        (edge.metric("tickfan_partitions_awaiting_schema").await == 1.0
            && edge
                .metric("tickfan_schema_fetches_total{result=\"server_error\"}")
                .await
                >= 2.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        c.ticks(a).len(),
        1,
        "A holds while its schema cannot be fetched"
    );

    // A record of an id the registry does not have: skipped, counted.
    registry.down.store(false, Ordering::SeqCst);
    feed.raw(a, &confluent(99, V1, a, 5, &[desk()])).await;
    feed.raw(a, &confluent(1, V1, a, 6, &[desk()])).await;
    feed.flush().await;
    c.read_until("A's held and later ticks", |f| {
        f.iter()
            .filter(|t| matches!(t, Frame::Tick { symbol, .. } if symbol == a))
            .count()
            == 5
    })
    .await;
    let a_seqs: Vec<i64> = c.ticks(a).iter().map(|t| t.0).collect();
    assert!(
        a_seqs.windows(2).all(|w| w[0] < w[1]),
        "in order: {a_seqs:?}"
    );
    assert_eq!(
        a_seqs.len(),
        5,
        "1, the three held, and 6; not 99's: {a_seqs:?}"
    );
    assert_eq!(c.gaps(a), vec![]);
    eventually("nothing waits", || async {
        (edge.metric("tickfan_partitions_awaiting_schema").await == 0.0).then_some(())
    })
    .await;
    edge.metric_reaches(&decode_errors("unknown_schema"), 1.0)
        .await;
    edge.metric_reaches("tickfan_schema_fetches_total{result=\"not_found\"}", 1.0)
        .await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_in_their_own_shape() {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let spec = format!(
        "{topic}:format=json,symbol=key,price=quote.mid,bid=quote.bid,ask=quote.ask,ts=time:iso8601,forward=src"
    );
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.mappings = vec![spec.parse().unwrap()];
    })
    .await;
    edge.ready().await;
    let mut c = Client::connect(edge.addr).await;
    c.subscribe(&["EUR/USD"]).await;
    eventually("partition assigned", || async {
        (edge.partitions().await == vec![0]).then_some(())
    })
    .await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.raw("EUR/USD", br#"{"quote":{"mid":"1.08455","bid":1.0845,"ask":1.0846},"time":"2026-12-03T10:15:30.250+01:00","src":"ebs"}"#).await;
    feed.raw(
        "EUR/USD",
        br#"{"quote":{"bid":1.0845},"time":"2026-12-03T10:15:31Z"}"#,
    )
    .await;
    feed.raw("EUR/USD", b"not json").await;
    feed.raw(
        "EUR/USD",
        br#"{"quote":{"mid":1.0846},"time":"2026-12-03T10:15:32Z"}"#,
    )
    .await;
    feed.flush().await;
    c.read_until("two ticks", |f| {
        f.iter().filter(|t| matches!(t, Frame::Tick { .. })).count() >= 2
    })
    .await;
    assert!(c.texts[..].join("").contains(r#""price":1.08455"#));
    let ticks: Vec<&serde_json::Value> = c.tick_values(None);
    assert_eq!(ticks[0]["ts"], 1_796_289_330_250_000i64);
    assert_eq!(ticks[0]["attrs"]["src"], "ebs");
    assert_eq!(ticks[1]["seq"], 4, "offset 3 + 1");
    edge.metric_reaches(&decode_errors("missing_field"), 1.0)
        .await;
    edge.metric_reaches(&decode_errors("not_json"), 1.0).await;
    edge.stop().await;
}

/// `tickfan demo --feed confluent`: the embedded cluster, a feed of a
/// company's own quote record in the Confluent wire format, an in-process
/// registry, and the mapping, with no set-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_a_confluent_feed_through_its_mapping() {
    let (mut demo, addr) = spawn_demo(
        &[
            "--feed",
            "confluent",
            "--rate",
            "200",
            "--symbols",
            "AAPL,MSFT",
        ],
        std::process::Stdio::piped(),
    )
    .await;
    let mut c = Client::connect(addr).await;
    c.subscribe(&["AAPL"]).await;
    c.read_until("five AAPL ticks", |f| {
        f.iter()
            .filter(|t| matches!(t, Frame::Tick { symbol, .. } if symbol == "AAPL"))
            .count()
            >= 5
    })
    .await;
    let ticks: Vec<&serde_json::Value> = c.tick_values(None);
    for t in &ticks {
        assert!(
            t["attrs"]["trade_id"].as_str().unwrap().starts_with('T'),
            "{t}"
        );
        assert!(t["bid"].is_number() && t["ask"].is_number(), "{t}");
    }
    // decimal(18,4) prices arrive as their decimal text: four places.
    let text = c.texts.join("\n");
    let four_places = text
        .match_indices(r#""price":"#)
        .filter(|(i, m)| {
            let rest = &text[i + m.len()..];
            let num: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            num.split_once('.').is_some_and(|(_, frac)| frac.len() == 4)
        })
        .count();
    assert!(four_places >= 5, "prices as decimal(18,4) text: {text}");
    assert_eq!(c.gaps("AAPL"), vec![], "offset seqs are not gaps");
    let seqs: Vec<i64> = c.ticks("AAPL").iter().map(|t| t.0).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("tickfan_schema_fetches_total{result=\"ok\"} 1"),
        "the schema fetched once from the in-process registry"
    );
    demo.start_kill().unwrap();
    let _ = demo.wait().await;
}

/// A CA and a certificate for 127.0.0.1 it signs, made with the openssl
/// command line: (CA PEM path, server certificate PEM, server key PEM).
fn tls_files(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=tickfan test registry CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        std::fs::read(dir.join("server.pem")).unwrap(),
        std::fs::read(dir.join("server.key")).unwrap(),
    )
}

/// A registry over HTTPS that wants basic auth `tickfan:s3cret`, serving
/// `V1` as id 1: a plain blocking server (one thread per connection).
fn https_registry(cert: &[u8], key: &[u8]) -> SocketAddr {
    use std::io::{Read, Write};
    let identity = native_tls::Identity::from_pkcs8(cert, key).unwrap();
    let acceptor = Arc::new(native_tls::TlsAcceptor::new(identity).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let want = {
        use base64::Engine;
        format!(
            "authorization: basic {}",
            base64::engine::general_purpose::STANDARD.encode("tickfan:s3cret")
        )
        .to_lowercase()
    };
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (acceptor, want) = (acceptor.clone(), want.clone());
            std::thread::spawn(move || {
                // A client that does not trust the certificate fails here.
                let Ok(mut tls) = acceptor.accept(stream) else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).to_lowercase();
                let (status, body) = if !req.lines().any(|l| l.trim() == want) {
                    (
                        "401 Unauthorized",
                        r#"{"error_code":401,"message":"Unauthorized"}"#.to_string(),
                    )
                } else if req.starts_with("get /schemas/ids/1 ") {
                    ("200 OK", serde_json::json!({ "schema": V1 }).to_string())
                } else {
                    (
                        "404 Not Found",
                        r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
                    )
                };
                let _ = write!(
                    tls,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

/// `https://` registry: verified against `--schema-registry-ca-file`, the
/// password from `TICKFAN_SCHEMA_REGISTRY_PASSWORD`; an edge that does not
/// trust the registry's CA does not read its schemas (and holds only the
/// partition that needs one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_registry_is_trusted_only_through_its_ca_and_the_password_comes_from_the_environment(
) {
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let dir = std::env::temp_dir().join(format!("tickfan-registry-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = tls_files(&dir);
    let url = format!("https://{}", https_registry(&cert, &key));
    let spec = mapping(&topic);
    let ca_path = ca.display().to_string();
    let trusting = EdgeProcess::spawn_env(
        &broker.bootstrap(),
        &topic,
        &[
            "--mapping",
            &spec,
            "--schema-registry",
            &url,
            "--schema-registry-ca-file",
            &ca_path,
            "--schema-registry-user",
            "tickfan",
        ],
        &[("TICKFAN_SCHEMA_REGISTRY_PASSWORD", "s3cret")],
    )
    .await;
    let (u, s) = (url.clone(), spec.clone());
    let distrusting = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.ingest.mappings = vec![s.parse().unwrap()];
        c.ingest.registry.schema_registry = Some(u);
        c.ingest.registry.schema_registry_user = Some("tickfan".into());
        c.ingest.registry.schema_registry_password_file = Some(dir.join("ca.key"));
    })
    .await;
    distrusting.ready().await;
    let mut a = Client::connect(trusting.addr).await;
    let mut b = Client::connect(distrusting.addr).await;
    a.subscribe(&["ACME"]).await;
    b.subscribe(&["ACME"]).await;
    eventually("partition assigned on both", || async {
        (metric_at(trusting.addr, "tickfan_assigned_partitions").await == 1.0
            && distrusting.partitions().await == vec![0])
        .then_some(())
    })
    .await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.raw(
        "ACME",
        &confluent(
            1,
            V1,
            "ACME",
            1_892_500,
            &[("desk", Avro::String("eq".into()))],
        ),
    )
    .await;
    feed.flush().await;
    a.read_until("the tick, through the trusted registry", |f| {
        f.iter().any(|t| matches!(t, Frame::Tick { .. }))
    })
    .await;
    assert!(a.texts.join("").contains(r#""price":189.2500"#));
    eventually(
        "the other edge cannot verify the registry and holds the partition",
        || async {
            (distrusting
                .metric("tickfan_schema_fetches_total{result=\"unreachable\"}")
                .await
                >= 1.0
                && distrusting
                    .metric("tickfan_partitions_awaiting_schema")
                    .await
                    == 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        metric_at(
            trusting.addr,
            "tickfan_schema_fetches_total{result=\"unreachable\"}"
        )
        .await,
        0.0
    );
    assert!(b.ticks("ACME").is_empty(), "nothing without the schema");
    distrusting.stop().await;
}
