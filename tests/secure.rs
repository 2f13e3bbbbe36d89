//! Secured Kafka (issue 13): the edge and `tickfan produce` over the SSL,
//! mutual-TLS and SASL_SSL (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN,
//! OAUTHBEARER/OIDC) listeners of the broker `scripts/kafka.sh` starts, with
//! the CA and certificates it generates (`$TICKFAN_KAFKA_HOME/secure.env`
//! says where); records written by Debian's `kcat` in every codec; and the
//! failures a misconfigured edge meets (a wrong password, an untrusted CA,
//! an expired certificate). librdkafka's mock cluster has no TLS, so these
//! run only against real Kafka: `test = false` in Cargo.toml keeps them out
//! of a plain `cargo test`; `.ci/run` runs them with
//! `TICKFAN_TEST_BROKERS=... cargo test --test secure --test real_kafka`.

mod support;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What `scripts/kafka.sh up` wrote to `secure.env`.
struct Secure(HashMap<String, String>);

impl Secure {
    fn load() -> Secure {
        let home = std::env::var("TICKFAN_KAFKA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/kafka"))
            });
        let path = home.join("secure.env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/kafka.sh up)", path.display()));
        Secure(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    fn get(&self, k: &str) -> String {
        self.0
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing from secure.env"))
            .clone()
    }

    /// A file holding `content`, for the *-file flags.
    fn secret_file(name: &str, content: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("secret-{name}-{}", rand::random::<u32>()));
        std::fs::write(&p, format!("{content}\n")).unwrap();
        p.to_string_lossy().into_owned()
    }
}

/// A minimal OIDC token endpoint (client-credentials grant): every POST
/// gets a fresh RS256 access token signed with the key whose JWKS the
/// broker trusts. Counts the tokens it issued.
struct TokenEndpoint {
    url: String,
    issued: Arc<AtomicUsize>,
}

impl TokenEndpoint {
    async fn start(s: &Secure) -> TokenEndpoint {
        let key = std::fs::read(s.get("TICKFAN_TEST_OAUTH_KEY")).unwrap();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key).expect("oauth key");
        let (kid, iss, aud) = (
            s.get("TICKFAN_TEST_OAUTH_KID"),
            s.get("TICKFAN_TEST_OAUTH_ISSUER"),
            s.get("TICKFAN_TEST_OAUTH_AUDIENCE"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(AtomicUsize::new(0));
        let count = issued.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (key, kid, iss, aud, count) = (
                    key.clone(),
                    kid.clone(),
                    iss.clone(),
                    aud.clone(),
                    count.clone(),
                );
                tokio::spawn(async move {
                    // The request: headers, then a small form body.
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    loop {
                        let got = conn.read(&mut buf[n..]).await.unwrap_or(0);
                        if got == 0 {
                            break;
                        }
                        n += got;
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if n >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let now = jsonwebtoken::get_current_timestamp();
                    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                    header.kid = Some(kid);
                    let claims = serde_json::json!({
                        "iss": iss, "aud": aud, "sub": "tickfan-edge",
                        "iat": now, "exp": now + 300, "scope": "kafka",
                    });
                    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    let body = serde_json::json!({
                        "access_token": token, "token_type": "Bearer", "expires_in": 300,
                    })
                    .to_string();
                    let _ = conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        TokenEndpoint { url, issued }
    }
}

/// One way in: the listener and the flags (the same for `edge` and
/// `produce`).
struct Way {
    name: &'static str,
    brokers: String,
    flags: Vec<String>,
}

fn ways(s: &Secure, oidc: &TokenEndpoint) -> Vec<Way> {
    let ca = s.get("TICKFAN_TEST_CA");
    let password = Secure::secret_file("sasl", &s.get("TICKFAN_TEST_SASL_PASSWORD"));
    let client_secret = Secure::secret_file("oidc", "any-client-secret");
    let sasl = |mechanism: &str| -> Vec<String> {
        [
            "--kafka-ca",
            &ca,
            "--kafka-sasl-mechanism",
            mechanism,
            "--kafka-sasl-username",
            &s.get("TICKFAN_TEST_SASL_USER"),
            "--kafka-sasl-password-file",
            &password,
        ]
        .map(String::from)
        .to_vec()
    };
    vec![
        Way {
            name: "SSL",
            brokers: s.get("TICKFAN_TEST_SSL_BROKERS"),
            flags: vec!["--kafka-ca".into(), ca.clone()],
        },
        Way {
            name: "mutual TLS",
            brokers: s.get("TICKFAN_TEST_MTLS_BROKERS"),
            flags: [
                "--kafka-ca",
                &ca,
                "--kafka-cert",
                &s.get("TICKFAN_TEST_CLIENT_CERT"),
                "--kafka-key",
                &s.get("TICKFAN_TEST_CLIENT_KEY"),
            ]
            .map(String::from)
            .to_vec(),
        },
        Way {
            name: "SASL_SSL SCRAM-SHA-256",
            brokers: s.get("TICKFAN_TEST_SASL_SSL_BROKERS"),
            flags: sasl("SCRAM-SHA-256"),
        },
        Way {
            name: "SASL_SSL SCRAM-SHA-512",
            brokers: s.get("TICKFAN_TEST_SASL_SSL_BROKERS"),
            flags: sasl("SCRAM-SHA-512"),
        },
        Way {
            name: "SASL_SSL PLAIN",
            brokers: s.get("TICKFAN_TEST_SASL_SSL_BROKERS"),
            flags: sasl("PLAIN"),
        },
        Way {
            name: "SASL_SSL OAUTHBEARER (OIDC)",
            brokers: s.get("TICKFAN_TEST_SASL_SSL_BROKERS"),
            flags: [
                "--kafka-ca",
                &ca,
                "--kafka-sasl-mechanism",
                "OAUTHBEARER",
                "--kafka-oauth-token-endpoint",
                &oidc.url,
                "--kafka-oauth-client-id",
                "tickfan-edge",
                "--kafka-oauth-client-secret-file",
                &client_secret,
            ]
            .map(String::from)
            .to_vec(),
        },
    ]
}

/// `tickfan produce` as a child process; returns how many ticks it
/// delivered (all it sent, with no error: checked).
async fn produce(brokers: &str, topic: &str, flags: &[String], extra: &[&str]) -> u64 {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickfan"))
        .args(["produce", "--brokers", brokers, "--topic", topic])
        .args(flags)
        .args(extra)
        .output()
        .await
        .expect("run tickfan produce");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tickfan produce failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "produce: done, sent N, delivered D, errors E"
    let done = stdout
        .lines()
        .find_map(|l| l.strip_prefix("produce: done, sent "))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let nums: Vec<u64> = done
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 3, "{done}");
    assert!(nums[0] > 0 && nums[0] == nums[1] && nums[2] == 0, "{done}");
    nums[0]
}

/// Reads until `c` holds every tick 1..=last of each of `symbols`, `total`
/// in all, none announced missing.
async fn read_all(c: &mut Client, what: &str, symbols: &[&str], total: u64) {
    let count = |frames: &[Frame]| {
        frames
            .iter()
            .filter(
                |f| matches!(f, Frame::Tick { symbol, .. } if symbols.contains(&symbol.as_str())),
            )
            .count() as u64
    };
    let end = tokio::time::Instant::now() + DEADLINE;
    while count(&c.frames) < total {
        if tokio::time::Instant::now() >= end {
            let summary: Vec<String> = symbols
                .iter()
                .map(|s| {
                    let t = c.ticks(s);
                    format!(
                        "{s}: {} ticks, first {:?}, last {:?}",
                        t.len(),
                        t.first(),
                        t.last()
                    )
                })
                .collect();
            panic!("{what}: {} of {total} ticks: {summary:?}", count(&c.frames));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), c.read()).await;
    }
    let mut sum = 0;
    for sym in symbols {
        assert!(c.gaps(sym).is_empty(), "{what}: {sym} gaps");
        let seqs: Vec<i64> = c.ticks(sym).iter().map(|t| t.0).collect();
        if let Some(&last) = seqs.last() {
            assert_eq!(
                seqs,
                (1..=last).collect::<Vec<_>>(),
                "{what}: {sym} every tick, once, in order"
            );
        }
        sum += seqs.len() as u64;
    }
    assert_eq!(sum, total, "{what}: all that was produced, nothing else");
}

/// Waits until the edge at `addr` reads the partitions of `symbols` live
/// (assigned, rewind done), so every tick produced after this goes out live.
async fn live(addr: std::net::SocketAddr, symbols: &[&str], partitions: i32) {
    let mut want: Vec<i64> = symbols
        .iter()
        .map(|s| tickfan::partition::partition_for(s.as_bytes(), partitions) as i64)
        .collect();
    want.sort();
    want.dedup();
    eventually("the symbols' partitions assigned and live", || {
        let want = want.clone();
        async move {
            let (status, body) = http_get(addr, "/partitions").await;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let mut live: Vec<i64> = v
                .as_array()?
                .iter()
                .filter(|p| p["warming"] == false)
                .filter_map(|p| p["partition"].as_i64())
                .collect();
            live.sort();
            (status == 200 && live == want).then_some(())
        }
    })
    .await;
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_produce_work_over_every_listener_and_mechanism() {
    let broker = Broker::real();
    let s = Secure::load();
    let oidc = TokenEndpoint::start(&s).await;
    for way in ways(&s, &oidc) {
        let topic = broker.topic(2).await;
        let edge = EdgeProcess::spawn(&way.brokers, &topic, &refs(&way.flags)).await;
        let mut c = Client::connect(edge.addr).await;
        c.subscribe(&["AAPL", "MSFT"]).await;
        live(edge.addr, &["AAPL", "MSFT"], 2).await;
        let sent = produce(
            &way.brokers,
            &topic,
            &way.flags,
            &[
                "--symbols",
                "AAPL,MSFT",
                "--rate",
                "200",
                "--duration",
                "1s",
            ],
        )
        .await;
        read_all(&mut c, way.name, &["AAPL", "MSFT"], sent).await;
        eprintln!(
            "{}: edge and produce connected; {sent} ticks produced and delivered",
            way.name
        );
    }
    assert!(
        oidc.issued.load(Ordering::Relaxed) >= 2,
        "the edge and the producer each fetched an OIDC token"
    );
}

/// The SCRAM-SHA-512 way in (for the tests that need just one).
fn scram(s: &Secure) -> (String, Vec<String>) {
    let password = Secure::secret_file("scram", &s.get("TICKFAN_TEST_SASL_PASSWORD"));
    (
        s.get("TICKFAN_TEST_SASL_SSL_BROKERS"),
        [
            "--kafka-ca",
            &s.get("TICKFAN_TEST_CA"),
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            &s.get("TICKFAN_TEST_SASL_USER"),
            "--kafka-sasl-password-file",
            &password,
        ]
        .map(String::from)
        .to_vec(),
    )
}

const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];

/// Writes `n` ticks of `symbol` with Debian's `kcat` (librdkafka 2.0 of its
/// own), compressed with `codec`, over SASL_SSL, keyed by symbol with the
/// Java partitioner, as a feed handler of another team would. PLAIN: that
/// librdkafka's SCRAM is refused by Kafka 4 (librdkafka#4895, fixed in 2.6.1,
/// which the edge's own build is past) and it has no OIDC.
async fn kcat(s: &Secure, topic: &str, symbol: &str, n: i64, codec: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kcat-{symbol}-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let codec_enc = tickfan::codec::avro::TickCodec::new(usize::MAX);
    let mut files = Vec::new();
    for seq in 1..=n {
        let f = dir.join(format!("{seq:04}.avro"));
        std::fs::write(&f, codec_enc.encode(&tick(symbol, seq))).unwrap();
        files.push(f);
    }
    let x = |k: &str, v: &str| ["-X".to_string(), format!("{k}={v}")];
    let mut args: Vec<String> = vec![
        "-P".into(),
        "-b".into(),
        s.get("TICKFAN_TEST_SASL_SSL_BROKERS"),
        "-t".into(),
        topic.into(),
        "-k".into(),
        symbol.into(),
        "-z".into(),
        codec.into(),
    ];
    for (k, v) in [
        ("security.protocol", "SASL_SSL".to_string()),
        ("sasl.mechanisms", "PLAIN".to_string()),
        ("sasl.username", s.get("TICKFAN_TEST_SASL_USER")),
        ("sasl.password", s.get("TICKFAN_TEST_SASL_PASSWORD")),
        ("ssl.ca.location", s.get("TICKFAN_TEST_CA")),
        ("partitioner", "murmur2_random".to_string()),
        ("enable.idempotence", "true".to_string()),
    ] {
        args.extend(x(k, &v));
    }
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let out = tokio::process::Command::new("kcat")
        .args(&args)
        .output()
        .await
        .expect("kcat (Debian package kcat; .ci/run installs it)");
    assert!(
        out.status.success(),
        "kcat -z {codec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_every_codec_from_kcat_and_produce_reach_websocket_clients() {
    let broker = Broker::real();
    let s = Secure::load();
    let (brokers, flags) = scram(&s);
    let topic = broker.topic(4).await;
    let edge = EdgeProcess::spawn(&brokers, &topic, &refs(&flags)).await;
    let kcat_syms: Vec<String> = CODECS
        .iter()
        .map(|c| format!("K{}", c.to_uppercase()))
        .collect();
    let produce_syms: Vec<String> = CODECS
        .iter()
        .map(|c| format!("P{}", c.to_uppercase()))
        .collect();
    let all: Vec<&str> = kcat_syms
        .iter()
        .chain(&produce_syms)
        .map(String::as_str)
        .collect();
    let mut c = Client::connect(edge.addr).await;
    c.subscribe(&all).await;
    live(edge.addr, &all, 4).await;
    const KCAT_TICKS: i64 = 20;
    let mut total = 0;
    for (i, codec) in CODECS.iter().enumerate() {
        kcat(&s, &topic, &kcat_syms[i], KCAT_TICKS, codec).await;
        total += KCAT_TICKS as u64;
        let codec_flag = format!("compression.codec={codec}");
        total += produce(
            &brokers,
            &topic,
            &flags,
            &[
                "--symbols",
                &produce_syms[i],
                "--rate",
                "100",
                "--duration",
                "500ms",
                "--kafka",
                &codec_flag,
            ],
        )
        .await;
    }
    read_all(&mut c, "every codec", &all, total).await;
    for reason in tickfan::telemetry::metrics::CONSUME_ERROR_REASONS {
        let series = format!("tickfan_consume_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_at(edge.addr, &series).await, 0.0, "{series}");
    }
    eprintln!("gzip, snappy, lz4, zstd from kcat and tickfan produce: {total} ticks delivered");
}

/// A misconfigured edge: wrong password, untrusted CA, expired client
/// certificate. Each stays up (`/healthz` 200), is not ready (`/readyz`
/// 503), tells its clients the feed is `stale`, says what Kafka refused
/// once (not per retry), and shows the password nowhere; fixed, it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_an_untrusted_ca_or_an_expired_certificate_leave_the_edge_up_stale_and_saying_why(
) {
    let broker = Broker::real();
    let s = Secure::load();
    let topic = broker.topic(1).await;
    const WRONG: &str = "wrong-password-9f3b1c";
    let wrong_password = Secure::secret_file("wrong", WRONG);
    let ca = s.get("TICKFAN_TEST_CA");
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "wrong password",
            s.get("TICKFAN_TEST_SASL_SSL_BROKERS"),
            [
                "--kafka-ca",
                &ca,
                "--kafka-sasl-mechanism",
                "SCRAM-SHA-512",
                "--kafka-sasl-username",
                &s.get("TICKFAN_TEST_SASL_USER"),
                "--kafka-sasl-password-file",
                &wrong_password,
            ]
            .map(String::from)
            .to_vec(),
            "Authentication failed",
        ),
        (
            "untrusted CA",
            s.get("TICKFAN_TEST_SSL_BROKERS"),
            vec!["--kafka-ca".into(), s.get("TICKFAN_TEST_OTHER_CA")],
            "certificate verify failed",
        ),
        (
            "expired client certificate",
            s.get("TICKFAN_TEST_MTLS_BROKERS"),
            [
                "--kafka-ca",
                &ca,
                "--kafka-cert",
                &s.get("TICKFAN_TEST_EXPIRED_CERT"),
                "--kafka-key",
                &s.get("TICKFAN_TEST_EXPIRED_KEY"),
            ]
            .map(String::from)
            .to_vec(),
            "",
        ),
    ];
    const REFUSED: &str = "kafka refuses the edge's connection";
    for (name, brokers, flags, says) in cases {
        let edge = EdgeProcess::spawn_unready(
            &brokers,
            &topic,
            // Retries close together, so the test sees several soon.
            &[
                refs(&flags),
                vec![
                    "--metadata-refresh",
                    "1s",
                    "--kafka",
                    "reconnect.backoff.ms=100",
                    "--kafka",
                    "reconnect.backoff.max.ms=500",
                    "--drain-window",
                    "1s",
                    "--shutdown-grace",
                    "2s",
                ],
            ]
            .concat(),
            &[],
        )
        .await;
        assert_eq!(
            http_get(edge.addr, "/readyz").await.0,
            503,
            "{name}: not ready"
        );
        let mut c = Client::connect(edge.addr).await;
        c.read_until("the feed status", |f| !f.is_empty()).await;
        assert_eq!(c.statuses(), vec!["stale".to_string()], "{name}");
        // The refusal is logged, with librdkafka's reason...
        let log = eventually(&format!("{name}: the edge says what Kafka refused"), || {
            let log = edge.log();
            async move { log.contains(REFUSED).then_some(log) }
        })
        .await;
        if !says.is_empty() {
            assert!(
                log.contains(says),
                "{name}: the log names it ({says}):\n{log}"
            );
        }
        // ...once, while librdkafka retries (each refusal is counted).
        eventually(&format!("{name}: refused again on retry"), || async {
            (metric_at(edge.addr, "tickfan_kafka_refusals_total").await >= 2.0).then_some(())
        })
        .await;
        let log = edge.log();
        assert_eq!(
            log.matches(REFUSED).count(),
            1,
            "{name}: once, not per retry:\n{log}"
        );
        assert_eq!(
            http_get(edge.addr, "/healthz").await.0,
            200,
            "{name}: alive"
        );
        let (_, metrics) = http_get(edge.addr, "/metrics").await;
        for text in [&log, &metrics] {
            assert!(!text.contains(WRONG), "{name}: the password shows");
        }
        // Nor on the command line, for `ps` to show.
        let pid = edge.child.id().unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(WRONG),
            "{name}: the password is in the command line"
        );
        eprintln!(
            "{name}: up, not ready, stale; logged: {}",
            log.lines().find(|l| l.contains(REFUSED)).unwrap_or("")
        );
        // SIGTERM ends it within --shutdown-grace, refused as it is.
        let mut edge = edge;
        let sent = tokio::time::Instant::now();
        edge.signal("-TERM");
        let status = tokio::time::timeout(DEADLINE, edge.child.wait())
            .await
            .expect("the edge exits")
            .unwrap();
        assert!(status.success(), "{name}: {status:?}");
        let took = sent.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "{name}: SIGTERM took {took:?} with --shutdown-grace 2s"
        );
    }
    // Fixed (the right secret mounted and the pod restarted): it connects.
    let (brokers, flags) = scram(&s);
    let edge = EdgeProcess::spawn(&brokers, &topic, &refs(&flags)).await;
    assert_eq!(http_get(edge.addr, "/readyz").await.0, 200);
}
