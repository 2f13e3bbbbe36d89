//! The front door's admission control, checked before any WebSocket upgrade
//! and cheaply (no allocation on the reject path):
//!
//! 1. a cap on concurrent connections (over it: 503);
//! 2. a GCRA rate limit per client IP (over it: 429 + `Retry-After`);
//! 3. a global GCRA rate limit on upgrades (over it: 429 + `Retry-After`).
//!
//! The per-IP check comes first so one noisy address cannot spend the global
//! budget. Behind a proxy, the client IP is taken from `X-Forwarded-For` only
//! when the TCP peer is a configured trusted proxy.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
};
use ipnet::IpNet;

/// Limits for new connections. Defaults are sized for one edge node.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "admission")]
#[command(next_help_heading = "Admission (reconnect storms)")]
pub struct Config {
    /// New WebSocket connections per second this edge accepts, from everyone.
    #[arg(long, env = "TICKFAN_CONNECT_RATE", default_value_t = 1000)]
    pub connect_rate: u32,

    /// Connections that may arrive at once above `--connect-rate`.
    #[arg(long, env = "TICKFAN_CONNECT_BURST", default_value_t = 2000)]
    pub connect_burst: u32,

    /// New connections per second from one client IP.
    #[arg(long, env = "TICKFAN_CONNECT_RATE_PER_IP", default_value_t = 20)]
    pub connect_rate_per_ip: u32,

    /// Connections one client IP may open at once above its rate.
    #[arg(long, env = "TICKFAN_CONNECT_BURST_PER_IP", default_value_t = 100)]
    pub connect_burst_per_ip: u32,

    /// Most concurrent WebSocket connections on this edge.
    #[arg(long, env = "TICKFAN_MAX_CONNECTIONS", default_value_t = 15000)]
    pub max_connections: usize,

    /// Proxies (CIDRs, comma-separated) whose `X-Forwarded-For` is believed,
    /// e.g. `10.0.0.0/8`. Empty: the TCP peer is the client.
    #[arg(long, env = "TICKFAN_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.connect_rate >= 1 && self.connect_burst >= 1,
            "--connect-rate/--connect-burst must be >= 1"
        );
        anyhow::ensure!(
            self.connect_rate_per_ip >= 1 && self.connect_burst_per_ip >= 1,
            "--connect-rate-per-ip/--connect-burst-per-ip must be >= 1"
        );
        anyhow::ensure!(self.max_connections >= 1, "--max-connections must be >= 1");
        Ok(())
    }
}

/// Why a connection was turned away. Each variant is a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    ConnectionCap,
    IpRate { retry_after: Duration },
    GlobalRate { retry_after: Duration },
}

impl Rejected {
    pub fn label(self) -> &'static str {
        match self {
            Rejected::ConnectionCap => "connection_cap",
            Rejected::IpRate { .. } => "ip_rate",
            Rejected::GlobalRate { .. } => "global_rate",
        }
    }

    /// Seconds for `Retry-After` (whole seconds, at least 1).
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Rejected::ConnectionCap => 1,
            Rejected::IpRate { retry_after } | Rejected::GlobalRate { retry_after } => {
                retry_after.as_secs_f64().ceil().max(1.0) as u64
            }
        }
    }
}

/// Admission state shared by all handshakes.
pub struct Admission {
    global: DefaultDirectRateLimiter,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    open: Arc<AtomicUsize>,
    max_connections: usize,
    trusted: Vec<IpNet>,
}

/// A connection slot; released when dropped.
#[derive(Debug)]
pub struct Permit {
    open: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

fn quota(rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate.max(1)).expect("max(1)");
    let burst = NonZeroU32::new(burst.max(1)).expect("max(1)");
    Quota::per_second(rate).allow_burst(burst)
}

impl Admission {
    pub fn new(c: &Config) -> Admission {
        Admission {
            global: RateLimiter::direct(quota(c.connect_rate, c.connect_burst)),
            per_ip: RateLimiter::keyed(quota(c.connect_rate_per_ip, c.connect_burst_per_ip)),
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: c.max_connections,
            trusted: c.trusted_proxies.clone(),
        }
    }

    /// The client's address: the TCP peer, or, when the peer is a trusted
    /// proxy, the right-most untrusted address of `X-Forwarded-For`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &http::HeaderMap) -> IpAddr {
        let peer_ip = peer.ip().to_canonical();
        if !self.is_trusted(peer_ip) {
            return peer_ip;
        }
        let mut client = peer_ip;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else { break };
            for part in text.rsplit(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) => {
                        client = ip.to_canonical();
                        if !self.is_trusted(client) {
                            return client;
                        }
                    }
                    Err(_) => return client,
                }
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Rejected> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejected::ConnectionCap);
        }
        let permit = Permit {
            open: self.open.clone(),
        };
        let now = DefaultClock::default().now();
        if let Err(nu) = self.per_ip.check_key(&ip) {
            return Err(Rejected::IpRate {
                retry_after: nu.wait_time_from(now),
            });
        }
        if let Err(nu) = self.global.check() {
            return Err(Rejected::GlobalRate {
                retry_after: nu.wait_time_from(now),
            });
        }
        Ok(permit)
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Forgets per-IP state that no longer limits anyone; call periodically
    /// so the keyed limiter's memory follows the active addresses only.
    pub fn housekeeping(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            connect_rate: 1,
            connect_burst: 5,
            connect_rate_per_ip: 100,
            connect_burst_per_ip: 3,
            max_connections: 4,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        }
    }

    #[test]
    fn per_ip_then_global_then_cap() {
        let a = Admission::new(&config());
        let ip1: IpAddr = "127.0.0.1".parse().unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let p: Vec<_> = (0..3).map(|_| a.admit(ip1).unwrap()).collect();
        assert!(
            matches!(a.admit(ip1), Err(Rejected::IpRate { .. })),
            "4th from one IP"
        );
        let q = a.admit(ip2).unwrap();
        assert_eq!(a.open(), 4);
        assert_eq!(a.admit(ip2).unwrap_err(), Rejected::ConnectionCap);
        drop(p);
        drop(q);
        assert_eq!(a.open(), 0);
        // Four admissions spent four of the global burst of five (the per-IP
        // and cap rejections spent none): one more passes, then no more.
        drop(a.admit("127.0.0.3".parse().unwrap()).expect("fifth"));
        let r = a.admit("127.0.0.4".parse().unwrap());
        let e = r.expect_err("global budget spent");
        assert!(matches!(e, Rejected::GlobalRate { .. }));
        assert!(e.retry_after_secs() >= 1);
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let a = Admission::new(&config());
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.1.2.3".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let direct: SocketAddr = "198.51.100.9:5555".parse().unwrap();
        assert_eq!(
            a.client_ip(proxy, &h),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            a.client_ip(direct, &h),
            "198.51.100.9".parse::<IpAddr>().unwrap(),
            "spoofed header ignored"
        );
        let mut bad = http::HeaderMap::new();
        bad.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(
            a.client_ip(proxy, &bad),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
