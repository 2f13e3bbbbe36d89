//! `tickfan demo`: librdkafka's embedded mock cluster, a topic, the
//! synthetic feed and an edge serving the ticker page, in one process. Part
//! of the rig (feature `rig`): the edge never depends on it.
//!
//! It never changes how the edge runs: it starts the same
//! [`crate::app::run_edge`], pointed at the mock cluster.

use std::net::SocketAddr;

use clap::Args;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

use crate::{
    app::run_edge,
    config::{distinct_admin_listener, EdgeConfig},
    feed,
    gateway::{self, admission, auth},
    ingest,
    kafka::KafkaConfig,
    telemetry::otel,
};

/// `tickfan demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoConfig {
    /// Address to serve the page, HTTP and WebSocket on.
    #[arg(long, env = "TICKFAN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Partitions of the demo topic in the embedded mock cluster.
    #[arg(long, env = "TICKFAN_DEMO_PARTITIONS", default_value_t = 8)]
    pub partitions: i32,

    /// What the synthetic feed writes: `tickfan` (tickfan's own contract)
    /// or `confluent` (a company's own quote record,
    /// `schemas/examples/quote.avsc`, in the Confluent wire format, its
    /// schema served by an in-process Schema Registry, read through a
    /// `--mapping`; see docs/mapping.md).
    #[arg(id = "feed_format", long = "feed", env = "TICKFAN_DEMO_FEED", value_enum, default_value_t = feed::FeedFormat::Tickfan)]
    pub feed_format: feed::FeedFormat,

    #[command(flatten)]
    pub feed: feed::Config,

    #[command(flatten)]
    pub ingest: ingest::Config,

    #[command(flatten)]
    pub gateway: gateway::Config,

    #[command(flatten)]
    pub admission: admission::Config,

    /// Off unless a key is given.
    #[command(flatten)]
    pub auth: auth::Config,

    #[command(flatten)]
    pub otel: otel::Config,
}

impl DemoConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.partitions >= 1, "--partitions must be >= 1");
        anyhow::ensure!(
            self.feed_format != feed::FeedFormat::Centrifugo,
            "demo --feed centrifugo: the edge does not read Centrifugo's JSON records; \
             use `tickfan produce --format centrifugo` to feed a Centrifugo"
        );
        self.feed.validate()?;
        self.ingest.validate()?;
        self.gateway.validate()?;
        distinct_admin_listener(self.listen, &self.gateway)?;
        self.admission.validate()?;
        self.auth.validate()
    }
}

/// Header filler per demo record (see `feed::Config::mock_pad`): 12 KiB
/// message sets keep each 5 MB mock partition log at ~400 entries instead of
/// ~37,000, but never more than 16 MiB/s of filler in all (at high rates the
/// producer batches several ticks per message set anyway). Measured with the
/// default demo and 10 clients on all 50 symbols (BENCHMARKS.md, "The demo's
/// mock cluster"): ~35% of a core and a steady p99 of 5 ms, against a full
/// core and a p99 of 81 s after four minutes without it.
fn demo_mock_pad(rate: f64) -> usize {
    const MAX: usize = 12 * 1024;
    const BUDGET: f64 = 16.0 * 1024.0 * 1024.0;
    ((BUDGET / rate.max(1.0)) as usize).min(MAX)
}

/// Runs the embedded demo: librdkafka's mock cluster, a topic, the synthetic
/// feed and an edge serving the ticker page, until `shutdown` fires and the
/// edge has drained (the feed runs until then).
pub async fn run_demo(config: DemoConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let mock = MockCluster::new(1)?;
    let topic = "ticks";
    mock.create_topic(topic, config.partitions, 1)?;
    let kafka = KafkaConfig::plain(mock.bootstrap_servers(), topic);
    let mut gateway = config.gateway.clone();
    gateway.page = true;
    let mut ingest = config.ingest.clone();
    // The feed and the schema registry stop only once the edge has drained
    // (on SIGTERM sessions stay open for up to the drain window, and their
    // ticks must keep coming, or the page shows frozen prices as live).
    let rig = CancellationToken::new();
    let _stop_rig = rig.clone().drop_guard();
    let registry = match config.feed_format {
        feed::FeedFormat::Tickfan | feed::FeedFormat::Centrifugo => None,
        feed::FeedFormat::Confluent => {
            let url = serve_quote_schema(rig.clone()).await?;
            ingest.mappings = vec![feed::quote_mapping(topic)
                .parse()
                .map_err(|e| anyhow::anyhow!("demo mapping: {e}"))?];
            ingest.registry.schema_registry = Some(url.clone());
            Some(url)
        }
    };
    let edge = EdgeConfig {
        listen: config.listen,
        kafka: kafka.clone(),
        ingest,
        gateway,
        admission: config.admission.clone(),
        auth: config.auth.clone(),
        otel: config.otel.clone(),
    };
    edge.validate()?;
    let listener = gateway::bind(config.listen, &edge.gateway)?;
    let addr: SocketAddr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    println!("tickfan demo");
    println!("  ticker page:     http://{host}:{}/", addr.port());
    println!(
        "  kafka bootstrap: {} (embedded mock cluster; topic {topic:?}, {} partitions)",
        kafka.brokers, config.partitions
    );
    println!("  try:             kcat -b {} -L", kafka.brokers);
    if let Some(url) = &registry {
        println!("  feed:            a company's quote record (schemas/examples/quote.avsc), Confluent wire format");
        println!("  schema registry: {url} (in-process; GET {url}/schemas/ids/1)");
        println!(
            "  mapping:         --mapping '{}'",
            feed::quote_mapping(topic)
        );
    }
    println!("Press Ctrl-C to stop.");
    let mut feed_config = config.feed.clone();
    feed_config.format = config.feed_format;
    // The page shows change against the previous close, the day's range
    // and volume, and the sizes at the touch.
    feed_config.day_fields = true;
    // Keeps the mock broker's log walk short (see `feed::Config::mock_pad`).
    feed_config.mock_pad = demo_mock_pad(config.feed.rate);
    let feed = tokio::spawn(feed::run(
        kafka,
        feed_config,
        config.otel.clone(),
        rig.clone(),
    ));
    let edge = run_edge(edge, listener, shutdown).await;
    rig.cancel();
    edge?;
    feed.await??;
    drop(mock);
    Ok(())
}

/// A Schema Registry of one schema, in-process, on a free loopback port:
/// `GET /schemas/ids/1` answers the demo's quote schema, anything else
/// `404`, as Confluent's registry does. Returns its URL.
async fn serve_quote_schema(shutdown: CancellationToken) -> anyhow::Result<String> {
    use warp::Filter;
    let route = warp::path!("schemas" / "ids" / u32).map(|id: u32| {
        if id == feed::QUOTE_SCHEMA_ID {
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({ "schema": feed::QUOTE_SCHEMA_JSON })),
                warp::http::StatusCode::OK,
            )
        } else {
            warp::reply::with_status(
                warp::reply::json(
                    &serde_json::json!({"error_code": 40403, "message": "Schema not found"}),
                ),
                warp::http::StatusCode::NOT_FOUND,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        warp::serve(route)
            .incoming(listener)
            .graceful(async move { shutdown.cancelled().await })
            .run(),
    );
    Ok(url)
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_pad_is_capped_in_size_and_in_bandwidth() {
        use super::demo_mock_pad;
        assert_eq!(demo_mock_pad(1000.0), 12 * 1024);
        assert_eq!(demo_mock_pad(10.0), 12 * 1024);
        for rate in [2_000.0, 20_000.0, 1_000_000.0] {
            let pad = demo_mock_pad(rate);
            assert!(pad as f64 * rate <= 16.0 * 1024.0 * 1024.0, "{rate}: {pad}");
        }
        assert_eq!(demo_mock_pad(20_000.0), 838);
    }
}
