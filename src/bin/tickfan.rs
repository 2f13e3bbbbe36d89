//! The `tickfan` command: parses arguments and calls the library.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tickfan::{app, config, gateway, shutdown, telemetry};

/// Kafka-backed WebSocket fan-out for market data.
///
/// Feed handlers publish Avro ticks to partitioned Kafka topics; tickfan edge
/// nodes consume only the partitions holding symbols their clients want and
/// stream them over WebSocket through bounded, drop-oldest outboxes.
///
/// Start here: `tickfan demo` runs everything in-process (embedded Kafka mock
/// cluster, synthetic feed, edge, ticker page). Every flag can also be set by
/// the TICKFAN_* environment variable shown in its help.
#[derive(Parser, Debug)]
#[command(name = "tickfan", version = VERSION, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// TOML file of settings for the command, keyed by the flags' long names
    /// (`pacing-patience = "1s"`); flags and TICKFAN_* variables win over it.
    #[arg(long, global = true, env = "TICKFAN_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// Log line format on stderr (`RUST_LOG` sets the level).
    #[arg(long, global = true, env = "TICKFAN_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,
}

/// `tickfan --version`: the crate's version and the commit it was built from
/// (build.rs: `git rev-parse --short=12 HEAD`, else `TICKFAN_GIT_COMMIT`, else
/// `unknown`), e.g. `tickfan 0.2.0 (commit 0123456789ab)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TICKFAN_BUILD_COMMIT"),
    ")"
);

// Parsed once at start: boxing the big variant would save nothing worth it.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run an edge node: consume ticks from Kafka, serve WebSocket clients.
    Edge(config::EdgeConfig),
    /// Run the synthetic feed: write ticks to a Kafka topic.
    #[cfg(feature = "rig")]
    Produce(tickfan::feed::ProduceConfig),
    /// Run everything in-process on librdkafka's embedded mock cluster and
    /// serve a live ticker page.
    #[cfg(feature = "rig")]
    Demo(tickfan::demo::DemoConfig),
    /// Load-test edges: N WebSocket clients, a scenario, latency and cost.
    #[cfg(feature = "rig")]
    Loadgen(tickfan::loadgen::Config),
}

/// jemalloc instead of glibc malloc: a connect storm allocates and frees
/// per-handshake HTTP buffers for thousands of connections at once, and glibc
/// keeps that peak resident afterwards (fragmented arenas), which doubled the
/// RSS per idle connection (BENCHMARKS.md, "Idle connections"). jemalloc
/// returns freed pages to the OS after a few seconds.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the
/// environment still overrides them). `background_thread:true`: a thread of
/// jemalloc's own returns freed pages to the OS on its timer. Without it,
/// pages are returned only when later allocations drive the decay, and an
/// edge whose connect storm is over, its connections idle, allocates
/// almost nothing: 15,000 idle connections measured 5.2 KiB of RSS each,
/// 4.3 with it (BENCHMARKS.md, "Idle connections").
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &u8 = &b"background_thread:true\0"[0];

fn main() -> anyhow::Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cmd = tickfan::config_file::apply_from_args(Cli::command(), &args).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        std::process::exit(2)
    });
    let cli = Cli::from_arg_matches(&cmd.get_matches_from(args)).unwrap_or_else(|e| e.exit());
    let exporting = match &cli.command {
        Command::Edge(c) => c.otel.otlp_endpoint.is_some(),
        #[cfg(feature = "rig")]
        Command::Demo(c) => c.otel.otlp_endpoint.is_some(),
        #[cfg(feature = "rig")]
        Command::Produce(_) | Command::Loadgen(_) => false,
    };
    telemetry::init_logging(cli.log_format, exporting);
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async move {
        match cli.command {
            Command::Edge(c) => {
                c.validate()?;
                app::raise_fd_limit(&c.gateway, &c.admission);
                let listener = gateway::bind(c.listen, &c.gateway)?;
                app::run_edge(c, listener, shutdown::on_signal()).await
            }
            #[cfg(feature = "rig")]
            Command::Produce(mut c) => {
                c.validate()?;
                c.feed.format = c.format;
                tickfan::feed::run(c.kafka, c.feed, c.otel, shutdown::on_signal()).await
            }
            #[cfg(feature = "rig")]
            Command::Demo(c) => {
                app::raise_fd_limit(&c.gateway, &c.admission);
                tickfan::demo::run_demo(c, shutdown::on_signal()).await
            }
            #[cfg(feature = "rig")]
            Command::Loadgen(c) => tickfan::loadgen::run(c, shutdown::on_signal())
                .await
                .map(|_| ()),
        }
    });
    // Blocking calls still running (a Kafka metadata request to an
    // unreachable cluster) must not hold the exit past --shutdown-grace.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        super::Cli::command().debug_assert();
    }

    /// The compose stack's settings file (compose/edge.toml) applies to
    /// `tickfan edge` as it is mounted.
    #[test]
    fn the_compose_settings_file_configures_an_edge() {
        use clap::FromArgMatches;
        let file = include_str!("../../compose/edge.toml");
        let cmd =
            tickfan::config_file::apply(super::Cli::command(), "edge", "compose/edge.toml", file)
                .expect("compose/edge.toml applies");
        let cli =
            super::Cli::from_arg_matches(&cmd.try_get_matches_from(["tickfan", "edge"]).unwrap())
                .unwrap();
        let super::Command::Edge(c) = cli.command else {
            panic!("edge")
        };
        assert_eq!(c.gateway.write_timeout, std::time::Duration::from_secs(20));
        c.validate().expect("a valid edge");
    }

    /// The example file of docs/configuration.md applies to `tickfan edge`
    /// as written, and its settings arrive in the edge's config.
    #[test]
    fn the_documented_config_file_configures_an_edge() {
        use clap::FromArgMatches;
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("a toml example") + "```toml\n".len();
        let example = &doc[start..start + doc[start..].find("```").unwrap()];
        let cmd = tickfan::config_file::apply(super::Cli::command(), "edge", "example", example)
            .expect("the documented file applies");
        let cli =
            super::Cli::from_arg_matches(&cmd.try_get_matches_from(["tickfan", "edge"]).unwrap())
                .unwrap();
        let super::Command::Edge(c) = cli.command else {
            panic!("edge")
        };
        assert_eq!(c.kafka.brokers, "kafka-1:9092,kafka-2:9092");
        assert_eq!(c.kafka.topics, ["ticks", "quotes"]);
        assert_eq!(c.ingest.pacing_patience, std::time::Duration::from_secs(1));
        assert_eq!(c.admission.max_connections_per_ip, 500);
        assert!(c.gateway.page);
        assert_eq!(
            c.kafka.options,
            [("client.rack".to_string(), "eu-west-1a".to_string())]
        );
        assert_eq!(cli.log_format, tickfan::telemetry::LogFormat::Json);
        let [m] = &c.ingest.mappings[..] else {
            panic!("one mapping: {:?}", c.ingest.mappings)
        };
        assert_eq!(m.topic, "quotes");
        assert_eq!(m.format, tickfan::codec::mapping::Format::Avro);
        assert_eq!(
            m.forward,
            tickfan::codec::mapping::Forward::Fields(vec![
                vec!["venue_code".to_string()],
                vec!["flags".to_string()]
            ])
        );
        assert_eq!(
            c.ingest.registry.schema_registry.as_deref(),
            Some("https://registry:8081")
        );
        c.ingest
            .validate_mappings(&c.kafka.topics)
            .expect("the documented mapping fits the documented topics");
        // A flag still wins.
        let cli = super::Cli::from_arg_matches(
            &tickfan::config_file::apply(super::Cli::command(), "edge", "example", example)
                .unwrap()
                .try_get_matches_from(["tickfan", "edge", "--topic", "other"])
                .unwrap(),
        )
        .unwrap();
        let super::Command::Edge(c) = cli.command else {
            panic!("edge")
        };
        assert_eq!(c.kafka.topics, ["other"]);
    }

    /// Every default that docs/configuration.md writes as one value (a
    /// single code span) in a subcommand's table is that subcommand's
    /// default here (the Helm chart's rendered defaults are checked against
    /// the same table by scripts/check-helm.sh).
    #[test]
    fn the_documented_defaults_are_the_binarys() {
        let doc = include_str!("../../docs/configuration.md");
        let cli = super::Cli::command();
        let mut checked = 0;
        for sub in cli.get_subcommands() {
            let head = format!("## `tickfan {}`", sub.get_name());
            let Some(start) = doc.find(&head) else {
                continue;
            };
            let section = &doc[start + head.len()..];
            let section = &section[..section.find("\n## ").unwrap_or(section.len())];
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let prefix = format!("| `--{long}` | ");
                let Some(row) = section.lines().find(|l| l.starts_with(&prefix)) else {
                    continue;
                };
                let Some(cell) = row.split(" | ").nth(2) else {
                    continue;
                };
                let Some(documented) = cell
                    .strip_prefix('`')
                    .and_then(|c| c.strip_suffix('`'))
                    .filter(|c| !c.contains('`'))
                else {
                    continue; // prose, or more than one value
                };
                let actual: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                let actual = actual.join(",");
                let same = actual == documented
                    || matches!(
                        (actual.parse::<f64>(), documented.parse::<f64>()),
                        (Ok(a), Ok(b)) if a == b
                    );
                assert!(
                    same,
                    "docs/configuration.md: `tickfan {} --{long}` defaults to `{documented}`, the binary to `{actual}`",
                    sub.get_name()
                );
                checked += 1;
            }
        }
        assert!(checked >= 70, "defaults found in the tables: {checked}");
    }

    /// The configuration reference (docs/configuration.md) names every flag
    /// and variable.
    #[test]
    fn readme_documents_every_option() {
        let readme = include_str!("../../docs/configuration.md");
        let cli = super::Cli::command();
        let top = std::iter::once(&cli);
        for sub in top.chain(cli.get_subcommands()) {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" {
                    continue;
                }
                assert!(
                    readme.contains(&format!("`--{long}`")),
                    "configuration.md lacks `--{long}` ({})",
                    sub.get_name()
                );
                if let Some(env) = arg.get_env() {
                    let env = env.to_string_lossy();
                    assert!(
                        readme.contains(&format!("`{env}`")),
                        "configuration.md lacks `{env}`"
                    );
                }
            }
        }
    }
}
