//! A synthetic feed handler: random-walk prices with bid/ask for a set of
//! symbols with Zipf-skewed popularity, written to Kafka as the tick contract
//! at an evenly paced rate. Used by `tickfan produce`, the demo and tests.
//!
//! It never reads from Kafka and never uses the edge's ingest, fan-out or
//! gateway: it only writes records.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Zipf};
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    ClientContext, Message,
};
use tokio_util::sync::CancellationToken;

use crate::{
    codec::avro::TickCodec,
    kafka::KafkaConfig,
    market::{Symbol, Tick},
    telemetry::otel,
};

/// What to produce.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "feed")]
#[command(next_help_heading = "Synthetic feed")]
pub struct Config {
    /// Symbols to trade: a count (well-known tickers first, then generated
    /// names) or a comma-separated list.
    #[arg(long, env = "TICKFAN_SYMBOLS", default_value = "50")]
    pub symbols: SymbolSpec,

    /// Total ticks per second across all symbols, paced evenly.
    #[arg(long, env = "TICKFAN_RATE", default_value_t = 1000.0)]
    pub rate: f64,

    /// Stop after this long (e.g. `30s`, `5m`); default: until interrupted.
    #[arg(long, env = "TICKFAN_DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Zipf exponent of symbol popularity (0: uniform).
    #[arg(long, env = "TICKFAN_ZIPF", default_value_t = 1.0)]
    pub zipf: f64,

    /// Producer linger (batching delay), in milliseconds.
    #[arg(long, env = "TICKFAN_LINGER_MS", default_value_t = 1)]
    pub linger_ms: u32,

    /// Size of each produced Kafka record value, in bytes: each tick gets a
    /// `pad` attribute of ASCII filler sized to make it exactly this long
    /// (one byte less at the rare sizes no filler hits). A tick too long for
    /// that even with an empty `pad` is sent at its natural size, unpadded.
    /// 0: natural size, no `pad`.
    #[arg(long, env = "TICKFAN_TICK_BYTES", default_value_t = 0)]
    pub tick_bytes: usize,

    /// Fraction of ticks that start a trace: each gets a `publish` span and
    /// a W3C `traceparent` Kafka header, which edges that export traces
    /// continue. The header is written even when this process exports
    /// nothing (no `--otlp-endpoint`). 0: no headers.
    #[arg(long, env = "TICKFAN_TRACE_SAMPLE", default_value_t = 0.0, value_parser = crate::telemetry::otel::parse_ratio)]
    pub trace_sample: f64,

    /// Bytes of filler in a `x-tickfan-mock-pad` record header (not a flag:
    /// the demo sets it). librdkafka's mock broker finds a fetch offset by
    /// walking its whole in-memory log (`rd_kafka_mock_msgset_find`, "FIXME:
    /// Maintain an index"), which it caps at 5 MB per partition: with one
    /// small tick per message set that is ~37,000 entries walked per
    /// partition per fetch, a full core after a few minutes and latency in
    /// seconds. Bigger message sets keep the capped log short; headers are
    /// not sent to clients.
    #[arg(skip)]
    pub mock_pad: usize,

    /// How records are written (not a flag: `demo --feed` sets it).
    #[arg(skip)]
    pub format: FeedFormat,

    /// Give every tick the day's figures a quote screen shows, as `attrs`
    /// (docs/protocol.md, "Day fields"): `prev_close`, `open`, `high`,
    /// `low`, `volume`, `bid_size`, `ask_size`. On in `tickfan demo`; off
    /// by default so benchmark ticks keep their size.
    #[arg(long, env = "TICKFAN_DAY_FIELDS", default_value_t = false)]
    pub day_fields: bool,
}

/// How the synthetic feed writes its records.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FeedFormat {
    /// tickfan's own contract, `schemas/tick.avsc`.
    #[default]
    Tickfan,
    /// A company's own quote record ([`QUOTE_SCHEMA_JSON`]) in the Confluent
    /// wire format, schema id [`QUOTE_SCHEMA_ID`].
    Confluent,
    /// For Centrifugo's Kafka consumer in publication data mode (the
    /// benchmarks' second baseline): the tick as the JSON object tickfan
    /// sends its clients, with a [`CENTRIFUGO_CHANNELS_HEADER`] header
    /// naming the symbol's channel (the symbol itself); `--tick-bytes` pads
    /// it with an `attrs.pad` of spaces. tickfan edges do not read it.
    Centrifugo,
}

/// The header Centrifugo's Kafka consumer reads a record's channels from
/// (its `publication_data_mode.channels_header` default).
pub const CENTRIFUGO_CHANNELS_HEADER: &str = "centrifugo-channels";

/// `tick` as the JSON object Centrifugo publishes, `target` bytes long when
/// `target` is above its natural size (an `attrs.pad` of spaces; 0: natural).
pub fn centrifugo_value(tick: &mut Tick, target: usize) -> Vec<u8> {
    let natural = crate::codec::wire::encode_tick(tick);
    if target <= natural.len() {
        return natural.to_vec();
    }
    tick.attrs.insert(PAD_KEY.to_string(), String::new());
    let empty = crate::codec::wire::encode_tick(tick).len();
    let filler = target.saturating_sub(empty);
    tick.attrs.insert(PAD_KEY.to_string(), " ".repeat(filler));
    let v = crate::codec::wire::encode_tick(tick).to_vec();
    tick.attrs.remove(PAD_KEY);
    v
}

/// The company-shaped record `demo --feed confluent` writes:
/// `schemas/examples/quote.avsc`.
pub const QUOTE_SCHEMA_JSON: &str = include_str!("../schemas/examples/quote.avsc");

/// Its id in the demo's registry.
pub const QUOTE_SCHEMA_ID: u32 = 1;

/// The mapping that reads it back as ticks, for topic `topic`.
pub fn quote_mapping(topic: &str) -> String {
    format!(
        "{topic}:format=avro,symbol=instrument.ticker,price=last_px,size=last_qty,bid=bid_px,ask=ask_px,venue=instrument.mic,ts=event_time,forward=trade_id"
    )
}

/// Writes a tick as the company's quote record, Confluent wire format:
/// prices as `decimal(18,4)`, the size as a whole number, the time in
/// milliseconds, a trade id, no seq (the edge numbers ticks from offsets).
pub struct QuoteEncoder {
    schema: apache_avro::Schema,
    trades: u64,
}

impl Default for QuoteEncoder {
    fn default() -> Self {
        QuoteEncoder {
            schema: apache_avro::Schema::parse_str(QUOTE_SCHEMA_JSON)
                .expect("schemas/examples/quote.avsc is valid"),
            trades: 0,
        }
    }
}

impl QuoteEncoder {
    pub fn encode(&mut self, tick: &Tick) -> Vec<u8> {
        use apache_avro::types::Value;
        let decimal = |x: f64| {
            let unscaled = (x * 10_000.0).round() as i64;
            Value::Decimal(apache_avro::Decimal::from(
                num_bigint::BigInt::from(unscaled).to_signed_bytes_be(),
            ))
        };
        let opt = |v: Option<Value>| match v {
            Some(v) => Value::Union(1, Box::new(v)),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        self.trades += 1;
        let value = Value::Record(vec![
            (
                "instrument".into(),
                Value::Record(vec![
                    ("ticker".into(), Value::String(tick.symbol.as_str().into())),
                    ("mic".into(), opt(tick.venue.clone().map(Value::String))),
                ]),
            ),
            ("last_px".into(), decimal(tick.price)),
            ("last_qty".into(), Value::Long(tick.size.round() as i64)),
            ("bid_px".into(), opt(tick.bid.map(decimal))),
            ("ask_px".into(), opt(tick.ask.map(decimal))),
            ("event_time".into(), Value::TimestampMillis(tick.ts / 1000)),
            (
                "trade_id".into(),
                Value::String(format!("T{}", self.trades)),
            ),
        ]);
        let mut out = vec![0];
        out.extend_from_slice(&QUOTE_SCHEMA_ID.to_be_bytes());
        out.extend(
            apache_avro::to_avro_datum(&self.schema, value).expect("a tick fits the quote schema"),
        );
        out
    }
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.rate > 0.0 && self.rate.is_finite(),
            "--rate must be > 0"
        );
        anyhow::ensure!(
            self.zipf >= 0.0 && self.zipf.is_finite(),
            "--zipf must be >= 0"
        );
        anyhow::ensure!(
            self.tick_bytes <= MAX_TICK_BYTES,
            "--tick-bytes must be at most {MAX_TICK_BYTES}"
        );
        self.symbols.resolve().map(|_| ())
    }
}

/// `tickfan produce`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProduceConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub feed: Config,

    /// How records are written: `tickfan` (tickfan's contract, Avro),
    /// `confluent` (a company quote record, Confluent wire format, schema id
    /// 1: register `schemas/examples/quote.avsc` as id 1 in your registry),
    /// or `centrifugo` (JSON for Centrifugo's Kafka consumer).
    #[arg(id = "produce_format", long = "format", env = "TICKFAN_PRODUCE_FORMAT", value_enum, default_value_t = FeedFormat::Tickfan)]
    pub format: FeedFormat,

    #[command(flatten)]
    pub otel: otel::Config,
}

impl ProduceConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.kafka.validate()?;
        anyhow::ensure!(
            self.kafka.topics.len() == 1,
            "produce writes to exactly one --topic"
        );
        self.feed.validate()
    }
}

/// `--symbols`: a count or an explicit list.
#[derive(Debug, Clone)]
pub enum SymbolSpec {
    Count(usize),
    List(Vec<String>),
}

impl std::str::FromStr for SymbolSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.trim().parse::<usize>() {
            return if n == 0 {
                Err("need at least one symbol".into())
            } else {
                Ok(SymbolSpec::Count(n))
            };
        }
        Ok(SymbolSpec::List(
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
        ))
    }
}

const WELL_KNOWN: &[&str] = &[
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AVGO", "JPM", "V", "WMT", "LLY",
    "XOM", "MA", "UNH", "ORCL", "COST", "HD", "PG", "JNJ", "NFLX", "BAC", "ABBV", "CRM", "KO",
    "AMD", "CVX", "MRK", "PEP", "TMO", "ADBE", "LIN", "CSCO", "ACN", "MCD", "ABT", "WFC", "IBM",
    "GE", "INTU", "QCOM", "TXN", "DIS", "CAT", "AMGN", "PFE", "NOW", "VZ", "ISRG", "GS",
];

impl SymbolSpec {
    /// The symbols, validated.
    pub fn resolve(&self) -> anyhow::Result<Vec<Symbol>> {
        let names: Vec<String> = match self {
            SymbolSpec::Count(n) => (0..*n)
                .map(|i| {
                    WELL_KNOWN
                        .get(i)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| format!("SYM{i:05}"))
                })
                .collect(),
            SymbolSpec::List(v) => v.clone(),
        };
        anyhow::ensure!(!names.is_empty(), "need at least one symbol");
        names
            .iter()
            .map(|n| Symbol::parse(n).map_err(|e| anyhow::anyhow!("bad symbol {n:?}: {e}")))
            .collect()
    }
}

struct Instrument {
    symbol: Symbol,
    price: f64,
    seq: i64,
    day: Day,
}

/// One instrument's trading day so far, for [`Generator::with_day_fields`].
struct Day {
    prev_close: f64,
    open: f64,
    high: f64,
    low: f64,
    volume: f64,
}

/// Generates ticks: pick a symbol by Zipf popularity, move its price, bump
/// its seq.
pub struct Generator {
    instruments: Vec<Instrument>,
    zipf: Option<Zipf<f64>>,
    step: Normal<f64>,
    rng: SmallRng,
    day_fields: bool,
}

const VENUES: &[&str] = &["XNAS", "XNYS", "ARCX", "BATS", "IEXG"];

impl Generator {
    pub fn new(symbols: Vec<Symbol>, zipf_exponent: f64, seed: u64) -> Generator {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = symbols.len();
        let instruments = symbols
            .into_iter()
            .map(|symbol| {
                let prev_close: f64 = cents(rng.random_range(10.0..500.0));
                // The day opened a little away from yesterday's close.
                let open = cents(prev_close * (1.0 + rng.random_range(-0.01..0.01)));
                Instrument {
                    symbol,
                    price: open,
                    seq: 0,
                    day: Day {
                        prev_close,
                        open,
                        high: open,
                        low: open,
                        volume: 0.0,
                    },
                }
            })
            .collect();
        let zipf = (zipf_exponent > 0.0 && n > 1)
            .then(|| Zipf::new(n as f64, zipf_exponent).expect("valid zipf"));
        Generator {
            instruments,
            zipf,
            step: Normal::new(0.0, 0.0005).expect("valid normal"),
            rng,
            day_fields: false,
        }
    }

    /// Ticks carry the day's figures as `attrs` (`--day-fields`).
    pub fn with_day_fields(mut self, on: bool) -> Generator {
        self.day_fields = on;
        self
    }

    /// The next tick, stamped with `ts` (microseconds since the epoch).
    pub fn next_tick(&mut self, ts: i64) -> Tick {
        let i = match &self.zipf {
            Some(z) => (z.sample(&mut self.rng) as usize)
                .saturating_sub(1)
                .min(self.instruments.len() - 1),
            None => self.rng.random_range(0..self.instruments.len()),
        };
        let step = self.step.sample(&mut self.rng);
        let inst = &mut self.instruments[i];
        inst.price = (inst.price * step.exp()).max(0.01);
        inst.seq += 1;
        let price = cents(inst.price);
        let half_spread = (price * 0.0001).max(0.005);
        let size = (self.rng.random_range(1..=50) * 100) as f64;
        let mut attrs = BTreeMap::new();
        if self.day_fields {
            let day = &mut inst.day;
            day.high = day.high.max(price);
            day.low = day.low.min(price);
            day.volume += size;
            let money = |x: f64| format!("{x:.2}");
            let lots = |rng: &mut SmallRng| (rng.random_range(1..=40) * 100).to_string();
            attrs.extend([
                ("prev_close".to_string(), money(day.prev_close)),
                ("open".to_string(), money(day.open)),
                ("high".to_string(), money(day.high)),
                ("low".to_string(), money(day.low)),
                ("volume".to_string(), format!("{}", day.volume)),
                ("bid_size".to_string(), lots(&mut self.rng)),
                ("ask_size".to_string(), lots(&mut self.rng)),
            ]);
        }
        Tick {
            symbol: inst.symbol.clone(),
            price,
            size,
            bid: Some(((price - half_spread) * 100.0).floor() / 100.0),
            ask: Some(((price + half_spread) * 100.0).ceil() / 100.0),
            venue: Some(VENUES[self.rng.random_range(0..VENUES.len())].to_string()),
            ts,
            seq: inst.seq,
            attrs,
        }
    }
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Largest `--tick-bytes`: librdkafka's default `message.max.bytes`. Edges
/// skip records over their `--max-record-bytes` (64 KiB by default) anyway.
pub const MAX_TICK_BYTES: usize = 1_000_000;

/// The attribute `--tick-bytes` pads with.
pub const PAD_KEY: &str = "pad";

/// Encodes `tick` as a Kafka value of exactly `target` bytes by adding a
/// [`PAD_KEY`] attribute of ASCII filler (replacing any `pad` it had).
///
/// When even an empty filler makes the value longer than `target` (the
/// natural encoding plus 6 bytes, for a tick without attributes), the tick is
/// encoded at its natural size, without `pad`. Otherwise the value is
/// `target` bytes, except at the sizes where no filler fits: the filler's
/// Avro length prefix grows by a byte from 63 to 64 filler bytes and from
/// 8191 to 8192, so with the empty-filler size `E`, `E + 64` and `E + 8193`
/// cannot be hit; there the value is one byte short.
pub fn encode_padded(codec: &TickCodec, tick: &mut Tick, target: usize) -> Vec<u8> {
    tick.attrs.insert(PAD_KEY.to_string(), String::new());
    let empty = codec.encode(tick);
    if target < empty.len() {
        tick.attrs.remove(PAD_KEY);
        return codec.encode(tick);
    }
    // Only the filler changes now: its length prefix (an Avro long) and its
    // bytes. With `f` filler bytes the value is
    // `empty.len() - 1 + long_len(f) + f` bytes; find `f + long_len(f) = room`,
    // taking the prefix length `k` as small as works.
    let room = target - empty.len() + 1;
    let filler = (1..=10)
        .filter_map(|k| room.checked_sub(k).filter(|&f| avro_long_len(f) <= k))
        .next()
        .expect("a filler length fits");
    if filler == 0 {
        return empty;
    }
    tick.attrs.insert(PAD_KEY.to_string(), "x".repeat(filler));
    let bytes = codec.encode(tick);
    debug_assert_eq!(
        bytes.len(),
        empty.len() - 1 + avro_long_len(filler) + filler
    );
    bytes
}

/// Bytes of a non-negative Avro `long` (zigzag, then 7 bits a byte).
fn avro_long_len(n: usize) -> usize {
    let zigzag = (n as u64) << 1;
    (u64::BITS - zigzag.leading_zeros()).max(1).div_ceil(7) as usize
}

/// Microseconds since the Unix epoch, now (the clock ticks are stamped with).
pub use crate::market::now_micros;

/// Delivery outcomes, counted by librdkafka's delivery callback, and the
/// last client-level error (broker down, ...).
#[derive(Default)]
pub struct DeliveryCounts {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    last_error: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

impl DeliveryCounts {
    /// The last client error, if it happened within `within`.
    pub fn recent_error(&self, within: Duration) -> Option<String> {
        let e = self.last_error.lock().unwrap();
        e.as_ref()
            .filter(|(at, _)| at.elapsed() <= within)
            .map(|(_, m)| m.clone())
    }
}

/// Producer context that counts delivery reports and remembers errors.
pub struct Counting(pub Arc<DeliveryCounts>);

impl ClientContext for Counting {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, %reason, "producer client error");
        *self.0.last_error.lock().unwrap() =
            Some((std::time::Instant::now(), format!("{error}: {reason}")));
    }
}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, m)) => {
                tracing::debug!(error = %e, partition = m.partition(), "delivery failed");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A tick producer: idempotent, low linger, keyed by symbol with the
/// Java-compatible murmur2 partitioner.
pub fn producer(
    kafka: &KafkaConfig,
    linger_ms: u32,
) -> anyhow::Result<(ThreadedProducer<Counting>, Arc<DeliveryCounts>)> {
    let counts = Arc::new(DeliveryCounts::default());
    let linger = linger_ms.to_string();
    let c = kafka.client_config(&[
        ("enable.idempotence", "true"),
        ("linger.ms", &linger),
        ("partitioner", "murmur2_random"),
        // Notice partitions added to the topic within seconds, not minutes.
        ("topic.metadata.refresh.interval.ms", "5000"),
        ("client.id", "tickfan-produce"),
    ])?;
    Ok((c.create_with_context(Counting(counts.clone()))?, counts))
}

/// Sends one encoded tick, waiting while librdkafka's queue is full (the
/// refused record, headers included, is retried as librdkafka returns it).
pub async fn send(
    producer: &ThreadedProducer<Counting>,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: Option<OwnedHeaders>,
) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), refused)) => {
                record = refused;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// The record header [`Config::mock_pad`] fills.
pub const MOCK_PAD_HEADER: &str = "x-tickfan-mock-pad";

/// Starts a `publish` span for a sampled tick and returns the Kafka headers
/// that carry its context, with the span (end it once the tick is queued).
fn traced(tracer: &SdkTracer, topic: &str, tick: &Tick) -> (OwnedHeaders, Context) {
    use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
    let span = tracer
        .span_builder(format!("publish {topic}"))
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.name", topic.to_string()),
            KeyValue::new(
                "messaging.kafka.message.key",
                tick.symbol.as_str().to_string(),
            ),
            KeyValue::new("tickfan.symbol", tick.symbol.as_str().to_string()),
            KeyValue::new("tickfan.seq", tick.seq),
        ])
        .start(tracer);
    let cx = Context::new().with_span(span);
    let mut headers = OwnedHeaders::new();
    for (key, value) in otel::inject(&cx) {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    (headers, cx)
}

/// Runs the feed until `duration` passes or `shutdown` fires, printing a
/// progress line each second, then flushes everything produced. With
/// `otel`, a sampled fraction of ticks carry a `traceparent` header.
pub async fn run(
    kafka: KafkaConfig,
    config: Config,
    otel: otel::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pipeline = otel::Pipeline::new(&otel, "tickfan-produce", config.trace_sample > 0.0)?;
    let r = produce(
        kafka,
        config,
        pipeline.as_ref().map(|p| p.tracer()),
        shutdown,
    )
    .await;
    if let Some(p) = pipeline {
        p.shutdown().await;
    }
    r
}

async fn produce(
    kafka: KafkaConfig,
    config: Config,
    tracer: Option<SdkTracer>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let symbols = config.symbols.resolve()?;
    let topic = kafka.topics[0].clone();
    let (producer, counts) = producer(&kafka, config.linger_ms)?;
    let codec = TickCodec::new(usize::MAX);
    let mut quotes = QuoteEncoder::default();
    let mut gen =
        Generator::new(symbols, config.zipf, rand::random()).with_day_fields(config.day_fields);
    let mut sample = SmallRng::from_os_rng();
    let pad = (config.mock_pad > 0).then(|| vec![b'.'; config.mock_pad]);
    let start = tokio::time::Instant::now();
    let deadline = config.duration.map(|d| start + d);
    let mut pace = tokio::time::interval(Duration::from_millis(2));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent: u64 = 0;
    let mut errors: u64 = 0;
    let mut last_report = (start, 0u64);
    let mut last_delivered = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = pace.tick() => {}
        }
        let now = tokio::time::Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let due = ((now - start).as_secs_f64() * config.rate) as u64;
        while sent < due {
            let mut tick = gen.next_tick(now_micros());
            let value = if config.format == FeedFormat::Confluent {
                quotes.encode(&tick)
            } else if config.format == FeedFormat::Centrifugo {
                centrifugo_value(&mut tick, config.tick_bytes)
            } else if config.tick_bytes > 0 {
                encode_padded(&codec, &mut tick, config.tick_bytes)
            } else {
                codec.encode(&tick)
            };
            let (mut headers, span) = match tracer.as_ref().filter(|_| {
                config.trace_sample > 0.0 && sample.random::<f64>() < config.trace_sample
            }) {
                Some(t) => {
                    let (h, cx) = traced(t, &topic, &tick);
                    (Some(h), Some(cx))
                }
                None => (None, None),
            };
            if config.format == FeedFormat::Centrifugo {
                headers = Some(headers.unwrap_or_default().insert(Header {
                    key: CENTRIFUGO_CHANNELS_HEADER,
                    value: Some(tick.symbol.as_str().as_bytes()),
                }));
            }
            if let Some(p) = &pad {
                headers = Some(headers.unwrap_or_default().insert(Header {
                    key: MOCK_PAD_HEADER,
                    value: Some(p.as_slice()),
                }));
            }
            if let Err(e) = send(&producer, &topic, tick.symbol.as_str(), &value, headers).await {
                errors += 1;
                tracing::warn!(error = %e, "produce failed");
            }
            if let Some(cx) = span {
                use opentelemetry::trace::TraceContextExt;
                cx.span().end();
            }
            sent += 1;
        }
        if now - last_report.0 >= Duration::from_secs(1) {
            let secs = (now - last_report.0).as_secs_f64();
            let delivered = counts.delivered.load(Ordering::Relaxed);
            // During a broker outage librdkafka keeps retrying what is in
            // flight (idempotently, so nothing is lost or duplicated); say so.
            let kafka = match counts.recent_error(Duration::from_secs(3)) {
                Some(e) => format!(", KAFKA UNREACHABLE ({e}); buffering"),
                None if delivered == last_delivered && producer.in_flight_count() > 0 => {
                    ", kafka not acknowledging; buffering".to_string()
                }
                None => String::new(),
            };
            println!(
                "produce: {:.0} ticks/s (target {:.0}), sent {sent}, delivered {delivered}, errors {}, in flight {}{kafka}",
                (sent - last_report.1) as f64 / secs,
                config.rate,
                errors + counts.failed.load(Ordering::Relaxed),
                producer.in_flight_count(),
            );
            last_report = (now, sent);
            last_delivered = delivered;
        }
    }
    println!(
        "produce: flushing {} in-flight ticks",
        producer.in_flight_count()
    );
    let flushed = tokio::task::spawn_blocking(move || {
        let r = producer.flush(Duration::from_secs(30));
        (r, producer)
    })
    .await?;
    flushed.0?;
    println!(
        "produce: done, sent {sent}, delivered {}, errors {}",
        counts.delivered.load(Ordering::Relaxed),
        errors + counts.failed.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(n: usize) -> Vec<Tick> {
        let symbols = SymbolSpec::Count(60).resolve().unwrap();
        let mut gen = Generator::new(symbols, 1.0, 7);
        (0..n)
            .map(|i| gen.next_tick(i as i64 * 1_000_003))
            .collect()
    }

    #[test]
    fn day_fields_follow_each_symbols_trades() {
        let symbols = SymbolSpec::Count(5).resolve().unwrap();
        let mut plain = Generator::new(symbols.clone(), 0.0, 3);
        assert!(plain.next_tick(0).attrs.is_empty(), "off by default");
        let mut gen = Generator::new(symbols, 0.0, 3).with_day_fields(true);
        let mut seen: std::collections::HashMap<Symbol, (f64, f64, f64, String)> =
            Default::default();
        for i in 0..2_000 {
            let t = gen.next_tick(i);
            let num = |k: &str| -> f64 { t.attrs[k].parse().unwrap() };
            let (high, low, volume) = (num("high"), num("low"), num("volume"));
            assert!(low <= t.price && t.price <= high, "{t:?}");
            assert!(low <= num("open") && num("open") <= high, "{t:?}");
            assert!(num("prev_close") > 0.0 && num("bid_size") > 0.0 && num("ask_size") > 0.0);
            let prev = seen.get(&t.symbol).cloned();
            if let Some((h, l, v, close)) = prev {
                assert!(high >= h && low <= l, "the range only widens: {t:?}");
                assert_eq!(volume, v + t.size, "volume adds each trade: {t:?}");
                assert_eq!(close, t.attrs["prev_close"], "prev close is fixed");
            } else {
                assert_eq!(volume, t.size);
            }
            seen.insert(
                t.symbol.clone(),
                (high, low, volume, t.attrs["prev_close"].clone()),
            );
        }
        assert_eq!(seen.len(), 5);
        // Carried through the Avro contract to clients as strings.
        let codec = TickCodec::new(usize::MAX);
        let t = gen.next_tick(1);
        assert_eq!(codec.decode(&codec.encode(&t)).unwrap().attrs, t.attrs);
        // "About 100 bytes more per Kafka record" (docs/configuration.md).
        let extra: Vec<usize> = (0..1_000)
            .map(|i| {
                let t = gen.next_tick(i);
                let mut bare = t.clone();
                bare.attrs.clear();
                codec.encode(&t).len() - codec.encode(&bare).len()
            })
            .collect();
        let mean = extra.iter().sum::<usize>() as f64 / extra.len() as f64;
        assert!(
            (80.0..=120.0).contains(&mean),
            "{mean} bytes more on average"
        );
        assert!(extra.iter().all(|&x| x <= 140), "{:?}", extra.iter().max());
    }

    #[test]
    fn padded_values_are_exactly_the_requested_size() {
        let codec = TickCodec::new(usize::MAX);
        for target in [512, 200, 1024, 4096, 8300, 65536] {
            for t in ticks(50) {
                let mut padded = t.clone();
                let bytes = encode_padded(&codec, &mut padded, target);
                assert_eq!(bytes.len(), target, "{t:?}");
                let decoded = codec.decode(&bytes).unwrap();
                assert_eq!(decoded, padded);
                let pad = &decoded.attrs[PAD_KEY];
                assert!(pad.bytes().all(|b| b == b'x'));
                assert_eq!(decoded.attrs.len(), 1);
                padded.attrs.clear();
                assert_eq!(padded, t);
            }
        }
    }

    #[test]
    fn every_size_is_hit_but_the_two_where_the_pad_length_prefix_grows() {
        let codec = TickCodec::new(usize::MAX);
        let t = ticks(1).remove(0);
        let natural = codec.encode(&t).len();
        let smallest = natural + 6; // {"pad": ""}
        for target in smallest..smallest + 8300 {
            let len = encode_padded(&codec, &mut t.clone(), target).len();
            if target == smallest + 64 || target == smallest + 8193 {
                assert_eq!(len, target - 1);
            } else {
                assert_eq!(len, target);
            }
        }
    }

    #[test]
    fn a_tick_too_large_to_pad_is_sent_unpadded() {
        let codec = TickCodec::new(usize::MAX);
        let t = ticks(1).remove(0);
        let natural = codec.encode(&t);
        for target in [1, natural.len() - 1, natural.len(), natural.len() + 5] {
            let mut same = t.clone();
            assert_eq!(encode_padded(&codec, &mut same, target), natural);
            assert_eq!(same, t);
        }
        let mut padded = t.clone();
        let bytes = encode_padded(&codec, &mut padded, natural.len() + 6);
        assert_eq!(bytes.len(), natural.len() + 6);
        assert_eq!(padded.attrs[PAD_KEY], "");
    }

    #[test]
    fn tick_bytes_is_bounded() {
        let mut c: Config = crate::config::defaults();
        assert_eq!(c.tick_bytes, 0);
        c.tick_bytes = MAX_TICK_BYTES;
        c.validate().unwrap();
        c.tick_bytes = MAX_TICK_BYTES + 1;
        assert!(c.validate().is_err());
    }
}
