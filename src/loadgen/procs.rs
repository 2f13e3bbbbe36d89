//! Where the clients run: in this process, or in worker processes of this
//! binary (`tickfan loadgen --worker I/P`) that get the plan and requests on
//! stdin and answer on stdout; both ends of that protocol.

use std::{
    collections::VecDeque,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{ChildStdin, ChildStdout},
};

use super::{
    plan::Plan,
    wire::{Report, Request},
    worker::Load,
    Config, Slot,
};

/// How long a worker process may take to answer a request.
const REPLY_DEADLINE: Duration = Duration::from_secs(60);
/// Lines of a worker's stderr kept for the error when it fails.
const STDERR_TAIL: usize = 20;

/// One worker process and its pipes; killed when dropped.
pub(super) struct Child {
    slot: Slot,
    process: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: tokio::task::JoinHandle<()>,
}

impl Child {
    fn spawn(exe: &std::path::Path, slot: Slot) -> anyhow::Result<Child> {
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("loadgen")
            .arg("--worker")
            .arg(format!("{}/{}", slot.index, slot.of))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Everything a worker needs comes in the plan on stdin.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TICKFAN_LOADGEN_") {
                command.env_remove(key);
            }
        }
        let mut process = command
            .spawn()
            .with_context(|| format!("start loadgen worker {}", exe.display()))?;
        let stdin = process.stdin.take().expect("piped");
        let stdout = BufReader::new(process.stdout.take().expect("piped")).lines();
        let mut stderr = BufReader::new(process.stderr.take().expect("piped")).lines();
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        let stderr_done = tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "loadgen worker {}/{}: {line}",
                    slot.index,
                    slot.of
                );
                let mut tail = tail.lock().unwrap();
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Ok(Child {
            slot,
            process,
            stdin,
            stdout,
            stderr_tail,
            stderr_done,
        })
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let sent = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await
        };
        sent.await.context("write to its stdin")
    }

    async fn receive(&mut self) -> anyhow::Result<Report> {
        let line = tokio::time::timeout(REPLY_DEADLINE, self.stdout.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {REPLY_DEADLINE:?}"))??
            .ok_or_else(|| anyhow::anyhow!("it closed its stdout (exited?)"))?;
        serde_json::from_str(&line).with_context(|| format!("bad answer {line:?}"))
    }

    /// The error for a worker that failed: what went wrong, how it exited,
    /// and the end of its stderr.
    async fn failure(&mut self, what: anyhow::Error) -> anyhow::Error {
        let exited = tokio::time::timeout(Duration::from_secs(2), self.process.wait());
        let status = match exited.await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => "still running".to_owned(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.stderr_done).await;
        let tail = Vec::from(self.stderr_tail.lock().unwrap().clone()).join("\n");
        anyhow::anyhow!(
            "loadgen worker {}/{} failed: {what:#} ({status}); the end of its stderr:\n{tail}",
            self.slot.index,
            self.slot.of
        )
    }
}

/// Where the clients run. One measurement loop drives either.
pub(super) enum Workers {
    /// In this process.
    Local(Load),
    /// In worker processes, over stdin/stdout.
    Children(Vec<Child>),
}

impl Workers {
    pub(super) async fn start(c: &Config, plan: &Plan) -> anyhow::Result<Workers> {
        if c.processes <= 1 {
            let all = Slot { index: 0, of: 1 };
            return Ok(Workers::Local(Load::start(plan, all).await?));
        }
        let exe = match &c.worker_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().context("find this binary to start workers")?,
        };
        let mut plan_line = serde_json::to_string(plan)?;
        plan_line.push('\n');
        let mut children = Vec::with_capacity(c.processes);
        for index in 0..c.processes {
            let slot = Slot {
                index,
                of: c.processes,
            };
            let mut child = Child::spawn(&exe, slot)?;
            if let Err(e) = child.send(&plan_line).await {
                return Err(child.failure(e).await);
            }
            children.push(child);
        }
        Ok(Workers::Children(children))
    }

    /// Asks every worker and merges their answers.
    pub(super) async fn ask(&mut self, request: Request) -> anyhow::Result<Report> {
        match self {
            Workers::Local(load) => Ok(load.handle(request).await),
            Workers::Children(children) => {
                let mut line = serde_json::to_string(&request)?;
                line.push('\n');
                // Everyone first, so they act at (nearly) the same moment.
                for child in children.iter_mut() {
                    if let Err(e) = child.send(&line).await {
                        return Err(child.failure(e).await);
                    }
                }
                let mut merged = Report::default();
                for child in children.iter_mut() {
                    match child.receive().await {
                        Ok(report) => merged = merged.merge(report),
                        Err(e) => return Err(child.failure(e).await),
                    }
                }
                Ok(merged)
            }
        }
    }

    /// Lets stopped workers exit (they do after [`Request::Stop`]); any still
    /// running after a moment are killed on drop.
    pub(super) async fn finish(self) {
        if let Workers::Children(children) = self {
            for mut child in children {
                let _ = tokio::time::timeout(Duration::from_secs(5), child.process.wait()).await;
            }
        }
    }
}

/// A worker process: the plan, then requests, on stdin; answers on stdout.
/// Ends after [`Request::Stop`], or when stdin closes (the parent is gone).
pub(super) async fn worker(slot: Slot) -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut output = tokio::io::stdout();
    let Some(line) = input.next_line().await? else {
        return Ok(());
    };
    let plan: Plan = serde_json::from_str(&line).context("bad plan on stdin")?;
    let mut load = Load::start(&plan, slot).await?;
    while let Some(line) = input.next_line().await? {
        let request: Request =
            serde_json::from_str(&line).with_context(|| format!("bad request {line:?}"))?;
        let mut answer = serde_json::to_vec(&load.handle(request).await)?;
        answer.push(b'\n');
        output.write_all(&answer).await?;
        output.flush().await?;
        if matches!(request, Request::Stop) {
            break;
        }
    }
    Ok(())
}
