//! Forwarding messages and PROXY headers: what the encoders write decodes back. See
//! `boarding_fuzz_harness::forward::roundtrip`.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Running out of bytes part-way is not a failure: the property held so far.
    let _ = boarding_fuzz_harness::forward::roundtrip(&mut Unstructured::new(data));
});
