//! The `/ws` handshake answer: the request checked, the client admitted and
//! authenticated, then `101` and the session, or a refusal (an HTTP error, or
//! in band as `101` and a close frame).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{future::Either, FutureExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{frame::CloseFrame, Role, WebSocketConfig},
    },
    WebSocketStream,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{auth, door::Body, session, Shared};

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

fn json_error(status: StatusCode, error: &str) -> Response<Body> {
    let mut r = full(status, serde_json::json!({ "error": error }).to_string());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Answers a `/ws` request: validate the handshake, admit, authenticate,
/// then switch protocols and run the session.
///
/// Answered here by hand (hyper and tungstenite) rather than with warp's
/// `ws()` filter, which the plain routes keep using: warp's `Ws` does not
/// expose tungstenite's read and write buffer sizes (128 KiB per connection
/// by default; here `--read-buffer-bytes` and `--write-buffer-bytes`), nor
/// lets a filter answer 429/503/401 (or their in-band `101` and close frame)
/// before the upgrade as cheaply.
pub(super) fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    drain: CancellationToken,
) -> Response<Body> {
    let accept_key = match check_handshake(&req) {
        Ok(key) => key,
        Err(bad) => return *bad,
    };
    let h = req.headers();
    let answer = Answer {
        accept_key,
        in_band: refusals_in_band(req.uri().query()),
        subprotocol: auth::offers_subprotocol(h),
        max_message: shared.config.max_message_bytes,
    };
    if drain.is_cancelled() {
        shared.metrics.admission_rejected("draining");
        let refusal = Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            close: CLOSE_TRY_AGAIN_LATER,
            error: "edge draining; connect to another",
            retry_after: Some(1),
        };
        return answer.refuse(&mut req, refusal);
    }
    let ip = shared.admission.client_ip(peer, h);
    let token = shared
        .verifier
        .as_ref()
        .and_then(|_| auth::token_from_request(h, req.uri().query()));
    // Per-IP checks, then the token, and only then the edge-wide budgets: a
    // forged token spends its own address's budgets, never what valid
    // clients need.
    if let Err(rejected) = shared.admission.screen(ip) {
        return answer.refuse(&mut req, rejection(&shared, rejected));
    }
    // Boxed: the session's future keeps what it captures for its whole
    // life, and a grant is 120 bytes where a box is 8.
    let grant = match authenticate(&shared, ip, token) {
        Ok(grant) => grant.map(Box::new),
        Err(refusal) => return answer.refuse(&mut req, refusal),
    };
    let permit = match shared.admission.admit(ip) {
        Ok(p) => p,
        Err(rejected) => return answer.refuse(&mut req, rejection(&shared, rejected)),
    };
    shared.metrics.admissions.inc();
    let announce = answer.in_band;
    // permessage-deflate only for admitted sessions: a refusal's socket
    // reads nothing but the close reply.
    let deflate = shared.config.permessage_deflate
        && crate::codec::deflate::negotiate(
            h.get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
        .is_some();
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The connection's lifecycle span: debug level, so it costs nothing per
    // connection (memory included) unless RUST_LOG asks for it: a disabled
    // span is not attached at all (40 bytes in every session's task).
    let span = tracing::debug_span!("session", %peer, ip = %ip);
    // A combinator, not an async block: an async block keeps what it
    // captures (and the upgrade's result it matched on) beside the session's
    // future for the session's whole life; `then` holds the upgrade's
    // future and then the session's, never both. With the span gone too,
    // the task fits jemalloc's 1 KiB class instead of 1.25 KiB (issue 18).
    let session = on_upgrade.then(move |upgraded| match upgraded {
        Ok(upgraded) => {
            tracing::debug!("upgraded");
            Either::Left(session::run(
                TokioIo::new(upgraded),
                shared,
                drain,
                grant,
                announce,
                deflate,
                Some(permit),
            ))
        }
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            Either::Right(std::future::ready(()))
        }
    });
    if span.is_disabled() {
        sessions.spawn(session);
    } else {
        sessions.spawn(tracing::Instrument::instrument(session, span));
    }
    answer.accept(deflate)
}

/// The request is a WebSocket handshake this edge speaks (GET, `Upgrade:
/// websocket`, version 13, a key): its `Sec-WebSocket-Accept` value, or the
/// plain-HTTP answer that says what is wrong (boxed: the error path is the
/// rare one).
fn check_handshake(req: &Request<Incoming>) -> Result<String, Box<Response<Body>>> {
    if req.method() != http::Method::GET {
        return Err(Box::new(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )));
    }
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "bad request: expected a WebSocket upgrade",
        )));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        let mut r = json_error(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(r));
    }
    h.get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .ok_or_else(|| {
            Box::new(json_error(
                StatusCode::BAD_REQUEST,
                "bad request: missing Sec-WebSocket-Key",
            ))
        })
}

/// An admission refusal (counted), as the answer the client gets: 503 when
/// the edge is full, 429 otherwise, with `Retry-After`.
fn rejection(shared: &Shared, rejected: super::admission::Rejected) -> Refusal {
    shared.metrics.admission_rejected(rejected.label());
    let status = match rejected {
        super::admission::Rejected::ConnectionCap => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::TOO_MANY_REQUESTS,
    };
    Refusal {
        status,
        close: CLOSE_TRY_AGAIN_LATER,
        error: rejected.message(),
        retry_after: Some(rejected.retry_after_secs()),
    }
}

/// The token's grant when auth is on (`None` when it is off), or the 401
/// refusal; a failure is counted and charged to the address's own budget.
fn authenticate(
    shared: &Shared,
    ip: std::net::IpAddr,
    token: Option<String>,
) -> Result<Option<auth::Grant>, Refusal> {
    let Some(v) = &shared.verifier else {
        return Ok(None);
    };
    match token
        .ok_or(auth::AuthError::Missing)
        .and_then(|token| v.verify(&token))
    {
        Ok(g) => Ok(Some(g)),
        Err(e) => {
            shared.metrics.auth_failure(e.label());
            shared.admission.auth_failed(ip);
            Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                close: CLOSE_UNAUTHORIZED,
                error: e.reason(),
                retry_after: None,
            })
        }
    }
}

/// Close code of a refusal delivered in band for a 429 or 503: "Try Again
/// Later" (RFC 6455 registry).
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code of a refusal delivered in band for a 401.
const CLOSE_UNAUTHORIZED: u16 = 4401;

/// Most in-band refusals in flight at once; past it, refusals are plain
/// HTTP answers again, so a storm of rejected browsers cannot pile up
/// upgraded sockets.
const IN_BAND_MAX: usize = 1024;
/// How long an in-band refusal may take (upgrade, close frame, the peer's
/// close reply) before its socket is dropped.
const IN_BAND_TIMEOUT: Duration = Duration::from_secs(2);

static IN_BAND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A refused handshake.
struct Refusal {
    status: StatusCode,
    /// Close code when delivered in band.
    close: u16,
    error: &'static str,
    /// Seconds, for 429 and 503.
    retry_after: Option<u64>,
}

/// `reject=close` in the query: the client (a browser, which cannot read a
/// refused handshake's status or headers) wants refusals as a close frame
/// after the upgrade.
fn refusals_in_band(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == "reject=close"))
}

/// How a valid WebSocket handshake is answered, admitted or refused.
struct Answer {
    /// `Sec-WebSocket-Accept`.
    accept_key: String,
    /// The client asked for refusals in band (`reject=close`).
    in_band: bool,
    /// The client offered [`auth::SUBPROTOCOL`]: every `101` selects it.
    subprotocol: bool,
    /// A refused socket reads (and discards) what the client sends before
    /// its close reply, as a session would: a larger message would reset the
    /// connection and could lose the close frame.
    max_message: usize,
}

impl Answer {
    /// Answers a refused handshake: an HTTP error with `Retry-After` or
    /// `WWW-Authenticate`; or, when the client asked for it and fewer than
    /// [`IN_BAND_MAX`] are in flight, `101` and at once a close frame with
    /// `refusal.close` and the JSON reason `{"error":..,"retry_after_ms":..}`.
    /// An in-band refusal never becomes a session: no permit, no subscription,
    /// gone within [`IN_BAND_TIMEOUT`].
    fn refuse(&self, req: &mut Request<Incoming>, refusal: Refusal) -> Response<Body> {
        use std::sync::atomic::Ordering;
        let max_message = self.max_message;
        let slot = self.in_band
            && IN_BAND
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < IN_BAND_MAX).then_some(n + 1)
                })
                .is_ok();
        if !slot {
            let mut r = json_error(refusal.status, refusal.error);
            if let Some(secs) = refusal.retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            if refusal.status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return r;
        }
        let mut reason = serde_json::json!({ "error": refusal.error });
        if let Some(secs) = refusal.retry_after {
            reason["retry_after_ms"] = (secs * 1000).into();
        }
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            struct Slot;
            impl Drop for Slot {
                fn drop(&mut self) {
                    IN_BAND.fetch_sub(1, Ordering::AcqRel);
                }
            }
            let _slot = Slot;
            let _ = tokio::time::timeout(IN_BAND_TIMEOUT, async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let config = WebSocketConfig::default()
                    .read_buffer_size(512)
                    .write_buffer_size(0)
                    .max_message_size(Some(max_message))
                    .max_frame_size(Some(max_message));
                let mut ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let frame = CloseFrame {
                    code: refusal.close.into(),
                    reason: reason.to_string().into(),
                };
                if ws.close(Some(frame)).await.is_ok() {
                    // Until the peer's close reply ends the stream, so the frame
                    // is not lost to a reset.
                    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
                }
            })
            .await;
        });
        self.accept(false)
    }

    /// The `101`; selecting [`auth::SUBPROTOCOL`] when the client offered
    /// it, and answering its permessage-deflate offer when `deflate`.
    fn accept(&self, deflate: bool) -> Response<Body> {
        let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
        let hs = r.headers_mut();
        if self.subprotocol {
            hs.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(auth::SUBPROTOCOL),
            );
        }
        if deflate {
            hs.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(crate::codec::deflate::RESPONSE),
            );
        }
        hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        hs.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&self.accept_key).expect("base64 is a valid header"),
        );
        r
    }
}
