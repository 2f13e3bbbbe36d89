//! Shutdown: a signal future that cancels the root token on SIGINT/SIGTERM,
//! and exits at once on a second signal.
//!
//! It never stops anything itself: what stops, and in what order, is
//! [`crate::app`]'s, which watches the token.

use tokio_util::sync::CancellationToken;

/// A root token cancelled by the first SIGINT or SIGTERM. A second signal
/// exits the process immediately (status 130).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (signal again to exit at once)");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
