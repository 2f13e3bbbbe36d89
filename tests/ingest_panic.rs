//! A panic on an ingest thread ends the edge: clients are closed as at any
//! shutdown (1012, service restart: they reconnect elsewhere and resume),
//! and `run_edge` returns an error, so the process exits
//! non-zero and its orchestrator starts it again; before, the edge stayed
//! up, ready and silent. The panic is injected at the fail crate's
//! failpoints `ingest-poll-loop` and `interest-manager` (compiled in test
//! builds only). A test binary of its
//! own, since failpoints are process-wide.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_poll_thread_ends_the_edge_with_an_error() {
    panic_ends_the_edge("ingest-poll-loop").await;
}

/// The interest manager (which assigns partitions) is a task, not a thread,
/// and as vital.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_interest_manager_ends_the_edge_with_an_error() {
    panic_ends_the_edge("interest-manager").await;
}

/// `FailScenario` holds a process-wide lock: the tests of this file run one
/// at a time.
async fn panic_ends_the_edge(failpoint: &str) {
    let scenario = fail::FailScenario::setup();
    let broker = Broker::start();
    let topic = broker.topic(1).await;
    let edge = Edge::spawn(&broker.bootstrap(), &topic, |_| {}).await;
    edge.ready().await;
    let mut c = edge.subscribed_on_partition_0(&["ACME"]).await;
    let mut feed = Feed::new(&broker.bootstrap(), &topic);
    feed.ticks("ACME", 1).await;
    feed.flush().await;
    c.read_until("a tick", |f| {
        f.iter().any(|x| matches!(x, Frame::Tick { .. }))
    })
    .await;

    fail::cfg(failpoint, "panic").unwrap();
    // The manager runs when interest changes: a second subscription wakes it
    // (not waiting for its answer: the edge may be closing by then).
    c.send(serde_json::json!({"op": "subscribe", "symbols": ["OTHER"]}))
        .await;
    c.read_until("the edge closes the connection", |f| {
        f.iter().any(|x| matches!(x, Frame::Close(_)))
    })
    .await;
    assert!(
        matches!(c.frames.last(), Some(Frame::Close(Some(1012)))),
        "service restart (1012), as at any shutdown: {:?}",
        c.frames.last()
    );
    let err = edge
        .finished()
        .await
        .expect_err("the edge ends with an error");
    assert!(err.to_string().contains("ingest"), "{err}");
    scenario.teardown();
}
