//! Any text as a plan saved by `plan -o`: the plan, or an error; never a panic.
//!
//! `apply FILE` reads it in the binary (src/commands.rs `read_saved_plan`, `SavedPlan`); the
//! mirror below has the same fields, and all but `plan` are plain strings, paths and a bool, so
//! what this fuzzes is `jailprov::plan::Plan`'s deserialization, the part with structure.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read for the deserialization only
struct Digests {
    jailfile: String,
    host: String,
    jail: String,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read for the deserialization only
struct SavedPlan {
    format_version: String,
    jailfile: PathBuf,
    root: PathBuf,
    adopt: bool,
    digests: Digests,
    plan: jailprov::plan::Plan,
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(saved) = serde_json::from_str::<SavedPlan>(text) {
        // What apply does first with it: show it.
        let _ = jailprov::render::plan_text(&saved.plan, &saved.root, &saved.jailfile);
        let _ = jailprov::render::plan_json(&saved.plan);
    }
});
