//! The gateway state machine fed arbitrary agent bytes at every state. See `boarding_fuzz_harness::checks::server::server_states`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::server::server_states(data));
