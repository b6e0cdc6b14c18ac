//! Deterministic crash points for tests/interrupt.rs: in debug builds, `JAILPROV_TEST_KILL_AFTER=N` SIGKILLs the process right after its Nth write into a jail or the state directory.
//!
//! Release builds ignore the variable (the check compiles to nothing), so no environment can
//! make an installed jailprov stop half-way on purpose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The variable the test sets: a positive count of writes.
pub const KILL_AFTER: &str = "JAILPROV_TEST_KILL_AFTER";

static PASSED: AtomicU64 = AtomicU64::new(0);

/// Marks one write done; kills the process when it is the Nth of `JAILPROV_TEST_KILL_AFTER`.
pub fn passed() {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(limit) = limit() else { return };
    if PASSED.fetch_add(1, Ordering::SeqCst) + 1 == limit {
        // SIGKILL, as an operator's `kill -9` or the OOM killer would: no destructor, no flush.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// How many writes this process passed, when the test asked to count them (None otherwise).
pub fn count() -> Option<u64> {
    (cfg!(debug_assertions) && limit().is_some()).then(|| PASSED.load(Ordering::SeqCst))
}

fn limit() -> Option<u64> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(|| std::env::var(KILL_AFTER).ok().and_then(|value| value.parse().ok()))
}
