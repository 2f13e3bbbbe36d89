//! What `tickfan produce --format centrifugo` writes, read back from Kafka
//! (the embedded mock cluster, or real Kafka with TICKFAN_TEST_BROKERS): the
//! records Centrifugo's Kafka consumer publishes in publication data mode,
//! the benchmarks' second baseline (BENCHMARKS.md).

mod support;

use std::time::Duration;

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
    ClientConfig, Offset, TopicPartitionList,
};
use support::*;
use tickfan::{config::defaults, feed};
use tokio_util::sync::CancellationToken;

/// Every record: the tick as the JSON object edges send clients, padded to
/// exactly `--tick-bytes`, keyed by its symbol, with a `centrifugo-channels`
/// header naming the symbol (its channel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_centrifugo_format_is_a_json_tick_with_its_channel_header() {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let mut kafka: tickfan::config::KafkaConfig = defaults();
    kafka.brokers = broker.bootstrap();
    kafka.topics = vec![topic.clone()];
    let mut cfg: feed::Config = defaults();
    cfg.symbols = feed::SymbolSpec::List(vec!["AAPL".into(), "MSFT".into(), "BRK.B".into()]);
    cfg.rate = 200.0;
    cfg.duration = Some(Duration::from_millis(300));
    cfg.tick_bytes = 512;
    cfg.format = feed::FeedFormat::Centrifugo;
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
    let mut seen = 0;
    let end = std::time::Instant::now() + DEADLINE;
    while seen < 40 {
        assert!(
            std::time::Instant::now() < end,
            "only {seen} records read back"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg.unwrap();
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
        seen += 1;
    }
}
