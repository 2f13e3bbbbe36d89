//! Logging, metrics and traces. Metric names live in [`metrics`],
//! OpenTelemetry export in [`otel`]; log output is set up once by
//! [`init_logging`].

pub mod metrics;
pub mod otel;

pub use metrics::Metrics;

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`
    /// with `message`, and the current `span`), for log pipelines.
    Json,
}

/// Installs the `tracing` subscriber: lines on stderr in `format`, filtered
/// by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
