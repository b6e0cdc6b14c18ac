//! Any text as a plan saved by `plan -o`: the plan, or an error; never a panic.
//!
//! `apply FILE` reads it with `jailprov::plan::saved::parse` (after a bounded read of a trusted
//! file), then shows it: both are fuzzed here.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(saved) = jailprov::plan::saved::parse(text, Path::new("plan.json")) {
        // What apply does first with it: show it.
        let _ = jailprov::render::plan_text(&saved.plan, &saved.root, &saved.jailfile);
        let _ = jailprov::render::plan_json(&saved.plan);
    }
});
