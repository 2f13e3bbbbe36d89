//! The floor under `one-each` on this machine: a WebSocket server that does
//! nothing but what every edge must do per delivery there, one timer wake-up
//! and one `send` of a ~600-byte text frame, measured by the same load
//! generator as the real edge (BENCHMARKS.md, "What remains: one-each").
//!
//! No Kafka, no decoding, no outbox, no fan-out: each connection answers the
//! WebSocket handshake, then sends `{"type":"ticks","ticks":[{"ts":..}]}` (a
//! 512-byte pad, as `tickfan produce --tick-bytes 512` makes) once a second
//! at a random phase, and discards what it reads. Its CPU per delivery is
//! what the runtime and the kernel cost with the receiver on the same
//! machine; an edge cannot spend less than this here.
//!
//! ```text
//! cargo run --release --example null_edge -- 127.0.0.1:18700 &
//! tickfan loadgen --url ws://127.0.0.1:18700/ws --scenario one-each \
//!   --clients 15000 --symbols S --warmup 10s --duration 20s --edge-pid $!
//! ```
//!
//! With `--batched` it drops the per-connection task and timer too: after
//! the handshake each socket goes to one of two writer threads, which wake
//! every millisecond and write the frames of every connection due since
//! their last pass, one non-blocking `send` each: the most a "writer per
//! worker, one pass per batch" design could save, since the `send` per
//! delivery remains. With `--uring` (Linux) those writer threads hand each
//! pass's sends to the kernel in one io_uring submission instead: one system
//! call per pass, the kernel's TCP work per send unchanged.
//!
//! A deliberately minimal server, not a WebSocket implementation: it trusts
//! its one client (the load generator), so it parses only the handshake's
//! key (bounded at 8 KiB) and never reads frames.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::Rng;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const PAD: usize = 512;
/// Writer threads in `--batched` mode: one per core of the machine it was
/// measured on.
const WRITERS: usize = 2;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18700".into());
    let mode = args.next();
    let (batched, uring) = match mode.as_deref() {
        None => (false, false),
        Some("--batched") => (true, false),
        Some("--uring") => (true, true),
        Some(other) => {
            eprintln!("null_edge: unknown mode {other}: --batched or --uring");
            std::process::exit(2);
        }
    };
    #[cfg(target_os = "linux")]
    if let Err(e) = uring.then(|| io_uring::IoUring::new(RING)).transpose() {
        // Container runtimes often forbid io_uring (seccomp): say so, rather
        // than start a server whose writers cannot send.
        eprintln!("null_edge: io_uring unavailable: {e}");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("null edge on {addr} {}", mode.as_deref().unwrap_or(""));
    let writers: Vec<mpsc::Sender<std::net::TcpStream>> = if batched {
        (0..WRITERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || write_batches(rx, uring));
                tx
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut next = 0usize;
    loop {
        let (stream, _) = listener.accept().await?;
        let writer = (!writers.is_empty()).then(|| {
            next += 1;
            writers[next % writers.len()].clone()
        });
        tokio::spawn(async move {
            let _ = serve(stream, writer).await;
        });
    }
}

/// One writer thread of `--batched` (or `--uring`): its connections ordered
/// by their phase in the second, written in passes a millisecond apart.
fn write_batches(rx: mpsc::Receiver<std::net::TcpStream>, uring: bool) {
    #[cfg(target_os = "linux")]
    let mut ring = uring.then(|| io_uring::IoUring::new(RING).expect("io_uring"));
    #[cfg(not(target_os = "linux"))]
    assert!(!uring, "--uring needs Linux");
    #[cfg(target_os = "linux")]
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut due_keys = Vec::new();
    let start = Instant::now();
    let mut conns: BTreeMap<(u64, u64), std::net::TcpStream> = BTreeMap::new();
    let mut ids = 0u64;
    let mut last = 0u64; // micros into the current second, exclusive
    let pad = "x".repeat(PAD);
    let mut frame = Vec::with_capacity(PAD + 128);
    let mut dead = Vec::new();
    loop {
        while let Ok(stream) = rx.try_recv() {
            ids += 1;
            let phase = rand::rng().random_range(0..1_000_000);
            conns.insert((phase, ids), stream);
        }
        let now = (start.elapsed().as_micros() % 1_000_000) as u64;
        let due: Vec<std::ops::Range<(u64, u64)>> = if now >= last {
            vec![(last, 0)..(now, 0)]
        } else {
            vec![(last, 0)..(1_000_000, 0), (0, 0)..(now, 0)]
        };
        last = now;
        due_keys.clear();
        for range in due {
            due_keys.extend(conns.range(range).map(|(key, _)| *key));
        }
        #[cfg(target_os = "linux")]
        if let Some(ring) = ring.as_mut() {
            send_ring(ring, &conns, &due_keys, &mut bufs, &pad, &mut dead);
            due_keys.clear();
        }
        for key in &due_keys {
            tick_frame(&mut frame, &pad);
            match (&conns[key]).write(&frame) {
                Ok(n) if n == frame.len() => {}
                // A full socket buffer: this tick is lost (a null edge
                // keeps no queue); a short write would corrupt the
                // stream, so the connection goes.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => dead.push(*key),
            }
        }
        for key in dead.drain(..) {
            conns.remove(&key);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Submission queue entries per io_uring pass.
#[cfg(target_os = "linux")]
const RING: u32 = 4096;

/// The due connections' frames as io_uring sends, `RING` per submission,
/// each waited for before its buffer is reused.
#[cfg(target_os = "linux")]
fn send_ring(
    ring: &mut io_uring::IoUring,
    conns: &BTreeMap<(u64, u64), std::net::TcpStream>,
    due: &[(u64, u64)],
    bufs: &mut Vec<Vec<u8>>,
    pad: &str,
    dead: &mut Vec<(u64, u64)>,
) {
    use io_uring::{opcode, types};
    use std::os::fd::AsRawFd;
    for chunk in due.chunks(RING as usize) {
        if bufs.len() < chunk.len() {
            bufs.resize_with(chunk.len(), || Vec::with_capacity(PAD + 128));
        }
        for (i, key) in chunk.iter().enumerate() {
            tick_frame(&mut bufs[i], pad);
            let sqe = opcode::Send::new(
                types::Fd(conns[key].as_raw_fd()),
                bufs[i].as_ptr(),
                bufs[i].len() as u32,
            )
            .build()
            .user_data(i as u64);
            // SAFETY: the buffer and the socket outlive the send: both are
            // left alone until its completion is reaped below.
            unsafe { ring.submission().push(&sqe) }.expect("the ring holds a chunk");
        }
        ring.submit_and_wait(chunk.len()).expect("io_uring submit");
        for cqe in ring.completion() {
            let i = cqe.user_data() as usize;
            let sent = cqe.result();
            if sent == bufs[i].len() as i32 {
                continue;
            }
            let would_block = sent < 0
                && std::io::Error::from_raw_os_error(-sent).kind()
                    == std::io::ErrorKind::WouldBlock;
            if !would_block {
                dead.push(chunk[i]);
            }
        }
    }
}

/// The frame `tickfan` would send for one 512-byte tick.
fn tick_frame(frame: &mut Vec<u8>, pad: &str) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let body = format!(
        r#"{{"type":"ticks","ticks":[{{"symbol":"S","seq":1,"ts":{ts},"bid":1.0,"ask":1.0,"attrs":{{"pad":"{pad}"}}}}]}}"#
    );
    frame.clear();
    frame.push(0x81); // FIN, text
    frame.push(126);
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(body.as_bytes());
}

async fn serve(
    mut stream: TcpStream,
    writer: Option<mpsc::Sender<std::net::TcpStream>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let Some(key) = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    }) else {
        return Ok(());
    };
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(reply.as_bytes()).await?;
    if let Some(writer) = writer {
        // Leaves the runtime: the writer thread owns it, non-blocking, and
        // never reads (the socket's receive buffer holds what the client
        // sends: a subscribe and its close).
        let _ = writer.send(stream.into_std()?);
        return Ok(());
    }
    let (mut rd, mut wr) = stream.into_split();
    let phase = Duration::from_micros(rand::rng().random_range(0..1_000_000));
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
    let pad = "x".repeat(PAD);
    let mut frame = Vec::with_capacity(PAD + 128);
    loop {
        tokio::select! {
            _ = every.tick() => {
                tick_frame(&mut frame, &pad);
                wr.write_all(&frame).await?;
            }
            n = rd.read(&mut buf) => {
                if n? == 0 {
                    return Ok(());
                }
            }
        }
    }
}
