//! Whole handshake frames through the frame decoder. See `boarding_fuzz_harness::checks::parsers::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::parsers::frame(data));
