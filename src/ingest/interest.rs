//! Partition interest: fetch exactly the partitions that hold a symbol with a
//! local subscriber.
//!
//! On every change of the subscribed-symbol set or of a partition count, the
//! manager updates the wanted (topic, partition) set: incrementally, from the
//! registry's log of first-subscriber / last-subscriber transitions (a count
//! of subscribed symbols per partition), so a subscribe storm costs work per
//! changed symbol, not per subscribed symbol; from scratch only when a
//! partition count changes or the log overflowed. A newly wanted
//! partition has its watermarks looked up first, so the consumer can start a
//! short rewind before the end (to rebuild snapshots) and knows where replay
//! ends and live begins. A partition no longer wanted is released after the
//! linger unless it is wanted again before.
//!
//! It never reads a record: it only decides what the poll loop fetches,
//! through [`Command`]s.

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
    /// The subscribed symbols as last seen, and per partition how many of
    /// them it holds, under the partition counts in `view_counts`.
    view: Interest,
}

/// The manager's view of the subscribed symbols, by partition (public for
/// the benchmarks).
#[derive(Default)]
pub struct Interest {
    symbols: HashSet<crate::market::Symbol>,
    per_partition: HashMap<TopicPartition, usize>,
    /// Partition counts the per-partition counts were computed under.
    counts: HashMap<Arc<str>, i32>,
}

impl Interest {
    /// Brings the view up to date with the registry and the partition
    /// counts; returns the wanted partitions with their topic's count.
    pub fn update(
        &mut self,
        registry: &Registry,
        counts: &HashMap<Arc<str>, i32>,
    ) -> HashMap<TopicPartition, i32> {
        // Take the log before any snapshot: entries logged after it are
        // applied on the next update, and applying an entry the snapshot
        // already reflects changes nothing (each states a symbol's state).
        let changes = registry.take_interest_changes();
        let rebuild = changes.is_none() || *counts != self.counts;
        match changes {
            None => self.symbols = registry.subscribed().into_iter().collect(),
            Some(changes) if rebuild => {
                for (symbol, subscribed) in changes {
                    if subscribed {
                        self.symbols.insert(symbol);
                    } else {
                        self.symbols.remove(&symbol);
                    }
                }
            }
            Some(changes) => {
                for (symbol, subscribed) in changes {
                    self.apply(symbol, subscribed);
                }
            }
        }
        if rebuild {
            self.counts = counts.clone();
            self.per_partition.clear();
            let symbols = std::mem::take(&mut self.symbols);
            for symbol in &symbols {
                self.count(symbol, true);
            }
            self.symbols = symbols;
        }
        self.per_partition
            .keys()
            .map(|tp| (tp.clone(), self.counts[&tp.topic]))
            .collect()
    }

    fn apply(&mut self, symbol: crate::market::Symbol, subscribed: bool) {
        if subscribed {
            if self.symbols.insert(symbol.clone()) {
                self.count(&symbol, true);
            }
        } else if self.symbols.remove(&symbol) {
            self.count(&symbol, false);
        }
    }

    /// Adds (or removes) `symbol` to the count of its partition in every topic.
    fn count(&mut self, symbol: &crate::market::Symbol, add: bool) {
        for (topic, &n) in &self.counts {
            let tp = TopicPartition {
                topic: topic.clone(),
                partition: partition_for(symbol.as_str().as_bytes(), n),
            };
            if add {
                *self.per_partition.entry(tp).or_default() += 1;
            } else if let Some(c) = self.per_partition.get_mut(&tp) {
                *c -= 1;
                if *c == 0 {
                    self.per_partition.remove(&tp);
                }
            }
        }
    }
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
            view: Interest::default(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let (lookup_tx, mut lookup_rx) = tokio::sync::mpsc::channel::<Lookup>(64);
        loop {
            // Tests make the manager panic here (`tests/ingest_panic.rs`).
            fail::fail_point!("interest-manager");
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

    fn reconcile(&mut self, now: Instant, lookup_tx: &tokio::sync::mpsc::Sender<Lookup>) {
        let counts = self.counts.borrow().clone();
        let wanted = self.view.update(&self.registry, &counts);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fanout::Outbox, market::Symbol};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn counts(pairs: &[(&str, i32)]) -> HashMap<Arc<str>, i32> {
        pairs.iter().map(|(t, n)| (Arc::from(*t), *n)).collect()
    }

    /// The wanted set computed from scratch, as the manager used to.
    fn brute_force(
        reg: &Registry,
        counts: &HashMap<Arc<str>, i32>,
    ) -> HashMap<TopicPartition, i32> {
        let mut wanted = HashMap::new();
        for symbol in reg.subscribed() {
            for (topic, &n) in counts {
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

    fn sym(i: usize) -> Symbol {
        Symbol::parse(&format!("S{i}")).unwrap()
    }

    #[test]
    fn incremental_view_matches_a_full_recompute() {
        let reg = Registry::new();
        let outboxes: Vec<Arc<Outbox>> = (0..4).map(|_| Arc::new(Outbox::new(4))).collect();
        let mut subs: HashSet<(usize, usize)> = HashSet::new();
        let mut view = Interest::default();
        let mut rng = StdRng::seed_from_u64(42);
        let mut c = counts(&[("a", 8), ("b", 3)]);
        for step in 0..20_000 {
            let (o, s) = (rng.random_range(0..4), rng.random_range(0..200));
            if subs.insert((o, s)) {
                reg.subscribe(&sym(s), &outboxes[o]);
            } else {
                subs.remove(&(o, s));
                reg.unsubscribe(&sym(s), &outboxes[o]);
            }
            if step % 1000 == 999 {
                // A topic grows: its partitions are recounted.
                c.insert(Arc::from("a"), 8 + step / 1000);
            }
            if rng.random_range(0..10) == 0 {
                assert_eq!(view.update(&reg, &c), brute_force(&reg, &c), "step {step}");
            }
        }
        assert_eq!(view.update(&reg, &c), brute_force(&reg, &c));
        for (o, s) in subs.drain() {
            reg.unsubscribe(&sym(s), &outboxes[o]);
        }
        assert!(
            view.update(&reg, &c).is_empty(),
            "nothing wanted once all left"
        );
    }

    #[test]
    fn an_overflowed_log_resyncs_from_the_registry() {
        let reg = Registry::new();
        let ob = Arc::new(Outbox::new(4));
        let c = counts(&[("a", 16)]);
        let mut view = Interest::default();
        reg.subscribe(&sym(0), &ob);
        assert_eq!(view.update(&reg, &c), brute_force(&reg, &c));
        // More transitions than the log keeps, then some of them undone.
        for i in 1..=crate::fanout::registry::INTEREST_LOG_MAX + 10 {
            reg.subscribe(&sym(i), &ob);
        }
        for i in 0..100 {
            reg.unsubscribe(&sym(i), &ob);
        }
        assert!(reg.take_interest_changes().is_none(), "the log overflowed");
        // The flag was consumed by that call: overflow it again for the view.
        for i in 0..100 {
            reg.subscribe(&sym(i), &ob);
        }
        for i in 0..=crate::fanout::registry::INTEREST_LOG_MAX {
            reg.unsubscribe(&sym(i), &ob);
        }
        assert_eq!(view.update(&reg, &c), brute_force(&reg, &c));
        assert_eq!(view.symbols.len(), 10);
    }

    #[test]
    fn concurrent_changes_converge() {
        let reg = Arc::new(Registry::new());
        let c = counts(&[("a", 32)]);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    let ob = Arc::new(Outbox::new(4));
                    let mut rng = StdRng::seed_from_u64(w);
                    let mut mine = HashSet::new();
                    for _ in 0..30_000 {
                        let s = rng.random_range(0..300);
                        if mine.insert(s) {
                            reg.subscribe(&sym(s), &ob);
                        } else {
                            mine.remove(&s);
                            reg.unsubscribe(&sym(s), &ob);
                        }
                    }
                    (ob, mine)
                })
            })
            .collect();
        let mut view = Interest::default();
        let updater = {
            let (reg, stop, c) = (reg.clone(), stop.clone(), c.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    view.update(&reg, &c);
                }
                view
            })
        };
        let held: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Release);
        let mut view = updater.join().unwrap();
        assert_eq!(view.update(&reg, &c), brute_force(&reg, &c));
        assert!(!view.symbols.is_empty());
        drop(held);
    }
}
