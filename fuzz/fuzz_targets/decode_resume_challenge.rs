//! The `ResumeChallenge` body decoder. See `boarding_fuzz_harness::checks::parsers::resume_challenge`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::parsers::resume_challenge(data));
