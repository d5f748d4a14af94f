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
//! application's admission decision are *yielded* as requests and resumed with the
//! answer, so the same core serves a blocking driver, an async one and a deterministic
//! simulator. A failure is an output like any other, and the last one.
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
//! `R: rand_core::CryptoRng` from **`rand_core` 0.10** (what this crate re-exports as
//! [`rand_core`]). The operating system's generator is
//! `rand_core::UnwrapErr(getrandom::SysRng)` with `getrandom` 0.4; an RNG from another
//! `rand_core` major version (such as `rand` 0.9's) does not implement this trait.
//! Tests use a seeded `rand_chacha::ChaCha20Rng` for reproducibility; production code
//! must not.
//!
//! ## A join in memory
//!
//! One loop per side, draining outputs until `None` (see [`handshake`]):
//!
//! ```
//! use boarding::client::{Client, ClientOutput, ClientRequest, JoinConfig};
//! use boarding::handshake::Output;
//! use boarding::server::{Admission, Server, ServerConfig, ServerRequest};
//! use boarding::storage::{StorageAnswer, StorageRequest, Redemption};
//! use boarding::identity::{ClientId, ServerIdentity};
//! use boarding::token::{BootstrapToken, TokenRecord};
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let mut rng = ChaCha20Rng::seed_from_u64(7);
//! let identity = ServerIdentity::from_seed([1; 32]);
//! let token: BootstrapToken = "abcdef.0123456789abcdef".parse()?;
//! let record = TokenRecord::new(token.clone(), Some(1_000), 1);
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
//!             Output::Request(ClientRequest::PersistKeyring(saved)) => {
//!                 keyring = Some(saved); // store it durably here
//!                 client.handle_persisted(Ok(()))?;
//!             }
//!             Output::Established(_) => client_done = true,
//!             Output::Failed(e) => return Err(e.into()),
//!         }
//!     }
//!     for bytes in to_server.drain(..) { let _ = server.handle_input(10, &bytes); }
//!     while let Some(out) = server.poll_output() {
//!         match out {
//!             Output::Transmit(bytes) => to_client.push(bytes),
//!             Output::Request(ServerRequest::Admit(_)) => server.handle_admission(Admission::admit())?,
//!             Output::Request(ServerRequest::Storage(request)) => server.handle_storage(match request {
//!                 StorageRequest::LookupToken { .. } | StorageRequest::UnexpiredTokens { .. } =>
//!                     StorageAnswer::Tokens(vec![record.clone()]),
//!                 StorageRequest::Redeem(_) =>
//!                     StorageAnswer::Redeemed(Ok(Redemption { labels: Default::default(), charged: true })),
//!                 StorageRequest::ConfirmKeyring { .. } => StorageAnswer::Confirmed(Ok(())),
//!                 StorageRequest::LookupKeyring { .. } => StorageAnswer::Keyring(None),
//!             })?,
//!             Output::Established(_) => server_done = true,
//!             Output::Failed(e) => return Err(e.into()),
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

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

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
