//! Fan-out: the sharded symbol registry with its last-value cache, and the
//! bounded per-client outbox. Knows nothing of Kafka or WebSockets; it tells
//! whoever listens when the set of wanted symbols changes.

pub mod outbox;
pub mod registry;

pub use outbox::{Drained, Gap, Item, Outbox};
pub use registry::{wake_all, Published, Registry};
