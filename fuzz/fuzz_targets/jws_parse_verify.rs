//! Detached JWS parsing and HS256 / EdDSA verification. See `boarding_fuzz_harness::checks::parsers::jws`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::parsers::jws(data));
