//! Key loading at startup: the settings checked and the keys read (an HS256
//! secret, an RS256/ES256 PEM public key or a JWKS file) into a [`Verifier`].

use std::{path::Path, time::Duration};

use anyhow::{anyhow, bail, ensure, Context};
use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey, Validation,
};

use super::{
    verify::{b64url, ALGORITHMS},
    Config, Verifier,
};

/// Shortest HS256 secret (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;
/// Largest `--jwt-leeway`.
const MAX_LEEWAY: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub(super) enum PublicKeys {
    None,
    /// `--jwt-public-key`: used whatever the token's `kid`.
    Pem(Key),
    /// `--jwt-jwks`: selected by `kid`.
    Jwks(Vec<Key>),
}

#[derive(Debug)]
pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
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
    use super::super::testing::*;
    use super::*;
    use serde_json::{json, Value};

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
}
