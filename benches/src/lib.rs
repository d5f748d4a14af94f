//! Fixtures shared by the Boarding benchmarks (see `benches/` and `BENCHMARKS.md`).
//!
//! Everything here builds the *same bytes* and the same kind of in-memory peers for
//! every contender: the Boarding channel, the raw MAC primitives it is bounded by,
//! `snow` (Noise) transport messages and rustls TLS 1.3 records, and the handshakes.
//! Each fixture checks once, outside any timed loop, that what it opens equals what
//! it sealed.

pub mod process;
pub mod rustls_upstream;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::Arc;

use boarding::channel::{Channel, FRAME_OVERHEAD, Received, Side};
use boarding::client::{Client, ClientSession, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::identity::{ClientId, ServerIdentity};
use boarding::keys::{SessionKeys, SymmetricKey};
use boarding::server::{Server, ServerConfig, ServerSession};
use boarding::storage::{KeyringRecord, Redemption, StorageAnswer, StorageRequest};
use boarding::suite::MacSuite;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_memory::{MemoryStore, Pair, StorageAction};
use hmac::{Hmac, Mac as _};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use sha2::Sha256;

/// The frame payload sizes every throughput contender is measured at.
pub const SIZES: [usize; 5] = [64, 1024, 16 * 1024, 64 * 1024, 1024 * 1024];

/// A short human label for a payload size.
pub fn size_label(len: usize) -> String {
    match len {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

/// The deterministic payload of `len` bytes every contender seals and opens.
pub fn payload(len: usize) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(0x626f_6172_6469_6e67);
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Fixed session keys (the channel's cost does not depend on their value).
pub fn session_keys() -> SessionKeys {
    SessionKeys { c2s: SymmetricKey::from_bytes([0x11; 32]), s2c: SymmetricKey::from_bytes([0x22; 32]) }
}

/// The 32-byte key the raw primitives are keyed with.
pub const RAW_KEY: [u8; 32] = [0x11; 32];

/// HMAC-SHA256 keyed with a 32-byte key, the key schedule done once (what a careful
/// user of the `hmac` crate does; the per-tag work is then a clone of this state).
pub fn hmac_prepared(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).unwrap_or_else(|e| panic!("32-byte HMAC key: {e}"))
}

/// The raw-primitive limit for HMAC-SHA256: tag `data`, then recompute and verify the
/// tag, as seal + open do (two MAC computations over the same bytes).
pub fn raw_hmac_tag_verify(prepared: &Hmac<Sha256>, data: &[u8]) -> bool {
    let mut mac = prepared.clone();
    mac.update(data);
    let tag = mac.finalize().into_bytes();
    let mut check = prepared.clone();
    check.update(data);
    check.verify_slice(&tag).is_ok()
}

/// The raw-primitive limit for BLAKE3's keyed hash: tag, then recompute and compare in
/// constant time (`blake3::Hash` equality is constant-time).
pub fn raw_blake3_tag_verify(key: &[u8; 32], data: &[u8]) -> bool {
    let tag = blake3::keyed_hash(key, data);
    blake3::keyed_hash(key, data) == tag
}

/// Two ends of one Boarding channel and a caller-owned frame buffer.
#[derive(Debug)]
pub struct ChannelPair {
    /// The sending end.
    pub client: Channel,
    /// The receiving end.
    pub server: Channel,
    /// The frame buffer: header, payload, tag.
    pub frame: Vec<u8>,
    len: usize,
}

impl ChannelPair {
    /// A pair for `suite` with a frame buffer holding `payload` in place, checked once.
    pub fn new(suite: MacSuite, payload: &[u8]) -> Self {
        let keys = session_keys();
        let mut pair = Self {
            client: Channel::new(Side::Client, suite, &keys),
            server: Channel::new(Side::Server, suite, &keys),
            frame: vec![0u8; payload.len() + FRAME_OVERHEAD],
            len: payload.len(),
        };
        let n = pair.client.seal(payload, &mut pair.frame).unwrap_or_else(|e| panic!("seal: {e}"));
        match pair.server.open(&pair.frame[..n]) {
            Ok(Received::Data(opened)) => assert_eq!(opened, payload, "opened bytes differ from the sealed ones"),
            other => panic!("open: {other:?}"),
        }
        pair
    }

    /// Seals the payload already in the frame buffer in place and opens it; returns the
    /// opened payload's length.
    #[inline]
    pub fn seal_in_place_open(&mut self) -> usize {
        let n = self.client.seal_in_place(&mut self.frame, self.len).unwrap_or_else(|e| panic!("seal: {e}"));
        match self.server.open(&self.frame[..n]) {
            Ok(Received::Data(opened)) => opened.len(),
            other => panic!("open: {other:?}"),
        }
    }

    /// Copies `payload` into the frame buffer while sealing it, then opens it.
    #[inline]
    pub fn seal_open(&mut self, payload: &[u8]) -> usize {
        let n = self.client.seal(payload, &mut self.frame).unwrap_or_else(|e| panic!("seal: {e}"));
        match self.server.open(&self.frame[..n]) {
            Ok(Received::Data(opened)) => opened.len(),
            other => panic!("open: {other:?}"),
        }
    }
}

/// The largest Noise transport message (RFC-style limit of the Noise spec).
pub const NOISE_MAX_MESSAGE: usize = 65_535;
/// Noise's AEAD tag.
pub const NOISE_TAG: usize = 16;

/// Two `snow` transport states (Noise NN, X25519, ChaCha20-Poly1305) and buffers.
pub struct SnowPair {
    initiator: snow::TransportState,
    responder: snow::TransportState,
    wire: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for SnowPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnowPair")
    }
}

impl SnowPair {
    /// A connected pair; `payload` is sent once and checked.
    pub fn new(payload: &[u8]) -> Self {
        let params: snow::params::NoiseParams =
            "Noise_NN_25519_ChaChaPoly_BLAKE2s".parse().unwrap_or_else(|e| panic!("noise params: {e:?}"));
        let mut i = snow::Builder::new(params.clone()).build_initiator().unwrap_or_else(|e| panic!("{e:?}"));
        let mut r = snow::Builder::new(params).build_responder().unwrap_or_else(|e| panic!("{e:?}"));
        let mut buf = vec![0u8; NOISE_MAX_MESSAGE];
        let mut scratch = vec![0u8; NOISE_MAX_MESSAGE];
        let n = i.write_message(&[], &mut buf).unwrap_or_else(|e| panic!("{e:?}"));
        r.read_message(&buf[..n], &mut scratch).unwrap_or_else(|e| panic!("{e:?}"));
        let n = r.write_message(&[], &mut buf).unwrap_or_else(|e| panic!("{e:?}"));
        i.read_message(&buf[..n], &mut scratch).unwrap_or_else(|e| panic!("{e:?}"));
        let mut pair = Self {
            initiator: i.into_transport_mode().unwrap_or_else(|e| panic!("{e:?}")),
            responder: r.into_transport_mode().unwrap_or_else(|e| panic!("{e:?}")),
            wire: vec![0u8; NOISE_MAX_MESSAGE],
            out: vec![0u8; payload.len().max(1)],
        };
        assert_eq!(pair.send(payload), payload.len());
        assert_eq!(&pair.out[..payload.len()], payload, "snow opened bytes differ");
        pair
    }

    /// Sends `payload` as as many transport messages as its size needs (each at most
    /// 65,535 bytes on the wire), each written by the initiator and read by the
    /// responder; returns the bytes received.
    #[inline]
    pub fn send(&mut self, payload: &[u8]) -> usize {
        let mut received = 0;
        for chunk in payload.chunks(NOISE_MAX_MESSAGE - NOISE_TAG) {
            let n = self.initiator.write_message(chunk, &mut self.wire).unwrap_or_else(|e| panic!("{e:?}"));
            let m = self
                .responder
                .read_message(&self.wire[..n], &mut self.out[received..])
                .unwrap_or_else(|e| panic!("{e:?}"));
            received += m;
        }
        received
    }
}

/// The TLS server name of the in-memory rustls peers.
pub const TLS_SERVER_NAME: &str = "gateway.boarding.test";

/// rustls configurations for TLS 1.3 with AES-128-GCM and X25519 over an Ed25519
/// certificate chain (a CA and the gateway's leaf), like a gateway certificate carrying
/// an Ed25519 key. Session resumption and tickets are off, so every handshake is full.
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    /// The client's.
    pub client: Arc<rustls::ClientConfig>,
    /// The server's.
    pub server: Arc<rustls::ServerConfig>,
}

impl TlsConfigs {
    /// Builds the certificates and both configurations.
    pub fn new() -> Self {
        let fail = |e: &dyn std::fmt::Display| -> ! { panic!("TLS fixture: {e}") };
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap_or_else(|e| fail(&e));
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(&e));
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap_or_else(|e| fail(&e));
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap_or_else(|e| fail(&e));
        let leaf = rcgen::CertificateParams::new(vec![TLS_SERVER_NAME.to_owned()])
            .and_then(|p| p.signed_by(&leaf_key, &ca))
            .unwrap_or_else(|e| fail(&e));

        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
        provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
        let provider = Arc::new(provider);

        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap_or_else(|e| fail(&e))
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key_der)
            .unwrap_or_else(|e| fail(&e));
        server.send_tls13_tickets = 0;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap_or_else(|e| fail(&e));
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap_or_else(|e| fail(&e))
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        Self { client: Arc::new(client), server: Arc::new(server) }
    }

    /// One full TLS 1.3 handshake in memory (client and server CPU together).
    pub fn handshake(&self) -> (rustls::ClientConnection, rustls::ServerConnection) {
        let name = rustls::pki_types::ServerName::try_from(TLS_SERVER_NAME).unwrap_or_else(|e| panic!("{e}"));
        let mut client = rustls::ClientConnection::new(self.client.clone(), name).unwrap_or_else(|e| panic!("{e}"));
        let mut server = rustls::ServerConnection::new(self.server.clone()).unwrap_or_else(|e| panic!("{e}"));
        let mut wire = Vec::with_capacity(8 * 1024);
        let mut rounds = 0;
        while client.is_handshaking() || server.is_handshaking() {
            rounds += 1;
            assert!(rounds < 16, "TLS handshake did not converge");
            move_tls(&mut client, &mut server, &mut wire);
            server.process_new_packets().unwrap_or_else(|e| panic!("server: {e}"));
            move_tls(&mut server, &mut client, &mut wire);
            client.process_new_packets().unwrap_or_else(|e| panic!("client: {e}"));
        }
        (client, server)
    }
}

impl Default for TlsConfigs {
    fn default() -> Self {
        Self::new()
    }
}

/// Moves every pending TLS byte from `from` to `to` through `wire`.
fn move_tls<A, B, DA, DB>(from: &mut A, to: &mut B, wire: &mut Vec<u8>)
where
    A: std::ops::DerefMut<Target = rustls::ConnectionCommon<DA>>,
    B: std::ops::DerefMut<Target = rustls::ConnectionCommon<DB>>,
{
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).unwrap_or_else(|e| panic!("write_tls: {e}"));
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap_or_else(|e| panic!("read_tls: {e}"));
    }
}

/// Application data through a connected in-memory rustls pair: plaintext written on
/// the client, TLS records moved, plaintext read on the server.
pub struct TlsPair {
    client: rustls::ClientConnection,
    server: rustls::ServerConnection,
    wire: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for TlsPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsPair")
    }
}

/// Plaintext handed to rustls per write: one maximal TLS record.
pub const TLS_RECORD: usize = 16 * 1024;

impl TlsPair {
    /// A connected pair; `payload` is sent once and checked.
    pub fn new(configs: &TlsConfigs, payload: &[u8]) -> Self {
        let (client, server) = configs.handshake();
        let mut pair =
            Self { client, server, wire: Vec::with_capacity(TLS_RECORD + 1024), out: vec![0u8; payload.len().max(1)] };
        assert_eq!(pair.send(payload), payload.len());
        assert_eq!(&pair.out[..payload.len()], payload, "rustls opened bytes differ");
        pair
    }

    /// Sends `payload` one 16 KiB record at a time (rustls's record size and its
    /// default receive buffer); returns the bytes read back.
    #[inline]
    pub fn send(&mut self, payload: &[u8]) -> usize {
        let mut received = 0;
        for chunk in payload.chunks(TLS_RECORD) {
            self.client.writer().write_all(chunk).unwrap_or_else(|e| panic!("write: {e}"));
            move_tls(&mut self.client, &mut self.server, &mut self.wire);
            self.server.process_new_packets().unwrap_or_else(|e| panic!("process: {e}"));
            let want = received + chunk.len();
            while received < want {
                let n = self.server.reader().read(&mut self.out[received..want]).unwrap_or_else(|e| panic!("{e}"));
                assert!(n > 0, "rustls returned no plaintext");
                received += n;
            }
        }
        received
    }
}

/// The gateway's clock in the handshake fixtures.
pub const NOW: u64 = 1_700_000_000;

/// A gateway identity, a token record and the matching join configuration: what both
/// ends of a join need, with a trivial in-memory storage answerer (no store, no lock).
/// Handshakes run on the memory driver's [`Pair`] (its one run loop moves the messages
/// and answers admission and persist); its storage hook holds every request, which the
/// fixture answers itself.
#[derive(Debug, Clone)]
pub struct HandshakeFixture {
    /// The gateway's configuration.
    pub server: Arc<ServerConfig>,
    /// The token record the gateway looks up.
    pub record: TokenRecord,
    /// The agent's join configuration.
    pub join: JoinConfig,
    /// What the agent saved from a join (for resumes).
    pub saved: SavedKeyring,
    /// The gateway's confirmed keyring record for that agent (for resumes).
    pub keyring: KeyringRecord,
    /// The (empty, never used) store every [`Pair`] needs: the fixture answers storage.
    store: Arc<MemoryStore>,
}

/// What one handshake produced: both established sessions.
#[derive(Debug)]
pub struct Sessions {
    /// The agent's session.
    pub client: ClientSession,
    /// The gateway's session.
    pub server: ServerSession,
}

impl HandshakeFixture {
    /// A gateway, a token and one completed join (whose keyring the resumes use).
    pub fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let identity = ServerIdentity::from_seed([7; 32]);
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap_or_else(|e| panic!("token: {e}"));
        let record = TokenRecord::new(token.clone(), None, 0);
        let client_id = ClientId::new("node-1").unwrap_or_else(|e| panic!("client id: {e}"));
        let join = JoinConfig::new(token, vec![identity.pin()], client_id.clone())
            .with_suites(&[MacSuite::Blake3, MacSuite::HmacSha256]);
        let server = Arc::new(ServerConfig::new(identity));
        let mut fixture = Self {
            server: server.clone(),
            record: record.clone(),
            join,
            saved: SavedKeyring {
                client_id: client_id.clone(),
                server_pin: server.pin(),
                token_id: record.id(),
                keyring: boarding::keys::Keyring {
                    c2s: SymmetricKey::from_bytes([0; 32]),
                    s2c: SymmetricKey::from_bytes([0; 32]),
                },
                rotated_from: None,
            },
            keyring: KeyringRecord {
                client_id,
                token_id: record.id(),
                labels: BTreeMap::new(),
                keyring: boarding::keys::Keyring {
                    c2s: SymmetricKey::from_bytes([0; 32]),
                    s2c: SymmetricKey::from_bytes([0; 32]),
                },
                confirmed: true,
                created_at: 0,
                attested: None,
                retired: Vec::new(),
                rotated_at: None,
                rotation_requested: false,
                clone_suspected: None,
                generation: 0,
            },
            store: Arc::new(MemoryStore::new()),
        };
        let (sessions, saved) = fixture.join(&mut rng);
        check_sessions(sessions);
        let saved = saved.unwrap_or_else(|| panic!("the join persisted no keyring"));
        fixture.keyring.keyring = saved.keyring.clone();
        fixture.saved = saved;
        check_sessions(fixture.resume(&mut rng));
        fixture
    }

    /// One complete join, client and gateway, answering storage requests trivially.
    pub fn join(&self, rng: &mut ChaCha20Rng) -> (Sessions, Option<SavedKeyring>) {
        let client = Client::join(self.join.clone(), rng);
        let server = Server::new(self.server.clone(), rng);
        self.drive(client, server)
    }

    /// One complete resume with the fixture's keyring.
    pub fn resume(&self, rng: &mut ChaCha20Rng) -> Sessions {
        let client = Client::resume(ResumeConfig::new(self.saved.clone()), rng);
        let server = Server::new(self.server.clone(), rng);
        self.drive(client, server).0
    }

    /// The trivial storage answer to a gateway request.
    pub fn answer(&self, request: StorageRequest) -> StorageAnswer {
        match request {
            StorageRequest::LookupToken { .. } | StorageRequest::UnexpiredTokens { .. } => {
                StorageAnswer::Tokens(vec![self.record.clone()])
            }
            StorageRequest::Redeem(_) => {
                StorageAnswer::Redeemed(Ok(Redemption { labels: BTreeMap::new(), charged: true }))
            }
            StorageRequest::LookupKeyring { .. } => StorageAnswer::Keyring(Some(self.keyring.clone())),
            StorageRequest::ConfirmKeyring { .. } => StorageAnswer::Confirmed(Ok(())),
            // The fixture's gateway never rotates (no policy, no request).
            StorageRequest::RotateKeyring(_) => StorageAnswer::Rotated(Ok(())),
            StorageRequest::FenceKeyring { .. } => StorageAnswer::Fenced(Some(1)),
            StorageRequest::CheckKeyring { .. } => StorageAnswer::Checked(Ok(())),
            StorageRequest::RecordClone { .. } => StorageAnswer::CloneRecorded(false),
            StorageRequest::RequestRotation { .. } => StorageAnswer::RotationRequested(true),
        }
    }

    /// Runs the handshake on a [`Pair`] until both ends are established: the pair's
    /// loop moves the messages, admits with no ticket and records the persisted
    /// keyring; each storage request it holds is answered by [`Self::answer`].
    pub fn drive(&self, client: Client, server: Server) -> (Sessions, Option<SavedKeyring>) {
        let mut pair = Pair::new(client, server, self.store.clone(), NOW).with_storage(|_| StorageAction::Hold);
        loop {
            let outcome = pair.drive();
            match pair.held_storage.take() {
                Some(request) => {
                    pair.server.handle_storage(self.answer(request)).unwrap_or_else(|e| panic!("gateway: {e}"))
                }
                None => {
                    assert!(outcome.both_established(), "handshake did not complete: {outcome:?}");
                    break;
                }
            }
        }
        let saved = pair.saved.take();
        let (client, server) = pair.into_sessions().unwrap_or_else(|e| panic!("not established: {e}"));
        (Sessions { client, server }, saved)
    }
}

impl Default for HandshakeFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks that two channels from a handshake talk to each other.
pub fn check_sessions(mut s: Sessions) {
    let mut buf = [0u8; 64];
    let (client, server) = (&mut s.client.channel, &mut s.server.channel);
    let n = client.seal(b"ping", &mut buf).unwrap_or_else(|e| panic!("seal: {e}"));
    assert_eq!(server.open(&buf[..n]), Ok(Received::Data(&b"ping"[..])));
    let n = server.seal(b"pong", &mut buf).unwrap_or_else(|e| panic!("seal: {e}"));
    assert_eq!(client.open(&buf[..n]), Ok(Received::Data(&b"pong"[..])));
}

/// The public-key operations of one join, exactly as the two ends do them (see
/// `BENCHMARKS.md`): agent and gateway each compute one X25519 public key from a fresh
/// secret and one X25519 shared secret; the gateway signs one Ed25519 challenge and the
/// agent decodes the gateway's key and verifies it strictly.
#[derive(Debug)]
pub struct PublicKeyOps {
    signing: ed25519_dalek::SigningKey,
    message: Vec<u8>,
    rng: ChaCha20Rng,
}

impl PublicKeyOps {
    /// Keys and a challenge-sized message.
    pub fn new() -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        // A challenge's signing input is about this long (base64url header and token).
        let message = payload(180);
        Self { signing, message, rng: ChaCha20Rng::seed_from_u64(25519) }
    }

    /// X25519 twice (key generation and agreement) for each of the two ends; returns
    /// the shared secret, checked equal on both ends.
    #[inline]
    pub fn x25519_both_ends(&mut self) -> [u8; 32] {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        self.rng.fill_bytes(&mut a);
        self.rng.fill_bytes(&mut b);
        let a = x25519_dalek::StaticSecret::from(a);
        let b = x25519_dalek::StaticSecret::from(b);
        let a_pub = x25519_dalek::PublicKey::from(&a);
        let b_pub = x25519_dalek::PublicKey::from(&b);
        let ab = a.diffie_hellman(&b_pub);
        let ba = b.diffie_hellman(&a_pub);
        assert!(ab.was_contributory() && ba.was_contributory());
        assert_eq!(ab.as_bytes(), ba.as_bytes());
        ab.to_bytes()
    }

    /// One Ed25519 signature.
    #[inline]
    pub fn ed25519_sign(&self) -> ed25519_dalek::Signature {
        use ed25519_dalek::Signer as _;
        self.signing.sign(&self.message)
    }

    /// Decoding the gateway's public key from its 32 bytes and verifying one signature
    /// strictly, as the agent does.
    #[inline]
    pub fn ed25519_verify(&self, public: &[u8; 32], signature: &ed25519_dalek::Signature) -> bool {
        match ed25519_dalek::VerifyingKey::from_bytes(public) {
            Ok(key) => key.verify_strict(&self.message, signature).is_ok(),
            Err(_) => false,
        }
    }

    /// The gateway's public key bytes.
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }
}

impl Default for PublicKeyOps {
    fn default() -> Self {
        Self::new()
    }
}

/// A `snow` Noise XX handshake (X25519, ChaCha20-Poly1305, BLAKE2s) with long-term
/// keys made beforehand: three messages, both ends.
#[derive(Debug)]
pub struct NoiseXx {
    params: snow::params::NoiseParams,
    initiator_key: Vec<u8>,
    responder_key: Vec<u8>,
}

impl NoiseXx {
    /// Long-term keys for both ends.
    pub fn new() -> Self {
        let params: snow::params::NoiseParams =
            "Noise_XX_25519_ChaChaPoly_BLAKE2s".parse().unwrap_or_else(|e| panic!("noise params: {e:?}"));
        let builder = snow::Builder::new(params.clone());
        let i = builder.generate_keypair().unwrap_or_else(|e| panic!("{e:?}"));
        let r = builder.generate_keypair().unwrap_or_else(|e| panic!("{e:?}"));
        Self { params, initiator_key: i.private, responder_key: r.private }
    }

    /// One complete handshake; returns both transport states.
    pub fn handshake(&self) -> (snow::TransportState, snow::TransportState) {
        let mut i = snow::Builder::new(self.params.clone())
            .local_private_key(&self.initiator_key)
            .and_then(|b| b.build_initiator())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let mut r = snow::Builder::new(self.params.clone())
            .local_private_key(&self.responder_key)
            .and_then(|b| b.build_responder())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let mut wire = [0u8; 256];
        let mut scratch = [0u8; 256];
        let n = i.write_message(&[], &mut wire).unwrap_or_else(|e| panic!("{e:?}"));
        r.read_message(&wire[..n], &mut scratch).unwrap_or_else(|e| panic!("{e:?}"));
        let n = r.write_message(&[], &mut wire).unwrap_or_else(|e| panic!("{e:?}"));
        i.read_message(&wire[..n], &mut scratch).unwrap_or_else(|e| panic!("{e:?}"));
        let n = i.write_message(&[], &mut wire).unwrap_or_else(|e| panic!("{e:?}"));
        r.read_message(&wire[..n], &mut scratch).unwrap_or_else(|e| panic!("{e:?}"));
        (
            i.into_transport_mode().unwrap_or_else(|e| panic!("{e:?}")),
            r.into_transport_mode().unwrap_or_else(|e| panic!("{e:?}")),
        )
    }
}

impl Default for NoiseXx {
    fn default() -> Self {
        Self::new()
    }
}
