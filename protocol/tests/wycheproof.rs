//! Wycheproof vectors (Apache-2.0, copied into `tests/wycheproof/` with their licence and
//! source) run against the primitives exactly as Boarding uses them: X25519 through
//! `EphemeralSecret::agree` (which must refuse every all-zero shared secret), strict
//! Ed25519 verification, HKDF-SHA256 and HMAC-SHA256.

use boarding::error::PeerMisbehaved;
use boarding::keys::EphemeralSecret;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/wycheproof/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tests(doc: &Value) -> impl Iterator<Item = (&Value, &Value)> {
    doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["tests"].as_array().unwrap().iter().map(move |t| (g, t)))
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn x25519() {
    let doc = load("x25519_test.json");
    let mut zero = 0;
    for (_, t) in tests(&doc) {
        let secret = EphemeralSecret::from_bytes(bytes(&t["private"]).try_into().unwrap());
        let public: [u8; 32] = bytes(&t["public"]).try_into().unwrap();
        let shared = bytes(&t["shared"]);
        match secret.agree(&public) {
            Ok(got) => assert_eq!(got.to_vec(), shared, "tcId {}", t["tcId"]),
            Err(e) => {
                assert_eq!(e, PeerMisbehaved::NonContributoryShare);
                assert!(shared.iter().all(|&b| b == 0), "tcId {} refused a non-zero secret", t["tcId"]);
                zero += 1;
            }
        }
    }
    assert!(zero > 0, "the vectors include all-zero shared secrets");
}

#[test]
fn ed25519_strict() {
    let doc = load("ed25519_test.json");
    let mut checked = 0;
    for (g, t) in tests(&doc) {
        let pk: [u8; 32] = bytes(&g["publicKey"]["pk"]).try_into().unwrap();
        let msg = bytes(&t["msg"]);
        let sig = bytes(&t["sig"]);
        let verified = ed25519_dalek::VerifyingKey::from_bytes(&pk).ok().is_some_and(|key| {
            ed25519_dalek::Signature::from_slice(&sig).is_ok_and(|s| key.verify_strict(&msg, &s).is_ok())
        });
        let expected = t["result"] == "valid";
        assert_eq!(verified, expected, "tcId {} {}", t["tcId"], t["comment"]);
        checked += 1;
    }
    assert!(checked > 100);
}

#[test]
fn hkdf_sha256() {
    let doc = load("hkdf_sha256_test.json");
    for (_, t) in tests(&doc) {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(&bytes(&t["salt"])), &bytes(&t["ikm"]));
        let mut okm = vec![0u8; t["size"].as_u64().unwrap() as usize];
        let result = hk.expand(&bytes(&t["info"]), &mut okm);
        if t["result"] == "valid" {
            result.unwrap();
            assert_eq!(okm, bytes(&t["okm"]), "tcId {}", t["tcId"]);
        } else {
            assert!(result.is_err(), "tcId {}", t["tcId"]);
        }
    }
}

#[test]
fn hmac_sha256() {
    let doc = load("hmac_sha256_test.json");
    for (g, t) in tests(&doc) {
        let tag_bytes = g["tagSize"].as_u64().unwrap() as usize / 8;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes(&t["key"])).unwrap();
        mac.update(&bytes(&t["msg"]));
        let full = mac.finalize().into_bytes();
        let matches = full[..tag_bytes] == bytes(&t["tag"])[..];
        assert_eq!(matches, t["result"] == "valid", "tcId {}", t["tcId"]);
    }
}
