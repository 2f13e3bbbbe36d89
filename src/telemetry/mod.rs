//! Logging, metrics and traces. Metric names live in [`metrics`],
//! OpenTelemetry export in [`otel`]; log output is set up once by
//! [`init_logging`].
//!
//! It never reads or changes the edge's state: the other modules report to
//! it, and it uses no other part of the edge but the codec's error kinds (as
//! metric labels).

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
/// by `RUST_LOG` (default `info`); with `session_spans` (trace export on),
/// also [`otel::SessionSpans`], whatever `RUST_LOG` says.
pub fn init_logging(format: LogFormat, session_spans: bool) {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    // Colors only on a terminal: not in files, container logs or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let sessions = session_spans.then(|| {
        otel::SessionSpans.with_filter(tracing_subscriber::filter::filter_fn(
            otel::SessionSpans::wants,
        ))
    });
    let _ = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(sessions)
        .try_init();
}
