//! The edge's configuration. Each part of the edge owns its `Config` (flags
//! and `TICKFAN_*` environment variables, documented on each field); this
//! module aggregates them for `tickfan edge` and validates before any port
//! is bound. The rig's commands keep theirs beside them (`feed::ProduceConfig`,
//! `demo::DemoConfig`); nothing here depends on the rig.

use std::net::SocketAddr;

use clap::Args;

use crate::{
    gateway::{self, admission, auth},
    ingest,
    telemetry::otel,
};

pub use crate::kafka::KafkaConfig;

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
        self.ingest.validate_mappings(&self.kafka.topics)?;
        self.gateway.validate()?;
        distinct_admin_listener(self.listen, &self.gateway)?;
        self.admission.validate()?;
        self.auth.validate()
    }
}

/// `--admin-listen` must not be the public address (port 0 picks a free
/// port for each, so it may repeat).
pub(crate) fn distinct_admin_listener(
    listen: SocketAddr,
    gateway: &gateway::Config,
) -> anyhow::Result<()> {
    if let Some(admin) = gateway.http.admin_listen {
        anyhow::ensure!(
            admin.port() == 0 || admin.port() != listen.port(),
            "--admin-listen must differ from --listen"
        );
    }
    Ok(())
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
}
