//! A company's feed as it really is written: Avro records in the Confluent
//! wire format, produced by Python's confluent-kafka `AvroSerializer` (not
//! tickfan code), writer schemas registered in a real Schema Registry
//! (Apicurio Registry's Confluent-compatible API, basic auth), three schema
//! versions interleaved on one partition, read by an edge through a
//! `--mapping`.
//!
//! Needs a real broker and registry: `scripts/kafka.sh up`,
//! `scripts/schema-registry.sh up`, `eval "$(scripts/schema-registry.sh env)"`,
//! then `TICKFAN_TEST_BROKERS=127.0.0.1:9092 cargo test --test registry`
//! (`test = false` in Cargo.toml; `.ci/run` does all of it).

mod support;

use std::io::Write;

use support::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: scripts/schema-registry.sh up, then eval \"$(scripts/schema-registry.sh env)\"")
    })
}

const INSTRUMENT: &str = r#"{"name":"instrument","type":{"type":"record","name":"Instrument","fields":[{"name":"ticker","type":"string"}]}}"#;
const PX: &str =
    r#"{"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}}"#;
const TIME: &str =
    r#"{"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}}"#;

/// An edge reading `topic` through the mapping `fields` (after `TOPIC:format=avro,`)
/// with the registry that wants basic auth; and a temporary directory (holding
/// the password file) for the test's own files.
async fn edge_on_the_registry(
    broker: &Broker,
    topic: &str,
    fields: &str,
) -> (Edge, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("tickfan-registry-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, env("TICKFAN_TEST_REGISTRY_PASSWORD")).unwrap();
    let spec = format!("{topic}:format=avro,{fields}");
    let edge = Edge::spawn(&broker.bootstrap(), topic, |c| {
        c.ingest.mappings = vec![spec.parse().unwrap()];
        c.ingest.registry.schema_registry = Some(env("TICKFAN_TEST_REGISTRY_AUTH"));
        c.ingest.registry.schema_registry_user = Some(env("TICKFAN_TEST_REGISTRY_USER"));
        c.ingest.registry.schema_registry_password_file = Some(password);
    })
    .await;
    edge.ready().await;
    (edge, dir)
}

/// Runs scripts/confluent_produce.py (Python's confluent-kafka, not tickfan
/// code) against `broker`'s `topic` and the registry that wants basic auth,
/// with `schemas` (its `--schema` and `--reference` arguments), `input` on
/// its stdin; panics with its output if it fails.
async fn confluent_produce(broker: &Broker, topic: &str, schemas: Vec<String>, input: String) {
    let mut args = vec![
        env("TICKFAN_TEST_CONFLUENT_PRODUCE"),
        "--brokers".into(),
        broker.bootstrap(),
        "--registry".into(),
        env("TICKFAN_TEST_REGISTRY_AUTH"),
        "--user".into(),
        env("TICKFAN_TEST_REGISTRY_USER"),
        "--password".into(),
        env("TICKFAN_TEST_REGISTRY_PASSWORD"),
        "--topic".into(),
        topic.to_string(),
    ];
    args.extend(schemas);
    let python = env("TICKFAN_TEST_PYTHON");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(python)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "confluent_produce.py: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn schema(fields: &[&str]) -> String {
    format!(
        r#"{{"type":"record","name":"Quote","namespace":"com.example","fields":[{}]}}"#,
        fields.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_serializer_records_of_three_schema_versions_arrive_through_a_real_registry() {
    let broker = Broker::real();
    let topic = broker.topic(1).await;
    let (edge, dir) = edge_on_the_registry(
        &broker,
        &topic,
        "symbol=instrument.ticker,price=px,size=qty,ts=event_time,forward=desk|cond",
    )
    .await;
    let mut c = edge.subscribed_on_partition_0(&["ACME"]).await;

    // v1; v2 adds an optional `cond`; v3 removes `desk` (it had a default)
    // and widens `qty` from float to double.
    let desk = r#"{"name":"desk","type":"string","default":"none"}"#;
    let cond = r#"{"name":"cond","type":["null","string"],"default":null}"#;
    let versions = [
        schema(&[
            INSTRUMENT,
            PX,
            r#"{"name":"qty","type":"float"}"#,
            TIME,
            desk,
        ]),
        schema(&[
            INSTRUMENT,
            PX,
            r#"{"name":"qty","type":"float"}"#,
            TIME,
            desk,
            cond,
        ]),
        schema(&[
            INSTRUMENT,
            PX,
            r#"{"name":"qty","type":"double"}"#,
            TIME,
            cond,
        ]),
    ];
    let mut args = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let f = dir.join(format!("v{}.avsc", i + 1));
        std::fs::write(&f, v).unwrap();
        args.extend(["--schema".into(), f.display().to_string()]);
    }
    let records = [
        r#"{"_schema":0,"_key":"ACME","instrument":{"ticker":"ACME"},"px":"189.2500","qty":100.5,"event_time":1764770000000,"desk":"eq"}"#,
        r#"{"_schema":1,"_key":"ACME","instrument":{"ticker":"ACME"},"px":"189.2600","qty":1,"event_time":1764770000001,"desk":"eq","cond":"@F"}"#,
        r#"{"_schema":2,"_key":"ACME","instrument":{"ticker":"ACME"},"px":"1234567890123.4567","qty":0.1,"event_time":1764770000002,"cond":null}"#,
        r#"{"_schema":0,"_key":"ACME","instrument":{"ticker":"ACME"},"px":"0.0001","qty":2,"event_time":1764770000003,"desk":"fx"}"#,
        r#"{"_schema":2,"_key":"ACME","instrument":{"ticker":"ACME"},"px":"-5","qty":3,"event_time":1764770000004,"cond":"T"}"#,
        r#"{"_schema":1,"_key":"ACME","instrument":{"ticker":"ACME"},"px":"100","qty":4,"event_time":1764770000005,"desk":"eq","cond":null}"#,
    ];
    confluent_produce(&broker, &topic, args, records.join("\n")).await;

    c.read_until("six ticks", |f| {
        f.iter().filter(|t| matches!(t, Frame::Tick { .. })).count() >= 6
    })
    .await;
    let seqs: Vec<i64> = c.ticks("ACME").iter().map(|t| t.0).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>(), "offset + 1, in order");
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
    assert_eq!(ticks[0]["size"], 100.5);
    assert_eq!(ticks[1]["attrs"]["cond"], "@F");
    assert_eq!(ticks[2]["size"], 0.1, "v3's double");
    assert!(ticks[2].get("attrs").is_none(), "v3: no desk, null cond");
    assert_eq!(ticks[4]["attrs"]["cond"], "T");
    assert_eq!(ticks[5]["ts"], 1_764_770_000_005_000i64);
    assert_eq!(c.gaps("ACME"), vec![]);
    edge.metric_reaches("tickfan_ticks_consumed_total", 6.0)
        .await;
    edge.metric_reaches("tickfan_schema_fetches_total{result=\"ok\"}", 3.0)
        .await;
    edge.stop().await;
}

/// Confluent schema references as a producer really registers them: the
/// quote imports its instrument from another subject, which imports its
/// venue from a third (whose name needs escaping in a URL); Python's
/// AvroSerializer resolves them through the registry, and so does the edge
/// (`GET /subjects/{subject}/versions/{version}`, with the registry's basic
/// auth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_importing_types_from_other_subjects_is_read_through_a_real_registry() {
    let broker = Broker::real();
    let topic = broker.topic(1).await;
    let (edge, dir) = edge_on_the_registry(
        &broker,
        &topic,
        "symbol=instrument.ticker,price=px,venue=instrument.venue,ts=event_time,forward=legs",
    )
    .await;
    let mut c = edge.subscribed_on_partition_0(&["ACME"]).await;

    let files = [
        (
            "venue.avsc",
            r#"{"type":"enum","name":"Venue","namespace":"com.example.ref","symbols":["XNAS","XNYS"]}"#,
        ),
        (
            "instrument.avsc",
            r#"{"type":"record","name":"Instrument","namespace":"com.example.ref","fields":[
            {"name":"ticker","type":"string"},{"name":"venue","type":"com.example.ref.Venue"}]}"#,
        ),
        (
            "quote.avsc",
            r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
            {"name":"instrument","type":"com.example.ref.Instrument"},
            {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
            {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"legs","type":{"type":"array","items":"com.example.ref.Instrument"}}]}"#,
        ),
    ];
    let path = |name: &str| dir.join(name).display().to_string();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let args = vec![
        "--reference".into(),
        format!(
            "com.example.ref.Venue={topic} shared/venue={}",
            path("venue.avsc")
        ),
        "--reference".into(),
        format!(
            "com.example.ref.Instrument={topic}-instrument={}",
            path("instrument.avsc")
        ),
        "--schema".into(),
        path("quote.avsc"),
    ];
    let records = [
        r#"{"_key":"ACME","instrument":{"ticker":"ACME","venue":"XNYS"},"px":"189.2500","event_time":1764770000000,"legs":[{"ticker":"LEG","venue":"XNAS"}]}"#,
        r#"{"_key":"ACME","instrument":{"ticker":"ACME","venue":"XNAS"},"px":"189.2600","event_time":1764770000001,"legs":[]}"#,
    ];
    confluent_produce(&broker, &topic, args, records.join("\n")).await;

    c.read_until("two ticks", |f| {
        f.iter().filter(|t| matches!(t, Frame::Tick { .. })).count() >= 2
    })
    .await;
    let seqs: Vec<i64> = c.ticks("ACME").iter().map(|t| t.0).collect();
    assert_eq!(seqs, [1, 2], "offset + 1: neither record skipped");
    let ticks: Vec<&serde_json::Value> = c.tick_values(None);
    assert_eq!(ticks[0]["venue"], "XNYS");
    assert_eq!(ticks[1]["venue"], "XNAS");
    assert_eq!(
        ticks[0]["attrs"]["legs"],
        r#"[{"ticker":"LEG","venue":"XNAS"}]"#
    );
    let text = c.texts.join("\n");
    assert!(text.contains(r#""price":189.2500"#), "{text}");
    assert!(text.contains(r#""price":189.2600"#), "{text}");
    edge.metric_reaches("tickfan_schema_fetches_total{result=\"ok\"}", 1.0)
        .await;
    edge.stop().await;
}
