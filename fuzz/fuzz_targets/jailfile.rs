//! Any text as a Jailfile: a Spec or the problems in it, rendered as the user sees them; never a panic.
#![no_main]

use std::path::Path;

use jailprov::diagnostics::JailfileErrors;
use jailprov::host::HostFs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let host = HostFs::real();
    match jailprov::spec::from_text(Path::new("Jailfile.toml"), text.to_owned(), None, &host) {
        Ok(spec) => {
            let _ = spec.root();
        }
        // The problems are printed with their place in the file: spans into any text.
        Err(error) => {
            if let Some(problems) = error.downcast_ref::<JailfileErrors>() {
                let _ = problems.to_string();
            }
        }
    }
    let _ = jailprov::state::lock::jailfile_digest(text);
});
