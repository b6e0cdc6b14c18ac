//! Any text as a Jailfile.lock: a lock, or an error naming the file; never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(lock) = jailprov::state::lock::Lock::parse(text, Path::new("Jailfile.lock")) {
        // What parses is written back the way `jailprov lock` writes it.
        let _ = lock.to_text();
    }
});
