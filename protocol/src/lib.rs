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
//! atomically with the new keyring, look up and confirm a keyring) are *yielded* as
//! [`storage::StorageRequest`]s and resumed with the answer, so the same core serves a
//! blocking driver, an async one and a deterministic simulator.
//!
//! The wire format, key schedule and state machines are specified byte for byte in
//! `spec/PROTOCOL.md`; this crate implements that document.
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
//! | [`transcript`] | the running transcript hash |
//! | [`keys`] | the HKDF-SHA256 key schedule, keyrings and session keys |
//! | [`suite`] | protocol versions and MAC suites (HMAC-SHA256, BLAKE3) |
//! | [`client`] | the agent's join and resume state machines |
//! | [`server`] | the gateway's state machine |
//! | [`storage`] | the gateway's storage requests and the redemption rule |
//! | [`channel`] | MAC-authenticated frames into caller-owned buffers |
//! | [`error`] | layered errors and the coarse alerts a peer sees |
//!
//! ## A join in memory
//!
//! ```
//! use boarding::client::{Client, ClientOutput, JoinConfig};
//! use boarding::server::{Server, ServerConfig, ServerOutput};
//! use boarding::storage::{StorageAnswer, StorageRequest, Redemption};
//! use boarding::identity::{ClientId, GatewayIdentity};
//! use boarding::token::{BootstrapToken, TokenRecord};
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let mut rng = ChaCha20Rng::seed_from_u64(7);
//! let identity = GatewayIdentity::from_seed([1; 32]);
//! let token: BootstrapToken = "abcdef.0123456789abcdef".parse()?;
//! let record = TokenRecord::new(token.clone(), Some(1_000), 1);
//!
//! let config = JoinConfig::new(token, vec![identity.pin()], ClientId::new("node-1")?);
//! let mut client = Client::join(config, &mut rng);
//! let mut server = Server::new(ServerConfig::new(identity), &mut rng);
//!
//! let mut keyring = None;
//! // Shuttle bytes and storage answers until both sides are established.
//! for _ in 0..16 {
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             ClientOutput::Transmit(bytes) => server.handle_input(10, &bytes)?,
//!             ClientOutput::PersistKeyring(saved) => { keyring = Some(saved); client.handle_persisted()?; }
//!             ClientOutput::Established(_) => {}
//!         }
//!     }
//!     while let Some(out) = server.poll_output() {
//!         match out {
//!             ServerOutput::Transmit(bytes) => client.handle_input(&bytes)?,
//!             ServerOutput::Storage(StorageRequest::LookupToken { .. }) =>
//!                 server.handle_storage(StorageAnswer::Tokens(vec![record.clone()]))?,
//!             ServerOutput::Storage(StorageRequest::Redeem(_)) =>
//!                 server.handle_storage(StorageAnswer::Redeemed(Ok(Redemption::new(Default::default(), true, Vec::new()))))?,
//!             ServerOutput::Storage(StorageRequest::ConfirmKeyring { .. }) =>
//!                 server.handle_storage(StorageAnswer::Confirmed(Ok(())))?,
//!             ServerOutput::Storage(other) => unreachable!("{other:?}"),
//!             ServerOutput::Established(_) => {}
//!         }
//!     }
//! }
//! assert!(client.is_established() && server.is_established() && keyring.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod channel;
pub mod client;
pub mod codec;
pub mod error;
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

/// Seconds since the Unix epoch, as passed in by the caller (the core reads no clock).
pub type UnixTime = u64;

/// Draws `N` random bytes from the caller's RNG.
pub(crate) fn random_array<const N: usize, R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}
