//! OpenTelemetry export: an in-process OTLP/HTTP receiver (a real hyper server
//! decoding the protobuf `ExportTraceServiceRequest` the edge POSTs) checks
//! that per-tick spans arrive, continuing the `traceparent` Kafka header of
//! the record they trace.

mod support;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value as AnyValue,
};
use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use support::*;
use tickfan::{config::defaults, feed, telemetry::otel};
use tokio_util::sync::CancellationToken;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    /// The resource's `service.version`.
    version: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attrs: HashMap<String, String>,
    /// Span events: (name, attributes).
    events: Vec<(String, HashMap<String, String>)>,
}

const KIND_SERVER: i32 = 2;
const KIND_PRODUCER: i32 = 4;
const KIND_CONSUMER: i32 = 5;

/// A minimal OTLP/HTTP traces receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
    /// Requests that were not `POST /v1/traces` with a protobuf body.
    wrong: Arc<Mutex<Vec<String>>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let wrong: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = CancellationToken::new();
        let (s, w, st) = (spans.clone(), wrong.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = st.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                let (s, w) = (s.clone(), w.clone());
                let service = hyper::service::service_fn(move |req| {
                    let (s, w) = (s.clone(), w.clone());
                    async move { Ok::<_, std::convert::Infallible>(handle(req, &s, &w).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Receiver {
            addr,
            spans,
            wrong,
            _stop: stop.drop_guard(),
        }
    }

    fn endpoint(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn spans(&self) -> Vec<Got> {
        assert!(
            self.wrong.lock().unwrap().is_empty(),
            "unexpected requests: {:?}",
            self.wrong.lock().unwrap()
        );
        self.spans.lock().unwrap().clone()
    }

    /// Waits for the `websocket session` span a connection exports when it
    /// ends.
    async fn session_span(&self) -> Got {
        eventually("the session span", || async {
            self.spans()
                .into_iter()
                .find(|s| s.name == "websocket session")
        })
        .await
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    spans: &Mutex<Vec<Got>>,
    wrong: &Mutex<Vec<String>>,
) -> hyper::Response<Full<bytes::Bytes>> {
    let what = format!(
        "{} {} {:?}",
        req.method(),
        req.uri().path(),
        req.headers().get("content-type")
    );
    let ok = req.method() == hyper::Method::POST
        && req.uri().path() == "/v1/traces"
        && req
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let decoded = ExportTraceServiceRequest::decode(body);
    match (ok, decoded) {
        (true, Ok(export)) => {
            let mut out = spans.lock().unwrap();
            for rs in export.resource_spans {
                let resource = |key: &str| {
                    rs.resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == key)
                        .map(|kv| value(kv.value.as_ref()))
                        .unwrap_or_default()
                };
                let (service, version) = (resource("service.name"), resource("service.version"));
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        out.push(Got {
                            service: service.clone(),
                            version: version.clone(),
                            name: span.name,
                            kind: span.kind,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            attrs: span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
                                .collect(),
                            events: span
                                .events
                                .iter()
                                .map(|e| {
                                    let attrs = e
                                        .attributes
                                        .iter()
                                        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
                                        .collect();
                                    (e.name.clone(), attrs)
                                })
                                .collect(),
                        });
                    }
                }
            }
        }
        (_, r) => wrong
            .lock()
            .unwrap()
            .push(format!("{what}: decoded ok: {}", r.is_ok())),
    }
    hyper::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(
            ExportTraceServiceResponse::default().encode_to_vec().into(),
        ))
        .unwrap()
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A real `tickfan edge` process exporting to `endpoint`, configured only by
/// the standard OpenTelemetry variables (batches sent every 100 ms).
async fn exporting_edge(broker: &Broker, topic: &str, endpoint: &str) -> EdgeProcess {
    EdgeProcess::spawn_env(
        &broker.bootstrap(),
        topic,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await
}

fn traceparent(trace: &str, span: &str, flags: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: "traceparent",
        value: Some(&format!("00-{trace}-{span}-{flags}")),
    })
}

/// A real `tickfan edge` process, configured by the standard OTel variables,
/// continues the trace named by a record's `traceparent` header: a consumer
/// span whose parent is the header's span, with a `fanout` child. Records
/// with an unsampled header or none are not traced. Each WebSocket connection
/// is exported as a `websocket session` span when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_continues_the_traceparent_header_of_a_record() {
    let rx = Receiver::start().await;
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = exporting_edge(&broker, &topic, &rx.endpoint().to_string()).await;
    let mut c = Client::connect(edge.addr).await;
    let sym = "TRC1";
    c.subscribe(&[sym]).await;
    eventually("partition assigned", || async {
        let p = http_get(edge.addr, "/partitions").await.1;
        p.contains("\"partition\":0").then_some(())
    })
    .await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let feed = Feed::new(&broker.bootstrap(), &topic);
    let codec = tickfan::codec::avro::TickCodec::new(usize::MAX);
    let send = |seq: i64, headers: Option<OwnedHeaders>| {
        let value = codec.encode(&tick(sym, seq));
        let (producer, topic) = (feed.producer.clone(), feed.topic.clone());
        async move {
            feed::send(&producer, &topic, sym, &value, headers)
                .await
                .unwrap()
        }
    };
    send(1, None).await;
    send(2, Some(traceparent(unsampled, "b7ad6b7169203331", "00"))).await;
    send(3, Some(traceparent(trace, parent, "01"))).await;
    feed.flush().await;
    c.read_until("3 ticks", |f| {
        f.iter().any(|t| matches!(t, Frame::Tick { seq: 3, .. }))
    })
    .await;

    let (process, fanout) = eventually("edge spans exported", || async {
        let spans = rx.spans();
        let process = spans
            .iter()
            .find(|s| s.name == format!("process {topic}"))?
            .clone();
        let fanout = spans
            .iter()
            .find(|s| s.name == "fanout" && s.parent_span_id == process.span_id)?
            .clone();
        Some((process, fanout))
    })
    .await;
    assert_eq!(process.service, "tickfan-edge");
    assert_eq!(
        process.version,
        env!("CARGO_PKG_VERSION"),
        "service.version is the binary's"
    );
    assert_eq!(process.trace_id, trace, "continues the header's trace");
    assert_eq!(process.parent_span_id, parent, "child of the header's span");
    assert_eq!(process.kind, KIND_CONSUMER);
    assert_eq!(process.attrs["messaging.system"], "kafka");
    assert_eq!(process.attrs["messaging.destination.name"], topic);
    assert_eq!(process.attrs["messaging.destination.partition.id"], "0");
    assert_eq!(process.attrs["tickfan.symbol"], sym);
    assert_eq!(process.attrs["tickfan.seq"], "3");
    assert!(process.attrs.contains_key("messaging.kafka.offset"));
    assert_eq!(fanout.trace_id, trace);
    assert_eq!(fanout.attrs["tickfan.subscribers"], "1");
    assert_eq!(fanout.attrs["tickfan.dropped"], "0");
    // The two earlier records were handled first, so any span of theirs
    // would have been queued before these: none was made.
    let spans = rx.spans();
    assert_eq!(
        spans.len(),
        2,
        "only the sampled record is traced: {spans:?}"
    );

    // The connection's lifecycle: one span from upgrade to close, exported
    // once the client has gone (here: closed with 1000, normal closure).
    c.ws_mut()
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let session = rx.session_span().await;
    assert_eq!(session.service, "tickfan-edge");
    assert_eq!(session.kind, KIND_SERVER);
    assert!(session.parent_span_id.is_empty(), "a root span");
    assert_eq!(session.attrs["client.address"], "127.0.0.1");
    assert!(session.attrs["network.peer.address"].starts_with("127.0.0.1:"));
    let names: Vec<&str> = session.events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"upgraded"), "{names:?}");
    let (_, closed) = session
        .events
        .iter()
        .find(|(n, _)| n == "client closed")
        .unwrap_or_else(|| panic!("how it ended: {names:?}"));
    assert_eq!(closed["code"], "1000");
    assert!(
        !names.iter().any(|n| n.starts_with("session dropped")),
        "a clean close is not a drop: {names:?}"
    );
}

/// `tickfan produce` with `--trace-sample 1` starts a `publish` span per tick
/// and writes its context as `traceparent`; the edge's `process` span of
/// every one of those ticks is that span's child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_traces_continue_through_the_edge() {
    let rx = Receiver::start().await;
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |c| {
        c.otel.otlp_endpoint = Some(rx.endpoint());
    })
    .await;
    edge.ready().await;
    let syms = ["TRP1", "TRP2", "TRP3"];
    let mut c = Client::connect(edge.addr).await;
    c.subscribe(&syms).await;
    let wanted: std::collections::BTreeSet<i32> = syms
        .iter()
        .map(|s| tickfan::partition::partition_for(s.as_bytes(), 2))
        .collect();
    eventually("partitions assigned", || async {
        let got: std::collections::BTreeSet<i32> = edge.partitions().await.into_iter().collect();
        (got == wanted).then_some(())
    })
    .await;

    let mut kafka: tickfan::config::KafkaConfig = defaults();
    kafka.brokers = broker.bootstrap();
    kafka.topics = vec![topic.clone()];
    let mut cfg: feed::Config = defaults();
    cfg.symbols = feed::SymbolSpec::List(syms.iter().map(|s| s.to_string()).collect());
    cfg.rate = 100.0;
    cfg.duration = Some(Duration::from_millis(500));
    cfg.trace_sample = 1.0;
    // As the demo does: another header next to traceparent.
    cfg.mock_pad = 64;
    let otel_cfg = otel::Config {
        otlp_endpoint: Some(rx.endpoint()),
        otel_service_name: None,
    };
    // Returns after the duration, once its spans are exported.
    feed::run(kafka, cfg, otel_cfg, CancellationToken::new())
        .await
        .unwrap();
    let published: Vec<Got> = rx
        .spans()
        .into_iter()
        .filter(|s| s.service == "tickfan-produce")
        .collect();
    assert!(
        published.len() >= 10,
        "a publish span per tick: {}",
        published.len()
    );
    for p in &published {
        assert_eq!(p.name, format!("publish {topic}"));
        assert_eq!(p.kind, KIND_PRODUCER);
        assert!(p.parent_span_id.is_empty(), "a root span");
    }
    eventually("every published tick traced through the edge", || async {
        let spans = rx.spans();
        let missing = published
            .iter()
            .filter(|p| {
                !spans.iter().any(|s| {
                    s.service == "tickfan-edge"
                        && s.kind == KIND_CONSUMER
                        && s.trace_id == p.trace_id
                        && s.parent_span_id == p.span_id
                        && s.attrs.get("tickfan.seq") == p.attrs.get("tickfan.seq")
                        && s.attrs.get("tickfan.symbol") == p.attrs.get("tickfan.symbol")
                })
            })
            .count();
        (missing == 0).then_some(())
    })
    .await;
    edge.stop().await;
}

/// `OTEL_RESOURCE_ATTRIBUTES` names the version when it sets one (a
/// canary's label, say): it wins over the binary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_resource_attributes_name_the_version_when_they_set_one() {
    let rx = Receiver::start().await;
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let endpoint = rx.endpoint().to_string();
    let edge = EdgeProcess::spawn_env(
        &broker.bootstrap(),
        &topic,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.version=2.0.0-canary,deployment.environment=test",
            ),
        ],
    )
    .await;
    let mut c = Client::connect(edge.addr).await;
    c.ws_mut().close(None).await.unwrap();
    let session = rx.session_span().await;
    assert_eq!(session.service, "tickfan-edge");
    assert_eq!(session.version, "2.0.0-canary");
}

/// An unreachable collector is said in the edge's log (the SDK drops failed
/// batches silently), and the edge keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_is_reported_in_the_log() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{closed}");
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = exporting_edge(&broker, &topic, &endpoint).await;
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("edge-{}.log", edge.addr.port()));
    // A connection that ends is a span to export.
    let mut c = Client::connect(edge.addr).await;
    c.ws_mut().close(None).await.unwrap();
    let line = eventually("the export failure in the edge's log", || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .find(|l| l.contains("trace export failed"))
            .map(str::to_string)
    })
    .await;
    assert!(
        line.contains(&format!("127.0.0.1:{closed}/v1/traces")),
        "{line}"
    );
    assert!(line.contains("WARN"), "{line}");
    assert!(
        !line.contains('\u{1b}'),
        "no terminal colors in a log file: {line:?}"
    );
    assert_eq!(http_get(edge.addr, "/readyz").await.0, 200, "still serving");
}
