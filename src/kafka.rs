//! Where Kafka is and how to connect to it: bootstrap servers, topics, TLS,
//! SASL and any other librdkafka setting, for the edge, `tickfan produce`
//! and the load generator alike.
//!
//! The binary is built with OpenSSL (vendored: compiled from source by
//! `openssl-src`, statically linked, so no system package is needed), zstd,
//! zlib and libcurl (for OIDC tokens), so every `security.protocol`, the
//! SASL mechanisms PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER (OIDC client
//! credentials), and the codecs gzip, snappy, lz4 and zstd all work.
//!
//! Secrets (the SASL password, the client key's passphrase, the OIDC client
//! secret) are read from a file (`--...-file`) or an environment variable
//! when a client is created, never from the command line (where every user
//! of the machine sees them in `ps`), and are never kept in this struct, so
//! neither `Debug` nor a log line can show them. `--kafka KEY=VALUE` refuses
//! those keys for the same reason.
//!
//! It never creates a consumer or producer: [`KafkaConfig::client_config`]
//! hands a librdkafka `ClientConfig` to the code that does.

use std::path::{Path, PathBuf};

use clap::Args;

/// librdkafka's `security.protocol`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanisms` (GSSAPI/Kerberos is not built in).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    #[value(name = "OAUTHBEARER")]
    OauthBearer,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OauthBearer => "OAUTHBEARER",
        }
    }
}

/// Environment variables that may hold a secret instead of its file.
pub const SASL_PASSWORD_ENV: &str = "TICKFAN_KAFKA_SASL_PASSWORD";
pub const KEY_PASSWORD_ENV: &str = "TICKFAN_KAFKA_KEY_PASSWORD";
pub const OAUTH_CLIENT_SECRET_ENV: &str = "TICKFAN_KAFKA_OAUTH_CLIENT_SECRET";

/// librdkafka settings `--kafka` refuses: secrets (they belong in a file or
/// the environment), and what a dedicated flag sets.
const SECRET_KEYS: [&str; 7] = [
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl_key",
];

/// Where Kafka is and what to read or write.
#[derive(Args, Debug, Clone)]
#[group(id = "kafka")]
#[command(next_help_heading = "Kafka")]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "TICKFAN_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Topic(s) carrying ticks, comma-separated. The edge consumes the
    /// partitions of every listed topic that hold subscribed symbols.
    #[arg(
        long = "topic",
        env = "TICKFAN_TOPIC",
        default_value = "ticks",
        value_delimiter = ','
    )]
    pub topics: Vec<String>,

    /// How to connect (librdkafka `security.protocol`). Unset: SASL_SSL
    /// when a SASL mechanism is given, SSL when a CA or client certificate
    /// is, PLAINTEXT otherwise.
    #[arg(
        long = "kafka-security-protocol",
        env = "TICKFAN_KAFKA_SECURITY_PROTOCOL",
        value_enum
    )]
    pub security_protocol: Option<SecurityProtocol>,

    /// SASL mechanism. PLAIN and SCRAM take --kafka-sasl-username and a
    /// password; OAUTHBEARER takes the --kafka-oauth-* settings (OIDC client
    /// credentials).
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "TICKFAN_KAFKA_SASL_MECHANISM",
        value_enum
    )]
    pub sasl_mechanism: Option<SaslMechanism>,

    /// SASL user name (PLAIN, SCRAM).
    #[arg(long = "kafka-sasl-username", env = "TICKFAN_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// File holding the SASL password (trailing newline ignored). Or set
    /// TICKFAN_KAFKA_SASL_PASSWORD; never on the command line.
    #[arg(
        long = "kafka-sasl-password-file",
        env = "TICKFAN_KAFKA_SASL_PASSWORD_FILE"
    )]
    pub sasl_password_file: Option<PathBuf>,

    /// PEM file of the CA(s) the brokers' certificates are verified
    /// against. Unset: the system's CA certificates.
    #[arg(long = "kafka-ca", env = "TICKFAN_KAFKA_CA")]
    pub ca: Option<PathBuf>,

    /// PEM client certificate, for brokers that require one (mutual TLS).
    #[arg(long = "kafka-cert", env = "TICKFAN_KAFKA_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key of --kafka-cert.
    #[arg(long = "kafka-key", env = "TICKFAN_KAFKA_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// File holding the passphrase of an encrypted --kafka-key. Or set
    /// TICKFAN_KAFKA_KEY_PASSWORD.
    #[arg(
        long = "kafka-key-password-file",
        env = "TICKFAN_KAFKA_KEY_PASSWORD_FILE"
    )]
    pub key_password_file: Option<PathBuf>,

    /// OIDC token endpoint (OAUTHBEARER): the client-credentials grant is
    /// made there, and the token renewed before it expires.
    #[arg(
        long = "kafka-oauth-token-endpoint",
        env = "TICKFAN_KAFKA_OAUTH_TOKEN_ENDPOINT"
    )]
    pub oauth_token_endpoint: Option<String>,

    /// OIDC client id (OAUTHBEARER).
    #[arg(long = "kafka-oauth-client-id", env = "TICKFAN_KAFKA_OAUTH_CLIENT_ID")]
    pub oauth_client_id: Option<String>,

    /// File holding the OIDC client secret (OAUTHBEARER). Or set
    /// TICKFAN_KAFKA_OAUTH_CLIENT_SECRET.
    #[arg(
        long = "kafka-oauth-client-secret-file",
        env = "TICKFAN_KAFKA_OAUTH_CLIENT_SECRET_FILE"
    )]
    pub oauth_client_secret_file: Option<PathBuf>,

    /// OIDC scope to ask for (OAUTHBEARER; optional).
    #[arg(long = "kafka-oauth-scope", env = "TICKFAN_KAFKA_OAUTH_SCOPE")]
    pub oauth_scope: Option<String>,

    /// Extra librdkafka setting as KEY=VALUE (repeatable; several in one
    /// value or in the environment, comma-separated), e.g. `--kafka
    /// compression.codec=zstd`. A comma starts the next setting only when
    /// KEY=VALUE follows it, so a value may hold commas (`debug=broker,fetch`).
    /// Secrets are refused here: use the --kafka-*-file flags or their
    /// variables.
    #[arg(long = "kafka", env = "TICKFAN_KAFKA", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Plaintext, no extra settings: `brokers` and one `topic`.
    pub fn plain(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topics: vec![topic.into()],
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            ca: None,
            cert: None,
            key: None,
            key_password_file: None,
            oauth_token_endpoint: None,
            oauth_client_id: None,
            oauth_client_secret_file: None,
            oauth_scope: None,
            options: vec![],
        }
    }

    /// The protocol in effect (see `--kafka-security-protocol`).
    pub fn protocol(&self) -> SecurityProtocol {
        self.security_protocol
            .unwrap_or(if self.sasl_mechanism.is_some() {
                SecurityProtocol::SaslSsl
            } else if self.ca.is_some() || self.cert.is_some() {
                SecurityProtocol::Ssl
            } else {
                SecurityProtocol::Plaintext
            })
    }

    /// The extra librdkafka settings, every `--kafka` value split into its
    /// `key=value` pairs (see [`KafkaConfig::options`]).
    pub fn settings(&self) -> Vec<(String, String)> {
        self.options
            .iter()
            .flat_map(|(k, v)| split_settings(k, v))
            .collect()
    }

    /// A librdkafka config: the bootstrap servers, then `defaults` (the
    /// caller's tuning), then the user's `--kafka` settings, which win, then
    /// the connection settings (secrets read now, from their file or
    /// variable). Errors name the flag and the file, never a secret.
    pub fn client_config(
        &self,
        defaults: &[(&str, &str)],
    ) -> anyhow::Result<rdkafka::ClientConfig> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("log_level", "4");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in self.settings() {
            c.set(k, v);
        }
        let protocol = self.protocol();
        if self.security_protocol.is_some() || protocol != SecurityProtocol::Plaintext {
            c.set("security.protocol", protocol.as_str());
        }
        if let Some(ca) = &self.ca {
            c.set("ssl.ca.location", path_str(ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            c.set("ssl.certificate.location", path_str(cert)?)
                .set("ssl.key.location", path_str(key)?);
            if let Some(pass) = secret(
                self.key_password_file.as_deref(),
                "--kafka-key-password-file",
                KEY_PASSWORD_ENV,
            )? {
                c.set("ssl.key.password", pass);
            }
        }
        match self.sasl_mechanism {
            None => {}
            Some(SaslMechanism::OauthBearer) => {
                c.set("sasl.mechanisms", "OAUTHBEARER")
                    .set("sasl.oauthbearer.method", "oidc");
                if let Some(url) = &self.oauth_token_endpoint {
                    c.set("sasl.oauthbearer.token.endpoint.url", url);
                }
                if let Some(id) = &self.oauth_client_id {
                    c.set("sasl.oauthbearer.client.id", id);
                }
                if let Some(scope) = &self.oauth_scope {
                    c.set("sasl.oauthbearer.scope", scope);
                }
                let s = secret(
                    self.oauth_client_secret_file.as_deref(),
                    "--kafka-oauth-client-secret-file",
                    OAUTH_CLIENT_SECRET_ENV,
                )?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "OAUTHBEARER needs the client secret: --kafka-oauth-client-secret-file or {OAUTH_CLIENT_SECRET_ENV}"
                    )
                })?;
                c.set("sasl.oauthbearer.client.secret", s);
            }
            Some(m) => {
                c.set("sasl.mechanisms", m.as_str());
                if let Some(u) = &self.sasl_username {
                    c.set("sasl.username", u);
                }
                let p = secret(
                    self.sasl_password_file.as_deref(),
                    "--kafka-sasl-password-file",
                    SASL_PASSWORD_ENV,
                )?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "SASL {} needs a password: --kafka-sasl-password-file or {SASL_PASSWORD_ENV}",
                        m.as_str()
                    )
                })?;
                c.set("sasl.password", p);
            }
        }
        Ok(c)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.brokers.trim().is_empty(),
            "--brokers must not be empty"
        );
        anyhow::ensure!(!self.topics.is_empty(), "at least one --topic is required");
        for t in &self.topics {
            anyhow::ensure!(
                !t.is_empty()
                    && t.len() <= 249
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "invalid topic name {t:?}"
            );
        }
        for (k, _) in self.settings() {
            let k = k.as_str();
            anyhow::ensure!(
                !SECRET_KEYS.contains(&k),
                "--kafka {k}=...: secrets are not taken on the command line (every user of the machine sees it in `ps`) nor in TICKFAN_KAFKA; use {}",
                match k {
                    "sasl.password" => "--kafka-sasl-password-file or TICKFAN_KAFKA_SASL_PASSWORD",
                    "ssl.key.password" => "--kafka-key-password-file or TICKFAN_KAFKA_KEY_PASSWORD",
                    "sasl.oauthbearer.client.secret" =>
                        "--kafka-oauth-client-secret-file or TICKFAN_KAFKA_OAUTH_CLIENT_SECRET",
                    _ => "a file: --kafka-key (and --kafka-key-password-file) for a client key",
                }
            );
            let flag = match k {
                "security.protocol" => self.security_protocol.map(|_| "--kafka-security-protocol"),
                "sasl.mechanisms" | "sasl.mechanism" => {
                    self.sasl_mechanism.map(|_| "--kafka-sasl-mechanism")
                }
                "sasl.username" => self.sasl_username.as_ref().map(|_| "--kafka-sasl-username"),
                "ssl.ca.location" => self.ca.as_ref().map(|_| "--kafka-ca"),
                "ssl.certificate.location" | "ssl.key.location" => {
                    self.cert.as_ref().map(|_| "--kafka-cert/--kafka-key")
                }
                _ if k.starts_with("sasl.oauthbearer.") => self
                    .oauth_token_endpoint
                    .as_ref()
                    .map(|_| "--kafka-oauth-*"),
                _ => None,
            };
            if let Some(flag) = flag {
                anyhow::bail!("--kafka {k}=... and {flag} both set it: keep one");
            }
        }
        let protocol = self.protocol();
        match (self.sasl_mechanism, protocol.sasl()) {
            (Some(m), false) => anyhow::bail!(
                "--kafka-sasl-mechanism {} needs --kafka-security-protocol SASL_SSL (or SASL_PLAINTEXT), not {}",
                m.as_str(),
                protocol.as_str()
            ),
            (None, true) => anyhow::bail!(
                "--kafka-security-protocol {} needs --kafka-sasl-mechanism",
                protocol.as_str()
            ),
            _ => {}
        }
        if !protocol.tls() {
            anyhow::ensure!(
                self.ca.is_none() && self.cert.is_none(),
                "--kafka-ca/--kafka-cert are for TLS: --kafka-security-protocol is {}",
                protocol.as_str()
            );
        }
        match self.sasl_mechanism {
            Some(SaslMechanism::OauthBearer) => {
                anyhow::ensure!(
                    self.oauth_token_endpoint.is_some() && self.oauth_client_id.is_some(),
                    "OAUTHBEARER needs --kafka-oauth-token-endpoint and --kafka-oauth-client-id (OIDC client credentials)"
                );
                anyhow::ensure!(
                    self.sasl_username.is_none() && self.sasl_password_file.is_none(),
                    "OAUTHBEARER takes no --kafka-sasl-username/--kafka-sasl-password-file"
                );
            }
            Some(m) => {
                anyhow::ensure!(
                    self.sasl_username.is_some(),
                    "SASL {} needs --kafka-sasl-username",
                    m.as_str()
                );
                anyhow::ensure!(
                    self.oauth_token_endpoint.is_none() && self.oauth_client_id.is_none(),
                    "--kafka-oauth-* settings are for --kafka-sasl-mechanism OAUTHBEARER"
                );
            }
            None => anyhow::ensure!(
                self.sasl_username.is_none()
                    && self.sasl_password_file.is_none()
                    && self.oauth_token_endpoint.is_none()
                    && self.oauth_client_id.is_none(),
                "SASL settings given without --kafka-sasl-mechanism"
            ),
        }
        for (flag, path) in [
            ("--kafka-ca", &self.ca),
            ("--kafka-cert", &self.cert),
            ("--kafka-key", &self.key),
        ] {
            if let Some(p) = path {
                std::fs::metadata(p).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))?;
            }
        }
        // Reads every secret once, so a missing file or variable fails here,
        // before any port is bound (the values are dropped at once).
        self.client_config(&[])?;
        Ok(())
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("path {} is not UTF-8", p.display()))
}

/// A secret from its file (trailing newline trimmed, as `kubectl create
/// secret --from-file` and `echo` leave one), or else from `env`.
fn secret(file: Option<&Path>, flag: &str, env: &str) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", f.display()))?;
        let s = s.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(!s.is_empty(), "{flag} {}: the file is empty", f.display());
        return Ok(Some(s.to_string()));
    }
    match std::env::var(env) {
        Ok(s) if !s.is_empty() => Ok(Some(s)),
        _ => Ok(None),
    }
}

/// One `--kafka` value's settings: `key=value` pairs separated by commas,
/// where a comma starts the next pair only when what follows it is
/// `key=value` with a librdkafka-shaped key (lowercase letters, digits, `.`
/// and `_`); any other comma belongs to the value (`debug=broker,fetch`).
fn split_settings(key: &str, value: &str) -> Vec<(String, String)> {
    let is_key = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
    };
    let mut out = vec![(key.to_string(), String::new())];
    for (i, piece) in value.split(',').enumerate() {
        match piece.split_once('=') {
            Some((k, v)) if i > 0 && is_key(k.trim()) => {
                out.push((k.trim().to_string(), v.to_string()))
            }
            _ => {
                let current = &mut out.last_mut().expect("one pair").1;
                if i > 0 {
                    current.push(',');
                }
                current.push_str(piece);
            }
        }
    }
    out
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.trim().is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(content: &str) -> tempfile_lite::File {
        tempfile_lite::File::with(content)
    }

    /// A file removed on drop (no tempfile crate for four tests).
    mod tempfile_lite {
        pub struct File(pub std::path::PathBuf);
        impl File {
            pub fn with(content: &str) -> File {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "tickfan-kafka-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                let mut f = std::fs::File::create(&p).unwrap();
                super::Write::write_all(&mut f, content.as_bytes()).unwrap();
                File(p)
            }
        }
        impl Drop for File {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn get(c: &rdkafka::ClientConfig, k: &str) -> Option<String> {
        c.get(k).map(str::to_string)
    }

    #[test]
    fn options_parse() {
        assert_eq!(
            parse_key_value("a.b=c=d").unwrap(),
            ("a.b".into(), "c=d".into())
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    /// TICKFAN_KAFKA (or one `--kafka`) holds several settings, and a value
    /// may hold commas: a comma starts the next setting only before
    /// `key=value`.
    #[test]
    fn a_value_may_hold_commas() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            kafka: KafkaConfig,
        }
        let cli = Cli::try_parse_from([
            "t",
            "--kafka",
            "fetch.wait.max.ms=50,debug=broker,fetch,client.rack=eu-west-1a",
            "--kafka",
            "statistics.interval.ms=0",
        ])
        .unwrap();
        let settings = cli.kafka.settings();
        assert_eq!(
            settings,
            [
                ("fetch.wait.max.ms".to_string(), "50".to_string()),
                ("debug".into(), "broker,fetch".into()),
                ("client.rack".into(), "eu-west-1a".into()),
                ("statistics.interval.ms".into(), "0".into()),
            ]
        );
        let c = cli.kafka.client_config(&[]).unwrap();
        assert_eq!(get(&c, "debug").as_deref(), Some("broker,fetch"));
        assert_eq!(get(&c, "client.rack").as_deref(), Some("eu-west-1a"));
        // A secret after a comma is still a setting of its own, and refused.
        let cli = Cli::try_parse_from(["t", "--kafka", "debug=all,sasl.password=x"]).unwrap();
        assert!(cli.kafka.validate().is_err());
    }

    #[test]
    fn scram_over_tls_reads_the_password_file_and_never_shows_it() {
        let pw = file("s3cret-pw\n");
        let mut k = KafkaConfig::plain("b:9093", "t");
        k.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        k.sasl_username = Some("edge".into());
        k.sasl_password_file = Some(pw.0.clone());
        k.validate().unwrap();
        let c = k.client_config(&[]).unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get(&c, "sasl.mechanisms").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(
            get(&c, "sasl.password").as_deref(),
            Some("s3cret-pw"),
            "newline trimmed"
        );
        assert!(
            !format!("{k:?}").contains("s3cret"),
            "Debug shows paths, not secrets"
        );
    }

    #[test]
    fn mutual_tls_and_oidc_map_to_librdkafka() {
        let (ca, cert, key, secret) = (file("ca"), file("cert"), file("key"), file("cs"));
        let mut k = KafkaConfig::plain("b", "t");
        k.ca = Some(ca.0.clone());
        k.cert = Some(cert.0.clone());
        k.key = Some(key.0.clone());
        k.validate().unwrap();
        let c = k.client_config(&[]).unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("SSL"));
        assert_eq!(get(&c, "ssl.key.location").as_deref(), key.0.to_str());
        k.sasl_mechanism = Some(SaslMechanism::OauthBearer);
        k.oauth_token_endpoint = Some("https://idp/token".into());
        k.oauth_client_id = Some("edge".into());
        k.oauth_client_secret_file = Some(secret.0.clone());
        k.validate().unwrap();
        let c = k.client_config(&[]).unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get(&c, "sasl.oauthbearer.method").as_deref(), Some("oidc"));
        assert_eq!(
            get(&c, "sasl.oauthbearer.client.secret").as_deref(),
            Some("cs")
        );
    }

    #[test]
    fn misuse_is_refused_with_the_flag_to_use() {
        let pw = file("x");
        let err = |k: &KafkaConfig| format!("{:#}", k.validate().unwrap_err());
        let mut k = KafkaConfig::plain("b", "t");
        k.options = vec![("sasl.password".into(), "hunter2".into())];
        let e = err(&k);
        assert!(
            e.contains("--kafka-sasl-password-file") && !e.contains("hunter2"),
            "{e}"
        );
        let mut k = KafkaConfig::plain("b", "t");
        k.sasl_mechanism = Some(SaslMechanism::Plain);
        assert!(err(&k).contains("--kafka-sasl-username"), "{}", err(&k));
        k.sasl_username = Some("u".into());
        k.sasl_password_file = Some("/nonexistent/pw".into());
        assert!(err(&k).contains("/nonexistent/pw"), "{}", err(&k));
        k.sasl_password_file = Some(pw.0.clone());
        k.security_protocol = Some(SecurityProtocol::Ssl);
        assert!(
            err(&k).contains("needs --kafka-security-protocol SASL_SSL"),
            "{}",
            err(&k)
        );
        k.security_protocol = Some(SecurityProtocol::SaslSsl);
        k.validate().unwrap();
        k.options = vec![("security.protocol".into(), "SSL".into())];
        assert!(err(&k).contains("keep one"), "{}", err(&k));
        let mut k = KafkaConfig::plain("b", "t");
        k.security_protocol = Some(SecurityProtocol::SaslSsl);
        assert!(err(&k).contains("needs --kafka-sasl-mechanism"));
        let mut k = KafkaConfig::plain("b", "t");
        k.sasl_mechanism = Some(SaslMechanism::OauthBearer);
        assert!(err(&k).contains("--kafka-oauth-token-endpoint"));
        let mut k = KafkaConfig::plain("b", "t");
        k.security_protocol = Some(SecurityProtocol::Plaintext);
        k.ca = Some(pw.0.clone());
        assert!(err(&k).contains("for TLS"));
        let mut k = KafkaConfig::plain("b", "t");
        k.sasl_mechanism = Some(SaslMechanism::ScramSha256);
        k.sasl_username = Some("u".into());
        let e = err(&k);
        assert!(e.contains("needs a password"), "{e}");
    }

    #[test]
    fn the_build_has_tls_sasl_and_every_codec() {
        // librdkafka refuses a setting its build cannot serve ("OpenSSL
        // not available at build time", "libzstd not available ...").
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.oauthbearer.method", "oidc"),
            ("compression.codec", "zstd"),
            ("compression.codec", "lz4"),
            ("compression.codec", "snappy"),
            ("compression.codec", "gzip"),
        ] {
            let mut c = rdkafka::ClientConfig::new();
            c.set("bootstrap.servers", "127.0.0.1:1")
                .set("sasl.mechanisms", "PLAIN")
                .set("sasl.username", "u")
                .set("sasl.password", "p")
                .set(
                    "sasl.oauthbearer.token.endpoint.url",
                    "http://127.0.0.1:1/t",
                )
                .set("sasl.oauthbearer.client.id", "i")
                .set("sasl.oauthbearer.client.secret", "s")
                .set(k, v);
            if k == "sasl.oauthbearer.method" {
                c.set("security.protocol", "SASL_SSL")
                    .set("sasl.mechanisms", "OAUTHBEARER");
            }
            let made: Result<rdkafka::producer::BaseProducer, _> = c.create();
            assert!(made.is_ok(), "{k}={v}: {:?}", made.err());
        }
    }
}
