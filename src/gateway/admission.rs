//! The front door's admission control, checked before any WebSocket upgrade
//! and cheaply (no allocation on the reject path). In order:
//!
//! 1. [`Admission::screen`], before the token is looked at: an address whose
//!    failed authentications overspent their own budget is turned away without
//!    verifying anything (429 + `Retry-After`), then a GCRA rate limit on new
//!    connections per client IP (429).
//! 2. The token, when auth is on (the server; a failure is reported with
//!    [`Admission::auth_failed`]).
//! 3. [`Admission::admit`]: a cap on concurrent connections (503), a cap on
//!    concurrent connections per client IP (429), and the global GCRA rate
//!    limit on upgrades (429).
//!
//! Per-IP checks come first so one noisy address cannot spend what others
//! need, and a refused token never reaches the global budget: a flood of
//! forged tokens cannot lock valid clients out. Behind a proxy, the client IP
//! is taken from `X-Forwarded-For` only when the TCP peer is a configured
//! trusted proxy.
//!
//! It never verifies a token and never touches a connection: it decides from
//! addresses, counts and clocks, and the server sends the answer.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
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

    /// Most concurrent WebSocket connections from one client IP; more get
    /// 429. Raise it when many users share an address (an office NAT).
    #[arg(long, env = "TICKFAN_MAX_CONNECTIONS_PER_IP", default_value_t = 500)]
    pub max_connections_per_ip: usize,

    /// Failed authentications per second one client IP may make (GCRA);
    /// beyond it and its burst, its handshakes get 429 without their token
    /// being verified.
    #[arg(long, env = "TICKFAN_AUTH_FAILURE_RATE_PER_IP", default_value_t = 1)]
    pub auth_failure_rate_per_ip: u32,

    /// Failed authentications one client IP may make at once above that rate.
    #[arg(long, env = "TICKFAN_AUTH_FAILURE_BURST_PER_IP", default_value_t = 10)]
    pub auth_failure_burst_per_ip: u32,

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
        anyhow::ensure!(
            self.max_connections_per_ip >= 1,
            "--max-connections-per-ip must be >= 1"
        );
        anyhow::ensure!(
            self.auth_failure_rate_per_ip >= 1 && self.auth_failure_burst_per_ip >= 1,
            "--auth-failure-rate-per-ip/--auth-failure-burst-per-ip must be >= 1"
        );
        Ok(())
    }
}

/// Why a connection was turned away. Each variant is a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    ConnectionCap,
    /// The client IP holds `--max-connections-per-ip` connections.
    IpConnectionCap,
    IpRate {
        retry_after: Duration,
    },
    /// The client IP spent its failed-authentication budget.
    AuthFailures {
        retry_after: Duration,
    },
    GlobalRate {
        retry_after: Duration,
    },
}

impl Rejected {
    pub fn label(self) -> &'static str {
        match self {
            Rejected::ConnectionCap => "connection_cap",
            Rejected::IpConnectionCap => "ip_connection_cap",
            Rejected::IpRate { .. } => "ip_rate",
            Rejected::AuthFailures { .. } => "auth_failures",
            Rejected::GlobalRate { .. } => "global_rate",
        }
    }

    /// Seconds for `Retry-After` (whole seconds, at least 1).
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Rejected::ConnectionCap | Rejected::IpConnectionCap => 1,
            Rejected::IpRate { retry_after }
            | Rejected::AuthFailures { retry_after }
            | Rejected::GlobalRate { retry_after } => {
                retry_after.as_secs_f64().ceil().max(1.0) as u64
            }
        }
    }

    /// The error text the client gets.
    pub fn message(self) -> &'static str {
        match self {
            Rejected::ConnectionCap => "edge at its connection limit",
            Rejected::IpConnectionCap => "too many connections from your address",
            Rejected::AuthFailures { .. } => "too many failed authentications; retry later",
            Rejected::IpRate { .. } | Rejected::GlobalRate { .. } => {
                "too many new connections; retry later"
            }
        }
    }
}

/// Admission state shared by all handshakes.
pub struct Admission {
    global: DefaultDirectRateLimiter,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Failed authentications per IP.
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses whose failure budget is spent, until it has a cell again.
    /// governor cannot look at a budget without spending it, so the first
    /// refused cell is remembered here: screening reads this map, and only a
    /// failure spends.
    auth_blocked: Mutex<HashMap<IpAddr, Instant>>,
    open: Arc<AtomicUsize>,
    max_connections: usize,
    /// Open connections per client IP (entries removed at zero).
    per_ip_open: OpenPerIp,
    max_per_ip: usize,
    trusted: Vec<IpNet>,
}

/// Open connections per client IP.
type OpenPerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A connection slot (edge-wide and for its client IP); released when
/// dropped.
#[derive(Debug)]
pub struct Permit {
    open: Arc<AtomicUsize>,
    ip: Option<(IpAddr, OpenPerIp)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some((ip, map)) = self.ip.take() {
            let mut m = map.lock().unwrap();
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
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
            auth_failures: RateLimiter::keyed(quota(
                c.auth_failure_rate_per_ip,
                c.auth_failure_burst_per_ip,
            )),
            auth_blocked: Mutex::default(),
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: c.max_connections,
            per_ip_open: Arc::default(),
            max_per_ip: c.max_connections_per_ip,
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

    /// The checks made before a token is looked at: an address whose failed
    /// authentications overspent is refused outright (its token is not
    /// verified), then the per-IP connection rate is charged.
    pub fn screen(&self, ip: IpAddr) -> Result<(), Rejected> {
        let now = Instant::now();
        if let Some(&until) = self.auth_blocked.lock().unwrap().get(&ip) {
            if until > now {
                return Err(Rejected::AuthFailures {
                    retry_after: until - now,
                });
            }
        }
        let clock = DefaultClock::default().now();
        if let Err(nu) = self.per_ip.check_key(&ip) {
            return Err(Rejected::IpRate {
                retry_after: nu.wait_time_from(clock),
            });
        }
        Ok(())
    }

    /// Charges a failed authentication to `ip`'s failure budget.
    pub fn auth_failed(&self, ip: IpAddr) {
        let clock = DefaultClock::default();
        if let Err(nu) = self.auth_failures.check_key(&ip) {
            let wait = nu.wait_time_from(clock.now());
            self.auth_blocked
                .lock()
                .unwrap()
                .insert(ip, Instant::now() + wait);
        }
    }

    /// Admits a connection from `ip` (already [screened](Admission::screen)
    /// and authenticated): edge-wide cap, per-IP cap, then the global rate.
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Rejected> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejected::ConnectionCap);
        }
        let mut permit = Permit {
            open: self.open.clone(),
            ip: None,
        };
        {
            let mut m = self.per_ip_open.lock().unwrap();
            let n = m.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(Rejected::IpConnectionCap);
            }
            *n += 1;
        }
        permit.ip = Some((ip, self.per_ip_open.clone()));
        let now = DefaultClock::default().now();
        if let Err(nu) = self.global.check() {
            return Err(Rejected::GlobalRate {
                retry_after: nu.wait_time_from(now),
            });
        }
        Ok(permit)
    }

    /// [`Admission::screen`] then [`Admission::admit`], for callers without
    /// authentication in between.
    pub fn screen_and_admit(&self, ip: IpAddr) -> Result<Permit, Rejected> {
        self.screen(ip)?;
        self.admit(ip)
    }

    /// Open connections from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.per_ip_open
            .lock()
            .unwrap()
            .get(&ip)
            .copied()
            .unwrap_or(0)
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
        self.auth_failures.retain_recent();
        self.auth_failures.shrink_to_fit();
        let now = Instant::now();
        let mut blocked = self.auth_blocked.lock().unwrap();
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
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
            max_connections_per_ip: 100,
            auth_failure_rate_per_ip: 1,
            auth_failure_burst_per_ip: 2,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        }
    }

    #[test]
    fn per_ip_then_global_then_cap() {
        let a = Admission::new(&config());
        let ip1: IpAddr = "127.0.0.1".parse().unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let p: Vec<_> = (0..3).map(|_| a.screen_and_admit(ip1).unwrap()).collect();
        assert!(
            matches!(a.screen_and_admit(ip1), Err(Rejected::IpRate { .. })),
            "4th from one IP"
        );
        let q = a.screen_and_admit(ip2).unwrap();
        assert_eq!(a.open(), 4);
        assert_eq!(
            a.screen_and_admit(ip2).unwrap_err(),
            Rejected::ConnectionCap
        );
        drop(p);
        drop(q);
        assert_eq!(a.open(), 0);
        assert_eq!(a.open_from(ip1), 0, "per-IP slots released");
        // Four admissions spent four of the global burst of five (the per-IP
        // and cap rejections spent none): one more passes, then no more.
        drop(
            a.screen_and_admit("127.0.0.3".parse().unwrap())
                .expect("fifth"),
        );
        let r = a.screen_and_admit("127.0.0.4".parse().unwrap());
        let e = r.expect_err("global budget spent");
        assert!(matches!(e, Rejected::GlobalRate { .. }));
        assert!(e.retry_after_secs() >= 1);
    }

    #[test]
    fn per_ip_connection_cap_holds_and_frees_slots() {
        let c = Config {
            connect_burst: 100,
            connect_burst_per_ip: 100,
            max_connections: 100,
            max_connections_per_ip: 2,
            ..config()
        };
        let a = Admission::new(&c);
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        let first = a.admit(ip1).unwrap();
        let _second = a.admit(ip1).unwrap();
        assert_eq!(a.admit(ip1).unwrap_err(), Rejected::IpConnectionCap);
        assert_eq!(a.open(), 2, "a refused connection holds no slot");
        let _other = a.admit(ip2).expect("another address is not affected");
        drop(first);
        let _again = a.admit(ip1).expect("a freed slot is reusable");
        assert_eq!(a.open_from(ip1), 2);
    }

    #[test]
    fn failed_authentications_block_only_their_address_and_never_the_global_budget() {
        let c = Config {
            connect_rate: 1,
            connect_burst: 3,
            connect_burst_per_ip: 1000,
            connect_rate_per_ip: 1000,
            max_connections: 100,
            ..config()
        };
        let a = Admission::new(&c);
        let bad: IpAddr = "198.51.100.1".parse().unwrap();
        // Burst of two failures, then the address is refused before its
        // token is looked at.
        for _ in 0..2 {
            a.screen(bad).unwrap();
            a.auth_failed(bad);
        }
        a.screen(bad).unwrap();
        a.auth_failed(bad); // third failure: over the burst
        let e = a.screen(bad).unwrap_err();
        assert!(matches!(e, Rejected::AuthFailures { .. }), "{e:?}");
        assert!(e.retry_after_secs() >= 1);
        // None of that spent the global budget: three valid clients get in.
        let good: IpAddr = "198.51.100.2".parse().unwrap();
        let permits: Vec<_> = (0..3)
            .map(|_| a.screen_and_admit(good).expect("valid client"))
            .collect();
        assert_eq!(permits.len(), 3);
        assert!(matches!(
            a.screen_and_admit(good),
            Err(Rejected::GlobalRate { .. })
        ));
        a.housekeeping();
        assert!(a.screen(bad).is_err(), "still blocked after housekeeping");
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
