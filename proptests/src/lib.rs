//! Property and model-based tests of the Boarding protocol core.
//!
//! The tests live in `tests/`; this library holds what they share: the run-size switch
//! ([`config`]) and `proptest` strategies that generate every handshake message with
//! all of its fields ranging over what the wire format allows, boundaries included.
//!
//! | test file | what it checks |
//! |---|---|
//! | `tests/codec.rs` | round trips of every message, frame, token, pin and JWS; arbitrary bytes never panic a decoder; decoders are canonical; the kubeadm token grammar agrees with a regex reference |
//! | `tests/channel.rs` | channel laws in both MAC suites: open(seal(m)) == m, every deviation from the sealed stream is rejected and the channel stays closed |
//! | `tests/state_machine.rs` | a model-based test (`proptest-state-machine`) of one gateway, several agents, a token store and an adversarial network |
//!
//! See `README.md` beside this crate for the bounds.

use boarding::messages::{
    AlertMessage, ClientAuth, ClientFinished, ClientHello, HandshakeMessage, MAC_LEN, MAX_CHALLENGES, MAX_EVIDENCE,
    MAX_OFFERED_KEYRINGS, MAX_OFFERS, MAX_REQUEST, MAX_TICKET, NONCE_LEN, ResumeChallenge, ResumeFinished, ResumeHello,
    ResumeTicket, ServerChallenge, ServerFinished,
};
use boarding::token::{BootstrapToken, TokenId};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Whether deep mode is on: the environment variable `BOARDING_DEEP` is set to
/// anything but `0` or the empty string.
pub fn deep() -> bool {
    std::env::var("BOARDING_DEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A `proptest` configuration running `cases` cases, or `deep_factor` times as many
/// in deep mode (see [`deep`]). `PROPTEST_CASES`, if set, overrides both. Failures are
/// not persisted to files (the printed seed and shrunk input are the record).
pub fn config(cases: u32, deep_factor: u32) -> Config {
    let cases = match std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None if deep() => cases.saturating_mul(deep_factor),
        None => cases,
    };
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// A token id: 6 characters of `[a-z0-9]`.
pub fn token_id() -> impl Strategy<Value = TokenId> {
    "[a-z0-9]{6}".prop_map(|s| s.parse().unwrap_or_else(|e| panic!("generated token id {s:?}: {e}")))
}

/// A well-formed kubeadm bootstrap token.
pub fn bootstrap_token() -> impl Strategy<Value = BootstrapToken> {
    "[a-z0-9]{6}\\.[a-z0-9]{16}".prop_map(|s| s.parse().unwrap_or_else(|e| panic!("generated token: {e}")))
}

/// A list of `u16` codes as offered in a hello: 1 to 16 entries, known codes favoured.
pub fn offers() -> impl Strategy<Value = Vec<u16>> {
    vec(prop_oneof![3 => 0u16..4, 1 => any::<u16>()], 1..=MAX_OFFERS)
}

/// Bytes of a length in `min..=max`, favouring short values but reaching the bounds.
pub fn bytes_between(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    let short = max.min(min.saturating_add(48));
    prop_oneof![
        6 => vec(any::<u8>(), min..=short),
        1 => vec(any::<u8>(), max..=max),
        1 => vec(any::<u8>(), min..=max),
    ]
}

/// A client id as it may appear on the wire: 1 to 63 arbitrary bytes (the gateway,
/// not the decoder, validates the characters).
pub fn wire_client_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof!["[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?".prop_map(String::into_bytes), vec(any::<u8>(), 1..=63),]
}

/// A string the JWS fields of a message accept: 1 to 512 characters of the base64url
/// alphabet and `.` (real compact JWS are one case of these).
pub fn wire_jws() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_-]{1,80}\\.\\.[A-Za-z0-9_-]{1,90}", "[A-Za-z0-9_.-]{1,64}", "[A-Za-z0-9_.-]{512}",]
}

/// A 32-byte array.
pub fn bytes32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

/// Any `ClientHello`.
pub fn client_hello() -> impl Strategy<Value = ClientHello> {
    (offers(), offers(), any::<[u8; NONCE_LEN]>(), proptest::option::of(token_id()))
        .prop_map(|(versions, suites, nonce, token_id)| ClientHello { versions, suites, nonce, token_id })
}

/// Any `ServerChallenge`.
pub fn server_challenge() -> impl Strategy<Value = ServerChallenge> {
    (any::<u16>(), any::<u16>(), bytes32(), bytes32(), bytes32(), vec(wire_jws(), 1..=MAX_CHALLENGES)).prop_map(
        |(version, suite, nonce, identity_key, ephemeral, challenges)| ServerChallenge {
            version,
            suite,
            nonce,
            identity_key,
            ephemeral,
            challenges,
        },
    )
}

/// Any `ClientAuth`.
pub fn client_auth() -> impl Strategy<Value = ClientAuth> {
    (token_id(), wire_client_id(), bytes32(), bytes_between(0, MAX_EVIDENCE), bytes_between(0, MAX_REQUEST), wire_jws())
        .prop_map(|(token_id, client_id, ephemeral, evidence, request, proof)| ClientAuth {
            token_id,
            client_id,
            ephemeral,
            evidence,
            request,
            proof,
        })
}

/// Any `ServerFinished`.
pub fn server_finished() -> impl Strategy<Value = ServerFinished> {
    (bytes_between(0, MAX_TICKET), any::<[u8; MAC_LEN]>()).prop_map(|(ticket, mac)| ServerFinished { ticket, mac })
}

/// Any `ResumeHello`.
pub fn resume_hello() -> impl Strategy<Value = ResumeHello> {
    let keyrings = proptest::collection::vec(bytes32(), 1..=MAX_OFFERED_KEYRINGS);
    (offers(), offers(), wire_client_id(), keyrings, bytes32(), bytes32()).prop_map(
        |(versions, suites, client_id, keyrings, nonce, ephemeral)| ResumeHello {
            versions,
            suites,
            client_id,
            keyrings,
            nonce,
            ephemeral,
        },
    )
}

/// Any `ResumeChallenge`.
pub fn resume_challenge() -> impl Strategy<Value = ResumeChallenge> {
    (any::<u16>(), any::<u16>(), any::<bool>(), bytes32(), bytes32(), any::<[u8; MAC_LEN]>()).prop_map(
        |(version, suite, rotate, nonce, ephemeral, mac)| ResumeChallenge {
            version,
            suite,
            rotate,
            nonce,
            ephemeral,
            mac,
        },
    )
}

/// Any handshake message of any type.
pub fn handshake_message() -> impl Strategy<Value = HandshakeMessage> {
    prop_oneof![
        client_hello().prop_map(HandshakeMessage::ClientHello),
        server_challenge().prop_map(HandshakeMessage::ServerChallenge),
        client_auth().prop_map(HandshakeMessage::ClientAuth),
        server_finished().prop_map(HandshakeMessage::ServerFinished),
        any::<[u8; MAC_LEN]>().prop_map(|mac| HandshakeMessage::ClientFinished(ClientFinished { mac })),
        resume_hello().prop_map(HandshakeMessage::ResumeHello),
        resume_challenge().prop_map(HandshakeMessage::ResumeChallenge),
        (bytes_between(0, MAX_REQUEST), any::<[u8; MAC_LEN]>())
            .prop_map(|(request, mac)| HandshakeMessage::ResumeFinished(ResumeFinished { request, mac })),
        (bytes_between(0, MAX_TICKET), any::<[u8; MAC_LEN]>())
            .prop_map(|(ticket, mac)| HandshakeMessage::ResumeTicket(ResumeTicket { ticket, mac })),
        any::<u8>().prop_map(|code| HandshakeMessage::Alert(AlertMessage { code })),
    ]
}
