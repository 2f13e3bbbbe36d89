//! Plain-HTTP connections and file descriptors (issue 12, item 1) and the
//! admin listener. Every test runs the edge as a child process, so that its
//! descriptors, RSS and CPU can be read from /proc, and keeps a bystander (a
//! WebSocket client on AAPL+MSFT with a steady feed) whose ticks must keep
//! flowing, contiguous, through the attack.

mod support;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::Value;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    task::JoinHandle,
    time::Instant,
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use tokio_util::sync::CancellationToken;

// ---- the edge as a child process --------------------------------------------

/// `tickfan edge` as a child process; killed when dropped.
struct Proc {
    child: tokio::process::Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Proc {
    /// Starts an edge with `extra` flags; `nofile` sets its (soft, hard)
    /// `RLIMIT_NOFILE` before it starts; `admin` gives it an admin listener.
    /// Waits until it is ready.
    async fn spawn(
        brokers: &str,
        topic: &str,
        extra: &[&str],
        nofile: Option<(u64, u64)>,
        admin: bool,
    ) -> Proc {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin =
            admin.then(|| -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() });
        let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("http-limits-edge-{}.log", addr.port()));
        // TICKFAN_BIN: another build of the binary (a release build, for
        // the figures in docs/security.md).
        let bin = std::env::var("TICKFAN_BIN").unwrap_or(env!("CARGO_BIN_EXE_tickfan").into());
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["edge", "--listen", &addr.to_string()])
            .args(["--brokers", brokers, "--topic", topic])
            .args(["--metadata-refresh", "500ms"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        if let Some(a) = admin {
            cmd.args(["--admin-listen", &a.to_string()]);
        }
        if let Some((soft, hard)) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
            }
        }
        let child = cmd.spawn().expect("spawn tickfan edge");
        let p = Proc {
            child,
            addr,
            admin,
            log,
        };
        eventually("edge process ready", || async {
            let (status, _) = get(addr, "/readyz", &[]).await.ok()?;
            (status == 200).then_some(())
        })
        .await;
        p
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("edge running")
    }

    fn usage(&self) -> Usage {
        Usage::of(self.pid())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One sample (exact series text) from /metrics on `addr`.
    async fn metric(&self, addr: SocketAddr, series: &str) -> f64 {
        let (status, body) = get(addr, "/metrics", &[]).await.expect("GET /metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("metric {series} missing"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// What the edge process uses, from /proc.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    cpu: Duration,
    fds: usize,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        Usage {
            rss_kib,
            cpu: Duration::from_millis(ticks * 1000 / hz),
            fds,
        }
    }
}

/// Samples an edge's usage every 50 ms until finished: the peaks.
struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<(u64, usize)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut rss, mut fds) = (0, 0);
            while !s.is_cancelled() {
                let u = Usage::of(pid);
                rss = rss.max(u.rss_kib);
                fds = fds.max(u.fds);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (rss, fds)
        });
        Sampler { stop, task }
    }

    /// (peak RSS in KiB, peak descriptors).
    async fn finish(self) -> (u64, usize) {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

// ---- HTTP over raw sockets ------------------------------------------------------

/// How long one request may take before the edge is deemed not answering.
/// Generous: only a hung edge takes this long (a debug build busy with an
/// attack on a loaded machine has taken over 10 s).
const ANSWER: Duration = Duration::from_secs(30);

/// `GET path` with `Connection: close` and extra headers: Ok((status, body)),
/// or Err if the edge does not answer within [`ANSWER`].
async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let (status, _, body) = get_full(addr, path, headers).await?;
    Ok((status, body))
}

/// [`get`] with the response head as well.
async fn get_full(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, String), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or(format!("no response: {text:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("no status")?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, head.to_string(), body))
    };
    tokio::time::timeout(ANSWER, exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within {ANSWER:?}"))?
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[(n + 2).min(rest.len())..];
    }
    out
}

/// Both probes answer 200, each within [`ANSWER`].
async fn probes_answer(addr: SocketAddr) {
    for path in ["/healthz", "/readyz"] {
        let (status, body) = get(addr, path, &[]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200, "{path}: {body}");
    }
}

/// Waits until the edge has closed `s` (EOF or reset), discarding what it
/// sent before.
async fn closed_by_edge(s: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let end = Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf))
            .await
            .expect("edge closes the connection")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// A WebSocket handshake: Ok(client), or Err((status, body)), or Err((0,
/// why)) when the edge does not answer within [`ANSWER`].
async fn ws_connect(addr: SocketAddr, token: Option<&str>) -> Result<Client, (u16, String)> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| (0, e.to_string()))?;
        match tokio_tungstenite::client_async(req, stream).await {
            Ok((ws, _)) => Ok(Client::from_ws(ws)),
            Err(tungstenite::Error::Http(r)) => {
                let body = r
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                Err((r.status().as_u16(), body))
            }
            Err(e) => Err((0, e.to_string())),
        }
    };
    tokio::time::timeout(ANSWER, attempt)
        .await
        .unwrap_or_else(|_| Err((0, "no answer".into())))
}

// ---- the bystander --------------------------------------------------------------

/// A WebSocket client on AAPL+MSFT, a feed of both every 20 ms, and a reader
/// that records each live tick's latency (its `ts` to its arrival).
struct Bystander {
    feed_stop: CancellationToken,
    feed: JoinHandle<(i64, i64)>,
    read_stop: CancellationToken,
    reader: JoinHandle<(Client, Vec<i64>)>,
    received: Arc<AtomicUsize>,
}

impl Bystander {
    async fn start(edge: SocketAddr, brokers: &str, topic: &str, token: Option<&str>) -> Bystander {
        let mut client = ws_connect(edge, token).await.expect("bystander connects");
        client.subscribe(&["AAPL", "MSFT"]).await;
        let feed_stop = CancellationToken::new();
        let feed = {
            let (brokers, topic, stop) =
                (brokers.to_string(), topic.to_string(), feed_stop.clone());
            tokio::spawn(async move {
                let mut feed = Feed::new(&brokers, &topic);
                let mut pace = tokio::time::interval(Duration::from_millis(20));
                let (mut a, mut m) = (0, 0);
                while !stop.is_cancelled() {
                    pace.tick().await;
                    a = feed.ticks("AAPL", 1).await;
                    m = feed.ticks("MSFT", 1).await;
                }
                feed.flush().await;
                (a, m)
            })
        };
        client
            .read_until("bystander's first ticks", |f| {
                ["AAPL", "MSFT"].iter().all(|s| {
                    f.iter()
                        .any(|x| matches!(x, Frame::Tick { symbol, .. } if symbol == s))
                })
            })
            .await;
        let read_stop = CancellationToken::new();
        let received = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (stop, received) = (read_stop.clone(), received.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = tokio::select! {
                        n = client.read() => n,
                        _ = stop.cancelled() => break,
                    };
                    let now = tickfan::feed::now_micros();
                    for f in &client.frames[client.frames.len() - n..] {
                        if let Frame::Tick {
                            snapshot: false,
                            raw,
                            ..
                        } = f
                        {
                            latencies.push(now - raw["ts"].as_i64().unwrap());
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (client, latencies)
            })
        };
        Bystander {
            feed_stop,
            feed,
            read_stop,
            reader,
            received,
        }
    }

    /// Waits until at least 10 more live ticks have arrived.
    async fn still_flowing(&self) {
        let from = self.received.load(Ordering::Relaxed);
        eventually("bystander keeps receiving", || async {
            (self.received.load(Ordering::Relaxed) >= from + 10).then_some(())
        })
        .await;
    }

    /// Stops the feed, reads every tick produced and checks that each
    /// arrived once, in order, with no gap. Returns the latencies (µs).
    async fn finish(self) -> Latency {
        self.feed_stop.cancel();
        let (a, m) = self.feed.await.unwrap();
        self.read_stop.cancel();
        let (mut client, latencies) = self.reader.await.unwrap();
        client
            .read_until("every tick the feed sent", |f| {
                [("AAPL", a), ("MSFT", m)].iter().all(|(s, last)| {
                    f.iter().any(
                        |x| matches!(x, Frame::Tick { symbol, seq, .. } if symbol == s && seq == last),
                    )
                })
            })
            .await;
        for (s, last) in [("AAPL", a), ("MSFT", m)] {
            assert!(client.gaps(s).is_empty(), "bystander got gaps for {s}");
            assert_eq!(assert_contiguous_or_announced(&client.frames, s), 0);
            let first = client.ticks(s)[0].0;
            assert_eq!(
                client.ticks(s).len() as i64,
                last - first + 1,
                "{s}: every tick, once"
            );
        }
        Latency::of(latencies)
    }
}

/// A bystander's live-tick latencies.
#[derive(Debug)]
struct Latency {
    ticks: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(mut us: Vec<i64>) -> Latency {
        us.sort_unstable();
        let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        assert!(!us.is_empty(), "bystander received no live tick");
        Latency {
            ticks: us.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// What the tests print for docs/security.md.
fn report(test: &str, before: Usage, peak: (u64, usize), after: Usage, latency: &Latency) {
    println!(
        "{test}: fds {} -> peak {} -> {}; RSS {} KiB -> peak {} KiB -> {} KiB; CPU {:?} during the test; bystander {} ticks, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        before.fds,
        peak.1,
        after.fds,
        before.rss_kib,
        peak.0,
        after.rss_kib,
        after.cpu - before.cpu,
        latency.ticks,
        latency.p50_ms,
        latency.p99_ms,
        latency.max_ms
    );
}

/// The bounds every test holds the edge to: RSS grows by less than
/// `rss_mib`, CPU over the test is under `cpu` (generous: the edge is a
/// debug build, on a shared machine), and the bystander's worst tick took
/// under 45 s (its ticks must keep coming: the tests also wait for them
/// during each attack).
fn within(
    before: Usage,
    peak_rss_kib: u64,
    after: Usage,
    rss_mib: u64,
    cpu: Duration,
    latency: &Latency,
) {
    assert!(
        peak_rss_kib.saturating_sub(before.rss_kib) < rss_mib * 1024,
        "RSS grew from {} KiB to {peak_rss_kib} KiB",
        before.rss_kib
    );
    assert!(
        after.cpu - before.cpu < cpu,
        "CPU {:?}",
        after.cpu - before.cpu
    );
    assert!(latency.max_ms < 45_000.0, "bystander stalled: {latency:?}");
}

async fn setup() -> (Broker, String) {
    let broker = Broker::start();
    let topic = broker.topic(2).await;
    (broker, topic)
}

// ---- the tests ------------------------------------------------------------------

/// Pipelined GETs of `/metrics` and `/symbols` that are never read: once its
/// writes block, each connection has `--http-write-timeout` to get its
/// answers out, then it is reset. The edge's descriptors come back, and
/// `/healthz` and new WebSocket handshakes are answered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_stop_reading_are_dropped_at_the_write_deadline() {
    const N: usize = 1000;
    let (broker, topic) = setup().await;
    let edge = Proc::spawn(
        &broker.bootstrap(),
        &topic,
        &["--http-write-timeout", "2s"],
        None,
        false,
    )
    .await;
    let bystander = Bystander::start(edge.addr, &broker.bootstrap(), &topic, None).await;
    let before = edge.usage();
    let sampler = Sampler::start(edge.pid());

    // N clients pipeline 200 pairs of GETs each and never read.
    let pipeline =
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /symbols HTTP/1.1\r\nHost: x\r\n\r\n"
            .repeat(200);
    let mut stalled = Vec::with_capacity(N);
    for _ in 0..N {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let s = socket.connect(edge.addr).await.unwrap();
        let mut sent = 0;
        while sent < pipeline.len() {
            match s.try_write(&pipeline[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        stalled.push(s);
    }
    // While they are held: probes, a new WebSocket client, the bystander.
    probes_answer(edge.addr).await;
    let mut newcomer = ws_connect(edge.addr, None)
        .await
        .expect("new WebSocket client");
    newcomer.subscribe(&["AAPL"]).await;
    newcomer
        .read_until("a tick for the newcomer", |f| {
            f.iter().any(|x| matches!(x, Frame::Tick { .. }))
        })
        .await;
    bystander.still_flowing().await;

    // The edge lets go of every stalled connection: its descriptors come
    // back while the clients still hold their ends, unread (reading would
    // unblock the edge), and each was reset.
    eventually("descriptors back", || async {
        (edge.usage().fds <= before.fds + 5).then_some(())
    })
    .await;
    for s in &mut stalled {
        closed_by_edge(s).await;
    }
    drop(stalled);
    let timeouts = edge
        .metric(edge.addr, "tickfan_http_write_timeouts_total")
        .await;
    assert!(timeouts >= (N as f64) * 0.9, "{timeouts} write timeouts");
    probes_answer(edge.addr).await;
    let peak = sampler.finish().await;
    let after = edge.usage();
    drop(newcomer);
    let latency = bystander.finish().await;
    report("stalled readers", before, peak, after, &latency);
    within(
        before,
        peak.0,
        after,
        100,
        Duration::from_secs(15),
        &latency,
    );
}

/// A keep-alive connection may sit idle between requests for at most
/// `--handshake-timeout` (hyper's header read timeout restarts when a
/// connection is ready for its next request), and one that never sends a
/// request is dropped after the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_handshake_timeout() {
    const N: usize = 300;
    let (broker, topic) = setup().await;
    let edge = Proc::spawn(
        &broker.bootstrap(),
        &topic,
        &["--handshake-timeout", "1s"],
        None,
        false,
    )
    .await;
    let bystander = Bystander::start(edge.addr, &broker.bootstrap(), &topic, None).await;
    let before = edge.usage();
    let sampler = Sampler::start(edge.pid());

    // N keep-alive clients each make one request, read the answer and stay.
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer_len = {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("ok\n"), "one whole answer: {text:?}");
        n
    };
    let mut idle = Vec::new();
    for i in 0..N {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = vec![0u8; answer_len];
        s.read_exact(&mut buf).await.unwrap();
        if i == 0 {
            // Kept alive: a second request on the connection, right after
            // the first answer (well within the idle limit even on a busy
            // machine, where opening the others may take longer), is
            // answered.
            s.write_all(request).await.unwrap();
            s.read_exact(&mut buf).await.unwrap();
        }
        idle.push((s, Instant::now()));
    }
    // And N that connect and say nothing.
    let mut silent = Vec::new();
    for _ in 0..N {
        silent.push((TcpStream::connect(edge.addr).await.unwrap(), Instant::now()));
    }
    bystander.still_flowing().await;

    // Then all are closed by the edge, none before the timeout.
    for (s, since) in idle.iter_mut().chain(silent.iter_mut()) {
        closed_by_edge(s).await;
        assert!(
            since.elapsed() >= Duration::from_millis(900),
            "closed early"
        );
    }
    drop((idle, silent));
    eventually("descriptors back", || async {
        (edge.usage().fds <= before.fds + 5).then_some(())
    })
    .await;
    probes_answer(edge.addr).await;
    let peak = sampler.finish().await;
    let after = edge.usage();
    let latency = bystander.finish().await;
    report("idle keep-alive", before, peak, after, &latency);
    within(
        before,
        peak.0,
        after,
        100,
        Duration::from_secs(10),
        &latency,
    );
}

/// Connections in the HTTP phase have a cap of their own: past
/// `--max-http-connections`, a canned 503 with `Retry-After`, except for
/// probes, which are still answered. Upgraded WebSocket sessions do not count
/// against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_have_their_own_cap_answered_503() {
    const CAP: usize = 100;
    let (broker, topic) = setup().await;
    let edge = Proc::spawn(
        &broker.bootstrap(),
        &topic,
        &[
            "--max-http-connections",
            &CAP.to_string(),
            "--handshake-timeout",
            "60s",
            // The sessions never read, so never answer a ping.
            "--ping-interval",
            "5m",
            "--idle-timeout",
            "10m",
            "--connect-rate-per-ip",
            "10000",
            "--connect-burst-per-ip",
            "10000",
            "--max-connections-per-ip",
            "10000",
        ],
        None,
        false,
    )
    .await;
    let bystander = Bystander::start(edge.addr, &broker.bootstrap(), &topic, None).await;
    // More WebSocket sessions than the cap: once upgraded they leave it.
    let mut sessions = Vec::new();
    for _ in 0..CAP + 50 {
        sessions.push(ws_connect(edge.addr, None).await.expect("session"));
    }
    assert_eq!(get(edge.addr, "/symbols", &[]).await.unwrap().0, 200);
    let before = edge.usage();
    let sampler = Sampler::start(edge.pid());

    // CAP connections that hold the HTTP phase, saying nothing.
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(edge.addr).await.unwrap());
    }
    // One more: refused (once the edge has taken them all), cheaply and
    // politely.
    let (status, head, body) = eventually("a request over the cap refused", || async {
        get_full(edge.addr, "/symbols", &[])
            .await
            .ok()
            .filter(|r| r.0 != 200)
    })
    .await;
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "too many HTTP connections; retry later");
    // A WebSocket handshake is HTTP too until upgraded: refused alike.
    assert_eq!(
        ws_connect(edge.addr, None).await.err().map(|e| e.0),
        Some(503)
    );
    // Probes are still answered; sessions and the bystander are unaffected.
    probes_answer(edge.addr).await;
    bystander.still_flowing().await;
    for c in &mut sessions[..3] {
        c.subscribe(&["MSFT"]).await;
    }

    // Slots free again once the held connections go.
    drop(held);
    eventually("a request is served again", || async {
        (get(edge.addr, "/symbols", &[]).await.ok()?.0 == 200).then_some(())
    })
    .await;
    ws_connect(edge.addr, None)
        .await
        .expect("handshake after the cap");
    let refused = edge
        .metric(
            edge.addr,
            "tickfan_http_rejections_total{reason=\"http_cap\"}",
        )
        .await;
    assert!(refused >= 2.0, "{refused}");
    // Every session still open (and the bystander), the probe session gone.
    eventually("sessions counted", || async {
        let open = edge.metric(edge.addr, "tickfan_connections").await;
        (open == (CAP + 50 + 1) as f64).then_some(())
    })
    .await;
    let peak = sampler.finish().await;
    let after = edge.usage();
    drop(sessions);
    let latency = bystander.finish().await;
    report("http cap", before, peak, after, &latency);
    within(before, peak.0, after, 50, Duration::from_secs(10), &latency);
}

/// At start the edge raises its soft `RLIMIT_NOFILE` to the hard limit, logs
/// what it got, and warns when that is less than its settings may hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_descriptor_limit_is_raised_to_the_hard_limit_at_start() {
    const N: usize = 1000;
    let (broker, topic) = setup().await;
    let edge = Proc::spawn(
        &broker.bootstrap(),
        &topic,
        &[
            "--connect-rate-per-ip",
            "10000",
            "--connect-burst-per-ip",
            "10000",
            "--max-connections-per-ip",
            "10000",
        ],
        Some((256, 4096)),
        false,
    )
    .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", edge.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(&open_files[3..5], ["4096", "4096"], "{limits}");
    let log = edge.log();
    assert!(
        log.contains("file descriptor limit")
            && log.contains("soft=4096")
            && log.contains("hard=4096"),
        "{log}"
    );
    assert!(log.contains("file descriptor limit below"), "{log}");

    // The raised limit is usable: more sessions than the old soft limit.
    let bystander = Bystander::start(edge.addr, &broker.bootstrap(), &topic, None).await;
    let before = edge.usage();
    let sampler = Sampler::start(edge.pid());
    let mut sessions = Vec::new();
    for i in 0..N {
        match ws_connect(edge.addr, None).await {
            Ok(c) => sessions.push(c),
            Err(e) => panic!("session {i}: {e:?}"),
        }
    }
    probes_answer(edge.addr).await;
    bystander.still_flowing().await;
    let peak = sampler.finish().await;
    let after = edge.usage();
    assert!(after.fds > 256 + N / 2, "{after:?}");
    drop(sessions);
    let latency = bystander.finish().await;
    report("raised limit", before, peak, after, &latency);
    within(
        before,
        peak.0,
        after,
        100,
        Duration::from_secs(10),
        &latency,
    );
}

/// With every descriptor but the reserve in use (a hard limit of 300, more
/// sessions allowed than that), `/healthz` and `/readyz` still answer;
/// anything else on the reserve gets a 503; accept errors never stop the
/// accept loop, and once descriptors are free again everything is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_reserve_keeps_probes_answering_when_the_rest_are_used() {
    const LIMIT: u64 = 300;
    let (broker, topic) = setup().await;
    let edge = Proc::spawn(
        &broker.bootstrap(),
        &topic,
        &[
            "--max-connections",
            "10000",
            "--fd-reserve",
            "40",
            "--connect-rate-per-ip",
            "10000",
            "--connect-burst-per-ip",
            "10000",
            "--max-connections-per-ip",
            "10000",
            "--handshake-timeout",
            "60s",
        ],
        Some((LIMIT, LIMIT)),
        false,
    )
    .await;
    assert!(edge.log().contains("soft=300"), "{}", edge.log());
    let bystander = Bystander::start(edge.addr, &broker.bootstrap(), &topic, None).await;
    let before = edge.usage();
    let sampler = Sampler::start(edge.pid());

    // Sessions until the edge says it is out of descriptors.
    let mut sessions = Vec::new();
    let refusal = loop {
        match ws_connect(edge.addr, None).await {
            Ok(c) => sessions.push(c),
            Err(e) => break e,
        }
        assert!(
            sessions.len() < LIMIT as usize,
            "more sessions than descriptors"
        );
    };
    assert_eq!(refusal.0, 503, "{refusal:?}");
    assert!(refusal.1.contains("out of file descriptors"), "{refusal:?}");
    assert!(sessions.len() >= 200, "only {} sessions", sessions.len());
    // All but the reserve in use: probes answer, other requests get a 503.
    for _ in 0..10 {
        probes_answer(edge.addr).await;
    }
    // The edge's own descriptors come and go (librdkafka drops its
    // bootstrap connections once it knows the cluster), so a lower one may
    // be free again by now: a 200 is right only if a session then fits
    // below the reserve, and after refilling, the request must get its 503.
    let mut refills = 0;
    loop {
        let (status, body) = get(edge.addr, "/symbols", &[]).await.unwrap();
        if status == 503 {
            break;
        }
        assert!(
            refills < 5,
            "/symbols answered {status} {refills} times: {body}"
        );
        refills += 1;
        let fits = ws_connect(edge.addr, None).await;
        assert!(
            fits.is_ok(),
            "/symbols served on the reserve ({status}: {body}); no session fits below it"
        );
        sessions.extend(fits.ok());
        loop {
            match ws_connect(edge.addr, None).await {
                Ok(c) => sessions.push(c),
                Err(e) => {
                    assert_eq!(e.0, 503, "{e:?}");
                    break;
                }
            }
        }
    }

    // Exhaust the rest: silent connections fill the reserve (each for about
    // a second) and the backlog; accept fails with EMFILE. Probes still get
    // through, if not at once.
    let mut silent = Vec::new();
    for _ in 0..150 {
        silent.push(TcpStream::connect(edge.addr).await.unwrap());
    }
    let probe = Instant::now();
    eventually("healthz answers with the descriptors exhausted", || async {
        (get(edge.addr, "/healthz", &[]).await.ok()?.0 == 200).then_some(())
    })
    .await;
    let probe_took = probe.elapsed();
    bystander.still_flowing().await;
    eventually("EMFILE logged", || async {
        edge.log().contains("accept failed").then_some(())
    })
    .await;

    // Descriptors back: served in full again.
    let held = sessions.len();
    drop(silent);
    drop(sessions);
    eventually("sessions again", || async {
        ws_connect(edge.addr, None).await.ok()
    })
    .await;
    assert_eq!(get(edge.addr, "/symbols", &[]).await.unwrap().0, 200);
    let peak = sampler.finish().await;
    let after = edge.usage();
    assert!(peak.1 <= LIMIT as usize);
    let latency = bystander.finish().await;
    println!(
        "reserve: {held} sessions before the first 503; a probe behind 150 silent connections took {probe_took:?}"
    );
    report("descriptor reserve", before, peak, after, &latency);
    within(before, peak.0, after, 50, Duration::from_secs(10), &latency);
}

/// `--admin-listen` serves the operators' routes, which leave the public
/// port; with auth on, the public `/symbols` wants a token and lists only
/// what it entitles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_operators_and_public_symbols_follow_entitlements() {
    let (broker, topic) = setup().await;
    let edge = Proc::spawn(
        &broker.bootstrap(),
        &topic,
        &["--jwt-secret", JWT_SECRET],
        None,
        true,
    )
    .await;
    let admin = edge.admin.unwrap();
    let all = jwt(&["*"]);
    let bystander = Bystander::start(edge.addr, &broker.bootstrap(), &topic, Some(&all)).await;
    let before = edge.usage();
    let sampler = Sampler::start(edge.pid());

    // The public port: probes, no operators' routes.
    probes_answer(edge.addr).await;
    for path in ["/metrics", "/partitions"] {
        assert_eq!(
            get(edge.addr, path, &[]).await.unwrap().0,
            404,
            "public {path}"
        );
    }
    // /symbols: a token is required, and it sees what it is entitled to.
    let (status, head, body) = get_full(edge.addr, "/symbols", &[]).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(body, r#"{"error":"missing token"}"#);
    let (status, body) = get(
        edge.addr,
        "/symbols",
        &[("Authorization", "Bearer not.a.jwt")],
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"invalid token"}"#)
    );
    let aapl = jwt(&["AAPL"]);
    let bearer = format!("Bearer {aapl}");
    let (status, body) = get(edge.addr, "/symbols", &[("Authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"["AAPL"]"#));
    let (status, body) = get(edge.addr, &format!("/symbols?token={aapl}"), &[])
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"["AAPL"]"#));
    let (status, body) = get(
        edge.addr,
        "/symbols",
        &[("Authorization", &format!("Bearer {all}"))],
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"["AAPL","MSFT"]"#));

    // The admin port: the operators' routes, all symbols, no WebSocket.
    probes_answer(admin).await;
    assert_eq!(
        get(admin, "/symbols", &[]).await.unwrap(),
        (200, r#"["AAPL","MSFT"]"#.into())
    );
    let (status, body) = get(admin, "/partitions", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(!serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    assert!(
        edge.metric(admin, "tickfan_auth_failures_total{reason=\"missing\"}")
            .await
            >= 1.0
    );
    assert!(edge.metric(admin, "tickfan_connections").await >= 1.0);
    assert_eq!(get(admin, "/ws", &[]).await.unwrap().0, 404);
    assert_eq!(get(admin, "/client.js", &[]).await.unwrap().0, 404);
    bystander.still_flowing().await;

    let peak = sampler.finish().await;
    let after = edge.usage();
    let latency = bystander.finish().await;
    report("admin listener", before, peak, after, &latency);
    within(before, peak.0, after, 50, Duration::from_secs(10), &latency);
}
