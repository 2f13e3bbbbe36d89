//! The one place that wires ingest → fan-out → gateway and owns shutdown
//! order: stop accepting and close sessions, then stop consuming.
//!
//! It never handles a record, a tick or a frame itself: that work stays in
//! `ingest`, `fanout` and `gateway`, which this module only builds, starts
//! and stops.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::EdgeConfig,
    fanout::{Directory, Registry},
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
    let registry = Arc::new(Registry::with_history(config.gateway.history()));
    let directory = Arc::new(Directory::new());
    let ingest_stop = CancellationToken::new();
    // Fired if an ingest thread dies: the edge shuts down and says so.
    let fatal = CancellationToken::new();
    let ingest = Ingest::start(
        &config.kafka,
        &config.ingest,
        registry.clone(),
        directory.clone(),
        metrics.clone(),
        traces.as_ref().map(|t| t.tracer()),
        ingest_stop.clone(),
        fatal.clone(),
    )?;
    {
        let (fatal, shutdown) = (fatal.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = fatal.cancelled() => shutdown.cancel(),
                _ = shutdown.cancelled() => {}
            }
        });
    }
    let shared = Arc::new(Shared {
        config: config.gateway.clone(),
        registry,
        directory,
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
    if fatal.is_cancelled() {
        anyhow::bail!("an ingest thread or task panicked (logged above): the edge shut down");
    }
    tracing::info!("edge stopped");
    Ok(())
}
