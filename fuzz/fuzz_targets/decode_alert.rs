//! The `Alert` body decoder. See `boarding_fuzz_harness::checks::parsers::alert`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::parsers::alert(data));
