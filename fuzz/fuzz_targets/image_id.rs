//! The id validator: whatever it accepts is one plain file name inside the cache directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    tower_image_cache::fuzzing::image_id(input);
});
