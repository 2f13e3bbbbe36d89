//! Encodings at the two edges of the pipeline: the Avro contract that feed
//! handlers write to Kafka ([`avro`]), and the JSON the edge sends to clients
//! ([`wire`]). Each tick is decoded once and encoded once.
//!
//! It never does I/O: bytes in, ticks out, and back; the ingest and the
//! sessions move the bytes.

pub mod avro;
pub mod canonical;
pub mod deflate;
pub mod mapping;
pub mod wire;
