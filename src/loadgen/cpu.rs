//! CPU time from /proc: of a whole process (the edge, `--edge-pid`), and of
//! the clients of this process, which run on a runtime of their own whose
//! threads register as they start: their user + system time is theirs alone,
//! apart from the driven feed's (`--produce-brokers`, in the parent) and, in
//! the tests, an edge in the same process.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

/// Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// utime + stime, in clock ticks, of a /proc `stat` line (of a process or a
/// thread).
fn stat_ticks(stat: &str) -> Option<u64> {
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; utime is field 14 → [11], stime [12].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds (user + system) and RSS in KiB of a process.
pub(super) fn proc_sample(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_ticks(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((ticks as f64 / USER_HZ, rss))
}

/// utime + stime (clock ticks) of thread `tid` of this process.
fn thread_ticks(tid: i32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?)
}

fn this_tid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// The threads of the clients' runtime: the live ones, and what the ended
/// ones used.
#[derive(Default)]
struct Threads {
    live: Mutex<HashSet<i32>>,
    ended_ticks: AtomicU64,
}

impl Threads {
    fn started(&self) {
        self.live.lock().unwrap().insert(this_tid());
    }

    /// Runs on the ending thread: its time moves to `ended_ticks` under the
    /// lock a sample holds, so it is counted once.
    fn stopped(&self) {
        let tid = this_tid();
        let mut live = self.live.lock().unwrap();
        live.remove(&tid);
        let ticks = thread_ticks(tid).unwrap_or(0);
        self.ended_ticks.fetch_add(ticks, Ordering::Relaxed);
    }

    /// CPU seconds of every thread so far; `None` when /proc cannot tell.
    fn cpu_seconds(&self) -> Option<f64> {
        let live = self.live.lock().unwrap();
        let mut ticks = self.ended_ticks.load(Ordering::Relaxed);
        for &tid in live.iter() {
            ticks += thread_ticks(tid)?;
        }
        Some(ticks as f64 / USER_HZ)
    }
}

/// The runtime the clients of this process run on, and the CPU it used.
pub(super) struct ClientRuntime {
    /// `None` once dropped.
    runtime: Option<tokio::runtime::Runtime>,
    threads: Arc<Threads>,
}

impl ClientRuntime {
    /// A multi-threaded runtime (one worker per core, as the binary's own).
    pub(super) fn new() -> anyhow::Result<ClientRuntime> {
        let threads = Arc::new(Threads::default());
        let (on_start, on_stop) = (threads.clone(), threads.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("loadgen-client")
            .enable_all()
            .on_thread_start(move || on_start.started())
            .on_thread_stop(move || on_stop.stopped())
            .build()?;
        Ok(ClientRuntime {
            runtime: Some(runtime),
            threads,
        })
    }

    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("running").handle()
    }

    /// User + system CPU seconds its threads used so far.
    pub(super) fn cpu_seconds(&self) -> Option<f64> {
        self.threads.cpu_seconds()
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        // Dropped from async code, where a runtime may not block.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_user_plus_system_ticks() {
        // A command with spaces and parentheses, as /proc shows it.
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 5 0 0";
        assert_eq!(stat_ticks(line), Some(281));
        assert_eq!(stat_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn the_clients_cpu_is_the_time_of_their_threads() {
        let rt = ClientRuntime::new().unwrap();
        let before = rt.cpu_seconds().unwrap();
        assert!(before >= 0.0);
        // Spin on one of the clients' threads until /proc counts it (in
        // 10 ms ticks): their time goes up, whatever this thread does.
        let threads = rt.threads.clone();
        let spinning = rt.handle().spawn(async move {
            let mut x = 0u64;
            while threads.cpu_seconds().unwrap() <= before {
                for _ in 0..100_000 {
                    x = x.wrapping_add(std::hint::black_box(1));
                }
            }
            x
        });
        assert!(rt.handle().block_on(spinning).unwrap() > 0);
        assert!(rt.cpu_seconds().unwrap() > before);
    }
}
