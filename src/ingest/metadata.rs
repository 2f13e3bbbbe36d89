//! Watches topic metadata: marks the edge ready once every configured topic
//! exists, and publishes partition counts (so a partition added to a topic is
//! noticed within one refresh).
//!
//! It never assigns or releases a partition: it reports partition counts, and
//! [`super::interest`] decides.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rdkafka::consumer::Consumer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Status;

/// Partition count per topic.
pub type Counts = Arc<HashMap<Arc<str>, i32>>;

pub struct Watcher {
    pub consumer: Arc<super::EdgeConsumer>,
    pub topics: Vec<String>,
    pub refresh: Duration,
    pub status: Arc<Status>,
    pub counts: watch::Sender<Counts>,
}

impl Watcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_problem: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let consumer = self.consumer.clone();
            let topics = self.topics.clone();
            let result = tokio::task::spawn_blocking(move || fetch_counts(&consumer, &topics))
                .await
                .unwrap_or_else(|e| Err(format!("metadata task failed: {e}")));
            let wait = match result {
                Ok(counts) => {
                    if last_problem.take().is_some() || !self.status.kafka_ready() {
                        tracing::info!(?counts, "kafka metadata ok; edge ready");
                    }
                    self.status.set_kafka_ready(true);
                    self.counts.send_if_modified(|old| {
                        if **old != counts {
                            *old = Arc::new(counts);
                            true
                        } else {
                            false
                        }
                    });
                    backoff = Duration::from_millis(100);
                    self.refresh
                }
                Err(problem) => {
                    self.status.set_kafka_ready(false);
                    // Logged once per change of state, not per attempt.
                    if last_problem.as_deref() != Some(&problem) {
                        tracing::warn!(%problem, "kafka metadata unavailable; edge not ready, retrying");
                        last_problem = Some(problem);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff.min(self.refresh)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.status.recheck.notified() => {}
            }
        }
    }
}

fn fetch_counts(
    consumer: &super::EdgeConsumer,
    topics: &[String],
) -> Result<HashMap<Arc<str>, i32>, String> {
    let mut counts = HashMap::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| format!("metadata request failed: {e}"))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| format!("topic {topic} missing from metadata"))?;
        if let Some(err) = t.error() {
            return Err(format!("topic {topic}: {err:?}"));
        }
        let n = t.partitions().len() as i32;
        if n == 0 {
            return Err(format!("topic {topic} has no partitions"));
        }
        counts.insert(Arc::from(topic.as_str()), n);
    }
    Ok(counts)
}
