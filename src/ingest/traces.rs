//! Per-tick tracing on the ingest thread: the `process <topic>` and `fanout`
//! spans of a traced record.
//!
//! The poll loop ([`super::consumer`]) asks [`Traces`] to start a record's
//! `process` span (continuing its `traceparent` header, or a root-sampled
//! trace of its own), to start the `fanout` child around the hand-off to the
//! registry, and to end both with what the hand-off did (or the `process`
//! span alone, with the decode error). Spans leave through the exporter set
//! up in `telemetry::otel`.
//!
//! It never decides what is fetched or delivered: it only records spans
//! around what the poll loop does, and costs nothing while trace export is
//! off (`PollLoop::traces` is `None`).

use std::{collections::HashMap, sync::Arc};

use rdkafka::message::Message;

use crate::codec::avro::DecodeError;

/// Per-tick tracing on the ingest thread: a `process <topic>` span (kind
/// consumer) per traced record, continuing its `traceparent` header, with a
/// `fanout` child around the hand-off to the subscribers' outboxes.
pub struct Traces {
    tracer: opentelemetry_sdk::trace::SdkTracer,
    /// Fraction of records without a `traceparent` that start a trace here.
    root_sample: f64,
    /// `process <topic>` span names, built once per topic.
    names: HashMap<Arc<str>, std::borrow::Cow<'static, str>>,
}

impl Traces {
    pub fn new(
        tracer: opentelemetry_sdk::trace::SdkTracer,
        root_sample: f64,
        topics: &[Arc<str>],
    ) -> Traces {
        Traces {
            tracer,
            root_sample,
            names: topics
                .iter()
                .map(|t| (t.clone(), format!("process {t}").into()))
                .collect(),
        }
    }

    /// Starts the record's `process` span when it is traced: its
    /// `traceparent` says sampled, or it has none and the root sample draws
    /// it. An unsampled or malformed `traceparent` is not traced.
    pub(super) fn start(
        &self,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        topic: &Arc<str>,
        started: std::time::SystemTime,
    ) -> Option<opentelemetry::Context> {
        use opentelemetry::{
            trace::{SpanKind, TraceContextExt, Tracer},
            KeyValue,
        };
        use rand::Rng;
        let parent = match msg.headers() {
            Some(h) => crate::telemetry::otel::extract(h),
            None => opentelemetry::Context::new(),
        };
        let sc = parent.span().span_context().clone();
        let traced = if sc.is_valid() {
            sc.is_sampled()
        } else {
            self.root_sample > 0.0 && rand::rng().random::<f64>() < self.root_sample
        };
        if !traced {
            return None;
        }
        let name = self.names.get(topic).cloned().unwrap_or_default();
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Consumer)
            .with_start_time(started)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", topic.to_string()),
                KeyValue::new(
                    "messaging.destination.partition.id",
                    msg.partition().to_string(),
                ),
                KeyValue::new("messaging.kafka.offset", msg.offset()),
            ])
            .start_with_context(&self.tracer, &parent);
        Some(parent.with_span(span))
    }

    /// The `fanout` child span of a traced record, with the tick's identity
    /// on the parent.
    pub(super) fn start_fanout(
        &self,
        cx: &opentelemetry::Context,
        tick: &crate::market::Tick,
    ) -> opentelemetry_sdk::trace::Span {
        use opentelemetry::{
            trace::{Span, TraceContextExt, Tracer},
            KeyValue,
        };
        let parent = cx.span();
        parent.set_attribute(KeyValue::new(
            "messaging.kafka.message.key",
            tick.symbol.as_str().to_string(),
        ));
        parent.set_attribute(KeyValue::new(
            "tickfan.symbol",
            tick.symbol.as_str().to_string(),
        ));
        parent.set_attribute(KeyValue::new("tickfan.seq", tick.seq));
        // Feed handler to edge: the tick's own timestamp to now.
        parent.set_attribute(KeyValue::new(
            "tickfan.ingest_age_us",
            crate::market::now_micros().saturating_sub(tick.ts),
        ));
        let mut span = self.tracer.start_with_context("fanout", cx);
        span.set_attribute(KeyValue::new(
            "tickfan.symbol",
            tick.symbol.as_str().to_string(),
        ));
        span
    }
}

/// Ends a traced record's spans: `fanout` with what the hand-off did, then
/// `process`.
pub(super) fn end_trace(
    cx: opentelemetry::Context,
    mut fanout: opentelemetry_sdk::trace::Span,
    p: &crate::fanout::Published,
) {
    use opentelemetry::{
        trace::{Span, TraceContextExt},
        KeyValue,
    };
    fanout.set_attribute(KeyValue::new("tickfan.subscribers", p.queued as i64));
    fanout.set_attribute(KeyValue::new("tickfan.dropped", p.dropped as i64));
    fanout.end();
    cx.span().end();
}

/// Ends a traced record's `process` span when its value could not be
/// decoded, with the decode error as its status.
pub(super) fn end_undecodable(cx: opentelemetry::Context, e: &DecodeError) {
    use opentelemetry::trace::{Status, TraceContextExt};
    let span = cx.span();
    span.set_status(Status::error(format!("decode: {}", e.reason())));
    span.end();
}
