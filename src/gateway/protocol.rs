//! The client protocol's messages (see docs/protocol.md): parsing what
//! clients send, encoding what the edge answers. Tick frames are built in
//! [`crate::codec::wire`] from pre-encoded ticks.
//!
//! It never touches a socket or the registry: the session applies what it
//! parses and sends what it encodes.

use serde::Serialize;
use serde_json::Value;

use std::collections::HashMap;

use crate::{
    fanout::{FeedStatus, Gap, ResumeFrom},
    market::Symbol,
};

/// A valid client request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Symbols exactly as sent (validated one by one by the session, so one
    /// bad symbol does not spoil the rest), and the most updates per second
    /// per symbol the client wants (`"max_hz"`; `None`: the edge's default),
    /// and where it resumes symbols of the request (`"resume"`).
    Subscribe(Vec<String>, Options, Resume),
    Unsubscribe(Vec<String>),
    /// A fresh token for the session (`{"op":"auth","token":"..."}`).
    Auth(String),
}

/// How a subscribe wants its symbols delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `"max_hz"`; `None`: the edge's default.
    pub max_hz: Option<MaxHz>,
    /// `"mode":"latest"`: at most one tick of each symbol queued, the newest
    /// (`"mode":"all"`, the default: every tick, the oldest dropped when
    /// the outbox is full).
    pub latest: bool,
}

/// `"resume"` of a subscribe: symbol (as sent, one of the request's) →
/// the seq and `ts` of the last tick the client holds.
pub type Resume = HashMap<String, ResumeFrom>;

/// A subscription's requested rate, updates per second per symbol; `0`:
/// every tick (unless the edge caps it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxHz(pub f64);

impl Eq for MaxHz {}

/// Largest `max_hz` accepted (above it, every tick is about as fast).
pub const MAX_HZ_LIMIT: f64 = 1000.0;

/// Error codes sent in `{"type":"error"}` frames. Stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    UnknownOp,
    BadSymbols,
    InvalidSymbol,
    TooManySymbols,
    BinaryNotSupported,
    NotEntitled,
    RateLimited,
    AuthFailed,
    AuthDisabled,
    /// The edge holds no tick of these symbols and the connection already
    /// waits for `--max-unknown-symbols` such symbols; retry later.
    UnknownSymbol,
    /// The edge holds `--max-subscriptions` subscriptions in all.
    EdgeFull,
    /// `max_hz` is not a number from 0 to 1000.
    BadMaxHz,
    /// `mode` is not `"all"` or `"latest"`.
    BadMode,
    /// `resume` is not an object of `{"seq":n,"ts":n}` for symbols of the
    /// request.
    BadResume,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadSymbols => "bad_symbols",
            ErrorCode::InvalidSymbol => "invalid_symbol",
            ErrorCode::TooManySymbols => "too_many_symbols",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::NotEntitled => "not_entitled",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::AuthDisabled => "auth_disabled",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::EdgeFull => "edge_full",
            ErrorCode::BadMaxHz => "bad_max_hz",
            ErrorCode::BadMode => "bad_mode",
            ErrorCode::BadResume => "bad_resume",
        }
    }
}

/// A request the edge could not accept, and what to tell the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

/// Parses one text frame from a client.
pub fn parse(text: &str) -> Result<Request, Rejection> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Rejection::new(ErrorCode::BadJson, format!("malformed JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(Rejection::new(ErrorCode::BadJson, "expected a JSON object"));
    };
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => {
            return Err(Rejection::new(
                ErrorCode::UnknownOp,
                "\"op\" must be a string",
            ))
        }
        None => return Err(Rejection::new(ErrorCode::UnknownOp, "missing \"op\"")),
    };
    let max_hz = match obj.remove("max_hz") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n))
            if n.as_f64()
                .is_some_and(|x| (0.0..=MAX_HZ_LIMIT).contains(&x)) =>
        {
            Some(MaxHz(n.as_f64().expect("checked")))
        }
        Some(_) => {
            return Err(Rejection::new(
                ErrorCode::BadMaxHz,
                format!("\"max_hz\" must be a number from 0 (every tick) to {MAX_HZ_LIMIT}"),
            ))
        }
    };
    let latest = match obj.remove("mode") {
        None | Some(Value::Null) => false,
        Some(Value::String(m)) if m == "all" => false,
        Some(Value::String(m)) if m == "latest" => true,
        Some(_) => return Err(Rejection::new(
            ErrorCode::BadMode,
            "\"mode\" must be \"all\" (every tick) or \"latest\" (the newest tick of each symbol)",
        )),
    };
    let subscribe = match op.as_str() {
        "subscribe" => true,
        "unsubscribe" => false,
        "auth" => {
            return match obj.remove("token") {
                Some(Value::String(t)) if !t.is_empty() => Ok(Request::Auth(t)),
                _ => Err(Rejection::new(
                    ErrorCode::AuthFailed,
                    "\"token\" must be a non-empty string",
                )),
            };
        }
        _ => {
            let shown: String = op.chars().take(32).collect();
            return Err(Rejection::new(
                ErrorCode::UnknownOp,
                format!(
                    "unknown op {shown:?}; expected \"subscribe\", \"unsubscribe\" or \"auth\""
                ),
            ));
        }
    };
    let symbols = match obj.remove("symbols") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(Rejection::new(
                    ErrorCode::BadSymbols,
                    "\"symbols\" must be an array of strings",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(Rejection::new(
                ErrorCode::BadSymbols,
                "\"symbols\" must be an array of strings",
            ))
        }
        None => return Err(Rejection::new(ErrorCode::BadSymbols, "missing \"symbols\"")),
    };
    let resume = match obj.remove("resume") {
        None | Some(Value::Null) => Resume::new(),
        Some(v) if subscribe => parse_resume(v, &symbols)?,
        Some(_) => Resume::new(), // an unsubscribe has nothing to resume
    };
    Ok(if subscribe {
        Request::Subscribe(symbols, Options { max_hz, latest }, resume)
    } else {
        Request::Unsubscribe(symbols)
    })
}

/// `"resume":{"AAPL":{"seq":41,"ts":1764270000123456},...}`, each symbol one
/// of the request's `symbols`.
fn parse_resume(v: Value, symbols: &[String]) -> Result<Resume, Rejection> {
    let bad = |why: &str| {
        Rejection::new(
            ErrorCode::BadResume,
            format!("\"resume\" must map symbols of the request to {{\"seq\":n,\"ts\":n}} (n integers, seq >= 0, ts optional): {why}"),
        )
    };
    let Value::Object(entries) = v else {
        return Err(bad("not an object"));
    };
    let mut out = Resume::with_capacity(entries.len());
    for (symbol, at) in entries {
        if !symbols.contains(&symbol) {
            let shown: String = symbol.chars().take(32).collect();
            return Err(bad(&format!("{shown:?} is not in \"symbols\"")));
        }
        let Value::Object(at) = at else {
            return Err(bad("an entry is not an object"));
        };
        let seq = match at.get("seq").and_then(Value::as_i64) {
            Some(seq) if seq >= 0 => seq,
            _ => return Err(bad("\"seq\" missing or not an integer >= 0")),
        };
        let ts = match at.get("ts") {
            None | Some(Value::Null) => None,
            Some(t) => Some(t.as_i64().ok_or_else(|| bad("\"ts\" not an integer"))?),
        };
        out.insert(symbol, ResumeFrom { seq, ts });
    }
    Ok(out)
}

/// Messages from the edge other than tick frames.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<'a> {
    Subscribed {
        symbols: &'a [Symbol],
    },
    Unsubscribed {
        symbols: &'a [Symbol],
    },
    Status {
        feed: &'static str,
    },
    /// The edge is draining: reconnect (elsewhere) in `after_ms`; this
    /// connection is closed with 1012 at about that time.
    Reconnect {
        after_ms: u64,
    },
    /// An in-band token refresh succeeded; `exp` is the new expiry (Unix seconds).
    Authenticated {
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    },
    Gap {
        symbol: &'a Symbol,
        from_seq: i64,
        to_seq: i64,
    },
    Error {
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        symbols: Option<&'a [String]>,
        /// When a retry may succeed, for `unknown_symbol` and `edge_full`.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl Reply<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("replies always serialize")
    }
}

/// The `gap` frame for one outbox gap.
pub fn gap_json(g: &Gap) -> String {
    Reply::Gap {
        symbol: &g.symbol,
        from_seq: g.from_seq,
        to_seq: g.to_seq,
    }
    .to_json()
}

/// A `status` frame: whether the edge currently receives from Kafka.
pub fn status_json(status: FeedStatus) -> String {
    Reply::Status {
        feed: status.as_str(),
    }
    .to_json()
}

/// An `error` frame.
pub fn error_json(code: ErrorCode, message: &str, symbols: Option<&[String]>) -> String {
    error_json_retry(code, message, symbols, None)
}

/// An `error` frame saying when a retry may succeed.
pub fn error_json_retry(
    code: ErrorCode,
    message: &str,
    symbols: Option<&[String]>,
    retry_after_ms: Option<u64>,
) -> String {
    Reply::Error {
        code: code.as_str(),
        message,
        symbols,
        retry_after_ms,
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse(text).unwrap_err().code
    }

    #[test]
    fn subscribe_options() {
        let opts = |text: &str| match parse(text) {
            Ok(Request::Subscribe(_, o, _)) => Ok(o),
            Ok(other) => panic!("{other:?}"),
            Err(r) => Err(r.code),
        };
        let sub = |extra: &str| format!(r#"{{"op":"subscribe","symbols":["A"]{extra}}}"#);
        assert_eq!(opts(&sub("")), Ok(Options::default()));
        assert_eq!(
            opts(&sub(r#","max_hz":4,"mode":"latest""#)),
            Ok(Options {
                max_hz: Some(MaxHz(4.0)),
                latest: true
            })
        );
        assert_eq!(
            opts(&sub(r#","max_hz":0.5,"mode":"all""#)).unwrap().max_hz,
            Some(MaxHz(0.5))
        );
        assert_eq!(opts(&sub(r#","max_hz":null"#)).unwrap().max_hz, None);
        for bad in [
            r#","max_hz":-1"#,
            r#","max_hz":1001"#,
            r#","max_hz":"4""#,
            r#","max_hz":[4]"#,
        ] {
            assert_eq!(opts(&sub(bad)), Err(ErrorCode::BadMaxHz), "{bad}");
        }
        for bad in [r#","mode":"newest""#, r#","mode":1"#, r#","mode":"LATEST""#] {
            assert_eq!(opts(&sub(bad)), Err(ErrorCode::BadMode), "{bad}");
        }
    }

    #[test]
    fn subscribe_resume() {
        let resume = |extra: &str| match parse(&format!(
            r#"{{"op":"subscribe","symbols":["A","B"],"resume":{extra}}}"#
        )) {
            Ok(Request::Subscribe(_, _, r)) => Ok(r),
            Ok(other) => panic!("{other:?}"),
            Err(r) => Err(r.code),
        };
        let r = resume(r#"{"A":{"seq":41,"ts":1764270000123456},"B":{"seq":0}}"#).unwrap();
        assert_eq!(
            r["A"],
            ResumeFrom {
                seq: 41,
                ts: Some(1_764_270_000_123_456)
            }
        );
        assert_eq!(r["B"], ResumeFrom { seq: 0, ts: None });
        assert_eq!(resume("null"), Ok(Resume::new()));
        for bad in [
            r#"[]"#,
            r#"{"C":{"seq":1}}"#,
            r#"{"A":7}"#,
            r#"{"A":{}}"#,
            r#"{"A":{"seq":-1}}"#,
            r#"{"A":{"seq":1.5}}"#,
            r#"{"A":{"seq":"1"}}"#,
            r#"{"A":{"seq":1,"ts":"x"}}"#,
        ] {
            assert_eq!(resume(bad), Err(ErrorCode::BadResume), "{bad}");
        }
    }

    #[test]
    fn parses_requests() {
        assert_eq!(
            parse(r#"{"op":"subscribe","symbols":["AAPL","MSFT"]}"#),
            Ok(Request::Subscribe(
                vec!["AAPL".into(), "MSFT".into()],
                Options::default(),
                Resume::new()
            ))
        );
        assert_eq!(
            parse(r#"{"op":"auth","token":"abc"}"#),
            Ok(Request::Auth("abc".into()))
        );
        assert_eq!(
            parse(r#"{"op":"auth"}"#).unwrap_err().code,
            ErrorCode::AuthFailed
        );
        assert_eq!(
            parse(r#"{"op":"unsubscribe","symbols":[],"id":7}"#),
            Ok(Request::Unsubscribe(vec![]))
        );
    }

    #[test]
    fn rejects_bad_input_with_codes() {
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code("\"subscribe\""), ErrorCode::BadJson);
        assert_eq!(code(r#"{"symbols":["A"]}"#), ErrorCode::UnknownOp);
        assert_eq!(
            code(r#"{"op":"nuke","symbols":["A"]}"#),
            ErrorCode::UnknownOp
        );
        assert_eq!(code(r#"{"op":5,"symbols":["A"]}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"op":"subscribe"}"#), ErrorCode::BadSymbols);
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":"AAPL"}"#),
            ErrorCode::BadSymbols
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["A",1]}"#),
            ErrorCode::BadSymbols
        );
    }

    #[test]
    fn replies_encode_as_documented() {
        let s = [Symbol::parse("AAPL").unwrap()];
        assert_eq!(
            Reply::Subscribed { symbols: &s }.to_json(),
            r#"{"type":"subscribed","symbols":["AAPL"]}"#
        );
        let g = Gap {
            symbol: s[0].clone(),
            from_seq: 3,
            to_seq: 9,
        };
        assert_eq!(
            gap_json(&g),
            r#"{"type":"gap","symbol":"AAPL","from_seq":3,"to_seq":9}"#
        );
        assert_eq!(
            error_json(ErrorCode::InvalidSymbol, "bad", Some(&["a b".to_string()])),
            r#"{"type":"error","code":"invalid_symbol","message":"bad","symbols":["a b"]}"#
        );
        assert_eq!(
            error_json_retry(
                ErrorCode::UnknownSymbol,
                "later",
                Some(&["ZZZZ".to_string()]),
                Some(1000)
            ),
            r#"{"type":"error","code":"unknown_symbol","message":"later","symbols":["ZZZZ"],"retry_after_ms":1000}"#
        );
    }
}
