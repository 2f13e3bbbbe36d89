//! Domain types with no I/O: [`Symbol`], [`Tick`], and the symbol rules that
//! the client protocol and the feed share.
//!
//! It never does I/O and imports no other module of the crate, so every
//! module may use it.

use std::{borrow::Borrow, collections::BTreeMap, fmt, sync::Arc};

/// Longest symbol accepted, in bytes.
pub const MAX_SYMBOL_LEN: usize = 32;

/// An instrument identifier: 1 to [`MAX_SYMBOL_LEN`] ASCII characters from
/// `A-Z a-z 0-9 . - _ : /`. Case-sensitive. Cloning is a refcount bump.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(Arc<str>);

/// Why a string is not a [`Symbol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("symbol is empty")]
    Empty,
    #[error("symbol is longer than {MAX_SYMBOL_LEN} characters")]
    TooLong,
    #[error("symbol may only contain A-Z a-z 0-9 . - _ : /")]
    BadChar,
}

impl Symbol {
    /// Validates `s` against the symbol rules.
    ///
    /// ```
    /// use tickfan::market::{Symbol, SymbolError};
    /// assert_eq!(Symbol::parse("BRK.B").unwrap().as_str(), "BRK.B");
    /// assert_eq!(Symbol::parse("not ok"), Err(SymbolError::BadChar));
    /// ```
    pub fn parse(s: &str) -> Result<Symbol, SymbolError> {
        if s.is_empty() {
            return Err(SymbolError::Empty);
        }
        if s.len() > MAX_SYMBOL_LEN {
            return Err(SymbolError::TooLong);
        }
        if !s.bytes().all(is_symbol_byte) {
            return Err(SymbolError::BadChar);
        }
        Ok(Symbol(Arc::from(s)))
    }

    /// The symbol text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_symbol_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/')
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Symbol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Per-symbol sequence number (+1 per tick of that symbol).
pub type Seq = i64;

/// One market-data tick, as defined by `schemas/tick.avsc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub symbol: Symbol,
    pub price: f64,
    pub size: f64,
    pub bid: Option<f64>,
    pub ask: Option<f64>,
    pub venue: Option<String>,
    /// Event time, microseconds since the Unix epoch.
    pub ts: i64,
    pub seq: Seq,
    /// Feed-specific attributes (trade conditions, flags, exchange codes...),
    /// forwarded to clients unchanged; sorted by key. Usually empty (an empty
    /// map allocates nothing). Contract version 2; version 1 ticks have none.
    pub attrs: BTreeMap<String, String>,
}

/// Microseconds since the Unix epoch, now: the clock of a tick's `ts`
/// (feeds stamp ticks with it; the edge measures latency against it).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_rules() {
        assert_eq!(Symbol::parse("AAPL").unwrap().as_str(), "AAPL");
        assert!(Symbol::parse("BRK.B").is_ok());
        assert!(Symbol::parse("EUR/USD").is_ok());
        assert!(Symbol::parse("ES:Z6_c-1").is_ok());
        assert_eq!(Symbol::parse(""), Err(SymbolError::Empty));
        assert_eq!(Symbol::parse(&"A".repeat(33)), Err(SymbolError::TooLong));
        assert!(Symbol::parse(&"A".repeat(32)).is_ok());
        assert_eq!(Symbol::parse("A B"), Err(SymbolError::BadChar));
        assert_eq!(Symbol::parse("ÄPL"), Err(SymbolError::BadChar));
        assert_eq!(Symbol::parse("a\"b"), Err(SymbolError::BadChar));
    }
}
