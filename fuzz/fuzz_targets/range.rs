//! Range parsing on a hit: a part always lies inside the image. Input: 8 bytes of image size,
//! then the `Range` value(s), one per line, then optionally `\0` and an `If-Range` value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if input.len() < 8 {
        return;
    }
    let (size, rest) = input.split_at(8);
    let size = u64::from_le_bytes(size.try_into().unwrap());
    let (range, if_range) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    tower_image_cache::fuzzing::range(range, if_range, size);
});
