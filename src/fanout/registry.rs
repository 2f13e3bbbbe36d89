//! The symbol registry: who subscribes to what, and the last-value cache.
//!
//! Both live in the same per-symbol entry behind one shard lock, so a new
//! subscriber's snapshot and the live ticks that follow it are ordered by that
//! lock: a tick is either already in the cache (and so in the snapshot) or is
//! pushed to the new subscriber after it, never both and never neither.
//!
//! It never does I/O and never talks to Kafka: publishers hand it encoded
//! ticks, and writers take them from their outboxes once the caller wakes
//! them ([`wake_all`]).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Condvar, Mutex, RwLock,
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::Notify;

use super::outbox::{Gap, Item, Outbox, Replay};
use crate::{
    codec::wire,
    market::{Seq, Symbol},
    partition::partition_for,
};

const SHARDS: usize = 64;

struct Last {
    seq: Seq,
    /// The tick's `ts` (µs since the epoch; 0: not known).
    ts: i64,
    live: Bytes,
    /// Built on first use; most cached ticks are never sent as a snapshot.
    snapshot: Option<Bytes>,
    /// Set while the partition is still replaying its rewind: a newer tick
    /// may follow, so new subscribers wait for the end of the replay.
    provisional: bool,
}

impl Last {
    fn snapshot_item(&mut self, symbol: &Symbol) -> Item {
        let bytes = self
            .snapshot
            .get_or_insert_with(|| wire::snapshot_of(&self.live))
            .clone();
        Item {
            symbol: symbol.clone(),
            seq: self.seq,
            bytes,
            ts: 0,
        }
    }
}

struct Subscriber {
    outbox: Arc<Outbox>,
    /// Subscribed before any tick of the symbol was cached: the first tick it
    /// gets is flagged as a snapshot.
    awaiting_snapshot: bool,
    /// Ticks at or below this seq are not sent (the client resumed from it,
    /// or got them in its replay); `Seq::MIN`: none.
    floor: Seq,
    /// While its resume is read from Kafka: the ticks published meanwhile,
    /// sent after the replay.
    hold: Option<Box<Hold>>,
    /// A resume beyond the window waits for a snapshot: the seqs from here
    /// to the snapshot's are announced as a gap first.
    announce_from: Option<Seq>,
    /// Its `unknown_symbol` notice was queued (once per subscription).
    told_unknown: bool,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(hold) = &self.hold {
            self.outbox.release_held(hold.ticks.len());
        }
    }
}

impl Subscriber {
    fn new(outbox: &Arc<Outbox>, awaiting_snapshot: bool) -> Subscriber {
        Subscriber {
            outbox: outbox.clone(),
            awaiting_snapshot,
            floor: Seq::MIN,
            hold: None,
            announce_from: None,
            told_unknown: false,
        }
    }

    /// Queues the `unknown_symbol` notice unless it was queued before;
    /// `true` when it queued it now (the caller wakes the writer).
    fn tell_unknown(&mut self, symbol: &Symbol) -> bool {
        if self.told_unknown || self.hold.is_some() {
            return false;
        }
        self.told_unknown = true;
        self.outbox.push_unknown(symbol.clone());
        true
    }

    /// Queues `item` as the subscriber's snapshot, after the gap its resume
    /// left, if any.
    fn push_snapshot(&mut self, item: Item) -> super::outbox::Pushed {
        if let Some(from_seq) = self.announce_from.take() {
            if item.seq > from_seq {
                self.outbox.push_gap(Gap {
                    symbol: item.symbol.clone(),
                    from_seq,
                    to_seq: item.seq - 1,
                });
            }
        }
        self.outbox.push_snapshot(item)
    }
}

/// The ticks published for a subscriber while its resume is read from
/// Kafka, counted in its outbox's held ticks ([`Outbox::take_held`]).
struct Hold {
    id: u64,
    /// The client's last seq.
    after: Seq,
    ticks: Vec<Past>,
    /// More ticks came than the client's replay room holds (all its
    /// resumes together): only the newest is kept, and the resume ends
    /// beyond the window.
    overflow: bool,
}

/// A recent tick, kept for resumes.
#[derive(Debug, Clone)]
pub struct Past {
    pub seq: Seq,
    /// The tick's `ts`, µs since the epoch.
    pub ts: i64,
    /// Its client encoding, as live subscribers got it.
    pub bytes: Bytes,
}

/// What a kept tick costs beyond its bytes (its slot and the `Bytes`).
const PAST_OVERHEAD: usize = 48;

impl Past {
    fn cost(&self) -> usize {
        self.bytes.len() + PAST_OVERHEAD
    }

    fn item(&self, symbol: &Symbol) -> Item {
        // ts 0: a replayed tick is no sample of the live latency.
        Item {
            symbol: symbol.clone(),
            seq: self.seq,
            bytes: self.bytes.clone(),
            ts: 0,
        }
    }
}

#[derive(Default)]
struct Entry {
    last: Option<Last>,
    subs: Vec<Subscriber>,
    /// The symbol's recent ticks, oldest first (see [`History`]).
    history: VecDeque<Past>,
    /// The symbol's seqs go up by one (as of its last tick).
    dense: bool,
}

/// How much recent history the registry keeps for resumes: every cached
/// symbol's ticks, at most `budget` bytes in all (a symbol that adds a tick
/// while the total is over it forgets its own oldest), none older than
/// `window` before the symbol's newest tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct History {
    pub budget: usize,
    pub window: Duration,
}

/// Where a client resumes a symbol: the seq and `ts` of the last tick it
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeFrom {
    pub seq: Seq,
    /// µs since the epoch; `None`: not given (the edge then cannot find the
    /// place in Kafka, except on a topic whose seqs are offsets).
    pub ts: Option<i64>,
}

/// How a resume was served at subscribe time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// Nothing missed: live ticks follow.
    Current,
    /// This many ticks replayed from memory.
    Memory(usize),
    /// Beyond the window: a `gap` and the snapshot (now, or when the
    /// symbol's first tick comes).
    Beyond,
    /// Read from Kafka ([`Registry::take_resumes`]); live ticks wait.
    Kafka,
}

/// A resume the edge's memory cannot serve: the history reader reads the
/// symbol's ticks after `after` from Kafka and hands them to
/// [`Registry::finish_resume`].
#[derive(Clone)]
pub struct ResumeNeed {
    pub id: u64,
    pub symbol: Symbol,
    pub outbox: Arc<Outbox>,
    /// The client's last seq.
    pub after: Seq,
    /// Its `ts`, µs since the epoch.
    pub ts: Option<i64>,
}

/// How [`Registry::finish_resume`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// This many ticks replayed (from Kafka and those held meanwhile).
    Replayed(usize),
    /// Beyond the window: a `gap` and the snapshot.
    Beyond,
    /// The client unsubscribed or left meanwhile.
    Gone,
}

/// How a tick's seq relates to the cached one of its symbol.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// The next seq, or the first tick seen.
    #[default]
    InOrder,
    /// Seqs were skipped upstream: subscribers get a `gap` notice, then the tick.
    Jump,
    /// At or below the cached seq (duplicate or reordered upstream): skipped.
    Regress,
    /// Back to seq 1 after a higher seq: the feed restarted its sequence. The
    /// tick is sent to every subscriber as a snapshot (a new baseline).
    Reset,
}

/// Outcome of publishing one tick.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Subscribers the tick was queued for.
    pub queued: u64,
    /// Older entries dropped from full outboxes to make room.
    pub dropped: u64,
    /// Outboxes this tick brought to half full (the ingest paces).
    pub pressing: u64,
    /// Subscribers for whom this tick replaced one they had not got yet, at
    /// their request (`max_hz`, `"mode":"latest"`).
    pub conflated: u64,
    pub seq: SeqCheck,
}

/// Sharded map of symbol → (last tick, subscribers).
pub struct Registry {
    // std mutexes: every critical section is a map lookup plus a few outbox
    // pushes, never an `.await`. Lock order: shard, then outbox.
    shards: Box<[Mutex<HashMap<Symbol, Entry>>]>,
    hasher: RandomState,
    interest: Notify,
    /// Symbols that gained their first or lost their last subscriber since
    /// the interest manager last looked ([`Registry::take_interest_changes`]).
    /// Appended under the symbol's shard lock, so each symbol's entries are in
    /// the order its transitions happened.
    interest_log: Mutex<InterestLog>,
    history: History,
    /// Bytes kept in all symbols' histories.
    history_bytes: AtomicUsize,
    resumes: Resumes,
    /// The partitions whose snapshot rewind has been replayed: a symbol
    /// with no cached tick once its partition is live in every source is
    /// unknown to the topic ([`Registry::partition_live`]). Lock order:
    /// shard, then this.
    live: RwLock<LiveParts>,
}

/// Which partitions of the edge's sources (topics) are live: assigned and
/// done replaying their snapshot rewind.
#[derive(Default)]
struct LiveParts {
    /// How many sources every symbol lives in (the consumed topics); 0:
    /// not said yet, no symbol is settled.
    sources: usize,
    /// Per source, per partition count (as assigned), the live partitions.
    by_source: HashMap<Arc<str>, HashMap<i32, HashSet<i32>>>,
}

impl LiveParts {
    /// Whether `symbol`'s partition is live in every source.
    fn settled(&self, symbol: &Symbol) -> bool {
        let key = symbol.as_str().as_bytes();
        self.sources > 0
            && self.by_source.len() == self.sources
            && self.by_source.values().all(|counts| {
                counts
                    .iter()
                    .any(|(&n, live)| live.contains(&partition_for(key, n)))
            })
    }
}

#[derive(Default)]
struct InterestLog {
    changes: Vec<(Symbol, bool)>,
    /// More than [`INTEREST_LOG_MAX`] changes piled up: the log was dropped
    /// and the reader must start over from [`Registry::subscribed`].
    overflowed: bool,
}

/// Resumes waiting for the history reader.
#[derive(Default)]
struct Resumes {
    queue: Mutex<Vec<ResumeNeed>>,
    ready: Condvar,
    next_id: AtomicU64,
}

/// Most interest changes kept for the manager before it must resync.
pub(crate) const INTEREST_LOG_MAX: usize = 1 << 16;

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// A registry that keeps no history: every resume is read from Kafka.
    pub fn new() -> Registry {
        Registry::with_history(History::default())
    }

    /// A registry that keeps `history` for resumes.
    pub fn with_history(history: History) -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            interest: Notify::new(),
            interest_log: Mutex::default(),
            history,
            history_bytes: AtomicUsize::new(0),
            resumes: Resumes::default(),
            live: RwLock::default(),
        }
    }

    /// Says how many sources (consumed topics) every symbol lives in: a
    /// symbol is settled, and told `unknown_symbol` without a tick, only
    /// once its partition is live in all of them.
    pub fn set_sources(&self, n: usize) {
        self.live.write().unwrap().sources = n;
    }

    /// Marks partition `partition` (of `count`) of `source` live (its
    /// snapshot rewind replayed) or not (released). Call before
    /// [`Registry::flush_snapshots`] for the same partition, which then
    /// tells the subscribers of its settled symbols that have no tick.
    pub fn partition_live(&self, source: &Arc<str>, partition: i32, count: i32, live: bool) {
        let mut l = self.live.write().unwrap();
        if live {
            l.by_source
                .entry(source.clone())
                .or_default()
                .entry(count)
                .or_default()
                .insert(partition);
        } else if let Some(counts) = l.by_source.get_mut(source) {
            if let Some(set) = counts.get_mut(&count) {
                set.remove(&partition);
                if set.is_empty() {
                    counts.remove(&count);
                }
            }
            if counts.is_empty() {
                l.by_source.remove(source);
            }
        }
    }

    /// Whether `symbol`'s partition is live in every source (so a symbol
    /// without a cached tick is one the topics have not held).
    pub fn settled(&self, symbol: &Symbol) -> bool {
        self.live.read().unwrap().settled(symbol)
    }

    /// Bytes of recent ticks kept for resumes.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes.load(Ordering::Relaxed)
    }

    /// Appends a tick to `entry`'s history and trims it (the window, then
    /// the budget); with no budget, keeps nothing.
    fn keep(&self, entry: &mut Entry, past: Past) {
        if self.history.budget == 0 {
            return;
        }
        let cost = past.cost();
        let total = self.history_bytes.fetch_add(cost, Ordering::Relaxed) + cost;
        let over = total.saturating_sub(self.history.budget);
        let oldest = past
            .ts
            .saturating_sub(self.history.window.as_micros() as i64);
        entry.history.push_back(past);
        let mut freed = 0;
        while let Some(front) = entry.history.front() {
            if freed >= over && front.ts >= oldest {
                break;
            }
            freed += front.cost();
            entry.history.pop_front();
        }
        if freed > 0 {
            self.history_bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Forgets kept ticks older than the window before `now` (µs since the
    /// epoch) of every symbol: a symbol that went quiet would otherwise
    /// keep its last ticks, and their share of the budget, until its
    /// partition is released. Called about once a second.
    pub fn expire_history(&self, now: i64) {
        if self.history.budget == 0 || self.history_bytes() == 0 {
            return;
        }
        let oldest = now.saturating_sub(self.history.window.as_micros() as i64);
        let mut freed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap();
            for entry in shard.values_mut() {
                while entry.history.front().is_some_and(|p| p.ts < oldest) {
                    freed += entry.history.pop_front().expect("front").cost();
                }
            }
        }
        if freed > 0 {
            self.history_bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    fn drop_history(&self, entry: &mut Entry) {
        let freed: usize = entry.history.drain(..).map(|p| p.cost()).sum();
        if freed > 0 {
            self.history_bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    fn shard(&self, symbol: &str) -> &Mutex<HashMap<Symbol, Entry>> {
        &self.shards[(self.hasher.hash_one(symbol) as usize) % SHARDS]
    }

    /// Adds `outbox` as a subscriber of `symbol` and queues the cached tick as
    /// a snapshot if there is one. Returns `true` if the snapshot push dropped
    /// an older entry.
    pub fn subscribe(&self, symbol: &Symbol, outbox: &Arc<Outbox>) -> bool {
        let mut shard = self.shard(symbol.as_str()).lock().unwrap();
        let entry = shard.entry(symbol.clone()).or_default();
        let first = entry.subs.is_empty();
        let mut dropped = false;
        let awaiting_snapshot = match &mut entry.last {
            Some(last) if !last.provisional => {
                dropped = outbox.push_snapshot(last.snapshot_item(symbol)).dropped;
                false
            }
            _ => true,
        };
        let mut sub = Subscriber::new(outbox, awaiting_snapshot);
        if entry.last.is_none() && self.settled(symbol) {
            // Its partitions are read: the topic has no tick of it.
            sub.tell_unknown(symbol);
        }
        entry.subs.push(sub);
        if first {
            self.log_interest(symbol, true);
        }
        drop(shard);
        if first {
            self.interest.notify_one();
        }
        dropped
    }

    /// Records a first-subscriber (`true`) or last-subscriber-gone (`false`)
    /// transition; called with the symbol's shard locked.
    fn log_interest(&self, symbol: &Symbol, subscribed: bool) {
        let mut log = self.interest_log.lock().unwrap();
        if log.overflowed {
            return;
        }
        if log.changes.len() >= INTEREST_LOG_MAX {
            log.changes = Vec::new();
            log.overflowed = true;
            return;
        }
        log.changes.push((symbol.clone(), subscribed));
    }

    /// The interest transitions since the last call, oldest first: `(symbol,
    /// true)` when it got its first subscriber, `(symbol, false)` when its
    /// last one left. Each entry states the symbol's state at that moment, so
    /// applying them in order to any view taken from [`Registry::subscribed`]
    /// after an earlier call converges to the current set. `None` when too
    /// many piled up: take a fresh [`Registry::subscribed`] (after this call).
    pub fn take_interest_changes(&self) -> Option<Vec<(Symbol, bool)>> {
        let mut log = self.interest_log.lock().unwrap();
        let changes = std::mem::take(&mut log.changes);
        (!std::mem::take(&mut log.overflowed)).then_some(changes)
    }

    /// Removes `outbox` from the subscribers of `symbol`.
    pub fn unsubscribe(&self, symbol: &Symbol, outbox: &Arc<Outbox>) {
        let mut shard = self.shard(symbol.as_str()).lock().unwrap();
        let Some(entry) = shard.get_mut(symbol.as_str()) else {
            return;
        };
        entry.subs.retain(|s| !Arc::ptr_eq(&s.outbox, outbox));
        let last_gone = entry.subs.is_empty();
        if last_gone && entry.last.is_none() {
            shard.remove(symbol.as_str());
        }
        if last_gone {
            self.log_interest(symbol, false);
        }
        drop(shard);
        if last_gone {
            self.interest.notify_one();
        }
    }

    /// Caches a live tick and queues it for every subscriber, applying the
    /// per-symbol seq rules of [`SeqCheck`]. Outboxes that were not yet in
    /// `wake` are added to it; the caller wakes them once per batch with
    /// [`wake_all`].
    pub fn publish(
        &self,
        symbol: &Symbol,
        seq: Seq,
        live: Bytes,
        wake: &mut Vec<Arc<Outbox>>,
    ) -> Published {
        self.publish_at(symbol, seq, live, 0, true, wake)
    }

    /// [`Registry::publish`] of a tick stamped `ts` (µs since the epoch),
    /// which writers use for the end-to-end latency metric. `dense`: the
    /// symbol's seqs go up by one, so a skip is ticks lost upstream (a
    /// `gap` notice); not so for seqs numbered from Kafka offsets, which
    /// skip the other symbols' records of the partition.
    pub fn publish_at(
        &self,
        symbol: &Symbol,
        seq: Seq,
        live: Bytes,
        ts: i64,
        dense: bool,
        wake: &mut Vec<Arc<Outbox>>,
    ) -> Published {
        let mut out = Published::default();
        let mut shard = self.shard(symbol.as_str()).lock().unwrap();
        let entry = shard.entry(symbol.clone()).or_default();
        let mut hole = None;
        if let Some(last) = &entry.last {
            out.seq = if seq == last.seq + 1 || (!dense && seq > last.seq) {
                SeqCheck::InOrder
            } else if seq > last.seq {
                hole = Some((last.seq + 1, seq - 1));
                SeqCheck::Jump
            } else if seq == 1 && last.seq > 1 {
                SeqCheck::Reset
            } else {
                out.seq = SeqCheck::Regress;
                return out;
            };
        }
        entry.dense = dense;
        let mut last = Last {
            seq,
            ts,
            live,
            snapshot: None,
            provisional: false,
        };
        for sub in &mut entry.subs {
            if let Some(hold) = &mut sub.hold {
                // Its resume is being read from Kafka: sent after it.
                hold.add(&sub.outbox, seq, ts, &last.live);
                continue;
            }
            if out.seq == SeqCheck::Reset {
                sub.floor = Seq::MIN;
            } else if seq <= sub.floor {
                continue; // the client resumed from here, or got it replayed
            }
            let mut gap_queued = false;
            let pushed = if sub.awaiting_snapshot || out.seq == SeqCheck::Reset {
                sub.awaiting_snapshot = false;
                sub.push_snapshot(last.snapshot_item(symbol))
            } else {
                if let Some((from_seq, to_seq)) = hole {
                    let gap = Gap {
                        symbol: symbol.clone(),
                        from_seq,
                        to_seq,
                    };
                    out.dropped += sub.outbox.push_gap(gap) as u64;
                    gap_queued = true;
                }
                sub.outbox.push_paced(Item {
                    symbol: symbol.clone(),
                    seq,
                    bytes: last.live.clone(),
                    ts,
                })
            };
            out.queued += 1;
            out.dropped += pushed.dropped as u64;
            out.pressing += pushed.pressing as u64;
            out.conflated += pushed.replaced as u64;
            // A tick that waits for its rate-limited symbol's turn wakes no
            // writer: the session sleeps until `Outbox::next_release`.
            if (pushed.queued || gap_queued) && sub.outbox.schedule() {
                wake.push(sub.outbox.clone());
            }
        }
        if self.history.budget > 0 {
            let past = Past {
                seq,
                ts,
                bytes: last.live.clone(),
            };
            self.keep(entry, past);
        }
        entry.last = Some(last);
        out
    }

    /// Caches a tick without sending it (replay of history while a fresh
    /// partition catches up); it joins the symbol's history, and the ticks
    /// held for subscribers whose resume is being read from Kafka.
    pub fn remember(&self, symbol: &Symbol, seq: Seq, live: Bytes) {
        self.remember_at(symbol, seq, live, 0, true)
    }

    /// [`Registry::remember`] of a tick stamped `ts` (µs since the epoch);
    /// `dense` as in [`Registry::publish_at`].
    pub fn remember_at(&self, symbol: &Symbol, seq: Seq, live: Bytes, ts: i64, dense: bool) {
        let mut shard = self.shard(symbol.as_str()).lock().unwrap();
        let entry = shard.entry(symbol.clone()).or_default();
        entry.dense = dense;
        for sub in &mut entry.subs {
            if let Some(hold) = &mut sub.hold {
                hold.add(&sub.outbox, seq, ts, &live);
            }
        }
        if self.history.budget > 0 {
            let past = Past {
                seq,
                ts,
                bytes: live.clone(),
            };
            self.keep(entry, past);
        }
        entry.last = Some(Last {
            seq,
            ts,
            live,
            snapshot: None,
            provisional: true,
        });
    }

    /// Ends the replay of symbols matching `pred`: their cached tick becomes
    /// final and is sent, as a snapshot, to every subscriber still waiting
    /// for one. Subscribers of those without a tick whose partitions are
    /// now live in every source ([`Registry::partition_live`]) are told
    /// `unknown_symbol`, once per subscription. Returns drops.
    pub fn flush_snapshots(
        &self,
        pred: impl Fn(&Symbol) -> bool,
        wake: &mut Vec<Arc<Outbox>>,
    ) -> u64 {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap();
            for (symbol, entry) in shard.iter_mut() {
                let Some(last) = &mut entry.last else {
                    if entry
                        .subs
                        .iter()
                        .any(|s| !s.told_unknown && s.hold.is_none())
                        && pred(symbol)
                        && self.settled(symbol)
                    {
                        for sub in &mut entry.subs {
                            if sub.tell_unknown(symbol) && sub.outbox.schedule() {
                                wake.push(sub.outbox.clone());
                            }
                        }
                    }
                    continue;
                };
                if !(last.provisional || entry.subs.iter().any(|s| s.awaiting_snapshot))
                    || !pred(symbol)
                {
                    continue;
                }
                last.provisional = false;
                for sub in entry.subs.iter_mut().filter(|s| s.awaiting_snapshot) {
                    sub.awaiting_snapshot = false;
                    dropped += sub.push_snapshot(last.snapshot_item(symbol)).dropped as u64;
                    if sub.outbox.schedule() {
                        wake.push(sub.outbox.clone());
                    }
                }
            }
        }
        dropped
    }

    /// Drops cached ticks of symbols matching `pred` (their partition was
    /// released, so the cache would go stale). Current subscribers will get
    /// their next tick flagged as a snapshot.
    pub fn forget(&self, pred: impl Fn(&Symbol) -> bool) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap();
            shard.retain(|symbol, entry| {
                if !pred(symbol) {
                    return true;
                }
                entry.last = None;
                self.drop_history(entry);
                for sub in &mut entry.subs {
                    sub.awaiting_snapshot = true;
                }
                !entry.subs.is_empty()
            });
        }
    }

    /// Adds `outbox` as a subscriber of `symbol` that resumes after `from`
    /// (docs/protocol.md, "Resume after a reconnect"): the ticks it missed
    /// are queued from the symbol's history when it reaches back far
    /// enough, then live ticks above them; otherwise the resume is queued
    /// for the history reader ([`Registry::take_resumes`]) and the symbol's
    /// live ticks are held for the client until it is done. Beyond the
    /// window (`from.ts` older than the history window before `now`, µs
    /// since the epoch; more ticks than the outbox's replay room), the
    /// client gets a `gap` and the snapshot. `every_tick`: the subscription
    /// gets every tick; a conflated one (`max_hz`, `"mode":"latest"`) gets
    /// the latest tick instead of a replay, and no gap.
    pub fn subscribe_resume(
        &self,
        symbol: &Symbol,
        outbox: &Arc<Outbox>,
        from: ResumeFrom,
        every_tick: bool,
        now: i64,
    ) -> Resumed {
        let mut shard = self.shard(symbol.as_str()).lock().unwrap();
        let entry = shard.entry(symbol.clone()).or_default();
        let first = entry.subs.is_empty();
        let mut sub = Subscriber::new(outbox, false);
        sub.floor = from.seq;
        let window = self.history.window.as_micros() as i64;
        let too_old = from.ts.is_some_and(|ts| ts < now.saturating_sub(window));
        let mut need = None;
        let dense = entry.dense;
        let result = match entry.last.as_mut().filter(|l| !l.provisional) {
            Some(last) if renumbered(last, from.seq, from.ts) => {
                // The feed restarted its numbering since the client's tick:
                // the snapshot is its new baseline (as a `reset`).
                sub.floor = Seq::MIN;
                sub.push_snapshot(last.snapshot_item(symbol));
                Resumed::Beyond
            }
            Some(last) if last.seq <= from.seq => Resumed::Current,
            Some(last) if !every_tick => {
                sub.push_snapshot(last.snapshot_item(symbol));
                Resumed::Memory(0)
            }
            Some(last) => {
                // The history reaches back to the client's tick (for seqs
                // that go up by one, to the one after it).
                let reach = from.seq.saturating_add(dense as i64);
                let covered = !too_old && entry.history.front().is_some_and(|f| f.seq <= reach);
                let replay = covered
                    .then(|| replay_of(symbol, entry.history.iter(), from.seq, dense, true))
                    .map(|(replay, n)| (outbox.push_replay(replay), n));
                match replay {
                    Some((true, n)) => Resumed::Memory(n),
                    Some((false, _)) | None
                        if covered || too_old || (dense && from.ts.is_none()) =>
                    {
                        sub.announce_from = Some(from.seq + 1);
                        sub.push_snapshot(last.snapshot_item(symbol));
                        Resumed::Beyond
                    }
                    _ => {
                        need = Some(self.hold(&mut sub, symbol, outbox, from));
                        Resumed::Kafka
                    }
                }
            }
            None if !every_tick => {
                sub.awaiting_snapshot = true;
                Resumed::Memory(0)
            }
            None if too_old => {
                sub.awaiting_snapshot = true;
                sub.announce_from = Some(from.seq + 1);
                Resumed::Beyond
            }
            None => {
                need = Some(self.hold(&mut sub, symbol, outbox, from));
                Resumed::Kafka
            }
        };
        if entry.last.is_none() && sub.awaiting_snapshot && self.settled(symbol) {
            sub.tell_unknown(symbol);
        }
        entry.subs.push(sub);
        if first {
            self.log_interest(symbol, true);
        }
        drop(shard);
        if first {
            self.interest.notify_one();
        }
        if let Some(need) = need {
            self.resumes.queue.lock().unwrap().push(need);
            self.resumes.ready.notify_one();
        }
        result
    }

    /// Makes `sub` hold the symbol's live ticks while its resume is read
    /// from Kafka.
    fn hold(
        &self,
        sub: &mut Subscriber,
        symbol: &Symbol,
        outbox: &Arc<Outbox>,
        from: ResumeFrom,
    ) -> ResumeNeed {
        let id = self.resumes.next_id.fetch_add(1, Ordering::Relaxed);
        sub.hold = Some(Box::new(Hold {
            id,
            after: from.seq,
            ticks: Vec::new(),
            overflow: false,
        }));
        ResumeNeed {
            id,
            symbol: symbol.clone(),
            outbox: outbox.clone(),
            after: from.seq,
            ts: from.ts,
        }
    }

    /// Resumes waiting to be read from Kafka, oldest first; waits up to
    /// `timeout` for one when there is none.
    pub fn take_resumes(&self, timeout: Duration) -> Vec<ResumeNeed> {
        let mut queue = self.resumes.queue.lock().unwrap();
        if queue.is_empty() {
            queue = self.resumes.ready.wait_timeout(queue, timeout).unwrap().0;
        }
        std::mem::take(&mut *queue)
    }

    /// Ends a resume read from Kafka: queues for the client the ticks after
    /// its seq, those of `kafka` (in order; `complete`: every record from
    /// the client's place up to where the reader stopped was read) and
    /// those held since it subscribed, with a `gap` for any hole; then
    /// sends it the symbol's live ticks. More than its outbox's replay room
    /// (or held ticks that overflowed it): a `gap` and the snapshot.
    /// `dense`: whether the symbol's seqs go up by one, as the reader found
    /// (`None`: as the edge last saw).
    pub fn finish_resume(
        &self,
        need: &ResumeNeed,
        kafka: Vec<Past>,
        complete: bool,
        dense: Option<bool>,
        wake: &mut Vec<Arc<Outbox>>,
    ) -> Finished {
        let symbol = &need.symbol;
        let mut shard = self.shard(symbol.as_str()).lock().unwrap();
        let Some(entry) = shard.get_mut(symbol.as_str()) else {
            return Finished::Gone;
        };
        let dense = dense.unwrap_or(entry.dense);
        let Some(sub) = entry.subs.iter_mut().find(|s| {
            Arc::ptr_eq(&s.outbox, &need.outbox) && s.hold.as_ref().is_some_and(|h| h.id == need.id)
        }) else {
            return Finished::Gone;
        };
        let hold = *sub.hold.take().expect("found by its hold");
        sub.outbox.release_held(hold.ticks.len());
        if let Some(last) = entry.last.as_mut().filter(|l| !l.provisional) {
            if renumbered(last, hold.after, need.ts) {
                // The feed restarted its numbering: neither the read nor
                // the held ticks are above the client's seq.
                sub.floor = Seq::MIN;
                sub.push_snapshot(last.snapshot_item(symbol));
                if sub.outbox.schedule() {
                    wake.push(sub.outbox.clone());
                }
                return Finished::Beyond;
            }
        }
        let first_held = hold.ticks.first().map(|p| p.seq);
        let mut merged: Vec<Past> = kafka
            .into_iter()
            .filter(|p| first_held.is_none_or(|f| p.seq < f))
            .collect();
        merged.extend(hold.ticks);
        let (replay, n) = replay_of(symbol, merged.iter(), hold.after, dense, complete);
        let newest = merged.iter().max_by_key(|p| p.seq);
        let done = if !hold.overflow && sub.outbox.push_replay(replay) {
            sub.floor = sub.floor.max(newest.map_or(hold.after, |p| p.seq));
            Finished::Replayed(n)
        } else {
            let snapshot = match (&mut entry.last, newest) {
                (Some(last), newest)
                    if !last.provisional && newest.is_none_or(|p| p.seq <= last.seq) =>
                {
                    Some(last.snapshot_item(symbol))
                }
                (_, Some(p)) => Some(Item {
                    symbol: symbol.clone(),
                    seq: p.seq,
                    bytes: wire::snapshot_of(&p.bytes),
                    ts: 0,
                }),
                _ => None,
            };
            if let Some(item) = snapshot {
                sub.floor = item.seq;
                sub.announce_from = Some(hold.after + 1);
                sub.push_snapshot(item);
            }
            Finished::Beyond
        };
        if sub.outbox.schedule() {
            wake.push(sub.outbox.clone());
        }
        done
    }

    /// Whether a tick of `symbol` is cached (final or still replaying).
    pub fn has_tick(&self, symbol: &str) -> bool {
        self.shard(symbol)
            .lock()
            .unwrap()
            .get(symbol)
            .is_some_and(|e| e.last.is_some())
    }

    /// Symbols with at least one subscriber.
    pub fn subscribed(&self) -> Vec<Symbol> {
        self.collect(|e| !e.subs.is_empty())
    }

    /// Symbols whose latest tick is cached, sorted.
    pub fn cached(&self) -> Vec<Symbol> {
        let mut v = self.collect(|e| e.last.is_some());
        v.sort();
        v
    }

    fn collect(&self, pred: impl Fn(&Entry) -> bool) -> Vec<Symbol> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap();
            out.extend(
                shard
                    .iter()
                    .filter(|(_, e)| pred(e))
                    .map(|(s, _)| s.clone()),
            );
        }
        out
    }

    /// Resolves when the set of subscribed symbols may have changed.
    pub async fn interest_changed(&self) {
        self.interest.notified().await
    }
}

/// Whether the symbol's numbering restarted since a client's tick
/// `(seq, ts)`: the edge's latest tick has a lower seq but a later time.
fn renumbered(last: &Last, seq: Seq, ts: Option<i64>) -> bool {
    last.seq < seq && ts.is_some_and(|ts| last.ts > ts)
}

impl Hold {
    /// Holds a tick published while the resume is read; past the outbox's
    /// replay room (all its holds together) only the newest is kept (the
    /// resume is beyond the window).
    fn add(&mut self, outbox: &Outbox, seq: Seq, ts: i64, live: &Bytes) {
        if seq <= self.after || self.ticks.last().is_some_and(|p| p.seq >= seq) {
            return;
        }
        if self.overflow || !outbox.take_held() {
            self.overflow = true;
            outbox.release_held(self.ticks.len());
            self.ticks.clear();
            if !outbox.take_held() {
                return; // not even the newest fits: the snapshot will do
            }
        }
        self.ticks.push(Past {
            seq,
            ts,
            bytes: live.clone(),
        });
    }
}

/// The replay of the ticks in `past` after seq `after`, with a `gap` for
/// each hole: between seqs that go up by one (`dense`), any skip; between
/// seqs numbered from offsets, only before the first tick when the reader
/// did not read from the client's place on (`!complete`). Returns the
/// entries and the number of ticks.
fn replay_of<'a>(
    symbol: &Symbol,
    past: impl Iterator<Item = &'a Past>,
    after: Seq,
    dense: bool,
    complete: bool,
) -> (Vec<Replay>, usize) {
    let mut out = Vec::new();
    let (mut prev, mut n) = (after, 0);
    for p in past {
        if p.seq <= prev {
            continue;
        }
        let hole = p.seq > prev + 1 && (dense || (prev == after && !complete));
        if hole {
            out.push(Replay::Gap(Gap {
                symbol: symbol.clone(),
                from_seq: prev + 1,
                to_seq: p.seq - 1,
            }));
        }
        out.push(Replay::Tick(p.item(symbol)));
        n += 1;
        prev = p.seq;
    }
    (out, n)
}

/// Wakes every writer touched by a batch, once.
pub fn wake_all(wake: &mut Vec<Arc<Outbox>>) {
    for ob in wake.drain(..) {
        ob.unschedule_and_wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::outbox::Out;

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    fn enc(seq: Seq) -> Bytes {
        Bytes::from(format!("{{\"seq\":{seq}}}"))
    }

    fn texts(ob: &Outbox) -> Vec<String> {
        ob.drain(usize::MAX)
            .entries
            .iter()
            .map(|o| match o {
                Out::Tick(b) => String::from_utf8(b.to_vec()).unwrap(),
                Out::Gap(g) => format!("gap {}..{}", g.from_seq, g.to_seq),
            })
            .collect()
    }

    #[test]
    fn snapshot_then_live_without_dup_or_hole() {
        let reg = Registry::new();
        let mut wake = Vec::new();
        reg.publish(&sym("A"), 1, enc(1), &mut wake);
        reg.publish(&sym("A"), 2, enc(2), &mut wake);
        let ob = Arc::new(Outbox::new(10));
        reg.subscribe(&sym("A"), &ob);
        reg.publish(&sym("A"), 3, enc(3), &mut wake);
        assert_eq!(texts(&ob), [r#"{"seq":2,"snapshot":true}"#, r#"{"seq":3}"#]);
        assert_eq!(wake.len(), 1);
        wake_all(&mut wake);
        assert!(wake.is_empty());
    }

    #[test]
    fn seq_rules_gap_on_jump_skip_regress_rebase_on_reset() {
        let reg = Registry::new();
        let ob = Arc::new(Outbox::new(32));
        let mut wake = Vec::new();
        reg.publish(&sym("A"), 1, enc(1), &mut wake);
        reg.subscribe(&sym("A"), &ob);
        let p = |seq| reg.publish(&sym("A"), seq, enc(seq), &mut Vec::new()).seq;
        assert_eq!(p(2), SeqCheck::InOrder);
        assert_eq!(p(5), SeqCheck::Jump);
        assert_eq!(p(5), SeqCheck::Regress);
        assert_eq!(p(3), SeqCheck::Regress);
        assert_eq!(p(6), SeqCheck::InOrder);
        assert_eq!(p(1), SeqCheck::Reset);
        assert_eq!(p(1), SeqCheck::Regress, "a repeated seq 1 is a duplicate");
        assert_eq!(p(2), SeqCheck::InOrder);
        assert_eq!(
            texts(&ob),
            [
                r#"{"seq":1,"snapshot":true}"#,
                r#"{"seq":2}"#,
                "gap 3..4",
                r#"{"seq":5}"#,
                r#"{"seq":6}"#,
                r#"{"seq":1,"snapshot":true}"#,
                r#"{"seq":2}"#,
            ]
        );
        assert_eq!(reg.cached(), vec![sym("A")]);
    }

    #[test]
    fn subscriber_during_replay_gets_the_final_snapshot_once() {
        let reg = Registry::new();
        let (early, late) = (Arc::new(Outbox::new(10)), Arc::new(Outbox::new(10)));
        let mut wake = Vec::new();
        reg.subscribe(&sym("A"), &early);
        reg.remember(&sym("A"), 4, enc(4));
        reg.subscribe(&sym("A"), &late); // mid-replay: must not get seq 4
        reg.remember(&sym("A"), 5, enc(5));
        assert!(late.is_empty() && early.is_empty());
        reg.flush_snapshots(|_| true, &mut wake);
        reg.publish(&sym("A"), 6, enc(6), &mut wake);
        for ob in [&early, &late] {
            assert_eq!(texts(ob), [r#"{"seq":5,"snapshot":true}"#, r#"{"seq":6}"#]);
        }
        let after = Arc::new(Outbox::new(10));
        reg.subscribe(&sym("A"), &after);
        assert_eq!(texts(&after), [r#"{"seq":6,"snapshot":true}"#]);
    }

    #[test]
    fn first_tick_is_snapshot_when_nothing_cached() {
        let reg = Registry::new();
        let ob = Arc::new(Outbox::new(10));
        reg.subscribe(&sym("A"), &ob);
        let mut wake = Vec::new();
        reg.remember(&sym("A"), 7, enc(7));
        assert!(ob.is_empty(), "replayed history is not sent live");
        reg.flush_snapshots(|s| s.as_str() == "A", &mut wake);
        reg.publish(&sym("A"), 8, enc(8), &mut wake);
        assert_eq!(texts(&ob), [r#"{"seq":7,"snapshot":true}"#, r#"{"seq":8}"#]);
    }

    #[test]
    fn only_subscribers_get_ticks_and_unsubscribe_stops() {
        let reg = Registry::new();
        let (a, b) = (Arc::new(Outbox::new(10)), Arc::new(Outbox::new(10)));
        reg.subscribe(&sym("A"), &a);
        reg.subscribe(&sym("B"), &b);
        let mut wake = Vec::new();
        let p = reg.publish(&sym("A"), 1, enc(1), &mut wake);
        assert_eq!(
            p,
            Published {
                queued: 1,
                dropped: 0,
                pressing: 0,
                conflated: 0,
                seq: SeqCheck::InOrder
            }
        );
        assert_eq!(texts(&a).len(), 1);
        assert!(b.is_empty());
        reg.unsubscribe(&sym("A"), &a);
        reg.publish(&sym("A"), 2, enc(2), &mut wake);
        assert!(a.is_empty());
        let mut subscribed = reg.subscribed();
        subscribed.sort();
        assert_eq!(subscribed, vec![sym("B")]);
        assert_eq!(reg.cached(), vec![sym("A")]);
    }

    #[test]
    fn unknown_symbols_leave_no_state_after_unsubscribe() {
        let reg = Registry::new();
        let ob = Arc::new(Outbox::new(10));
        for i in 0..1000 {
            reg.subscribe(&sym(&format!("X{i}")), &ob);
        }
        for i in 0..1000 {
            reg.unsubscribe(&sym(&format!("X{i}")), &ob);
        }
        assert!(reg.subscribed().is_empty());
        let total: usize = reg.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(total, 0);
    }

    fn with_history() -> Registry {
        Registry::with_history(History {
            budget: 1 << 20,
            window: Duration::from_secs(300),
        })
    }

    fn resumer(room: usize) -> Arc<Outbox> {
        Arc::new(Outbox::new(4).with_replay_room(room))
    }

    fn from(seq: Seq) -> ResumeFrom {
        ResumeFrom { seq, ts: Some(0) }
    }

    fn publish_n(reg: &Registry, range: std::ops::RangeInclusive<Seq>) {
        for seq in range {
            reg.publish(&sym("A"), seq, enc(seq), &mut Vec::new());
        }
    }

    #[test]
    fn resume_from_memory_replays_exactly_beyond_the_outbox_capacity() {
        let reg = with_history();
        publish_n(&reg, 1..=10);
        let ob = resumer(100);
        let r = reg.subscribe_resume(&sym("A"), &ob, from(3), true, 0);
        assert_eq!(r, Resumed::Memory(7));
        publish_n(&reg, 11..=11);
        let want: Vec<String> = (4..=11).map(|s| format!("{{\"seq\":{s}}}")).collect();
        assert_eq!(
            texts(&ob),
            want,
            "7 replayed in an outbox of 4, nothing dropped"
        );
        assert!(reg.take_resumes(Duration::ZERO).is_empty());
    }

    #[test]
    fn resume_when_current_or_ahead_sends_only_newer_ticks() {
        let reg = with_history();
        publish_n(&reg, 1..=5);
        let (current, ahead) = (resumer(10), resumer(10));
        assert_eq!(
            reg.subscribe_resume(&sym("A"), &current, from(5), true, 0),
            Resumed::Current
        );
        assert_eq!(
            reg.subscribe_resume(&sym("A"), &ahead, from(7), true, 0),
            Resumed::Current
        );
        publish_n(&reg, 6..=8);
        assert_eq!(
            texts(&current),
            [r#"{"seq":6}"#, r#"{"seq":7}"#, r#"{"seq":8}"#]
        );
        assert_eq!(texts(&ahead), [r#"{"seq":8}"#]);
    }

    #[test]
    fn resume_after_the_feed_renumbered_gets_the_new_baseline() {
        let reg = with_history();
        for seq in 1..=3 {
            reg.publish_at(&sym("A"), seq, enc(seq), 1000 + seq, true, &mut Vec::new());
        }
        // The client's tick: seq 50 of the old numbering, before these.
        let ob = resumer(100);
        let old = ResumeFrom {
            seq: 50,
            ts: Some(900),
        };
        assert_eq!(
            reg.subscribe_resume(&sym("A"), &ob, old, true, 1000),
            Resumed::Beyond
        );
        reg.publish_at(&sym("A"), 4, enc(4), 1004, true, &mut Vec::new());
        assert_eq!(texts(&ob), [r#"{"seq":3,"snapshot":true}"#, r#"{"seq":4}"#]);
        // Read from Kafka: the same once the read is done.
        let reg = Registry::new();
        let ob = resumer(100);
        assert_eq!(
            reg.subscribe_resume(&sym("A"), &ob, old, true, 900),
            Resumed::Kafka
        );
        let need = reg.take_resumes(Duration::ZERO).pop().unwrap();
        for seq in 1..=2 {
            reg.publish_at(&sym("A"), seq, enc(seq), 1000 + seq, true, &mut Vec::new());
        }
        let done = reg.finish_resume(&need, vec![], true, Some(true), &mut Vec::new());
        assert_eq!(done, Finished::Beyond);
        reg.publish_at(&sym("A"), 3, enc(3), 1003, true, &mut Vec::new());
        assert_eq!(texts(&ob), [r#"{"seq":2,"snapshot":true}"#, r#"{"seq":3}"#]);
    }

    #[test]
    fn resume_beyond_the_window_is_a_gap_then_the_snapshot() {
        let reg = with_history();
        publish_n(&reg, 1..=10);
        let few = resumer(3);
        assert_eq!(
            reg.subscribe_resume(&sym("A"), &few, from(2), true, 0),
            Resumed::Beyond
        );
        assert_eq!(texts(&few), ["gap 3..9", r#"{"seq":10,"snapshot":true}"#]);
        let old = resumer(100);
        let now = Duration::from_secs(3600).as_micros() as i64;
        assert_eq!(
            reg.subscribe_resume(&sym("A"), &old, from(8), true, now),
            Resumed::Beyond
        );
        assert_eq!(texts(&old), ["gap 9..9", r#"{"seq":10,"snapshot":true}"#]);
        // Conflated: the latest, no gap.
        let screen = resumer(100);
        assert_eq!(
            reg.subscribe_resume(&sym("A"), &screen, from(2), false, 0),
            Resumed::Memory(0)
        );
        assert_eq!(texts(&screen), [r#"{"seq":10,"snapshot":true}"#]);
    }

    #[test]
    fn resume_from_kafka_merges_the_read_with_ticks_held_meanwhile() {
        let reg = Registry::new(); // no memory: every resume reads Kafka
        publish_n(&reg, 1..=5);
        let ob = resumer(100);
        assert_eq!(
            reg.subscribe_resume(&sym("A"), &ob, from(2), true, 0),
            Resumed::Kafka
        );
        let need = reg.take_resumes(Duration::ZERO).pop().expect("queued");
        assert_eq!((need.after, need.ts), (2, Some(0)));
        publish_n(&reg, 6..=7); // held, not sent
        assert!(ob.is_empty());
        let past = |seq| Past {
            seq,
            ts: 0,
            bytes: enc(seq),
        };
        // The read overlaps the held ticks (the reader ran to a later end).
        let read = vec![past(3), past(4), past(5), past(6)];
        let mut wake = Vec::new();
        assert_eq!(
            reg.finish_resume(&need, read, true, Some(true), &mut wake),
            Finished::Replayed(5)
        );
        assert_eq!(wake.len(), 1);
        publish_n(&reg, 8..=8);
        let want: Vec<String> = (3..=8).map(|s| format!("{{\"seq\":{s}}}")).collect();
        assert_eq!(texts(&ob), want);
        assert_eq!(
            reg.finish_resume(&need, vec![], true, None, &mut wake),
            Finished::Gone
        );
    }

    #[test]
    fn resume_from_kafka_announces_holes_and_overflow() {
        let reg = Registry::new();
        publish_n(&reg, 1..=5);
        let past = |seq| Past {
            seq,
            ts: 0,
            bytes: enc(seq),
        };
        let ob = resumer(100);
        reg.subscribe_resume(&sym("A"), &ob, from(2), true, 0);
        let need = reg.take_resumes(Duration::ZERO).pop().unwrap();
        // Seq 3 is not in Kafka any more (retention): announced.
        reg.finish_resume(
            &need,
            vec![past(4), past(5)],
            false,
            Some(true),
            &mut Vec::new(),
        );
        assert_eq!(texts(&ob), ["gap 3..3", r#"{"seq":4}"#, r#"{"seq":5}"#]);
        // More held than the replay room: gap and the newest as snapshot.
        let small = resumer(2);
        reg.subscribe_resume(&sym("A"), &small, from(4), true, 0);
        let need = reg.take_resumes(Duration::ZERO).pop().unwrap();
        publish_n(&reg, 6..=9);
        assert_eq!(
            reg.finish_resume(&need, vec![], true, Some(true), &mut Vec::new()),
            Finished::Beyond
        );
        assert_eq!(texts(&small), ["gap 5..8", r#"{"seq":9,"snapshot":true}"#]);
        publish_n(&reg, 10..=10);
        assert_eq!(texts(&small), [r#"{"seq":10}"#]);
    }

    #[test]
    fn ticks_held_for_one_client_are_bounded_by_its_replay_room_across_symbols() {
        let reg = Registry::new();
        let past = |seq| Past {
            seq,
            ts: 0,
            bytes: enc(seq),
        };
        for s in ["A", "B"] {
            reg.publish(&sym(s), 1, enc(1), &mut Vec::new());
        }
        let ob = resumer(3);
        for s in ["A", "B"] {
            assert_eq!(
                reg.subscribe_resume(&sym(s), &ob, from(0), true, 0),
                Resumed::Kafka
            );
        }
        let needs = reg.take_resumes(Duration::ZERO);
        for seq in 2..=3 {
            for s in ["A", "B"] {
                reg.publish(&sym(s), seq, enc(seq), &mut Vec::new());
            }
        }
        // A holds 2, 3; B got room for one more: 2, then only its newest.
        let mut wake = Vec::new();
        let a = reg.finish_resume(&needs[0], vec![past(1)], true, Some(true), &mut wake);
        assert_eq!(a, Finished::Replayed(3));
        let b = reg.finish_resume(&needs[1], vec![past(1)], true, Some(true), &mut wake);
        assert_eq!(b, Finished::Beyond);
        assert_eq!(
            texts(&ob),
            [
                r#"{"seq":1}"#,
                r#"{"seq":2}"#,
                r#"{"seq":3}"#,
                "gap 1..2",
                r#"{"seq":3,"snapshot":true}"#
            ]
        );
    }

    #[test]
    fn history_stays_within_its_budget_and_window_and_is_forgotten_with_the_partition() {
        let cost = enc(1000).len() + PAST_OVERHEAD;
        let reg = Registry::with_history(History {
            budget: 10 * cost,
            window: Duration::from_micros(50),
        });
        for seq in 1000..1100 {
            reg.publish_at(&sym("A"), seq, enc(seq), 0, true, &mut Vec::new());
        }
        assert!(reg.history_bytes() <= 10 * cost, "{}", reg.history_bytes());
        assert!(reg.history_bytes() >= 9 * cost);
        // Ticks more than 50 µs older than the newest go.
        for (i, seq) in (1100..1105).enumerate() {
            reg.publish_at(
                &sym("A"),
                seq,
                enc(seq),
                1000 + i as i64,
                true,
                &mut Vec::new(),
            );
        }
        assert_eq!(reg.history_bytes(), 5 * cost);
        // A symbol that went quiet: its ticks expire with the window.
        reg.expire_history(1000 + 52);
        assert_eq!(reg.history_bytes(), 3 * cost);
        reg.forget(|_| true);
        assert_eq!(reg.history_bytes(), 0);
    }

    #[test]
    fn forget_drops_cache_and_rearms_snapshot() {
        let reg = Registry::new();
        let ob = Arc::new(Outbox::new(10));
        let mut wake = Vec::new();
        reg.subscribe(&sym("A"), &ob);
        reg.publish(&sym("A"), 1, enc(1), &mut wake);
        reg.forget(|_| true);
        assert!(reg.cached().is_empty());
        reg.publish(&sym("A"), 5, enc(5), &mut wake);
        assert_eq!(
            texts(&ob),
            [
                r#"{"seq":1,"snapshot":true}"#,
                r#"{"seq":5,"snapshot":true}"#
            ]
        );
    }

    fn unknown_of(ob: &Outbox) -> Vec<String> {
        ob.drain(usize::MAX)
            .unknown
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn a_symbol_without_a_tick_is_told_unknown_once_its_partition_is_live_in_every_source() {
        let reg = Registry::new();
        reg.set_sources(2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let ob = Arc::new(Outbox::new(10));
        let mut wake = Vec::new();
        reg.publish(&sym("KNOWN"), 1, enc(1), &mut wake);
        reg.subscribe(&sym("ZZZZ"), &ob);
        reg.subscribe(&sym("KNOWN"), &ob);
        assert!(unknown_of(&ob).is_empty(), "nothing live yet");
        // One partition (of one) live in the first source only: not settled.
        reg.partition_live(&a, 0, 1, true);
        reg.flush_snapshots(|_| true, &mut wake);
        assert!(unknown_of(&ob).is_empty(), "the other source may hold it");
        // Live in both: told, once, and only of the symbol without a tick.
        reg.partition_live(&b, 0, 1, true);
        wake.clear();
        reg.flush_snapshots(|_| true, &mut wake);
        assert_eq!(unknown_of(&ob), ["ZZZZ"]);
        assert_eq!(wake.len(), 1, "its writer is woken");
        reg.flush_snapshots(|_| true, &mut wake);
        assert!(unknown_of(&ob).is_empty(), "once per subscription");
        // A subscription made while live is told at once.
        let late = Arc::new(Outbox::new(10));
        reg.subscribe(&sym("ZZZZ"), &late);
        reg.subscribe(&sym("KNOWN"), &late);
        assert_eq!(unknown_of(&late), ["ZZZZ"]);
        // The symbol trades: its first tick is the snapshot, as ever.
        reg.publish(&sym("ZZZZ"), 1, enc(1), &mut wake);
        assert_eq!(texts(&ob), [r#"{"seq":1,"snapshot":true}"#]);
        // An unsubscribe takes a notice not yet sent with it.
        let gone = Arc::new(Outbox::new(10));
        reg.subscribe(&sym("NEVER"), &gone);
        gone.purge(&sym("NEVER"));
        assert!(unknown_of(&gone).is_empty());
        // Released: no longer settled.
        reg.partition_live(&b, 0, 1, false);
        assert!(!reg.settled(&sym("ANY")));
    }
}
