//! Invariant checks and deterministic scenarios for fuzzing Boarding.
//!
//! [`checks`] holds everything a fuzz target asserts, written against plain bytes so
//! the protocol crate's regression tests can replay saved inputs through exactly the
//! same checks; [`roundtrip`] holds the `arbitrary`-driven round-trip properties.

#![forbid(unsafe_code)]

pub mod checks;
pub mod roundtrip;
