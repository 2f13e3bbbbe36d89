//! Ingest: the Kafka side of an edge.
//!
//! * [`interest`] turns "symbols with a local subscriber" into the set of
//!   (topic, partition) pairs to fetch, assigns new ones after looking up
//!   their watermarks, and releases unwanted ones after a linger.
//! * [`consumer`] is the poll loop: it drains a batch of records, decodes each
//!   once, encodes each once, hands it to the fan-out and wakes every touched
//!   writer once per batch.
//! * [`traces`] is the poll loop's per-tick tracing: a `process <topic>` span
//!   per traced record and its `fanout` child.
//! * [`metadata`] watches topic metadata: readiness and partition counts.
//! * [`directory`] samples the record keys of every partition, on a consumer
//!   of its own, for the symbol directory `/symbols` lists.
//!
//! There is no consumer group: each edge assigns partitions by hand, so every
//! edge sees every record of the partitions it wants.
//!
//! It never writes to a client: records reach subscribers only through the
//! fan-out registry (`Registry::publish_at`); and it never commits an offset.

pub mod consumer;
pub mod directory;
pub mod history;
pub mod interest;
pub mod metadata;
pub mod schemas;
pub mod traces;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rdkafka::{
    consumer::{BaseConsumer, ConsumerContext},
    error::KafkaError,
    types::RDKafkaErrorCode,
    ClientConfig, ClientContext,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    codec::mapping::{Format, Mapping, TopicReader},
    fanout::{Directory, FeedStatus, Registry},
    kafka::KafkaConfig,
    telemetry::Metrics,
};

/// How the edge consumes.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "ingest")]
#[command(next_help_heading = "Ingest (Kafka consumer)")]
pub struct Config {
    /// How long a partition stays assigned after its last subscribed symbol
    /// is gone (so a quick resubscribe does not refetch history).
    #[arg(long, env = "TICKFAN_RELEASE_LINGER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub release_linger: Duration,

    /// Records per partition re-read when a partition is newly assigned, to
    /// rebuild the latest tick of its symbols for snapshots (0: none).
    #[arg(long, env = "TICKFAN_SNAPSHOT_REWIND", default_value_t = 1000)]
    pub snapshot_rewind: i64,

    /// Most records handled per poll batch before writers are woken.
    #[arg(long, env = "TICKFAN_BATCH_MAX", default_value_t = 1024)]
    pub batch_max: usize,

    /// Pacing: when a record brings a client's outbox to half full, the
    /// ingest stops handling records (Kafka keeps them) and waits up to this
    /// long for that client's writer to take from it. A writer that takes
    /// nothing in that time is lagging: the ingest goes on without it (its
    /// outbox drops oldest, with gap notices) until it is at most a quarter
    /// full again. So a catch-up after an outage goes at the pace the
    /// reading clients drain, and a client that stops reading delays the
    /// others at most this long. 0 turns pacing off.
    #[arg(long, env = "TICKFAN_PACING_PATIENCE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub pacing_patience: Duration,

    /// Largest accepted Kafka record value, in bytes; larger ones are
    /// counted (`reason="oversized"`) and skipped, and so are mapped records
    /// whose forwarded `attrs` would be longer as text.
    #[arg(long, env = "TICKFAN_MAX_RECORD_BYTES", default_value_t = 65536)]
    pub max_record_bytes: usize,

    /// How often topic metadata (existence, partition count) is refreshed.
    #[arg(long, env = "TICKFAN_METADATA_REFRESH", default_value = "10s", value_parser = humantime::parse_duration)]
    pub metadata_refresh: Duration,

    /// How often the symbol directory (`/symbols`) samples every partition
    /// of every topic, on a consumer of its own; also once at start.
    #[arg(long, env = "TICKFAN_DIRECTORY_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub directory_interval: Duration,

    /// Records read from the end of each partition per directory pass; the
    /// keys that are symbols make the directory. 0: no directory.
    #[arg(long, env = "TICKFAN_DIRECTORY_SAMPLE", default_value_t = 2000)]
    pub directory_sample: i64,

    /// Most symbols in the directory; keys of further symbols are not added
    /// (counted in `tickfan_directory_dropped_keys_total`).
    #[arg(long, env = "TICKFAN_DIRECTORY_MAX", default_value_t = 100_000)]
    pub directory_max: usize,

    /// With trace export on (`--otlp-endpoint`): fraction of records that
    /// arrive WITHOUT a `traceparent` header for which the edge starts a
    /// trace of its own. Records with a sampled `traceparent` are always
    /// traced, continuing the producer's trace.
    #[arg(long, env = "TICKFAN_TRACE_ROOT_SAMPLE", default_value_t = 0.0, value_parser = crate::telemetry::otel::parse_ratio)]
    pub trace_root_sample: f64,

    /// A topic's record shape, `TOPIC:key=value,...` (repeatable; one per
    /// topic): `format=avro|json|tickfan`, where the symbol, price, size,
    /// bid, ask, venue, ts and seq are, which fields are forwarded. Topics
    /// without one carry tickfan's own `schemas/tick.avsc`. See
    /// docs/mapping.md.
    #[arg(long = "mapping", env = "TICKFAN_MAPPING", value_delimiter = ';', value_parser = parse_mapping)]
    pub mappings: Vec<Mapping>,

    #[command(flatten)]
    pub registry: schemas::RegistryConfig,
}

fn parse_mapping(s: &str) -> Result<Mapping, String> {
    s.parse()
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.snapshot_rewind >= 0, "--snapshot-rewind must be >= 0");
        anyhow::ensure!(self.batch_max >= 1, "--batch-max must be >= 1");
        anyhow::ensure!(
            self.pacing_patience <= Duration::from_secs(60),
            "--pacing-patience must be at most 60s (it delays every client while a writer is silent)"
        );
        anyhow::ensure!(
            self.max_record_bytes >= 16,
            "--max-record-bytes must be >= 16"
        );
        anyhow::ensure!(
            !self.metadata_refresh.is_zero(),
            "--metadata-refresh must be > 0"
        );
        anyhow::ensure!(
            self.directory_interval >= Duration::from_secs(1),
            "--directory-interval must be at least 1s"
        );
        anyhow::ensure!(
            self.directory_sample >= 0,
            "--directory-sample must be >= 0"
        );
        anyhow::ensure!(self.directory_max >= 1, "--directory-max must be >= 1");
        Ok(())
    }

    /// Checks the mappings against the topics and the registry.
    pub fn validate_mappings(&self, topics: &[String]) -> anyhow::Result<()> {
        self.registry.validate()?;
        let mut seen = std::collections::HashSet::new();
        for m in &self.mappings {
            anyhow::ensure!(
                topics.contains(&m.topic),
                "--mapping {m}: {} is not a --topic",
                m.topic
            );
            anyhow::ensure!(
                seen.insert(m.topic.as_str()),
                "--mapping: topic {} is mapped twice",
                m.topic
            );
            anyhow::ensure!(
                m.format != Format::Avro || self.registry.schema_registry.is_some(),
                "--mapping {m}: format=avro needs --schema-registry"
            );
        }
        Ok(())
    }

    /// The reader of each of `topics`, in order.
    pub fn readers(&self, topics: &[String]) -> Vec<TopicReader> {
        topics
            .iter()
            .map(|t| {
                let m = self
                    .mappings
                    .iter()
                    .find(|m| &m.topic == t)
                    .cloned()
                    .unwrap_or_else(|| Mapping::tickfan(t));
                TopicReader::new(m, self.max_record_bytes)
            })
            .collect()
    }
}

/// A consumer of its own for a reader beside the poll loop (the history
/// reader, the symbol directory): as the edge's settings, under its own
/// group and client id `name`, never committing, with end-of-partition
/// events (a read stops at the end).
pub fn side_consumer(
    kafka: &KafkaConfig,
    name: &str,
) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
    Ok(kafka
        .client_config(&[
            ("group.id", name),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "true"),
            ("fetch.queue.backoff.ms", "0"),
            ("fetch.wait.max.ms", "10"),
            ("client.id", name),
        ])?
        .create()?)
}

/// A topic and partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// What `/partitions` shows about one assigned partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    pub topic: Arc<str>,
    pub partition: i32,
    /// Next offset to process (last processed + 1).
    pub next_offset: i64,
    /// Still replaying the snapshot rewind (ticks cached, not sent live).
    pub warming: bool,
    /// The first offset handled live (records before it only rebuilt
    /// snapshots).
    pub live_from: i64,
}

/// Ingest state other parts of the edge read.
pub struct Status {
    /// Topic metadata has been fetched and every topic exists, and the
    /// brokers have not been reported down since.
    kafka_ready: AtomicBool,
    /// The same, as a feed status sessions can watch.
    feed: watch::Sender<FeedStatus>,
    /// Asks the metadata watcher to check again now.
    recheck: tokio::sync::Notify,
    /// Partitions currently assigned, with their positions.
    pub partitions: Mutex<BTreeMap<TopicPartition, PartitionView>>,
    /// The last kind of connection refusal logged (credentials,
    /// certificates), cleared when the edge is ready again.
    refusal: Mutex<Option<&'static str>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            kafka_ready: AtomicBool::new(false),
            feed: watch::Sender::new(FeedStatus::Stale),
            recheck: tokio::sync::Notify::new(),
            partitions: Mutex::default(),
            refusal: Mutex::default(),
        }
    }
}

impl Status {
    /// Kafka metadata is current and brokers are reachable.
    pub fn kafka_ready(&self) -> bool {
        self.kafka_ready.load(Ordering::Acquire)
    }

    /// Watches the feed status (live while Kafka is ready).
    pub fn feed(&self) -> watch::Receiver<FeedStatus> {
        self.feed.subscribe()
    }

    fn set_kafka_ready(&self, ready: bool) {
        self.kafka_ready.store(ready, Ordering::Release);
        if ready {
            *self.refusal.lock().unwrap() = None;
        }
        let status = if ready {
            FeedStatus::Live
        } else {
            FeedStatus::Stale
        };
        self.feed
            .send_if_modified(|s| std::mem::replace(s, status) != status);
    }

    pub fn assigned(&self) -> Vec<PartitionView> {
        self.partitions.lock().unwrap().values().cloned().collect()
    }
}

/// Spawns one of the ingest threads (the poll loop, the history and
/// directory readers, the schema fetcher), without which the edge cannot
/// serve: if `body` panics, the panic is logged and `fatal` fires, and
/// [`crate::app::run_edge`] shuts the edge down and returns an error (the
/// process exits non-zero and its orchestrator starts it again), instead of
/// the edge staying up, ready and silent.
pub(crate) fn spawn_thread(
    builder: std::thread::Builder,
    fatal: CancellationToken,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    builder.spawn(move || {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            tracing::error!(
                thread,
                "an ingest thread panicked (above): the edge shuts down"
            );
            fatal.cancel();
        }
    })
}

/// A running ingest: stop it with the shutdown token, then [`Ingest::join`].
pub struct Ingest {
    pub status: Arc<Status>,
    poll_thread: std::thread::JoinHandle<()>,
    history_thread: std::thread::JoinHandle<()>,
    /// `None` with `--directory-sample 0`.
    directory_thread: Option<std::thread::JoinHandle<()>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Ingest {
    /// Starts the consumer thread, the interest manager, the metadata
    /// watcher, the history reader and the directory reader (which fills
    /// `directory`).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        kafka: &KafkaConfig,
        config: &Config,
        registry: Arc<Registry>,
        directory: Arc<Directory>,
        metrics: Metrics,
        tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
        shutdown: CancellationToken,
        fatal: CancellationToken,
    ) -> anyhow::Result<Ingest> {
        let status = Arc::new(Status::default());
        let consumer: Arc<EdgeConsumer> =
            Arc::new(consumer_config(kafka)?.create_with_context(IngestContext {
                status: status.clone(),
                refusals: metrics.kafka_refusals.clone(),
            })?);
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let (counts_tx, counts_rx) = tokio::sync::watch::channel(Arc::new(HashMap::new()));

        let topics: Vec<Arc<str>> = kafka.topics.iter().map(|t| Arc::from(t.as_str())).collect();
        let schemas = if config.mappings.iter().any(|m| m.format == Format::Avro) {
            Some(schemas::Schemas::start(
                &config.registry,
                metrics.clone(),
                shutdown.clone(),
                &fatal,
            )?)
        } else {
            None
        };
        let history_thread = history::HistoryReader {
            consumer: history::consumer(kafka)?,
            registry: registry.clone(),
            topics: topics.clone(),
            readers: config.readers(&kafka.topics),
            schemas: schemas.clone(),
            counts: counts_rx.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        }
        .spawn(&fatal)?;
        let directory_thread = if config.directory_sample > 0 {
            Some(
                directory::DirectoryReader {
                    consumer: directory::consumer(kafka)?,
                    topics: topics.clone(),
                    counts: counts_rx.clone(),
                    directory,
                    sample: config.directory_sample,
                    max: config.directory_max,
                    interval: config.directory_interval,
                    metrics: metrics.clone(),
                    shutdown: shutdown.clone(),
                }
                .spawn(&fatal)?,
            )
        } else {
            None
        };
        let poll_thread = consumer::PollLoop {
            consumer: consumer.clone(),
            traces: tracer
                .map(|tracer| consumer::Traces::new(tracer, config.trace_root_sample, &topics)),
            topics,
            commands: cmd_rx,
            registry: registry.clone(),
            metrics: metrics.clone(),
            status: status.clone(),
            readers: std::cell::RefCell::new(config.readers(&kafka.topics)),
            schemas,
            batch_max: config.batch_max,
            pacing_patience: config.pacing_patience,
            shutdown: shutdown.clone(),
        }
        .spawn(&fatal)?;

        let mut tasks = tokio::task::JoinSet::new();
        // The two tasks are as vital as the threads: one that panics ends
        // the edge too.
        let vital = |task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            let fatal = fatal.clone();
            async move {
                use futures_util::FutureExt;
                if std::panic::AssertUnwindSafe(task)
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!("an ingest task panicked (above): the edge shuts down");
                    fatal.cancel();
                }
            }
        };
        tasks.spawn(vital(Box::pin(
            metadata::Watcher {
                consumer: consumer.clone(),
                topics: kafka.topics.clone(),
                refresh: config.metadata_refresh,
                status: status.clone(),
                counts: counts_tx,
            }
            .run(shutdown.clone()),
        )));
        tasks.spawn(vital(Box::pin(
            interest::Manager::new(
                consumer,
                registry,
                cmd_tx,
                counts_rx,
                config.release_linger,
                config.snapshot_rewind,
            )
            .run(shutdown),
        )));
        Ok(Ingest {
            status,
            poll_thread,
            history_thread,
            directory_thread,
            tasks,
        })
    }

    /// Waits for every ingest task and the poll thread to finish (after the
    /// shutdown token fired).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
        let (t, h, d) = (self.poll_thread, self.history_thread, self.directory_thread);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = t.join();
            let _ = h.join();
            if let Some(d) = d {
                let _ = d.join();
            }
        })
        .await;
    }
}

/// The edge's consumer type.
pub type EdgeConsumer = BaseConsumer<IngestContext>;

/// Consumer callbacks: turns librdkafka's "all brokers down" into a stale
/// feed at once, instead of at the next metadata refresh, and says what is
/// wrong when the brokers refuse the edge (credentials, certificates).
pub struct IngestContext {
    status: Arc<Status>,
    /// `tickfan_kafka_refusals_total`: every refusal, logged or not.
    refusals: prometheus_client::metrics::counter::Counter,
}

/// Client errors that mean the edge cannot connect as configured, rather
/// than a broker being briefly away, by kind: logged as warnings, once per
/// change of kind (librdkafka reports one TLS failure under two codes).
fn refusal_kind(code: RDKafkaErrorCode, reason: &str) -> Option<&'static str> {
    use RDKafkaErrorCode as C;
    match code {
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState => Some("authentication"),
        C::SSL => Some("tls"),
        C::BrokerTransportFailure if is_tls_rejection(reason) => Some("tls"),
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => Some("authorization"),
        C::InvalidArgument => Some("configuration"),
        _ => None,
    }
}

/// A transport failure that is the broker's TLS refusing the edge (its
/// client certificate expired, revoked or unknown: a TLS alert), not a
/// broker being away.
fn is_tls_rejection(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("ssl") && (r.contains("alert") || r.contains("certificate"))
}

impl ClientContext for IngestContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            if self.status.kafka_ready() {
                tracing::warn!(%reason, "all kafka brokers down; feed stale");
            }
            self.status.set_kafka_ready(false);
            self.status.recheck.notify_one();
        } else if let Some(kind) = code.and_then(|c| refusal_kind(c, reason)) {
            // librdkafka retries every few seconds: each refusal is counted,
            // one warning per kind of refusal until the edge is ready again.
            self.refusals.inc();
            let mut last = self.status.refusal.lock().unwrap();
            if *last != Some(kind) {
                *last = Some(kind);
                tracing::warn!(
                    kind,
                    error = %error,
                    %reason,
                    "kafka refuses the edge's connection (check --kafka-security-protocol, the SASL credentials and the CA/certificates); edge not ready, retrying"
                );
            }
        } else {
            tracing::debug!(error = %error, %reason, "kafka client error");
        }
    }
}

impl ConsumerContext for IngestContext {}

fn consumer_config(kafka: &KafkaConfig) -> anyhow::Result<ClientConfig> {
    kafka.client_config(&[
        // Required by librdkafka, unused: partitions are assigned by hand and
        // nothing is committed.
        ("group.id", "tickfan-edge"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "latest"),
        // Fetch a new assignment at once (the default backoff is 1 s).
        ("fetch.queue.backoff.ms", "0"),
        // Every fetch waits 2 ms (unless 1 MiB is ready) instead of returning
        // as soon as one byte is there: with a steady trickle of ticks,
        // `fetch.min.bytes=1` made librdkafka and the broker spin through
        // back-to-back tiny fetches, about half a core whatever the load.
        // Measured (BENCHMARKS.md, "Kafka fetch settings"): 2.8x less edge CPU
        // at 200,000 deliveries/s, and a lower p99 on this 2-core box.
        ("fetch.wait.max.ms", "2"),
        ("fetch.min.bytes", "1048576"),
        ("client.id", "tickfan-edge"),
    ])
}

#[cfg(test)]
mod tests {
    use super::is_tls_rejection;

    #[test]
    fn tls_alerts_are_refusals_and_a_broker_going_away_is_not() {
        // What librdkafka 2.12 says when a broker rejects an expired client
        // certificate, and when a broker is down or restarting.
        assert!(is_tls_rejection("ssl://127.0.0.1:9095/bootstrap: Receive failed: ssl/record/rec_layer_s3.c:918:ssl3_read_bytes error:0A000416:SSL routines::ssl/tls alert certificate unknown: SSL alert number 46 (after 2ms in state APIVERSION_QUERY)"));
        assert!(!is_tls_rejection("127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"));
        assert!(!is_tls_rejection(
            "ssl://127.0.0.1:9094/1: Disconnected (after 5012ms in state UP)"
        ));
    }
}
