//! The poll loop, on a dedicated thread: librdkafka's poll is blocking and
//! this loop is the hot path, so it gets a thread of its own rather than
//! competing with sessions on the async runtime.
//!
//! Per batch: drain up to `batch_max` ready records; decode each once, encode
//! its client form once, hand it to the registry (which queues the shared
//! bytes for every subscriber); then wake each touched writer once and add the
//! batch's counts to the metrics.
//!
//! Pacing: a batch ends early when a record brings an outbox to half full;
//! the loop then waits (up to `pacing_patience`) for those writers to take
//! from their outboxes before it handles more. Kafka holds the backlog, so
//! after an outage the edge takes it at the pace its reading clients drain
//! instead of overflowing their outboxes; a writer that takes nothing within
//! the patience is marked lagging and not waited for (see `fanout::outbox`).
//! Waits that end that way draw on an edge-wide `StallBudget`, so clients
//! that stop reading, however many and however they take turns, cannot hold
//! the ingest for more than one patience at once and a tenth of the time
//! after that.
//!
//! Per-tick tracing is [`super::traces`]'s. The loop never blocks on a
//! client's socket: it queues ticks on outboxes, and waits for writers only
//! within the pacing patience and the stall budget.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc},
    time::Duration,
};

use rdkafka::{
    consumer::Consumer, error::KafkaError, message::Message, Offset, TopicPartitionList,
};
use tokio_util::sync::CancellationToken;

use super::schemas::{NoRegistry, Schemas};
pub use super::traces::Traces;
use super::{
    traces::{end_trace, end_undecodable},
    PartitionView, Status, TopicPartition,
};
use crate::{
    codec::{
        avro::DecodeError,
        mapping::{Record, Skip, TopicReader, WriterSchemas},
        wire,
    },
    fanout::{wake_all, Outbox, Registry, SeqCheck},
    partition::partition_for,
    telemetry::Metrics,
};

/// How often `ingest_lag_records` is refreshed.
const LAG_REFRESH: Duration = Duration::from_secs(1);

/// Labels of a partition's `ingest_lag_records`.
fn lag_labels(tp: &TopicPartition) -> crate::telemetry::metrics::PartitionLabels {
    vec![
        ("topic", tp.topic.to_string()),
        ("partition", tp.partition.to_string()),
    ]
}

/// The high watermark of `tp` as of librdkafka's last fetch response, if it
/// has one. rust-rdkafka wraps only the broker round trip
/// (`fetch_watermarks`); `rd_kafka_get_watermark_offsets` reads the cached
/// value and is thread-safe.
fn cached_high_watermark(consumer: &super::EdgeConsumer, tp: &TopicPartition) -> Option<i64> {
    let topic = std::ffi::CString::new(tp.topic.as_bytes()).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives, `topic` is
    // a NUL-terminated string that outlives the call, and the out-pointers
    // are to live locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            tp.partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// How long one poll waits when nothing is ready; bounds how late a command
/// (assign/release) or shutdown is noticed.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// How often a paced wait looks at the outboxes it waits for.
const PACE_POLL: Duration = Duration::from_millis(1);

/// The share of wall time that waits on writers which then took nothing may
/// take, once the first patience is spent: a tenth.
const STALL_REFILL_PER_SEC: f64 = 0.1;

/// The least time a wait gives writers to take, whatever is left of the
/// stall budget: a writer that runs takes from its outbox within a few
/// milliseconds, so clients that read are not given up on just because
/// others spent the budget.
const STALL_GRACE: Duration = Duration::from_millis(20);

/// How long the ingest may still wait for writers that take nothing: waits
/// that end with a writer marked lagging are charged their whole length
/// (waits that end because every writer took are free: that is a catch-up
/// going at its clients' pace). It holds one patience and refills at
/// [`STALL_REFILL_PER_SEC`]; when it is spent a wait still gives writers
/// [`STALL_GRACE`], on credit, and once the credit reaches a whole patience
/// the ingest stops pacing (it fans out as without it: a full outbox drops
/// oldest with gap notices) until the budget recovers. So clients that stop
/// reading, however many and however they take turns (or one that drains to
/// a quarter and stalls again), hold the ingest at most one patience at
/// once and, over any stretch of time, two patiences (and a grace) plus a
/// tenth of it.
///
/// Hand-written rather than a `governor` quota: it charges a duration
/// measured after the wait, which may overdraw it; governor admits or
/// refuses whole cells up front.
#[derive(Debug)]
pub(crate) struct StallBudget {
    /// Seconds left; negative while on credit.
    left: f64,
    /// One patience, seconds.
    cap: f64,
    at: std::time::Instant,
}

impl StallBudget {
    pub(crate) fn new(patience: Duration, now: std::time::Instant) -> StallBudget {
        StallBudget {
            left: patience.as_secs_f64(),
            cap: patience.as_secs_f64(),
            at: now,
        }
    }

    /// How long a wait starting `now` may give writers before those still
    /// half full are lagging; `None` while pacing is off (no patience, or
    /// the credit is used up).
    pub(crate) fn allowance(&mut self, now: std::time::Instant) -> Option<Duration> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.left = (self.left + dt * STALL_REFILL_PER_SEC).min(self.cap);
        if self.cap == 0.0 || self.left <= -self.cap {
            return None;
        }
        let patience = Duration::from_secs_f64(self.cap);
        Some(
            Duration::from_secs_f64(self.left.max(0.0))
                .max(STALL_GRACE)
                .min(patience),
        )
    }

    /// A wait of `spent` ended with writers marked lagging.
    pub(crate) fn charge(&mut self, spent: Duration) {
        self.left -= spent.as_secs_f64();
    }
}

/// Why the consumer could not hand over records, as the metric's `reason`
/// (`tickfan_consume_errors_total`): a bounded set of labels.
pub(crate) fn unreadable_reason(e: &KafkaError) -> &'static str {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::BadCompression | C::NotImplemented | C::UnsupportedCompressionType) => {
            "compression"
        }
        Some(C::BadMessage | C::InvalidMessage | C::InvalidMessageSize | C::InvalidRecord) => {
            "corrupt"
        }
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication,
        ) => "authorization",
        Some(C::OffsetOutOfRange | C::AutoOffsetReset) => "offset_out_of_range",
        Some(C::MessageSizeTooLarge) => "too_large",
        _ => "other",
    }
}

/// Consumer errors: every one counted, and logged as a warning when its
/// reason changes or once a minute while it goes on (with the count since),
/// so records the edge cannot read are never dropped silently nor flood the
/// log.
#[derive(Default)]
struct Unreadable {
    last: Option<(&'static str, std::time::Instant)>,
    since: u64,
}

impl Unreadable {
    const REPEAT: Duration = Duration::from_secs(60);

    fn note(&mut self, e: &KafkaError, metrics: &Metrics) {
        let reason = unreadable_reason(e);
        metrics.consume_error(reason);
        self.since += 1;
        let now = std::time::Instant::now();
        let due = match self.last {
            Some((r, at)) => r != reason || now.duration_since(at) >= Self::REPEAT,
            None => true,
        };
        if due {
            tracing::warn!(
                error = %e,
                reason,
                errors_since_last_warning = self.since,
                "kafka records could not be read (counted in tickfan_consume_errors_total)"
            );
            self.last = Some((reason, now));
            self.since = 0;
        }
    }
}

/// Instructions from the interest manager.
#[derive(Debug)]
pub enum Command {
    /// Start fetching `tp` at `start`; records before `live_from` only
    /// rebuild the cache (snapshot rewind), later ones go out live.
    Assign {
        tp: TopicPartition,
        start: i64,
        live_from: i64,
        partitions: i32,
    },
    /// Stop fetching `tp` and forget its cached ticks, except for symbols
    /// that live in a partition in `still_assigned`.
    Release {
        tp: TopicPartition,
        still_assigned: HashMap<TopicPartition, i32>,
    },
}

struct PartState {
    next_offset: i64,
    /// Set while the record at `next_offset` waits for its writer schema
    /// (the partition is unassigned meanwhile).
    awaiting: Option<u32>,
    /// Set while replaying the rewind: the first live offset.
    live_from: Option<i64>,
    /// Partition count of the topic when this partition was assigned.
    partitions: i32,
}

/// Per-batch counters, added to the metrics once per batch.
#[derive(Default)]
struct BatchCounts {
    consumed: u64,
    dropped: u64,
    /// Seq anomalies: jump, regress, reset.
    seq: [u64; 3],
    /// Outboxes brought to half full (the batch ends, the loop paces).
    pressing: u64,
    /// Ticks that replaced one a client had not got yet, at its request.
    conflated: u64,
    errors: [u64; DecodeError::ALL.len()],
}

pub struct PollLoop {
    pub consumer: Arc<super::EdgeConsumer>,
    /// The configured topics.
    pub topics: Vec<Arc<str>>,
    pub commands: mpsc::Receiver<Command>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    pub status: Arc<Status>,
    /// How each of `topics` is read, in the same order.
    pub readers: std::cell::RefCell<Vec<TopicReader>>,
    /// Writer schemas, when a topic is mapped with `format=avro`.
    pub schemas: Option<Arc<Schemas>>,
    pub batch_max: usize,
    /// Longest wait for a half-full outbox's writer (zero: no pacing).
    pub pacing_patience: Duration,
    /// Per-tick traces; `None` while trace export is off.
    pub traces: Option<Traces>,
    pub shutdown: CancellationToken,
}

impl PollLoop {
    pub fn spawn(self, fatal: &CancellationToken) -> std::io::Result<std::thread::JoinHandle<()>> {
        super::spawn_thread(
            std::thread::Builder::new().name("tickfan-ingest".into()),
            fatal.clone(),
            move || self.run(),
        )
    }

    fn run(self) {
        let mut stall = StallBudget::new(self.pacing_patience, std::time::Instant::now());
        let mut unreadable = Unreadable::default();
        let mut parts: HashMap<TopicPartition, PartState> = HashMap::new();
        let mut wake: Vec<Arc<Outbox>> = Vec::new();
        let mut lag_due = std::time::Instant::now();
        // Every symbol lives in one partition of each topic: it is settled
        // (known to have no tick, when none is cached) once all are live.
        self.registry.set_sources(self.topics.len());
        while !self.shutdown.is_cancelled() {
            // Tests make the poll loop panic here (`tests/ingest_panic.rs`);
            // nothing without the `failpoints` feature of the fail crate.
            fail::fail_point!("ingest-poll-loop");
            if std::time::Instant::now() >= lag_due {
                lag_due += LAG_REFRESH;
                self.refresh_lag(&parts);
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.apply(cmd, &mut parts, &mut wake);
            }
            if self.metrics.partitions_awaiting_schema.get() > 0 {
                self.resume_awaiting(&mut parts);
            }
            // One span per poll batch; debug level, so free unless enabled.
            let batch = tracing::debug_span!("ingest_batch", records = tracing::field::Empty);
            let _batch = batch.enter();
            let mut counts = BatchCounts::default();
            let mut n = 0;
            // While pacing is off, a half-full outbox does not end the batch.
            let allowance = stall.allowance(std::time::Instant::now());
            while n < self.batch_max && (counts.pressing == 0 || allowance.is_none()) {
                let timeout = if n == 0 { IDLE_POLL } else { Duration::ZERO };
                match self.consumer.poll(timeout) {
                    None => break,
                    Some(Ok(msg)) => {
                        n += 1;
                        self.handle(&msg, &mut parts, &mut counts, &mut wake);
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => {
                        unreadable.note(&e, &self.metrics);
                        break;
                    }
                }
            }
            batch.record("records", n);
            if n > 0 {
                tracing::trace!("ingest batch handled");
            }
            let held: Vec<Arc<Outbox>> = if counts.pressing > 0 && allowance.is_some() {
                wake.iter().filter(|o| o.holds_back()).cloned().collect()
            } else {
                Vec::new()
            };
            wake_all(&mut wake);
            if n > 0 {
                self.flush_counts(&counts, &parts);
            }
            drop(_batch);
            if let Some(allowance) = allowance {
                self.pace(held, allowance, &mut stall);
            }
        }
        let _ = self.consumer.unassign();
    }

    fn handle(
        &self,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        parts: &mut HashMap<TopicPartition, PartState>,
        counts: &mut BatchCounts,
        wake: &mut Vec<Arc<Outbox>>,
    ) {
        // The configured topic's name, shared: no allocation per record.
        let Some(index) = self.topics.iter().position(|t| **t == *msg.topic()) else {
            return;
        };
        let topic = &self.topics[index];
        let tp = TopicPartition {
            topic: topic.clone(),
            partition: msg.partition(),
        };
        // A record of a partition released a moment ago may still be queued.
        let Some(st) = parts.get_mut(&tp) else {
            return;
        };
        if st.awaiting.is_some() {
            return; // fetched before the partition stopped; read again later
        }
        let offset = msg.offset();
        if offset < st.next_offset {
            return; // already processed (never expected; guards the no-duplicate promise)
        }
        st.next_offset = offset + 1;
        if st.live_from.is_some_and(|live| offset >= live) {
            // Rewind done (the record at `live_from - 1` was skipped or was
            // not a tick): go live before handling this one.
            st.live_from = None;
            self.go_live(&tp, st.partitions, counts, wake);
        }
        let replay = st.live_from.is_some();
        // Live records only: the snapshot rewind replays history.
        let trace = match &self.traces {
            Some(t) if !replay => t.start(msg, topic, std::time::SystemTime::now()),
            _ => None,
        };
        let record = Record {
            key: msg.key(),
            value: msg.payload().unwrap_or_default(),
            offset,
            timestamp_ms: msg.timestamp().to_millis(),
        };
        let schemas: &dyn WriterSchemas = match &self.schemas {
            Some(s) => s.as_ref(),
            None => &NoRegistry,
        };
        let decoded = self.readers.borrow_mut()[index].decode(&record, schemas);
        let decoded = match decoded {
            Ok(d) => d,
            Err(Skip::NeedSchema(id)) => {
                // Hold the partition at this record until its schema is in.
                st.next_offset = offset;
                st.awaiting = Some(id);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&tp.topic, tp.partition);
                if let Err(e) = self.consumer.incremental_unassign(&tpl) {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "unassign failed");
                }
                self.metrics.partitions_awaiting_schema.inc();
                if let Some(s) = &self.schemas {
                    s.request(id);
                }
                tracing::debug!(topic = %tp.topic, partition = tp.partition, offset, schema_id = id, "partition waits for a writer schema");
                return;
            }
            Err(Skip::Bad(e)) => {
                counts.errors[DecodeError::ALL
                    .iter()
                    .position(|x| *x == e)
                    .expect("listed")] += 1;
                if let Some(cx) = trace {
                    end_undecodable(cx, &e);
                }
                self.maybe_finish_replay(&tp, offset, parts, counts, wake);
                return;
            }
        };
        let tick = &decoded.tick;
        counts.consumed += 1;
        let bytes = wire::encode_tick_exact(tick, decoded.exact.as_ref());
        if replay {
            self.registry
                .remember_at(&tick.symbol, tick.seq, bytes, tick.ts, decoded.dense);
            self.maybe_finish_replay(&tp, offset, parts, counts, wake);
        } else {
            let fanout = trace
                .as_ref()
                .zip(self.traces.as_ref())
                .map(|(cx, t)| t.start_fanout(cx, tick));
            let p = self.registry.publish_at(
                &tick.symbol,
                tick.seq,
                bytes,
                tick.ts,
                decoded.dense,
                wake,
            );
            if let (Some(cx), Some(fanout)) = (trace, fanout) {
                end_trace(cx, fanout, &p);
            }
            counts.dropped += p.dropped;
            counts.pressing += p.pressing;
            counts.conflated += p.conflated;
            match p.seq {
                SeqCheck::InOrder => {}
                SeqCheck::Jump => counts.seq[0] += 1,
                SeqCheck::Regress => counts.seq[1] += 1,
                SeqCheck::Reset => counts.seq[2] += 1,
            }
        }
    }

    /// Waits until every outbox in `held` is under half full, or the
    /// `allowance` (the patience, or less when the stall budget is low)
    /// runs out; those still half full then are lagging, and the wait is
    /// charged to the budget. Polls every millisecond: a wait happens only
    /// under pressure, and a writer signalling this thread would cost every
    /// drain on the hot path.
    fn pace(&self, mut held: Vec<Arc<Outbox>>, allowance: Duration, stall: &mut StallBudget) {
        if held.is_empty() {
            return;
        }
        let start = std::time::Instant::now();
        let deadline = start + allowance;
        loop {
            held.retain(|o| o.holds_back());
            if held.is_empty() || self.shutdown.is_cancelled() {
                break;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                for o in &held {
                    o.set_lagging();
                }
                let waited = now - start;
                stall.charge(waited);
                self.metrics.lagging_clients.inc_by(held.len() as u64);
                self.metrics
                    .ingest_stalled_seconds
                    .inc_by(waited.as_secs_f64());
                tracing::debug!(
                    clients = held.len(),
                    waited_ms = waited.as_millis() as u64,
                    "pacing: writers took nothing within the patience; going on without them"
                );
                break;
            }
            std::thread::sleep(PACE_POLL.min(deadline - now));
        }
        self.metrics
            .ingest_paced_seconds
            .inc_by(start.elapsed().as_secs_f64());
    }

    fn maybe_finish_replay(
        &self,
        tp: &TopicPartition,
        offset: i64,
        parts: &mut HashMap<TopicPartition, PartState>,
        counts: &mut BatchCounts,
        wake: &mut Vec<Arc<Outbox>>,
    ) {
        let st = parts.get_mut(tp).expect("assigned");
        if st.live_from.is_some_and(|live| offset + 1 >= live) {
            st.live_from = None;
            let n = st.partitions;
            self.go_live(tp, n, counts, wake);
        }
    }

    /// The rewind of `tp` is replayed: send every waiting subscriber of its
    /// symbols the cached tick as a snapshot, and those of its symbols
    /// without a tick (once their partitions in every topic are live) an
    /// `unknown_symbol` notice. Queues only: the writers are woken with the
    /// batch.
    fn go_live(
        &self,
        tp: &TopicPartition,
        partitions: i32,
        counts: &mut BatchCounts,
        wake: &mut Vec<Arc<Outbox>>,
    ) {
        tracing::debug!(topic = %tp.topic, partition = tp.partition, "partition live");
        self.registry
            .partition_live(&tp.topic, tp.partition, partitions, true);
        counts.dropped += self.registry.flush_snapshots(
            |s| partition_for(s.as_str().as_bytes(), partitions) == tp.partition,
            wake,
        );
        self.set_view(tp, |v| v.warming = false);
    }

    fn apply(
        &self,
        cmd: Command,
        parts: &mut HashMap<TopicPartition, PartState>,
        wake: &mut Vec<Arc<Outbox>>,
    ) {
        match cmd {
            Command::Assign {
                tp,
                start,
                live_from,
                partitions,
            } => {
                let mut tpl = TopicPartitionList::new();
                if let Err(e) =
                    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(start))
                {
                    tracing::error!(error = %e, "bad partition offset");
                    return;
                }
                if let Err(e) = self.consumer.incremental_assign(&tpl) {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "assign failed");
                    return;
                }
                let warming = start < live_from;
                parts.insert(
                    tp.clone(),
                    PartState {
                        next_offset: start,
                        awaiting: None,
                        live_from: warming.then_some(live_from),
                        partitions,
                    },
                );
                self.status.partitions.lock().unwrap().insert(
                    tp.clone(),
                    PartitionView {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        next_offset: start,
                        warming,
                        live_from,
                    },
                );
                self.metrics.assigned_partitions.inc();
                if !warming {
                    let mut counts = BatchCounts::default();
                    self.go_live(&tp, partitions, &mut counts, wake);
                    self.metrics.dropped_outbox_full(counts.dropped);
                }
            }
            Command::Release { tp, still_assigned } => {
                let awaiting = parts.get(&tp).is_some_and(|st| st.awaiting.is_some());
                if awaiting {
                    // Already unassigned while it waited for a schema.
                    self.metrics.partitions_awaiting_schema.dec();
                } else {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&tp.topic, tp.partition);
                    if let Err(e) = self.consumer.incremental_unassign(&tpl) {
                        tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "unassign failed");
                    }
                }
                let Some(st) = parts.remove(&tp) else { return };
                self.registry
                    .partition_live(&tp.topic, tp.partition, st.partitions, false);
                self.status.partitions.lock().unwrap().remove(&tp);
                self.metrics.ingest_lag.remove(&lag_labels(&tp));
                self.metrics.assigned_partitions.dec();
                self.registry.forget(|s| {
                    let key = s.as_str().as_bytes();
                    partition_for(key, st.partitions) == tp.partition
                        && !still_assigned.iter().any(|(other, &n)| {
                            other.topic == tp.topic && partition_for(key, n) == other.partition
                        })
                });
            }
        }
    }

    /// Assigns again, at the record that waited, every partition whose
    /// writer schema is now known (or known not to exist).
    fn resume_awaiting(&self, parts: &mut HashMap<TopicPartition, PartState>) {
        let Some(schemas) = &self.schemas else { return };
        for (tp, st) in parts.iter_mut() {
            let Some(id) = st.awaiting else { continue };
            if matches!(schemas.lookup(id), crate::codec::mapping::Lookup::Pending) {
                schemas.request(id);
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(&tp.topic, tp.partition, Offset::Offset(st.next_offset))
                .is_err()
            {
                continue;
            }
            if let Err(e) = self.consumer.incremental_assign(&tpl) {
                tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "assign after a schema fetch failed; retrying");
                continue;
            }
            st.awaiting = None;
            self.metrics.partitions_awaiting_schema.dec();
            tracing::debug!(topic = %tp.topic, partition = tp.partition, offset = st.next_offset, schema_id = id, "partition goes on after its writer schema came");
        }
    }

    /// Sets `ingest_lag_records` of every assigned partition from the high
    /// watermark librdkafka last saw in a fetch response (no broker request).
    fn refresh_lag(&self, parts: &HashMap<TopicPartition, PartState>) {
        for (tp, st) in parts {
            let Some(high) = cached_high_watermark(&self.consumer, tp) else {
                continue;
            };
            self.metrics
                .ingest_lag
                .get_or_create(&lag_labels(tp))
                .set((high - st.next_offset).max(0));
        }
    }

    fn set_view(&self, tp: &TopicPartition, f: impl FnOnce(&mut PartitionView)) {
        if let Some(v) = self.status.partitions.lock().unwrap().get_mut(tp) {
            f(v);
        }
    }

    fn flush_counts(&self, c: &BatchCounts, parts: &HashMap<TopicPartition, PartState>) {
        let m = &self.metrics;
        m.ticks_consumed.inc_by(c.consumed);
        m.dropped_outbox_full(c.dropped);
        m.conflated.inc_by(c.conflated);
        for (kind, n) in ["jump", "regress", "reset"].into_iter().zip(c.seq) {
            m.seq_anomaly(kind, n);
        }
        for (e, &n) in DecodeError::ALL.iter().zip(&c.errors) {
            if n > 0 {
                m.decode_error(*e, n);
            }
        }
        let mut views = self.status.partitions.lock().unwrap();
        for (tp, st) in parts {
            if let Some(v) = views.get_mut(tp) {
                v.next_offset = st.next_offset;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rdkafka::{error::KafkaError, types::RDKafkaErrorCode as C};

    use super::{unreadable_reason, StallBudget, STALL_GRACE};
    use crate::telemetry::metrics::CONSUME_ERROR_REASONS;

    #[test]
    fn consumer_errors_map_onto_the_documented_reasons() {
        let cases = [
            (C::UnsupportedCompressionType, "compression"),
            (C::BadCompression, "compression"),
            (C::NotImplemented, "compression"),
            (C::BadMessage, "corrupt"),
            (C::InvalidRecord, "corrupt"),
            (C::TopicAuthorizationFailed, "authorization"),
            (C::OffsetOutOfRange, "offset_out_of_range"),
            (C::MessageSizeTooLarge, "too_large"),
            (C::BrokerTransportFailure, "other"),
        ];
        for (code, want) in cases {
            let got = unreadable_reason(&KafkaError::MessageConsumption(code));
            assert_eq!(got, want, "{code:?}");
            assert!(CONSUME_ERROR_REASONS.contains(&got), "{got} pre-registered");
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn secs(d: Option<Duration>) -> f64 {
        d.expect("pacing on").as_secs_f64()
    }

    #[test]
    fn stall_budget_holds_one_patience_then_refills_at_a_tenth_of_the_time() {
        let t0 = Instant::now();
        let mut b = StallBudget::new(1000 * MS, t0);
        assert_eq!(
            b.allowance(t0),
            Some(1000 * MS),
            "a whole patience at first"
        );
        b.charge(1000 * MS);
        assert_eq!(
            b.allowance(t0),
            Some(STALL_GRACE),
            "spent: the grace, on credit"
        );
        // A second later: a tenth of a second back.
        assert!((secs(b.allowance(t0 + 1000 * MS)) - 0.1).abs() < 1e-9);
        // Never more than one patience, however long it rests.
        assert_eq!(b.allowance(t0 + Duration::from_secs(3600)), Some(1000 * MS));
    }

    #[test]
    fn a_whole_patience_of_credit_turns_pacing_off_until_repaid() {
        let t0 = Instant::now();
        let mut b = StallBudget::new(100 * MS, t0);
        b.charge(100 * MS);
        b.charge(60 * MS);
        assert_eq!(b.allowance(t0), Some(STALL_GRACE), "60 ms of credit");
        b.charge(40 * MS);
        assert_eq!(b.allowance(t0), None, "a patience of credit: pacing off");
        // 10 ms repaid after 100 ms: on again, with the grace.
        assert_eq!(b.allowance(t0 + 100 * MS), Some(STALL_GRACE));
    }

    #[test]
    fn no_patience_is_no_pacing() {
        let t0 = Instant::now();
        assert_eq!(StallBudget::new(Duration::ZERO, t0).allowance(t0), None);
    }

    #[test]
    fn stalls_in_turn_cost_at_most_two_patiences_and_a_tenth_of_the_time() {
        // Clients that stop reading one after another, each 5 ms after the
        // ingest gave up on the one before: what the budget lets the ingest
        // wait in total (without it, 1,000 patiences).
        let patience = 1000 * MS;
        let t0 = Instant::now();
        let mut b = StallBudget::new(patience, t0);
        let mut now = t0;
        let mut waited = Duration::ZERO;
        for _ in 0..1000 {
            if let Some(w) = b.allowance(now) {
                b.charge(w);
                waited += w;
                now += w;
            }
            now += 5 * MS;
        }
        let elapsed = (now - t0).as_secs_f64();
        assert!(
            // (the last grace may go past the credit limit)
            waited.as_secs_f64() <= 2.0 + 0.1 * elapsed + STALL_GRACE.as_secs_f64() + 1e-6,
            "waited {waited:?} of {elapsed:.1} s"
        );
    }
}
