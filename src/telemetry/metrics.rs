//! Every metric the edge exports, in one place. Hot paths add per batch or
//! per frame, never per subscriber.

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::codec::avro::DecodeError;

type Reason = Vec<(&'static str, &'static str)>;

/// The `reason`s of `consume_errors_total` (see `ingest::consumer`).
pub const CONSUME_ERROR_REASONS: [&str; 6] = [
    "compression",
    "corrupt",
    "authorization",
    "offset_out_of_range",
    "too_large",
    "other",
];

/// The `result`s of `tickfan_schema_fetches_total` (see `ingest::schemas`).
pub const SCHEMA_FETCH_RESULTS: [&str; 6] = [
    "ok",
    "not_found",
    "unreachable",
    "refused",
    "server_error",
    "bad_answer",
];

/// Every `reason` of `tickfan_sessions_ended_total` (docs/protocol.md lists
/// what each means).
pub const SESSION_END_REASONS: [&str; 13] = [
    "client_closed",
    "peer_gone",
    "write_timeout",
    "idle_timeout",
    "token_expired",
    "draining",
    "message_too_big",
    "frame_rate",
    "byte_rate",
    "fragments",
    "invalid_utf8",
    "invalid_deflate",
    "protocol_error",
];
/// `topic` and `partition` labels.
pub type PartitionLabels = Vec<(&'static str, String)>;

/// The edge's metrics. Cheap to clone (each metric is an `Arc`).
/// Outcomes of a resume (`tickfan_resumes_total{outcome}`).
pub const RESUME_OUTCOMES: [&str; 4] = ["current", "memory", "kafka", "beyond"];

#[derive(Clone)]
pub struct Metrics {
    /// Open WebSocket sessions.
    pub connections: Gauge,
    /// Client × symbol subscriptions.
    pub subscriptions: Gauge,
    /// Kafka records decoded into ticks.
    pub ticks_consumed: Counter,
    /// Ticks written to clients (each tick in each frame counts once).
    pub deliveries: Counter,
    /// Frames written to clients.
    pub frames: Counter,
    /// Ticks frames written compressed (permessage-deflate), their size as
    /// text and as sent.
    pub deflate_frames: Counter,
    /// Of those, the ones compressed (the others were the same ticks as a
    /// frame compressed just before on the same thread).
    pub deflate_compressions: Counter,
    pub deflate_text_bytes: Counter,
    pub deflate_sent_bytes: Counter,
    /// Gap notices written to clients.
    pub gaps: Counter,
    /// Ticks dropped for a client, by reason (`outbox_full`).
    pub drops: Family<Reason, Counter>,
    /// Kafka records rejected, by reason.
    pub decode_errors: Family<Reason, Counter>,
    /// Consumer errors (records or fetches the edge could not read), by
    /// reason: compression, corrupt, authorization, offset_out_of_range,
    /// too_large, other.
    pub consume_errors: Family<Reason, Counter>,
    /// Times Kafka refused the edge's connection (authentication, TLS,
    /// authorization), each retry counted.
    pub kafka_refusals: Counter,
    /// Partitions currently assigned to this edge's consumer.
    pub assigned_partitions: Gauge,
    /// Ticks queued in all outboxes.
    pub outbox_queued: Gauge,
    /// Client protocol errors answered with an error frame, by code.
    pub protocol_errors: Family<Reason, Counter>,
    /// Ticks whose per-symbol seq was not the next one, by kind
    /// (`jump`: passed on after a gap notice; `regress`: skipped;
    /// `reset`: back to 1, passed on as a snapshot).
    pub seq_anomalies: Family<Reason, Counter>,
    /// Handshakes admitted (each counted when admission lets it through,
    /// before the upgrade).
    pub admissions: Counter,
    /// Connections turned away before the upgrade, by reason
    /// (`connection_cap`, `ip_rate`, `global_rate`).
    pub admission_rejections: Family<Reason, Counter>,
    /// Tokens refused, at the handshake or in-band, by reason.
    pub auth_failures: Family<Reason, Counter>,
    /// WebSocket sessions ended, by reason (see [`SESSION_END_REASONS`]).
    pub sessions_ended: Family<Reason, Counter>,
    /// Connections in the HTTP phase (accepted, not yet upgraded, not
    /// closed), on both listeners.
    pub http_connections: Gauge,
    /// Connections answered with a canned 503 before any HTTP parsing, by
    /// reason (`http_cap`, `fd_reserve`).
    pub http_rejections: Family<Reason, Counter>,
    /// HTTP connections dropped because a response was not written within
    /// the write timeout.
    pub http_write_timeouts: Counter,
    /// Failed `accept` calls (out of descriptors, aborted handshakes, ...).
    pub accept_errors: Counter,
    /// Seconds the ingest waited for writers to take from half-full
    /// outboxes before handling more records (pacing).
    pub ingest_paced_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// The part of `ingest_paced_seconds` spent on waits that ended with a
    /// writer marked lagging (charged to the stall budget).
    pub ingest_stalled_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Outboxes the ingest stopped waiting for because their writer took
    /// nothing within the pacing patience (each time it happens).
    pub lagging_clients: Counter,
    /// Ticks that replaced one a client had not got yet, at its request.
    pub conflated: Counter,
    /// Subscriptions told `unknown_symbol` (no `retry_after_ms`): the
    /// symbol's partitions were read and the edge holds no tick of it.
    pub unknown_symbols: Counter,
    /// Symbols in the edge's symbol directory (the record keys of the last
    /// sample of every partition), at most `--directory-max`.
    pub directory_symbols: Gauge,
    /// Records of the directory's samples whose key was a new symbol but
    /// the directory was full (`--directory-max`): not added.
    pub directory_dropped_keys: Counter,
    /// Directory passes finished (every partition sampled once).
    pub directory_passes: Counter,
    /// Schema Registry lookups, by result (`SCHEMA_FETCH_RESULTS`).
    pub schema_fetches: Family<Reason, Counter>,
    /// Resumed subscriptions, by how they were served
    /// ([`RESUME_OUTCOMES`]).
    pub resumes: Family<Reason, Counter>,
    /// Ticks replayed to resuming clients, by source (`memory`, `kafka`).
    pub replayed: Family<Reason, Counter>,
    /// Bytes of recent ticks kept in memory for resumes.
    pub resume_memory: Gauge,
    /// Partitions holding at a record whose writer schema is being fetched.
    pub partitions_awaiting_schema: Gauge,
    /// From a tick's `ts` to the socket write of the frame carrying it, in
    /// seconds: one sample per write, for the oldest tick written.
    pub e2e_latency: Histogram,
    /// Ticks an outbox held when its writer drained it: one sample per write.
    pub outbox_depth: Histogram,
    /// Records in a partition not yet processed (high watermark − next
    /// offset), by topic and partition; refreshed every second.
    pub ingest_lag: Family<PartitionLabels, Gauge>,
    registry: std::sync::Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("tickfan");
        let m = Metrics {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            ticks_consumed: Counter::default(),
            deliveries: Counter::default(),
            frames: Counter::default(),
            deflate_frames: Counter::default(),
            deflate_compressions: Counter::default(),
            deflate_text_bytes: Counter::default(),
            deflate_sent_bytes: Counter::default(),
            gaps: Counter::default(),
            drops: Family::default(),
            decode_errors: Family::default(),
            consume_errors: Family::default(),
            kafka_refusals: Counter::default(),
            assigned_partitions: Gauge::default(),
            outbox_queued: Gauge::default(),
            protocol_errors: Family::default(),
            seq_anomalies: Family::default(),
            admissions: Counter::default(),
            admission_rejections: Family::default(),
            auth_failures: Family::default(),
            sessions_ended: Family::default(),
            http_connections: Gauge::default(),
            http_rejections: Family::default(),
            http_write_timeouts: Counter::default(),
            accept_errors: Counter::default(),
            ingest_paced_seconds: Counter::default(),
            ingest_stalled_seconds: Counter::default(),
            lagging_clients: Counter::default(),
            conflated: Counter::default(),
            unknown_symbols: Counter::default(),
            directory_symbols: Gauge::default(),
            directory_dropped_keys: Counter::default(),
            directory_passes: Counter::default(),
            resumes: Family::default(),
            replayed: Family::default(),
            resume_memory: Gauge::default(),
            schema_fetches: Family::default(),
            partitions_awaiting_schema: Gauge::default(),
            // 0.1 ms .. ~6.5 s
            e2e_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            // 1 .. 1024 ticks (the default outbox capacity)
            outbox_depth: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            ingest_lag: Family::default(),
            registry: Default::default(),
        };
        r.register(
            "connections",
            "Open WebSocket sessions",
            m.connections.clone(),
        );
        r.register(
            "subscriptions",
            "Client-symbol subscriptions",
            m.subscriptions.clone(),
        );
        r.register(
            "ticks_consumed",
            "Kafka records decoded into ticks",
            m.ticks_consumed.clone(),
        );
        r.register(
            "deliveries",
            "Ticks written to clients",
            m.deliveries.clone(),
        );
        r.register(
            "frames",
            "WebSocket frames written to clients",
            m.frames.clone(),
        );
        r.register(
            "deflate_frames",
            "Ticks frames written compressed (permessage-deflate)",
            m.deflate_frames.clone(),
        );
        r.register(
            "deflate_compressions",
            "Ticks frames compressed; the rest of deflate_frames reused a frame of the same ticks",
            m.deflate_compressions.clone(),
        );
        r.register(
            "deflate_text_bytes",
            "Size as text of the ticks frames written compressed",
            m.deflate_text_bytes.clone(),
        );
        r.register(
            "deflate_sent_bytes",
            "Compressed payload bytes of the ticks frames written compressed",
            m.deflate_sent_bytes.clone(),
        );
        r.register("gaps", "Gap notices written to clients", m.gaps.clone());
        r.register(
            "drops",
            "Ticks dropped for a client, by reason",
            m.drops.clone(),
        );
        r.register(
            "decode_errors",
            "Kafka records rejected, by reason",
            m.decode_errors.clone(),
        );
        r.register(
            "consume_errors",
            "Kafka consumer errors (records or fetches the edge could not read), by reason",
            m.consume_errors.clone(),
        );
        r.register(
            "kafka_refusals",
            "Times Kafka refused the edge's connection (authentication, TLS, authorization), each retry counted",
            m.kafka_refusals.clone(),
        );
        r.register(
            "assigned_partitions",
            "Kafka partitions assigned to this edge",
            m.assigned_partitions.clone(),
        );
        r.register(
            "outbox_queued_ticks",
            "Ticks queued in client outboxes",
            m.outbox_queued.clone(),
        );
        r.register(
            "protocol_errors",
            "Client messages answered with an error frame, by code",
            m.protocol_errors.clone(),
        );
        r.register(
            "seq_anomalies",
            "Ticks whose per-symbol seq was not the next one, by kind",
            m.seq_anomalies.clone(),
        );
        r.register(
            "admissions",
            "WebSocket handshakes admitted",
            m.admissions.clone(),
        );
        r.register(
            "admission_rejections",
            "Connections turned away before the upgrade, by reason",
            m.admission_rejections.clone(),
        );
        for reason in [
            "connection_cap",
            "ip_connection_cap",
            "ip_rate",
            "auth_failures",
            "global_rate",
            "draining",
        ] {
            let _ = m
                .admission_rejections
                .get_or_create(&vec![("reason", reason)]);
        }
        r.register(
            "auth_failures",
            "Tokens refused, by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "sessions_ended",
            "WebSocket sessions ended, by reason",
            m.sessions_ended.clone(),
        );
        for reason in SESSION_END_REASONS {
            let _ = m.sessions_ended.get_or_create(&vec![("reason", reason)]);
        }
        r.register(
            "http_connections",
            "Connections in the HTTP phase (accepted, not upgraded, not closed)",
            m.http_connections.clone(),
        );
        r.register(
            "http_rejections",
            "Connections answered with a canned 503 before HTTP parsing, by reason",
            m.http_rejections.clone(),
        );
        for reason in ["http_cap", "fd_reserve"] {
            let _ = m.http_rejections.get_or_create(&vec![("reason", reason)]);
        }
        r.register(
            "http_write_timeouts",
            "HTTP connections dropped because a response was not written within the write timeout",
            m.http_write_timeouts.clone(),
        );
        r.register(
            "ingest_paced_seconds",
            "Seconds the ingest waited for writers to take from half-full outboxes",
            m.ingest_paced_seconds.clone(),
        );
        r.register(
            "ingest_stalled_seconds",
            "Seconds of pacing waits that ended with a writer marked lagging (at most one patience, then a tenth of the time)",
            m.ingest_stalled_seconds.clone(),
        );
        r.register(
            "lagging_clients",
            "Outboxes the ingest stopped waiting for (writer took nothing within the pacing patience)",
            m.lagging_clients.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accept calls (out of file descriptors, aborted connections, ...)",
            m.accept_errors.clone(),
        );
        r.register(
            "e2e_latency_seconds",
            "From a tick's ts (set by the feed handler) to the socket write of its frame; one sample per write, the oldest tick in it",
            m.e2e_latency.clone(),
        );
        r.register(
            "outbox_depth_ticks",
            "Ticks an outbox held when its writer drained it; one sample per write",
            m.outbox_depth.clone(),
        );
        r.register(
            "ingest_lag_records",
            "Records not yet processed per assigned partition (high watermark - next offset)",
            m.ingest_lag.clone(),
        );
        for kind in ["jump", "regress", "reset"] {
            let _ = m.seq_anomalies.get_or_create(&vec![("kind", kind)]);
        }
        // Pre-register label values so a scrape shows zeros, not absence.
        for e in DecodeError::ALL {
            let _ = m.decode_errors.get_or_create(&vec![("reason", e.reason())]);
        }
        let _ = m.drops.get_or_create(&vec![("reason", "outbox_full")]);
        r.register(
            "conflated",
            "Ticks that replaced one a client had not got yet, at its request (max_hz, mode latest)",
            m.conflated.clone(),
        );
        r.register(
            "unknown_symbols",
            "Subscriptions told unknown_symbol: the symbol's partitions were read and the edge holds no tick of it",
            m.unknown_symbols.clone(),
        );
        r.register(
            "directory_symbols",
            "Symbols in the edge's symbol directory (record keys sampled from every partition)",
            m.directory_symbols.clone(),
        );
        r.register(
            "directory_dropped_keys",
            "Sampled records whose key was a new symbol while the directory was full (--directory-max)",
            m.directory_dropped_keys.clone(),
        );
        r.register(
            "directory_passes",
            "Symbol directory passes finished (every partition of every topic sampled)",
            m.directory_passes.clone(),
        );
        r.register(
            "resumes",
            "Subscriptions resumed after a reconnect, by outcome: current (nothing missed), memory, kafka, beyond (window exceeded: gap and snapshot)",
            m.resumes.clone(),
        );
        for outcome in RESUME_OUTCOMES {
            let _ = m.resumes.get_or_create(&vec![("outcome", outcome)]);
        }
        r.register(
            "replayed_ticks",
            "Ticks replayed to resuming clients, by source (memory, kafka)",
            m.replayed.clone(),
        );
        for source in ["memory", "kafka"] {
            let _ = m.replayed.get_or_create(&vec![("source", source)]);
        }
        r.register(
            "resume_memory_bytes",
            "Bytes of recent ticks kept in memory for resumes (--resume-memory bounds it)",
            m.resume_memory.clone(),
        );
        r.register(
            "schema_fetches",
            "Schema Registry lookups of writer schemas, by result",
            m.schema_fetches.clone(),
        );
        r.register(
            "partitions_awaiting_schema",
            "Partitions holding at a record until its writer schema is fetched",
            m.partitions_awaiting_schema.clone(),
        );
        for result in SCHEMA_FETCH_RESULTS {
            let _ = m.schema_fetches.get_or_create(&vec![("result", result)]);
        }
        for reason in CONSUME_ERROR_REASONS {
            let _ = m.consume_errors.get_or_create(&vec![("reason", reason)]);
        }
        Metrics {
            registry: std::sync::Arc::new(r),
            ..m
        }
    }

    /// Counts ticks dropped from full outboxes.
    pub fn dropped_outbox_full(&self, n: u64) {
        if n > 0 {
            self.drops
                .get_or_create(&vec![("reason", "outbox_full")])
                .inc_by(n);
        }
    }

    /// Counts one rejected record.
    pub fn decode_error(&self, e: DecodeError, n: u64) {
        self.decode_errors
            .get_or_create(&vec![("reason", e.reason())])
            .inc_by(n);
    }

    /// Counts one consumer error.
    /// Counts one Schema Registry lookup by its result.
    pub fn schema_fetch(&self, result: &'static str) {
        self.schema_fetches
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub fn consume_error(&self, reason: &'static str) {
        self.consume_errors
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts ticks with an out-of-order seq.
    pub fn seq_anomaly(&self, kind: &'static str, n: u64) {
        if n > 0 {
            self.seq_anomalies
                .get_or_create(&vec![("kind", kind)])
                .inc_by(n);
        }
    }

    /// Counts one connection turned away.
    pub fn admission_rejected(&self, reason: &'static str) {
        self.admission_rejections
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts one refused token.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts one ended session.
    pub fn session_ended(&self, reason: &'static str) {
        self.sessions_ended
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts one connection answered with a canned 503.
    pub fn http_rejected(&self, reason: &'static str) {
        self.http_rejections
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts one resumed subscription by outcome (one of
    /// [`RESUME_OUTCOMES`]) and the ticks it replayed from `source`.
    pub fn resumed(&self, outcome: &'static str, source: &'static str, ticks: usize) {
        self.resumes
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
        if ticks > 0 {
            self.replayed
                .get_or_create(&vec![("source", source)])
                .inc_by(ticks as u64);
        }
    }

    /// Counts one protocol error answered to a client.
    pub fn protocol_error(&self, code: &'static str) {
        self.protocol_errors
            .get_or_create(&vec![("code", code)])
            .inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
