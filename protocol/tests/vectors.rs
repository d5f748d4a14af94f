//! The published test vectors (`spec/vectors/boarding-v1.json`) are regenerated from
//! fixed seeds and must match the committed file byte for byte; and every derived
//! value in them is recomputed here independently, from the formulas of
//! `spec/PROTOCOL.md` with the primitive crates alone, so the implementation, the
//! specification and the vectors agree.
//!
//! To update the file after an intended change: `BOARDING_BLESS=1 cargo test -p boarding --test vectors`.

use std::sync::Arc;

use boarding::channel::{Channel, Side};
use boarding::client::{Client, ClientOutput, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::identity::{ClientId, GatewayIdentity};
use boarding::keys::{SessionKeys, SymmetricKey};
use boarding::messages::HandshakeMessage;
use boarding::server::{Server, ServerConfig, ServerOutput};
use boarding::suite::MacSuite;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_memory::MemoryStore;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const NOW: u64 = 1_700_000_000;
const TOKEN: &str = "abcdef.0123456789abcdef";
const CLIENT_ID: &str = "node-1";
const IDENTITY_SEED: [u8; 32] = [0x11; 32];
const CLIENT_SEED: u64 = 1;
const SERVER_SEED: u64 = 2;
const PAYLOAD: &[u8] = b"hello, gateway";
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/vectors/boarding-v1.json");

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Runs one handshake to completion, returning the frames in order and the client's
/// saved keyring (for a join).
fn run(
    mut client: Client,
    mut server: Server,
    store: &MemoryStore,
) -> (Vec<Vec<u8>>, Option<SavedKeyring>, Client, Server) {
    let mut frames = Vec::new();
    let mut saved = None;
    for _ in 0..32 {
        while let Some(out) = client.poll_output() {
            match out {
                ClientOutput::Transmit(b) => {
                    server.handle_input(NOW, &b).unwrap();
                    frames.push(b);
                }
                ClientOutput::PersistKeyring(s) => {
                    saved = Some(s);
                    client.handle_persisted().unwrap();
                }
                ClientOutput::Established(_) => {}
            }
        }
        while let Some(out) = server.poll_output() {
            match out {
                ServerOutput::Transmit(b) => {
                    client.handle_input(&b).unwrap();
                    frames.push(b);
                }
                ServerOutput::Storage(req) => server.handle_storage(store.answer(&req)).unwrap(),
                ServerOutput::Established(_) => {}
            }
        }
    }
    assert!(client.is_established() && server.is_established());
    (frames, saved, client, server)
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

fn expand(prk: &Hkdf<Sha256>, label: &str, pin: &[u8; 32]) -> [u8; 32] {
    let mut info = label.as_bytes().to_vec();
    info.push(0);
    info.push(CLIENT_ID.len() as u8);
    info.extend_from_slice(CLIENT_ID.as_bytes());
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

/// The first `Data` frame (sequence 0) with `PAYLOAD`, as the spec defines it.
fn first_frame(suite: MacSuite, key: &[u8; 32]) -> Vec<u8> {
    let mut frame = vec![0x17];
    frame.extend_from_slice(&(PAYLOAD.len() as u32).to_be_bytes());
    frame.extend_from_slice(PAYLOAD);
    // payload || sequence || type || length
    let mut input = PAYLOAD.to_vec();
    input.extend_from_slice(&0u64.to_be_bytes());
    input.extend_from_slice(&frame[..5]);
    let tag: [u8; 32] = match suite {
        MacSuite::HmacSha256 => hmac(key, &input),
        _ => blake3::keyed_hash(key, &input).into(),
    };
    frame.extend_from_slice(&tag);
    frame
}

fn frames_of_channel(keys: &SessionKeys) -> Value {
    let mut out = serde_json::Map::new();
    for suite in [MacSuite::HmacSha256, MacSuite::Blake3] {
        let mut channel = Channel::new(Side::Client, suite, keys);
        let mut buf = vec![0u8; 128];
        let n = channel.seal(PAYLOAD, &mut buf).unwrap();
        assert_eq!(buf[..n], first_frame(suite, keys.c2s.expose())[..], "{suite}");
        out.insert(suite.to_string(), json!(h(&buf[..n])));
    }
    Value::Object(out)
}

fn generate() -> Value {
    let token: BootstrapToken = TOKEN.parse().unwrap();
    let identity = GatewayIdentity::from_seed(IDENTITY_SEED);
    let pin = identity.pin();
    let config = Arc::new(ServerConfig::new(identity.clone()));
    let store = MemoryStore::new();
    store.insert_token(TokenRecord::new(token.clone(), None, 1));

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

    let join = JoinConfig::new(token.clone(), vec![pin], ClientId::new(CLIENT_ID).unwrap());
    let (frames, saved, client, server) =
        run(Client::join(join, &mut crng), Server::new(config.clone(), &mut srng), &store);
    let saved = saved.unwrap();
    let f: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(f.len(), 5);
    for frame in &f {
        assert_eq!(HandshakeMessage::decode_frame(frame).unwrap().to_frame(), frame.to_vec());
    }

    // Independent derivation.
    let ch = f[0];
    assert_eq!(&ch[ch.len() - 39..ch.len() - 7], &c_nonce, "client nonce position");
    let s_eph_pub: [u8; 32] = f[1][5 + 68..5 + 100].try_into().unwrap();
    let dh = x25519(c_eph, &s_eph_pub);
    let th_challenge = partial(&f[..1], f[1], 100);
    // ClientAuth signed part: token id 6, client id 1+len, ephemeral 32, evidence 2+0.
    let th_proof = partial(&f[..2], f[2], 6 + 1 + CLIENT_ID.len() + 32 + 2);
    let th_auth = transcript(&f[..3]);
    let mut ikm = dh.to_vec();
    ikm.extend_from_slice(token.secret().expose());
    let prk = Hkdf::<Sha256>::new(Some(&th_auth), &ikm);
    let k = |label: &str| expand(&prk, label, pin.as_bytes());
    let keyring = (k("boarding v1 keyring c2s"), k("boarding v1 keyring s2c"));
    assert_eq!(saved.keyring.c2s.expose(), &keyring.0);
    assert_eq!(saved.keyring.s2c.expose(), &keyring.1);
    let session = SessionKeys {
        c2s: SymmetricKey::from_bytes(k("boarding v1 join c2s")),
        s2c: SymmetricKey::from_bytes(k("boarding v1 join s2c")),
    };
    let (sf_key, cf_key) = (k("boarding v1 join server finished"), k("boarding v1 join client finished"));
    let th_sf = partial(&f[..3], f[3], 2);
    assert_eq!(&f[3][f[3].len() - 32..], &hmac(&sf_key, &th_sf));
    let th_cf = partial(&f[..4], f[4], 0);
    assert_eq!(&f[4][5..], &hmac(&cf_key, &th_cf));
    // The proof is kubeadm's detached HS256 over the partial transcript hash.
    let HandshakeMessage::ClientAuth(auth) = HandshakeMessage::decode_frame(f[2]).unwrap() else { panic!() };
    assert_eq!(auth.proof, boarding::jws::hs256_detached(&th_proof, "abcdef", b"0123456789abcdef"));
    // Both sides' channels agree with the derived session keys.
    let (mut cs, mut ss) = (client.into_session().unwrap(), server.into_session().unwrap());
    let mut buf = vec![0u8; 128];
    let n = cs.channel.seal(PAYLOAD, &mut buf).unwrap();
    assert_eq!(buf[..n], first_frame(MacSuite::Blake3, session.c2s.expose())[..]);
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
            "after_client_auth": h(&th_auth), "server_finished_signed": h(&th_sf), "client_finished_signed": h(&th_cf),
        },
        "challenge_header": boarding::jws::challenge_header(token.id(), &th_challenge),
        "keyring": { "c2s": h(&keyring.0), "s2c": h(&keyring.1), "id": h(&saved.keyring.id().0) },
        "session": { "c2s": h(session.c2s.expose()), "s2c": h(session.s2c.expose()) },
        "finished_keys": { "server": h(&sf_key), "client": h(&cf_key) },
        "first_data_frame_c2s": frames_of_channel(&session),
    });

    // Resume: the client draws its ephemeral, then its nonce.
    let mut crng = ChaCha20Rng::seed_from_u64(CLIENT_SEED + 10);
    let mut srng = ChaCha20Rng::seed_from_u64(SERVER_SEED + 10);
    let mut c_draw = ChaCha20Rng::seed_from_u64(CLIENT_SEED + 10);
    let mut s_draw = ChaCha20Rng::seed_from_u64(SERVER_SEED + 10);
    let (mut rc_eph, mut rc_nonce, mut rs_nonce, mut rs_eph) = ([0u8; 32], [0u8; 32], [0u8; 32], [0u8; 32]);
    c_draw.fill_bytes(&mut rc_eph);
    c_draw.fill_bytes(&mut rc_nonce);
    s_draw.fill_bytes(&mut rs_nonce);
    s_draw.fill_bytes(&mut rs_eph);
    let (frames, _, _, _) =
        run(Client::resume(ResumeConfig::new(saved.clone()), &mut crng), Server::new(config, &mut srng), &store);
    let f: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(f.len(), 3);
    let rs_eph_pub: [u8; 32] = f[1][5 + 36..5 + 68].try_into().unwrap();
    let dh = x25519(rc_eph, &rs_eph_pub);
    let th_rc = partial(&f[..1], f[1], 68);
    let mut ikm = dh.to_vec();
    ikm.extend_from_slice(&keyring.0);
    ikm.extend_from_slice(&keyring.1);
    let prk = Hkdf::<Sha256>::new(Some(&th_rc), &ikm);
    let k = |label: &str| expand(&prk, label, pin.as_bytes());
    let (sf_key, cf_key) = (k("boarding v1 resume server finished"), k("boarding v1 resume client finished"));
    assert_eq!(&f[1][f[1].len() - 32..], &hmac(&sf_key, &th_rc));
    let th_rf = partial(&f[..2], f[2], 0);
    assert_eq!(&f[2][5..], &hmac(&cf_key, &th_rf));
    let session = SessionKeys {
        c2s: SymmetricKey::from_bytes(k("boarding v1 resume c2s")),
        s2c: SymmetricKey::from_bytes(k("boarding v1 resume s2c")),
    };
    let resume_json = json!({
        "frames": { "resume_hello": h(f[0]), "resume_challenge": h(f[1]), "resume_finished": h(f[2]) },
        "client_nonce": h(&rc_nonce), "client_ephemeral_secret": h(&rc_eph),
        "server_nonce": h(&rs_nonce), "server_ephemeral_secret": h(&rs_eph),
        "dh": h(&dh),
        "transcript": { "resume_challenge_signed": h(&th_rc), "resume_finished_signed": h(&th_rf) },
        "session": { "c2s": h(session.c2s.expose()), "s2c": h(session.s2c.expose()) },
        "finished_keys": { "server": h(&sf_key), "client": h(&cf_key) },
        "first_data_frame_c2s": frames_of_channel(&session),
    });

    json!({
        "description": "Boarding protocol v1 test vectors: a join and a resume from fixed seeds. \
            Secrets are included so that an independent implementation can check every step.",
        "inputs": {
            "token": TOKEN, "client_id": CLIENT_ID, "now": NOW,
            "gateway_identity_seed": h(&IDENTITY_SEED),
            "gateway_public_key": h(identity.public_key().as_bytes()),
            "gateway_pin": pin.to_string(),
            "data_payload": String::from_utf8_lossy(PAYLOAD),
            "suites_offered": ["BLAKE3-keyed", "HMAC-SHA256"],
        },
        "join": join_json,
        "resume": resume_json,
    })
}

#[test]
fn vectors_match_the_committed_file_and_the_spec_formulas() {
    let generated = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    if std::env::var_os("BOARDING_BLESS").is_some() {
        std::fs::write(VECTORS, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(VECTORS).expect("spec/vectors/boarding-v1.json exists");
    assert!(committed == generated, "test vectors drifted; if intended, regenerate with BOARDING_BLESS=1");
}

#[test]
fn generation_is_deterministic() {
    assert_eq!(generate(), generate());
}
