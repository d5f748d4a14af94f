//! The agent state machine fed arbitrary gateway bytes at every state. See `boarding_fuzz_harness::checks::client::client_states`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::client::client_states(data));
