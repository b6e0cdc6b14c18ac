//! The tests' host prerequisites (tests/support/prerequisites.rs): a missing one fails naming its
//! Debian package, and scripts/test installs every one of them.
#![allow(clippy::disallowed_methods)] // reads scripts/test

#[path = "support/prerequisites.rs"]
mod prerequisites;

use prerequisites::{require, Prerequisite, ALL};

#[test]
fn a_missing_prerequisite_fails_naming_its_debian_package() {
    let absent = Prerequisite { what: "a tool no host has", package: "no-such-package", present: || false };
    let failure = std::panic::catch_unwind(|| require(&absent)).expect_err("a missing prerequisite fails the test");
    let message = failure.downcast_ref::<String>().expect("the failure says why");
    assert!(
        message.contains("a tool no host has")
            && message.contains("apt-get install no-such-package")
            && message.contains("sudo scripts/test"),
        "{message}"
    );
}

/// One failure listing everything missing on this host, so a fresh machine learns it at once.
#[test]
fn every_prerequisite_of_the_tests_is_installed() {
    let missing: Vec<String> = ALL
        .iter()
        .filter(|prerequisite| !(prerequisite.present)())
        .map(|prerequisite| prerequisites::missing_message(prerequisite))
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// scripts/test installs the package of every prerequisite (bsdutils is essential on Debian).
#[test]
fn scripts_test_installs_every_prerequisite() {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test")).expect("scripts/test");
    let listed = script
        .lines()
        .find_map(|line| line.trim().strip_prefix("packages=("))
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("scripts/test has a packages=(...) line");
    let listed: Vec<&str> = listed.split_whitespace().collect();
    for prerequisite in ALL.iter().filter(|prerequisite| prerequisite.package != "bsdutils") {
        assert!(listed.contains(&prerequisite.package), "scripts/test does not install {}", prerequisite.package);
    }
}
