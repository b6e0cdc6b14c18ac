//! Any bytes as an ELF file: the facts the closure reads from it, or an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = jailprov::closure::elf::ident_of(bytes);
    let _ = jailprov::closure::elf::parse_elf(bytes);
});
