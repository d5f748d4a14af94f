//! The `ResumeTicket` body decoder. See `boarding_fuzz_harness::checks::parsers::resume_ticket`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boarding_fuzz_harness::checks::parsers::resume_ticket(data));
