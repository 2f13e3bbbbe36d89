//! Fan-out: the sharded symbol registry with its last-value cache, the
//! bounded per-client outbox, and the symbol directory. Knows nothing of
//! Kafka or WebSockets; it tells whoever listens when the set of wanted
//! symbols changes.
//!
//! It never blocks on a socket and never drops a tick silently: a full outbox
//! drops its oldest tick and records the gap.

pub mod directory;
pub mod outbox;
pub mod registry;

pub use directory::Directory;
pub use outbox::{Drained, Gap, Item, Out, Outbox, Replay};
pub use registry::{
    wake_all, Finished, History, Past, Published, Registry, ResumeFrom, ResumeNeed, Resumed,
    SeqCheck,
};

/// Whether the edge is receiving from Kafka. Sessions tell their clients
/// when it changes (`{"type":"status","feed":"stale"|"live"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStatus {
    /// Kafka answers; ticks are current.
    Live,
    /// Kafka is unreachable (or not yet reached): ticks may be old.
    Stale,
}

impl FeedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedStatus::Live => "live",
            FeedStatus::Stale => "stale",
        }
    }
}
