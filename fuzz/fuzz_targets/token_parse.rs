//! Bootstrap token parsing against the kubeadm grammar. See `boarding_fuzz_harness::checks::parsers::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::parsers::token(data));
