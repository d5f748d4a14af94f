//! PROXY v2 headers through the parser, and the encoder again. See `boarding_fuzz_harness::forward::proxy_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::forward::proxy_header(data));
