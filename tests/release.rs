//! The repository's license is Apache-2.0, stated where packagers look, and
//! no file brings a license of its own. No broker, no network: files only.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
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
