//! The clients of one process (all of them, or one worker's share): starting
//! them on a runtime of their own (so their CPU is theirs alone), and
//! answering the driver's [`Request`]s about them.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use rand::{rngs::SmallRng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::{
    conn::run_client,
    cpu::ClientRuntime,
    plan::{subscriptions, Plan},
    shared::{histogram, Shared},
    wire::{Hist, Report, Request, StormReport, TickRange},
    Scenario, Slot,
};

/// The clients of one process: all of them, or one worker's share.
pub(super) struct Load {
    shared: Arc<Shared>,
    /// This share's slow clients.
    stalls: Vec<Arc<AtomicBool>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
    stop: CancellationToken,
    storm: CancellationToken,
    scenario: Scenario,
    /// Declared last: dropped after `stop` is cancelled.
    runtime: ClientRuntime,
}

impl Load {
    /// Starts the clients of `slot` (they connect in the background).
    pub(super) async fn start(plan: &Plan, slot: Slot) -> anyhow::Result<Load> {
        let mut rng = SmallRng::seed_from_u64(7);
        let subs = subscriptions(plan, &mut rng);
        let shared = Arc::new(Shared::new());
        let (stop, storm) = (CancellationToken::new(), CancellationToken::new());
        let mut load = Load {
            shared,
            stalls: Vec::new(),
            tasks: Vec::with_capacity(plan.clients / slot.of + 1),
            stop,
            storm,
            scenario: plan.scenario,
            runtime: ClientRuntime::new()?,
        };
        let mine = subs.into_iter().enumerate().skip(slot.index);
        for (n, (i, symbols)) in mine.step_by(slot.of).enumerate() {
            let stall = Arc::new(AtomicBool::new(false));
            if i < plan.slow_clients {
                load.stalls.push(stall.clone());
            }
            let target = plan.target(i);
            let storm = (plan.scenario == Scenario::Storm).then(|| load.storm.clone());
            load.tasks.push(load.runtime.handle().spawn(run_client(
                plan.start_delay(i),
                target,
                symbols,
                plan.options,
                stall,
                load.shared.clone(),
                load.stop.clone(),
                storm,
            )));
            if n % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        Ok(load)
    }

    pub(super) async fn handle(&mut self, request: Request) -> Report {
        let s = &self.shared;
        match request {
            Request::Status => Report {
                connected: s.counters.connected.load(Ordering::Relaxed),
                last_error: s.last_error.lock().unwrap().clone(),
                totals: s.counters.totals(),
                ..Report::default()
            },
            Request::Measure { epoch_us } => {
                for stall in &self.stalls {
                    stall.store(true, Ordering::Relaxed);
                }
                s.storm.epoch_us.store(epoch_us, Ordering::Relaxed);
                let totals = s.counters.totals();
                let clients_cpu = self.runtime.cpu_seconds();
                s.measuring.store(true, Ordering::Relaxed);
                self.storm.cancel();
                Report {
                    totals,
                    clients_cpu,
                    ..Report::default()
                }
            }
            Request::Sample => Report {
                totals: s.counters.totals(),
                latency: Some(Hist(std::mem::replace(
                    &mut *s.second.lock().unwrap(),
                    histogram(),
                ))),
                storm: self.storm_report(),
                ..Report::default()
            },
            Request::End => {
                s.measuring.store(false, Ordering::Relaxed);
                Report {
                    totals: s.counters.totals(),
                    latency: Some(Hist(s.window.lock().unwrap().clone())),
                    storm: self.storm_report(),
                    clients_cpu: self.runtime.cpu_seconds(),
                    ..Report::default()
                }
            }
            Request::Stop => {
                self.stop.cancel();
                let mut range = TickRange::default();
                for t in std::mem::take(&mut self.tasks) {
                    let n = t.await.ok().and_then(|r| r.ok()).unwrap_or(0);
                    range.min = Some(range.min.map_or(n, |m| m.min(n)));
                    range.max = Some(range.max.map_or(n, |m| m.max(n)));
                }
                Report {
                    per_client: Some(range),
                    ..Report::default()
                }
            }
        }
    }

    fn storm_report(&self) -> Option<StormReport> {
        (self.scenario == Scenario::Storm).then(|| self.shared.storm.report())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
