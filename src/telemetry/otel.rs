//! OpenTelemetry: per-tick traces exported over OTLP/HTTP (protobuf).
//!
//! Off unless an OTLP endpoint is configured. `tickfan produce` starts a
//! trace for a sampled fraction of ticks (`--trace-sample`) and writes its
//! context into the record's W3C `traceparent` Kafka header; an edge that
//! consumes a record with a sampled `traceparent` continues that trace with a
//! `process <topic>` span (kind consumer) and a `fanout` child span around the
//! hand-off to subscribers' outboxes. Records without the header cost one
//! header lookup, and nothing at all while export is off.
//!
//! With export on, each WebSocket connection is also exported as one
//! `websocket session` span (kind server) when it ends: from the upgrade to
//! the close, with the client's address and the connection's events (how it
//! ended) — the `session` tracing span, bridged by [`SessionSpans`].
//!
//! Spans leave through a batch processor with a bounded queue (the SDK's
//! `OTEL_BSP_*` variables apply; default 2,048 spans, 5 s delay): when the
//! collector is slow or gone, spans are dropped, never buffered without limit,
//! and ticks are never held up.

use std::{sync::Arc, time::Duration};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    resource::{EnvResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector},
    trace::{SdkTracer, SdkTracerProvider},
    Resource,
};

pub use opentelemetry::Context;

/// The tracer [`SessionSpans`] exports with; set by the edge's pipeline
/// ([`Pipeline::trace_sessions`]).
static SESSION_TRACER: std::sync::OnceLock<SdkTracer> = std::sync::OnceLock::new();

/// Most events kept per session span.
const SESSION_EVENTS_MAX: usize = 16;

/// A `tracing` layer exporting each `session` span (one per WebSocket
/// connection, see `gateway::server`) as an OpenTelemetry span when it
/// closes. Installed by [`super::init_logging`] only when an OTLP endpoint is
/// configured, with [`SessionSpans::wants`] as its filter, so connections
/// cost nothing extra otherwise.
///
/// Not `tracing-opentelemetry`: that layer needs its tracer when the
/// subscriber is installed, before the edge has built its export pipeline,
/// and would turn every enabled span into an OpenTelemetry one; this bridges
/// one span kind with what it needs.
pub struct SessionSpans;

impl SessionSpans {
    /// The `session` span and the gateway's events inside it, at any level.
    pub fn wants(m: &tracing::Metadata<'_>) -> bool {
        (m.is_span() && m.name() == "session")
            || (m.is_event() && m.target().starts_with("tickfan::gateway"))
    }
}

/// What is known of a session span while it is open.
struct OpenSession {
    start: std::time::SystemTime,
    attributes: Vec<opentelemetry::KeyValue>,
    events: Vec<opentelemetry::trace::Event>,
}

/// Span and event fields as OpenTelemetry attributes (`message` apart).
#[derive(Default)]
struct Fields {
    attributes: Vec<opentelemetry::KeyValue>,
    message: Option<String>,
}

impl Fields {
    fn push(&mut self, field: &tracing::field::Field, value: opentelemetry::Value) {
        let key = match field.name() {
            "message" => {
                self.message = Some(value.as_str().into_owned());
                return;
            }
            "ip" => "client.address",
            "peer" => "network.peer.address",
            other => other,
        };
        self.attributes
            .push(opentelemetry::KeyValue::new(key, value));
    }
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.push(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.push(field, value.to_string().into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.push(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.push(field, (value as i64).into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.push(field, value.into());
    }
}

impl<S> tracing_subscriber::Layer<S> for SessionSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id).filter(|s| s.name() == "session") else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(OpenSession {
            start: std::time::SystemTime::now(),
            attributes: fields.attributes,
            events: Vec::new(),
        });
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<OpenSession>() {
                let mut fields = Fields::default();
                values.record(&mut fields);
                open.attributes.extend(fields.attributes);
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let mut ext = span.extensions_mut();
            let Some(open) = ext.get_mut::<OpenSession>() else {
                continue;
            };
            if open.events.len() < SESSION_EVENTS_MAX {
                let mut fields = Fields::default();
                event.record(&mut fields);
                open.events.push(opentelemetry::trace::Event::new(
                    fields
                        .message
                        .unwrap_or_else(|| event.metadata().name().to_string()),
                    std::time::SystemTime::now(),
                    fields.attributes,
                    0,
                ));
            }
            return;
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(open) = span.extensions_mut().remove::<OpenSession>() else {
            return;
        };
        let Some(tracer) = SESSION_TRACER.get() else {
            return;
        };
        tracer
            .span_builder("websocket session")
            .with_kind(SpanKind::Server)
            .with_start_time(open.start)
            .with_attributes(open.attributes)
            .with_events(open.events)
            .start(tracer)
            .end();
    }
}

/// Where traces go.
#[derive(clap::Args, Debug, Clone, Default)]
#[group(id = "otel")]
#[command(next_help_heading = "Tracing (OpenTelemetry)")]
pub struct Config {
    /// OTLP/HTTP base URL of a collector, e.g. `http://127.0.0.1:4318`;
    /// traces are POSTed to `<url>/v1/traces` as protobuf. Plain `http://`
    /// only (run a collector next to the edge for TLS to a remote backend).
    /// Unset: no export, no per-tick spans.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_endpoint)]
    pub otlp_endpoint: Option<http::Uri>,

    /// `service.name` of the exported spans (default: `tickfan-edge` for an
    /// edge, `tickfan-produce` for the feed).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
}

fn parse_endpoint(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:4318"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported: tickfan exports over plain HTTP to a \
                        collector next to it (use http://...)"
                    .into(),
            )
        }
        _ => return Err("expected an http:// URL, e.g. http://127.0.0.1:4318".into()),
    }
    if uri.host().is_none() {
        return Err("the URL has no host".into());
    }
    Ok(uri)
}

/// A sampling fraction: a number in [0, 1].
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a fraction between 0 and 1, e.g. 0.001".into()),
    }
}

/// The OTLP/HTTP traces URL for a base endpoint, as the OpenTelemetry spec
/// defines it for `OTEL_EXPORTER_OTLP_ENDPOINT`: `/v1/traces` appended to the
/// base path.
pub fn traces_url(base: &http::Uri) -> String {
    let s = base.to_string();
    format!("{}/v1/traces", s.trim_end_matches('/'))
}

/// A tracer provider and its export pipeline; flush it with
/// [`Pipeline::shutdown`].
pub struct Pipeline {
    provider: SdkTracerProvider,
}

impl Pipeline {
    /// Builds the pipeline when `config` names an endpoint, or, with
    /// `ids_without_export`, a pipeline that mints sampled trace ids but
    /// exports nothing (the feed still writes `traceparent` headers for
    /// edges that export). `None` otherwise. Must run inside a tokio runtime:
    /// exports are sent on it.
    pub fn new(
        config: &Config,
        default_service: &str,
        ids_without_export: bool,
    ) -> anyhow::Result<Option<Pipeline>> {
        let service = config
            .otel_service_name
            .clone()
            .unwrap_or_else(|| default_service.to_string());
        // service.version is the binary's, unless OTEL_RESOURCE_ATTRIBUTES
        // names one: the detectors (the SDK's, then that variable) are
        // merged over it, as `Resource::builder()` would run them.
        let resource = Resource::builder_empty()
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_detectors(&[
                Box::new(SdkProvidedResourceDetector),
                Box::new(TelemetryResourceDetector),
                Box::new(EnvResourceDetector::new()),
            ])
            .with_service_name(service)
            .build();
        let builder = SdkTracerProvider::builder().with_resource(resource);
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(ids_without_export.then(|| Pipeline {
                provider: builder.build(),
            }));
        };
        let client = OnRuntime {
            handle: tokio::runtime::Handle::try_current()
                .map_err(|_| anyhow::anyhow!("OTLP export needs a tokio runtime"))?,
            inner: Arc::new(
                opentelemetry_http::hyper::HyperClient::with_default_connector(
                    EXPORT_TIMEOUT,
                    None,
                ),
            ),
            failures: Default::default(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint))
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()?;
        tracing::info!(endpoint = %traces_url(endpoint), "exporting traces over OTLP/HTTP");
        Ok(Some(Pipeline {
            provider: builder.with_batch_exporter(exporter).build(),
        }))
    }

    pub fn tracer(&self) -> SdkTracer {
        use opentelemetry::trace::TracerProvider;
        self.provider.tracer("tickfan")
    }

    /// Exports connections' `session` spans through this pipeline (the
    /// first pipeline of the process that asks wins; they only arrive when
    /// [`super::init_logging`] installed [`SessionSpans`]).
    pub fn trace_sessions(&self) {
        let _ = SESSION_TRACER.set(self.tracer());
    }

    /// Exports what is queued and stops the pipeline (off the async
    /// workers: the SDK blocks while the export runs on the runtime).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let r = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "trace export shutdown");
        }
    }
}

const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper's client needs a tokio reactor, and the SDK's batch processor calls
/// the exporter from its own plain thread: run each request on the runtime.
/// (The SDK's other stock client, reqwest, would bring a second HTTP stack
/// and its own runtime thread for the same job.)
///
/// It also says when exports fail (collector down, wrong URL, refused): the
/// SDK drops such batches silently, so a warning at most every
/// [`FAILURE_LOG_EVERY`] is the only sign of a misconfigured endpoint.
#[derive(Debug)]
struct OnRuntime {
    handle: tokio::runtime::Handle,
    inner: Arc<opentelemetry_http::hyper::HyperClient>,
    /// When the last failure was logged, and failures since.
    failures: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

impl OnRuntime {
    fn failed(&self, url: &http::Uri, why: &str) {
        let mut f = self.failures.lock().unwrap();
        f.1 += 1;
        if f.0.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY) {
            tracing::warn!(
                endpoint = %url,
                failed_exports = f.1,
                "trace export failed: {why}; spans are dropped until the collector answers"
            );
            *f = (Some(std::time::Instant::now()), 0);
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let inner = self.inner.clone();
        let url = request.uri().clone();
        let r = self
            .handle
            .spawn(async move { inner.send_bytes(request).await })
            .await?;
        match &r {
            Ok(resp) if !resp.status().is_success() => {
                self.failed(&url, &format!("HTTP {}", resp.status()))
            }
            Ok(_) => {}
            Err(e) => self.failed(&url, &e.to_string()),
        }
        r
    }
}

/// The Kafka header that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Optional vendor trace state, carried along when present.
pub const TRACESTATE: &str = "tracestate";

/// Reads a trace context from Kafka record headers (W3C trace context).
/// An invalid or missing `traceparent` gives a context without a valid span.
pub fn extract<H: rdkafka::message::Headers>(headers: &H) -> Context {
    TraceContextPropagator::new().extract(&KafkaHeaders(headers))
}

/// Writes `cx`'s span context as `traceparent` (and `tracestate`) pairs.
pub fn inject(cx: &Context) -> Vec<(&'static str, String)> {
    let mut out = HeaderPairs(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(cx, &mut out);
    out.0
}

struct KafkaHeaders<'a, H>(&'a H);

impl<H: rdkafka::message::Headers> Extractor for KafkaHeaders<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        // Header keys are case-sensitive in Kafka; the propagator asks in
        // lower case, which is how W3C names them and how producers write
        // them.
        self.0
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

struct HeaderPairs(Vec<(&'static str, String)>);

impl Injector for HeaderPairs {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            // An empty trace state is not worth a header.
            TRACESTATE if !value.is_empty() => TRACESTATE,
            _ => return,
        };
        self.0.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_must_be_plain_http_with_a_host() {
        assert!(parse_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(parse_endpoint("https://collector:4318")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(parse_endpoint("collector:4318").is_err());
        assert!(parse_endpoint("not a url").is_err());
    }

    #[test]
    fn ratios_are_fractions() {
        assert_eq!(parse_ratio("0.001"), Ok(0.001));
        assert_eq!(parse_ratio("1"), Ok(1.0));
        for bad in ["-0.1", "1.5", "NaN", "x", ""] {
            assert!(parse_ratio(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn traces_url_appends_the_signal_path_to_the_base() {
        let u = |s: &str| traces_url(&s.parse().unwrap());
        assert_eq!(u("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(u("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(u("http://c:4318/otlp"), "http://c:4318/otlp/v1/traces");
    }

    #[test]
    fn traceparent_round_trips_through_kafka_headers() {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let pairs = inject(&Context::new().with_remote_span_context(sc.clone()));
        assert_eq!(
            pairs,
            vec![(
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()
            )]
        );
        let mut headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "other",
            value: Some("x"),
        });
        for (k, v) in &pairs {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v.as_str()),
            });
        }
        let cx = extract(&headers);
        assert_eq!(cx.span().span_context(), &sc);
    }

    #[test]
    fn a_missing_or_malformed_traceparent_gives_no_parent() {
        use opentelemetry::trace::TraceContextExt;
        let none = rdkafka::message::OwnedHeaders::new();
        assert!(!extract(&none).span().span_context().is_valid());
        for bad in [
            "",
            "00-zz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let h = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: TRACEPARENT,
                value: Some(bad),
            });
            assert!(!extract(&h).span().span_context().is_valid(), "{bad:?}");
        }
    }
}
