//! Test helpers of the auth tests: test keys, signed tokens, verifiers.

use std::path::{Path, PathBuf};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{AuthError, Config, Verifier};

pub(super) const SECRET: &str = "test-only-secret-0123456789abcdef";

pub(super) fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jwt")
        .join(file)
}
pub(super) fn temp(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tickfan-auth-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}
pub(super) fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}
pub(super) fn claims() -> Value {
    json!({"sub": "alice", "exp": now() + 600})
}
pub(super) fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    f(&mut c);
    c
}
pub(super) fn with(f: impl FnOnce(&mut Config)) -> Verifier {
    Verifier::from_config(&config(f)).unwrap().expect("auth on")
}
pub(super) fn hs() -> Verifier {
    with(|c| c.jwt_secret = Some(SECRET.into()))
}
pub(super) fn pem(file: &str) -> Verifier {
    with(|c| c.jwt_public_key = Some(data(file)))
}
pub(super) fn jwks() -> Verifier {
    with(|c| c.jwt_jwks = Some(data("jwks.json")))
}
pub(super) fn sign_with(
    key: &EncodingKey,
    alg: Algorithm,
    kid: Option<&str>,
    claims: &Value,
) -> String {
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
pub(super) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let read = |f| std::fs::read(data(f)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rsa-private.pem")).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec-private.pem")).unwrap(),
        _ => EncodingKey::from_secret(SECRET.as_bytes()),
    };
    sign_with(&key, alg, kid, claims)
}
pub(super) fn hs256(v: &Verifier, claims: Value) -> Result<(), AuthError> {
    v.verify(&sign(Algorithm::HS256, None, &claims)).map(drop)
}
