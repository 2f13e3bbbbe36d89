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
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tokio::sync::Notify;

use super::outbox::{Gap, Item, Outbox};
use crate::{
    codec::wire,
    market::{Seq, Symbol},
};

const SHARDS: usize = 64;

struct Last {
    seq: Seq,
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
}

#[derive(Default)]
struct Entry {
    last: Option<Last>,
    subs: Vec<Subscriber>,
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
}

#[derive(Default)]
struct InterestLog {
    changes: Vec<(Symbol, bool)>,
    /// More than [`INTEREST_LOG_MAX`] changes piled up: the log was dropped
    /// and the reader must start over from [`Registry::subscribed`].
    overflowed: bool,
}

/// Most interest changes kept for the manager before it must resync.
pub(crate) const INTEREST_LOG_MAX: usize = 1 << 16;

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            interest: Notify::new(),
            interest_log: Mutex::default(),
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
        entry.subs.push(Subscriber {
            outbox: outbox.clone(),
            awaiting_snapshot,
        });
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
        let mut last = Last {
            seq,
            live,
            snapshot: None,
            provisional: false,
        };
        for sub in &mut entry.subs {
            let mut gap_queued = false;
            let pushed = if sub.awaiting_snapshot || out.seq == SeqCheck::Reset {
                sub.awaiting_snapshot = false;
                sub.outbox.push_snapshot(last.snapshot_item(symbol))
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
        entry.last = Some(last);
        out
    }

    /// Caches a tick without sending it (replay of history while a fresh
    /// partition catches up).
    pub fn remember(&self, symbol: &Symbol, seq: Seq, live: Bytes) {
        let mut shard = self.shard(symbol.as_str()).lock().unwrap();
        shard.entry(symbol.clone()).or_default().last = Some(Last {
            seq,
            live,
            snapshot: None,
            provisional: true,
        });
    }

    /// Ends the replay of symbols matching `pred`: their cached tick becomes
    /// final and is sent, as a snapshot, to every subscriber still waiting
    /// for one. Returns drops.
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
                    dropped += sub.outbox.push_snapshot(last.snapshot_item(symbol)).dropped as u64;
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
                for sub in &mut entry.subs {
                    sub.awaiting_snapshot = true;
                }
                !entry.subs.is_empty()
            });
        }
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
}
