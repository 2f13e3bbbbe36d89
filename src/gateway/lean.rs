//! Lean answers: a connection the edge will not serve with hyper (the
//! HTTP-phase cap is reached, or descriptors are scarce) still gets an HTTP
//! answer, written by hand: `200` to a probe (`GET /healthz`, `GET /readyz`,
//! recognised from the request line), a canned `503` with `Retry-After: 1` to
//! anything else. Each is done within two [`LEAN_TIMEOUT`]s; [`super::door`]
//! bounds how many are in flight.

use std::{sync::LazyLock, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::Shared;

/// How long a lean answer waits for the request line, and then how long it
/// may take to write its answer.
pub const LEAN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a connection is answered lean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// The HTTP-phase slots are all taken.
    Cap,
    /// The connection's descriptor is in the reserve.
    Descriptors,
}

impl Why {
    pub(super) fn label(self) -> &'static str {
        match self {
            Why::Cap => "http_cap",
            Why::Descriptors => "fd_reserve",
        }
    }

    pub(super) fn error(self) -> &'static str {
        match self {
            Why::Cap => "too many HTTP connections",
            Why::Descriptors => "out of file descriptors",
        }
    }

    fn response(self) -> &'static [u8] {
        static CAP: LazyLock<Vec<u8>> = LazyLock::new(|| refusal(Why::Cap));
        static DESCRIPTORS: LazyLock<Vec<u8>> = LazyLock::new(|| refusal(Why::Descriptors));
        match self {
            Why::Cap => &CAP,
            Why::Descriptors => &DESCRIPTORS,
        }
    }
}

fn refusal(why: Why) -> Vec<u8> {
    let body = serde_json::json!({ "error": format!("{}; retry later", why.error()) }).to_string();
    raw_response(
        "503 Service Unavailable",
        "application/json",
        "retry-after: 1\r\n",
        &body,
    )
}

fn raw_response(status: &str, content_type: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A probe, from the start of a request.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    Health,
    Ready,
}

fn probe(head: &[u8]) -> Option<Probe> {
    let path = head.strip_prefix(b"GET ")?;
    let is = |p: &[u8]| {
        path.strip_prefix(p)
            .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'?')))
    };
    if is(b"/healthz") {
        Some(Probe::Health)
    } else if is(b"/readyz") {
        Some(Probe::Ready)
    } else {
        None
    }
}

/// Reads the request line (within [`LEAN_TIMEOUT`]), answers a probe as the
/// routes would and anything else with the canned 503, then closes after the
/// client has (within another [`LEAN_TIMEOUT`]), so that no unread request
/// bytes turn the close into a reset that loses the answer.
pub(super) async fn answer(mut stream: TcpStream, why: Why, shared: &Shared) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    let _ = tokio::time::timeout(LEAN_TIMEOUT, async {
        while n < buf.len() && !buf[..n].contains(&b'\n') {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(got) => n += got,
            }
        }
    })
    .await;
    let ready;
    let answer: &[u8] = match probe(&buf[..n]) {
        Some(Probe::Health) => {
            static OK: LazyLock<Vec<u8>> =
                LazyLock::new(|| raw_response("200 OK", "text/plain; charset=utf-8", "", "ok\n"));
            &OK
        }
        Some(Probe::Ready) => {
            ready = match shared.readiness.check() {
                Ok(()) => raw_response("200 OK", "text/plain; charset=utf-8", "", "ready\n"),
                Err(why) => raw_response(
                    "503 Service Unavailable",
                    "text/plain; charset=utf-8",
                    "",
                    &format!("not ready: {why}\n"),
                ),
            };
            &ready
        }
        None => {
            shared.metrics.http_rejected(why.label());
            why.response()
        }
    };
    let _ = tokio::time::timeout(LEAN_TIMEOUT, async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_recognised_from_the_request_line() {
        assert_eq!(probe(b"GET /healthz HTTP/1.1\r\n"), Some(Probe::Health));
        assert_eq!(probe(b"GET /readyz?x=1 HTTP/1.1"), Some(Probe::Ready));
        assert_eq!(probe(b"GET /healthzz HTTP/1.1"), None);
        assert_eq!(probe(b"POST /healthz HTTP/1.1"), None);
        assert_eq!(probe(b"GET /ws HTTP/1.1"), None);
        assert_eq!(probe(b"GET /heal"), None);
        assert_eq!(probe(b""), None);
    }

    #[test]
    fn canned_refusals_are_complete_responses() {
        let r = String::from_utf8(Why::Cap.response().to_vec()).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("\r\nretry-after: 1\r\n"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "too many HTTP connections; retry later");
    }
}
