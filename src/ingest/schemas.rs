//! Writer schemas from a Confluent-compatible Schema Registry, for topics
//! mapped with `format=avro` ([`crate::codec::mapping`]).
//!
//! What happens to a record whose schema id the edge has not seen:
//!
//! 1. The poll loop stops fetching that record's partition (it unassigns it
//!    and keeps the record's offset), asks [`Schemas::request`] for the id,
//!    and goes on with every other partition.
//! 2. A thread of its own fetches `GET /schemas/ids/{id}` (basic auth and
//!    TLS as configured; at most `--schema-registry-timeout` per request,
//!    1 MiB per answer). When the registry does not answer, answers 5xx or
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

use apache_avro::Schema;
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

/// Largest registry answer read, in bytes.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

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
        std::thread::Builder::new()
            .name("tickfan-schemas".into())
            .spawn(move || {
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
                    let Some(schemas) = weak.upgrade() else { return };
                    schemas.store(id, fetched, &metrics);
                }
            })?;
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
        let mut req = self
            .agent
            .get(format!("{}/schemas/ids/{id}", self.base))
            .header(
                "Accept",
                "application/vnd.schemaregistry.v1+json, application/json",
            );
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let mut resp = match req.call() {
            Ok(r) => r,
            Err(e) => return Fetched::Failed("unreachable", e.to_string()),
        };
        let status = resp.status().as_u16();
        match status {
            200 => {}
            404 => return Fetched::Missing("not_found"),
            401 | 403 => {
                return Fetched::Failed(
                    "refused",
                    format!("HTTP {status}: check the registry credentials"),
                )
            }
            _ => return Fetched::Failed("server_error", format!("HTTP {status}")),
        }
        let body = match resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
        {
            Ok(b) => b,
            Err(e) => return Fetched::Failed("bad_answer", e.to_string()),
        };
        #[derive(serde::Deserialize)]
        struct Answer {
            schema: String,
            #[serde(rename = "schemaType")]
            schema_type: Option<String>,
        }
        let answer: Answer = match serde_json::from_str(&body) {
            Ok(a) => a,
            Err(e) => return Fetched::Failed("bad_answer", format!("not a schema answer: {e}")),
        };
        if answer.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
            return Fetched::Missing("bad_answer");
        }
        match Schema::parse_str(&answer.schema) {
            Ok(s) => Fetched::Schema(Arc::new(s)),
            Err(_) => Fetched::Missing("bad_answer"),
        }
    }
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
}
