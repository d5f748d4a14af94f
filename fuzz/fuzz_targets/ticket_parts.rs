//! Request and ticket parts through their decoders. See `boarding_fuzz_harness::forward::ticket_parts`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::forward::ticket_parts(data));
