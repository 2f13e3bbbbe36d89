//! Token extraction from a handshake request: the `Authorization` header, a
//! `Sec-WebSocket-Protocol` entry or the `token` query parameter.

/// The WebSocket subprotocol a browser offers next to
/// `tickfan.bearer.<token>`; the edge selects it in its `101`.
pub const SUBPROTOCOL: &str = "tickfan";
/// Prefix of the subprotocol entry carrying a token.
pub const SUBPROTOCOL_TOKEN_PREFIX: &str = "tickfan.bearer.";

/// Whether the client offered the [`SUBPROTOCOL`] (then the `101` must
/// select it, or browsers fail the connection).
pub fn offers_subprotocol(headers: &http::HeaderMap) -> bool {
    subprotocols(headers).any(|p| p == SUBPROTOCOL)
}

fn subprotocols(headers: &http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The token of a handshake, from the first of: the `Authorization: Bearer
/// <t>` header; a `tickfan.bearer.<t>` entry of `Sec-WebSocket-Protocol`
/// (how a browser, which cannot set headers on a WebSocket, sends it without
/// putting it in the URL); the `token` query parameter, percent-decoded.
/// Query strings end up in access logs: do not log them.
pub fn token_from_request(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .find_map(|v| {
            let (scheme, token) = v.to_str().ok()?.trim().split_once(' ')?;
            Some(token.trim()).filter(|t| scheme.eq_ignore_ascii_case("bearer") && !t.is_empty())
        });
    if let Some(token) = bearer {
        return Some(token.to_string());
    }
    let offered = subprotocols(headers)
        .find_map(|p| p.strip_prefix(SUBPROTOCOL_TOKEN_PREFIX))
        .filter(|t| !t.is_empty());
    if let Some(token) = offered {
        return Some(token.to_string());
    }
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    Some(percent_decode(value)).filter(|t| !t.is_empty())
}

fn percent_decode(s: &str) -> String {
    let (b, mut out, mut i) = (s.as_bytes(), Vec::with_capacity(s.len()), 0);
    let hex = |i: usize| b.get(i).and_then(|&c| (c as char).to_digit(16));
    while i < b.len() {
        let (byte, len) = match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => ((h * 16 + l) as u8, 3),
            (b'+', ..) => (b' ', 1),
            (c, ..) => (c, 1),
        };
        out.push(byte);
        i += len;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_requests() {
        let mut h = http::HeaderMap::new();
        let token = |h: &http::HeaderMap, q| token_from_request(h, q);
        assert_eq!(token(&h, None), None);
        assert_eq!(
            token(&h, Some("a=1&token=x.y%2Ez+&b")).as_deref(),
            Some("x.y.z ")
        );
        assert_eq!(token(&h, Some("token=")), None);
        h.insert("authorization", "Basic dTpw".parse().unwrap());
        assert_eq!(token(&h, Some("token=q")).as_deref(), Some("q"));
        h.insert("authorization", "bearer  h.e.ader ".parse().unwrap());
        assert_eq!(token(&h, Some("token=q")).as_deref(), Some("h.e.ader"));
        let mut p = http::HeaderMap::new();
        p.insert(
            "sec-websocket-protocol",
            "tickfan, tickfan.bearer.s.u.b".parse().unwrap(),
        );
        assert_eq!(token(&p, Some("token=q")).as_deref(), Some("s.u.b"));
        assert!(offers_subprotocol(&p));
        p.insert("sec-websocket-protocol", "tickfan.bearer.".parse().unwrap());
        assert_eq!(token(&p, Some("token=q")).as_deref(), Some("q"));
        assert!(!offers_subprotocol(&p));
    }
}
