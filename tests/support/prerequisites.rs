//! What the tests need from the host beyond Debian's essential packages, each with the package
//! that provides it: a test whose prerequisite is missing fails naming the package to install,
//! never passes or skips silently. `sudo scripts/test` installs them all (its list and this one
//! name the same packages), then runs every test.
//!
//! Included by tests/support (`support::prerequisites`) and tests/cli (`cli::prerequisites`), so
//! each test crate reaches the one copy through the module it already uses.
#![allow(dead_code)] // each test crate needs a different subset

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// One thing the tests need, and the Debian package that provides it.
pub struct Prerequisite {
    /// What is missing, as the failure says it.
    pub what: &'static str,
    pub package: &'static str,
    pub present: fn() -> bool,
}

/// Every prerequisite, for the test that checks them all at once and against scripts/test.
pub const ALL: [&Prerequisite; 13] = [
    &GCC,
    &STATIC_LIBC,
    &GCC_32BIT,
    &SFTP_SERVER,
    &PYTHON3,
    &STRACE,
    &SCRIPT,
    &SKOPEO,
    &UMOCI,
    &SYSTEMD_ANALYZE,
    &PASTA,
    &CURL,
    &NGINX,
];

/// gcc builds the fixture programs and libraries.
pub const GCC: Prerequisite = Prerequisite { what: "gcc", package: "gcc", present: gcc_runs };
/// libc.a, for static programs (run in jails without a libc) and `-static` fixtures.
pub const STATIC_LIBC: Prerequisite =
    Prerequisite { what: "a static libc (libc.a) for gcc -static", package: "libc6-dev", present: static_libc };
/// 32-bit (i386) fixture libraries, `gcc -m32`.
pub const GCC_32BIT: Prerequisite =
    Prerequisite { what: "gcc -m32 (32-bit fixtures)", package: "gcc-multilib", present: gcc_m32_builds };
/// The sftp example's server.
pub const SFTP_SERVER: Prerequisite = Prerequisite {
    what: "/usr/lib/openssh/sftp-server (the sftp example)",
    package: "openssh-sftp-server",
    present: sftp_server,
};
/// The python example, and script-interpreter fixtures.
pub const PYTHON3: Prerequisite = Prerequisite { what: "python3", package: "python3", present: python3 };
/// strace proves what a plan opens.
pub const STRACE: Prerequisite = Prerequisite { what: "strace", package: "strace", present: strace_runs };
/// `script` gives `apply --interactive` a terminal (essential on Debian, named for other hosts).
pub const SCRIPT: Prerequisite = Prerequisite { what: "script", package: "bsdutils", present: script_exists };

/// skopeo reads the OCI layouts and archives `jailprov export` writes, as registries' tools do.
pub const SKOPEO: Prerequisite = Prerequisite { what: "skopeo", package: "skopeo", present: skopeo_runs };
/// umoci unpacks an exported image into a rootfs, to compare with the applied jail.
pub const UMOCI: Prerequisite = Prerequisite { what: "umoci", package: "umoci", present: umoci_runs };
/// `systemd-analyze verify` checks the exported systemd unit.
pub const SYSTEMD_ANALYZE: Prerequisite =
    Prerequisite { what: "systemd-analyze", package: "systemd", present: systemd_analyze_runs };

/// pasta, the user-mode network stack of `network = "private"`.
pub const PASTA: Prerequisite = Prerequisite { what: "pasta", package: "passt", present: pasta_exists };
/// The HTTP client that fetches the web example's page from the host.
pub const CURL: Prerequisite = Prerequisite { what: "curl", package: "curl", present: curl_runs };
/// The web example's server (its service is never started on the host: scripts/test).
pub const NGINX: Prerequisite =
    Prerequisite { what: "/usr/sbin/nginx (the web example)", package: "nginx-light", present: nginx_exists };

/// Fails the calling test, naming the package, unless `prerequisite` is present.
pub fn require(prerequisite: &Prerequisite) {
    if !(prerequisite.present)() {
        panic!("{}", missing_message(prerequisite));
    }
}

/// What a test whose prerequisite is missing says.
pub fn missing_message(prerequisite: &Prerequisite) -> String {
    format!(
        "this test needs {}, which is missing: install the Debian package `{}` (apt-get install {}), or run \
         `sudo scripts/test`, which installs everything the tests need and runs them",
        prerequisite.what, prerequisite.package, prerequisite.package
    )
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).output().is_ok_and(|output| output.status.success())
}

fn gcc_runs() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| runs("gcc", "--version"))
}

fn static_libc() -> bool {
    ["/usr/lib/x86_64-linux-gnu/libc.a", "/lib/x86_64-linux-gnu/libc.a"].iter().any(|path| Path::new(path).is_file())
}

/// Whether gcc links a 32-bit shared library (gcc-multilib brings the i386 crt files and libc).
fn gcc_m32_builds() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        let Ok(dir) = tempfile::tempdir() else { return false };
        let source = dir.path().join("probe.c");
        #[allow(clippy::disallowed_methods)] // the probe's own tempdir, outside every jail
        let written = std::fs::write(&source, "int probe(void) { return 0; }\n").is_ok();
        written
            && Command::new("gcc")
                .args(["-m32", "-shared", "-fPIC", "-o"])
                .arg(dir.path().join("libprobe.so"))
                .arg(&source)
                .output()
                .is_ok_and(|output| output.status.success())
    })
}

fn sftp_server() -> bool {
    Path::new("/usr/lib/openssh/sftp-server").is_file()
}

fn python3() -> bool {
    Path::new("/usr/bin/python3").exists()
}

fn strace_runs() -> bool {
    runs("strace", "-V")
}

fn script_exists() -> bool {
    ["/usr/bin/script", "/bin/script"].iter().any(|path| Path::new(path).is_file())
}

fn skopeo_runs() -> bool {
    runs("skopeo", "--version")
}

fn umoci_runs() -> bool {
    runs("umoci", "--version")
}

fn systemd_analyze_runs() -> bool {
    runs("systemd-analyze", "--version")
}

fn pasta_exists() -> bool {
    ["/usr/bin/pasta", "/usr/sbin/pasta"].iter().any(|path| Path::new(path).is_file())
}

fn curl_runs() -> bool {
    runs("curl", "--version")
}

fn nginx_exists() -> bool {
    Path::new("/usr/sbin/nginx").is_file()
}
