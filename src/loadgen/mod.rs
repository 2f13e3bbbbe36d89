//! `tickfan loadgen`: N WebSocket clients against one or more edges, a
//! scenario of subscriptions, a warm-up, then a measured window. Per-tick
//! end-to-end latency (now − the tick's `ts`) goes into an HDR histogram;
//! deliveries, frames, bytes, gap notices and conflated ticks are counted;
//! the edge's own CPU and RSS are read from /proc when its pid is given, and
//! the clients' CPU (the threads of the runtime they run on, in every
//! process) always. Prints a progress line per second and a JSON summary;
//! optionally writes an SVG plot of latency over time. `--max-hz` and
//! `--mode` ride on every subscribe.
//!
//! The clients here are deliberately thinner than [`crate::client`]: no event
//! per tick, one histogram lock per frame, so the generator costs little next
//! to the edge it measures (both share this machine's two cores). They do
//! share its reconnect policy: a rejected or failed connect is retried after
//! [`client::backoff_delay`](crate::client::backoff_delay) (full jitter), and
//! at least the `Retry-After` of a 429/503 answer.
//!
//! # Processes
//!
//! The clients run in `Workers`: in this process (`--processes 1`), or in
//! P child processes of this same binary (`tickfan loadgen --worker I/P`),
//! each with its own open-files limit. Either way the run is driven by the
//! same loop through the same `Request`s and merged `Report`s: a child
//! gets the `Plan` and then one request per line as JSON on stdin and
//! answers each with one JSON line on stdout (histograms in hdrhistogram's V2
//! format, base64); it logs to stderr only. Worker I runs the clients whose
//! index i has i % P == I; subscriptions, slow clients and source addresses
//! are computed over all clients, so they are the same for any P.
//!
//! It never reaches into an edge: it measures edges over WebSocket, as any
//! client does, and reads their cost from /proc.

mod config;
mod conn;
mod cpu;
mod driver;
mod plan;
mod procs;
mod producer;
mod report;
mod shared;
mod wire;
mod worker;

pub use config::{Config, Mode, Protocol, Scenario, Slot};
pub use driver::run;
