//! The plan of a run: which clients there are, what each subscribes to,
//! where and from which address it connects, and when (the ramp).

use std::{net::IpAddr, time::Duration};

use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

use super::{conn::Target, Config, Mode, Protocol, Scenario};

/// How long clients may take to connect, and a storm to come back.
pub(super) const CONNECT_DEADLINE: Duration = Duration::from_secs(120);

/// What the clients of every process do: sent to each worker process as its
/// first line of input.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct Plan {
    urls: Vec<String>,
    pub(super) scenario: Scenario,
    pub(super) clients: usize,
    pub(super) symbols: Vec<String>,
    per_client: usize,
    /// Clients 0..slow_clients stall when the window starts.
    pub(super) slow_clients: usize,
    source_addresses: u8,
    /// Clients per second at the start (0: all at once).
    #[serde(default)]
    ramp_rate: f64,
    /// What every subscribe carries besides its symbols.
    #[serde(default)]
    pub(super) options: SubscribeOptions,
    /// Every connection offers permessage-deflate (`--deflate`).
    #[serde(default)]
    deflate: bool,
}

/// What every client's subscribe asks for besides its symbols (`--max-hz`,
/// `--mode`); each is sent only when given.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct SubscribeOptions {
    pub(super) max_hz: Option<f64>,
    pub(super) mode: Option<Mode>,
    /// The server's protocol (`--protocol`).
    #[serde(default)]
    pub(super) protocol: Protocol,
}

impl Plan {
    /// The plan of `c` (already validated): its symbols resolved, its slow
    /// clients counted.
    pub(super) fn new(c: &Config) -> anyhow::Result<Plan> {
        let symbols: Vec<String> = c.symbols.resolve()?.iter().map(|s| s.to_string()).collect();
        let slow_n = if c.scenario == Scenario::Slow {
            (c.clients as f64 * c.slow_fraction).round() as usize
        } else {
            0
        };
        Ok(Plan {
            urls: c.url.clone(),
            scenario: c.scenario,
            clients: c.clients,
            symbols,
            per_client: c.per_client,
            slow_clients: slow_n,
            source_addresses: c.source_addresses,
            ramp_rate: c.ramp_rate,
            options: SubscribeOptions {
                max_hz: c.max_hz,
                mode: c.mode,
                protocol: c.protocol,
            },
            deflate: c.deflate,
        })
    }

    /// When client `i` starts connecting, after the start.
    pub(super) fn start_delay(&self, i: usize) -> Duration {
        if self.ramp_rate > 0.0 {
            Duration::from_secs_f64(i as f64 / self.ramp_rate)
        } else {
            Duration::ZERO
        }
    }

    /// How long connecting may take: the ramp, then [`CONNECT_DEADLINE`].
    pub(super) fn connect_deadline(&self) -> Duration {
        self.start_delay(self.clients) + CONNECT_DEADLINE
    }

    /// Where client `i` connects (round-robin over the URLs), from which
    /// source address, and whether it offers permessage-deflate.
    pub(super) fn target(&self, i: usize) -> Target {
        Target {
            url: self.urls[i % self.urls.len()].clone(),
            from: (self.source_addresses > 1)
                .then(|| IpAddr::from([127, 0, 0, 1 + (i % self.source_addresses as usize) as u8])),
            deflate: self.deflate,
        }
    }
}

/// What each client subscribes to, by client index.
pub(super) fn subscriptions(plan: &Plan, rng: &mut SmallRng) -> Vec<Vec<String>> {
    let symbols = &plan.symbols;
    let zipf = Zipf::new(symbols.len() as f64, 1.0).expect("valid zipf");
    (0..plan.clients)
        .map(|i| match plan.scenario {
            Scenario::Broadcast => symbols.to_vec(),
            Scenario::OneEach => vec![symbols[i % symbols.len()].clone()],
            Scenario::Wall | Scenario::Slow | Scenario::Storm => {
                let mut mine: Vec<String> = Vec::new();
                let want = plan.per_client.min(symbols.len());
                while mine.len() < want {
                    let s = &symbols[(zipf.sample(rng) as usize - 1).min(symbols.len() - 1)];
                    if !mine.contains(s) {
                        mine.push(s.clone());
                    }
                }
                mine
            }
        })
        .collect()
}
