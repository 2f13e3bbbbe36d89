//! The accept loop and the drain: HTTP/1.1 with hyper behind the
//! [`super::door`] (caps, deadlines, descriptor reserve) on every connection,
//! `/ws` answered by the handshake module (admission, auth, then tungstenite
//! with small buffers), every other route served by warp.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    door::{BoxError, Door, Port},
    handshake::upgrade,
    Shared,
};

/// Serves `listener` until `shutdown` fires, then drains: `/readyz` says
/// 503 and new WebSocket upgrades are refused (503) while every session
/// closes itself at a random point of the drain window; once they are all
/// gone, or `shutdown_grace` has passed, it stops accepting and returns.
///
/// Every connection passes the [`Door`] first: its HTTP phase is capped,
/// has a write deadline and an idle limit, and when file descriptors run
/// short only probes are answered (see [`super::door`]).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let routes = super::routes(shared.clone(), Port::Public);
    let connections = TaskTracker::new();
    let sessions = TaskTracker::new();
    let mut door = Door::new(shared.clone(), Port::Public);
    let housekeeping = {
        let shared = shared.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            while tokio::select! { _ = every.tick() => true, _ = stop.cancelled() => false } {
                shared.admission.housekeeping();
            }
        })
    };
    // Feed status changes reach every session through its outbox: one task
    // here rather than a watch future in every session (120 bytes in each
    // idle session's future, and a register and unregister on the watch's
    // lock at every pass of its loop).
    let feed_forward = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut feed = shared.feed.clone();
            while feed.changed().await.is_ok() {
                let status = *feed.borrow_and_update();
                shared.sessions.feed_changed(status);
            }
        })
    };
    // Fires when the loop ends: open keep-alive HTTP connections finish
    // their request and close.
    let stopped = CancellationToken::new();
    let mut grace_end: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    loop {
        let accepted = tokio::select! {
            accepted = door.accept(&listener) => accepted,
            _ = shutdown.cancelled(), if grace_end.is_none() => {
                tracing::info!(
                    sessions = sessions.len(),
                    window = ?shared.config.drain_window,
                    "draining: not ready, closing sessions over the drain window"
                );
                grace_end = Some(tokio::time::Instant::now() + shared.config.shutdown_grace);
                sessions.close();
                continue;
            }
            _ = sessions.wait(), if grace_end.is_some() => break,
            _ = tokio::time::sleep_until(grace_end.unwrap_or(far)), if grace_end.is_some() => {
                tracing::warn!(open = sessions.len(), "grace period over with sessions still open; leaving");
                break;
            }
        };
        let Some(conn) = door.admit(accepted) else {
            continue;
        };
        let peer = conn.peer();
        let warp_svc = warp::service(routes.clone());
        let (shared2, sessions2, drain) = (shared.clone(), sessions.clone(), shutdown.clone());
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (shared, sessions, drain) = (shared2.clone(), sessions2.clone(), drain.clone());
            let mut warp_svc = warp_svc.clone();
            async move {
                // `/ws` is answered by hand (why: `handshake::upgrade`), the rest by warp.
                if req.uri().path() == "/ws" {
                    Ok::<_, Infallible>(upgrade(req, peer, shared, sessions, drain))
                } else {
                    let resp = tower_service::Service::call(&mut warp_svc, req).await?;
                    Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()))
                }
            }
        });
        connections.spawn(conn.serve(svc, stopped.clone()));
    }
    stopped.cancel();
    drop(listener);
    housekeeping.abort();
    feed_forward.abort();
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
}
