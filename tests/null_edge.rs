//! `examples/null_edge.rs`, the server BENCHMARKS.md measures as the floor
//! under `one-each` ("The floor: a server that only sends"): in each of its
//! three modes it completes a real WebSocket handshake and keeps sending
//! every connection the ticks frame tickfan sends for a 512-byte tick, so
//! the load generator measures the same deliveries against it as against
//! the edge. `cargo test` builds the example; the test runs that binary.

mod support;

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use support::{eventually, Client, Frame};

/// The example binary `cargo test` built beside this test's.
fn null_edge() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/null_edge-<hash> -> target/<profile>/examples/null_edge
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples")
        .join(format!("null_edge{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build --example null_edge`)",
        path.display()
    );
    path
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(mode: Option<&str>) -> (Server, SocketAddr) {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut cmd = Command::new(null_edge());
    cmd.arg(addr.to_string()).stderr(Stdio::null());
    if let Some(mode) = mode {
        cmd.arg(mode);
    }
    let server = Server(cmd.spawn().expect("null_edge starts"));
    eventually("null_edge listens", || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    (server, addr)
}

async fn sends_tickfans_frame_to_every_connection(mode: Option<&str>) {
    let (_server, addr) = start(mode).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(addr).await);
    }
    for client in &mut clients {
        // Two ticks: one at the connection's random phase, the next a second later.
        client
            .read_until("two ticks", |frames| {
                frames
                    .iter()
                    .filter(|f| matches!(f, Frame::Tick { .. }))
                    .count()
                    >= 2
            })
            .await;
        let tick = client.tick_values(Some("S"))[0];
        assert_eq!(
            tick["attrs"]["pad"].as_str().map(str::len),
            Some(512),
            "the 512-byte tick's pad, as `tickfan produce --tick-bytes 512` makes: {tick}"
        );
        assert!(tick["ts"].as_i64().unwrap_or(0) > 0, "a timestamp: {tick}");
        let text = &client.texts[0];
        assert!(
            (580..660).contains(&text.len()),
            "a ~600-byte frame like tickfan's: {} bytes",
            text.len()
        );
    }
}

#[tokio::test]
async fn a_task_per_connection() {
    sends_tickfans_frame_to_every_connection(None).await;
}

#[tokio::test]
async fn batched_writer_threads() {
    sends_tickfans_frame_to_every_connection(Some("--batched")).await;
}

/// Where the kernel (or a container's seccomp profile) forbids io_uring,
/// `--uring` refuses to start and says why instead of serving nothing.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn io_uring_submissions() {
    if let Err(e) = io_uring::IoUring::new(8) {
        let out = Command::new(null_edge())
            .args(["127.0.0.1:0", "--uring"])
            .output()
            .expect("null_edge runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(2) && stderr.contains("io_uring unavailable"),
            "io_uring is unavailable here ({e}); null_edge --uring must refuse: {:?} {stderr}",
            out.status
        );
        return;
    }
    sends_tickfans_frame_to_every_connection(Some("--uring")).await;
}
