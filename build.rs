//! Enables `cfg(avro_java)` when `TICKFAN_AVRO_JAVA_OUT` names the output of
//! the Java reference run (scripts/avro-interop/check.sh, run by CI).
//!
//! Whether the tests run against real Kafka is decided at run time
//! (`TICKFAN_TEST_BROKERS`), so one build of the tests serves the mock-cluster
//! and the real-Kafka passes; the tests that need a real broker live in test
//! targets of their own that `cargo test` does not run by default
//! (`tests/secure.rs`, `tests/real_kafka.rs`: `test = false` in Cargo.toml).
//!
//! Sets `TICKFAN_BUILD_COMMIT` for the crate (`tickfan --version`): the
//! commit the build comes from, `git rev-parse --short=12 HEAD` when the crate
//! is the top of a git work tree; else the `TICKFAN_GIT_COMMIT` environment
//! variable (the Dockerfile's build argument: its build context has no
//! `.git`); else `unknown`.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(avro_java)");
    println!("cargo::rerun-if-env-changed=TICKFAN_AVRO_JAVA_OUT");
    if std::env::var("TICKFAN_AVRO_JAVA_OUT").is_ok_and(|v| !v.trim().is_empty()) {
        println!("cargo::rustc-cfg=avro_java");
    }

    println!("cargo::rerun-if-env-changed=TICKFAN_GIT_COMMIT");
    let commit = git_commit()
        .or_else(|| {
            let v = std::env::var("TICKFAN_GIT_COMMIT").ok()?;
            let v = v.trim();
            let ok = !v.is_empty() && v.len() <= 40 && v.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok && !v.is_empty() {
                println!("cargo::warning=TICKFAN_GIT_COMMIT={v:?} is not a commit id; ignored");
            }
            ok.then(|| v[..v.len().min(12)].to_ascii_lowercase())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo::rustc-env=TICKFAN_BUILD_COMMIT={commit}");
}

/// The short HEAD commit when this crate is the top of a git work tree (not a
/// directory inside some other repository, such as a vendored copy), with
/// rerun-if-changed on what moves when HEAD does.
fn git_commit() -> Option<String> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let top = git(&manifest, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != manifest.canonicalize().ok()? {
        return None;
    }
    // HEAD (a checkout), the reflog of HEAD (every commit, reset or checkout
    // appends to it), the branch's loose ref and packed-refs. Only files that
    // exist: cargo reruns a script on every build while a watched path is
    // missing. `--git-path` resolves them for linked work trees too.
    let mut watched = vec!["HEAD".to_string(), "logs/HEAD".into(), "packed-refs".into()];
    if let Some(branch) = git(&manifest, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&manifest, &["rev-parse", "--git-path", &name]) {
            let path = manifest.join(path);
            if path.is_file() {
                println!("cargo::rerun-if-changed={}", path.display());
            }
        }
    }
    let commit = git(&manifest, &["rev-parse", "--short=12", "HEAD"])?;
    commit
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some(commit)
}

/// Runs git in `dir`; its trimmed stdout on success, `None` otherwise (git
/// missing, not a repository, no commit yet).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
