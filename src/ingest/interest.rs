//! Partition interest: fetch exactly the partitions that hold a symbol with a
//! local subscriber.
//!
//! On every change of the subscribed-symbol set or of a partition count, the
//! manager recomputes the wanted (topic, partition) set. A newly wanted
//! partition has its watermarks looked up first, so the consumer can start a
//! short rewind before the end (to rebuild snapshots) and knows where replay
//! ends and live begins. A partition no longer wanted is released after the
//! linger unless it is wanted again before.

use std::{
    collections::{HashMap, HashSet},
    sync::{mpsc, Arc},
    time::Duration,
};

use rdkafka::consumer::Consumer;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{consumer::Command, metadata::Counts, TopicPartition};
use crate::{fanout::Registry, partition::partition_for};

const RETRY: Duration = Duration::from_secs(1);

/// A watermark lookup's outcome: `(low, high)` or an error text.
type Lookup = (TopicPartition, i32, Result<(i64, i64), String>);

pub struct Manager {
    consumer: Arc<super::EdgeConsumer>,
    registry: Arc<Registry>,
    commands: mpsc::Sender<Command>,
    counts: watch::Receiver<Counts>,
    linger: Duration,
    rewind: i64,
    /// Assigned partitions, with the partition count they were assigned under.
    assigned: HashMap<TopicPartition, i32>,
    /// Watermark lookups in flight.
    pending: HashSet<TopicPartition>,
    retry_at: HashMap<TopicPartition, Instant>,
    release_at: HashMap<TopicPartition, Instant>,
    /// Partition counts at the last reconcile.
    prev_counts: HashMap<std::sync::Arc<str>, i32>,
    /// Partitions added to a topic while this edge ran and wanted right
    /// then: they are read from their start, live.
    added: HashSet<TopicPartition>,
}

impl Manager {
    pub fn new(
        consumer: Arc<super::EdgeConsumer>,
        registry: Arc<Registry>,
        commands: mpsc::Sender<Command>,
        counts: watch::Receiver<Counts>,
        linger: Duration,
        rewind: i64,
    ) -> Manager {
        Manager {
            consumer,
            registry,
            commands,
            counts,
            linger,
            rewind,
            assigned: HashMap::new(),
            pending: HashSet::new(),
            retry_at: HashMap::new(),
            release_at: HashMap::new(),
            prev_counts: HashMap::new(),
            added: HashSet::new(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let (lookup_tx, mut lookup_rx) = tokio::sync::mpsc::channel::<Lookup>(64);
        loop {
            let now = Instant::now();
            self.reconcile(now, &lookup_tx);
            let next = self
                .release_at
                .values()
                .chain(self.retry_at.values())
                .min()
                .copied();
            let sleep = tokio::time::sleep_until(next.unwrap_or(now + Duration::from_secs(3600)));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.registry.interest_changed() => {}
                r = self.counts.changed() => if r.is_err() { return },
                Some((tp, count, result)) = lookup_rx.recv() => self.on_lookup(tp, count, result),
                _ = sleep => {}
            }
        }
    }

    fn wanted(&self) -> HashMap<TopicPartition, i32> {
        let counts = self.counts.borrow().clone();
        let mut wanted = HashMap::new();
        for symbol in self.registry.subscribed() {
            for (topic, &n) in counts.iter() {
                let partition = partition_for(symbol.as_str().as_bytes(), n);
                wanted.insert(
                    TopicPartition {
                        topic: topic.clone(),
                        partition,
                    },
                    n,
                );
            }
        }
        wanted
    }

    fn reconcile(&mut self, now: Instant, lookup_tx: &tokio::sync::mpsc::Sender<Lookup>) {
        let wanted = self.wanted();
        let counts = self.counts.borrow().clone();
        for (topic, &n) in counts.iter() {
            match self.prev_counts.insert(topic.clone(), n) {
                Some(old) if old < n => {
                    tracing::info!(topic = %topic, old, new = n, "partitions added");
                    self.added.extend(
                        wanted
                            .keys()
                            .filter(|tp| &tp.topic == topic && tp.partition >= old)
                            .cloned(),
                    );
                }
                _ => {}
            }
        }
        for (tp, &count) in &wanted {
            self.release_at.remove(tp);
            if self.assigned.contains_key(tp) || self.pending.contains(tp) {
                continue;
            }
            if self.retry_at.get(tp).is_some_and(|t| *t > now) {
                continue;
            }
            self.retry_at.remove(tp);
            self.pending.insert(tp.clone());
            let consumer = self.consumer.clone();
            let tx = lookup_tx.clone();
            let tp = tp.clone();
            tokio::spawn(async move {
                let (t, p) = (tp.topic.clone(), tp.partition);
                let result = tokio::task::spawn_blocking(move || {
                    consumer
                        .fetch_watermarks(&t, p, Duration::from_secs(5))
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
                let _ = tx.send((tp, count, result)).await;
            });
        }
        self.retry_at.retain(|tp, _| wanted.contains_key(tp));
        for tp in self.assigned.keys() {
            if !wanted.contains_key(tp) {
                self.release_at
                    .entry(tp.clone())
                    .or_insert(now + self.linger);
            }
        }
        let due: Vec<_> = self
            .release_at
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.release_at.remove(&tp);
            self.assigned.remove(&tp);
            tracing::info!(topic = %tp.topic, partition = tp.partition, "releasing partition");
            let keep = self.assigned.clone();
            let _ = self.commands.send(Command::Release {
                tp,
                still_assigned: keep,
            });
        }
    }

    fn on_lookup(&mut self, tp: TopicPartition, count: i32, result: Result<(i64, i64), String>) {
        self.pending.remove(&tp);
        match result {
            Ok((low, high)) => {
                // A partition added while we run holds only ticks written
                // after the change, some of them for symbols whose earlier
                // ticks came from another partition: read it all, live (the
                // registry's seq rules drop anything already delivered).
                let added = self.added.remove(&tp);
                let (start, live_from) = if added {
                    (low, low)
                } else {
                    ((high - self.rewind).max(low), high)
                };
                tracing::info!(
                    topic = %tp.topic, partition = tp.partition, start, high, added,
                    "assigning partition"
                );
                self.assigned.insert(tp.clone(), count);
                let _ = self.commands.send(Command::Assign {
                    tp,
                    start,
                    live_from,
                    partitions: count,
                });
            }
            Err(e) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "watermark lookup failed; will retry");
                self.retry_at.insert(tp, Instant::now() + RETRY);
            }
        }
    }
}
