//! Any bytes as /etc/ld.so.cache: a cache to look names up in, or an error; never a panic.
#![no_main]

use jailprov::closure::ld_cache::LdCache;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(cache) = LdCache::parse(bytes) else { return };
    let _ = cache.generator();
    let hwcaps = ["x86-64-v3".to_owned(), "x86-64-v2".to_owned()];
    // The names the cache holds, and a few it may not, looked up as the closure does.
    let names: Vec<String> = cache.entries().iter().take(64).map(|entry| entry.key.clone()).collect();
    for name in names.iter().map(String::as_str).chain(["libc.so.6", "", "libx.so.1.2"]) {
        let _ = cache.lookup(name, 0x0303, &hwcaps);
        let _ = cache.lookup(name, -1, &[]);
    }
});
