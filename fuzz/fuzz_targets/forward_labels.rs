//! The labels TLV value through its decoder. See `boarding_fuzz_harness::forward::labels`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::forward::labels(data));
