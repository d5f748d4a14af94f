//! Forwarding messages through their decoder. See `boarding_fuzz_harness::forward::message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::forward::message(data));
