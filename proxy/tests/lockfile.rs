//! Security floors for the HTTP stack, checked against the lockfile that actually builds.
//!
//! hyper < 1.6 and h2 < 0.4.16 have known denial-of-service bugs (HTTP/2 rapid reset and
//! CONTINUATION floods among them); rustls < 0.23.18 has a panic reachable from the network.
//! A dependency update that resolves to an older version must fail CI, not ship.

use std::path::Path;

/// (crate, minimum version). rustls arrives with mTLS; its floor is checked once it is locked.
const FLOORS: &[(&str, [u64; 3])] = &[
    ("hyper", [1, 6, 0]),
    ("h2", [0, 4, 16]),
    ("rustls", [0, 23, 18]),
];

/// Every locked version of `name`.
fn locked_versions(lock: &str, name: &str) -> Vec<[u64; 3]> {
    let mut out = Vec::new();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() != format!("name = \"{name}\"") {
            continue;
        }
        let Some(version) = lines
            .next()
            .and_then(|l| l.trim().strip_prefix("version = \""))
        else {
            continue;
        };
        let version = version.trim_end_matches('"');
        let mut parts = version
            .split(['.', '-', '+'])
            .map(|p| p.parse::<u64>().unwrap_or(0));
        out.push([
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        ]);
    }
    out
}

#[test]
fn http_stack_versions_are_at_or_above_their_security_floors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let lock = std::fs::read_to_string(&path).expect("Cargo.lock is committed at the root");
    let mut checked = 0;
    for (name, floor) in FLOORS {
        for version in locked_versions(&lock, name) {
            assert!(
                version >= *floor,
                "{name} {version:?} is locked, below the security floor {floor:?}"
            );
            checked += 1;
        }
    }
    // hyper and h2 must be present: the check is meaningless if the names ever change.
    assert!(
        !locked_versions(&lock, "hyper").is_empty(),
        "hyper not in Cargo.lock"
    );
    assert!(
        !locked_versions(&lock, "h2").is_empty(),
        "h2 not in Cargo.lock"
    );
    assert!(checked >= 2);
}

#[test]
fn the_parser_reads_versions_and_catches_an_old_one() {
    let lock = "[[package]]\nname = \"h2\"\nversion = \"0.4.15\"\n\n[[package]]\nname = \"hyper\"\nversion = \"1.12.0\"\n";
    assert_eq!(locked_versions(lock, "h2"), vec![[0, 4, 15]]);
    assert_eq!(locked_versions(lock, "hyper"), vec![[1, 12, 0]]);
    assert!(locked_versions(lock, "h2")[0] < [0, 4, 16]);
}
