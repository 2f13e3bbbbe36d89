//! The directory reader: fills the edge's symbol directory
//! ([`crate::fanout::Directory`]) with the symbols of every partition of
//! every consumed topic, not only of those the edge consumes, so `/symbols`
//! (the page's search) offers symbols nobody on this edge subscribes to yet.
//!
//! At start (once the topics' partition counts are known), then 1 s, 2 s,
//! 4 s... later until the passes are `--directory-interval` apart, a pass reads the last `--directory-sample`
//! records of each partition, topic by topic, on a thread and a consumer of
//! its own (like [`super::history`]), so it never delays the live poll loop.
//! It looks only at record keys (no value is decoded): a key that parses
//! as a symbol is one. A pass keeps at most `--directory-max` symbols; keys
//! of new symbols past it are counted (`tickfan_directory_dropped_keys_total`)
//! and not added. The pass then replaces the directory whole, so symbols
//! that stopped trading leave it once they are out of the sample.
//!
//! It never writes to a client and never touches the registry.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Message,
    Offset, TopicPartitionList,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::metadata::Counts;
use crate::{fanout::Directory, kafka::KafkaConfig, market::Symbol, telemetry::Metrics};

/// Longest one topic's read may take in a pass.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a watermark lookup may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the idle reader looks at the clock and the shutdown token.
const TICK: Duration = Duration::from_millis(100);

/// A pass that failed (no partition could be read) is tried again after this.
const RETRY: Duration = Duration::from_secs(5);

/// The gap after the first pass; it doubles up to `--directory-interval`.
const FIRST_GAP: Duration = Duration::from_secs(1);

/// The consumer settings of the directory reader: end-of-partition events
/// (a read stops at the end), nothing committed.
pub fn consumer(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    super::side_consumer(kafka, "tickfan-edge-directory")
}

pub struct DirectoryReader {
    pub consumer: BaseConsumer,
    pub topics: Vec<Arc<str>>,
    pub counts: watch::Receiver<Counts>,
    pub directory: Arc<Directory>,
    /// Records read from the end of each partition per pass.
    pub sample: i64,
    /// Most symbols kept.
    pub max: usize,
    pub interval: Duration,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

/// What one pass collected.
#[derive(Default)]
struct Pass {
    symbols: HashSet<Symbol>,
    /// Records whose key was a new symbol while the pass was full.
    dropped: u64,
    /// Partitions read to their end.
    read: usize,
}

impl Pass {
    fn key(&mut self, key: Option<&[u8]>, max: usize) {
        let Some(symbol) = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| Symbol::parse(k).ok())
        else {
            return;
        };
        if self.symbols.len() < max {
            self.symbols.insert(symbol);
        } else if !self.symbols.contains(&symbol) {
            self.dropped += 1;
        }
    }
}

impl DirectoryReader {
    pub fn spawn(self, fatal: &CancellationToken) -> std::io::Result<std::thread::JoinHandle<()>> {
        super::spawn_thread(
            std::thread::Builder::new().name("tickfan-directory".into()),
            fatal.clone(),
            move || self.run(),
        )
    }

    fn run(self) {
        let mut next = Instant::now();
        // Passes come 1 s, 2 s, 4 s... apart until `--directory-interval`:
        // a topic that is filling up (a feed that just started) is listed
        // within seconds, not at the next interval.
        let mut gap = FIRST_GAP.min(self.interval);
        while !self.shutdown.is_cancelled() {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(TICK.min(next - now));
                continue;
            }
            let counts = self.counts.borrow().clone();
            if !self
                .topics
                .iter()
                .all(|t| counts.get(t).is_some_and(|n| *n > 0))
            {
                // Metadata first (the edge just started, or a topic is missing).
                std::thread::sleep(TICK);
                continue;
            }
            let started = Instant::now();
            let mut pass = Pass::default();
            let mut failed = false;
            for topic in &self.topics {
                if let Err(e) = self.read_topic(topic, counts[topic], &mut pass) {
                    failed = true;
                    tracing::warn!(topic = %topic, error = %e, "symbol directory: reading the topic failed");
                }
                if self.shutdown.is_cancelled() {
                    return;
                }
            }
            let n = pass.symbols.len();
            if failed && n == 0 {
                next = Instant::now() + RETRY.min(self.interval);
                continue;
            }
            self.directory.replace(pass.symbols.into_iter().collect());
            let m = &self.metrics;
            m.directory_symbols.set(n as i64);
            m.directory_dropped_keys.inc_by(pass.dropped);
            m.directory_passes.inc();
            tracing::debug!(
                symbols = n,
                dropped_keys = pass.dropped,
                partitions = pass.read,
                took_ms = started.elapsed().as_millis() as u64,
                "symbol directory pass"
            );
            if pass.dropped > 0 {
                tracing::warn!(
                    max = self.max,
                    dropped_keys = pass.dropped,
                    "symbol directory full: keys of further symbols not added (--directory-max)"
                );
            }
            next = Instant::now() + gap;
            gap = (gap * 2).min(self.interval);
        }
    }

    /// Reads the last `sample` records of every partition of `topic` (of
    /// `partitions`), adding their keys to `pass`.
    fn read_topic(
        &self,
        topic: &Arc<str>,
        partitions: i32,
        pass: &mut Pass,
    ) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        // Per partition, the offset it is read to (the high watermark now).
        let mut ends: HashMap<i32, i64> = HashMap::new();
        let mut last_error = None;
        for p in 0..partitions {
            match self.consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT) {
                Ok((low, high)) if high > low => {
                    let start = (high - self.sample).max(low);
                    tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
                    ends.insert(p, high);
                }
                Ok(_) => pass.read += 1, // empty
                Err(e) => {
                    tracing::debug!(topic = %topic, partition = p, error = %e, "symbol directory: watermark lookup failed");
                    last_error = Some(e);
                }
            }
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
        if ends.is_empty() {
            return last_error.map_or(Ok(()), Err);
        }
        self.consumer.assign(&tpl)?;
        let give_up = Instant::now() + READ_TIMEOUT;
        while !ends.is_empty() && Instant::now() < give_up && !self.shutdown.is_cancelled() {
            match self.consumer.poll(TICK) {
                None => {}
                Some(Ok(msg)) => {
                    let p = msg.partition();
                    let Some(&end) = ends.get(&p) else { continue };
                    if msg.offset() < end {
                        pass.key(msg.key(), self.max);
                    }
                    if msg.offset() + 1 >= end {
                        ends.remove(&p);
                        pass.read += 1;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) if ends.remove(&p).is_some() => {
                    pass.read += 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    tracing::debug!(topic = %topic, error = %e, "symbol directory: consumer error");
                }
            }
        }
        if !ends.is_empty() {
            tracing::debug!(topic = %topic, unfinished = ends.len(), "symbol directory: partitions not read to their end in time");
        }
        self.consumer.unassign()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_keeps_symbol_keys_up_to_its_bound_and_counts_the_rest() {
        let mut pass = Pass::default();
        for k in [
            "AAPL",
            "MSFT",
            "AAPL",
            "not a symbol!",
            "IBM",
            "IBM",
            "GOOG",
        ] {
            pass.key(Some(k.as_bytes()), 2);
        }
        pass.key(None, 2);
        pass.key(Some(&[0xff, 0xfe]), 2);
        let mut got: Vec<&str> = pass.symbols.iter().map(|s| s.as_str()).collect();
        got.sort();
        assert_eq!(got, ["AAPL", "MSFT"]);
        assert_eq!(pass.dropped, 3, "IBM twice and GOOG: records, not symbols");
    }
}
