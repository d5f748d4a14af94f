//! # Boarding: a sans-IO protocol for joining a control plane
//!
//! Boarding lets a node (an *agent*) join a control plane (a *gateway*) with nothing
//! but a short kubeadm-format bootstrap token and the gateway's public-key pin, and
//! then talk to it over MAC-authenticated frames, reconnecting ("resuming") with a
//! stored keyring for as long as it lives.
//!
//! This crate is the protocol core. It never touches a socket, a clock or a random
//! number generator of its own: callers feed bytes in with `handle_*`, drain what the
//! state machine wants done with `poll_*`, pass the current time in, and hand it a
//! [`rand_core::CryptoRng`]. The gateway's storage needs (look up a token, redeem it
//! atomically with the new keyring, look up and confirm a keyring) and the
//! application's admission decision (with its verdict on the agent's attestation
//! evidence, which the agent's application produces for this session when asked) are
//! *yielded* as requests and resumed with the answer, so the same core serves a blocking driver, an async one and a deterministic
//! simulator. A failure is an output like any other, and the last one.
//!
//! A join or a resume may carry an opaque application **request** (a certificate signing
//! request, say) that the gateway's application answers in a **ticket** (the join's
//! `ServerFinished`, or a resume's `ResumeTicket`); and a handshake that runs inside TLS
//! can be **bound** to that TLS session ([`transcript::ChannelBinding`]), so a relay that
//! terminates TLS on each side fails the first proof.
//!
//! Keyrings **move**: a gateway may rotate a client's keyring in a resume
//! ([`server::ServerConfig::with_rotation`], or an operator's request), the new one derived
//! from the resume's fresh exchange and stored by the agent before it confirms
//! ([`client::ClientRequest::PersistRotation`]); a resume that later proves a keyring the
//! client rotated away from is a clone's, refused and recorded
//! ([`storage::decide_rotation`], [`storage::decide_clone`]).
//!
//! The wire format, key schedule and state machines are specified byte for byte in
//! `spec/PROTOCOL.md`, which this package ships (with the test vectors,
//! `spec/vectors/boarding-v1.json`); this crate implements that document.
//!
//! ## Modules
//!
//! | module | concept |
//! |---|---|
//! | [`token`] | kubeadm bootstrap tokens and the gateway's token records |
//! | [`pin`] | `sha256:` SPKI pins of the gateway's identity key |
//! | [`jws`] | detached compact JWS: kubeadm-identical `HS256`, strict `EdDSA` |
//! | [`identity`] | the gateway's Ed25519 identity and client ids |
//! | [`codec`] | the one bounds-checked reader every parser goes through |
//! | [`messages`] | handshake messages, their framing and limits |
//! | [`transcript`] | the running transcript hash, and its binding to a TLS session |
//! | [`keys`] | the HKDF-SHA256 key schedule, keyrings and session keys |
//! | [`suite`] | protocol versions and MAC suites (HMAC-SHA256, BLAKE3) |
//! | [`attestation`] | the binding evidence commits to, and the attested identity |
//! | [`handshake`] | the output contract and run loop both handshakes share |
//! | [`client`] | the agent's join and resume state machines |
//! | [`server`] | the gateway's state machine |
//! | [`storage`] | the gateway's storage requests and the one storage rule |
//! | [`channel`] | MAC-authenticated frames into caller-owned buffers |
//! | [`error`] | errors grouped by cause, and the coarse alerts a peer sees |
//!
//! ## Names
//!
//! The core names the two roles as the protocol's messages do, **client** and
//! **server** ([`client::Client`], [`server::Server`], [`identity::ServerIdentity`],
//! [`channel::Side`]); the deployment names them **agent** and **gateway**, and so do
//! the drivers and the `boarding` command built on this crate.
//!
//! ## Randomness
//!
//! Every constructor that needs randomness takes `&mut R` where
//! `R: rand_core::CryptoRng + ?Sized`, from **`rand_core` 0.10**, which this crate
//! re-exports as [`rand_core`]: `boarding::rand_core::CryptoRng` is always the trait the
//! core asks for. Use the operating system's generator: `getrandom` 0.4's `SysRng`
//! (feature `sys_rng`) is a fallible generator, and [`rand_core::UnwrapErr`] makes it an
//! infallible one that panics only if the OS cannot supply randomness at all, when
//! nothing safe can be done anyway. `rand` 0.10's `rand::rng()` works too.
//!
//! ```
//! use boarding::identity::ServerIdentity;
//! use boarding::rand_core::UnwrapErr;
//! use boarding::token::BootstrapToken;
//!
//! let mut rng = UnwrapErr(getrandom::SysRng);
//! let identity = ServerIdentity::generate(&mut rng);
//! let token = BootstrapToken::generate(&mut rng);
//! # let _ = (identity, token);
//! ```
//!
//! The version matters because each major version of `rand_core` has traits of its
//! own. A generator from `rand` 0.9 (its `rand::rng()` or `OsRng`) implements
//! `rand_core` 0.9's `CryptoRng`, which is not this one, and the compiler then says the
//! generator does not implement `DerefMut`: the only implementation of the 0.10 traits
//! left for it to try is the blanket one for mutable references and boxes of
//! generators. Use `rand` 0.10 or `getrandom` 0.4 (`cargo tree -i rand_core` shows the
//! versions in a build). Tests use a seeded `rand_chacha::ChaCha20Rng` for
//! reproducibility; production code must not.
//!
//! ## A join in memory
//!
//! One loop per side, draining outputs until `None` (see [`handshake`]):
//!
//! ```
//! use boarding::client::{Client, ClientOutput, ClientRequest, JoinConfig, PersistFailed};
//! use boarding::handshake::Output;
//! use boarding::server::{Admission, Server, ServerConfig, ServerRequest};
//! use boarding::storage::Records;
//! use boarding::identity::{ClientId, ServerIdentity};
//! use boarding::token::{BootstrapToken, TokenRecord};
//! use boarding::rand_core::UnwrapErr;
//!
//! let mut rng = UnwrapErr(getrandom::SysRng);
//! let identity = ServerIdentity::from_seed([1; 32]);
//! let token: BootstrapToken = "abcdef.0123456789abcdef".parse()?;
//! // The gateway's records: the core's own in-memory store, which applies the storage rule.
//! let mut records = Records::default();
//! let record = TokenRecord::new(token.clone(), Some(1_000), 1);
//! records.tokens.insert(record.id(), record);
//!
//! let config = JoinConfig::new(token, vec![identity.pin()], ClientId::new("node-1")?);
//! let mut client = Client::join(config, &mut rng);
//! let mut server = Server::new(ServerConfig::new(identity), &mut rng);
//!
//! let mut keyring = None;
//! let (mut to_server, mut to_client) = (Vec::<Vec<u8>>::new(), Vec::<Vec<u8>>::new());
//! let (mut client_done, mut server_done) = (false, false);
//! while !(client_done && server_done) {
//!     for bytes in to_client.drain(..) { let _ = client.handle_input(&bytes); }
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             Output::Transmit(bytes) => to_server.push(bytes),
//!             // Nothing to attest: empty evidence (an attester signs `binding`).
//!             Output::Request(ClientRequest::Attest { binding: _ }) => client.handle_evidence(Ok(Vec::new()))?,
//!             Output::Request(ClientRequest::PersistKeyring { saved, .. }) => {
//!                 keyring = Some(saved); // store it durably here
//!                 client.handle_persisted(Ok(()))?;
//!             }
//!             // Only a resume that rotates asks this (see `client`); a join never does.
//!             Output::Request(ClientRequest::PersistRotation { .. }) => client.handle_persisted(Err(PersistFailed))?,
//!             Output::Established(_) => client_done = true,
//!             Output::Failed(e) => return Err(e.into()),
//!         }
//!     }
//!     for bytes in to_server.drain(..) { let _ = server.handle_input(10, &bytes); }
//!     while let Some(out) = server.poll_output() {
//!         match out {
//!             Output::Transmit(bytes) => to_client.push(bytes),
//!             Output::Request(ServerRequest::Admit(_)) => server.handle_admission(Admission::admit())?,
//!             Output::Request(ServerRequest::Ticket(_)) => server.handle_ticket(Vec::new())?,
//!             Output::Request(ServerRequest::Storage(request)) => server.handle_storage(records.answer(&request))?,
//!             Output::Established(_) => server_done = true,
//!             Output::Failed(e) => return Err(e.into()),
//!         }
//!     }
//! }
//! assert!(client.is_established() && server.is_established() && keyring.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A driver over a network runs the same loops with a socket in the middle, as this
//! package's examples do over TCP on loopback: `examples/std_net_driver.rs` (blocking,
//! `std::net`, a thread for the gateway) and `examples/tokio_driver.rs` (a task per
//! connection). Both keep the gateway's records in a [`storage::Records`] under a lock.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::missing_errors_doc)]
#![no_std]
#![forbid(unsafe_code)]
// Nothing a peer or a user controls may panic the core: outside tests these are errors.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::panic
    )
)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod attestation;
pub mod channel;
pub mod client;
pub mod codec;
pub mod error;
pub mod handshake;
pub mod identity;
mod inbound;
pub mod jws;
pub mod keys;
pub mod messages;
pub mod pin;
pub mod server;
pub mod storage;
pub mod suite;
pub mod token;
pub mod transcript;

pub use error::{Alert, Error};
pub use rand_core;

/// Seconds since the Unix epoch, as passed in by the caller (the core reads no clock).
pub type UnixTime = u64;

/// Draws `N` random bytes from the caller's RNG.
pub(crate) fn random_array<const N: usize, R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}
