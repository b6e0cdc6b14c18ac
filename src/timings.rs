//! Opt-in phase timings on stderr (`JAILPROV_TIMINGS=1`), for finding where a slow run spends.

use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("JAILPROV_TIMINGS").is_some_and(|value| value != "0"))
}

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Prints, when enabled, how long a phase took once the returned guard is dropped.
#[must_use = "the phase ends when the guard is dropped"]
pub fn phase(name: &'static str) -> Phase {
    let started = enabled().then(|| {
        start();
        Instant::now()
    });
    Phase { name, started }
}

pub struct Phase {
    name: &'static str,
    started: Option<Instant>,
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            let at = started.duration_since(start());
            eprintln!(
                "timing: {:<28} {:>8.1} ms (from {:.1} ms)",
                self.name,
                started.elapsed().as_secs_f64() * 1e3,
                at.as_secs_f64() * 1e3
            );
        }
    }
}
