//! One version everywhere: Cargo.toml's version (the crate's) is the one the
//! Helm chart, the Dockerfile's image label and the CHANGELOG carry, and the
//! one `tickfan --version` prints, with the commit the binary was built from.
//! The repository's license is Apache-2.0, stated where packagers look.
//! No broker, no network: files and one run of the built binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The value of a top-level `key:` line of a YAML file (quotes removed).
fn yaml_top(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

#[test]
fn helm_chart_carries_the_crate_version() {
    let chart = read("helm/tickfan/Chart.yaml");
    assert_eq!(
        yaml_top(&chart, "appVersion").as_deref(),
        Some(VERSION),
        "Chart.yaml appVersion"
    );
    assert_eq!(
        yaml_top(&chart, "version").as_deref(),
        Some(VERSION),
        "Chart.yaml version"
    );
    // The default image is the appVersion: values.yaml leaves the tag empty.
    let values = read("helm/tickfan/values.yaml");
    let image = values.split("\nimage:\n").nth(1).expect("image: block");
    assert!(
        image.lines().any(|l| l.trim() == r#"tag: """#),
        "values.yaml image.tag is not empty, so the default image is not the chart's appVersion"
    );
    let prod = read("helm/tickfan/ci/production-values.yaml");
    assert!(
        prod.contains(&format!("  tag: \"{VERSION}\"\n")),
        "helm/tickfan/ci/production-values.yaml pins an image tag other than {VERSION}"
    );
}

#[test]
fn dockerfile_labels_the_image_with_the_crate_version() {
    let dockerfile = read("Dockerfile");
    let labels: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.contains("org.opencontainers.image.version="))
        .collect();
    assert_eq!(
        labels.len(),
        1,
        "one org.opencontainers.image.version label: {labels:?}"
    );
    assert!(
        labels[0].contains(&format!("org.opencontainers.image.version=\"{VERSION}\"")),
        "Dockerfile label {} is not {VERSION}",
        labels[0].trim()
    );
    // The commit reaches the Docker build (no .git in its context) as a build
    // argument, in the builder stage (for build.rs) and the runtime stage
    // (the revision label); the image carries the license text.
    let runtime = dockerfile
        .split("FROM gcr.io/distroless/")
        .nth(1)
        .expect("runtime stage");
    let builder = &dockerfile[..dockerfile.len() - runtime.len()];
    let build_step = builder
        .find("COPY src ./src")
        .expect("the crate's build step");
    assert!(builder[..build_step].contains("ARG TICKFAN_GIT_COMMIT"));
    assert!(runtime.contains("ARG TICKFAN_GIT_COMMIT"));
    assert!(runtime.contains(r#"org.opencontainers.image.revision="${TICKFAN_GIT_COMMIT}""#));
    assert!(runtime.contains("COPY LICENSE /usr/share/doc/tickfan/LICENSE"));
}

#[test]
fn changelog_has_a_section_for_the_crate_version() {
    let changelog = read("CHANGELOG.md");
    assert!(
        changelog.contains("keepachangelog.com/en/1.1.0/"),
        "CHANGELOG.md follows Keep a Changelog 1.1.0"
    );
    let headings: Vec<&str> = changelog.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(
        headings.first(),
        Some(&"## [Unreleased]"),
        "the first section is Unreleased"
    );
    let section = format!("## [{VERSION}] - ");
    let heading = headings
        .iter()
        .find(|h| h.starts_with(&section))
        .unwrap_or_else(|| panic!("CHANGELOG.md has no '{section}YYYY-MM-DD' section"));
    let date = &heading[section.len()..];
    assert!(
        date.len() == 10
            && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }),
        "{heading}: the date is YYYY-MM-DD"
    );
    assert!(
        changelog
            .lines()
            .any(|l| l.starts_with(&format!("[{VERSION}]: "))),
        "CHANGELOG.md has no link for [{VERSION}]"
    );
}

#[test]
fn license_is_stated_for_the_whole_repository() {
    let license = read("LICENSE");
    for part in [
        "Apache License",
        "Version 2.0, January 2004",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
    ] {
        assert!(license.contains(part), "LICENSE lacks {part:?}");
    }
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("\nlicense = \"Apache-2.0\"\n"));
    let readme = read("README.md");
    assert!(readme.contains("\n## License\n"));
    for package in [
        "benches/baseline-redis/package.json",
        "tests/browser/package.json",
    ] {
        assert!(
            read(package).contains(r#""license": "Apache-2.0""#),
            "{package}: no Apache-2.0 license field"
        );
    }
}

/// A copyright notice or an SPDX identifier other than the repository's:
/// the sign of code copied in from elsewhere, which would need its license
/// named (README, "License") and maybe a NOTICE file.
fn foreign_notice(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    for (at, _) in lower.match_indices("copyright") {
        let rest = lower[at + "copyright".len()..].trim_start();
        if rest.starts_with("(c)")
            || rest.starts_with('\u{a9}')
            || rest.bytes().take(4).filter(u8::is_ascii_digit).count() == 4
        {
            return Some(text[at..].lines().next().unwrap_or("").to_string());
        }
    }
    if let Some(at) = lower.find("all rights reserved") {
        return Some(text[at..].lines().next().unwrap_or("").to_string());
    }
    for (at, _) in lower.match_indices("spdx-license-identifier:") {
        let id = lower[at + "spdx-license-identifier:".len()..].trim_start();
        if !id.starts_with("apache-2.0") {
            return Some(text[at..].lines().next().unwrap_or("").to_string());
        }
    }
    None
}

#[test]
fn no_file_carries_a_third_party_notice() {
    assert!(foreign_notice("Copyright (c) 2009-2017 Dave Gamble").is_some());
    assert!(foreign_notice("// Copyright 2011 Intel Corporation").is_some());
    assert!(foreign_notice("/* SPDX-License-Identifier: MIT */").is_some());
    assert!(foreign_notice("a copyright line of its own").is_none());

    let listed =
        git(&root(), &["ls-files", "-z"]).expect("git ls-files (a checkout of the repository)");
    let mut checked = 0;
    for path in listed.split('\0').filter(|p| !p.is_empty()) {
        // The license itself, lock files (package metadata), and this file.
        if path == "LICENSE"
            || path.ends_with("Cargo.lock")
            || path.ends_with("package-lock.json")
            || path == "tests/release.rs"
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root().join(path)) else {
            continue; // binary (fuzz seeds) or removed in the work tree
        };
        checked += 1;
        if let Some(line) = foreign_notice(&text) {
            panic!("{path}: `{line}`: third-party code? Name its license in README.md (License) and, if it asks, in a NOTICE file");
        }
    }
    assert!(checked > 100, "only {checked} files checked");
}

/// `git` in `dir`, trimmed stdout, or None (no git, not a repository).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_flag_prints_the_version_and_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_tickfan"))
        .arg("--version")
        .output()
        .expect("run tickfan --version");
    assert!(out.status.success(), "tickfan --version: {out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line.trim_end();
    let commit = line
        .strip_prefix(&format!("tickfan {VERSION} (commit "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`{line}` is not `tickfan {VERSION} (commit …)`"));

    // Built from a git checkout of this repository (as `cargo test` here and
    // in CI is), the commit is HEAD's: cargo reruns build.rs when HEAD moves,
    // so this holds after a commit too.
    let top = git(&root(), &["rev-parse", "--show-toplevel"]);
    let in_checkout =
        top.is_some_and(|t| Path::new(&t).canonicalize().ok() == root().canonicalize().ok());
    if in_checkout {
        let head = git(&root(), &["rev-parse", "--short=12", "HEAD"]).expect("git rev-parse HEAD");
        assert_eq!(
            commit, head,
            "tickfan --version names another commit than HEAD"
        );
        assert!(
            commit.len() >= 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{commit}"
        );
    } else {
        // Not a checkout (a source tarball, a Docker context): the
        // TICKFAN_GIT_COMMIT given at build time, or "unknown".
        assert!(
            commit == "unknown"
                || (commit.len() <= 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{commit}"
        );
    }
}
