//! The history reader: serves the resumes the edge's memory cannot
//! (docs/protocol.md, "Resume after a reconnect") by reading the resumed
//! symbols' partitions from Kafka, on a thread and a consumer of its own, so
//! reading history never delays a live tick.
//!
//! Resumes that arrive together are read together: per partition, one read
//! from the earliest place any of them needs up to the high watermark seen
//! when it starts. Ticks after that are the live poll loop's, which holds
//! them for each resuming client until the registry has merged both
//! ([`Registry::finish_resume`]), so nothing between the client's tick and
//! the live stream is lost or sent twice.
//!
//! Where to start: for a topic whose seqs are offsets, right after the
//! client's tick; otherwise at `offsets_for_times(ts − 5 s)` (the tick's
//! event time, less a margin for producers whose clocks run behind). When
//! the broker cannot say (librdkafka's mock cluster answers no timestamp
//! lookup; or no record is that new), the reader reads back from the end in
//! growing chunks until it holds the tick after the client's, or a record
//! older than that margin, or the start of the partition, or
//! [`MAX_SCAN`] records.
//!
//! It never writes to a client: replays reach clients through the registry.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Message,
    Offset, TopicPartitionList,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    metadata::Counts,
    schemas::{NoRegistry, Schemas},
};
use crate::{
    codec::{
        mapping::{Record, SeqFrom, Skip, SymbolFrom, TopicReader, WriterSchemas},
        wire,
    },
    fanout::{wake_all, Finished, Past, Registry, ResumeNeed},
    kafka::KafkaConfig,
    market::Symbol,
    partition::partition_for,
    telemetry::Metrics,
};

/// How much earlier than the client's tick's `ts` a record may be stamped
/// (a producer's clock behind the feed's).
pub const CLOCK_MARGIN: Duration = Duration::from_secs(5);

/// Most records read for one partition's resumes; past it, those not yet
/// found end beyond the window (a `gap` and the snapshot).
pub const MAX_SCAN: i64 = 2_000_000;

/// Longest one read may take before the reader gives up on it.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest a broker request (watermarks, timestamp lookup) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest resumes wait for the topics' partition counts (the edge just
/// started).
const COUNTS_WAIT: Duration = Duration::from_secs(30);

/// The first chunk read back from the end when the start is not known.
const FIRST_CHUNK: i64 = 256;

pub struct HistoryReader {
    pub consumer: BaseConsumer,
    pub registry: Arc<Registry>,
    pub topics: Vec<Arc<str>>,
    /// How each of `topics` is read, in the same order.
    pub readers: Vec<TopicReader>,
    pub schemas: Option<Arc<Schemas>>,
    pub counts: watch::Receiver<Counts>,
    /// Where the poll loop went live in each partition it consumes.
    pub status: Arc<super::Status>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

/// What one resume got from the partitions read for it.
#[derive(Default)]
struct Found {
    ticks: Vec<Past>,
    /// Every record from the client's place on was read (matters only for
    /// seqs numbered from offsets: for a feed's own seqs a hole shows).
    complete: bool,
    dense: Option<bool>,
}

/// One resume being looked for in one partition.
struct Wanted<'a> {
    need: &'a ResumeNeed,
    /// Where its ticks start, when the topic or the broker says.
    start: Option<i64>,
    /// Records older than this (ms) are before the client's tick.
    before_ms: Option<i64>,
    /// A read went back to the client's tick (or the one after it), or
    /// to a record older than `before_ms`.
    reached: bool,
    found: bool,
}

/// The consumer settings of the history reader: as the edge's, plus
/// end-of-partition events (a read stops at the end).
pub fn consumer(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    super::side_consumer(kafka, "tickfan-edge-history")
}

impl HistoryReader {
    pub fn spawn(self, fatal: &CancellationToken) -> std::io::Result<std::thread::JoinHandle<()>> {
        super::spawn_thread(
            std::thread::Builder::new().name("tickfan-history".into()),
            fatal.clone(),
            move || self.run(),
        )
    }

    fn run(mut self) {
        let mut waiting: Vec<(ResumeNeed, std::time::Instant)> = Vec::new();
        let mut expire_at = std::time::Instant::now();
        while !self.shutdown.is_cancelled() {
            if std::time::Instant::now() >= expire_at {
                expire_at += Duration::from_secs(1);
                self.registry.expire_history(crate::market::now_micros());
            }
            let timeout = if waiting.is_empty() { 200 } else { 50 };
            let now = std::time::Instant::now();
            waiting.extend(
                self.registry
                    .take_resumes(Duration::from_millis(timeout))
                    .into_iter()
                    .map(|n| (n, now)),
            );
            if waiting.is_empty() {
                continue;
            }
            let counts = self.counts.borrow().clone();
            let known = |t: &Arc<str>| counts.get(t).is_some_and(|n| *n > 0);
            if !self.topics.iter().all(known)
                && waiting.iter().all(|(_, at)| at.elapsed() < COUNTS_WAIT)
            {
                continue; // metadata comes first
            }
            let needs: Vec<ResumeNeed> = waiting.drain(..).map(|(n, _)| n).collect();
            self.serve(&needs, &counts);
        }
        let _ = self.consumer.unassign();
    }

    /// Reads what `needs` miss, partition by partition, and hands each
    /// resume its ticks.
    fn serve(&mut self, needs: &[ResumeNeed], counts: &HashMap<Arc<str>, i32>) {
        let mut by_partition: HashMap<(usize, i32), Vec<usize>> = HashMap::new();
        for (k, need) in needs.iter().enumerate() {
            for (t, topic) in self.topics.iter().enumerate() {
                if let Some(&n) = counts.get(topic).filter(|n| **n > 0) {
                    let p = partition_for(need.symbol.as_str().as_bytes(), n);
                    by_partition.entry((t, p)).or_default().push(k);
                }
            }
        }
        let mut found: Vec<Found> = needs
            .iter()
            .map(|_| Found {
                complete: true,
                ..Found::default()
            })
            .collect();
        let mut any_partition = vec![false; needs.len()];
        for ((t, p), ks) in by_partition {
            let wanted: Vec<&ResumeNeed> = ks.iter().map(|&k| &needs[k]).collect();
            match self.read_partition(t, p, &wanted) {
                Ok(per) => {
                    for (&k, f) in ks.iter().zip(per) {
                        any_partition[k] = true;
                        let into = &mut found[k];
                        into.ticks.extend(f.ticks);
                        into.complete &= f.complete;
                        into.dense = into.dense.or(f.dense);
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topics[t], partition = p, error = %e, "resume: reading history failed; those resumes get a gap");
                    for &k in &ks {
                        found[k].complete = false;
                    }
                }
            }
        }
        let mut wake = Vec::new();
        for ((need, mut f), read) in needs.iter().zip(found).zip(any_partition) {
            f.ticks.sort_by_key(|p| p.seq);
            let n = f.ticks.len();
            let done =
                self.registry
                    .finish_resume(need, f.ticks, f.complete && read, f.dense, &mut wake);
            match done {
                Finished::Replayed(k) => self.metrics.resumed("kafka", "kafka", k),
                Finished::Beyond => self.metrics.resumed("beyond", "kafka", 0),
                Finished::Gone => {}
            }
            tracing::debug!(symbol = %need.symbol, after = need.after, read = n, ?done, "resume read from kafka");
        }
        wake_all(&mut wake);
    }

    /// The ticks after each resume's seq in one partition, up to its high
    /// watermark now.
    fn read_partition(
        &mut self,
        t: usize,
        partition: i32,
        needs: &[&ResumeNeed],
    ) -> Result<Vec<Found>, KafkaError> {
        let topic = self.topics[t].clone();
        // The read must reach where this edge's poll loop sends the
        // partition live: ticks before that (its snapshot rewind) are held
        // for the client only if the loop read them after it subscribed;
        // and it must end after the rewind, whose ticks are not sent live.
        let tp = super::TopicPartition {
            topic: topic.clone(),
            partition,
        };
        let give_up = std::time::Instant::now() + COUNTS_WAIT;
        let live_from = loop {
            // Once live: the ticks of its rewind (before `live_from`) that
            // came after the client subscribed are all held by then.
            if let Some(v) = self.status.partitions.lock().unwrap().get(&tp) {
                if !v.warming {
                    break v.live_from;
                }
            }
            if std::time::Instant::now() >= give_up || self.shutdown.is_cancelled() {
                return Err(KafkaError::Canceled);
            }
            // The subscription made the partition wanted: it is assigned
            // within a watermark lookup.
            std::thread::sleep(Duration::from_millis(10));
        };
        let (low, high) = self
            .consumer
            .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)?;
        let high = high.max(live_from);
        let offsets_are_seqs = self.readers[t].mapping().seq == Some(SeqFrom::Offset);
        let mut wanted: Vec<Wanted> = needs
            .iter()
            .map(|need| Wanted {
                need,
                // Seq = offset + 1: the next record is at offset `after`.
                start: offsets_are_seqs.then_some(need.after),
                before_ms: need
                    .ts
                    .map(|ts| ts / 1000 - CLOCK_MARGIN.as_millis() as i64),
                reached: false,
                found: false,
            })
            .collect();
        // Where the broker says each resume's time starts.
        let lookups: Vec<usize> = wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| w.start.is_none() && w.before_ms.is_some())
            .map(|(i, _)| i)
            .collect();
        for &i in &lookups {
            let at = wanted[i].before_ms.expect("filtered").max(0);
            let mut one = TopicPartitionList::new();
            one.add_partition_offset(&topic, partition, Offset::Offset(at))?;
            if let Ok(r) = self.consumer.offsets_for_times(one, REQUEST_TIMEOUT) {
                if let Some(Offset::Offset(o)) = r.elements().first().map(|e| e.offset()) {
                    wanted[i].start = Some(o);
                }
            }
        }
        let mut per: Vec<Found> = wanted.iter().map(|_| Found::default()).collect();
        // Read back from the high watermark, in chunks (prepended), until
        // every resume has its place.
        let mut chunks: Vec<Vec<(usize, Past, bool)>> = Vec::new();
        let mut lo = high;
        let mut chunk = FIRST_CHUNK;
        loop {
            for w in &mut wanted {
                w.found = w.reached || w.start.is_some_and(|s| lo <= s.max(low));
            }
            if lo <= low || high - lo >= MAX_SCAN || wanted.iter().all(|w| w.found) {
                break;
            }
            let target = wanted
                .iter()
                .filter(|w| !w.found)
                .map(|w| w.start.unwrap_or(lo - chunk))
                .min()
                .unwrap_or(lo)
                .max(low)
                .max(high - MAX_SCAN);
            let got = self.read_range(t, partition, target, lo, &mut wanted)?;
            chunks.push(got);
            lo = target;
            chunk = chunk.saturating_mul(2);
        }
        for got in chunks.into_iter().rev() {
            for (i, past, dense) in got {
                per[i].ticks.push(past);
                per[i].dense = Some(dense);
            }
        }
        for (w, f) in wanted.iter().zip(&mut per) {
            // From the client's place on, and Kafka still had it.
            f.complete = w.start.is_some_and(|s| lo <= s && low <= s);
        }
        Ok(per)
    }

    /// Reads `[from, to)` of a partition: the ticks of the wanted symbols
    /// after their clients' seqs, as `(index in wanted, tick, dense)`;
    /// marks resumes found whose place the range reaches.
    fn read_range(
        &mut self,
        t: usize,
        partition: i32,
        from: i64,
        to: i64,
        wanted: &mut [Wanted],
    ) -> Result<Vec<(usize, Past, bool)>, KafkaError> {
        let topic = self.topics[t].clone();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(from))?;
        self.consumer.assign(&tpl)?;
        // Records are keyed by symbol (the edge finds a symbol's partition
        // from it): one with another key is not decoded.
        let by_key = self.readers[t].mapping().symbol == SymbolFrom::Key;
        let symbols: HashMap<Symbol, Vec<usize>> =
            wanted
                .iter()
                .enumerate()
                .fold(HashMap::new(), |mut m, (i, w)| {
                    m.entry(w.need.symbol.clone()).or_default().push(i);
                    m
                });
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + READ_TIMEOUT;
        let mut next = from;
        while next < to {
            if self.shutdown.is_cancelled() || std::time::Instant::now() >= deadline {
                self.consumer.unassign()?;
                return Err(KafkaError::Canceled);
            }
            let msg = match self.consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // The end as of the last fetch, which may be older than
                    // `to` (the mock cluster's can be): done only when the
                    // position is past the range (control records count).
                    let at = self.consumer.position().ok().and_then(|p| {
                        p.find_partition(&topic, partition)
                            .and_then(|e| e.offset().to_raw())
                    });
                    if at.is_some_and(|o| o >= to) {
                        break;
                    }
                    continue;
                }
                Some(Err(e)) => {
                    self.consumer.unassign()?;
                    return Err(e);
                }
                Some(Ok(msg)) => msg,
            };
            if *msg.topic() != *topic || msg.partition() != partition {
                continue;
            }
            let offset = msg.offset();
            if offset < next {
                continue; // not of this read
            }
            if offset >= to {
                // Past the range (or records before it are gone: the
                // partition's start moved on; a hole shows in the seqs).
                break;
            }
            next = offset + 1;
            let stamped = msg.timestamp().to_millis();
            if let Some(ms) = stamped {
                for w in wanted.iter_mut() {
                    if w.before_ms.is_some_and(|b| ms < b) {
                        w.reached = true; // older than the client's tick
                    }
                }
            }
            match msg.key() {
                Some(key) if !symbols.keys().any(|s| s.as_str().as_bytes() == key) => continue,
                None if by_key => continue,
                _ => {}
            }
            let record = Record {
                key: msg.key(),
                value: msg.payload().unwrap_or_default(),
                offset,
                timestamp_ms: stamped,
            };
            let Some(decoded) = decode(&mut self.readers[t], self.schemas.as_deref(), &record)
            else {
                continue;
            };
            let Some(idx) = symbols.get(decoded.tick.symbol.as_str()) else {
                continue;
            };
            let bytes = wire::encode_tick_exact(&decoded.tick, decoded.exact.as_ref());
            for &i in idx {
                let w = &mut wanted[i];
                let seq = decoded.tick.seq;
                if seq <= w.need.after.saturating_add(decoded.dense as i64) {
                    w.reached = true; // the client's tick, or the one after it
                }
                if seq > w.need.after {
                    out.push((
                        i,
                        Past {
                            seq,
                            ts: decoded.tick.ts,
                            bytes: bytes.clone(),
                        },
                        decoded.dense,
                    ));
                }
            }
        }
        self.consumer.unassign()?;
        Ok(out)
    }
}

/// Decodes a record as the live loop does; a record whose writer schema is
/// not fetched yet is waited for (a few seconds).
fn decode(
    reader: &mut TopicReader,
    registry: Option<&Schemas>,
    record: &Record,
) -> Option<crate::codec::mapping::Decoded> {
    let schemas: &dyn WriterSchemas = match registry {
        Some(s) => s,
        None => &NoRegistry,
    };
    let give_up = std::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        match reader.decode(record, schemas) {
            Ok(d) => return Some(d),
            Err(Skip::NeedSchema(id)) if std::time::Instant::now() < give_up => {
                if let Some(s) = registry {
                    s.request(id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return None,
        }
    }
}
