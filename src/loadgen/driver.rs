//! The run as the parent drives it: start the clients, wait until they are
//! connected, warm up, measure the window second by second, stop them, and
//! summarize.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    cpu::proc_sample,
    plan::{Plan, CONNECT_DEADLINE},
    procs::{self, Workers},
    producer::Producer,
    report::{self, EdgeSamples, Window},
    wire::{Request, StormReport},
    Config, Scenario,
};
use crate::feed::now_micros;

/// Runs the load and prints the summary; returns it as JSON. As a worker
/// (`--worker`), serves its parent instead and returns `null`.
pub async fn run(c: Config, shutdown: CancellationToken) -> anyhow::Result<serde_json::Value> {
    if let Some(slot) = c.worker {
        // A worker ignores `shutdown`: Ctrl-C reaches the whole process
        // group, and the parent, which stops on it, still needs the workers'
        // final counts. They end on its `Stop`, or when it is gone.
        procs::worker(slot).await?;
        return Ok(serde_json::Value::Null);
    }
    c.validate()?;
    let plan = Plan::new(&c)?;
    // Dropped on any early return: the driven feed stops with the run.
    let producer = match &c.produce_brokers {
        Some(brokers) => Some(Producer::start(&c, brokers)?),
        None => None,
    };
    let edge_before = c.edge_pid.and_then(proc_sample);
    let mut workers = Workers::start(&c, &plan).await?;
    await_connected(&mut workers, &c, &plan, &shutdown).await?;
    tokio::select! {
        _ = tokio::time::sleep(c.warmup) => {}
        _ = shutdown.cancelled() => {}
    }
    let edge_start = c.edge_pid.and_then(proc_sample);
    let window = measure(&mut workers, &c, &shutdown).await?;
    let edge_end = c.edge_pid.and_then(proc_sample);
    let stopped = workers.ask(Request::Stop).await?;
    let per_client = stopped.per_client.unwrap_or_default();
    workers.finish().await;
    let producer = match producer {
        Some(p) => p.stop(&c).await?,
        None => serde_json::Value::Null,
    };
    let edge = EdgeSamples {
        before: edge_before,
        start: edge_start,
        end: edge_end,
    };
    let summary = report::summary(&c, &plan, &window, per_client, producer, edge);
    println!("{summary}");
    if let Some(warning) = report::deflate_warning(c.deflate, &window.end) {
        println!("loadgen: WARNING: {warning}");
    }
    report::write_files(&c, &summary, &window.series)?;
    Ok(summary)
}

/// Waits until every client is connected (an error past
/// [`Plan::connect_deadline`], or when interrupted), then says so.
async fn await_connected(
    workers: &mut Workers,
    c: &Config,
    plan: &Plan,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let status = loop {
        let status = workers.ask(Request::Status).await?;
        if status.connected as usize >= c.clients {
            break status;
        }
        anyhow::ensure!(
            started.elapsed() < plan.connect_deadline(),
            "clients could not all connect: {} of {} in {:?} (last failure: {})",
            status.connected,
            c.clients,
            plan.connect_deadline(),
            status.last_error.as_deref().unwrap_or("none")
        );
        if shutdown.is_cancelled() {
            anyhow::bail!("interrupted");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t = &status.totals;
    let deflate = if c.deflate {
        format!(
            " (permessage-deflate negotiated on {} of {})",
            t.deflate_connections,
            t.deflate_connections + t.plain_connections
        )
    } else {
        String::new()
    };
    println!(
        "loadgen: {} clients connected in {:.1?}{deflate}; warming up {:?}",
        c.clients,
        started.elapsed(),
        c.warmup
    );
    if let Some(warning) = report::deflate_warning(c.deflate, t) {
        println!("loadgen: WARNING: {warning}");
    }
    Ok(())
}

/// The measured window: starts it, prints a progress line per second for
/// `--duration` (in `storm`, until every client is back, at most
/// [`CONNECT_DEADLINE`] longer) or until shutdown, and ends it.
async fn measure(
    workers: &mut Workers,
    c: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Window> {
    let epoch_us = now_micros();
    let started = workers.ask(Request::Measure { epoch_us }).await?;
    let base = started.totals;
    let t0 = Instant::now();
    let mut series: Vec<(u64, u64, u64, u64)> = Vec::new(); // second, p50, p99, max (µs)
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = base;
    let mut last_storm = StormReport::default();
    let storm = c.scenario == Scenario::Storm;
    let mut all_back = !storm;
    let more = |t: Duration, all_back: bool| {
        t < c.duration || (!all_back && t < c.duration + CONNECT_DEADLINE)
    };
    while more(t0.elapsed(), all_back) && !shutdown.is_cancelled() {
        tick.tick().await;
        let sample = workers.ask(Request::Sample).await?;
        let now = sample.totals;
        let h = sample.latency.unwrap_or_default().0;
        let (p50, p99, max) = (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max());
        series.push((series.len() as u64 + 1, p50, p99, max));
        let mut line = report::progress(series.len(), &last, &now, p50, p99);
        if let (true, Some(s)) = (storm, sample.storm) {
            report::storm_progress(&mut line, &s, &last_storm, c.clients);
            all_back = s.back as usize >= c.clients;
            last_storm = s;
        }
        println!("{line}");
        last = now;
    }
    let end = workers.ask(Request::End).await?;
    let secs = t0.elapsed().as_secs_f64();
    let clients_cpu = match (started.clients_cpu, end.clients_cpu) {
        (Some(s), Some(e)) => Some(e - s),
        _ => None,
    };
    Ok(Window {
        base,
        end: end.totals,
        latency: end.latency.unwrap_or_default().0,
        storm: end.storm,
        secs,
        clients_cpu,
        series,
    })
}
