//! Channel frames: what one end seals the other opens. See `boarding_fuzz_harness::roundtrip::channel`.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Running out of bytes part-way is not a failure: the property held so far.
    let _ = boarding_fuzz_harness::roundtrip::channel(&mut Unstructured::new(data));
});
