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
//! | module | role |
//! |---|---|
//! | [`app`] | wires ingest → fanout → gateway; owns shutdown order |
//! | [`config`] | per-subcommand config aggregated from each module's flags; validation |
//! | [`shutdown`] | signal handling into a cancellation token |
//! | [`market`] | domain types: [`market::Symbol`], [`market::Tick`] |
//! | [`partition`] | the Java-compatible murmur2 key partitioner |
//! | [`codec`] | Avro single-object contract (`schemas/tick.avsc`) and the client JSON |
//! | [`ingest`] | rdkafka consumer, partition interest, offsets, readiness |
//! | [`kafka`] | how to reach Kafka: brokers, topics, TLS, SASL, secrets, other librdkafka settings |
//! | [`fanout`] | sharded registry, last-value cache, per-client outbox |
//! | [`gateway`] | warp routes, WebSocket sessions, protocol messages |
//! | [`feed`] | the synthetic feed behind `tickfan produce` and the demo |
//! | [`loadgen`] | `tickfan loadgen`: scenarios, HDR latency, edge cost |
//! | [`telemetry`] | logging setup; every metric in one file |
//! | [`client`] | reference WebSocket client: reconnect with jittered backoff, resubscribe, events |
//!
//! Dependency rule: `gateway → fanout ← ingest`; `codec`, `market`,
//! `partition`, `kafka`, `config`, `telemetry`, `shutdown` are leaves; only [`app`]
//! and the binary see everything.

pub mod app;
pub mod client;
pub mod codec;
pub mod config;
pub mod fanout;
pub mod feed;
pub mod gateway;
pub mod ingest;
pub mod kafka;
pub mod loadgen;
pub mod market;
pub mod partition;
pub mod shutdown;
pub mod telemetry;
