//! A topic's record shape: how a Kafka record (its key, and a value in
//! tickfan's own contract, the Confluent Avro wire format, or JSON) becomes
//! the tick clients get.
//!
//! A [`Mapping`] is written `TOPIC:key=value,...` (`--mapping`, or a
//! `[mapping.TOPIC]` table in the configuration file):
//!
//! ```text
//! quotes:format=avro,symbol=instrument.ticker,price=px,size=qty,ts=event_time:millis,forward=venue_code|flags
//! ```
//!
//! * `format`: `tickfan` (the default: `schemas/tick.avsc` in Avro
//!   single-object encoding, [`super::avro`]; nothing else may be set),
//!   `avro` (the Confluent wire format: byte 0, a 4-byte big-endian schema
//!   id, the datum; writer schemas come from a Schema Registry) or `json`.
//! * `symbol`: `key` (the record key as UTF-8) or a field path; default the
//!   field `symbol`.
//! * `price` (default `price`), `size`, `bid`, `ask`, `venue`: field paths;
//!   `size`, `bid`, `ask` and `venue` default to fields of those names when
//!   the record has them. Numbers may be Avro `int`, `long`, `float`,
//!   `double`, `decimal` (bytes or fixed), or a string holding a decimal
//!   number; decimals reach clients as their decimal text, not rounded.
//! * `ts`: a field path, with `:micros`, `:millis`, `:nanos`, `:seconds` or
//!   `:iso8601` (default: an Avro timestamp's own unit, else micros for a
//!   number and ISO-8601 for a string); without a `ts` field the Kafka
//!   record's timestamp.
//! * `seq`: a field path holding a per-symbol sequence number, or `offset`
//!   (the default unless the record has a `seq` field): the record's Kafka
//!   offset + 1. Offsets rise for every symbol of a partition, so such seqs
//!   rise but skip; the edge does not read a skip as lost ticks.
//! * `forward`: `*` (every other top-level field), or fields separated by
//!   `|`, sent as the tick's `attrs` (strings; records and arrays as JSON).
//!
//! A field path is field names separated by `.`; an Avro union of `null`
//! and one type is followed through (`null` is a missing value).
//!
//! For Avro, a mapping is resolved once per writer schema ([`Compiled`]),
//! by field name: a field added by a later schema version is ignored unless
//! mapped; one removed (it had a default) reads as missing, which is
//! allowed for everything but `symbol` and `price`; `int` reads as `long`
//! and `float` as `double`. A writer schema the mapping cannot be resolved
//! against (no `price` field, a price that is a record...) is
//! [`DecodeError::Unresolvable`] for each of its records.
//!
//! It never does I/O: writer schemas come through [`WriterSchemas`], which
//! the ingest fills from the registry.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    str::FromStr,
    sync::Arc,
};

use apache_avro::{schema::Name, types::Value, Schema};

use super::{
    avro::{DecodeError, TickCodec, MAX_ATTRS, MAX_ATTR_KEY_BYTES},
    wire::{is_json_number, Exact},
};
use crate::market::{Symbol, Tick};

/// How a topic's record values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// tickfan's contract, `schemas/tick.avsc`, single-object encoding.
    Tickfan,
    /// The Confluent wire format with a Schema Registry.
    Avro,
    /// A JSON object.
    Json,
}

/// Field names from the top of the record.
pub type FieldPath = Vec<String>;

/// Where a tick's symbol comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolFrom {
    Key,
    Field(FieldPath),
}

/// The unit of a timestamp field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// The Avro logical type's; micros for other numbers, ISO-8601 for text.
    Auto,
    Seconds,
    Millis,
    Micros,
    Nanos,
    Iso8601,
}

/// Where a tick's seq comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqFrom {
    /// The record's Kafka offset + 1.
    Offset,
    Field(FieldPath),
}

/// Which other fields are forwarded as `attrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    Nothing,
    /// Every top-level field not mapped to a tick field.
    All,
    Fields(Vec<FieldPath>),
}

/// One topic's mapping. See the module documentation for the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub topic: String,
    pub format: Format,
    pub symbol: SymbolFrom,
    pub price: FieldPath,
    /// `None`: the field of the tick's name, when the record has one.
    pub size: Option<FieldPath>,
    pub bid: Option<FieldPath>,
    pub ask: Option<FieldPath>,
    pub venue: Option<FieldPath>,
    pub ts: Option<(FieldPath, TimeUnit)>,
    /// `None`: a `seq` field when the record has one, else the offset.
    pub seq: Option<SeqFrom>,
    pub forward: Forward,
}

impl Mapping {
    /// tickfan's own contract for `topic`: what a topic without a mapping is.
    pub fn tickfan(topic: &str) -> Mapping {
        Mapping {
            topic: topic.to_string(),
            format: Format::Tickfan,
            symbol: SymbolFrom::Field(path("symbol")),
            price: path("price"),
            size: None,
            bid: None,
            ask: None,
            venue: None,
            ts: None,
            seq: None,
            forward: Forward::Nothing,
        }
    }
}

fn path(s: &str) -> FieldPath {
    s.split('.').map(str::to_string).collect()
}

fn parse_path(s: &str) -> Result<FieldPath, String> {
    let p = path(s);
    if p.iter().any(|seg| {
        seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) {
        return Err(format!(
            "{s:?} is not a field path (field names of A-Z a-z 0-9 _ - separated by .)"
        ));
    }
    Ok(p)
}

impl FromStr for Mapping {
    type Err = String;

    fn from_str(s: &str) -> Result<Mapping, String> {
        let (topic, rest) = s
            .split_once(':')
            .ok_or("a mapping is TOPIC:key=value,... (e.g. quotes:format=json,symbol=key)")?;
        let topic = topic.trim();
        if topic.is_empty() {
            return Err("a mapping needs a topic before ':'".into());
        }
        let mut m = Mapping::tickfan(topic);
        let mut format = None;
        let mut others = Vec::new();
        for item in rest.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            match k {
                "format" => {
                    format = Some(match v {
                        "tickfan" => Format::Tickfan,
                        "avro" => Format::Avro,
                        "json" => Format::Json,
                        _ => return Err(format!("format {v:?}: expected tickfan, avro or json")),
                    })
                }
                "symbol" if v == "key" => m.symbol = SymbolFrom::Key,
                "symbol" => m.symbol = SymbolFrom::Field(parse_path(v)?),
                "price" => m.price = parse_path(v)?,
                "size" => m.size = Some(parse_path(v)?),
                "bid" => m.bid = Some(parse_path(v)?),
                "ask" => m.ask = Some(parse_path(v)?),
                "venue" => m.venue = Some(parse_path(v)?),
                "ts" => {
                    let (p, unit) = match v.rsplit_once(':') {
                        Some((p, u)) => (
                            p,
                            match u {
                                "seconds" => TimeUnit::Seconds,
                                "millis" => TimeUnit::Millis,
                                "micros" => TimeUnit::Micros,
                                "nanos" => TimeUnit::Nanos,
                                "iso8601" => TimeUnit::Iso8601,
                                _ => return Err(format!(
                                    "ts unit {u:?}: expected seconds, millis, micros, nanos or iso8601"
                                )),
                            },
                        ),
                        None => (v, TimeUnit::Auto),
                    };
                    m.ts = Some((parse_path(p)?, unit));
                }
                "seq" if v == "offset" => m.seq = Some(SeqFrom::Offset),
                "seq" => m.seq = Some(SeqFrom::Field(parse_path(v)?)),
                "forward" if v == "*" => m.forward = Forward::All,
                "forward" => {
                    m.forward = Forward::Fields(
                        v.split('|')
                            .map(|f| parse_path(f.trim()))
                            .collect::<Result<_, _>>()?,
                    )
                }
                _ => {
                    return Err(format!(
                        "unknown mapping key {k:?} (format, symbol, price, size, bid, ask, venue, ts, seq, forward)"
                    ))
                }
            }
            if k != "format" {
                others.push(k.to_string());
            }
        }
        m.format = format.unwrap_or(Format::Tickfan);
        if m.format == Format::Tickfan && !others.is_empty() {
            return Err(format!(
                "format tickfan is tickfan's own contract and takes no {} (set format=avro or format=json)",
                others.join(", ")
            ));
        }
        if let Forward::Fields(f) = &m.forward {
            if f.len() > MAX_ATTRS {
                return Err(format!("forward names more than {MAX_ATTRS} fields"));
            }
        }
        Ok(m)
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = match self.format {
            Format::Tickfan => "tickfan",
            Format::Avro => "avro",
            Format::Json => "json",
        };
        write!(f, "{}:format={format}", self.topic)
    }
}

/// What a record is, besides its value.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub offset: i64,
    /// The Kafka record timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

/// A record read as a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub tick: Tick,
    /// Numbers to write as decimal text.
    pub exact: Option<Exact>,
    /// Whether seqs of a symbol go up by one (a feed's own numbering), so a
    /// skip means lost ticks; `false` for offset-numbered ticks.
    pub dense: bool,
}

/// Why a record was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a tick: counted by reason, and skipped.
    Bad(DecodeError),
    /// Its writer schema is not known yet: the record must wait for it.
    NeedSchema(u32),
}

impl From<DecodeError> for Skip {
    fn from(e: DecodeError) -> Skip {
        Skip::Bad(e)
    }
}

/// A writer schema by Schema Registry id.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<Schema>),
    /// The registry says there is no such schema (or it is not Avro).
    Missing,
    /// Not fetched yet (or the registry is not answering).
    Pending,
}

/// Where writer schemas come from.
pub trait WriterSchemas {
    fn lookup(&self, id: u32) -> Lookup;
}

/// Writer schemas compiled against this many ids at most per topic; more
/// and the oldest half is forgotten (and compiled again if seen again).
const MAX_COMPILED: usize = 1024;

/// Reads one topic's records. Build once per topic; `decode` is the hot
/// path.
pub struct TopicReader {
    mapping: Arc<Mapping>,
    kind: Kind,
}

enum Kind {
    Tickfan(TickCodec),
    Avro {
        compiled: HashMap<u32, Result<Arc<Compiled>, DecodeError>>,
        max_record_bytes: usize,
    },
    Json {
        max_record_bytes: usize,
    },
}

impl TopicReader {
    pub fn new(mapping: Mapping, max_record_bytes: usize) -> TopicReader {
        let kind = match mapping.format {
            Format::Tickfan => Kind::Tickfan(TickCodec::new(max_record_bytes)),
            Format::Avro => Kind::Avro {
                compiled: HashMap::new(),
                max_record_bytes,
            },
            Format::Json => Kind::Json { max_record_bytes },
        };
        TopicReader {
            mapping: Arc::new(mapping),
            kind,
        }
    }

    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Reads one record.
    pub fn decode(
        &mut self,
        rec: &Record<'_>,
        schemas: &dyn WriterSchemas,
    ) -> Result<Decoded, Skip> {
        match &mut self.kind {
            Kind::Tickfan(codec) => Ok(Decoded {
                tick: codec.decode(rec.value)?,
                exact: None,
                dense: true,
            }),
            Kind::Avro {
                compiled,
                max_record_bytes,
            } => {
                if rec.value.len() > *max_record_bytes {
                    return Err(DecodeError::Oversized.into());
                }
                let (id, datum) = confluent_frame(rec.value)?;
                let c = match compiled.get(&id) {
                    Some(c) => c.clone(),
                    None => {
                        let c = match schemas.lookup(id) {
                            Lookup::Pending => return Err(Skip::NeedSchema(id)),
                            Lookup::Missing => Err(DecodeError::UnknownSchema),
                            Lookup::Found(s) => {
                                Compiled::new(&self.mapping, s, *max_record_bytes).map(Arc::new)
                            }
                        };
                        if compiled.len() >= MAX_COMPILED {
                            let drop: Vec<u32> =
                                compiled.keys().take(MAX_COMPILED / 2).copied().collect();
                            for k in drop {
                                compiled.remove(&k);
                            }
                        }
                        // A missing schema is asked again when next seen.
                        if c.as_ref().err() != Some(&DecodeError::UnknownSchema) {
                            compiled.insert(id, c.clone());
                        }
                        c
                    }
                }?;
                c.decode(rec, datum)
            }
            Kind::Json { max_record_bytes } => {
                if rec.value.len() > *max_record_bytes {
                    return Err(DecodeError::Oversized.into());
                }
                let v: serde_json::Value =
                    serde_json::from_slice(rec.value).map_err(|_| DecodeError::NotJson)?;
                if !v.is_object() {
                    return Err(DecodeError::NotJson.into());
                }
                decode_json(&self.mapping, rec, &v, *max_record_bytes).map_err(Skip::Bad)
            }
        }
    }
}

/// The schema id and datum of a Confluent wire format value.
pub fn confluent_frame(value: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match value {
        [0, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => Err(DecodeError::NotConfluent),
    }
}

/// How a mapped value is read from an Avro record: the field positions
/// from the top, and what the last one holds.
#[derive(Debug, Clone)]
struct Access {
    steps: Vec<usize>,
    leaf: Leaf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf {
    Int,
    Long,
    Float,
    Double,
    Decimal {
        scale: usize,
    },
    String,
    Enum,
    Boolean,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    /// Anything else: only forwarded (as JSON).
    Other,
}

impl Leaf {
    fn is_number(self) -> bool {
        matches!(
            self,
            Leaf::Int
                | Leaf::Long
                | Leaf::Float
                | Leaf::Double
                | Leaf::Decimal { .. }
                | Leaf::String
        )
    }
}

/// A mapping resolved against one writer schema.
pub struct Compiled {
    /// The writer schema, resolved once for decoding.
    reader: crate::codec::avro::Resolved,
    symbol: Option<Access>,
    price: Access,
    size: Option<Access>,
    bid: Option<Access>,
    ask: Option<Access>,
    venue: Option<Access>,
    ts: Option<(Access, TimeUnit)>,
    seq: Option<Access>,
    forward: Vec<(String, Access)>,
    /// Most bytes of text a tick's `attrs` may hold (`--max-record-bytes`).
    max_attrs_bytes: usize,
}

impl Compiled {
    fn new(
        mapping: &Arc<Mapping>,
        writer: Arc<Schema>,
        max_attrs_bytes: usize,
    ) -> Result<Compiled, DecodeError> {
        let names = named_types(&writer).ok_or(DecodeError::Unresolvable)?;
        if !Shape::fits(&writer, &names) {
            return Err(DecodeError::Unresolvable);
        }
        let cx = Resolver {
            root: &writer,
            names: &names,
        };
        let m = mapping.as_ref();
        let required = |p: &FieldPath, ok: fn(Leaf) -> bool| -> Result<Access, DecodeError> {
            cx.access(p)
                .filter(|a| ok(a.leaf))
                .ok_or(DecodeError::Unresolvable)
        };
        // Optional: absent is fine (a field removed with its default), a
        // field of the wrong type is not.
        let optional = |p: Option<&FieldPath>,
                        default: &str,
                        ok: fn(Leaf) -> bool|
         -> Result<Option<Access>, DecodeError> {
            let explicit = p.is_some();
            let p = p.cloned().unwrap_or_else(|| path(default));
            match cx.access(&p) {
                Some(a) if ok(a.leaf) => Ok(Some(a)),
                Some(_) if explicit => Err(DecodeError::Unresolvable),
                _ => Ok(None),
            }
        };
        let text = |l: Leaf| matches!(l, Leaf::String | Leaf::Enum);
        let symbol = match &m.symbol {
            SymbolFrom::Key => None,
            SymbolFrom::Field(p) => Some(required(p, text)?),
        };
        let time = |l: Leaf| {
            matches!(
                l,
                Leaf::Int
                    | Leaf::Long
                    | Leaf::String
                    | Leaf::TimestampMillis
                    | Leaf::TimestampMicros
                    | Leaf::TimestampNanos
            )
        };
        let ts = match &m.ts {
            Some((p, unit)) => Some((required(p, time)?, *unit)),
            None => optional(None, "ts", time)?.map(|a| (a, TimeUnit::Auto)),
        };
        let integer = |l: Leaf| matches!(l, Leaf::Int | Leaf::Long);
        let seq = match &m.seq {
            Some(SeqFrom::Offset) => None,
            Some(SeqFrom::Field(p)) => Some(required(p, integer)?),
            None => optional(None, "seq", integer)?,
        };
        let mut c = Compiled {
            symbol,
            price: required(&m.price, Leaf::is_number)?,
            size: optional(m.size.as_ref(), "size", Leaf::is_number)?,
            bid: optional(m.bid.as_ref(), "bid", Leaf::is_number)?,
            ask: optional(m.ask.as_ref(), "ask", Leaf::is_number)?,
            venue: optional(m.venue.as_ref(), "venue", text)?,
            ts,
            seq,
            forward: Vec::new(),
            max_attrs_bytes,
            reader: crate::codec::avro::Resolved::new((*writer).clone())
                .map_err(|_| DecodeError::Unresolvable)?,
        };
        c.forward = match &m.forward {
            Forward::Nothing => Vec::new(),
            Forward::Fields(fields) => fields
                .iter()
                // A forwarded field the writer does not have is not sent.
                .filter_map(|p| cx.access(p).map(|a| (p.join("."), a)))
                .collect(),
            Forward::All => {
                let Schema::Record(r) = &*writer else {
                    return Err(DecodeError::Unresolvable);
                };
                let used: Vec<&[usize]> = [
                    c.symbol.as_ref(),
                    Some(&c.price),
                    c.size.as_ref(),
                    c.bid.as_ref(),
                    c.ask.as_ref(),
                    c.venue.as_ref(),
                    c.ts.as_ref().map(|(a, _)| a),
                    c.seq.as_ref(),
                ]
                .into_iter()
                .flatten()
                .map(|a| &a.steps[..])
                .collect();
                r.fields
                    .iter()
                    .filter(|f| !used.iter().any(|s| s.first() == Some(&f.position)))
                    .filter_map(|f| {
                        cx.access(std::slice::from_ref(&f.name))
                            .map(|a| (f.name.clone(), a))
                    })
                    .take(MAX_ATTRS)
                    .collect()
            }
        };
        Ok(c)
    }

    fn decode(&self, rec: &Record<'_>, datum: &[u8]) -> Result<Decoded, Skip> {
        let mut reader = Tracked {
            rest: datum,
            ran_out: false,
        };
        let value = self
            .reader
            .read(&mut reader)
            .map_err(|_| DecodeError::Malformed)?;
        if !reader.rest.is_empty() || reader.ran_out {
            return Err(DecodeError::Malformed.into());
        }
        let get = |a: &Access| -> Option<&Value> {
            let mut v = &value;
            for &i in &a.steps {
                v = unwrap_union(v)?;
                let Value::Record(fields) = v else {
                    return None;
                };
                v = &fields.get(i)?.1;
            }
            unwrap_union(v)
        };
        let mut exact = Exact::default();
        let number =
            |a: &Access, slot: &mut Option<Box<str>>| -> Result<Option<f64>, DecodeError> {
                let Some(v) = get(a) else { return Ok(None) };
                avro_number(v, a.leaf, slot).map(Some)
            };
        let symbol = match &self.symbol {
            None => key_symbol(rec)?,
            Some(a) => match get(a) {
                Some(Value::String(s)) => {
                    Symbol::parse(s).map_err(|_| DecodeError::InvalidField)?
                }
                Some(Value::Enum(_, s)) => {
                    Symbol::parse(s).map_err(|_| DecodeError::InvalidField)?
                }
                _ => return Err(DecodeError::MissingField.into()),
            },
        };
        let price = number(&self.price, &mut exact.price)?.ok_or(DecodeError::MissingField)?;
        let opt = |a: &Option<Access>, slot: &mut Option<Box<str>>| match a {
            Some(a) => number(a, slot),
            None => Ok(None),
        };
        let size = opt(&self.size, &mut exact.size)?.unwrap_or(0.0);
        let bid = opt(&self.bid, &mut exact.bid)?;
        let ask = opt(&self.ask, &mut exact.ask)?;
        let venue = match self.venue.as_ref().and_then(get) {
            Some(Value::String(s) | Value::Enum(_, s)) => Some(s.clone()),
            _ => None,
        };
        let ts = match &self.ts {
            Some((a, unit)) => match get(a) {
                Some(v) => avro_time(v, *unit)?,
                None => record_time(rec),
            },
            None => record_time(rec),
        };
        let (seq, dense) = match &self.seq {
            Some(a) => match get(a) {
                Some(Value::Int(n)) => (i64::from(*n), true),
                Some(Value::Long(n)) => (*n, true),
                _ => return Err(DecodeError::MissingField.into()),
            },
            None => (rec.offset + 1, false),
        };
        let mut attrs = BTreeMap::new();
        for (name, a) in &self.forward {
            if let Some(v) = get(a) {
                if let Some(s) = avro_text(v, a.leaf) {
                    attrs.insert(name.clone(), s);
                }
            }
        }
        finish(
            symbol,
            price,
            size,
            bid,
            ask,
            venue,
            ts,
            seq,
            attrs,
            self.max_attrs_bytes,
            exact,
            dense,
        )
    }
}

/// Every named type `writer` defines, by name; `None` if a name does not
/// resolve.
fn named_types(writer: &Schema) -> Option<HashMap<Name, Schema>> {
    let resolved = apache_avro::schema::ResolvedSchema::try_from(writer).ok()?;
    Some(
        resolved
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect(),
    )
}

/// Most bytes of memory apache-avro may build per byte of record, in the
/// items of an array or map and for a whole record (counted as at least
/// [`MIN_RECORD_BYTES`] long).
pub const MAX_MEMORY_PER_BYTE: usize = 256;

/// The length a record is counted as at least, for [`MAX_MEMORY_PER_BYTE`]:
/// a record may decode into 64 KiB of values whatever its length.
const MIN_RECORD_BYTES: usize = 256;

/// Deepest nesting of records a writer schema may have.
const MAX_RECORD_DEPTH: usize = 64;

/// What a writer schema makes apache-avro build, worked out once per schema
/// in time proportional to its size: each named type is looked at once
/// (a schema that names a type twice at each of 60 levels stands for 2^60
/// values).
struct Shape<'a> {
    names: &'a HashMap<Name, Schema>,
    /// The records being looked at, outermost first.
    open: Vec<Name>,
    /// Each named type looked at: [`Shape::cost`] of one of its values.
    known: HashMap<Name, (usize, usize)>,
    /// An array or map of `s` whose items take no bytes (an array's), or may
    /// make more than [`MAX_MEMORY_PER_BYTE`] per byte of record.
    amplifies: bool,
    /// Calls of [`Shape::cost`], to show the work is the schema's size.
    visits: usize,
}

impl<'a> Shape<'a> {
    /// Whether a record of `writer` may be decoded: `false` if it is
    /// recursive (a record inside itself: apache-avro decodes it by
    /// recursion, as deep as a record says, and a 64 KiB record could nest
    /// 60,000 deep and overflow the ingest thread's stack), nests records
    /// more than [`MAX_RECORD_DEPTH`] deep, or may make more than
    /// [`MAX_MEMORY_PER_BYTE`] per byte of record (apache-avro builds every
    /// value a record stands for, 56 bytes each with copies of field names
    /// and enum symbols, before the record ends: a block count of a few
    /// bytes may claim 2^20 items). No market-data record needs any of it.
    fn fits(writer: &Schema, names: &'a HashMap<Name, Schema>) -> bool {
        Shape::measure(writer, names).0
    }

    /// [`Shape::fits`], and how many types it looked at.
    fn measure(writer: &Schema, names: &'a HashMap<Name, Schema>) -> (bool, usize) {
        let mut shape = Shape {
            names,
            open: Vec::new(),
            known: HashMap::new(),
            amplifies: false,
            visits: 0,
        };
        let fits = match shape.cost(writer) {
            Some((memory, bytes)) => {
                !shape.amplifies
                    && memory <= MAX_MEMORY_PER_BYTE.saturating_mul(bytes.max(MIN_RECORD_BYTES))
            }
            None => false,
        };
        (fits, shape.visits)
    }

    /// The memory apache-avro builds for one value of `s` (its `Value`s,
    /// with the field names and enum symbols it copies into them; the items
    /// of arrays and maps are weighed on their own), and the fewest bytes of
    /// record such a value takes. `None`: recursive or too deep.
    fn cost(&mut self, s: &Schema) -> Option<(usize, usize)> {
        const VALUE: usize = std::mem::size_of::<Value>();
        const STRING: usize = std::mem::size_of::<String>();
        self.visits += 1;
        let heavy = |(memory, bytes): (usize, usize)| {
            bytes == 0 || memory > MAX_MEMORY_PER_BYTE.saturating_mul(bytes)
        };
        Some(match s {
            Schema::Null => (VALUE, 0),
            Schema::Float => (VALUE, 4),
            Schema::Double => (VALUE, 8),
            Schema::Duration => (VALUE, 12),
            Schema::Fixed(f) => (VALUE.saturating_add(f.size), f.size),
            Schema::Decimal(d) => self.cost(&d.inner)?,
            Schema::Enum(e) => (
                VALUE + e.symbols.iter().map(String::len).max().unwrap_or(0),
                1,
            ),
            Schema::Record(r) => {
                if let Some(&known) = self.known.get(&r.name) {
                    return Some(known);
                }
                if self.open.len() >= MAX_RECORD_DEPTH
                    || self
                        .open
                        .iter()
                        .any(|n| n == &r.name || n.name == r.name.name)
                {
                    return None;
                }
                self.open.push(r.name.clone());
                let (mut memory, mut bytes) = (VALUE, 0usize);
                for f in &r.fields {
                    let (m, b) = self.cost(&f.schema)?;
                    memory = memory
                        .saturating_add(STRING + f.name.len())
                        .saturating_add(m);
                    bytes = bytes.saturating_add(b);
                }
                self.open.pop();
                self.known.insert(r.name.clone(), (memory, bytes));
                (memory, bytes)
            }
            Schema::Ref { name } => {
                if self.open.iter().any(|n| n == name || n.name == name.name) {
                    return None;
                }
                if let Some(&known) = self.known.get(name) {
                    return Some(known);
                }
                let named = self.names.get(name)?;
                self.cost(named)?
            }
            // The branch that makes most per byte, after its index.
            Schema::Union(u) => {
                let mut worst: Option<(usize, usize)> = None;
                for v in u.variants() {
                    let (m, b) = self.cost(v)?;
                    let (m, b) = (VALUE.saturating_add(m), b.saturating_add(1));
                    if worst.is_none_or(|(wm, wb)| m as u128 * wb as u128 > wm as u128 * b as u128)
                    {
                        worst = Some((m, b));
                    }
                }
                worst.unwrap_or((VALUE, 1))
            }
            Schema::Array(a) => {
                if heavy(self.cost(&a.items)?) {
                    self.amplifies = true;
                }
                (VALUE, 1)
            }
            Schema::Map(m) => {
                // An entry: its key (a length, at least) and its value.
                let (memory, bytes) = self.cost(&m.types)?;
                if heavy((memory.saturating_add(STRING), bytes.saturating_add(1))) {
                    self.amplifies = true;
                }
                (VALUE, 1)
            }
            // A number, a boolean, a string's or bytes' length: one byte at
            // least (their text is the record's own bytes).
            _ => (VALUE, 1),
        })
    }
}

/// The datum, read by apache-avro, noting whether it ever ran out: a
/// truncated string decodes as `null` instead of an error in apache-avro
/// 0.21 (`decode.rs`, `Schema::String`), so running out is checked here.
struct Tracked<'a> {
    rest: &'a [u8],
    ran_out: bool,
}

impl std::io::Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.ran_out = true;
            return Ok(0);
        }
        self.rest.read(buf)
    }
}

struct Resolver<'a> {
    root: &'a Schema,
    names: &'a HashMap<Name, Schema>,
}

impl Resolver<'_> {
    /// `s`, with a named reference replaced by what it names and a union of
    /// `null` and one type by that type.
    fn plain<'s>(&'s self, mut s: &'s Schema) -> Option<&'s Schema> {
        for _ in 0..16 {
            match s {
                Schema::Ref { name } => {
                    s = self.names.get(name).or_else(|| {
                        self.names
                            .iter()
                            .find(|(n, _)| n.name == name.name)
                            .map(|(_, s)| s)
                    })?;
                }
                Schema::Union(u) => {
                    let mut non_null = u.variants().iter().filter(|v| **v != Schema::Null);
                    let one = non_null.next()?;
                    if non_null.next().is_some() {
                        return Some(s);
                    }
                    s = one;
                }
                _ => return Some(s),
            }
        }
        None
    }

    fn access(&self, path: &[String]) -> Option<Access> {
        let mut s = self.root;
        let mut steps = Vec::with_capacity(path.len());
        for name in path {
            let Schema::Record(r) = self.plain(s)? else {
                return None;
            };
            let i = *r.lookup.get(name)?;
            steps.push(i);
            s = &r.fields[i].schema;
        }
        let leaf = match self.plain(s)? {
            Schema::Int => Leaf::Int,
            Schema::Long => Leaf::Long,
            Schema::Float => Leaf::Float,
            Schema::Double => Leaf::Double,
            Schema::Decimal(d) => Leaf::Decimal { scale: d.scale },
            Schema::String | Schema::Uuid => Leaf::String,
            Schema::Enum(_) => Leaf::Enum,
            Schema::Boolean => Leaf::Boolean,
            Schema::TimestampMillis | Schema::LocalTimestampMillis => Leaf::TimestampMillis,
            Schema::TimestampMicros | Schema::LocalTimestampMicros => Leaf::TimestampMicros,
            Schema::TimestampNanos | Schema::LocalTimestampNanos => Leaf::TimestampNanos,
            _ => Leaf::Other,
        };
        Some(Access { steps, leaf })
    }
}

fn unwrap_union(v: &Value) -> Option<&Value> {
    match v {
        Value::Union(_, inner) => unwrap_union(inner),
        Value::Null => None,
        v => Some(v),
    }
}

/// A number from an Avro value; a decimal (or decimal text) also as text.
fn avro_number(v: &Value, leaf: Leaf, text: &mut Option<Box<str>>) -> Result<f64, DecodeError> {
    let x = match (v, leaf) {
        (Value::Int(n), _) => f64::from(*n),
        (Value::Long(n), _) => *n as f64,
        (Value::Float(x), _) => f64::from(*x),
        (Value::Double(x), _) => *x,
        (Value::Decimal(d), Leaf::Decimal { scale }) => {
            let t = exact_decimal(d, scale).ok_or(DecodeError::InvalidField)?;
            let x = t.parse::<f64>().map_err(|_| DecodeError::InvalidField)?;
            *text = Some(t.into());
            x
        }
        (Value::String(s), _) => return decimal_str(s, text),
        _ => return Err(DecodeError::InvalidField),
    };
    Ok(x)
}

/// A number written as text: a JSON number, kept as written.
fn decimal_str(s: &str, text: &mut Option<Box<str>>) -> Result<f64, DecodeError> {
    let s = s.trim();
    if !is_json_number(s) || s.len() > 64 {
        return Err(DecodeError::InvalidField);
    }
    let x = s.parse::<f64>().map_err(|_| DecodeError::InvalidField)?;
    *text = Some(s.into());
    Ok(x)
}

/// Most digits, and largest scale, of a decimal read as text: as a number
/// written as JSON text (at most 64 characters), so that a one-byte decimal
/// of a schema's scale 1,000,000 is not a million-character price.
pub const MAX_DECIMAL_DIGITS: usize = 64;

/// An Avro decimal as text; `None` beyond [`MAX_DECIMAL_DIGITS`].
fn exact_decimal(d: &apache_avro::Decimal, scale: usize) -> Option<String> {
    if scale > MAX_DECIMAL_DIGITS {
        return None;
    }
    let unscaled = num_bigint::BigInt::from(d.clone());
    // 10^64 < 2^213: a larger magnitude has more digits (and formatting a
    // record's worth of bytes as digits is not cheap).
    if unscaled.bits() > 213 || unscaled.magnitude().to_string().len() > MAX_DECIMAL_DIGITS {
        return None;
    }
    Some(decimal_text(&unscaled, scale))
}

/// `unscaled` × 10^-`scale` as decimal text (`12345`, 2 → `123.45`).
pub fn decimal_text(unscaled: &num_bigint::BigInt, scale: usize) -> String {
    let digits = unscaled.magnitude().to_string();
    let neg = unscaled.sign() == num_bigint::Sign::Minus;
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if neg {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    }
    out
}

fn avro_time(v: &Value, unit: TimeUnit) -> Result<i64, DecodeError> {
    let n = match v {
        Value::TimestampMillis(n) | Value::LocalTimestampMillis(n) if unit == TimeUnit::Auto => {
            return Ok(n.saturating_mul(1000))
        }
        Value::TimestampMicros(n) | Value::LocalTimestampMicros(n) if unit == TimeUnit::Auto => {
            return Ok(*n)
        }
        Value::TimestampNanos(n) | Value::LocalTimestampNanos(n) if unit == TimeUnit::Auto => {
            return Ok(n / 1000)
        }
        Value::TimestampMillis(n)
        | Value::TimestampMicros(n)
        | Value::TimestampNanos(n)
        | Value::LocalTimestampMillis(n)
        | Value::LocalTimestampMicros(n)
        | Value::LocalTimestampNanos(n)
        | Value::Long(n) => *n,
        Value::Int(n) => i64::from(*n),
        Value::String(s) => return iso8601_micros(s),
        _ => return Err(DecodeError::InvalidField),
    };
    scale_time(n, unit)
}

fn scale_time(n: i64, unit: TimeUnit) -> Result<i64, DecodeError> {
    Ok(match unit {
        TimeUnit::Seconds => n.saturating_mul(1_000_000),
        TimeUnit::Millis => n.saturating_mul(1000),
        TimeUnit::Auto | TimeUnit::Micros => n,
        TimeUnit::Nanos => n / 1000,
        TimeUnit::Iso8601 => return Err(DecodeError::InvalidField),
    })
}

/// Microseconds since the epoch of an RFC 3339 / ISO-8601 date-time
/// (`2026-12-03T10:15:30.123456Z`, or with `+01:00`; no zone is UTC).
pub fn iso8601_micros(s: &str) -> Result<i64, DecodeError> {
    let s = s.trim();
    if s.len() > 40 || s.len() < 19 {
        return Err(DecodeError::InvalidField);
    }
    // humantime reads the date-time; the zone offset is applied here.
    let (local, offset_secs) = match s.as_bytes()[s.len() - 1] {
        b'Z' | b'z' => (&s[..s.len() - 1], 0i64),
        _ if s.len() > 25 || s[19..].contains(['+', '-']) => {
            let at = s[19..]
                .find(['+', '-'])
                .map(|i| i + 19)
                .ok_or(DecodeError::InvalidField)?;
            let (local, zone) = s.split_at(at);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let hm = zone[1..].replace(':', "");
            if hm.len() != 4 || !hm.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecodeError::InvalidField);
            }
            let h: i64 = hm[..2].parse().map_err(|_| DecodeError::InvalidField)?;
            let m: i64 = hm[2..].parse().map_err(|_| DecodeError::InvalidField)?;
            (local, sign * (h * 3600 + m * 60))
        }
        _ => (s, 0),
    };
    let t = humantime::parse_rfc3339_weak(local).map_err(|_| DecodeError::InvalidField)?;
    let micros = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .map_err(|_| DecodeError::InvalidField)?;
    Ok(micros - offset_secs * 1_000_000)
}

/// A forwarded value as text; `None` for a value that cannot be shown.
fn avro_text(v: &Value, leaf: Leaf) -> Option<String> {
    Some(match v {
        Value::String(s) | Value::Enum(_, s) => s.clone(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Long(n)
        | Value::TimestampMillis(n)
        | Value::TimestampMicros(n)
        | Value::TimestampNanos(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        Value::Decimal(d) => match leaf {
            Leaf::Decimal { scale } => exact_decimal(d, scale)?,
            _ => return None,
        },
        other => serde_json::to_string(&serde_json::Value::try_from(other.clone()).ok()?).ok()?,
    })
}

fn key_symbol(rec: &Record<'_>) -> Result<Symbol, DecodeError> {
    let key = rec.key.ok_or(DecodeError::MissingField)?;
    let key = std::str::from_utf8(key).map_err(|_| DecodeError::InvalidField)?;
    Symbol::parse(key).map_err(|_| DecodeError::InvalidField)
}

fn record_time(rec: &Record<'_>) -> i64 {
    rec.timestamp_ms
        .map(|ms| ms.saturating_mul(1000))
        .unwrap_or_else(crate::market::now_micros)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    symbol: Symbol,
    price: f64,
    size: f64,
    bid: Option<f64>,
    ask: Option<f64>,
    venue: Option<String>,
    ts: i64,
    seq: i64,
    attrs: BTreeMap<String, String>,
    max_attrs_bytes: usize,
    exact: Exact,
    dense: bool,
) -> Result<Decoded, Skip> {
    let finite = |x: Option<f64>| x.is_none_or(f64::is_finite);
    if !price.is_finite() || !size.is_finite() || !finite(bid) || !finite(ask) {
        return Err(DecodeError::InvalidField.into());
    }
    if attrs
        .keys()
        .any(|k| k.is_empty() || k.len() > MAX_ATTR_KEY_BYTES)
    {
        return Err(DecodeError::InvalidField.into());
    }
    // A record's values can be much longer as text than as they came (Avro
    // bytes as lists of numbers, enum symbols; JSON `1e9` as `1000000000.0`):
    // the tick is held to what a record may be.
    if attrs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > max_attrs_bytes {
        return Err(DecodeError::Oversized.into());
    }
    let exact = (exact != Exact::default()).then_some(exact);
    Ok(Decoded {
        tick: Tick {
            symbol,
            price,
            size,
            bid,
            ask,
            venue,
            ts,
            seq,
            attrs,
        },
        exact,
        dense,
    })
}

fn decode_json(
    m: &Mapping,
    rec: &Record<'_>,
    v: &serde_json::Value,
    max_attrs_bytes: usize,
) -> Result<Decoded, DecodeError> {
    let get = |p: &FieldPath| -> Option<&serde_json::Value> {
        let mut v = v;
        for name in p {
            v = v.as_object()?.get(name)?;
        }
        (!v.is_null()).then_some(v)
    };
    let number = |p: &FieldPath, slot: &mut Option<Box<str>>| -> Result<Option<f64>, DecodeError> {
        match get(p) {
            None => Ok(None),
            Some(serde_json::Value::Number(n)) => {
                n.as_f64().map(Some).ok_or(DecodeError::InvalidField)
            }
            Some(serde_json::Value::String(s)) => decimal_str(s, slot).map(Some),
            Some(_) => Err(DecodeError::InvalidField),
        }
    };
    let or_named = |p: &Option<FieldPath>, name: &str| p.clone().unwrap_or_else(|| path(name));
    let mut exact = Exact::default();
    let symbol = match &m.symbol {
        SymbolFrom::Key => key_symbol(rec)?,
        SymbolFrom::Field(p) => match get(p) {
            Some(serde_json::Value::String(s)) => {
                Symbol::parse(s).map_err(|_| DecodeError::InvalidField)?
            }
            Some(_) => return Err(DecodeError::InvalidField),
            None => return Err(DecodeError::MissingField),
        },
    };
    let price = number(&m.price, &mut exact.price)?.ok_or(DecodeError::MissingField)?;
    let size = number(&or_named(&m.size, "size"), &mut exact.size)?.unwrap_or(0.0);
    let bid = number(&or_named(&m.bid, "bid"), &mut exact.bid)?;
    let ask = number(&or_named(&m.ask, "ask"), &mut exact.ask)?;
    let venue = match get(&or_named(&m.venue, "venue")) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        None => None,
        Some(_) => return Err(DecodeError::InvalidField),
    };
    let (ts_path, unit) = m.ts.clone().unwrap_or_else(|| (path("ts"), TimeUnit::Auto));
    let ts = match get(&ts_path) {
        None if m.ts.is_some() => return Err(DecodeError::MissingField),
        None => record_time(rec),
        Some(serde_json::Value::String(s))
            if matches!(unit, TimeUnit::Auto | TimeUnit::Iso8601) =>
        {
            iso8601_micros(s)?
        }
        Some(serde_json::Value::Number(n)) => {
            scale_time(n.as_i64().ok_or(DecodeError::InvalidField)?, unit)?
        }
        Some(_) => return Err(DecodeError::InvalidField),
    };
    let (seq, dense) = match &m.seq {
        Some(SeqFrom::Offset) => (rec.offset + 1, false),
        Some(SeqFrom::Field(p)) => (
            get(p)
                .ok_or(DecodeError::MissingField)?
                .as_i64()
                .ok_or(DecodeError::InvalidField)?,
            true,
        ),
        None => match get(&path("seq")) {
            Some(n) => (n.as_i64().ok_or(DecodeError::InvalidField)?, true),
            None => (rec.offset + 1, false),
        },
    };
    let mut attrs = BTreeMap::new();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match &m.forward {
        Forward::Nothing => {}
        Forward::Fields(fields) => {
            for p in fields {
                if let Some(v) = get(p) {
                    attrs.insert(p.join("."), text(v));
                }
            }
        }
        Forward::All => {
            let mapped: Vec<&str> = [
                match &m.symbol {
                    SymbolFrom::Field(p) => p.first().map(String::as_str),
                    SymbolFrom::Key => None,
                },
                m.price.first().map(String::as_str),
                Some(or_named_first(&m.size, "size")),
                Some(or_named_first(&m.bid, "bid")),
                Some(or_named_first(&m.ask, "ask")),
                Some(or_named_first(&m.venue, "venue")),
                Some(
                    m.ts.as_ref()
                        .and_then(|(p, _)| p.first())
                        .map_or("ts", String::as_str),
                ),
                match &m.seq {
                    Some(SeqFrom::Field(p)) => p.first().map(String::as_str),
                    _ => Some("seq"),
                },
            ]
            .into_iter()
            .flatten()
            .collect();
            let obj = v.as_object().expect("checked: an object");
            for (k, v) in obj
                .iter()
                .filter(|(k, v)| !mapped.contains(&k.as_str()) && !v.is_null())
            {
                if attrs.len() == MAX_ATTRS {
                    break;
                }
                attrs.insert(k.clone(), text(v));
            }
        }
    }
    finish(
        symbol,
        price,
        size,
        bid,
        ask,
        venue,
        ts,
        seq,
        attrs,
        max_attrs_bytes,
        exact,
        dense,
    )
    .map_err(|e| match e {
        Skip::Bad(e) => e,
        Skip::NeedSchema(_) => DecodeError::Malformed,
    })
}

fn or_named_first<'a>(p: &'a Option<FieldPath>, name: &'a str) -> &'a str {
    p.as_ref()
        .and_then(|p| p.first())
        .map_or(name, String::as_str)
}

#[cfg(test)]
mod tests {
    use apache_avro::{to_avro_datum, Decimal};

    use super::*;

    struct Fixed(HashMap<u32, Arc<Schema>>);

    impl WriterSchemas for Fixed {
        fn lookup(&self, id: u32) -> Lookup {
            match self.0.get(&id) {
                Some(s) => Lookup::Found(s.clone()),
                None if id == 404 => Lookup::Missing,
                None => Lookup::Pending,
            }
        }
    }

    /// A company's quote record, version 1: nested instrument, decimal
    /// prices, millisecond event time, a float size, no seq.
    const V1: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
        {"name":"instrument","type":{"type":"record","name":"Instrument","fields":[
            {"name":"ticker","type":"string"},{"name":"mic","type":["null","string"],"default":null}]}},
        {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
        {"name":"qty","type":"float"},
        {"name":"level","type":"int"},
        {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"desk","type":"string","default":"none"}]}"#;
    /// Version 2: adds an optional field.
    const V2: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
        {"name":"instrument","type":{"type":"record","name":"Instrument","fields":[
            {"name":"ticker","type":"string"},{"name":"mic","type":["null","string"],"default":null}]}},
        {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
        {"name":"qty","type":"float"},
        {"name":"level","type":"int"},
        {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"desk","type":"string","default":"none"},
        {"name":"cond","type":["null","string"],"default":null}]}"#;
    /// Version 3: `desk` removed (it had a default), `qty` widened to
    /// double, `level` to long, and the instrument's `mic` removed.
    const V3: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
        {"name":"instrument","type":{"type":"record","name":"Instrument","fields":[
            {"name":"ticker","type":"string"}]}},
        {"name":"px","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
        {"name":"qty","type":"double"},
        {"name":"level","type":"long"},
        {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"cond","type":["null","string"],"default":null}]}"#;

    const MAPPING: &str = "quotes:format=avro,symbol=instrument.ticker,price=px,size=qty,venue=instrument.mic,ts=event_time,forward=desk|cond|level";

    fn schemas() -> Fixed {
        Fixed(
            [(1, V1), (2, V2), (3, V3)]
                .into_iter()
                .map(|(id, s)| (id, Arc::new(Schema::parse_str(s).unwrap())))
                .collect(),
        )
    }

    fn framed(id: u32, schema: &str, value: Value) -> Vec<u8> {
        let schema = Schema::parse_str(schema).unwrap();
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend(to_avro_datum(&schema, value).unwrap());
        out
    }

    fn decimal(unscaled: i64) -> Value {
        Value::Decimal(Decimal::from(
            num_bigint::BigInt::from(unscaled).to_signed_bytes_be(),
        ))
    }

    fn instrument(ticker: &str, mic: Option<&str>) -> Value {
        let mic = match mic {
            Some(m) => Value::Union(1, Box::new(Value::String(m.into()))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        Value::Record(vec![
            ("ticker".to_string(), Value::String(ticker.into())),
            ("mic".into(), mic),
        ])
    }

    fn v1(ticker: &str, px: i64, t_ms: i64) -> Value {
        Value::Record(vec![
            ("instrument".into(), instrument(ticker, Some("XNAS"))),
            ("px".into(), decimal(px)),
            ("qty".into(), Value::Float(100.5)),
            ("level".into(), Value::Int(2)),
            ("event_time".into(), Value::TimestampMillis(t_ms)),
            ("desk".into(), Value::String("eq".into())),
        ])
    }

    fn record(value: &[u8], offset: i64) -> Record<'_> {
        Record {
            key: Some(b"ignored"),
            value,
            offset,
            timestamp_ms: Some(1),
        }
    }

    #[test]
    fn the_confluent_format_is_read_through_the_mapping_with_exact_decimals() {
        let mut r = TopicReader::new(MAPPING.parse().unwrap(), 65536);
        let bytes = framed(1, V1, v1("AAPL", 1_892_500, 1_764_770_000_123));
        let d = r.decode(&record(&bytes, 41), &schemas()).unwrap();
        assert_eq!(d.tick.symbol.as_str(), "AAPL");
        assert_eq!(d.tick.price, 189.25);
        assert_eq!(d.exact.as_ref().unwrap().price.as_deref(), Some("189.2500"));
        assert_eq!(d.tick.size, 100.5);
        assert_eq!(d.tick.venue.as_deref(), Some("XNAS"));
        assert_eq!(d.tick.ts, 1_764_770_000_123_000, "millis to micros");
        assert_eq!(d.tick.seq, 42, "offset + 1");
        assert!(!d.dense, "offset seqs skip");
        assert_eq!(d.tick.attrs.get("desk").map(String::as_str), Some("eq"));
        assert_eq!(d.tick.attrs.get("level").map(String::as_str), Some("2"));
        assert!(!d.tick.attrs.contains_key("cond"), "v1 has no cond");
        let json = crate::codec::wire::encode_tick_exact(&d.tick, d.exact.as_ref());
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""price":189.2500"#), "{text}");
    }

    #[test]
    fn evolved_writer_schemas_are_read_by_field_name() {
        let mut r = TopicReader::new(MAPPING.parse().unwrap(), 65536);
        let s = schemas();
        let v2 = Value::Record(vec![
            ("instrument".into(), instrument("MSFT", None)),
            ("px".into(), decimal(-5)),
            ("qty".into(), Value::Float(1.0)),
            ("level".into(), Value::Int(1)),
            ("event_time".into(), Value::TimestampMillis(5)),
            ("desk".into(), Value::String("fx".into())),
            (
                "cond".into(),
                Value::Union(1, Box::new(Value::String("@F".into()))),
            ),
        ]);
        let v3 = Value::Record(vec![
            (
                "instrument".into(),
                Value::Record(vec![("ticker".into(), Value::String("NVDA".into()))]),
            ),
            ("px".into(), decimal(12_345_678_901_234_567)),
            ("qty".into(), Value::Double(0.1)),
            ("level".into(), Value::Long(1 << 40)),
            ("event_time".into(), Value::TimestampMillis(6)),
            ("cond".into(), Value::Union(0, Box::new(Value::Null))),
        ]);
        let b1 = framed(1, V1, v1("AAPL", 10_000, 4));
        let b2 = framed(2, V2, v2);
        let b3 = framed(3, V3, v3);
        let d2 = r.decode(&record(&b2, 1), &s).unwrap();
        assert_eq!(d2.tick.price, -0.0005);
        assert_eq!(d2.exact.unwrap().price.as_deref(), Some("-0.0005"));
        assert_eq!(d2.tick.venue, None, "a null union is missing");
        assert_eq!(d2.tick.attrs.get("cond").map(String::as_str), Some("@F"));
        let d3 = r.decode(&record(&b3, 2), &s).unwrap();
        assert_eq!(
            d3.exact.unwrap().price.as_deref(),
            Some("1234567890123.4567"),
            "17 digits, not rounded"
        );
        assert_eq!(d3.tick.size, 0.1, "double now");
        assert_eq!(
            d3.tick.attrs.get("level").map(String::as_str),
            Some("1099511627776")
        );
        assert!(!d3.tick.attrs.contains_key("desk"), "removed in v3");
        assert_eq!(d3.tick.venue, None, "mic removed in v3");
        let d1 = r.decode(&record(&b1, 3), &s).unwrap();
        assert_eq!(d1.tick.symbol.as_str(), "AAPL");
    }

    #[test]
    fn records_that_do_not_fit_are_skipped_by_reason() {
        let bad_price = r#"{"type":"record","name":"Q","fields":[
            {"name":"instrument","type":{"type":"record","name":"I","fields":[{"name":"ticker","type":"string"}]}},
            {"name":"px","type":{"type":"array","items":"int"}},
            {"name":"qty","type":"float"},{"name":"event_time","type":"long"}]}"#;
        let mut s = schemas();
        s.0.insert(9, Arc::new(Schema::parse_str(bad_price).unwrap()));
        let mut r = TopicReader::new(MAPPING.parse().unwrap(), 65536);
        let bytes = framed(1, V1, v1("AAPL", 1, 1));
        let id = |new: u32| {
            let mut b = bytes.clone();
            b[1..5].copy_from_slice(&new.to_be_bytes());
            b
        };
        assert_eq!(
            r.decode(&record(&id(9), 0), &s),
            Err(Skip::Bad(DecodeError::Unresolvable))
        );
        assert_eq!(
            r.decode(&record(&id(404), 0), &s),
            Err(Skip::Bad(DecodeError::UnknownSchema))
        );
        assert_eq!(r.decode(&record(&id(77), 0), &s), Err(Skip::NeedSchema(77)));
        assert_eq!(
            r.decode(&record(b"\xC3\x01abcdefgh", 0), &s),
            Err(Skip::Bad(DecodeError::NotConfluent))
        );
        assert_eq!(
            r.decode(&record(&bytes[..bytes.len() - 2], 0), &s),
            Err(Skip::Bad(DecodeError::Malformed))
        );
        let mut bad_symbol = v1("AAPL", 1, 1);
        if let Value::Record(f) = &mut bad_symbol {
            f[0].1 = instrument("not a symbol", None);
        }
        assert_eq!(
            r.decode(&record(&framed(1, V1, bad_symbol), 0), &s),
            Err(Skip::Bad(DecodeError::InvalidField))
        );
        let mut small = TopicReader::new(MAPPING.parse().unwrap(), 16);
        assert_eq!(
            small.decode(&record(&bytes, 0), &s),
            Err(Skip::Bad(DecodeError::Oversized))
        );
    }

    #[test]
    fn fixed_decimals_forward_all_and_recursive_schemas() {
        let fixed = r#"{"type":"record","name":"F","fields":[
            {"name":"symbol","type":"string"},
            {"name":"price","type":{"type":"fixed","name":"Px","size":8,"logicalType":"decimal","precision":18,"scale":2}},
            {"name":"bid","type":["null",{"type":"fixed","name":"Bid","size":8,"logicalType":"decimal","precision":18,"scale":2}],"default":null},
            {"name":"venue","type":{"type":"enum","name":"Mic","symbols":["XNAS","XNYS"]}},
            {"name":"flags","type":{"type":"array","items":"string"}},
            {"name":"lot","type":"int"}]}"#;
        let schema = Arc::new(Schema::parse_str(fixed).unwrap());
        let s = Fixed([(5, schema.clone())].into_iter().collect());
        let px = |n: i64| Value::Decimal(Decimal::from(n.to_be_bytes()));
        let value = Value::Record(vec![
            ("symbol".into(), Value::String("BRK.A".into())),
            ("price".into(), px(71_234_567)),
            ("bid".into(), Value::Union(1, Box::new(px(-1)))),
            ("venue".into(), Value::Enum(1, "XNYS".into())),
            (
                "flags".into(),
                Value::Array(vec![Value::String("odd".into())]),
            ),
            ("lot".into(), Value::Int(100)),
        ]);
        let mut bytes = vec![0, 0, 0, 0, 5];
        bytes.extend(to_avro_datum(&schema, value).unwrap());
        let mut r = TopicReader::new("t:format=avro,forward=*".parse().unwrap(), 65536);
        let d = r.decode(&record(&bytes, 0), &s).unwrap();
        let exact = d.exact.unwrap();
        assert_eq!(exact.price.as_deref(), Some("712345.67"));
        assert_eq!(
            exact.bid.as_deref(),
            Some("-0.01"),
            "a fixed decimal in a union"
        );
        assert_eq!(d.tick.venue.as_deref(), Some("XNYS"), "an enum symbol");
        assert_eq!(
            d.tick.attrs,
            BTreeMap::from([
                ("flags".to_string(), r#"["odd"]"#.to_string()),
                ("lot".to_string(), "100".to_string())
            ]),
            "forward=* sends what is not mapped"
        );
        // A linked list: refused before any record is decoded.
        let list = r#"{"type":"record","name":"Node","fields":[
            {"name":"symbol","type":"string"},{"name":"price","type":"double"},
            {"name":"next","type":["null","Node"],"default":null}]}"#;
        let s = Fixed(
            [(6, Arc::new(Schema::parse_str(list).unwrap()))]
                .into_iter()
                .collect(),
        );
        let mut deep = vec![0, 0, 0, 0, 6, 2, b'A', 0, 0, 0, 0, 0, 0, 0, 0];
        deep.extend(std::iter::repeat_n([2u8, 2, b'A', 0, 0, 0, 0, 0, 0, 0, 0], 5000).flatten());
        deep.push(0);
        assert_eq!(
            r.decode(&record(&deep, 0), &s),
            Err(Skip::Bad(DecodeError::Unresolvable))
        );
    }

    /// An array whose items take no bytes (`null`, an empty record, a
    /// `fixed` of size 0, at any depth): its blocks may count 2^20 items
    /// each for a few bytes, so a 64 KiB record could make the decoder build
    /// billions of values; and an array or map of enums with long symbols
    /// (each one-byte item becomes a 56-byte value and a copy of the symbol:
    /// over 256 bytes per byte, the schema is refused; a map's entry is two
    /// bytes at least, its key's length and the enum). Such a writer schema
    /// is refused before any record of it is decoded, and a schema with
    /// arrays of other items is not.
    #[test]
    fn arrays_of_items_that_take_no_bytes_or_long_enum_symbols_are_refused() {
        let mut r = TopicReader::new(
            "t:format=avro,symbol=symbol,price=price,forward=*"
                .parse()
                .unwrap(),
            65536,
        );
        let with = |items: &str| {
            format!(
                r#"{{"type":"record","name":"T","fields":[
                {{"name":"symbol","type":"string"}},{{"name":"price","type":"double"}},
                {{"name":"xs","type":{{"type":"array","items":{items}}}}}]}}"#
            )
        };
        // An enum item is one byte, and apache-avro makes a 56-byte value
        // and a copy of its symbol of it.
        let long_enum = |n: usize| {
            format!(
                r#"{{"type":"enum","name":"L","symbols":["{}"]}}"#,
                "S".repeat(n)
            )
        };
        let nested = r#"{"type":"record","name":"Wrap","fields":[{"name":"inner","type":["null",{"type":"array","items":{"type":"record","name":"Empty","fields":[{"name":"n","type":"null"}]}}]}]}"#;
        let cases = [
            (r#""null""#, true),
            (r#"{"type":"record","name":"E","fields":[]}"#, true),
            (
                r#"{"type":"record","name":"E","fields":[{"name":"a","type":"null"},{"name":"b","type":{"type":"fixed","name":"Z","size":0}}]}"#,
                true,
            ),
            (r#"{"type":"fixed","name":"Z","size":0}"#, true),
            (nested, true),
            ("\"int\"", false),
            (r#"["null","int"]"#, false),
            (r#"{"type":"array","items":"null"}"#, true),
            (r#"{"type":"fixed","name":"One","size":1}"#, false),
            (&long_enum(201), true),
            (&long_enum(200), false),
            (
                &format!(r#"{{"type":"map","values":{}}}"#, long_enum(433)),
                true,
            ),
            (
                &format!(r#"{{"type":"map","values":{}}}"#, long_enum(432)),
                false,
            ),
            (
                &format!(
                    r#"{{"type":"record","name":"R","fields":[{{"name":"e","type":{}}}]}}"#,
                    long_enum(201)
                ),
                true,
            ),
        ];
        for (id, (items, refused)) in (20u32..).zip(cases) {
            let schema = with(items);
            let parsed = Schema::parse_str(&schema).unwrap_or_else(|e| panic!("{items}: {e}"));
            let s = Fixed([(id, Arc::new(parsed))].into_iter().collect());
            // symbol "A", price 0.0, then one block of 1,000 items of the
            // empty kinds (no bytes each) or an empty array.
            let mut datum = vec![0];
            datum.extend(id.to_be_bytes());
            datum.extend([2, b'A', 0, 0, 0, 0, 0, 0, 0, 0]);
            if refused {
                datum.extend([0xd0, 0x0f]); // 1,000 (zig-zag varint)
            }
            datum.push(0);
            let got = r.decode(&record(&datum, 0), &s);
            if refused {
                assert_eq!(got, Err(Skip::Bad(DecodeError::Unresolvable)), "{items}");
            } else {
                assert_eq!(
                    got.map(|d| d.tick.symbol.as_str().to_owned()),
                    Ok("A".to_owned()),
                    "{items}"
                );
            }
        }
    }

    /// A writer schema is refused when apache-avro could build more than 256
    /// bytes of memory per byte of record: in the items of an array (a record
    /// of one int and 300 nulls: 30 MB from 3 KB), or per record (3,000 null
    /// fields: 300 KB from none), or by naming a type twice at each of 24
    /// levels (16 million values from none). Working that out takes time
    /// in proportion to the schema (each named type once), not to what it
    /// names. Ordinary wide schemas pass.
    #[test]
    fn a_schema_that_makes_much_of_little_is_refused_and_found_so_at_once() {
        let mut r = TopicReader::new(
            "t:format=avro,symbol=symbol,price=price".parse().unwrap(),
            65536,
        );
        let with = |fields: &str| {
            format!(
                r#"{{"type":"record","name":"T","fields":[
                {{"name":"symbol","type":"string"}},{{"name":"price","type":"double"}}{fields}]}}"#
            )
        };
        let nulls = |n: usize| -> String {
            (0..n)
                .map(|i| format!(r#",{{"name":"n{i}","type":"null"}}"#))
                .collect()
        };
        let nullable_strings = |n: usize| -> String {
            (0..n)
                .map(|i| format!(r#",{{"name":"optional_text_field_{i}","type":["null","string"],"default":null}}"#))
                .collect()
        };
        let item = |fields: String| {
            format!(
                r#",{{"name":"xs","type":{{"type":"array","items":{{"type":"record","name":"I","fields":[{{"name":"a","type":"int"}}{fields}]}}}}}}"#
            )
        };
        let ints = |n: usize| -> String {
            (0..n)
                .map(|i| format!(r#",{{"name":"b{i}","type":"long"}}"#))
                .collect()
        };
        // T0 has two fields of T1, ..., T23 two of T24: 2^24 nulls.
        let mut doubling =
            String::from(r#"{"type":"record","name":"T24","fields":[{"name":"z","type":"null"}]}"#);
        for i in (0..24).rev() {
            doubling = format!(
                r#"{{"type":"record","name":"T{i}","fields":[{{"name":"l","type":{doubling}}},{{"name":"r","type":"T{}"}}]}}"#,
                i + 1
            );
        }
        let doubling = format!(r#",{{"name":"tree","type":{doubling}}}"#);
        let cases = [
            (nulls(3000), true),
            (item(nulls(300)), true),
            (doubling, true),
            (nulls(100), false),
            (nullable_strings(1000), false),
            (item(ints(20)), false),
        ];
        // Each named type is looked at once: 24 levels of doubling are a few
        // dozen looks, not 2^26 (as when each use of a type was walked).
        let (fits, looks) = {
            let schema = Schema::parse_str(&with(&cases[2].0)).unwrap();
            Shape::measure(&schema, &named_types(&schema).unwrap())
        };
        assert!(!fits);
        assert!(looks < 200, "{looks} looks");
        for (id, (fields, refused)) in (40u32..).zip(cases) {
            let schema = with(&fields);
            let s = Fixed(
                [(id, Arc::new(Schema::parse_str(&schema).unwrap()))]
                    .into_iter()
                    .collect(),
            );
            let mut value = vec![0];
            value.extend(id.to_be_bytes());
            value.extend([2, b'A', 0, 0, 0, 0, 0, 0, 0, 0]);
            let got = r.decode(&record(&value, 0), &s);
            if refused {
                assert_eq!(got, Err(Skip::Bad(DecodeError::Unresolvable)), "case {id}");
            } else {
                assert_ne!(got, Err(Skip::Bad(DecodeError::Unresolvable)), "case {id}");
            }
        }
    }

    /// What a writer schema can make of a small record is bounded: a
    /// decimal's text is at most 64 digits with a scale of at most 64 (as a
    /// decimal written as JSON text), and a tick's forwarded `attrs` at most
    /// `--max-record-bytes` of text (an array of enums of long names, or of
    /// bytes shown as numbers, would otherwise grow a few KiB into MiBs).
    #[test]
    fn a_small_record_cannot_make_a_large_tick() {
        let mut r = TopicReader::new(
            "t:format=avro,symbol=symbol,price=px,forward=*"
                .parse()
                .unwrap(),
            4096,
        );
        let schema = |px: &str, extra: &str| {
            format!(
                r#"{{"type":"record","name":"T","fields":[
                {{"name":"symbol","type":"string"}},{{"name":"px","type":{px}}}{extra}]}}"#
            )
        };
        let decimal = |scale: usize| {
            format!(
                r#"{{"type":"bytes","logicalType":"decimal","precision":{},"scale":{scale}}}"#,
                scale + 1
            )
        };
        let zigzag = |n: i64| {
            let mut z = ((n << 1) ^ (n >> 63)) as u64;
            let mut out = Vec::new();
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    out.push(b);
                    return out;
                }
                out.push(b | 0x80);
            }
        };
        // Avro `bytes`: length, then the bytes.
        let bytes = |b: &[u8]| [&zigzag(b.len() as i64)[..], b].concat();
        let double = [0u8; 8];
        // A record of symbol "A", then `rest` (the price and what follows).
        let decode = |r: &mut TopicReader, id: u32, schema: &str, rest: &[u8]| {
            let s = Fixed(
                [(id, Arc::new(Schema::parse_str(schema).unwrap()))]
                    .into_iter()
                    .collect(),
            );
            let mut value = vec![0];
            value.extend(id.to_be_bytes());
            value.extend([2, b'A']);
            value.extend(rest);
            r.decode(&record(&value, 0), &s)
        };
        // A price of 64 digits at scale 64 is read exactly; more is not.
        let ok = decode(&mut r, 30, &schema(&decimal(64), ""), &bytes(&[0x01])).unwrap();
        assert_eq!(
            ok.exact.unwrap().price.unwrap().len(),
            66,
            "0. and 64 digits"
        );
        assert_eq!(
            decode(
                &mut r,
                31,
                &schema(&decimal(1_000_000), ""),
                &bytes(&[0x01])
            ),
            Err(Skip::Bad(DecodeError::InvalidField)),
            "a one-byte decimal at scale 1,000,000 is not a million-digit price"
        );
        let wide = [0x7f; 40]; // 320 bits: 97 digits
        assert_eq!(
            decode(&mut r, 32, &schema(&decimal(2), ""), &bytes(&wide)),
            Err(Skip::Bad(DecodeError::InvalidField))
        );
        // Forwarded: an array of 1,000 enums (one byte each) of 100-byte names.
        let name = "N".repeat(100);
        let enums = format!(
            r#",{{"name":"xs","type":{{"type":"array","items":{{"type":"enum","name":"E","symbols":["{name}"]}}}}}}"#
        );
        let mut items = zigzag(1000);
        items.extend(std::iter::repeat_n(0u8, 1000));
        items.push(0);
        assert!(items.len() < 4096);
        assert_eq!(
            decode(
                &mut r,
                33,
                &schema(r#""double""#, &enums),
                &[&double[..], &items].concat()
            ),
            Err(Skip::Bad(DecodeError::Oversized)),
            "100 KB of attrs from a 1 KB record"
        );
        // 30 of them fit.
        let mut items = zigzag(30);
        items.extend(std::iter::repeat_n(0u8, 30));
        items.push(0);
        let d = decode(
            &mut r,
            34,
            &schema(r#""double""#, &enums),
            &[&double[..], &items].concat(),
        )
        .unwrap();
        assert_eq!(d.tick.attrs["xs"].len(), 30 * 103 + 1);
        // A forwarded decimal past the bound is not shown (it is not the price).
        let big = format!(r#",{{"name":"d","type":{}}}"#, decimal(100_000));
        let d = decode(
            &mut r,
            35,
            &schema(r#""double""#, &big),
            &[&double[..], &bytes(&[0x01])].concat(),
        )
        .unwrap();
        assert!(!d.tick.attrs.contains_key("d"), "{:?}", d.tick.attrs);
        // JSON too: `1e9` (3 bytes) is forwarded as `1000000000.0` (12).
        let mut json = TopicReader::new(
            "j:format=json,symbol=key,price=p,forward=*"
                .parse()
                .unwrap(),
            4096,
        );
        let numbers = |n: usize| format!(r#"{{"p":1,"xs":[{}]}}"#, vec!["1e9"; n].join(","));
        let read = |json: &mut TopicReader, value: &str| {
            let rec = Record {
                key: Some(b"A"),
                value: value.as_bytes(),
                offset: 0,
                timestamp_ms: None,
            };
            json.decode(&rec, &NoSchemas)
        };
        let big = numbers(900);
        assert!(big.len() < 4096);
        assert_eq!(
            read(&mut json, &big),
            Err(Skip::Bad(DecodeError::Oversized))
        );
        let d = read(&mut json, &numbers(100)).unwrap();
        assert!(
            d.tick.attrs["xs"].starts_with("[1000000000.0,"),
            "{:?}",
            d.tick.attrs
        );
    }

    #[test]
    fn json_records_with_their_own_shape() {
        let m: Mapping = "fx:format=json,symbol=key,price=quote.mid,bid=quote.bid,ask=quote.ask,ts=time,seq=n,forward=*"
            .parse()
            .unwrap();
        let mut r = TopicReader::new(m, 65536);
        let value = br#"{"quote":{"mid":"1.08455","bid":1.0845,"ask":1.0846},"time":"2026-12-03T10:15:30.250+01:00","n":7,"src":"ebs","extra":{"a":[1,2]},"nothing":null}"#;
        let rec = Record {
            key: Some(b"EUR/USD"),
            value,
            offset: 9,
            timestamp_ms: None,
        };
        let d = r.decode(&rec, &NoSchemas).unwrap();
        assert_eq!(d.tick.symbol.as_str(), "EUR/USD");
        assert_eq!(d.exact.as_ref().unwrap().price.as_deref(), Some("1.08455"));
        assert_eq!(d.tick.bid, Some(1.0845));
        // 09:15:30.250 UTC
        assert_eq!(d.tick.ts, 1_796_289_330_250_000);
        assert_eq!((d.tick.seq, d.dense), (7, true));
        assert_eq!(d.tick.attrs.get("src").map(String::as_str), Some("ebs"));
        assert_eq!(
            d.tick.attrs.get("extra").map(String::as_str),
            Some(r#"{"a":[1,2]}"#)
        );
        assert!(!d.tick.attrs.contains_key("quote") && !d.tick.attrs.contains_key("nothing"));
        for (bad, why) in [
            (&b"[1]"[..], DecodeError::NotJson),
            (b"{", DecodeError::NotJson),
            (br#"{"quote":{}}"#, DecodeError::MissingField),
            (
                br#"{"quote":{"mid":"1e"},"time":1,"n":1}"#,
                DecodeError::InvalidField,
            ),
            (
                br#"{"quote":{"mid":1},"time":"yesterday","n":1}"#,
                DecodeError::InvalidField,
            ),
        ] {
            let rec = Record { value: bad, ..rec };
            assert_eq!(
                r.decode(&rec, &NoSchemas),
                Err(Skip::Bad(why)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    struct NoSchemas;
    impl WriterSchemas for NoSchemas {
        fn lookup(&self, _: u32) -> Lookup {
            Lookup::Missing
        }
    }

    #[test]
    fn the_default_mapping_is_tickfans_own_contract() {
        let tick = Tick {
            symbol: Symbol::parse("AAPL").unwrap(),
            price: 1.5,
            size: 2.0,
            bid: None,
            ask: None,
            venue: None,
            ts: 3,
            seq: 4,
            attrs: BTreeMap::new(),
        };
        let bytes = TickCodec::new(1024).encode(&tick);
        let mut r = TopicReader::new(Mapping::tickfan("ticks"), 1024);
        let d = r.decode(&record(&bytes, 0), &NoSchemas).unwrap();
        assert_eq!((d.tick, d.exact, d.dense), (tick, None, true));
    }

    #[test]
    fn mappings_parse_and_refuse_what_they_cannot_mean() {
        let m: Mapping = MAPPING.parse().unwrap();
        assert_eq!(m.format, Format::Avro);
        assert_eq!(m.symbol, SymbolFrom::Field(path("instrument.ticker")));
        assert_eq!(m.ts, Some((path("event_time"), TimeUnit::Auto)));
        let m: Mapping = "t:format=json,ts=t:nanos,seq=offset".parse().unwrap();
        assert_eq!(m.ts, Some((path("t"), TimeUnit::Nanos)));
        assert_eq!(m.seq, Some(SeqFrom::Offset));
        for bad in [
            "no-colon",
            ":format=json",
            "t:format=xml",
            "t:price=px",
            "t:format=json,colour=red",
            "t:format=json,ts=t:fortnights",
            "t:format=json,price=a..b",
            "t:format=json,symbol",
        ] {
            assert!(bad.parse::<Mapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn decimal_text_and_iso8601() {
        let t = |n: i64, s| decimal_text(&num_bigint::BigInt::from(n), s);
        assert_eq!(t(12345, 2), "123.45");
        assert_eq!(t(5, 3), "0.005");
        assert_eq!(t(-5, 3), "-0.005");
        assert_eq!(t(-12345, 0), "-12345");
        assert_eq!(t(0, 2), "0.00");
        assert_eq!(iso8601_micros("1970-01-01T00:00:01Z"), Ok(1_000_000));
        assert_eq!(iso8601_micros("1970-01-01T00:00:01.5"), Ok(1_500_000));
        assert_eq!(iso8601_micros("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(
            iso8601_micros("1970-01-01T00:00:00.000001-0030"),
            Ok(1_800_000_001)
        );
        assert!(iso8601_micros("1970-01-01").is_err());
        assert!(iso8601_micros("1970-01-01T00:00:00+1").is_err());
    }
}
