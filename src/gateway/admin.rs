//! The admin listener (`--admin-listen`): the operators' routes on an
//! address of their own, so that the public port need not serve them.
//!
//! It serves `/metrics`, `/partitions`, `/symbols` (every cached or
//! directory symbol), `/healthz` and `/readyz`, behind the same door as the public port (HTTP
//! phase cap of [`door::ADMIN_MAX_CONNECTIONS`], write deadline, descriptor
//! reserve), and never upgrades.

use std::{convert::Infallible, sync::Arc};

use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    door::{self, BoxError, Door},
    Shared,
};

/// Serves the admin routes on `listener` until `stop` fires; open
/// connections then finish their request (two seconds at most).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let routes = super::routes(shared.clone(), door::Port::Admin);
    let connections = TaskTracker::new();
    let mut door = Door::new(shared, door::Port::Admin);
    loop {
        let accepted = tokio::select! {
            a = door.accept(&listener) => a,
            _ = stop.cancelled() => break,
        };
        let Some(conn) = door.admit(accepted) else {
            continue;
        };
        let warp_svc = warp::service(routes.clone());
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut warp_svc = warp_svc.clone();
            async move {
                let resp = tower_service::Service::call(&mut warp_svc, req).await?;
                Ok::<_, Infallible>(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()))
            }
        });
        connections.spawn(conn.serve(svc, stop.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
