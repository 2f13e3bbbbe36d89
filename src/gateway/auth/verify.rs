//! Token verification: signature and algorithm against the configured
//! keys, then the claims (`exp`, `nbf`, `iss`, `aud`, `sub`) and the
//! entitlements (`symbols`) a valid token grants.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::keys::PublicKeys;

/// The algorithms accepted, in the order of [`Verifier`]'s rules.
pub(super) const ALGORITHMS: [Algorithm; 3] =
    [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256];
/// Longer tokens are refused unread.
const MAX_TOKEN_BYTES: usize = 8192;

/// Checks tokens against the configured keys and rules. Built once at
/// startup; cheap to share in an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    pub(super) secret: Option<DecodingKey>,
    pub(super) keys: PublicKeys,
    /// Validation rules per algorithm, as in [`ALGORITHMS`].
    pub(super) rules: [Validation; 3],
    pub(super) grace: Duration,
}

impl Verifier {
    /// Checks a token (signature, algorithm, `exp`, `nbf`, `iss`, `aud`,
    /// claim types) and returns what it grants.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let header = peek_header(token).ok_or(AuthError::Malformed)?;
        if header.get("crit").is_some() {
            return Err(AuthError::Malformed); // we understand no extension
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthError::Malformed)?;
        let i = alg
            .parse::<Algorithm>()
            .ok()
            .and_then(|a| ALGORITHMS.iter().position(|&x| x == a));
        let i = i.ok_or(AuthError::UnsupportedAlgorithm)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(AuthError::Malformed),
        };
        let key = self.key_for(ALGORITHMS[i], kid)?;
        let data = jsonwebtoken::decode::<Value>(token, key, &self.rules[i]).map_err(refusal)?;
        grant(&data.claims)
    }

    /// How long a session may outlive its token's `exp` without a refresh.
    pub fn expiry_grace(&self) -> Duration {
        self.grace
    }

    /// The key for a token's `alg` and `kid`; the algorithm must fit the key.
    fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<&DecodingKey, AuthError> {
        let key = match (&self.keys, alg) {
            (_, Algorithm::HS256) => {
                return self.secret.as_ref().ok_or(AuthError::UnsupportedAlgorithm)
            }
            (PublicKeys::None, _) => return Err(AuthError::UnsupportedAlgorithm),
            (PublicKeys::Pem(key), _) => key,
            (PublicKeys::Jwks(keys), _) => match kid {
                Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
                None if keys.len() == 1 => keys.first(),
                None => None,
            }
            .ok_or(AuthError::UnknownKey)?,
        };
        (key.alg == alg)
            .then_some(&key.key)
            .ok_or(AuthError::UnsupportedAlgorithm)
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `sub`, if any.
    pub subject: Option<String>,
    /// From `exp` (required, so always set by [`Verifier::verify`]).
    pub expires_at: Option<SystemTime>,
    /// From `symbols`.
    pub entitlements: Entitlements,
}

/// Symbol patterns a user may subscribe to, from the claim `symbols` (array
/// of strings); an absent claim grants everything, an empty array nothing.
/// Pattern: `*` (all), `PREFIX*` (prefix match) or an exact symbol;
/// case-sensitive. The default allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entitlements {
    all: bool,
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl Entitlements {
    /// Everything.
    pub fn all() -> Self {
        Entitlements {
            all: true,
            ..Entitlements::default()
        }
    }

    /// From patterns; `None` if one is empty or has a `*` other than a last
    /// character.
    pub fn from_patterns<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut e = Entitlements::default();
        for p in patterns {
            match p.strip_suffix('*') {
                _ if p.is_empty() => return None,
                Some("") => e.all = true,
                Some(prefix) if !prefix.contains('*') => e.prefixes.push(prefix.to_string()),
                None if !p.contains('*') => {
                    e.exact.insert(p.to_string());
                }
                _ => return None,
            }
        }
        Some(e)
    }

    /// Whether `symbol` may be subscribed to.
    pub fn allows(&self, symbol: &str) -> bool {
        self.all
            || self.exact.contains(symbol)
            || self.prefixes.iter().any(|p| symbol.starts_with(p.as_str()))
    }
}

/// Why a token was refused. `reason()` is the short text for the client
/// (never internal detail); `label()` a snake_case metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum AuthError {
    /// No token in the request.
    Missing,
    /// Not a well-formed JWS compact token.
    Malformed,
    /// The signature does not match.
    BadSignature,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    NotYetValid,
    /// `iss` missing or not the configured one.
    WrongIssuer,
    /// `aud` missing or not holding the configured one.
    WrongAudience,
    /// No configured key has the token's `kid` (or the token has none and
    /// the JWKS has several keys).
    UnknownKey,
    /// `alg` is not HS256, RS256 or ES256, or does not fit the key.
    UnsupportedAlgorithm,
    /// A claim is missing (`exp`) or of the wrong type (`exp`, `nbf`, `sub`,
    /// `symbols`).
    BadClaims,
}

impl AuthError {
    /// Short text for the client (HTTP 401 body, `auth_failed` message).
    pub fn reason(self) -> &'static str {
        self.texts().0
    }

    /// Metrics label.
    pub fn label(self) -> &'static str {
        self.texts().1
    }

    fn texts(self) -> (&'static str, &'static str) {
        match self {
            AuthError::Missing => ("missing token", "missing"),
            AuthError::Malformed => ("invalid token", "malformed"),
            AuthError::BadSignature => ("invalid token", "bad_signature"),
            AuthError::Expired => ("token expired", "expired"),
            AuthError::NotYetValid => ("token not yet valid", "not_yet_valid"),
            AuthError::WrongIssuer => ("wrong issuer", "wrong_issuer"),
            AuthError::WrongAudience => ("wrong audience", "wrong_audience"),
            AuthError::UnknownKey => ("unknown key", "unknown_key"),
            AuthError::UnsupportedAlgorithm => ("unsupported algorithm", "unsupported_algorithm"),
            AuthError::BadClaims => ("invalid claims", "bad_claims"),
        }
    }
}

/// Unpadded base64url, as in JWS; `None` on a foreign character.
pub(super) fn b64url(s: &str) -> Option<Vec<u8>> {
    let (mut out, mut acc, mut bits) = (Vec::with_capacity(s.len() * 3 / 4), 0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        (acc, bits) = ((acc << 6 | u32::from(v)) & 0xffff, bits + 6);
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The JSON header of a compact JWS (three parts), unverified.
fn peek_header(token: &str) -> Option<serde_json::Map<String, Value>> {
    let mut parts = token.split('.');
    let header = parts.next()?;
    if parts.count() != 2 {
        return None;
    }
    serde_json::from_slice(&b64url(header)?).ok()
}

fn refusal(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            AuthError::BadClaims
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            AuthError::UnsupportedAlgorithm
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        _ => AuthError::BadSignature,
    }
}

/// The grant of verified claims; types are checked strictly.
fn grant(claims: &Value) -> Result<Grant, AuthError> {
    let subject = match claims.get("sub") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(AuthError::BadClaims),
    };
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    let expires_at = exp
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .ok_or(AuthError::BadClaims)?;
    let entitlements = match claims.get("symbols") {
        None => Entitlements::all(),
        Some(v) => {
            let patterns: Option<Vec<&str>> = v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_str).collect());
            patterns
                .and_then(Entitlements::from_patterns)
                .ok_or(AuthError::BadClaims)?
        }
    };
    Ok(Grant {
        subject,
        expires_at: Some(expires_at),
        entitlements,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;
    use AuthError::*;

    #[test]
    fn valid_tokens() {
        let exp = now() + 600;
        let c = json!({"sub": "alice", "exp": exp});
        for (v, alg, kid) in [
            (hs(), Algorithm::HS256, None),
            (pem("rsa-public.pem"), Algorithm::RS256, None),
            (pem("ec-public.pem"), Algorithm::ES256, Some("ignored")),
            (jwks(), Algorithm::RS256, Some("rsa1")),
            (jwks(), Algorithm::ES256, Some("ec1")),
        ] {
            let g = v.verify(&sign(alg, kid, &c)).unwrap();
            assert_eq!(g.subject.as_deref(), Some("alice"));
            assert_eq!(g.expires_at, Some(UNIX_EPOCH + Duration::from_secs(exp)));
            assert_eq!(g.entitlements, Entitlements::all());
        }
        // Unusable keys are skipped; the one usable key serves tokens without `kid`.
        let mut set: Value =
            serde_json::from_slice(&std::fs::read(data("jwks.json")).unwrap()).unwrap();
        set["keys"][0]["use"] = json!("enc");
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": "A".repeat(64), "y": "A".repeat(64)});
        let keys = json!({"keys": [p384, set["keys"][0], set["keys"][1]]}).to_string();
        let v = with(|c| c.jwt_jwks = Some(temp("one.json", &keys)));
        assert!(v.verify(&sign(Algorithm::ES256, None, &claims())).is_ok());
        assert_eq!(v.expiry_grace(), Duration::from_secs(30));
    }

    #[test]
    fn time_issuer_audience() {
        let (v, exp) = (hs(), now() + 600);
        assert_eq!(hs256(&v, json!({"exp": now() - 120})), Err(Expired));
        assert_eq!(
            hs256(&v, json!({"exp": now() - 10})),
            Ok(()),
            "within leeway"
        );
        assert_eq!(
            hs256(&v, json!({"exp": exp, "nbf": now() + 300})),
            Err(NotYetValid)
        );
        assert_eq!(
            hs256(&v, json!({"exp": exp, "nbf": now() + 10})),
            Ok(()),
            "within leeway"
        );
        assert_eq!(hs256(&v, json!({"sub": "no exp"})), Err(BadClaims));
        assert_eq!(hs256(&v, json!({"exp": "tomorrow"})), Err(BadClaims));
        assert_eq!(hs256(&v, json!({"exp": exp, "sub": 7})), Err(BadClaims));
        // `iss` and `aud` are checked only when configured.
        assert_eq!(
            hs256(&v, json!({"exp": exp, "iss": "x", "aud": "y"})),
            Ok(())
        );
        let v = with(|c| {
            c.jwt_secret = Some(SECRET.into());
            c.jwt_issuer = Some("idp".into());
            c.jwt_audience = Some("tickfan".into());
        });
        for (iss, aud, want) in [
            (json!("idp"), json!("tickfan"), Ok(())),
            (json!("idp"), json!(["web", "tickfan"]), Ok(())),
            (json!("evil"), json!("tickfan"), Err(WrongIssuer)),
            (json!(null), json!("tickfan"), Err(WrongIssuer)),
            (json!("idp"), json!(["web"]), Err(WrongAudience)),
            (json!("idp"), json!(null), Err(WrongAudience)),
        ] {
            assert_eq!(
                hs256(&v, json!({"exp": exp, "iss": iss, "aud": aud})),
                want,
                "{iss} {aud}"
            );
        }
    }

    #[test]
    fn forged_tokens_are_refused() {
        let rsa = pem("rsa-public.pem");
        let token = sign(Algorithm::RS256, None, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let flip = if &parts[2][20..21] == "A" { "B" } else { "A" };
        let flipped = format!("{}{flip}{}", &parts[2][..20], &parts[2][21..]);
        let tampered = format!("{}.{}.{flipped}", parts[0], parts[1]);
        assert_eq!(rsa.verify(&tampered), Err(BadSignature));
        let other = sign(
            Algorithm::RS256,
            None,
            &json!({"sub": "eve", "exp": now() + 600}),
        );
        let other = other.split('.').nth(1).unwrap();
        assert_eq!(
            rsa.verify(&format!("{}.{other}.{}", parts[0], parts[2])),
            Err(BadSignature)
        );
        // {"alg":"none","typ":"JWT"}, no signature.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert_eq!(rsa.verify(&none), Err(UnsupportedAlgorithm));
        // RS/HS confusion: HS256 keyed with the public key everyone knows.
        let both = with(|c| {
            c.jwt_secret = Some(SECRET.into());
            c.jwt_public_key = Some(data("rsa-public.pem"));
        });
        for file in ["rsa-public.pem", "jwks.json"] {
            let public = EncodingKey::from_secret(&std::fs::read(data(file)).unwrap());
            let forged = sign_with(&public, Algorithm::HS256, Some("rsa1"), &claims());
            assert_eq!(rsa.verify(&forged), Err(UnsupportedAlgorithm));
            assert_eq!(jwks().verify(&forged), Err(UnsupportedAlgorithm));
            assert_eq!(both.verify(&forged), Err(BadSignature));
        }
        // An algorithm that does not fit the key, or is not accepted at all.
        assert_eq!(
            pem("ec-public.pem").verify(&token),
            Err(UnsupportedAlgorithm)
        );
        assert_eq!(hs().verify(&token), Err(UnsupportedAlgorithm));
        let es = sign(Algorithm::ES256, Some("rsa1"), &claims());
        assert_eq!(jwks().verify(&es), Err(UnsupportedAlgorithm));
        let hs384 = sign(Algorithm::HS384, None, &claims());
        assert_eq!(hs().verify(&hs384), Err(UnsupportedAlgorithm));
    }

    #[test]
    fn key_selection_and_garbage() {
        let v = jwks();
        let unknown = sign(Algorithm::RS256, Some("rsa9"), &claims());
        assert_eq!(v.verify(&unknown), Err(UnknownKey));
        assert_eq!(
            v.verify(&sign(Algorithm::RS256, None, &claims())),
            Err(UnknownKey)
        );
        assert_eq!(v.verify(" "), Err(Missing));
        let token = sign(Algorithm::RS256, Some("rsa1"), &claims());
        let long = "a".repeat(9000);
        let four = format!("{token}.x");
        for garbage in ["garbage", "a.b.c", "e30.e30.", &four, &long, &token[1..]] {
            assert_eq!(v.verify(garbage), Err(Malformed), "{garbage}");
        }
    }

    #[test]
    fn entitlements() {
        let e = Entitlements::from_patterns(["AAPL", "BRK.*"]).unwrap();
        assert!(e.allows("AAPL") && e.allows("BRK.A") && e.allows("BRK."));
        assert!(!e.allows("AAPLX") && !e.allows("aapl") && !e.allows("MSFT") && !e.allows("BRK"));
        assert!(Entitlements::from_patterns(["X", "*"])
            .unwrap()
            .allows("MSFT"));
        assert!(!Entitlements::from_patterns([]).unwrap().allows("MSFT"));
        for bad in ["", "A*B", "**"] {
            assert_eq!(Entitlements::from_patterns([bad]), None, "{bad}");
        }
        let v = hs();
        let exp = now() + 60;
        let grant = |symbols: Value| {
            v.verify(&sign(
                Algorithm::HS256,
                None,
                &json!({"exp": exp, "symbols": symbols}),
            ))
        };
        let e = grant(json!(["MSFT", "ES*"])).unwrap().entitlements;
        assert!(e.allows("ESZ5") && e.allows("MSFT") && !e.allows("AAPL"));
        assert!(!grant(json!([])).unwrap().entitlements.allows("AAPL"));
        for bad in [json!("AAPL"), json!([1]), json!(null), json!(["A*B"])] {
            assert_eq!(grant(bad), Err(BadClaims));
        }
    }
}
