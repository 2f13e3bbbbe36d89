//! JWT verification at the WebSocket handshake: its settings and its API.
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
//!
//! Here: the settings ([`Config`]) and the items the rest of the edge uses.
//! Keys are loaded in `keys`, tokens taken from a request in `extract` and
//! checked in `verify`.

mod extract;
mod keys;
#[cfg(test)]
mod testing;
mod verify;

pub use extract::{offers_subprotocol, token_from_request, SUBPROTOCOL, SUBPROTOCOL_TOKEN_PREFIX};
pub use verify::{AuthError, Entitlements, Grant, Verifier};

use std::{fmt, path::PathBuf, time::Duration};

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

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use AuthError::*;

    #[test]
    fn reasons_and_redaction() {
        assert_eq!(Expired.to_string(), "token expired");
        assert_eq!(UnsupportedAlgorithm.label(), "unsupported_algorithm");
        let c = config(|c| c.jwt_secret = Some(SECRET.into()));
        assert!(!format!("{c:?}").contains(SECRET));
    }
}
