//! The route matchers (the layer's download and eviction routes, the management routes): an id
//! taken from any path is safe on disk. Input: a method, a space, the path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (method, path) = match input.iter().position(|b| *b == b' ') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (&b"GET"[..], input),
    };
    if let Ok(path) = std::str::from_utf8(path) {
        tower_image_cache::fuzzing::route(method, path);
    }
});
