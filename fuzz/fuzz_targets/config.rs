//! Configuration loading (glance-api.conf then glance-cache.conf): never a panic, and a loaded
//! configuration keeps its database inside the cache directory. Input: the files' texts,
//! separated by a `\0`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let texts: Vec<&str> = input.split('\0').take(4).collect();
    tower_image_cache::fuzzing::config(&texts);
});
