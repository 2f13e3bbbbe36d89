//! Writer schemas from a Confluent-compatible Schema Registry, for topics
//! mapped with `format=avro` ([`crate::codec::mapping`]).
//!
//! What happens to a record whose schema id the edge has not seen:
//!
//! 1. The poll loop stops fetching that record's partition (it unassigns it
//!    and keeps the record's offset), asks [`Schemas::request`] for the id,
//!    and goes on with every other partition.
//! 2. A thread of its own fetches `GET /schemas/ids/{id}` and, for a schema
//!    with references, `GET /subjects/{subject}/versions/{version}` for each
//!    schema it imports (basic auth and TLS as configured; at most
//!    `--schema-registry-timeout` per request, 1 MiB of answers and 64
//!    imports per schema). When the registry does not answer, answers 5xx or
//!    refuses the credentials, it tries again after 100 ms, doubling up to
//!    5 s, for as long as it takes; each attempt is counted in
//!    `tickfan_schema_fetches_total{result}`, and the first failure of each
//!    kind is logged.
//! 3. Once the schema is known (or the registry answered that it has no such
//!    id), the poll loop assigns the partition again at that record, so the
//!    partition's order is kept and nothing of it is lost or repeated.
//!    Records of an id the registry does not have are counted
//!    (`tickfan_decode_errors_total{reason="unknown_schema"}`) and skipped;
//!    the id is asked again after [`MISSING_TTL`].
//!
//! So a registry outage holds only the partitions that meet a schema id the
//! edge has not cached, and only until the registry answers; partitions
//! whose schemas are cached are not touched by it. The cache holds
//! `--schema-cache` schemas; past that, the oldest is forgotten (and fetched
//! again if a record needs it).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use apache_avro::{schema::Name, Schema};
use tokio_util::sync::CancellationToken;

use crate::{
    codec::mapping::{Lookup, WriterSchemas},
    telemetry::Metrics,
};

/// The environment variable holding the registry password (never a flag:
/// flags show in `ps`).
pub const PASSWORD_ENV: &str = "TICKFAN_SCHEMA_REGISTRY_PASSWORD";

/// How long an id the registry said it does not have is not asked again.
pub const MISSING_TTL: Duration = Duration::from_secs(30);

/// Largest registry answer read, in bytes: a schema and all the schemas it
/// references together.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Most schemas one writer schema may reference, directly or through others.
const MAX_REFERENCES: usize = 64;

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the Schema Registry is and how to reach it.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "registry_config")]
#[command(next_help_heading = "Schema Registry (topics mapped with format=avro)")]
pub struct RegistryConfig {
    /// Base URL of a Confluent-compatible Schema Registry (Confluent,
    /// Apicurio's ccompat API, tested with Apicurio; Karapace and Redpanda implement the same API), e.g.
    /// `https://registry:8081`. Needed by topics mapped with `format=avro`.
    #[arg(long, env = "TICKFAN_SCHEMA_REGISTRY")]
    pub schema_registry: Option<String>,

    /// User for HTTP basic auth to the registry; the password comes from
    /// `--schema-registry-password-file` or `TICKFAN_SCHEMA_REGISTRY_PASSWORD`.
    #[arg(long, env = "TICKFAN_SCHEMA_REGISTRY_USER")]
    pub schema_registry_user: Option<String>,

    /// File holding the registry password (its first line).
    #[arg(long, env = "TICKFAN_SCHEMA_REGISTRY_PASSWORD_FILE")]
    pub schema_registry_password_file: Option<PathBuf>,

    /// PEM file of the CA certificates that sign the registry's (default:
    /// the system's).
    #[arg(long, env = "TICKFAN_SCHEMA_REGISTRY_CA_FILE")]
    pub schema_registry_ca_file: Option<PathBuf>,

    /// Longest one registry request may take.
    #[arg(long, env = "TICKFAN_SCHEMA_REGISTRY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub schema_registry_timeout: Duration,

    /// Most writer schemas kept; the oldest is forgotten past it.
    #[arg(long, env = "TICKFAN_SCHEMA_CACHE", default_value_t = 1000)]
    pub schema_cache: usize,
}

impl RegistryConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.schema_registry {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--schema-registry must be an http:// or https:// URL"
            );
        }
        anyhow::ensure!(self.schema_cache >= 1, "--schema-cache must be >= 1");
        anyhow::ensure!(
            !self.schema_registry_timeout.is_zero(),
            "--schema-registry-timeout must be > 0"
        );
        anyhow::ensure!(
            self.schema_registry_password_file.is_none() || self.schema_registry_user.is_some(),
            "--schema-registry-password-file needs --schema-registry-user"
        );
        Ok(())
    }

    fn password(&self) -> anyhow::Result<Option<String>> {
        if let Some(f) = &self.schema_registry_password_file {
            let s = std::fs::read_to_string(f).map_err(|e| {
                anyhow::anyhow!("--schema-registry-password-file {}: {e}", f.display())
            })?;
            let s = s.lines().next().unwrap_or_default().to_string();
            anyhow::ensure!(
                !s.is_empty(),
                "--schema-registry-password-file {}: the file is empty",
                f.display()
            );
            return Ok(Some(s));
        }
        Ok(std::env::var(PASSWORD_ENV).ok().filter(|s| !s.is_empty()))
    }
}

/// The cache of writer schemas, and the thread that fills it.
pub struct Schemas {
    cache: Mutex<Cache>,
    capacity: usize,
    requests: mpsc::Sender<u32>,
}

#[derive(Default)]
struct Cache {
    found: HashMap<u32, Arc<Schema>>,
    order: VecDeque<u32>,
    missing: HashMap<u32, Instant>,
    asked: HashSet<u32>,
}

impl WriterSchemas for Schemas {
    fn lookup(&self, id: u32) -> Lookup {
        let mut c = self.cache.lock().unwrap();
        if let Some(s) = c.found.get(&id) {
            return Lookup::Found(s.clone());
        }
        match c.missing.get(&id) {
            Some(at) if at.elapsed() < MISSING_TTL => Lookup::Missing,
            Some(_) => {
                c.missing.remove(&id);
                Lookup::Pending
            }
            None => Lookup::Pending,
        }
    }
}

/// No registry configured: every id is unknown.
pub struct NoRegistry;

impl WriterSchemas for NoRegistry {
    fn lookup(&self, _id: u32) -> Lookup {
        Lookup::Missing
    }
}

/// What one fetch got.
enum Fetched {
    Schema(Arc<Schema>),
    /// Permanent: no such id, or not an Avro schema this edge can parse.
    Missing(&'static str),
    /// Try again later.
    Failed(&'static str, String),
}

impl Schemas {
    /// Starts the fetch thread; it ends with `shutdown`.
    pub fn start(
        config: &RegistryConfig,
        metrics: Metrics,
        shutdown: CancellationToken,
        fatal: &CancellationToken,
    ) -> anyhow::Result<Arc<Schemas>> {
        let url = config
            .schema_registry
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no --schema-registry"))?;
        let client = Client::new(config, url)?;
        let (tx, rx) = mpsc::channel();
        let schemas = Arc::new(Schemas {
            cache: Mutex::new(Cache::default()),
            capacity: config.schema_cache,
            requests: tx,
        });
        let weak = Arc::downgrade(&schemas);
        super::spawn_thread(
            std::thread::Builder::new()
                .name("tickfan-schemas".into())
                // Parsing a schema recurses per nested type (see
                // `with_references`): room for the deepest one allowed in a
                // debug build too.
                .stack_size(16 << 20),
            fatal.clone(),
            move || {
                let mut warned: HashSet<&'static str> = HashSet::new();
                while !shutdown.is_cancelled() {
                    let id = match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(id) => id,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                    let mut backoff = BACKOFF_FIRST;
                    let fetched = loop {
                        match client.fetch(id) {
                            Fetched::Failed(result, why) => {
                                metrics.schema_fetch(result);
                                if warned.insert(result) {
                                    tracing::warn!(id, result, error = %why, "schema registry: cannot fetch a writer schema; its partition waits, retrying with backoff (tickfan_schema_fetches_total)");
                                }
                                if sleep_or_cancel(backoff, &shutdown) {
                                    return;
                                }
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                            }
                            other => break other,
                        }
                    };
                    let Some(schemas) = weak.upgrade() else {
                        return;
                    };
                    schemas.store(id, fetched, &metrics);
                }
            },
        )?;
        Ok(schemas)
    }

    /// Asks for `id` to be fetched (once, however often it is asked while
    /// the fetch goes on).
    pub fn request(&self, id: u32) {
        if self.cache.lock().unwrap().asked.insert(id) {
            let _ = self.requests.send(id);
        }
    }

    fn store(&self, id: u32, fetched: Fetched, metrics: &Metrics) {
        let mut c = self.cache.lock().unwrap();
        c.asked.remove(&id);
        match fetched {
            Fetched::Schema(s) => {
                metrics.schema_fetch("ok");
                if c.found.insert(id, s).is_none() {
                    c.order.push_back(id);
                }
                while c.found.len() > self.capacity {
                    match c.order.pop_front() {
                        Some(old) => {
                            c.found.remove(&old);
                        }
                        None => break,
                    }
                }
            }
            Fetched::Missing(result) => {
                metrics.schema_fetch(result);
                tracing::warn!(id, result, "schema registry: no Avro schema with this id; its records are skipped (decode_errors_total{{reason=\"unknown_schema\"}})");
                c.missing.insert(id, Instant::now());
            }
            Fetched::Failed(..) => unreachable!("retried until it is not"),
        }
    }
}

/// Sleeps `d`, waking early on shutdown; true if shut down.
fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if shutdown.is_cancelled() {
            return true;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    shutdown.is_cancelled()
}

/// The HTTP side: `GET /schemas/ids/{id}`.
struct Client {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
}

impl Client {
    fn new(config: &RegistryConfig, url: String) -> anyhow::Result<Client> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let roots = match &config.schema_registry_ca_file {
            Some(f) => {
                let pem = std::fs::read(f).map_err(|e| {
                    anyhow::anyhow!("--schema-registry-ca-file {}: {e}", f.display())
                })?;
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                anyhow::ensure!(
                    !certs.is_empty(),
                    "--schema-registry-ca-file {}: no PEM certificate in it",
                    f.display()
                );
                RootCerts::new_with_certs(&certs)
            }
            None => RootCerts::PlatformVerifier,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.schema_registry_timeout))
            .http_status_as_error(false)
            .tls_config(
                TlsConfig::builder()
                    .provider(TlsProvider::NativeTls)
                    .root_certs(roots)
                    .build(),
            )
            .build()
            .into();
        let authorization = match &config.schema_registry_user {
            Some(user) => {
                use base64::Engine;
                let password = config.password()?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "--schema-registry-user needs a password: --schema-registry-password-file or {PASSWORD_ENV}"
                    )
                })?;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                ))
            }
            None => None,
        };
        Ok(Client {
            agent,
            base: url.trim_end_matches('/').to_string(),
            authorization,
        })
    }

    fn fetch(&self, id: u32) -> Fetched {
        let mut budget = MAX_ANSWER_BYTES;
        let answer = match self.get(&format!("/schemas/ids/{id}"), &mut budget) {
            Ok(a) => a,
            Err(f) => return f,
        };
        if answer.references.is_empty() {
            return match writer_schema(&answer.schema, &[]) {
                Some(s) => Fetched::Schema(Arc::new(s)),
                None => Fetched::Missing("bad_answer"),
            };
        }
        // Schema references: each named type the schema imports is the
        // schema of a subject's version, which may import others in turn.
        let mut referenced: Vec<String> = Vec::new();
        let mut seen: HashSet<(String, i64)> = HashSet::new();
        let mut todo = answer.references;
        while let Some(r) = todo.pop() {
            if !seen.insert((r.subject.clone(), r.version)) {
                continue;
            }
            if seen.len() > MAX_REFERENCES {
                return Fetched::Missing("bad_answer");
            }
            let subject = percent_encoding::utf8_percent_encode(&r.subject, PATH_SEGMENT);
            let path = format!("/subjects/{subject}/versions/{}", r.version);
            match self.get(&path, &mut budget) {
                Ok(a) => {
                    todo.extend(a.references);
                    referenced.push(a.schema);
                }
                Err(f) => return f,
            }
        }
        match writer_schema(&answer.schema, &referenced) {
            Some(s) => Fetched::Schema(Arc::new(s)),
            None => Fetched::Missing("bad_answer"),
        }
    }

    /// One registry answer holding a schema (`/schemas/ids/{id}`,
    /// `/subjects/{subject}/versions/{version}`), its size taken from
    /// `budget`; `Err` is what the fetch got instead.
    fn get(&self, path: &str, budget: &mut u64) -> Result<Answer, Fetched> {
        let mut req = self.agent.get(format!("{}{path}", self.base)).header(
            "Accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let mut resp = match req.call() {
            Ok(r) => r,
            Err(e) => return Err(Fetched::Failed("unreachable", e.to_string())),
        };
        let status = resp.status().as_u16();
        match status {
            200 => {}
            404 => return Err(Fetched::Missing("not_found")),
            401 | 403 => {
                return Err(Fetched::Failed(
                    "refused",
                    format!("HTTP {status}: check the registry credentials"),
                ))
            }
            _ => return Err(Fetched::Failed("server_error", format!("HTTP {status}"))),
        }
        let body = match resp
            .body_mut()
            .with_config()
            .limit(*budget)
            .read_to_string()
        {
            Ok(b) => b,
            // Over the budget: the schema and its references together are
            // larger than one answer may be.
            Err(ureq::Error::BodyExceedsLimit(_)) => return Err(Fetched::Missing("bad_answer")),
            Err(e) => return Err(Fetched::Failed("bad_answer", e.to_string())),
        };
        *budget = budget.saturating_sub(body.len() as u64);
        let answer: Answer = match serde_json::from_str(&body) {
            Ok(a) => a,
            Err(e) => {
                return Err(Fetched::Failed(
                    "bad_answer",
                    format!("not a schema answer: {e}"),
                ))
            }
        };
        if answer.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
            return Err(Fetched::Missing("bad_answer"));
        }
        Ok(answer)
    }
}

/// What a subject's name must escape to be one segment of a URL's path.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A registry answer holding a schema.
#[derive(serde::Deserialize)]
struct Answer {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

/// A named type a schema imports: the schema of `subject`'s `version`.
#[derive(serde::Deserialize)]
struct Reference {
    subject: String,
    version: i64,
}

/// A writer schema from the registry: `main`, importing the named types of
/// `referenced` (Confluent schema references; none for most schemas), as
/// one schema that resolves on its own; `None` if they do not parse
/// (together), or nest deeper than one schema may.
///
/// apache-avro 0.21 panics on some invalid schemas instead of refusing them
/// (`Name::parse` unwraps the name's check: a record named `]`, found by
/// the `mapped_avro` fuzz target; an invalid alias or type reference; fixed
/// upstream after 0.21 in apache/avro-rs#496 and #548), so the parse runs
/// under `catch_unwind`:
/// a registry answering such a schema costs its records, not the thread
/// that fetches every schema.
pub fn writer_schema(main: &str, referenced: &[String]) -> Option<Schema> {
    std::panic::catch_unwind(|| {
        if referenced.is_empty() {
            Schema::parse_str(main).ok()
        } else {
            with_references(main, referenced)
        }
    })
    .ok()
    .flatten()
}

/// `main` importing the named types of `referenced`, as one schema.
///
/// apache-avro parses a referenced type where it is first used, by
/// recursion (about 8 KiB of stack per nested record in a release build,
/// 64 KiB in a debug one), so a chain of references nests as deep as all
/// its schemas together: their JSON nesting, summed, is held to what
/// serde_json allows one document (128 levels).
fn with_references(main: &str, referenced: &[String]) -> Option<Schema> {
    let nesting: usize = std::iter::once(main)
        .chain(referenced.iter().map(String::as_str))
        .map(json_depth)
        .sum();
    if nesting > MAX_JSON_NESTING {
        return None;
    }
    let (main, list) = Schema::parse_str_with_list(main, referenced).ok()?;
    self_contained(main, list)
}

/// serde_json's recursion limit for one document.
const MAX_JSON_NESTING: usize = 128;

/// How deep `text`'s objects and arrays nest (brackets inside strings
/// skipped). serde_json reads a document with its limit but does not report
/// the depth, so it is counted here.
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `main` with each referenced schema's definition put in place of its first
/// use, so that it resolves on its own (the mapping and apache-avro's reader
/// resolve names within one schema). `None` past [`MAX_DEPTH`] levels.
fn self_contained(main: Schema, referenced: Vec<Schema>) -> Option<Schema> {
    let definitions: HashMap<Name, Schema> = referenced
        .into_iter()
        .filter_map(|s| defined_name(&s).cloned().map(|n| (n, s)))
        .collect();
    inline(main, &definitions, &mut HashSet::new(), 0)
}

/// Deepest [`inline`] recurses: a schema node per level, at most two per
/// level of JSON nesting (a reference's name, then its definition), which
/// [`with_references`] holds to [`MAX_JSON_NESTING`].
const MAX_DEPTH: usize = 2 * MAX_JSON_NESTING;

fn defined_name(s: &Schema) -> Option<&Name> {
    match s {
        Schema::Record(r) => Some(&r.name),
        Schema::Enum(e) => Some(&e.name),
        Schema::Fixed(f) => Some(&f.name),
        Schema::Decimal(d) => defined_name(&d.inner),
        _ => None,
    }
}

fn inline(
    s: Schema,
    definitions: &HashMap<Name, Schema>,
    defined: &mut HashSet<Name>,
    depth: usize,
) -> Option<Schema> {
    if depth > MAX_DEPTH {
        return None;
    }
    if let Some(name) = defined_name(&s) {
        defined.insert(name.clone());
    }
    let deeper =
        |s: Schema, defined: &mut HashSet<Name>| inline(s, definitions, defined, depth + 1);
    Some(match s {
        Schema::Ref { name } => match definitions.get(&name) {
            Some(d) if !defined.contains(&name) => deeper(d.clone(), defined)?,
            _ => Schema::Ref { name },
        },
        Schema::Record(mut r) => {
            for f in &mut r.fields {
                f.schema = deeper(std::mem::replace(&mut f.schema, Schema::Null), defined)?;
            }
            Schema::Record(r)
        }
        Schema::Array(mut a) => {
            *a.items = deeper(std::mem::replace(&mut *a.items, Schema::Null), defined)?;
            Schema::Array(a)
        }
        Schema::Map(mut m) => {
            *m.types = deeper(std::mem::replace(&mut *m.types, Schema::Null), defined)?;
            Schema::Map(m)
        }
        Schema::Union(u) => {
            let mut variants = Vec::with_capacity(u.variants().len());
            for v in u.variants() {
                variants.push(deeper(v.clone(), defined)?);
            }
            Schema::Union(apache_avro::schema::UnionSchema::new(variants).ok()?)
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas(capacity: usize) -> Schemas {
        let (tx, _rx) = mpsc::channel();
        Schemas {
            cache: Mutex::new(Cache::default()),
            capacity,
            requests: tx,
        }
    }

    fn schema() -> Fetched {
        Fetched::Schema(Arc::new(Schema::parse_str(r#""string""#).unwrap()))
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let s = schemas(2);
        let m = Metrics::new();
        for id in [1, 2, 3] {
            s.store(id, schema(), &m);
        }
        assert!(matches!(s.lookup(1), Lookup::Pending), "the oldest is gone");
        assert!(matches!(s.lookup(2), Lookup::Found(_)));
        assert!(matches!(s.lookup(3), Lookup::Found(_)));
        assert_eq!(s.cache.lock().unwrap().found.len(), 2);
        // Storing an id again does not grow the order queue.
        s.store(3, schema(), &m);
        assert_eq!(s.cache.lock().unwrap().order.len(), 2);
    }

    #[test]
    fn a_missing_id_is_remembered_then_asked_again() {
        let s = schemas(10);
        s.store(7, Fetched::Missing("not_found"), &Metrics::new());
        assert!(matches!(s.lookup(7), Lookup::Missing));
        s.cache
            .lock()
            .unwrap()
            .missing
            .insert(7, Instant::now() - MISSING_TTL);
        assert!(
            matches!(s.lookup(7), Lookup::Pending),
            "asked again after the TTL"
        );
    }

    #[test]
    fn an_id_is_requested_once_while_its_fetch_goes_on() {
        let (tx, rx) = mpsc::channel();
        let s = Schemas {
            cache: Mutex::new(Cache::default()),
            capacity: 10,
            requests: tx,
        };
        s.request(9);
        s.request(9);
        assert_eq!(rx.try_iter().count(), 1);
        s.store(9, schema(), &Metrics::new());
        s.request(9);
        assert_eq!(rx.try_iter().count(), 1, "asked again once answered");
    }

    /// A schema importing named types from other subjects (Confluent schema
    /// references), as `parse_str_with_list` reads it: the imports are
    /// `Ref`s to types defined elsewhere, which no reader can resolve alone.
    const VENUE: &str =
        r#"{"type":"enum","name":"Venue","namespace":"com.example.ref","symbols":["XNAS","XNYS"]}"#;
    const INSTRUMENT: &str = r#"{"type":"record","name":"Instrument","namespace":"com.example.ref","fields":[
        {"name":"ticker","type":"string"},{"name":"venue","type":"com.example.ref.Venue"}]}"#;
    const QUOTE: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
        {"name":"instrument","type":"com.example.ref.Instrument"},
        {"name":"px","type":"double"},
        {"name":"underlying","type":["null","com.example.ref.Instrument"],"default":null},
        {"name":"legs","type":{"type":"array","items":"com.example.ref.Instrument"}}]}"#;

    const QUOTE_DEREFERENCED: &str = r#"{"type":"record","name":"Quote","namespace":"com.example","fields":[
        {"name":"instrument","type":{"type":"record","name":"Instrument","namespace":"com.example.ref","fields":[
            {"name":"ticker","type":"string"},
            {"name":"venue","type":{"type":"enum","name":"Venue","symbols":["XNAS","XNYS"]}}]}},
        {"name":"px","type":"double"},
        {"name":"underlying","type":["null","com.example.ref.Instrument"],"default":null},
        {"name":"legs","type":{"type":"array","items":"com.example.ref.Instrument"}}]}"#;

    #[test]
    fn referenced_types_are_defined_at_their_first_use_and_the_datum_reads_the_same() {
        use apache_avro::types::Value;
        let (main, list) = Schema::parse_str_with_list(QUOTE, [INSTRUMENT, VENUE]).unwrap();
        assert!(
            apache_avro::schema::ResolvedSchema::try_from(&main).is_err(),
            "on its own, the main schema does not resolve"
        );
        let whole = self_contained(main.clone(), list.clone()).unwrap();
        apache_avro::schema::ResolvedSchema::try_from(&whole).expect("resolves on its own");
        let Schema::Record(r) = &whole else { panic!() };
        let Schema::Record(instrument) = &r.fields[0].schema else {
            panic!(
                "the first use holds the definition: {:?}",
                r.fields[0].schema
            )
        };
        assert!(
            matches!(&instrument.fields[1].schema, Schema::Enum(e) if e.symbols == ["XNAS", "XNYS"]),
            "a reference's own references too"
        );
        let Schema::Union(u) = &r.fields[2].schema else {
            panic!()
        };
        assert!(
            matches!(&u.variants()[1], Schema::Ref { name } if name.name == "Instrument"),
            "later uses name it"
        );
        let instrument = |t: &str, v: u32| {
            Value::Record(vec![
                ("ticker".into(), Value::String(t.into())),
                (
                    "venue".into(),
                    Value::Enum(v, ["XNAS", "XNYS"][v as usize].into()),
                ),
            ])
        };
        let quote = Value::Record(vec![
            ("instrument".into(), instrument("ACME", 0)),
            ("px".into(), Value::Double(189.25)),
            (
                "underlying".into(),
                Value::Union(1, Box::new(instrument("IDX", 1))),
            ),
            (
                "legs".into(),
                Value::Array(vec![instrument("A", 0), instrument("B", 1)]),
            ),
        ]);
        // What a producer writes with the schema dereferenced by hand.
        let by_hand = Schema::parse_str(QUOTE_DEREFERENCED).unwrap();
        assert_eq!(whole.canonical_form(), by_hand.canonical_form());
        let datum = apache_avro::to_avro_datum(&by_hand, quote.clone()).unwrap();
        let read = crate::codec::avro::Resolved::new(whole)
            .unwrap()
            .read(&mut &datum[..])
            .unwrap();
        assert_eq!(read, quote);
    }

    #[test]
    fn a_chain_of_references_nesting_deeper_than_one_document_may_is_refused_unparsed() {
        let link = |i: usize, depth: usize| {
            let next = if i + 1 < depth {
                format!(r#"{{"name":"next","type":"R{}"}}"#, i + 1)
            } else {
                r#"{"name":"end","type":"int"}"#.to_string()
            };
            format!(r#"{{"type":"record","name":"R{i}","fields":[{next}]}}"#)
        };
        let chain = |depth: usize| {
            let links: Vec<String> = (1..depth).map(|i| link(i, depth)).collect();
            with_references(&link(0, depth), &links)
        };
        assert_eq!(json_depth(&link(0, 2)), 3);
        assert_eq!(
            json_depth(r#"{"doc":"[{[{\"","a":[[1]]}"#),
            3,
            "brackets in strings"
        );
        // 20 schemas of 3 levels each (60) are read as one; 43 (129) are
        // refused before apache-avro parses them, which a hostile registry
        // could otherwise make overflow the stack.
        let whole = chain(20).expect("60 levels");
        apache_avro::schema::ResolvedSchema::try_from(&whole).unwrap();
        assert_eq!(chain(43), None);
        // The inlining has its own bound (as deep as the mapping reads).
        let chain = |n: usize| {
            let mut s = Schema::Int;
            for _ in 0..n {
                s = Schema::Array(apache_avro::schema::ArraySchema {
                    items: Box::new(s),
                    attributes: Default::default(),
                });
            }
            s
        };
        assert!(self_contained(chain(MAX_DEPTH), Vec::new()).is_some());
        assert!(self_contained(chain(MAX_DEPTH + 2), Vec::new()).is_none());
    }

    /// apache-avro 0.21's `Schema::parse_str` panics on a record named `]`
    /// (found by the `mapped_avro` fuzz target; fixed upstream after 0.21,
    /// apache/avro-rs#496) and on an invalid alias (apache/avro-rs#547): a
    /// registry answering either gets `None`, and the thread that fetches
    /// schemas goes on.
    #[test]
    fn a_schema_apache_avro_panics_on_is_refused() {
        let bad = r#"{"type":"record","name":"]","fields":[{"name":"symbol","type":"string"}]}"#;
        assert!(writer_schema(bad, &[]).is_none());
        let alias = r#"{"type":"record","name":"R","aliases":[":"],"fields":[]}"#;
        assert!(writer_schema(alias, &[]).is_none());
        assert!(writer_schema(QUOTE, &[bad.to_string()]).is_none());
        let good = r#"{"type":"record","name":"Q","fields":[{"name":"symbol","type":"string"}]}"#;
        assert!(writer_schema(good, &[]).is_some());
    }
}
