//! Client WebSocket text frames: `tickfan::gateway::protocol::parse`, plus
//! `Symbol::parse` on every symbol a request yields.
//!
//! Invariants checked (any violation aborts the run as a crash):
//! * neither parser panics, on any UTF-8 input;
//! * an accepted request round-trips: re-serialising its op and symbols as
//!   `{"op":..,"symbols":[..]}` and parsing that gives the same request;
//! * an accepted `auth` request carries the frame's non-empty `token` and
//!   round-trips the same way;
//! * accepted symbols are "exactly as sent": they equal the `symbols` array
//!   of the frame as read by a plain `serde_json::Value` parse, and `op`
//!   equals the frame's `op`;
//! * `Symbol::parse` agrees with an independent oracle for the documented
//!   rules (1..=32 bytes of `A-Z a-z 0-9 . - _ : /`), and a valid symbol's
//!   `as_str()` is the input;
//! * a rejection has a non-empty, bounded message (the edge echoes it to the
//!   client) and its `error` frame is valid JSON carrying the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tickfan::{
    gateway::protocol::{error_json, parse, Request},
    market::{Symbol, SymbolError, MAX_SYMBOL_LEN},
};

/// Upper bound on a rejection message, in bytes. The only client-controlled
/// part is the unknown `op`, truncated to 32 chars and `{:?}`-escaped
/// (at most 10 bytes per char as `\u{10ffff}`), plus fixed text.
const MAX_REJECTION_MESSAGE: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(req) => check_request(text, req),
        Err(rej) => {
            assert!(!rej.message.is_empty(), "empty rejection message");
            assert!(
                rej.message.len() <= MAX_REJECTION_MESSAGE,
                "rejection message of {} bytes: {:?}",
                rej.message.len(),
                rej.message
            );
            let frame = error_json(rej.code, &rej.message, None);
            let v: Value = serde_json::from_str(&frame).expect("error frame is valid JSON");
            assert_eq!(v["type"], "error");
            assert_eq!(v["code"], rej.code.as_str());
            assert_eq!(v["message"], rej.message.as_str());
        }
    }
});

fn check_request(text: &str, req: Request) {
    let sent: Value = serde_json::from_str(text).expect("parse accepted invalid JSON");
    let (op, symbols) = match &req {
        Request::Subscribe(s) => ("subscribe", s),
        Request::Unsubscribe(s) => ("unsubscribe", s),
        Request::Auth(token) => {
            assert_eq!(sent["op"], "auth", "op differs from the frame's");
            assert!(!token.is_empty(), "empty auth token accepted");
            assert_eq!(
                sent["token"],
                token.as_str(),
                "token differs from the frame's"
            );
            let again = serde_json::json!({ "op": "auth", "token": token }).to_string();
            assert_eq!(parse(&again), Ok(req_clone(&req)), "round trip of {again}");
            return;
        }
    };

    // "Symbols exactly as sent".
    assert_eq!(sent["op"], op, "op differs from the frame's");
    let sent_symbols: Vec<&str> = sent["symbols"]
        .as_array()
        .expect("accepted frame has a symbols array")
        .iter()
        .map(|v| v.as_str().expect("accepted frame has only string symbols"))
        .collect();
    assert_eq!(
        sent_symbols,
        symbols.iter().map(String::as_str).collect::<Vec<_>>(),
        "symbols differ from the frame's"
    );

    // Round trip through a canonical re-encoding.
    let again = serde_json::json!({ "op": op, "symbols": symbols }).to_string();
    assert_eq!(parse(&again), Ok(req_clone(&req)), "round trip of {again}");

    for s in symbols {
        check_symbol(s);
    }
}

fn req_clone(req: &Request) -> Request {
    match req {
        Request::Subscribe(s) => Request::Subscribe(s.clone()),
        Request::Unsubscribe(s) => Request::Unsubscribe(s.clone()),
        Request::Auth(t) => Request::Auth(t.clone()),
    }
}

/// `Symbol::parse` against an independent statement of the rules.
fn check_symbol(s: &str) {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b".-_:/".contains(&b);
    let expected = if s.is_empty() {
        Err(SymbolError::Empty)
    } else if s.len() > MAX_SYMBOL_LEN {
        Err(SymbolError::TooLong)
    } else if !s.bytes().all(allowed) {
        Err(SymbolError::BadChar)
    } else {
        Ok(())
    };
    match Symbol::parse(s) {
        Ok(sym) => {
            assert_eq!(expected, Ok(()), "Symbol::parse accepted {s:?}");
            assert_eq!(sym.as_str(), s);
            assert_eq!(sym.to_string(), s);
            assert_eq!(Symbol::parse(sym.as_str()), Ok(sym.clone()));
        }
        Err(e) => assert_eq!(expected, Err(e), "Symbol::parse on {s:?}"),
    }
}
