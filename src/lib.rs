//! # tickfan
//!
//! A Kafka-backed WebSocket fan-out tier for market data.
//!
//! ```text
//! feed handler ──Avro, key=symbol──▶ Kafka topic(s), P partitions (murmur2)
//!                                         │
//! edge: ingest ─ decode once ─▶ fanout ─ encode once (shared Bytes) ─▶ outbox per client ─▶ session ─▶ WebSocket
//!          ▲                      │                                  bounded, drop-oldest,
//!          └──── interest ────────┘                                  gap notices
//! first subscriber of a symbol ⇒ its partition is assigned; last one gone (after a linger) ⇒ released
//! ```
//!
//! The edge: what runs in a pod.
//!
//! | module | role |
//! |---|---|
//! | [`app`] | wires ingest → fanout → gateway; owns shutdown order |
//! | [`config`] | `tickfan edge`'s config, aggregated from each module's flags; validation |
//! | [`config_file`] | `--config FILE`: TOML settings as the flags' defaults (flags > env > file > defaults) |
//! | [`kafka`] | how to reach Kafka: brokers, topics, TLS, SASL, secrets, other librdkafka settings |
//! | [`ingest`] | rdkafka consumer, partition interest, offsets, readiness, pacing |
//! | [`codec`] | Avro single-object contract (`schemas/tick.avsc`) and the client JSON |
//! | [`fanout`] | sharded registry, last-value cache, per-client outbox |
//! | [`gateway`] | HTTP routes, WebSocket sessions, protocol messages, admission, auth |
//! | [`telemetry`] | logging, traces, every metric in one file |
//! | [`market`] | domain types: [`market::Symbol`], [`market::Tick`], the tick clock |
//! | [`partition`] | the Java-compatible murmur2 key partitioner |
//! | [`shutdown`] | signal handling into a cancellation token |
//!
//! The rig: tools beside the edge, behind the `rig` feature (on by default;
//! CI builds the library and binary without it, so the compiler keeps the
//! edge from importing any of it).
//!
//! | module | role |
//! |---|---|
//! | [`feed`] | the synthetic feed behind `tickfan produce` and the demo |
//! | [`demo`] | `tickfan demo`: mock cluster, feed and edge in one process |
//! | [`loadgen`] | `tickfan loadgen`: scenarios, HDR latency, edge cost |
//! | [`client`] | reference WebSocket client: reconnect with jittered backoff, resubscribe, events |
//!
//! Dependency rule: `gateway → fanout ← ingest`; `codec`, `market`,
//! `partition`, `kafka`, `telemetry`, `shutdown` are leaves; [`app`] wires
//! the edge; the rig may use the edge, never the reverse; the binary sees
//! everything.

pub mod app;
pub mod codec;
pub mod config;
pub mod config_file;
pub mod fanout;
pub mod gateway;
pub mod ingest;
pub mod kafka;
pub mod market;
pub mod partition;
pub mod shutdown;
pub mod telemetry;

#[cfg(feature = "rig")]
pub mod client;
#[cfg(feature = "rig")]
pub mod demo;
#[cfg(feature = "rig")]
pub mod feed;
#[cfg(feature = "rig")]
pub mod loadgen;
