//! What the clients of one process count together: deliveries, bytes (as
//! decoded and as read from the wire), latency, permessage-deflate
//! negotiations, the storm's progress and the last connect failure.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Mutex,
    },
};

use hdrhistogram::Histogram;

use super::wire::{Hist, StormReport, Totals};
use crate::feed::now_micros;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) ticks: AtomicU64,
    pub(super) frames: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) wire_bytes: AtomicU64,
    pub(super) gaps: AtomicU64,
    /// The `conflated` counts of the ticks received.
    pub(super) conflated: AtomicU64,
    pub(super) connected: AtomicU64,
    /// Handshakes (storm reconnects included) that did and did not
    /// negotiate permessage-deflate.
    pub(super) deflate_connections: AtomicU64,
    pub(super) plain_connections: AtomicU64,
}

impl Counters {
    pub(super) fn totals(&self) -> Totals {
        Totals {
            ticks: self.ticks.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            wire_bytes: self.wire_bytes.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            conflated: self.conflated.load(Ordering::Relaxed),
            deflate_connections: self.deflate_connections.load(Ordering::Relaxed),
            plain_connections: self.plain_connections.load(Ordering::Relaxed),
        }
    }
}

/// The storm as the clients of one process see it.
#[derive(Default)]
pub(super) struct Storm {
    pub(super) epoch_us: AtomicI64,
    pub(super) reconnected: AtomicU64,
    pub(super) back: AtomicU64,
    pub(super) errors: AtomicU64,
    admitted: Mutex<Vec<u64>>,
    pub(super) rejected: Mutex<BTreeMap<u16, u64>>,
    pub(super) times: Mutex<Hist>,
}

impl Storm {
    pub(super) fn admitted(&self) {
        let since = now_micros() - self.epoch_us.load(Ordering::Relaxed);
        let second = (since.max(0) / 1_000_000) as usize;
        let mut a = self.admitted.lock().unwrap();
        if a.len() <= second {
            a.resize(second + 1, 0);
        }
        a[second] += 1;
    }

    pub(super) fn report(&self) -> StormReport {
        StormReport {
            reconnected: self.reconnected.load(Ordering::Relaxed),
            back: self.back.load(Ordering::Relaxed),
            admitted: self.admitted.lock().unwrap().clone(),
            rejected: self.rejected.lock().unwrap().clone(),
            errors: self.errors.load(Ordering::Relaxed),
            times: self.times.lock().unwrap().clone(),
        }
    }
}

pub(super) struct Shared {
    pub(super) counters: Counters,
    /// Latencies in microseconds, for the measured window and for the
    /// current second (plot).
    pub(super) window: Mutex<Histogram<u64>>,
    pub(super) second: Mutex<Histogram<u64>>,
    pub(super) measuring: AtomicBool,
    pub(super) storm: Storm,
    pub(super) last_error: Mutex<Option<String>>,
}

impl Shared {
    /// Nothing counted yet, not measuring.
    pub(super) fn new() -> Shared {
        Shared {
            counters: Counters::default(),
            window: Mutex::new(histogram()),
            second: Mutex::new(histogram()),
            measuring: AtomicBool::new(false),
            storm: Storm::default(),
            last_error: Mutex::new(None),
        }
    }
}

pub(super) fn histogram() -> Histogram<u64> {
    Hist::default().0
}
