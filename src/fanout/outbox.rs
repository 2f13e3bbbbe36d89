//! The per-client outbox: a bounded ring of pre-encoded ticks that drops its
//! oldest entry when full and remembers, per symbol, which seqs it dropped so
//! the writer can tell the client in-band.
//!
//! Memory per client is at most `capacity` entries (each a refcount on shared
//! bytes) plus, per subscribed symbol, one pending gap, one pending
//! `unknown_symbol` notice ([`Outbox::push_unknown`]) and (with `max_hz` or
//! `"mode":"latest"`) one waiting tick, whatever the client does.
//!
//! `"mode":"latest"` ([`Outbox::set_latest`]): a symbol keeps at most one
//! tick queued; a newer one replaces it in its place (counted, and said in
//! the tick as `"conflated":n`), so a stalled quote screen holds the newest
//! price of every symbol it watches instead of losing the oldest ticks of
//! whichever symbols.
//!
//! Pacing (see `ingest::consumer`): an outbox that fills to half its capacity
//! tells the ingest, which then waits a bounded time for the writer to take
//! from it. An outbox whose writer did not take in that time is *lagging*: it
//! no longer holds the ingest back, and drops oldest as always, until its
//! writer has brought it down to a quarter of its capacity.
//!
//! Max frequency (conflation): a symbol given a rate with
//! [`Outbox::set_max_rate`] holds at most one pending tick while it waits
//! for its next turn. A tick that arrives when the symbol's turn has come
//! (and none is pending) is queued at once; one that arrives earlier waits
//! as the pending tick, replacing the one that waited (counted as
//! conflated), and is released by the first drain after its turn comes. So
//! the client gets at most one tick of the symbol per interval, each the
//! latest at the moment it is released, the first after a quiet spell at
//! once, and each says how many ticks it stands for (`"conflated":n`). Per
//! tick this costs a hash lookup and a swap; the writer is woken only when
//! something is queued, and the session sleeps until [`Outbox::next_release`].
//!
//! It never does I/O, and a push never waits for the writer to take: when
//! full, it drops the oldest entry and records the gap.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

/// What one push did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pushed {
    /// The oldest entry was dropped to make room.
    pub dropped: bool,
    /// The outbox just reached half its capacity and is not lagging: the
    /// ingest should give its writer time before pushing more.
    pub pressing: bool,
    /// Something was queued for the writer (not the case for a tick that
    /// waits for its symbol's turn): the writer should be woken.
    pub queued: bool,
    /// A tick the client had not got yet was replaced by this newer one, at
    /// the client's request (`max_hz`, `"mode":"latest"`): counted in
    /// `tickfan_conflated_total`.
    pub replaced: bool,
}

use bytes::Bytes;
// tokio's clock, which the sessions sleep on (and tests can pause); outside
// a runtime (the ingest thread) it is the system's monotonic clock.
use tokio::time::Instant;

use futures_util::task::AtomicWaker;
use std::task::Context;

use crate::market::{Seq, Symbol};

/// One queued tick: its symbol and seq (for gap accounting) and its shared
/// client encoding.
#[derive(Debug, Clone)]
pub struct Item {
    pub symbol: Symbol,
    pub seq: Seq,
    pub bytes: Bytes,
    /// The tick's `ts` (µs since the epoch) for the end-to-end latency
    /// metric; 0 for snapshots, which are not latency samples.
    pub ts: i64,
}

/// Ticks of one symbol the client will not get, `from_seq..=to_seq`: dropped
/// from a full outbox, or never published upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub symbol: Symbol,
    pub from_seq: Seq,
    pub to_seq: Seq,
}

/// One entry of a resume's replay ([`Outbox::push_replay`]).
#[derive(Debug, Clone)]
pub enum Replay {
    Tick(Item),
    /// Seqs never published upstream, where they were in the stream.
    Gap(Gap),
}

/// A queued entry, in the order the client must see it.
#[derive(Debug, Clone)]
enum Entry {
    Tick(Item),
    /// A tick of a rate-limited symbol standing for `conflated` more that
    /// were replaced before it was released.
    Conflated(Item, u32),
    /// The place of a `"mode":"latest"` symbol's one queued tick, which
    /// newer ticks replace until it is drained (held in `State::latest`).
    Latest(Symbol),
    /// An upstream hole, announced where it happened in the stream.
    Gap(Gap),
}

/// A `"mode":"latest"` symbol: at most one tick of it queued, the newest.
#[derive(Debug, Default)]
struct Latest {
    /// The queued tick and how many it replaced (or stands for).
    queued: Option<(Item, u32)>,
}

/// A rate-limited symbol's turn and the tick waiting for it.
#[derive(Debug)]
struct Slot {
    interval: Duration,
    /// When the next tick may go; `None`: at once.
    next_due: Option<Instant>,
    pending: Option<Item>,
    /// Ticks replaced since the last one released.
    skipped: u32,
}

/// What a drain hands the writer, in order.
#[derive(Debug, Clone)]
pub enum Out {
    Tick(Bytes),
    Gap(Gap),
}

/// What a writer takes out of an outbox in one go.
#[derive(Debug, Default)]
pub struct Drained {
    /// Drops since the last drain; they precede every entry below.
    pub dropped: Vec<Gap>,
    /// Queued ticks and upstream gaps, in order.
    pub entries: Vec<Out>,
    /// Total encoded size of the ticks in `entries`.
    pub bytes: usize,
    /// Ticks in `entries`.
    pub ticks: usize,
    /// More entries are queued than fitted in this drain.
    pub more: bool,
    /// The oldest `ts` among the live ticks in `entries` (0: none).
    pub oldest_ts: i64,
    /// Subscribed symbols the edge says it has no tick of
    /// ([`Outbox::push_unknown`]), in the order they were found; they
    /// precede every entry (no tick of them can be queued before the
    /// notice).
    pub unknown: Vec<Symbol>,
}

impl Drained {
    pub fn is_empty(&self) -> bool {
        self.dropped.is_empty() && self.entries.is_empty() && self.unknown.is_empty()
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Entry>,
    /// Dropped ranges per symbol since the last drain.
    dropped: HashMap<Symbol, (Seq, Seq)>,
    /// Rate-limited symbols (empty unless the client asked for a max rate).
    slots: HashMap<Symbol, Slot>,
    /// When pending ticks are due, soonest first (an entry whose slot has
    /// gone or was released is skipped).
    due: BinaryHeap<Reverse<(Instant, Symbol)>>,
    /// `"mode":"latest"` symbols (empty unless the client asked for it).
    latest: HashMap<Symbol, Latest>,
    /// The release time the session's timer is armed for
    /// ([`Outbox::set_armed`]): a tick that starts waiting for a later turn
    /// need not wake the session, which looks again at that time.
    armed: Option<Instant>,
    /// Entries queued beyond the capacity by a resume's replay
    /// ([`Outbox::push_replay`]), which the outbox holds on top of its
    /// capacity until the writer has taken as many.
    extra: usize,
    /// `unknown_symbol` notices not yet drained: at most one per
    /// subscription (the registry tells each once), never dropped to make
    /// room and not counted against the capacity.
    unknown: Vec<Symbol>,
}

impl State {
    /// Appends `entry`, dropping the oldest first when full. A tick of a
    /// `"mode":"latest"` symbol (unless `plain`: snapshots) replaces the
    /// symbol's queued tick instead, if it has one.
    fn enqueue(&mut self, entry: Entry, capacity: usize, plain: bool) -> Enqueued {
        let mut entry = entry;
        if !plain && !self.latest.is_empty() {
            if let Entry::Tick(item) | Entry::Conflated(item, _) = &entry {
                if let Some(l) = self.latest.get_mut(&item.symbol) {
                    let (item, n) = match entry {
                        Entry::Tick(i) => (i, 0),
                        Entry::Conflated(i, n) => (i, n),
                        _ => unreachable!(),
                    };
                    let symbol = item.symbol.clone();
                    match &mut l.queued {
                        Some((old, k)) => {
                            *k = k.saturating_add(1).saturating_add(n);
                            *old = item;
                            return Enqueued {
                                dropped: false,
                                replaced: true,
                            };
                        }
                        None => {
                            l.queued = Some((item, n));
                            entry = Entry::Latest(symbol);
                        }
                    }
                }
            }
        }
        let dropped = if self.queue.len() >= capacity + self.extra {
            match self.queue.pop_front().expect("full queue has a front") {
                Entry::Tick(old) | Entry::Conflated(old, _) => {
                    self.record_drop(old.symbol, old.seq, old.seq)
                }
                Entry::Latest(symbol) => {
                    let queued = self.latest.get_mut(&symbol).and_then(|l| l.queued.take());
                    if let Some((old, _)) = queued {
                        self.record_drop(symbol, old.seq, old.seq);
                    }
                }
                Entry::Gap(g) => self.record_drop(g.symbol, g.from_seq, g.to_seq),
            }
            true
        } else {
            false
        };
        self.queue.push_back(entry);
        Enqueued {
            dropped,
            replaced: false,
        }
    }

    /// Queues every pending tick whose turn has come by `now`.
    fn release_due(&mut self, now: Instant, capacity: usize) {
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, symbol)) = self.due.pop().expect("peeked");
            let Some(slot) = self.slots.get_mut(&symbol) else {
                continue;
            };
            let Some(item) = slot.pending.take() else {
                continue;
            };
            let n = std::mem::take(&mut slot.skipped);
            slot.next_due = Some(now + slot.interval);
            self.enqueue(Entry::Conflated(item, n), capacity, false);
        }
    }
}

/// What [`State::enqueue`] did.
struct Enqueued {
    dropped: bool,
    /// A `"mode":"latest"` symbol's queued tick was replaced.
    replaced: bool,
}

impl State {
    fn record_drop(&mut self, symbol: Symbol, from: Seq, to: Seq) {
        self.dropped
            .entry(symbol)
            .and_modify(|g| {
                g.0 = g.0.min(from);
                g.1 = g.1.max(to);
            })
            .or_insert((from, to));
    }
}

/// Most bytes `,"conflated":N` adds to a tick (N a u32).
const CONFLATED_SUFFIX_MAX: usize = 24;

/// A bounded, drop-oldest queue between the fan-out and one client's writer.
pub struct Outbox {
    // A std mutex: critical sections are a few pointer moves and the lock is
    // never held across an `.await`.
    state: Mutex<State>,
    capacity: usize,
    /// The writer's wake-up: a flag and the writer task's waker, polled
    /// inside the writer's own poll ([`Outbox::poll_woken`]). A `Notify`
    /// keeps its waiters in a list behind a mutex, and a `notified()` future
    /// in the session loop cost a second pass of the loop per wake-up
    /// (issue 18's one-each profile).
    waker: AtomicWaker,
    woken: AtomicBool,
    /// A feed status change not yet sent (0: none; else
    /// [`Outbox::set_feed`]'s code): the latest one only.
    feed: std::sync::atomic::AtomicU8,
    /// Some symbol is rate-limited (`State::slots` is not empty), mirrored
    /// outside the lock: its session re-arms its release timer after a
    /// wake-up ([`Outbox::is_rate_limited`]).
    limited: AtomicBool,
    /// Set while this outbox sits in an ingest batch's wake list, so a batch
    /// wakes each touched writer once.
    scheduled: AtomicBool,
    /// Entries queued, mirrored outside the lock for the ingest's pacing.
    queued: AtomicUsize,
    /// Its writer did not keep up with a paced catch-up: the ingest does not
    /// wait for it until it is at most a quarter full again.
    lagging: AtomicBool,
    /// Most entries a resume may queue beyond the capacity at once
    /// ([`Outbox::push_replay`]), and most ticks the registry holds for
    /// this client's resumes being read from Kafka, all symbols together.
    replay_room: usize,
    /// Ticks the registry holds for this client meanwhile.
    held: AtomicUsize,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` ticks (at least 1).
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            limited: AtomicBool::new(false),
            feed: std::sync::atomic::AtomicU8::new(0),
            scheduled: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            lagging: AtomicBool::new(false),
            replay_room: 0,
            held: AtomicUsize::new(0),
        }
    }

    /// Lets resumes queue up to `room` ticks beyond the capacity
    /// ([`Outbox::push_replay`]; 0 by default).
    pub fn with_replay_room(mut self, room: usize) -> Outbox {
        self.replay_room = room;
        self
    }

    /// Queues a resume's replay, `items` in order, as plain ticks (never
    /// conflated, never dropping other entries to make room): the outbox
    /// holds them on top of its capacity until its writer has taken as
    /// many. Refused (`false`, nothing queued) when that would pass the
    /// room given by [`Outbox::with_replay_room`], counting what earlier
    /// replays still hold: so a client's queue never exceeds its capacity
    /// plus that room, whatever it resumes.
    pub fn push_replay(&self, entries: Vec<Replay>) -> bool {
        let n = entries.len();
        if n == 0 {
            return true;
        }
        let mut st = self.state.lock().unwrap();
        if st.extra + n > self.replay_room {
            return false;
        }
        st.extra += n;
        st.queue.extend(entries.into_iter().map(|e| match e {
            Replay::Tick(item) => Entry::Tick(item),
            Replay::Gap(gap) => Entry::Gap(gap),
        }));
        self.queued.store(st.queue.len(), Ordering::Relaxed);
        true
    }

    /// Most entries a resume may queue beyond the capacity.
    pub fn replay_room(&self) -> usize {
        self.replay_room
    }

    /// Counts one more tick held for this client's resumes, if within its
    /// replay room (`false`: the room is used up).
    pub fn take_held(&self) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.replay_room).then_some(n + 1)
            })
            .is_ok()
    }

    /// `n` held ticks were let go (sent, or their resume ended).
    pub fn release_held(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `item`. When full, drops the oldest entry first and records it
    /// as a gap. Returns `true` if something was dropped.
    pub fn push(&self, item: Item) -> bool {
        self.push_item(item, false).dropped
    }

    /// As [`push`](Outbox::push), also saying whether the ingest should pace.
    pub fn push_paced(&self, item: Item) -> Pushed {
        self.push_item(item, false)
    }

    /// Queues a notice that `gap` was never published upstream, in stream
    /// order. Counts against the capacity like a tick.
    pub fn push_gap(&self, gap: Gap) -> bool {
        self.push_entry(Entry::Gap(gap)).dropped
    }

    fn push_item(&self, item: Item, snapshot: bool) -> Pushed {
        self.push_locked(Entry::Tick(item), snapshot)
    }

    fn push_entry(&self, entry: Entry) -> Pushed {
        self.push_locked(entry, false)
    }

    fn push_locked(&self, entry: Entry, snapshot: bool) -> Pushed {
        let mut st = self.state.lock().unwrap();
        let mut entry = entry;
        if let (Entry::Tick(item), false) = (&entry, st.slots.is_empty()) {
            if let Some(slot) = st.slots.get_mut(&item.symbol) {
                let now = Instant::now();
                if snapshot {
                    slot.pending = None;
                    slot.skipped = 0;
                    slot.next_due = Some(now + slot.interval);
                } else if slot.pending.is_none() && slot.next_due.is_none_or(|t| t <= now) {
                    slot.next_due = Some(now + slot.interval);
                    let n = std::mem::take(&mut slot.skipped);
                    let Entry::Tick(item) = entry else {
                        unreachable!()
                    };
                    entry = Entry::Conflated(item, n);
                } else {
                    let Entry::Tick(item) = entry else {
                        unreachable!()
                    };
                    let symbol = item.symbol.clone();
                    if slot.pending.replace(item).is_some() {
                        slot.skipped = slot.skipped.saturating_add(1);
                        return Pushed {
                            replaced: true,
                            ..Pushed::default()
                        };
                    } else {
                        // The first tick to wait for this turn: the session
                        // looks at `next_release` again (once per turn, so
                        // at most the client's rate, whatever the feed's).
                        let at = slot.next_due.unwrap_or(now);
                        st.due.push(Reverse((at, symbol)));
                        // Only if the session would not look before `at`
                        // anyway: so writers wake about once per release,
                        // not also once per turn that starts.
                        let looks_by_then = st.armed.is_some_and(|armed| armed <= at);
                        drop(st);
                        if !looks_by_then {
                            self.wake();
                        }
                    }
                    return Pushed::default();
                }
            }
        }
        let Enqueued { dropped, replaced } = st.enqueue(entry, self.capacity, snapshot);
        if replaced {
            // Its place was queued (and its writer woken) before.
            return Pushed {
                replaced: true,
                ..Pushed::default()
            };
        }
        let len = st.queue.len();
        self.queued.store(len, Ordering::Relaxed);
        let half_full = len == self.half();
        drop(st);
        if half_full {
            // Don't wait for the end of the ingest batch: a burst bigger than
            // the outbox would otherwise drop ticks even for a fast client.
            self.wake();
        }
        Pushed {
            dropped,
            pressing: half_full && !self.is_lagging(),
            queued: true,
            replaced: false,
        }
    }

    /// Queues the notice that the edge holds no tick of the subscribed
    /// `symbol` although its partitions have been read (the writer sends
    /// notices drained together as one `unknown_symbol` error frame). Not
    /// counted against the capacity and never dropped: the registry queues
    /// at most one per subscription. The caller wakes the writer.
    pub fn push_unknown(&self, symbol: Symbol) {
        self.state.lock().unwrap().unknown.push(symbol);
    }

    /// Queues a snapshot: never conflated away (it is the client's new
    /// baseline); for a rate-limited symbol it also discards the waiting
    /// tick (older than the snapshot) and starts the symbol's next turn.
    pub fn push_snapshot(&self, item: Item) -> Pushed {
        self.push_item(item, true)
    }
    /// Limits `symbol` to one tick per `interval` (`None`: every tick). A
    /// tick waiting when the limit is lifted is queued at once.
    pub fn set_max_rate(&self, symbol: &Symbol, interval: Option<Duration>) {
        let mut st = self.state.lock().unwrap();
        match interval {
            Some(interval) => {
                st.slots
                    .entry(symbol.clone())
                    .and_modify(|s| s.interval = interval)
                    .or_insert(Slot {
                        interval,
                        next_due: None,
                        pending: None,
                        skipped: 0,
                    });
                self.limited.store(true, Ordering::Relaxed);
            }
            None => {
                let removed = st.slots.remove(symbol);
                self.limited.store(!st.slots.is_empty(), Ordering::Relaxed);
                if let Some(slot) = removed {
                    if let Some(item) = slot.pending {
                        st.enqueue(Entry::Conflated(item, slot.skipped), self.capacity, false);
                        self.queued.store(st.queue.len(), Ordering::Relaxed);
                        drop(st);
                        self.wake();
                    }
                }
            }
        }
    }

    /// `"mode":"latest"` for `symbol` (`true`): at most one tick of it
    /// queued, newer ticks replacing it; or every tick (`false`).
    pub fn set_latest(&self, symbol: &Symbol, on: bool) {
        let mut st = self.state.lock().unwrap();
        if on {
            st.latest.entry(symbol.clone()).or_default();
            return;
        }
        let Some(l) = st.latest.remove(symbol) else {
            return;
        };
        if let Some((item, n)) = l.queued {
            // Its place in the queue becomes an ordinary entry.
            if let Some(place) = st
                .queue
                .iter_mut()
                .find(|e| matches!(e, Entry::Latest(s) if s == symbol))
            {
                *place = Entry::Conflated(item, n);
            }
        }
    }

    /// The release the session's timer should be armed for, recorded as
    /// armed: [`next_release`](Outbox::next_release), except one already
    /// due while the writer is to drain anyway (`draining`; armed, the timer
    /// would fire ahead of the writer on every pass). A tick that starts
    /// waiting for a turn at or after the armed time does not wake the
    /// session: it looks again then.
    pub fn arm_release(&self, draining: bool) -> Option<Instant> {
        let mut st = self.state.lock().unwrap();
        if st.slots.is_empty() {
            return None;
        }
        let next = st.due.peek().map(|Reverse((at, _))| *at);
        let armed = next.filter(|t| !(draining && *t <= Instant::now()));
        st.armed = armed;
        armed
    }

    /// When the soonest waiting tick of a rate-limited symbol is due (the
    /// writer should drain then); `None` when none waits.
    pub fn next_release(&self) -> Option<Instant> {
        let st = self.state.lock().unwrap();
        if st.slots.is_empty() {
            return None;
        }
        st.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Half the capacity, rounded up: where pacing starts.
    fn half(&self) -> usize {
        self.capacity.div_ceil(2)
    }

    /// At least half full and not lagging: the ingest's pacing waits for it.
    pub fn holds_back(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= self.half() && !self.is_lagging()
    }

    /// Whether its writer fell behind a paced catch-up (see the module doc).
    pub fn is_lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    /// Marks the writer as not keeping up: the ingest stops waiting for it.
    pub fn set_lagging(&self) {
        self.lagging.store(true, Ordering::Relaxed);
    }

    /// Removes everything queued or pending for `symbol` (after an unsubscribe).
    pub fn purge(&self, symbol: &Symbol) {
        self.purge_where(|s| s == symbol);
    }

    /// Removes everything queued or pending for any of `symbols`, in one pass
    /// over the queue (an unsubscribe of many symbols costs one pass, not one
    /// per symbol).
    pub fn purge_all(&self, symbols: &std::collections::HashSet<Symbol>) {
        if !symbols.is_empty() {
            self.purge_where(|s| symbols.contains(s));
        }
    }

    fn purge_where(&self, gone: impl Fn(&Symbol) -> bool) {
        let mut st = self.state.lock().unwrap();
        st.queue.retain(|e| match e {
            Entry::Tick(i) | Entry::Conflated(i, _) => !gone(&i.symbol),
            Entry::Latest(s) => !gone(s),
            Entry::Gap(g) => !gone(&g.symbol),
        });
        st.latest.retain(|s, _| !gone(s));
        st.dropped.retain(|s, _| !gone(s));
        st.unknown.retain(|s| !gone(s));
        st.slots.retain(|s, _| !gone(s));
        self.limited.store(!st.slots.is_empty(), Ordering::Relaxed);
        st.extra = st.extra.min(st.queue.len());
        self.queued.store(st.queue.len(), Ordering::Relaxed);
    }

    /// Number of queued ticks.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes pending drop notices and as many queued entries as fit in
    /// `max_bytes` of ticks (always at least one, so an oversized tick cannot
    /// wedge the queue).
    pub fn drain(&self, max_bytes: usize) -> Drained {
        let mut st = self.state.lock().unwrap();
        if !st.due.is_empty() {
            st.release_due(Instant::now(), self.capacity);
        }
        let mut out = Drained {
            dropped: st
                .dropped
                .drain()
                .map(|(symbol, (from_seq, to_seq))| Gap {
                    symbol,
                    from_seq,
                    to_seq,
                })
                .collect(),
            unknown: std::mem::take(&mut st.unknown),
            ..Drained::default()
        };
        let State {
            queue,
            latest,
            extra,
            ..
        } = &mut *st;
        let before = queue.len();
        while let Some(front) = queue.front() {
            let tick = match front {
                Entry::Tick(t) => Some((t, 0)),
                Entry::Conflated(t, n) => Some((t, *n)),
                Entry::Latest(s) => latest
                    .get(s)
                    .and_then(|l| l.queued.as_ref())
                    .map(|(t, n)| (t, *n)),
                Entry::Gap(_) => None,
            };
            if let Some((t, n)) = tick {
                let suffix = if n > 0 { CONFLATED_SUFFIX_MAX } else { 0 };
                let len = t.bytes.len() + 1 + suffix;
                if out.ticks > 0 && out.bytes + len > max_bytes {
                    break;
                }
                out.bytes += len;
                out.ticks += 1;
                if t.ts > 0 && (out.oldest_ts == 0 || t.ts < out.oldest_ts) {
                    out.oldest_ts = t.ts;
                }
            }
            let conflated = |t: Item, n: u32| match n {
                0 => Out::Tick(t.bytes),
                n => Out::Tick(crate::codec::wire::with_conflated(&t.bytes, n)),
            };
            let entry = match queue.pop_front().unwrap() {
                Entry::Tick(t) => Out::Tick(t.bytes),
                Entry::Conflated(t, n) => conflated(t, n),
                Entry::Latest(s) => match latest.get_mut(&s).and_then(|l| l.queued.take()) {
                    Some((t, n)) => conflated(t, n),
                    None => continue,
                },
                Entry::Gap(g) => Out::Gap(g),
            };
            out.entries.push(entry);
        }
        // Room lent to a replay is returned as the writer takes entries.
        *extra = extra.saturating_sub(before - queue.len());
        out.more = !st.queue.is_empty();
        let left = st.queue.len();
        self.queued.store(left, Ordering::Relaxed);
        if left <= self.capacity / 4 && self.is_lagging() {
            // Caught up: it may hold the ingest back again.
            self.lagging.store(false, Ordering::Relaxed);
        }
        if st.queue.is_empty() && st.queue.capacity() > 64 {
            // An idle client should not keep a burst-sized buffer.
            st.queue.shrink_to(16);
        }
        out
    }

    /// Whether some symbol is rate-limited: its ticks may wait for a turn,
    /// for which the session arms a timer ([`Outbox::arm_release`]).
    pub fn is_rate_limited(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }

    /// The feed's status changed: the writer sends it (the latest, once)
    /// before what it drains next.
    pub fn set_feed(&self, status: super::FeedStatus) {
        let code = match status {
            super::FeedStatus::Live => 1,
            super::FeedStatus::Stale => 2,
        };
        self.feed.store(code, Ordering::Release);
        self.wake();
    }

    /// The feed status change to send, if any (taking it).
    pub fn take_feed(&self) -> Option<super::FeedStatus> {
        match self.feed.swap(0, Ordering::AcqRel) {
            1 => Some(super::FeedStatus::Live),
            2 => Some(super::FeedStatus::Stale),
            _ => None,
        }
    }

    /// Wakes the writer.
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the outbox was woken since the last call that said so; when
    /// not, `cx`'s task is woken by the next [`wake`](Outbox::wake).
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> bool {
        if self.woken.swap(false, Ordering::AcqRel) {
            return true;
        }
        self.waker.register(cx.waker());
        // A wake between the swap and the register found no waker.
        self.woken.swap(false, Ordering::AcqRel)
    }

    /// Marks this outbox as touched by the current ingest batch; `true` the
    /// first time, meaning the caller must add it to its wake list.
    pub(crate) fn schedule(&self) -> bool {
        !self.scheduled.swap(true, Ordering::AcqRel)
    }

    /// Clears the batch mark and wakes the writer.
    pub(crate) fn unschedule_and_wake(&self) {
        self.scheduled.store(false, Ordering::Release);
        self.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(o: &Out) -> String {
        match o {
            Out::Tick(b) => String::from_utf8(b.to_vec()).unwrap(),
            Out::Gap(g) => format!("gap {} {}..{}", g.symbol, g.from_seq, g.to_seq),
        }
    }

    #[test]
    fn upstream_gaps_keep_their_place_and_merge_when_dropped() {
        let ob = Outbox::new(3);
        let a = Symbol::parse("A").unwrap();
        ob.push(item("A", 1));
        ob.push_gap(Gap {
            symbol: a.clone(),
            from_seq: 2,
            to_seq: 4,
        });
        ob.push(item("A", 5));
        let d = ob.drain(usize::MAX);
        let got: Vec<_> = d.entries.iter().map(text).collect();
        assert_eq!(
            got,
            [r#"{"s":"A","q":1}"#, "gap A 2..4", r#"{"s":"A","q":5}"#]
        );
        assert_eq!(d.ticks, 2);
        // Dropped from a full outbox, a gap notice merges into the drop range.
        ob.push(item("A", 6));
        ob.push_gap(Gap {
            symbol: a.clone(),
            from_seq: 7,
            to_seq: 9,
        });
        ob.push(item("A", 10));
        ob.push(item("A", 11)); // drops A6
        ob.push(item("A", 12)); // drops the 7..9 notice
        let d = ob.drain(usize::MAX);
        assert_eq!(
            d.dropped,
            vec![Gap {
                symbol: a,
                from_seq: 6,
                to_seq: 9
            }]
        );
        assert_eq!(d.entries.iter().map(text).collect::<Vec<_>>().len(), 3);
    }

    fn item(sym: &str, seq: Seq) -> Item {
        Item {
            symbol: Symbol::parse(sym).unwrap(),
            seq,
            bytes: Bytes::from(format!("{{\"s\":\"{sym}\",\"q\":{seq}}}")),
            ts: 0,
        }
    }

    #[test]
    fn drops_oldest_and_reports_gaps_per_symbol() {
        let ob = Outbox::new(3);
        assert!(!ob.push(item("A", 1)));
        assert!(!ob.push(item("B", 1)));
        assert!(!ob.push(item("A", 2)));
        assert!(ob.push(item("A", 3))); // drops A1
        assert!(ob.push(item("B", 2))); // drops B1
        assert!(ob.push(item("A", 4))); // drops A2
        assert_eq!(ob.len(), 3);
        let d = ob.drain(usize::MAX);
        let mut gaps = d.dropped.clone();
        gaps.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        assert_eq!(
            gaps,
            vec![
                Gap {
                    symbol: Symbol::parse("A").unwrap(),
                    from_seq: 1,
                    to_seq: 2
                },
                Gap {
                    symbol: Symbol::parse("B").unwrap(),
                    from_seq: 1,
                    to_seq: 1
                },
            ]
        );
        let items: Vec<_> = d.entries.iter().map(text).collect();
        assert_eq!(
            items,
            [
                r#"{"s":"A","q":3}"#,
                r#"{"s":"B","q":2}"#,
                r#"{"s":"A","q":4}"#
            ]
        );
        assert!(!d.more);
        assert!(ob.drain(usize::MAX).is_empty());
    }

    #[test]
    fn half_full_presses_until_lagging_and_lagging_ends_at_a_quarter() {
        let ob = Outbox::new(8);
        let pressing: Vec<bool> = (0..4)
            .map(|q| ob.push_paced(item("A", q)).pressing)
            .collect();
        assert_eq!(
            pressing,
            [false, false, false, true],
            "the 4th of 8 presses"
        );
        assert!(ob.holds_back());
        ob.drain(1);
        assert!(!ob.holds_back(), "3 of 8 queued");
        assert!(ob.push_paced(item("A", 4)).pressing, "half full again");
        ob.set_lagging();
        assert!(!ob.holds_back(), "a lagging outbox holds nothing back");
        for q in 5..20 {
            assert!(!ob.push_paced(item("A", q)).pressing);
        }
        assert_eq!(ob.len(), 8, "still bounded, dropping oldest");
        let d = ob.drain(ob.drain(1).bytes * 4);
        assert_eq!(d.entries.len(), 4);
        assert!(ob.is_lagging(), "3 left of 8: more than a quarter");
        ob.drain(1);
        assert!(!ob.is_lagging(), "2 left: a quarter, waited for again");
        for q in 20..23 {
            ob.push_paced(item("A", q));
        }
        assert!(ob.holds_back());
    }

    #[test]
    fn stays_bounded_under_any_load() {
        let ob = Outbox::new(16);
        for seq in 0..100_000 {
            ob.push(item("A", seq));
        }
        assert_eq!(ob.len(), 16);
        let d = ob.drain(usize::MAX);
        assert_eq!(
            d.dropped,
            vec![Gap {
                symbol: Symbol::parse("A").unwrap(),
                from_seq: 0,
                to_seq: 99_983
            }]
        );
        assert_eq!(d.entries.len(), 16);
    }

    #[test]
    fn drain_respects_size_cap_but_takes_one() {
        let ob = Outbox::new(100);
        for seq in 0..10 {
            ob.push(item("A", seq));
        }
        let one = ob.drain(1);
        assert_eq!(one.entries.len(), 1);
        assert!(one.more);
        let per = one.bytes;
        let some = ob.drain(per * 3);
        assert_eq!(some.entries.len(), 3);
        assert!(some.more);
        assert_eq!(ob.drain(usize::MAX).entries.len(), 6);
    }

    #[test]
    fn purge_removes_symbol() {
        let ob = Outbox::new(2);
        ob.push(item("A", 1));
        ob.push(item("B", 1));
        ob.push(item("A", 2)); // drops A1
        ob.purge(&Symbol::parse("A").unwrap());
        let d = ob.drain(usize::MAX);
        assert!(d.dropped.is_empty());
        assert_eq!(d.entries.len(), 1);
    }

    #[test]
    fn purge_all_removes_every_listed_symbol_in_one_pass() {
        let ob = Outbox::new(4);
        for s in ["A", "B", "C", "A", "B"] {
            ob.push(item(s, 1)); // the fifth push drops the first A
        }
        let gone: std::collections::HashSet<Symbol> = ["A", "C"]
            .iter()
            .map(|s| Symbol::parse(s).unwrap())
            .collect();
        ob.purge_all(&gone);
        let d = ob.drain(usize::MAX);
        assert!(d.dropped.is_empty(), "A's drop notice is purged too");
        let left: Vec<_> = d.entries.iter().map(text).collect();
        assert_eq!(left, [r#"{"s":"B","q":1}"#, r#"{"s":"B","q":1}"#]);
    }

    fn texts(d: &Drained) -> Vec<String> {
        d.entries.iter().map(text).collect()
    }

    const TURN: std::time::Duration = std::time::Duration::from_millis(250);

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_symbol_gets_the_latest_tick_once_per_turn_and_the_first_at_once() {
        let ob = Outbox::new(64);
        let a = Symbol::parse("A").unwrap();
        ob.set_max_rate(&a, Some(TURN));
        let t0 = Instant::now();
        assert!(
            ob.push_paced(item("A", 1)).queued,
            "the first tick goes at once"
        );
        for q in 2..=4 {
            assert!(
                !ob.push_paced(item("A", q)).queued,
                "A{q} waits for the next turn"
            );
        }
        assert!(
            ob.push_paced(item("B", 1)).queued,
            "another symbol is not limited"
        );
        assert_eq!(
            texts(&ob.drain(usize::MAX)),
            [r#"{"s":"A","q":1}"#, r#"{"s":"B","q":1}"#]
        );
        assert_eq!(ob.next_release(), Some(t0 + TURN));
        assert!(ob.drain(usize::MAX).is_empty(), "not before its turn");
        tokio::time::advance(TURN).await;
        assert_eq!(
            texts(&ob.drain(usize::MAX)),
            [r#"{"s":"A","q":4,"conflated":2}"#],
            "the latest, standing for the two it replaced"
        );
        assert_eq!(ob.next_release(), None, "nothing waits");
        // A quiet spell longer than a turn: the next tick goes at once.
        tokio::time::advance(TURN * 4).await;
        assert!(ob.push_paced(item("A", 5)).queued);
        assert_eq!(texts(&ob.drain(usize::MAX)), [r#"{"s":"A","q":5}"#]);
        // 1,000 ticks in one turn: one update, and the bookkeeping only.
        for q in 6..1006 {
            ob.push_paced(item("A", q));
        }
        assert_eq!(ob.len(), 0, "nothing queued while the turn runs");
        tokio::time::advance(TURN).await;
        assert_eq!(
            texts(&ob.drain(usize::MAX)),
            [r#"{"s":"A","q":1005,"conflated":999}"#]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn snapshots_are_never_conflated_and_lifting_the_limit_releases_what_waits() {
        let ob = Outbox::new(64);
        let a = Symbol::parse("A").unwrap();
        ob.set_max_rate(&a, Some(TURN));
        assert!(ob.push_paced(item("A", 1)).queued);
        assert!(!ob.push_paced(item("A", 2)).queued);
        assert!(
            ob.push_snapshot(item("A", 3)).queued,
            "a snapshot goes at once"
        );
        assert_eq!(
            texts(&ob.drain(usize::MAX)),
            [r#"{"s":"A","q":1}"#, r#"{"s":"A","q":3}"#]
        );
        tokio::time::advance(TURN).await;
        assert!(
            ob.drain(usize::MAX).is_empty(),
            "the tick older than the snapshot is gone"
        );
        assert!(ob.push_paced(item("A", 4)).queued);
        assert!(!ob.push_paced(item("A", 5)).queued);
        ob.set_max_rate(&a, None);
        assert_eq!(
            texts(&ob.drain(usize::MAX)),
            [r#"{"s":"A","q":4}"#, r#"{"s":"A","q":5}"#]
        );
        assert!(ob.push_paced(item("A", 6)).queued, "every tick again");
        // Unsubscribing forgets the symbol's turn and what waits.
        ob.set_max_rate(&a, Some(TURN));
        ob.drain(usize::MAX);
        ob.push_paced(item("A", 7));
        ob.push_paced(item("A", 8));
        ob.purge(&a);
        tokio::time::advance(TURN).await;
        assert!(ob.drain(usize::MAX).is_empty());
        assert!(
            ob.push_paced(item("A", 9)).queued,
            "no limit after the purge"
        );
    }

    #[test]
    fn latest_mode_keeps_one_tick_per_symbol_in_its_place_and_the_newest() {
        let ob = Outbox::new(4);
        let (a, b) = (Symbol::parse("A").unwrap(), Symbol::parse("B").unwrap());
        ob.set_latest(&a, true);
        ob.set_latest(&b, true);
        assert!(ob.push_paced(item("A", 1)).queued);
        assert!(ob.push_paced(item("B", 1)).queued);
        for q in 2..=50 {
            let p = ob.push_paced(item("A", q));
            assert!(
                p.replaced && !p.queued && !p.dropped,
                "A{q} replaces A's queued tick"
            );
        }
        assert!(ob.push_paced(item("C", 1)).queued, "C: every tick");
        assert!(ob.push_paced(item("C", 2)).queued);
        assert_eq!(ob.len(), 4, "A, B, C1, C2: full");
        // Full: a C tick drops the oldest entry, A's place: announced.
        assert!(ob.push_paced(item("C", 3)).dropped);
        assert!(ob.push_paced(item("A", 51)).queued, "A again has a place");
        let d = ob.drain(usize::MAX);
        let mut dropped = d.dropped.clone();
        dropped.sort_by(|x, y| x.symbol.cmp(&y.symbol));
        // A's place (its newest, A50) went to C3; A51 then dropped B1.
        assert_eq!(
            dropped,
            vec![
                Gap {
                    symbol: a.clone(),
                    from_seq: 50,
                    to_seq: 50
                },
                Gap {
                    symbol: b.clone(),
                    from_seq: 1,
                    to_seq: 1
                }
            ]
        );
        assert_eq!(
            texts(&d),
            [
                r#"{"s":"C","q":1}"#,
                r#"{"s":"C","q":2}"#,
                r#"{"s":"C","q":3}"#,
                r#"{"s":"A","q":51}"#
            ]
        );
        // A stalled client in latest mode holds the newest of each symbol
        // and never fills up.
        let ob = Outbox::new(8);
        let syms: Vec<Symbol> = (0..5)
            .map(|i| Symbol::parse(&format!("S{i}")).unwrap())
            .collect();
        for s in &syms {
            ob.set_latest(s, true);
        }
        for q in 1..=1000 {
            for s in &syms {
                assert!(!ob.push_paced(item(s.as_str(), q)).dropped);
            }
        }
        let got = texts(&ob.drain(usize::MAX));
        let want: Vec<String> = syms
            .iter()
            .map(|s| format!(r#"{{"s":"{s}","q":1000,"conflated":999}}"#))
            .collect();
        assert_eq!(got, want);
        // Back to every tick: the queued place becomes an ordinary entry.
        ob.push_paced(item("S0", 1001));
        ob.push_paced(item("S0", 1002));
        ob.set_latest(&syms[0], false);
        ob.push_paced(item("S0", 1003));
        assert_eq!(
            texts(&ob.drain(usize::MAX)),
            [
                r#"{"s":"S0","q":1002,"conflated":1}"#,
                r#"{"s":"S0","q":1003}"#
            ]
        );
    }
}
