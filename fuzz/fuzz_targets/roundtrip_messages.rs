//! Every handshake message: decode(encode(x)) == x within the limits. See `boarding_fuzz_harness::roundtrip::messages`.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Running out of bytes part-way is not a failure: the property held so far.
    let _ = boarding_fuzz_harness::roundtrip::messages(&mut Unstructured::new(data));
});
