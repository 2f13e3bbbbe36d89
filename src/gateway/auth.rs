//! JWT verification at the WebSocket handshake.
//!
//! Auth is on when a key is configured. `GET /ws` then needs a JWT, checked
//! *before* the upgrade (`Authorization: Bearer`, else `?token=` for browsers);
//! a missing or refused token gets HTTP 401 with a short [`AuthError::reason`]
//! and no internal detail. Keys come only from the configuration (an HS256
//! secret, an RS256/ES256 PEM key or a JWKS file), never from the token
//! (`jku`, `jwk`, `x5u` are ignored), and a token's `alg` must fit the key it
//! selects: `none`, other algorithms and the RS256→HS256 confusion are refused.
//! `exp` is required. The claim `symbols` bounds what a session may subscribe
//! to. A session may refresh its token in-band; one whose token expired is
//! closed at `exp` + `--jwt-expiry-grace`.

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, ensure, Context};
use jsonwebtoken::{
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey, Validation,
};
use serde_json::Value;

/// The algorithms accepted, in the order of [`Verifier`]'s rules.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256];
/// Longer tokens are refused unread.
const MAX_TOKEN_BYTES: usize = 8192;
/// Shortest HS256 secret (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;
/// Largest `--jwt-leeway`.
const MAX_LEEWAY: Duration = Duration::from_secs(600);

/// JWT settings. Auth is on when a key is configured: `--jwt-secret` (HS256)
/// and/or one of `--jwt-public-key`, `--jwt-jwks` (RS256, ES256); each
/// token's `alg` says which applies.
#[derive(clap::Args, Clone)]
#[group(id = "auth")]
#[command(next_help_heading = "Authentication (JWT)")]
pub struct Config {
    /// HS256 shared secret (at least 32 bytes), or `@PATH` to read it from a
    /// file (a trailing newline is ignored).
    #[arg(
        long,
        env = "TICKFAN_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET|@PATH"
    )]
    pub jwt_secret: Option<String>,

    /// PEM file holding the RS256 (RSA 2048-4096 bits) or ES256 (P-256)
    /// public key that signs tokens.
    #[arg(
        long,
        env = "TICKFAN_JWT_PUBLIC_KEY",
        value_name = "PATH",
        conflicts_with = "jwt_jwks"
    )]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS file (JSON) with RS256/ES256 public keys, chosen by the token's
    /// `kid` (a token without `kid` needs a JWKS of exactly one key).
    #[arg(long, env = "TICKFAN_JWT_JWKS", value_name = "PATH")]
    pub jwt_jwks: Option<PathBuf>,

    /// Required `iss`, if set.
    #[arg(long, env = "TICKFAN_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` (the token's `aud`, a string or an array, must hold it),
    /// if set.
    #[arg(long, env = "TICKFAN_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf` (whole seconds, at most 10m).
    #[arg(long, env = "TICKFAN_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// How long a session may outlive its token's `exp` without an in-band
    /// refresh before it is closed.
    #[arg(long, env = "TICKFAN_JWT_EXPIRY_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_expiry_grace: Duration,
}

impl Default for Config {
    /// Auth off, with the flags' default durations.
    fn default() -> Self {
        Config {
            jwt_secret: None,
            jwt_public_key: None,
            jwt_jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(30),
            jwt_expiry_grace: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for Config {
    /// Like a derived `Debug`, but an inline secret is redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret =
            self.jwt_secret
                .as_deref()
                .map(|s| if s.starts_with('@') { s } else { "<redacted>" });
        f.debug_struct("Config")
            .field("jwt_secret", &secret)
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_jwks", &self.jwt_jwks)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("jwt_expiry_grace", &self.jwt_expiry_grace)
            .finish()
    }
}

impl Config {
    /// Whether auth is on: some key is configured.
    pub fn enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some() || self.jwt_jwks.is_some()
    }

    /// Checks the settings and loads every key, so that a bad file fails at
    /// startup rather than at the first client.
    pub fn validate(&self) -> anyhow::Result<()> {
        Verifier::from_config(self).map(drop)
    }
}

/// Checks tokens against the configured keys and rules. Built once at
/// startup; cheap to share in an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    secret: Option<DecodingKey>,
    keys: PublicKeys,
    /// Validation rules per algorithm, as in [`ALGORITHMS`].
    rules: [Validation; 3],
    grace: Duration,
}

#[derive(Debug)]
enum PublicKeys {
    None,
    /// `--jwt-public-key`: used whatever the token's `kid`.
    Pem(Key),
    /// `--jwt-jwks`: selected by `kid`.
    Jwks(Vec<Key>),
}

#[derive(Debug)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl Verifier {
    /// `None` when auth is off (no key configured). Errors (bad settings,
    /// unreadable file, bad PEM or JWKS) are startup errors naming the flag.
    pub fn from_config(c: &Config) -> anyhow::Result<Option<Verifier>> {
        for (flag, v) in [
            ("--jwt-issuer", &c.jwt_issuer),
            ("--jwt-audience", &c.jwt_audience),
        ] {
            ensure!(
                v.as_ref().is_none_or(|v| !v.is_empty()),
                "{flag} must not be empty"
            );
            ensure!(
                v.is_none() || c.enabled(),
                "{flag} needs a key: --jwt-secret, --jwt-public-key or --jwt-jwks"
            );
        }
        ensure!(
            c.jwt_leeway <= MAX_LEEWAY,
            "--jwt-leeway must be at most {}",
            humantime::format_duration(MAX_LEEWAY)
        );
        if !c.enabled() {
            return Ok(None);
        }
        let keys = match (&c.jwt_public_key, &c.jwt_jwks) {
            (Some(_), Some(_)) => {
                bail!("--jwt-public-key and --jwt-jwks are exclusive (put the key in the JWKS)")
            }
            (Some(path), None) => PublicKeys::Pem(
                load_pem(path).with_context(|| format!("--jwt-public-key {}", path.display()))?,
            ),
            (None, Some(path)) => PublicKeys::Jwks(
                load_jwks(path).with_context(|| format!("--jwt-jwks {}", path.display()))?,
            ),
            (None, None) => PublicKeys::None,
        };
        let secret = c
            .jwt_secret
            .as_deref()
            .map(load_secret)
            .transpose()
            .context("--jwt-secret")?;
        let rules = ALGORITHMS.map(|alg| {
            let mut v = Validation::new(alg);
            v.leeway = c.jwt_leeway.as_secs();
            v.validate_nbf = true;
            // The crate checks `iss`/`aud` only when present unless required,
            // and refuses any `aud` when none is configured unless told not to.
            v.validate_aud = c.jwt_audience.is_some();
            let mut required = vec!["exp"];
            if let Some(iss) = &c.jwt_issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            if let Some(aud) = &c.jwt_audience {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            v
        });
        Ok(Some(Verifier {
            secret,
            keys,
            rules,
            grace: c.jwt_expiry_grace,
        }))
    }

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

/// Unpadded base64url, as in JWS; `None` on a foreign character.
fn b64url(s: &str) -> Option<Vec<u8>> {
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

fn load_secret(s: &str) -> anyhow::Result<DecodingKey> {
    let secret = match s.strip_prefix('@') {
        Some(path) => {
            let mut b = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
            if b.ends_with(b"\n") {
                b.pop();
                if b.ends_with(b"\r") {
                    b.pop();
                }
            }
            b
        }
        None => s.as_bytes().to_vec(),
    };
    ensure!(
        secret.len() >= MIN_SECRET_BYTES,
        "the secret must be at least {MIN_SECRET_BYTES} bytes, got {}",
        secret.len()
    );
    Ok(DecodingKey::from_secret(&secret))
}

fn load_pem(path: &Path) -> anyhow::Result<Key> {
    let pem = std::fs::read(path).context("cannot read")?;
    let text = String::from_utf8_lossy(&pem);
    ensure!(
        [
            "-----BEGIN PUBLIC KEY-----",
            "-----BEGIN RSA PUBLIC KEY-----"
        ]
        .iter()
        .any(|b| text.contains(b)),
        "not a PEM public key (BEGIN PUBLIC KEY); private keys and certificates are refused"
    );
    let key = DecodingKey::from_rsa_pem(&pem).or_else(|_| DecodingKey::from_ec_pem(&pem));
    let jwk = key
        .and_then(|k| Jwk::from_decoding_key(&k, None))
        .map_err(|e| anyhow!("bad public key: {e}"))?;
    to_key(&jwk)?.ok_or_else(|| anyhow!("not an RSA or P-256 public key"))
}

fn load_jwks(path: &Path) -> anyhow::Result<Vec<Key>> {
    let set: JwkSet = serde_json::from_slice(&std::fs::read(path).context("cannot read")?)
        .context("not a JWKS (JSON with \"keys\")")?;
    let mut keys: Vec<Key> = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let what = || {
            format!(
                "key {i} (kid {:?})",
                jwk.common.key_id.as_deref().unwrap_or("")
            )
        };
        match to_key(jwk).with_context(what)? {
            Some(key) => {
                ensure!(
                    key.kid.is_none() || keys.iter().all(|k| k.kid != key.kid),
                    "{}: duplicate kid",
                    what()
                );
                keys.push(key);
            }
            None => {
                tracing::warn!(key = %what(), "JWKS key skipped: not an RS256/ES256 signing key")
            }
        }
    }
    ensure!(!keys.is_empty(), "no RS256 or ES256 signing key");
    Ok(keys)
}

/// The key of a JWK, or `None` if it is not meant for RS256/ES256 signatures.
/// RSA keys must be 2048-4096 bits; EC points are checked.
fn to_key(jwk: &Jwk) -> anyhow::Result<Option<Key>> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return Ok(None),
    };
    let wrong_alg = jwk
        .common
        .key_algorithm
        .is_some_and(|a| a != KeyAlgorithm::from(alg));
    if wrong_alg
        || jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Ok(None);
    }
    if let AlgorithmParameters::RSA(p) = &jwk.algorithm {
        let n = b64url(&p.n).ok_or_else(|| anyhow!("bad base64url in n"))?;
        let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
        ensure!(
            (2048..=4096).contains(&bits),
            "RSA keys must be 2048-4096 bits, this one is about {bits}"
        );
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| anyhow!("bad key: {e}"))?;
    // A bad EC point is only noticed when a verifier is built: build one now.
    jsonwebtoken::crypto::verify("AA", b"", &key, alg).map_err(|e| anyhow!("bad key: {e}"))?;
    Ok(Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use AuthError::*;

    const SECRET: &str = "test-only-secret-0123456789abcdef";

    fn data(file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/jwt")
            .join(file)
    }
    fn temp(name: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("tickfan-auth-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }
    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }
    fn claims() -> Value {
        json!({"sub": "alice", "exp": now() + 600})
    }
    fn config(f: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::default();
        f(&mut c);
        c
    }
    fn with(f: impl FnOnce(&mut Config)) -> Verifier {
        Verifier::from_config(&config(f)).unwrap().expect("auth on")
    }
    fn hs() -> Verifier {
        with(|c| c.jwt_secret = Some(SECRET.into()))
    }
    fn pem(file: &str) -> Verifier {
        with(|c| c.jwt_public_key = Some(data(file)))
    }
    fn jwks() -> Verifier {
        with(|c| c.jwt_jwks = Some(data("jwks.json")))
    }
    fn sign_with(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let kid = kid.map(Into::into);
        encode(
            &Header {
                kid,
                ..Header::new(alg)
            },
            claims,
            key,
        )
        .unwrap()
    }
    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let read = |f| std::fs::read(data(f)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rsa-private.pem")).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec-private.pem")).unwrap(),
            _ => EncodingKey::from_secret(SECRET.as_bytes()),
        };
        sign_with(&key, alg, kid, claims)
    }
    fn hs256(v: &Verifier, claims: Value) -> Result<(), AuthError> {
        v.verify(&sign(Algorithm::HS256, None, &claims)).map(drop)
    }

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

    #[test]
    fn config_errors() {
        assert!(Config::default().validate().is_ok() && !Config::default().enabled());
        assert!(Verifier::from_config(&Config::default()).unwrap().is_none());
        let secret = temp("secret", &format!("{SECRET}\r\n"));
        let at_secret = config(|c| c.jwt_secret = Some(format!("@{}", secret.display())));
        assert!(at_secret.validate().is_ok());
        let small_rsa = json!({"keys": [{"kty": "RSA", "n": "_".repeat(171), "e": "AQAB"}]});
        let bad_point = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "A".repeat(43), "y": "A".repeat(43)}]});
        let oct = json!({"keys": [{"kty": "oct", "k": "AAAA"}]});
        let jwks = |name, set: Value| Some(temp(name, &set.to_string()));
        for (c, want) in [
            (
                config(|c| c.jwt_public_key = Some("/nonexistent/k.pem".into())),
                "--jwt-public-key /nonexistent/k.pem: cannot read",
            ),
            (
                config(|c| c.jwt_secret = Some("@/nonexistent/s".into())),
                "--jwt-secret: cannot read /nonexistent/s",
            ),
            (
                config(|c| c.jwt_secret = Some("short".into())),
                "at least 32 bytes, got 5",
            ),
            (
                config(|c| c.jwt_issuer = Some("idp".into())),
                "--jwt-issuer needs a key",
            ),
            (
                config(|c| {
                    (c.jwt_public_key, c.jwt_jwks) =
                        (Some(data("ec-public.pem")), Some(data("jwks.json")))
                }),
                "exclusive",
            ),
            (
                config(|c| c.jwt_public_key = Some(data("rsa-private.pem"))),
                "not a PEM public key",
            ),
            (
                config(|c| c.jwt_public_key = Some(data("README.md"))),
                "not a PEM public key",
            ),
            (
                config(|c| c.jwt_jwks = Some(data("rsa-public.pem"))),
                "not a JWKS",
            ),
            (
                config(|c| c.jwt_jwks = jwks("small.json", small_rsa)),
                "key 0 (kid \"\"): RSA keys must be 2048-4096 bits",
            ),
            (
                config(|c| c.jwt_jwks = jwks("point.json", bad_point)),
                "key 0 (kid \"\"): bad key",
            ),
            (
                config(|c| c.jwt_jwks = jwks("oct.json", oct)),
                "no RS256 or ES256 signing key",
            ),
            (
                config(|c| c.jwt_leeway = Duration::from_secs(3600)),
                "--jwt-leeway must be at most 10m",
            ),
        ] {
            let err = format!("{:#}", c.validate().unwrap_err());
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn reasons_and_redaction() {
        assert_eq!(Expired.to_string(), "token expired");
        assert_eq!(UnsupportedAlgorithm.label(), "unsupported_algorithm");
        let c = config(|c| c.jwt_secret = Some(SECRET.into()));
        assert!(!format!("{c:?}").contains(SECRET));
    }
}
