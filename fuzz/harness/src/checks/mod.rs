//! The checks behind every fuzz target. Each public function takes the fuzzer's
//! bytes, drives the real protocol code, and panics when an invariant breaks (a
//! panic is what libFuzzer reports as a crash).
//!
//! This module depends only on `boarding`, `boarding-memory`, `rand_core`,
//! `rand_chacha`, `base64` and `serde_json`, and refers to its siblings through
//! `super::`, so a test can include it by path.

pub mod channel;
pub mod client;
pub mod contract;
pub mod fixtures;
pub mod input;
pub mod parsers;
pub mod server;
pub mod session;

/// A target's check: panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every byte-input target, by the name its fuzz target and corpus directory use, and
/// its check. The seed generator and the regression tests walk this table.
pub const TARGETS: &[(&str, Check)] = &[
    ("token_parse", parsers::token),
    ("pin_parse", parsers::pin),
    ("jws_parse_verify", parsers::jws),
    ("frame_decode", parsers::frame),
    ("decode_client_hello", parsers::client_hello),
    ("decode_server_challenge", parsers::server_challenge),
    ("decode_client_auth", parsers::client_auth),
    ("decode_server_finished", parsers::server_finished),
    ("decode_client_finished", parsers::client_finished),
    ("decode_resume_hello", parsers::resume_hello),
    ("decode_resume_challenge", parsers::resume_challenge),
    ("decode_resume_finished", parsers::resume_finished),
    ("decode_resume_ticket", parsers::resume_ticket),
    ("decode_alert", parsers::alert),
    ("channel_open", channel::open_frames),
    ("client_states", client::client_states),
    ("server_states", server::server_states),
    ("session", session::session),
];
