//! Any bytes as `closure-cache/objects.bin`: a cache, or an error; never a panic. The checksum
//! is made to match first, so the bytes reach the decoder behind it.
#![no_main]

use jailprov::closure::cache::ClosureCache;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = ClosureCache::decode(bytes);
    let mut stamped = bytes.to_vec();
    if stamped.len() >= 40 {
        let checksum = *blake3::hash(&stamped[40..]).as_bytes();
        stamped[8..40].copy_from_slice(&checksum);
        if let Ok(cache) = ClosureCache::decode(&stamped) {
            let _ = cache.encode();
        }
    }
});
