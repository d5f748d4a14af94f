//! A real session's channel opening genuine, tampered and arbitrary frames. See `boarding_fuzz_harness::checks::channel::open_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::channel::open_frames(data));
