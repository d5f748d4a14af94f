//! Invariant checks and deterministic scenarios for fuzzing Boarding.
//!
//! [`checks`] holds everything a fuzz target asserts, written against plain bytes so
//! the protocol crate's regression tests can replay saved inputs through exactly the
//! same checks; [`roundtrip`] holds the `arbitrary`-driven round-trip properties;
//! [`forward`] holds the checks of boarding-smol's forwarding protocol.

#![forbid(unsafe_code)]

pub mod checks;
pub mod forward;
pub mod roundtrip;
