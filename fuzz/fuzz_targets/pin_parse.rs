//! Pin parsing against the `sha256:` grammar, and printing round trips. See `boarding_fuzz_harness::checks::parsers::pin`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::parsers::pin(data));
