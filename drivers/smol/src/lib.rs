//! # boarding-smol: Boarding over TCP and TLS 1.3
//!
//! This crate runs the sans-IO [`boarding`] protocol core for real: a **gateway** that
//! serves many agents over TCP and TLS 1.3, **agents** that join once with a bootstrap
//! token and reconnect (resume) for ever with the keyring they stored, and **stores**
//! that keep the gateway's tokens, keyrings and identity across crashes.
//!
//! * **Any stream.** The handshake loop and [`Session`] work over any `futures-io`
//!   `AsyncRead + AsyncWrite` ([`Gateway::handshake`], [`agent::join`],
//!   [`agent::resume`]), so other runtimes can use them. The built-in server and
//!   client use smol's TCP.
//! * **TLS 1.3 only**, through `futures-rustls` (rustls with the aws-lc-rs provider,
//!   preferring the hybrid post-quantum key exchange X25519MLKEM768, then X25519). The
//!   gateway's certificate is self-signed with its Ed25519 identity key. The agent's
//!   [`tls::PinVerifier`] checks that every certificate in the presented chain is
//!   signed by the next and that one of them carries a pinned key, and nothing else:
//!   no names, no web PKI, no clocks. The protocol's own pin check stays on too, so
//!   the gateway is authenticated twice, independently. Each Boarding handshake is
//!   bound to its TLS session ([`tls::channel_binding`], `spec/PROTOCOL.md` §6.1): a
//!   relay that terminates TLS on each side fails the first proof. The free functions
//!   over any stream ([`agent::join`], [`agent::resume`], [`Gateway::handshake`]) are
//!   unbound on both sides.
//! * **Gateway** ([`Gateway`]): accept loop and a task per connection on its own
//!   multi-threaded executor; deadlines for the ClientHello and the whole handshake;
//!   caps on handshakes (in all and per source address, evicting silent ones first) and
//!   on sessions (in all and per client); an idle timeout; revocation that ends live
//!   sessions ([`Gateway::revoke_client`]); graceful shutdown ([`Serving::shutdown`]);
//!   an admin socket for operator commands ([`admin`]). The application gets a [`GatewaySession`] whose
//!   [`Session::peer`] is a [`VerifiedClient`]: client id, the token id it joined with
//!   and that token's labels, constructible only by a successful handshake.
//! * **Agent** ([`Agent`]): [`Agent::join`] (token, pins, client id; the keyring is
//!   stored durably *before* the key confirmation is sent) and [`Agent::connect`]
//!   (resume with the stored keyring), each returning an [`AgentSession`]. A resume in
//!   which the gateway rotates the keyring ([`GatewayConfig::rotate_after`],
//!   [`Gateway::request_rotation`]) stores the new one in the [`KeyringStore`] (a
//!   compare-and-swap, [`KeyringStore::replace_keyring`]) before it confirms; a copy of a
//!   keyring rotated away from is refused (`RetiredKeyring`) and counted as a suspected
//!   clone, in the gateway's log, its metrics and its store.
//! * **Stores**: the [`Store`] trait (gateway) and [`KeyringStore`] (agent), each with
//!   an in-memory implementation ([`MemoryStore`], [`MemoryKeyringStore`]) and an
//!   embedded, ACID one on `redb` ([`RedbStore`], [`RedbKeyringStore`]). Every store
//!   carries protocol requests out with the core's one storage rule
//!   ([`boarding::storage::execute`]) inside one transaction of its own.
//! * **Admission**: the gateway application's decision on each join, and the ticket it
//!   sends that node, come from an [`Admit`] ([`Gateway::with_admission`]; [`AdmitAll`] by
//!   default), which sees the identity the [`Validator`] attested.
//! * **Attestation**: an agent's [`Attester`] ([`Agent::with_attester`]) signs evidence
//!   bound to each join's session; the gateway's [`Validator`] ([`Gateway::with_validator`])
//!   judges it before redemption. The `attest` module has an `x509pop` pair that needs no
//!   special hardware (an operator CA, a node key and certificate).
//! * **Services** (the `forward` module): an agent forwards a stream through a session of
//!   its own to a named service; the gateway checks the service's rule against the
//!   verified client, connects to the upstream and writes a PROXY protocol v2 header with
//!   the client's identity before any byte of the agent's (`spec/FORWARDING.md`).
//! * **Client certificates** (the [`certificate`] module): an agent that asks
//!   ([`Agent::with_certificate`]) sends a signing request with its join; the gateway's CA
//!   ([`Gateway::with_certificates`]) signs it into the join's [`ticket::Ticket`], and the
//!   agent stores key and certificate before it confirms. A resume past two thirds of the
//!   certificate's lifetime renews it.
//!
//! Errors ([`Error`], [`StoreError`]) name the cause; a pin mismatch, for example,
//! shows the presented pin and the expected ones. What to do about an error in a given
//! deployment (which flag or command) is the application's to say.
//!
//! ## Features
//!
//! They are on by default. An embedder that brings its own transport and store can turn
//! them off (`default-features = false`); the handshake loop, [`Session`], the store
//! traits and the in-memory stores remain.
//!
//! * **`tls`**: [`Gateway::serve`], [`Gateway::accept`], [`Agent`] and the [`tls`]
//!   module, with rustls, aws-lc-rs, rcgen and x509-parser.
//! * **`redb`**: [`RedbStore`], [`RedbKeyringStore`] and [`prepare_dir`], with redb.
//! * **`attest`**: the `x509pop` attester and validator (the `attest` module), with
//!   rustls-webpki, x509-parser and aws-lc-rs. The [`Attester`] and [`Validator`] traits
//!   remain without it.
//! * **`forward`**: the `forward` module (services behind the gateway), with ppp; its
//!   TCP helpers (`Agent::forward`, `forward::serve_services`) need `tls` too.
//! * **`ca`**: client certificates at join (the [`certificate`] module's
//!   `CertificateAuthority` and `NodeKey`), with rcgen and x509-parser.
//!   [`certificate::NodeCertificate`] and the [`ticket`] parts remain without it.
//!
//! ## Example: a gateway and an agent on loopback
//!
//! With the `tls` feature:
//!
//! ```
//! # #[cfg(feature = "tls")]
//! # fn main() {
//! use boarding::identity::ClientId;
//! use boarding::token::{BootstrapToken, TokenRecord};
//! use boarding_smol::{Agent, Gateway, GatewayConfig, MemoryKeyringStore, MemoryStore, Store, echo, os_rng};
//!
//! smol::block_on(async {
//!     // The gateway: an identity, a store with one single-use token, a listener.
//!     let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await?;
//!     let token = BootstrapToken::generate(&mut os_rng());
//!     gateway.store().insert_token(TokenRecord::new(token.clone(), None, 1)).await?;
//!     let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let serving = gateway.serve(listener, echo)?;
//!     let addr = serving.local_addr().to_string();
//!
//!     // The agent joins with the token and the gateway's pin...
//!     let agent = Agent::default();
//!     let keyrings = MemoryKeyringStore::new();
//!     let id = ClientId::new("node-1")?;
//!     let mut session = agent.join(&addr, token, &[gateway.pin()], id, &keyrings).await?;
//!     session.send(b"hello").await?;
//!     assert_eq!(session.recv().await?.as_deref(), Some(&b"hello"[..]));
//!     session.close().await?;
//!
//!     // ...and later resumes with the keyring it stored.
//!     let mut session = agent.connect(&addr, &keyrings).await?;
//!     session.send(b"again").await?;
//!     assert_eq!(session.recv().await?.as_deref(), Some(&b"again"[..]));
//!     session.close().await?;
//!
//!     serving.shutdown().await;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })
//! .unwrap();
//! # }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(clippy::missing_errors_doc)]
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

pub mod admin;
pub mod agent;
#[cfg(feature = "attest")]
pub mod attest;
pub mod certificate;
mod error;
#[cfg(feature = "forward")]
pub mod forward;
pub mod gateway;
mod handshake;
// Without `tls` the gateway has no accept loop, which is what records most metrics.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub mod metrics;
#[cfg(feature = "redb")]
mod redb_store;
mod session;
mod store;
pub mod ticket;
#[cfg(feature = "tls")]
pub mod tls;

#[cfg(feature = "tls")]
pub use agent::{Agent, AgentConfig, AgentStream};
pub use boarding::server::VerifiedClient;
pub use error::{Error, IoKind, StoreError};
pub use gateway::{Gateway, GatewayConfig, GatewayStats, echo};
#[cfg(feature = "tls")]
pub use gateway::{GatewayStream, Serving};
pub use handshake::{
    Admit, AdmitAll, AttestError, AttestationRefused, Attester, Decision, EvidenceRequest, IgnoreEvidence, JoinRequest,
    Validator,
};
#[cfg(feature = "redb")]
pub use redb_store::{AGENT_DB, GATEWAY_DB, RedbKeyringStore, RedbStore, prepare_dir};
pub use session::{AgentSession, GatewaySession, Session, unix_now};
pub use store::{
    KeyringStore, MemoryKeyringStore, MemoryStore, Store, TokenTemplate, check_private, create_or_insert_token,
    create_token, insert_chosen_token,
};

/// The operating system's random number generator, as the core's `CryptoRng`.
///
/// It panics only if the OS cannot provide randomness at all, which no caller can
/// recover from safely.
pub fn os_rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}
