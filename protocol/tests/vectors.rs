//! The published test vectors (`spec/vectors/boarding-v1.json`) are regenerated from
//! fixed seeds and must match the committed file byte for byte; and every derived
//! value in them is recomputed here independently, from the formulas of
//! `spec/PROTOCOL.md` with the primitive crates alone, so the implementation, the
//! specification and the vectors agree.
//!
//! The file is self-contained: its `inputs` name everything a handshake depends on
//! besides randomness (versions and suites offered, the gateway's suite preference,
//! the named- or unnamed-token flow, the evidence, the requests and the tickets the
//! applications exchange, the token record, the gateway's rotation policy and when the
//! rotating resume runs), and each flow lists the random values each side draws. Each
//! resume lists the keyrings it offers (by fingerprint) and the one the gateway answers
//! with; the rotating one also the keyring it rotates to, which the resume after it
//! offers first. [`the_committed_inputs_and_randomness_reproduce_the_wire_bytes`]
//! reads only the file and replays it.
//!
//! To update the file after an intended change: `BOARDING_BLESS=1 cargo test -p boarding --test vectors`.

use std::convert::Infallible;
use std::sync::Arc;

use boarding::attestation::AttestationBinding;
use boarding::channel::{Channel, Side};
use boarding::client::{Client, ClientRequest, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::handshake::Output;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::keys::{Keyring, KeyringId, SessionKeys, SymmetricKey};
use boarding::messages::{HandshakeMessage, Message as _};
use boarding::server::{Admission, Server, ServerConfig, ServerRequest};
use boarding::storage::{Records, RotationPolicy};
use boarding::suite::{MacSuite, SUPPORTED_VERSIONS};
use boarding::token::{BootstrapToken, TokenRecord};
use boarding::transcript::ChannelBinding;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryCryptoRng, TryRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CLIENT_SEED: u64 = 1;
const SERVER_SEED: u64 = 2;
// `spec/` in this package links to the repository's `spec/` (and is a copy in the
// published package), so the vectors and the specification travel with the crate.
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/spec/vectors/boarding-v1.json");

/// Everything the two handshakes of the vectors depend on besides randomness: what the
/// file's `inputs` hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    token: String,
    client_id: String,
    now: u64,
    identity_seed: [u8; 32],
    payload: Vec<u8>,
    /// Versions the agent offers (the core always offers every supported one).
    versions: Vec<u16>,
    /// Suites the agent offers, most preferred first.
    suites: Vec<MacSuite>,
    /// The gateway's suites, most preferred first (it picks its first the agent offers).
    gateway_suites: Vec<MacSuite>,
    /// Whether the hello names the token (`false`: the unnamed-token flow).
    token_named: bool,
    /// Attestation evidence in the ClientAuth.
    evidence: Vec<u8>,
    /// The ticket the gateway's application admits the client with.
    ticket: Vec<u8>,
    /// The application request in the ClientAuth.
    request: Vec<u8>,
    /// The application request of the second resume (in its ResumeFinished).
    resume_request: Vec<u8>,
    /// The gateway application's answer to it (in the ResumeTicket).
    resume_ticket: Vec<u8>,
    /// The TLS exporter value of the bound join (both ends).
    channel_binding: [u8; 32],
    /// The gateway's rotation policy: a resume rotates a keyring this many seconds old.
    rotation_max_age: u64,
    /// When the rotating resume runs (the other resumes run at `now`, the join's time).
    rotation_resume_at: u64,
    /// The gateway's record of the token.
    token_max_uses: u32,
    token_expires_at: Option<u64>,
}

impl Inputs {
    /// The inputs the committed vectors were made from.
    fn reference() -> Self {
        Self {
            token: "abcdef.0123456789abcdef".into(),
            client_id: "node-1".into(),
            now: 1_700_000_000,
            identity_seed: [0x11; 32],
            payload: b"hello, gateway".to_vec(),
            versions: SUPPORTED_VERSIONS.to_vec(),
            suites: MacSuite::ALL.to_vec(),
            gateway_suites: MacSuite::ALL.to_vec(),
            token_named: true,
            evidence: Vec::new(),
            ticket: Vec::new(),
            request: b"join request".to_vec(),
            resume_request: b"resume request".to_vec(),
            resume_ticket: b"resume ticket".to_vec(),
            channel_binding: [0xcb; 32],
            rotation_max_age: 86_400,
            rotation_resume_at: 1_700_086_400,
            token_max_uses: 1,
            token_expires_at: None,
        }
    }

    /// The `inputs` object of the file.
    fn to_json(&self) -> Value {
        let identity = ServerIdentity::from_seed(self.identity_seed);
        let names = |suites: &[MacSuite]| suites.iter().map(ToString::to_string).collect::<Vec<_>>();
        json!({
            "token": self.token, "client_id": self.client_id, "now": self.now,
            "gateway_identity_seed": h(&self.identity_seed),
            "gateway_public_key": h(identity.public_key().as_bytes()),
            "gateway_pin": identity.pin().to_string(),
            "data_payload": String::from_utf8_lossy(&self.payload),
            "versions_offered": self.versions,
            "suites_offered": names(&self.suites),
            "gateway_suites_preferred": names(&self.gateway_suites),
            "token_named_in_hello": self.token_named,
            "evidence": h(&self.evidence),
            "ticket": h(&self.ticket),
            "request": h(&self.request),
            "resume_request": h(&self.resume_request),
            "resume_ticket": h(&self.resume_ticket),
            "channel_binding": h(&self.channel_binding),
            "rotation_max_age": self.rotation_max_age,
            "rotation_resume_at": self.rotation_resume_at,
            "token_max_uses": self.token_max_uses,
            "token_expires_at": self.token_expires_at,
        })
    }

    /// Reads the `inputs` object of the file, checking the values derived from others.
    fn from_json(v: &Value) -> Self {
        let str_of = |key: &str| v[key].as_str().unwrap_or_else(|| panic!("inputs.{key} is a string")).to_owned();
        let suites_of = |key: &str| -> Vec<MacSuite> {
            let list = v[key].as_array().unwrap_or_else(|| panic!("inputs.{key} is a list"));
            list.iter()
                .map(|name| {
                    let name = name.as_str().unwrap();
                    MacSuite::ALL.into_iter().find(|s| s.to_string() == name).unwrap_or_else(|| panic!("suite {name}"))
                })
                .collect()
        };
        let inputs = Self {
            token: str_of("token"),
            client_id: str_of("client_id"),
            now: v["now"].as_u64().unwrap(),
            identity_seed: unhex(&v["gateway_identity_seed"]).try_into().unwrap(),
            payload: str_of("data_payload").into_bytes(),
            versions: v["versions_offered"]
                .as_array()
                .expect("inputs.versions_offered is a list")
                .iter()
                .map(|n| u16::try_from(n.as_u64().unwrap()).unwrap())
                .collect(),
            suites: suites_of("suites_offered"),
            gateway_suites: suites_of("gateway_suites_preferred"),
            token_named: v["token_named_in_hello"].as_bool().expect("inputs.token_named_in_hello is a bool"),
            evidence: unhex(&v["evidence"]),
            ticket: unhex(&v["ticket"]),
            request: unhex(&v["request"]),
            resume_request: unhex(&v["resume_request"]),
            resume_ticket: unhex(&v["resume_ticket"]),
            channel_binding: unhex(&v["channel_binding"]).try_into().unwrap(),
            rotation_max_age: v["rotation_max_age"].as_u64().expect("inputs.rotation_max_age is a number"),
            rotation_resume_at: v["rotation_resume_at"].as_u64().expect("inputs.rotation_resume_at is a number"),
            token_max_uses: u32::try_from(v["token_max_uses"].as_u64().unwrap()).unwrap(),
            token_expires_at: v["token_expires_at"].as_u64(),
        };
        assert_eq!(inputs.to_json(), *v, "inputs: the derived values (public key, pin) agree, no unknown keys");
        inputs
    }

    fn join_config(&self) -> JoinConfig {
        let token: BootstrapToken = self.token.parse().unwrap();
        let pin = ServerIdentity::from_seed(self.identity_seed).pin();
        let config = JoinConfig::new(token, vec![pin], ClientId::new(&self.client_id).unwrap())
            .with_suites(&self.suites)
            .with_request(self.request.clone())
            .unwrap();
        if self.token_named { config } else { config.without_token_id() }
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::new(ServerIdentity::from_seed(self.identity_seed))
                .with_suites(&self.gateway_suites)
                .with_rotation(RotationPolicy { max_age: Some(self.rotation_max_age) }),
        )
    }

    /// The gateway's records: the one token. [`Records::answer`] is the core's own
    /// storage rule, so no store of a driver is needed.
    fn store(&self) -> Records {
        let token: BootstrapToken = self.token.parse().unwrap();
        let record = TokenRecord::new(token, self.token_expires_at, self.token_max_uses);
        let mut records = Records::default();
        records.tokens.insert(record.id(), record);
        records
    }

    /// The suite the gateway picks: its most preferred one that the agent offers.
    fn negotiated(&self) -> MacSuite {
        *self.gateway_suites.iter().find(|s| self.suites.contains(s)).expect("a suite in common")
    }
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("valid hex")
}

/// What one handshake of the vectors produced.
struct Run {
    frames: Vec<Vec<u8>>,
    /// The client's saved keyring (a join, or a rotating resume).
    saved: Option<SavedKeyring>,
    /// The newest keyring of the stored state a rotating resume replaces.
    replaces: Option<KeyringId>,
    /// The binding the client was asked to attest and the one the gateway's application
    /// was given (a join); they must be equal.
    bindings: (Option<AttestationBinding>, Option<AttestationBinding>),
    client: Client,
    server: Server,
}

/// Runs one handshake to completion. The agent's application attests with `evidence`,
/// the gateway's admits with `ticket`.
fn run(mut client: Client, mut server: Server, store: &mut Records, now: u64, inputs: &Inputs) -> Run {
    let mut frames = Vec::new();
    let mut saved = None;
    let mut replaces = None;
    let mut bindings = (None, None);
    for _ in 0..32 {
        while let Some(out) = client.poll_output() {
            match out {
                Output::Transmit(b) => {
                    server.handle_input(now, &b).unwrap();
                    frames.push(b);
                }
                Output::Request(ClientRequest::Attest { binding }) => {
                    bindings.0 = Some(binding);
                    client.handle_evidence(Ok(inputs.evidence.clone())).unwrap();
                }
                Output::Request(ClientRequest::PersistKeyring { saved: s, .. }) => {
                    saved = Some(s);
                    client.handle_persisted(Ok(())).unwrap();
                }
                Output::Request(ClientRequest::PersistRotation { saved: s, replaces: r }) => {
                    assert!(saved.is_none() && replaces.is_none(), "one persist per handshake");
                    (saved, replaces) = (Some(s), Some(r));
                    client.handle_persisted(Ok(())).unwrap();
                }
                Output::Established(_) => {}
                Output::Failed(e) => panic!("the agent failed: {e}"),
            }
        }
        while let Some(out) = server.poll_output() {
            match out {
                Output::Transmit(b) => {
                    client.handle_input(&b).unwrap();
                    frames.push(b);
                }
                Output::Request(ServerRequest::Storage(req)) => server.handle_storage(store.answer(&req)).unwrap(),
                Output::Request(ServerRequest::Admit(request)) => {
                    assert_eq!(request.evidence, inputs.evidence, "the gateway's application gets the evidence");
                    assert_eq!(request.request, inputs.request, "the gateway's application gets the request");
                    bindings.1 = Some(request.binding);
                    server.handle_admission(Admission::with_ticket(inputs.ticket.clone())).unwrap();
                }
                Output::Request(ServerRequest::Ticket(request)) => {
                    assert_eq!(request.request, inputs.resume_request, "the resume's request reaches the gateway");
                    server.handle_ticket(inputs.resume_ticket.clone()).unwrap();
                }
                Output::Established(_) => {}
                Output::Failed(e) => panic!("the gateway failed: {e}"),
            }
        }
    }
    assert!(client.is_established() && server.is_established());
    assert_eq!(bindings.0, bindings.1, "both sides compute the same attestation binding");
    Run { frames, saved, replaces, bindings, client, server }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p);
    }
    hasher.finalize().into()
}

/// `SHA-256(label || frames...)`, the transcript hash of the spec.
fn transcript(frames: &[&[u8]]) -> Vec<u8> {
    let mut all: Vec<&[u8]> = vec![b"boarding transcript\x00"];
    all.extend_from_slice(frames);
    sha256(&all).to_vec()
}

/// Transcript so far, then the type byte and the signed part of the next message.
fn partial(frames: &[&[u8]], next: &[u8], signed_len: usize) -> [u8; 32] {
    let mut all: Vec<&[u8]> = vec![b"boarding transcript\x00"];
    all.extend_from_slice(frames);
    all.push(&next[..1]);
    all.push(&next[5..5 + signed_len]);
    sha256(&all)
}

fn expand(prk: &Hkdf<Sha256>, label: &str, client_id: &str, pin: &[u8; 32]) -> [u8; 32] {
    let mut info = label.as_bytes().to_vec();
    info.push(0);
    info.push(client_id.len() as u8);
    info.extend_from_slice(client_id.as_bytes());
    info.extend_from_slice(pin);
    let mut out = [0u8; 32];
    prk.expand(&info, &mut out).unwrap();
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

fn x25519(secret: [u8; 32], public: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::StaticSecret::from(secret).diffie_hellman(&x25519_dalek::PublicKey::from(*public)).to_bytes()
}

/// The first `Data` frame (sequence 0) with `payload`, as the spec defines it.
fn first_frame(suite: MacSuite, key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x17];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    // payload || sequence || type || length
    let mut input = payload.to_vec();
    input.extend_from_slice(&0u64.to_be_bytes());
    input.extend_from_slice(&frame[..5]);
    let tag: [u8; 32] = match suite {
        MacSuite::HmacSha256 => hmac(key, &input),
        _ => blake3::keyed_hash(key, &input).into(),
    };
    frame.extend_from_slice(&tag);
    frame
}

fn frames_of_channel(keys: &SessionKeys, payload: &[u8]) -> Value {
    let mut out = serde_json::Map::new();
    for suite in [MacSuite::HmacSha256, MacSuite::Blake3] {
        let mut channel = Channel::new(Side::Client, suite, keys);
        let mut buf = vec![0u8; 128];
        let n = channel.seal(payload, &mut buf).unwrap();
        assert_eq!(buf[..n], first_frame(suite, keys.c2s.expose(), payload)[..], "{suite}");
        out.insert(suite.to_string(), json!(h(&buf[..n])));
    }
    Value::Object(out)
}

/// Checks that the join's messages carry what the inputs say.
fn check_join_messages(inputs: &Inputs, f: &[&[u8]]) {
    let decode = |frame: &[u8]| HandshakeMessage::decode_frame(frame).unwrap();
    let HandshakeMessage::ClientHello(hello) = decode(f[0]) else { panic!("ClientHello first") };
    assert_eq!(hello.versions, inputs.versions, "versions offered");
    assert_eq!(hello.suites, inputs.suites.iter().map(|s| s.code()).collect::<Vec<_>>(), "suites offered");
    let token: BootstrapToken = inputs.token.parse().unwrap();
    assert_eq!(hello.token_id, inputs.token_named.then(|| token.id()), "named or unnamed flow");
    let HandshakeMessage::ServerChallenge(challenge) = decode(f[1]) else { panic!("ServerChallenge second") };
    assert_eq!(challenge.version, inputs.versions[0], "version chosen");
    assert_eq!(challenge.suite, inputs.negotiated().code(), "the gateway's preferred suite among those offered");
    let HandshakeMessage::ClientAuth(auth) = decode(f[2]) else { panic!("ClientAuth third") };
    assert_eq!(auth.evidence, inputs.evidence, "evidence");
    assert_eq!(auth.request, inputs.request, "request");
    assert_eq!(auth.client_id, inputs.client_id.as_bytes(), "client id");
    let HandshakeMessage::ServerFinished(finished) = decode(f[3]) else { panic!("ServerFinished fourth") };
    assert_eq!(finished.ticket, inputs.ticket, "the admission's ticket");
}

fn generate(inputs: &Inputs) -> Value {
    assert_eq!(inputs.versions, SUPPORTED_VERSIONS, "the agent offers every supported version");
    let token: BootstrapToken = inputs.token.parse().unwrap();
    let identity = ServerIdentity::from_seed(inputs.identity_seed);
    let pin = identity.pin();
    let config = inputs.server_config();
    let mut store = inputs.store();
    let client_id = inputs.client_id.as_str();
    let suite = inputs.negotiated();
    let payload = &inputs.payload[..];

    // Randomness as each side draws it: client nonce then ephemeral; gateway nonce,
    // ephemeral, then 64 decoy bytes.
    let mut crng = ChaCha20Rng::seed_from_u64(CLIENT_SEED);
    let mut srng = ChaCha20Rng::seed_from_u64(SERVER_SEED);
    let (mut c_draw, mut s_draw) = (ChaCha20Rng::seed_from_u64(CLIENT_SEED), ChaCha20Rng::seed_from_u64(SERVER_SEED));
    let mut c_nonce = [0u8; 32];
    let mut c_eph = [0u8; 32];
    let mut s_nonce = [0u8; 32];
    let mut s_eph = [0u8; 32];
    c_draw.fill_bytes(&mut c_nonce);
    c_draw.fill_bytes(&mut c_eph);
    s_draw.fill_bytes(&mut s_nonce);
    s_draw.fill_bytes(&mut s_eph);

    let Run { frames, saved, bindings, client, server, .. } = run(
        Client::join(inputs.join_config(), &mut crng),
        Server::new(config.clone(), &mut srng),
        &mut store,
        inputs.now,
        inputs,
    );
    let saved = saved.unwrap();
    let binding = bindings.0.expect("a join asks for evidence");
    let f: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(f.len(), 5);
    for frame in &f {
        assert_eq!(HandshakeMessage::decode_frame(frame).unwrap().to_frame(), frame.to_vec());
    }
    check_join_messages(inputs, &f);

    // Independent derivation.
    let ch = f[0];
    // The hello ends with the nonce, the token-id flag and (named flow) the token id.
    let tail = 1 + if inputs.token_named { 6 } else { 0 };
    assert_eq!(&ch[ch.len() - 32 - tail..ch.len() - tail], &c_nonce, "client nonce position");
    let s_eph_pub: [u8; 32] = f[1][5 + 68..5 + 100].try_into().unwrap();
    let dh = x25519(c_eph, &s_eph_pub);
    let th_challenge = partial(&f[..1], f[1], 100);
    // ClientAuth signed part: token id 6, client id 1+len, ephemeral 32, evidence 2+len,
    // request 2+len.
    let th_proof =
        partial(&f[..2], f[2], 6 + 1 + client_id.len() + 32 + 2 + inputs.evidence.len() + 2 + inputs.request.len());
    // The attestation binding: HKDF-Expand over the transcript up to the evidence (the
    // ClientAuth's token id, client id and ephemeral share, after its type byte).
    let th_ev = partial(&f[..2], f[2], 6 + 1 + client_id.len() + 32);
    let mut expected_binding = [0u8; 32];
    Hkdf::<Sha256>::from_prk(&th_ev)
        .unwrap()
        .expand(b"boarding v1 attestation binding", &mut expected_binding)
        .unwrap();
    assert_eq!(binding.as_bytes(), &expected_binding, "attestation binding");
    let th_auth = transcript(&f[..3]);
    let mut ikm = dh.to_vec();
    ikm.extend_from_slice(token.secret().expose());
    let prk = Hkdf::<Sha256>::new(Some(&th_auth), &ikm);
    let k = |label: &str| expand(&prk, label, client_id, pin.as_bytes());
    let keyring = (k("boarding v1 keyring c2s"), k("boarding v1 keyring s2c"));
    assert_eq!(saved.keyring.c2s.expose(), &keyring.0);
    assert_eq!(saved.keyring.s2c.expose(), &keyring.1);
    let session = SessionKeys {
        c2s: SymmetricKey::from_bytes(k("boarding v1 join c2s")),
        s2c: SymmetricKey::from_bytes(k("boarding v1 join s2c")),
    };
    let (sf_key, cf_key) = (k("boarding v1 join server finished"), k("boarding v1 join client finished"));
    // ServerFinished signed part: the ticket, 2+len.
    let th_sf = partial(&f[..3], f[3], 2 + inputs.ticket.len());
    assert_eq!(&f[3][f[3].len() - 32..], &hmac(&sf_key, &th_sf));
    let th_cf = partial(&f[..4], f[4], 0);
    assert_eq!(&f[4][5..], &hmac(&cf_key, &th_cf));
    // The proof is kubeadm's detached HS256 over the partial transcript hash.
    let HandshakeMessage::ClientAuth(auth) = HandshakeMessage::decode_frame(f[2]).unwrap() else { panic!() };
    let (token_id, token_secret) = inputs.token.split_once('.').unwrap();
    assert_eq!(auth.proof, boarding::jws::hs256_detached(&th_proof, token_id, token_secret.as_bytes()));
    // Both sides' channels agree with the derived session keys.
    let (mut cs, mut ss) = (client.into_session().unwrap(), server.into_session().unwrap());
    let mut buf = vec![0u8; 128];
    let n = cs.channel.seal(payload, &mut buf).unwrap();
    assert_eq!(buf[..n], first_frame(suite, session.c2s.expose(), payload)[..]);
    ss.channel.open(&buf[..n]).unwrap();

    let join_json = json!({
        "frames": {
            "client_hello": h(f[0]), "server_challenge": h(f[1]), "client_auth": h(f[2]),
            "server_finished": h(f[3]), "client_finished": h(f[4]),
        },
        "client_nonce": h(&c_nonce), "client_ephemeral_secret": h(&c_eph),
        "server_nonce": h(&s_nonce), "server_ephemeral_secret": h(&s_eph),
        "dh": h(&dh),
        "transcript": {
            "server_challenge_signed": h(&th_challenge), "client_auth_proof": h(&th_proof),
            "client_auth_before_evidence": h(&th_ev),
            "after_client_auth": h(&th_auth), "server_finished_signed": h(&th_sf), "client_finished_signed": h(&th_cf),
        },
        "challenge_header": boarding::jws::challenge_header(token.id(), &th_challenge),
        "attestation_binding": h(binding.as_bytes()),
        "keyring": { "c2s": h(&keyring.0), "s2c": h(&keyring.1), "id": h(&saved.keyring.id().0) },
        "session": { "c2s": h(session.c2s.expose()), "s2c": h(session.s2c.expose()) },
        "finished_keys": { "server": h(&sf_key), "client": h(&cf_key) },
        "first_data_frame_c2s": frames_of_channel(&session, payload),
    });

    let bound_json = bound_join_flow(inputs);
    let old = &saved.keyring;
    let case =
        |seed_offset, now, request, rotate| ResumeCase { saved: &saved, used: old, seed_offset, now, request, rotate };
    let (resume_json, _) = resume_flow(inputs, &mut store, &case(10, inputs.now, &[], false));
    let (resume_with_request_json, _) =
        resume_flow(inputs, &mut store, &case(20, inputs.now, &inputs.resume_request, false));
    // The keyring reaches the policy's age: the next resume rotates it.
    let at = inputs.rotation_resume_at;
    assert_eq!(at, inputs.now + inputs.rotation_max_age, "the rotating resume runs when the keyring is due");
    let (rotating_json, rotated) = resume_flow(inputs, &mut store, &case(30, at, &[], true));
    let rotated = rotated.unwrap();
    // The agent does not know the gateway committed: it offers both, and is answered with the new one.
    let after =
        ResumeCase { saved: &rotated, used: &rotated.keyring, seed_offset: 40, now: at, request: &[], rotate: false };
    let (after_json, _) = resume_flow(inputs, &mut store, &after);

    json!({
        "description": "Boarding protocol v1 test vectors: a join, a resume, a resume with a request \
            (answered in a ResumeTicket), a resume that rotates the keyring (the gateway's policy: the keyring \
            is rotation_max_age old), and the resume after it, offering the new and the old keyring and \
            answered with the new one, from fixed seeds. Secrets are included so that an independent \
            implementation can check every step.",
        "inputs": inputs.to_json(),
        "join": join_json,
        "join_channel_bound": bound_json,
        "resume": resume_json,
        "resume_with_request": resume_with_request_json,
        "resume_rotating": rotating_json,
        "resume_after_rotation": after_json,
        "alerts": alert_frames(),
    })
}

/// The join again, from the same inputs and randomness, with both ends bound to
/// `channel_binding` (§6.1): every transcript hash starts from the bound label.
fn bound_join_flow(inputs: &Inputs) -> Value {
    let binding = || ChannelBinding::from_exporter(inputs.channel_binding);
    let mut store = inputs.store();
    let client = Client::join(
        inputs.join_config().with_channel_binding(binding()),
        &mut ChaCha20Rng::seed_from_u64(CLIENT_SEED),
    );
    let server = Server::bound(inputs.server_config(), &mut ChaCha20Rng::seed_from_u64(SERVER_SEED), Some(binding()));
    let Run { frames, bindings, .. } = run(client, server, &mut store, inputs.now, inputs);
    let f: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(f.len(), 5);
    let prefix: Vec<u8> = [b"boarding transcript tls-exporter\x00".as_slice(), &inputs.channel_binding].concat();
    let bound = |frames: &[&[u8]], next: &[u8], signed_len: usize| -> [u8; 32] {
        let mut all: Vec<&[u8]> = vec![&prefix];
        all.extend_from_slice(frames);
        all.push(&next[..1]);
        all.push(&next[5..5 + signed_len]);
        sha256(&all)
    };
    let th_challenge = bound(&f[..1], f[1], 100);
    let token: BootstrapToken = inputs.token.parse().unwrap();
    let HandshakeMessage::ServerChallenge(challenge) = HandshakeMessage::decode_frame(f[1]).unwrap() else { panic!() };
    let header = boarding::jws::challenge_header(token.id(), &th_challenge);
    let header_b64 = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &header);
    assert!(challenge.challenges[0].starts_with(&header_b64), "the challenge signs the bound transcript");
    let th_ev = bound(&f[..2], f[2], 6 + 1 + inputs.client_id.len() + 32);
    let mut expected_binding = [0u8; 32];
    Hkdf::<Sha256>::from_prk(&th_ev)
        .unwrap()
        .expand(b"boarding v1 attestation binding", &mut expected_binding)
        .unwrap();
    assert_eq!(bindings.0.map(|b| *b.as_bytes()), Some(expected_binding), "the attestation binding of the bound join");
    json!({
        "frames": {
            "client_hello": h(f[0]), "server_challenge": h(f[1]), "client_auth": h(f[2]),
            "server_finished": h(f[3]), "client_finished": h(f[4]),
        },
        "transcript": {
            "server_challenge_signed": h(&th_challenge),
            "client_auth_before_evidence": h(&th_ev),
            "after_client_auth": h(&{
                let mut all: Vec<&[u8]> = vec![&prefix];
                all.extend_from_slice(&f[..3]);
                sha256(&all)
            }),
        },
        "challenge_header": header,
        "attestation_binding": h(&expected_binding),
    })
}

/// What one resume of the vectors starts from and expects.
struct ResumeCase<'a> {
    /// The agent's stored state (its newest keyring first, then the one it rotated from).
    saved: &'a SavedKeyring,
    /// The keyring the gateway answers with (the one its record holds as current).
    used: &'a Keyring,
    /// The seeds are offset by this from the join's.
    seed_offset: u64,
    /// The gateway's clock.
    now: u64,
    /// The application request (empty: none).
    request: &'a [u8],
    /// Whether the gateway's policy rotates the keyring in this resume.
    rotate: bool,
}

/// The frames of a resume, as the file names them.
fn resume_frame_names(with_request: bool) -> &'static [&'static str] {
    if with_request {
        &["resume_hello", "resume_challenge", "resume_finished", "resume_ticket"]
    } else {
        &["resume_hello", "resume_challenge", "resume_finished"]
    }
}

/// A keyring as the file records it: both keys and the fingerprint.
fn keyring_json(keyring: &Keyring) -> Value {
    json!({ "c2s": h(keyring.c2s.expose()), "s2c": h(keyring.s2c.expose()), "id": h(&keyring.id().0) })
}

/// `SHA-256("boarding v1 keyring id" || c2s || s2c)`, the fingerprint of the spec.
fn fingerprint(c2s: &[u8; 32], s2c: &[u8; 32]) -> [u8; 32] {
    sha256(&[b"boarding v1 keyring id", c2s, s2c])
}

/// One resume, from seeds offset by `case.seed_offset`; checked against the spec's
/// formulas. Returns the flow's object and, for a rotating resume, the state the agent
/// stored.
fn resume_flow(inputs: &Inputs, store: &mut Records, case: &ResumeCase<'_>) -> (Value, Option<SavedKeyring>) {
    let pin = ServerIdentity::from_seed(inputs.identity_seed).pin();
    let client_id = inputs.client_id.as_str();
    let suite = inputs.negotiated();
    let payload = &inputs.payload[..];
    let request = case.request;
    let keyring = (*case.used.c2s.expose(), *case.used.s2c.expose());
    let offered: Vec<[u8; 32]> = case.saved.offered().iter().map(|id| id.0).collect();
    // The client draws its ephemeral, then its nonce.
    let mut crng = ChaCha20Rng::seed_from_u64(CLIENT_SEED + case.seed_offset);
    let mut srng = ChaCha20Rng::seed_from_u64(SERVER_SEED + case.seed_offset);
    let mut c_draw = ChaCha20Rng::seed_from_u64(CLIENT_SEED + case.seed_offset);
    let mut s_draw = ChaCha20Rng::seed_from_u64(SERVER_SEED + case.seed_offset);
    let (mut rc_eph, mut rc_nonce, mut rs_nonce, mut rs_eph) = ([0u8; 32], [0u8; 32], [0u8; 32], [0u8; 32]);
    c_draw.fill_bytes(&mut rc_eph);
    c_draw.fill_bytes(&mut rc_nonce);
    s_draw.fill_bytes(&mut rs_nonce);
    s_draw.fill_bytes(&mut rs_eph);
    let resume =
        ResumeConfig::new(case.saved.clone()).with_suites(&inputs.suites).with_request(request.to_vec()).unwrap();
    let Run { frames, saved, replaces, bindings, client, server } =
        run(Client::resume(resume, &mut crng), Server::new(inputs.server_config(), &mut srng), store, case.now, inputs);
    assert_eq!(bindings, (None, None), "a resume attests nothing");
    let f: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(f.len(), if request.is_empty() { 3 } else { 4 }, "a ResumeTicket answers a request, only");
    let HandshakeMessage::ResumeHello(hello) = HandshakeMessage::decode_frame(f[0]).unwrap() else { panic!() };
    assert_eq!(hello.keyrings, offered, "the hello offers the stored keyrings, newest first");
    // The hello's keyring list follows the versions, the suites and the client id; the
    // nonce and the ephemeral share end it.
    let at = 5 + (1 + 2 * inputs.versions.len()) + (1 + 2 * inputs.suites.len()) + (1 + client_id.len());
    assert_eq!(usize::from(f[0][at]), offered.len(), "the keyring count");
    assert_eq!(f[0][at + 1..at + 1 + 32 * offered.len()], offered.concat()[..], "the fingerprints");
    assert_eq!(f[0].len(), at + 1 + 32 * offered.len() + 64, "nonce and ephemeral end the hello");
    assert_eq!(f[0][f[0].len() - 64..f[0].len() - 32], rc_nonce, "client nonce position");
    let HandshakeMessage::ResumeChallenge(rc) = HandshakeMessage::decode_frame(f[1]).unwrap() else { panic!() };
    assert_eq!(rc.suite, suite.code(), "the resume negotiates like the join");
    // ResumeChallenge signed part: version 2, suite 2, rotate 1, nonce 32, ephemeral 32.
    assert_eq!(f[1][5 + 4], u8::from(case.rotate), "the rotate byte");
    assert_eq!(rc.rotate, case.rotate);
    assert_eq!(f[1][5 + 5..5 + 37], rs_nonce, "server nonce position");
    let rs_eph_pub: [u8; 32] = f[1][5 + 37..5 + 69].try_into().unwrap();
    let dh = x25519(rc_eph, &rs_eph_pub);
    let th_rc = partial(&f[..1], f[1], 69);
    let mut ikm = dh.to_vec();
    ikm.extend_from_slice(&keyring.0);
    ikm.extend_from_slice(&keyring.1);
    let prk = Hkdf::<Sha256>::new(Some(&th_rc), &ikm);
    let k = |label: &str| expand(&prk, label, client_id, pin.as_bytes());
    let (sf_key, cf_key) = (k("boarding v1 resume server finished"), k("boarding v1 resume client finished"));
    assert_eq!(&f[1][f[1].len() - 32..], &hmac(&sf_key, &th_rc));
    // ResumeFinished signed part: the request, 2+len.
    let th_rf = partial(&f[..2], f[2], 2 + request.len());
    assert_eq!(&f[2][f[2].len() - 32..], &hmac(&cf_key, &th_rf));
    let session = SessionKeys {
        c2s: SymmetricKey::from_bytes(k("boarding v1 resume c2s")),
        s2c: SymmetricKey::from_bytes(k("boarding v1 resume s2c")),
    };
    let mut frames_json = json!({ "resume_hello": h(f[0]), "resume_challenge": h(f[1]), "resume_finished": h(f[2]) });
    let mut transcript_json = json!({ "resume_challenge_signed": h(&th_rc), "resume_finished_signed": h(&th_rf) });
    let mut keys_json = json!({ "server": h(&sf_key), "client": h(&cf_key) });
    let info = client.session_info().unwrap().clone();
    if let Some(ticket_frame) = f.get(3) {
        // ResumeTicket signed part: the ticket, 2+len, under its own key.
        let ticket_key = k("boarding v1 resume ticket");
        let th_rt = partial(&f[..3], ticket_frame, 2 + inputs.resume_ticket.len());
        assert_eq!(&ticket_frame[ticket_frame.len() - 32..], &hmac(&ticket_key, &th_rt));
        assert_eq!(info.ticket, inputs.resume_ticket, "the agent receives the ticket");
        frames_json["resume_ticket"] = json!(h(ticket_frame));
        transcript_json["resume_ticket_signed"] = json!(h(&th_rt));
        keys_json["ticket"] = json!(h(&ticket_key));
    }
    // Both sides' channels agree with the derived session keys.
    let (mut cs, mut ss) = (client.into_session().unwrap(), server.into_session().unwrap());
    assert_eq!(ss.peer.rotated(), case.rotate, "the gateway reports the rotation");
    let mut buf = vec![0u8; 128];
    let n = cs.channel.seal(payload, &mut buf).unwrap();
    assert_eq!(buf[..n], first_frame(suite, session.c2s.expose(), payload)[..]);
    ss.channel.open(&buf[..n]).unwrap();
    let record = store.keyrings[&case.saved.client_id].clone();
    let mut flow = json!({
        "keyrings_offered": offered.iter().map(|id| h(id)).collect::<Vec<_>>(),
        "keyring_used": h(&fingerprint(&keyring.0, &keyring.1)),
        "rotate": case.rotate,
        "frames": frames_json,
        "client_nonce": h(&rc_nonce), "client_ephemeral_secret": h(&rc_eph),
        "server_nonce": h(&rs_nonce), "server_ephemeral_secret": h(&rs_eph),
        "dh": h(&dh),
        "transcript": transcript_json,
        "session": { "c2s": h(session.c2s.expose()), "s2c": h(session.s2c.expose()) },
        "finished_keys": keys_json,
        "first_data_frame_c2s": frames_of_channel(&session, payload),
    });
    assert_eq!(info.rotated, case.rotate, "the agent reports the rotation");
    if !case.rotate {
        assert!(saved.is_none() && replaces.is_none(), "a resume that does not rotate stores nothing");
        assert_eq!(&record.keyring, case.used, "the gateway still holds the keyring it used");
        // Offering two keyrings and being answered with one settles which the gateway holds.
        let settled = (case.saved.rotated_from.is_some()).then(|| SavedKeyring {
            keyring: case.used.clone(),
            rotated_from: None,
            ..case.saved.clone()
        });
        assert_eq!(info.settled, settled, "what the agent learns it may keep");
        return (flow, None);
    }
    // The rotated keyring: from the same PRK, under the rotated-keyring labels.
    let (new_c2s, new_s2c) = (k("boarding v1 rotated keyring c2s"), k("boarding v1 rotated keyring s2c"));
    let saved = saved.expect("a rotating resume stores the new keyring before its ResumeFinished");
    assert_eq!((saved.keyring.c2s.expose(), saved.keyring.s2c.expose()), (&new_c2s, &new_s2c));
    assert_eq!(saved.keyring.id().0, fingerprint(&new_c2s, &new_s2c));
    assert_eq!(saved.rotated_from.as_ref(), Some(case.used), "the agent keeps the keyring it rotated from");
    assert_eq!(replaces, Some(case.saved.keyring.id()), "the store is swapped only from the state resumed with");
    assert_eq!(info.settled, None);
    assert_eq!((&record.keyring, &record.retired[..]), (&saved.keyring, std::slice::from_ref(case.used)));
    assert_eq!(record.rotated_at, Some(case.now), "the gateway committed the rotation");
    flow["rotated_keyring"] = keyring_json(&saved.keyring);
    (flow, Some(saved))
}

/// Every alert as a frame, by name: `0x15 || length 1 || code`.
fn alert_frames() -> Value {
    let mut out = serde_json::Map::new();
    for alert in boarding::Alert::ALL {
        let frame = [0x15, 0, 0, 0, 1, alert.code()];
        assert_eq!(boarding::messages::AlertMessage { code: alert.code() }.to_frame(), frame, "{alert:?}");
        out.insert(format!("{alert:?}"), json!(h(&frame)));
    }
    Value::Object(out)
}

fn committed() -> String {
    std::fs::read_to_string(VECTORS).expect("spec/vectors/boarding-v1.json exists")
}

#[test]
fn vectors_match_the_committed_file_and_the_spec_formulas() {
    let generated = serde_json::to_string_pretty(&generate(&Inputs::reference())).unwrap() + "\n";
    if std::env::var_os("BOARDING_BLESS").is_some() {
        std::fs::write(VECTORS, &generated).unwrap();
    }
    assert!(committed() == generated, "test vectors drifted; if intended, regenerate with BOARDING_BLESS=1");
}

#[test]
fn generation_is_deterministic() {
    assert_eq!(generate(&Inputs::reference()), generate(&Inputs::reference()));
}

/// Replays a fixed byte string as "randomness" (what an independent implementation
/// does with the values the vectors list). Panics if asked for more.
struct Replay {
    bytes: Vec<u8>,
    at: usize,
}

impl Replay {
    fn new(parts: &[Vec<u8>]) -> Self {
        Self { bytes: parts.concat(), at: 0 }
    }

    fn exhausted(&self) -> bool {
        self.at == self.bytes.len()
    }
}

impl TryRng for Replay {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let end = self.at + dst.len();
        assert!(end <= self.bytes.len(), "the core drew more randomness than the vectors list");
        dst.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(())
    }
}

impl TryCryptoRng for Replay {}

/// The committed file alone (its inputs and the random values it lists, drawn in the
/// order the spec gives) reproduces every frame of every flow, the rotating resume's
/// new keyring included, so an independent implementation has everything it needs.
#[test]
fn the_committed_inputs_and_randomness_reproduce_the_wire_bytes() {
    let file: Value = serde_json::from_str(&committed()).unwrap();
    let inputs = Inputs::from_json(&file["inputs"]);
    assert_eq!(inputs, Inputs::reference(), "the committed inputs are the ones the vectors are generated from");
    let config = inputs.server_config();
    let mut store = inputs.store();
    // The decoy keyring a gateway draws last is not used by a resume of a known client.
    let decoy = vec![0u8; 64];
    let frames_of = |flow: &Value, names: &[&str]| -> Vec<Vec<u8>> {
        names.iter().map(|name| unhex(&flow["frames"][*name])).collect()
    };

    let join = &file["join"];
    let mut crng = Replay::new(&[unhex(&join["client_nonce"]), unhex(&join["client_ephemeral_secret"])]);
    let mut srng = Replay::new(&[unhex(&join["server_nonce"]), unhex(&join["server_ephemeral_secret"]), decoy.clone()]);
    let client = Client::join(inputs.join_config(), &mut crng);
    let server = Server::new(config.clone(), &mut srng);
    assert!(crng.exhausted() && srng.exhausted(), "each side draws exactly what the vectors list");
    let Run { frames, saved, bindings, .. } = run(client, server, &mut store, inputs.now, &inputs);
    assert_eq!(bindings.0.map(|b| h(b.as_bytes())).as_deref(), join["attestation_binding"].as_str(), "binding");
    let names = ["client_hello", "server_challenge", "client_auth", "server_finished", "client_finished"];
    assert_eq!(frames, frames_of(join, &names), "join frames");
    // The bound join draws exactly what the join does, and its frames follow from it.
    let bound = &file["join_channel_bound"];
    let binding = || ChannelBinding::from_exporter(inputs.channel_binding);
    let mut crng = Replay::new(&[unhex(&join["client_nonce"]), unhex(&join["client_ephemeral_secret"])]);
    let mut srng = Replay::new(&[unhex(&join["server_nonce"]), unhex(&join["server_ephemeral_secret"]), decoy.clone()]);
    let client = Client::join(inputs.join_config().with_channel_binding(binding()), &mut crng);
    let server = Server::bound(config.clone(), &mut srng, Some(binding()));
    let Run { frames: bound_frames, .. } = run(client, server, &mut inputs.store(), inputs.now, &inputs);
    assert_eq!(bound_frames, frames_of(bound, &names), "bound join frames");
    let saved = saved.unwrap();
    assert_eq!(h(saved.keyring.c2s.expose()), join["keyring"]["c2s"].as_str().unwrap());
    assert_eq!(h(saved.keyring.s2c.expose()), join["keyring"]["s2c"].as_str().unwrap());

    let rotated = SavedKeyring {
        keyring: Keyring {
            c2s: SymmetricKey::from_bytes(
                unhex(&file["resume_rotating"]["rotated_keyring"]["c2s"]).try_into().unwrap(),
            ),
            s2c: SymmetricKey::from_bytes(
                unhex(&file["resume_rotating"]["rotated_keyring"]["s2c"]).try_into().unwrap(),
            ),
        },
        rotated_from: Some(saved.keyring.clone()),
        ..saved.clone()
    };
    let at = inputs.rotation_resume_at;
    for (flow, state, now, request) in [
        ("resume", &saved, inputs.now, &[][..]),
        ("resume_with_request", &saved, inputs.now, &inputs.resume_request[..]),
        ("resume_rotating", &saved, at, &[][..]),
        ("resume_after_rotation", &rotated, at, &[][..]),
    ] {
        let resume = &file[flow];
        let offered: Vec<String> = state.offered().iter().map(|id| h(&id.0)).collect();
        assert_eq!(resume["keyrings_offered"], json!(offered), "{flow}: the keyrings offered");
        let mut crng = Replay::new(&[unhex(&resume["client_ephemeral_secret"]), unhex(&resume["client_nonce"])]);
        let mut srng =
            Replay::new(&[unhex(&resume["server_nonce"]), unhex(&resume["server_ephemeral_secret"]), decoy.clone()]);
        let config_for = ResumeConfig::new(state.clone()).with_suites(&inputs.suites);
        let client = Client::resume(config_for.with_request(request.to_vec()).unwrap(), &mut crng);
        let server = Server::new(config.clone(), &mut srng);
        assert!(crng.exhausted() && srng.exhausted(), "each side draws exactly what the vectors list");
        let Run { frames, saved: stored, .. } = run(client, server, &mut store, now, &inputs);
        assert_eq!(frames, frames_of(resume, resume_frame_names(!request.is_empty())), "{flow} frames");
        if flow == "resume_rotating" {
            assert_eq!(stored.as_ref(), Some(&rotated), "the rotated keyring is the one the file records");
        }
    }
}
