//! Real agents and gateway over a network the fuzzer controls. See `boarding_fuzz_harness::checks::session::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::session::session(data));
