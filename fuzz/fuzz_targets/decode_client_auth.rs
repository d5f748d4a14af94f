//! The `ClientAuth` body decoder. See `boarding_fuzz_harness::checks::parsers::client_auth`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::parsers::client_auth(data));
