//! The feed `--produce-brokers` drives for the whole run, so one command is
//! a complete benchmark.

use tokio_util::sync::CancellationToken;

use super::Config;

/// The feed `--produce-brokers` drives: `tickfan produce` in this process.
pub(super) struct Producer {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Producer {
    pub(super) fn start(c: &Config, brokers: &str) -> anyhow::Result<Producer> {
        let mut kafka: crate::config::KafkaConfig = crate::config::defaults();
        kafka.brokers = brokers.to_owned();
        kafka.topics = vec![c.produce_topic.clone()];
        kafka.validate()?;
        let mut feed: crate::feed::Config = crate::config::defaults();
        feed.symbols = c.symbols.clone();
        feed.rate = c.produce_rate;
        feed.zipf = 0.0;
        feed.tick_bytes = c.produce_tick_bytes;
        feed.format = c.produce_format();
        feed.validate()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::feed::run(
            kafka,
            feed,
            Default::default(),
            stop.clone(),
        ));
        Ok(Producer {
            task,
            _stop: stop.drop_guard(),
        })
    }

    /// Stops the feed (it flushes what is in flight); what it was.
    pub(super) async fn stop(self, c: &Config) -> anyhow::Result<serde_json::Value> {
        let Producer { task, _stop } = self;
        drop(_stop);
        task.await??;
        Ok(serde_json::json!({
            "topic": c.produce_topic, "rate": c.produce_rate,
            "tick_bytes": c.produce_tick_bytes, "format": format!("{:?}", c.produce_format()).to_lowercase(),
        }))
    }
}
