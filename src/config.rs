//! Root configuration. Each part of the edge owns its `Config` (flags and
//! `TICKFAN_*` environment variables, documented on each field); this module
//! aggregates them per subcommand and validates before any port is bound.

use std::net::SocketAddr;

use clap::Args;

use crate::{
    feed,
    gateway::{self, admission, auth},
    ingest,
    telemetry::otel,
};

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

    /// Extra librdkafka setting as KEY=VALUE (repeatable; in the environment,
    /// comma-separated), e.g. `--kafka security.protocol=SASL_SSL`.
    #[arg(long = "kafka", env = "TICKFAN_KAFKA", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A librdkafka config: the bootstrap servers, then `defaults` (the
    /// caller's tuning), then the user's `--kafka` settings, which win.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("log_level", "4");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
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
        Ok(())
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.trim().is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

/// `tickfan edge`.
#[derive(Args, Debug, Clone)]
pub struct EdgeConfig {
    /// Address to serve HTTP and WebSocket on.
    #[arg(long, env = "TICKFAN_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub ingest: ingest::Config,

    #[command(flatten)]
    pub gateway: gateway::Config,

    #[command(flatten)]
    pub admission: admission::Config,

    #[command(flatten)]
    pub auth: auth::Config,

    #[command(flatten)]
    pub otel: otel::Config,
}

impl EdgeConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.kafka.validate()?;
        self.ingest.validate()?;
        self.gateway.validate()?;
        distinct_admin_listener(self.listen, &self.gateway)?;
        self.admission.validate()?;
        self.auth.validate()
    }
}

/// `--admin-listen` must not be the public address (port 0 picks a free
/// port for each, so it may repeat).
fn distinct_admin_listener(listen: SocketAddr, gateway: &gateway::Config) -> anyhow::Result<()> {
    if let Some(admin) = gateway.http.admin_listen {
        anyhow::ensure!(
            admin.port() == 0 || admin.port() != listen.port(),
            "--admin-listen must differ from --listen"
        );
    }
    Ok(())
}

/// `tickfan produce`.
#[derive(Args, Debug, Clone)]
pub struct ProduceConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub feed: feed::Config,

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

/// `tickfan demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoConfig {
    /// Address to serve the page, HTTP and WebSocket on.
    #[arg(long, env = "TICKFAN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Partitions of the demo topic in the embedded mock cluster.
    #[arg(long, env = "TICKFAN_DEMO_PARTITIONS", default_value_t = 8)]
    pub partitions: i32,

    #[command(flatten)]
    pub feed: feed::Config,

    #[command(flatten)]
    pub ingest: ingest::Config,

    #[command(flatten)]
    pub gateway: gateway::Config,

    #[command(flatten)]
    pub admission: admission::Config,

    /// Off unless a key is given.
    #[command(flatten)]
    pub auth: auth::Config,

    #[command(flatten)]
    pub otel: otel::Config,
}

impl DemoConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.partitions >= 1, "--partitions must be >= 1");
        self.feed.validate()?;
        self.ingest.validate()?;
        self.gateway.validate()?;
        distinct_admin_listener(self.listen, &self.gateway)?;
        self.admission.validate()?;
        self.auth.validate()
    }
}

/// Default values of a flag group, as if no flag were given (environment
/// variables still apply). Used by `demo`, tests and benches to build configs
/// without repeating defaults.
pub fn defaults<T: Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("tickfan"));
    let matches = cmd
        .try_get_matches_from(["tickfan"])
        .expect("defaults parse");
    T::from_arg_matches(&matches).expect("defaults parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        defaults::<EdgeConfig>().validate().unwrap();
        defaults::<ProduceConfig>().validate().unwrap();
        defaults::<DemoConfig>().validate().unwrap();
    }

    #[test]
    fn the_admin_listener_is_another_address() {
        let mut c = defaults::<EdgeConfig>();
        c.gateway.http.admin_listen = Some("127.0.0.1:8080".parse().unwrap());
        c.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(c.validate().is_err());
        c.gateway.http.admin_listen = Some("127.0.0.1:9090".parse().unwrap());
        c.validate().unwrap();
        c.gateway.http.fd_reserve = 1;
        assert!(c.validate().is_err());
    }

    #[test]
    fn kafka_options_parse() {
        assert_eq!(
            parse_key_value("a.b=c=d").unwrap(),
            ("a.b".into(), "c=d".into())
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}
