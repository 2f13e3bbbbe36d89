//! Logging and metrics. Metric names live in [`metrics`]; log output is set
//! up once by [`init_logging`].

pub mod metrics;

pub use metrics::Metrics;

/// Installs the `tracing` subscriber: human-readable lines on stderr,
/// filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
