//! What `tickfan produce --format centrifugo` and `--format confluent`
//! write, read back from Kafka (the embedded mock cluster, or real Kafka
//! with TICKFAN_TEST_BROKERS): the records Centrifugo's Kafka consumer
//! publishes in publication data mode, the benchmarks' second baseline
//! (BENCHMARKS.md); and a company-shaped quote record in the Confluent wire
//! format, which the documented mapping reads.

mod support;

use std::time::Duration;

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{BorrowedMessage, Headers, Message},
    ClientConfig, Offset, TopicPartitionList,
};
use support::*;
use tickfan::{codec::mapping, config::defaults, feed};
use tokio_util::sync::CancellationToken;

/// Every record: the tick as the JSON object edges send clients, padded to
/// exactly `--tick-bytes`, keyed by its symbol, with a `centrifugo-channels`
/// header naming the symbol (its channel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_centrifugo_format_is_a_json_tick_with_its_channel_header() {
    let (_broker, consumer, _) = produce(feed::FeedFormat::Centrifugo, 512).await;
    read_back(&consumer, |msg| {
        let value = msg.payload().unwrap();
        assert_eq!(value.len(), 512, "padded to --tick-bytes");
        let tick: serde_json::Value = serde_json::from_slice(value).unwrap();
        let symbol = tick["symbol"].as_str().unwrap().to_string();
        assert!(
            tick["ts"].as_i64().unwrap() > 0 && tick["seq"].as_i64().unwrap() > 0,
            "{tick}"
        );
        assert!(tick["price"].as_f64().unwrap() > 0.0, "{tick}");
        assert_eq!(msg.key().unwrap(), symbol.as_bytes(), "keyed by symbol");
        let headers = msg.headers().expect("headers");
        let channels: Vec<&[u8]> = headers
            .iter()
            .filter(|h| h.key == feed::CENTRIFUGO_CHANNELS_HEADER)
            .filter_map(|h| h.value)
            .collect();
        assert_eq!(channels, vec![symbol.as_bytes()], "one channel: the symbol");
    });
}

/// `--format confluent`: every record is the Confluent wire format (magic
/// byte 0, schema id 1 big-endian) around a `schemas/examples/quote.avsc`
/// datum that carries the tick, keyed by its symbol; and the mapping the
/// docs give for it (`feed::quote_mapping`) reads it back as that tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confluent_format_is_a_quote_record_in_the_confluent_wire_format() {
    use apache_avro::types::Value;
    let (_broker, consumer, topic) = produce(feed::FeedFormat::Confluent, 0).await;
    let schema = apache_avro::Schema::parse_str(feed::QUOTE_SCHEMA_JSON).unwrap();
    // The edge's own reader, with the writer schema the docs say to register
    // as id 1.
    struct Registered(std::sync::Arc<apache_avro::Schema>);
    impl mapping::WriterSchemas for Registered {
        fn lookup(&self, id: u32) -> mapping::Lookup {
            if id == feed::QUOTE_SCHEMA_ID {
                mapping::Lookup::Found(self.0.clone())
            } else {
                mapping::Lookup::Missing
            }
        }
    }
    let registered = Registered(std::sync::Arc::new(schema.clone()));
    let mut reader =
        mapping::TopicReader::new(feed::quote_mapping(&topic).parse().unwrap(), 1 << 20);
    let mut trade_ids = std::collections::HashSet::new();
    read_back(&consumer, |msg| {
        let value = msg.payload().unwrap();
        assert_eq!(value[0], 0, "Confluent magic byte");
        assert_eq!(
            u32::from_be_bytes(value[1..5].try_into().unwrap()),
            feed::QUOTE_SCHEMA_ID,
            "schema id"
        );
        let mut datum = &value[5..];
        let record = apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap();
        assert!(datum.is_empty(), "nothing after the datum");
        let Value::Record(fields) = record else {
            panic!("{record:?}")
        };
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let Value::Record(instrument) = field("instrument") else {
            panic!("{fields:?}")
        };
        let Value::String(ticker) = instrument[0].1.clone() else {
            panic!("{instrument:?}")
        };
        assert!(SYMBOLS.contains(&ticker.as_str()), "{ticker}");
        assert_eq!(msg.key().unwrap(), ticker.as_bytes(), "keyed by symbol");
        assert!(matches!(field("last_px"), Value::Decimal(_)), "{fields:?}");
        assert!(
            matches!(field("last_qty"), Value::Long(q) if q >= 0),
            "{fields:?}"
        );
        assert!(
            matches!(field("event_time"), Value::TimestampMillis(t) if t > 1_600_000_000_000),
            "{fields:?}"
        );
        let Value::String(trade) = field("trade_id") else {
            panic!("{fields:?}")
        };
        assert!(trade_ids.insert(trade.clone()), "trade ids are distinct");
        let record = mapping::Record {
            key: msg.key(),
            value,
            offset: msg.offset(),
            timestamp_ms: None,
        };
        let tick = reader.decode(&record, &registered).unwrap().tick;
        assert_eq!(tick.symbol.as_str(), ticker);
        assert!(tick.price > 0.0, "{tick:?}");
        assert_eq!(
            tick.attrs.get("trade_id"),
            Some(&trade),
            "forwarded: {tick:?}"
        );
    });
}

const SYMBOLS: [&str; 3] = ["AAPL", "MSFT", "BRK.B"];

/// Runs `tickfan produce --format FORMAT` (padded to `tick_bytes`; 0: not)
/// for 300 ms at 200 ticks/s over [`SYMBOLS`] into a fresh two-partition
/// topic; a consumer of that topic from its start, and the topic.
async fn produce(format: feed::FeedFormat, tick_bytes: usize) -> (Broker, BaseConsumer, String) {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let mut kafka: tickfan::config::KafkaConfig = defaults();
    kafka.brokers = broker.bootstrap();
    kafka.topics = vec![topic.clone()];
    let mut cfg: feed::Config = defaults();
    cfg.symbols = feed::SymbolSpec::List(SYMBOLS.iter().map(|s| s.to_string()).collect());
    cfg.rate = 200.0;
    cfg.duration = Some(Duration::from_millis(300));
    cfg.tick_bytes = tick_bytes;
    cfg.format = format;
    feed::run(kafka, cfg, Default::default(), CancellationToken::new())
        .await
        .unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "produce-formats-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    (broker, consumer, topic)
}

/// Checks 40 records with `check`, failing if they are not there by the
/// deadline.
fn read_back(consumer: &BaseConsumer, mut check: impl FnMut(&BorrowedMessage<'_>)) {
    let end = std::time::Instant::now() + DEADLINE;
    let mut seen = 0;
    while seen < 40 {
        assert!(
            std::time::Instant::now() < end,
            "only {seen} records read back"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        check(&msg.unwrap());
        seen += 1;
    }
}
