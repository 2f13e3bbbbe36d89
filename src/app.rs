//! The one place that wires ingest → fan-out → gateway and owns shutdown
//! order: stop accepting and close sessions, then stop consuming.

use std::{net::SocketAddr, sync::Arc};

use rdkafka::mocking::MockCluster;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{DemoConfig, EdgeConfig, KafkaConfig},
    fanout::Registry,
    feed,
    gateway::{self, Readiness, Shared},
    ingest::{self, Ingest},
    telemetry::{otel, Metrics},
};

struct EdgeReadiness {
    status: Arc<ingest::Status>,
    shutdown: CancellationToken,
}

impl Readiness for EdgeReadiness {
    fn check(&self) -> Result<(), &'static str> {
        if self.shutdown.is_cancelled() {
            Err("draining")
        } else if !self.status.kafka_ready() {
            Err("kafka metadata not available")
        } else {
            Ok(())
        }
    }

    fn partitions(&self) -> serde_json::Value {
        serde_json::to_value(self.status.assigned()).unwrap_or_default()
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the limit
/// obtained, with a warning when it is below what the configuration may
/// hold at once ([`gateway::door::Config::descriptors_needed`]). Every
/// connection is a descriptor, and the soft limit is often 1,024.
pub fn raise_fd_limit(gateway: &gateway::Config, admission: &gateway::admission::Config) {
    match gateway::fds::raise_limit() {
        Ok(limit) => {
            let needed = gateway.http.descriptors_needed(admission.max_connections);
            tracing::info!(
                soft = limit.soft,
                hard = limit.hard,
                "file descriptor limit"
            );
            if limit.soft < needed {
                tracing::warn!(
                    limit = limit.soft,
                    needed,
                    "file descriptor limit below what --max-connections, --max-http-connections and --fd-reserve may hold: \
                     raise the hard limit (ulimit -Hn, the container's nofile) or lower them"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
}

/// Runs an edge on `listener` (and on `--admin-listen`, bound here, if set)
/// until `shutdown` fires.
pub async fn run_edge(
    config: EdgeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let admin = match config.gateway.http.admin_listen {
        Some(addr) => Some(gateway::bind(addr, &config.gateway)?),
        None => None,
    };
    let traces = otel::Pipeline::new(&config.otel, "tickfan-edge", false)?;
    if let Some(t) = &traces {
        t.trace_sessions();
    }
    let metrics = Metrics::new();
    let registry = Arc::new(Registry::new());
    let ingest_stop = CancellationToken::new();
    let ingest = Ingest::start(
        &config.kafka,
        &config.ingest,
        registry.clone(),
        metrics.clone(),
        traces.as_ref().map(|t| t.tracer()),
        ingest_stop.clone(),
    )?;
    let shared = Arc::new(Shared {
        config: config.gateway.clone(),
        registry,
        metrics,
        sessions: Default::default(),
        feed: ingest.status.feed(),
        admission: gateway::admission::Admission::new(&config.admission),
        verifier: gateway::auth::Verifier::from_config(&config.auth)?.map(Arc::new),
        readiness: Box::new(EdgeReadiness {
            status: ingest.status.clone(),
            shutdown: shutdown.clone(),
        }),
    });
    tracing::info!(addr = %listener.local_addr()?, brokers = %config.kafka.brokers, topics = ?config.kafka.topics, "edge listening");
    let admin_stop = CancellationToken::new();
    let admin = match admin {
        Some(a) => {
            tracing::info!(addr = %a.local_addr()?, "admin listening");
            Some(tokio::spawn(gateway::admin::serve(
                a,
                shared.clone(),
                admin_stop.clone(),
            )))
        }
        None => None,
    };
    // `--shutdown-grace` is a hard limit from the signal, whatever state
    // Kafka is in: leaving the consumer and the trace exporter behind is
    // fine once the sessions are drained (a metadata request to an
    // unreachable or refusing cluster blocks for seconds, and librdkafka's
    // teardown waits on it).
    let grace = config.gateway.shutdown_grace;
    let hard_stop = {
        let signalled = shutdown.clone();
        async move {
            signalled.cancelled().await;
            tokio::time::sleep(grace).await;
        }
    };
    let run = async {
        gateway::serve(listener, shared, shutdown).await;
        // Probes and scrapes keep their answers (not ready) until the public
        // port has drained.
        admin_stop.cancel();
        if let Some(a) = admin {
            let _ = a.await;
        }
        ingest_stop.cancel();
        ingest.join().await;
        if let Some(t) = traces {
            t.shutdown().await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = hard_stop => {
            tracing::warn!(?grace, "--shutdown-grace over: leaving without waiting for Kafka or the trace exporter");
        }
    }
    tracing::info!("edge stopped");
    Ok(())
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
/// feed and an edge serving the ticker page, until `shutdown` fires.
pub async fn run_demo(config: DemoConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let mock = MockCluster::new(1)?;
    let topic = "ticks";
    mock.create_topic(topic, config.partitions, 1)?;
    let kafka = KafkaConfig::plain(mock.bootstrap_servers(), topic);
    let mut gateway = config.gateway.clone();
    gateway.page = true;
    let edge = EdgeConfig {
        listen: config.listen,
        kafka: kafka.clone(),
        ingest: config.ingest.clone(),
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
    println!("Press Ctrl-C to stop.");
    let mut feed_config = config.feed.clone();
    // Keeps the mock broker's log walk short (see `feed::Config::mock_pad`).
    feed_config.mock_pad = demo_mock_pad(config.feed.rate);
    let feed = tokio::spawn(feed::run(
        kafka,
        feed_config,
        config.otel.clone(),
        shutdown.clone(),
    ));
    run_edge(edge, listener, shutdown).await?;
    feed.await??;
    drop(mock);
    Ok(())
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
