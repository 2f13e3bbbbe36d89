//! The `tickfan loadgen` command line: [`Config`], its [`Scenario`]s and
//! worker [`Slot`]s, and the checks on them.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::feed::SymbolSpec;

/// Who subscribes to what.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every client subscribes to all symbols.
    Broadcast,
    /// Each client subscribes to `--per-client` symbols, Zipf-skewed.
    Wall,
    /// Client i subscribes to symbol i only.
    OneEach,
    /// Like `wall`, but `--slow-fraction` of the clients stop reading after
    /// the warm-up.
    Slow,
    /// Like `wall`, but at the start of the measured window every client
    /// closes its connection at once and reconnects (backoff with full
    /// jitter, honouring `Retry-After`), then resubscribes.
    Storm,
}

/// What a subscription asks the edge to send while the client is behind
/// (the subscribe's `"mode"`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every tick (the edge's default).
    All,
    /// Only the newest tick of each symbol.
    Latest,
}

/// The server's WebSocket protocol.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// tickfan's (docs/protocol.md).
    #[default]
    Tickfan,
    /// Centrifugo's JSON protocol (v6), a channel per symbol: one frame
    /// carries the connect command and every subscribe, newline-delimited;
    /// pushes come newline-delimited, one publication each (its data the
    /// tick as JSON); the server's `{}` pings are answered with `{}`. Feed
    /// Centrifugo with `--produce-format centrifugo` (or `tickfan produce
    /// --format centrifugo`) and its Kafka consumer in publication data mode
    /// (`scripts/centrifugo.sh`).
    Centrifugo,
}

/// Which share of the clients a worker process runs: `I/P` runs the clients
/// whose index i has i % P == I.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub index: usize,
    pub of: usize,
}

impl std::str::FromStr for Slot {
    type Err = String;
    fn from_str(s: &str) -> Result<Slot, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, p)| Some((i.trim().parse().ok()?, p.trim().parse().ok()?)));
        match parsed {
            Some((index, of)) if index < of => Ok(Slot { index, of }),
            _ => Err(format!("expected I/P with I < P, got {s:?}")),
        }
    }
}

/// Load generator settings.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "loadgen")]
#[command(next_help_heading = "Load generator")]
pub struct Config {
    /// Edge WebSocket URLs, comma-separated; clients are spread round-robin.
    #[arg(
        long,
        env = "TICKFAN_LOADGEN_URL",
        default_value = "ws://127.0.0.1:8080/ws",
        value_delimiter = ','
    )]
    pub url: Vec<String>,

    /// The server's protocol: `tickfan`, or `centrifugo` to measure
    /// Centrifugo with the same clients, feed and figures (BENCHMARKS.md).
    #[arg(long, env = "TICKFAN_LOADGEN_PROTOCOL", value_enum, default_value_t = Protocol::Tickfan)]
    pub protocol: Protocol,

    /// What the clients subscribe to.
    #[arg(long, env = "TICKFAN_LOADGEN_SCENARIO", value_enum, default_value_t = Scenario::Wall)]
    pub scenario: Scenario,

    /// WebSocket clients, over all processes.
    #[arg(long, env = "TICKFAN_LOADGEN_CLIENTS", default_value_t = 100)]
    pub clients: usize,

    /// The feed's symbols: a count (as `produce --symbols N` names them) or a
    /// comma-separated list.
    #[arg(
        long = "symbols",
        env = "TICKFAN_LOADGEN_SYMBOLS",
        default_value = "50"
    )]
    pub symbols: SymbolSpec,

    /// Symbols per client in `wall`, `slow` and `storm`.
    #[arg(long, env = "TICKFAN_LOADGEN_PER_CLIENT", default_value_t = 10)]
    pub per_client: usize,

    /// Fraction of clients that stop reading in `slow`.
    #[arg(long, env = "TICKFAN_LOADGEN_SLOW_FRACTION", default_value_t = 0.1)]
    pub slow_fraction: f64,

    /// Every client's subscribe asks for at most this many updates a second
    /// per symbol (`"max_hz"`, 0 to 1000; 0: every tick). Absent: not sent,
    /// the edge's `--default-max-hz` applies.
    #[arg(long, env = "TICKFAN_LOADGEN_MAX_HZ")]
    pub max_hz: Option<f64>,

    /// Every client's subscribe carries this `"mode"`. Absent: not sent
    /// (the edge's default, every tick).
    #[arg(long, env = "TICKFAN_LOADGEN_MODE", value_enum)]
    pub mode: Option<Mode>,

    /// Every connection offers permessage-deflate (RFC 7692) as the
    /// reference client does, and inflates what the edge compresses (start
    /// the edge with `--permessage-deflate`). The summary counts the
    /// connections where it was negotiated and warns when not all were.
    /// tickfan's protocol only.
    #[arg(long, env = "TICKFAN_LOADGEN_DEFLATE", default_value_t = false)]
    pub deflate: bool,

    /// Time after connecting before measuring.
    #[arg(long, env = "TICKFAN_LOADGEN_WARMUP", default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Measured window (`storm`: at least this, and until every client is
    /// back).
    #[arg(long, env = "TICKFAN_LOADGEN_DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Clients start connecting at this many per second, in order (0: all at
    /// once). A server that cannot take every client at once while its feed
    /// runs (the Redis baseline) is measured after a ramp rather than in a
    /// reconnect spiral.
    #[arg(long, env = "TICKFAN_LOADGEN_RAMP_RATE", default_value_t = 0.0)]
    pub ramp_rate: f64,

    /// Spread clients over source addresses 127.0.0.1 ..= 127.0.0.N (past
    /// ~28,000 ephemeral ports per address pair).
    #[arg(long, env = "TICKFAN_LOADGEN_SOURCE_ADDRESSES", default_value_t = 1)]
    pub source_addresses: u8,

    /// Run the clients in this many worker processes (past the open-files
    /// limit of one process); results are merged as if from one.
    #[arg(long, env = "TICKFAN_LOADGEN_PROCESSES", default_value_t = 1)]
    pub processes: usize,

    /// Pid of the edge process, to report its CPU per delivered tick and RSS
    /// per connection from /proc.
    #[arg(long, env = "TICKFAN_LOADGEN_EDGE_PID")]
    pub edge_pid: Option<u32>,

    /// Write the JSON summary here too.
    #[arg(long, env = "TICKFAN_LOADGEN_JSON")]
    pub json: Option<PathBuf>,

    /// Write an SVG plot of per-second latency percentiles here.
    #[arg(long, env = "TICKFAN_LOADGEN_PLOT")]
    pub plot: Option<PathBuf>,

    /// Also drive the feed: produce ticks of `--symbols` (uniformly, as
    /// `tickfan produce --zipf 0`) to these Kafka bootstrap servers for the
    /// whole run, so one command is a complete benchmark.
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_BROKERS")]
    pub produce_brokers: Option<String>,

    /// Topic the driven feed writes to.
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_TOPIC", default_value = "ticks")]
    pub produce_topic: String,

    /// Ticks per second of the driven feed, over all symbols.
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_RATE", default_value_t = 1000.0)]
    pub produce_rate: f64,

    /// Kafka value size of the driven feed's ticks (as `produce --tick-bytes`;
    /// 0: natural size).
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_TICK_BYTES", default_value_t = 0)]
    pub produce_tick_bytes: usize,

    /// How the driven feed writes its records (as `produce --format`;
    /// default: `centrifugo` with `--protocol centrifugo`, else `tickfan`).
    #[arg(long, env = "TICKFAN_LOADGEN_PRODUCE_FORMAT", value_enum)]
    pub produce_format: Option<crate::feed::FeedFormat>,

    /// Internal: run as worker I of P of a `--processes` parent, which sends
    /// the settings and commands on stdin.
    #[arg(long, hide = true, value_name = "I/P")]
    pub worker: Option<Slot>,

    /// Internal: the binary to start workers from (default: this one).
    #[arg(long, hide = true, value_name = "PATH")]
    pub worker_exe: Option<PathBuf>,
}

impl Config {
    /// Rejects settings no run can have.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.url.is_empty() && self.clients > 0,
            "need --url and --clients"
        );
        anyhow::ensure!(
            (1..=self.clients).contains(&self.processes),
            "--processes must be between 1 and --clients"
        );
        anyhow::ensure!(
            self.ramp_rate >= 0.0 && self.ramp_rate.is_finite(),
            "--ramp-rate must be >= 0"
        );
        anyhow::ensure!(
            self.max_hz.is_none_or(|hz| (0.0..=1000.0).contains(&hz)),
            "--max-hz must be a number from 0 (every tick) to 1000"
        );
        anyhow::ensure!(
            self.protocol == Protocol::Tickfan || (self.max_hz.is_none() && self.mode.is_none()),
            "--max-hz and --mode are tickfan's; Centrifugo has no such subscribe options"
        );
        anyhow::ensure!(
            self.protocol == Protocol::Tickfan || !self.deflate,
            "--deflate is for --protocol tickfan only: the load generator does not offer \
             permessage-deflate to Centrifugo"
        );
        Ok(())
    }

    /// What the driven feed writes: `--produce-format`, else what the
    /// server under test reads.
    pub(super) fn produce_format(&self) -> crate::feed::FeedFormat {
        self.produce_format.unwrap_or(match self.protocol {
            Protocol::Tickfan => crate::feed::FeedFormat::Tickfan,
            Protocol::Centrifugo => crate::feed::FeedFormat::Centrifugo,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_slots_parse() {
        assert_eq!("1/3".parse(), Ok(Slot { index: 1, of: 3 }));
        for bad in ["3/3", "1", "a/2", "1/0", ""] {
            assert!(bad.parse::<Slot>().is_err(), "{bad}");
        }
    }

    #[test]
    fn deflate_is_refused_with_centrifugo() {
        let mut c: Config = crate::config::defaults();
        c.deflate = true;
        c.validate().unwrap();
        c.protocol = Protocol::Centrifugo;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("--deflate") && err.contains("tickfan"),
            "{err}"
        );
        c.deflate = false;
        c.validate().unwrap();
    }
}
