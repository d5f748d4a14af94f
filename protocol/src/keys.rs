//! The key schedule (HKDF-SHA256), keyrings, session keys and ephemeral X25519 keys.
//!
//! ```text
//! join:   dh  = X25519(eph_c, eph_s)                      (all-zero result rejected)
//!         prk = HKDF-Extract(salt = TH_auth, ikm = dh || token secret)
//! resume: prk = HKDF-Extract(salt = TH_rc,   ikm = dh || keyring.c2s || keyring.s2c)
//!         (a rotating resume's new keyring is expanded from this prk too)
//! key     = HKDF-Expand(prk, info = label || 0x00 || len(client id) || client id || pin, 32)
//! ```
//!
//! The labels are listed in [`labels`]; every one is distinct and names the version.

use core::fmt;

use hkdf::Hkdf;
#[cfg(test)]
use hmac::Hmac;
use hmac::Mac as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::PeerMisbehaved;
use crate::identity::ClientId;
use crate::pin::Pin;
use crate::token::TokenSecret;

/// The HKDF-Expand labels of protocol version 1.
pub mod labels {
    /// Static client-to-server keyring key.
    pub const KEYRING_C2S: &[u8] = b"boarding v1 keyring c2s";
    /// Static server-to-client keyring key.
    pub const KEYRING_S2C: &[u8] = b"boarding v1 keyring s2c";
    /// Join session key, client to server.
    pub const JOIN_C2S: &[u8] = b"boarding v1 join c2s";
    /// Join session key, server to client.
    pub const JOIN_S2C: &[u8] = b"boarding v1 join s2c";
    /// Key of the `ServerFinished` MAC.
    pub const JOIN_SERVER_FINISHED: &[u8] = b"boarding v1 join server finished";
    /// Key of the `ClientFinished` MAC.
    pub const JOIN_CLIENT_FINISHED: &[u8] = b"boarding v1 join client finished";
    /// Resume session key, client to server.
    pub const RESUME_C2S: &[u8] = b"boarding v1 resume c2s";
    /// Resume session key, server to client.
    pub const RESUME_S2C: &[u8] = b"boarding v1 resume s2c";
    /// Key of the `ResumeChallenge` MAC.
    pub const RESUME_SERVER_FINISHED: &[u8] = b"boarding v1 resume server finished";
    /// Key of the `ResumeFinished` MAC.
    pub const RESUME_CLIENT_FINISHED: &[u8] = b"boarding v1 resume client finished";
    /// Key of the `ResumeTicket` MAC.
    pub const RESUME_TICKET: &[u8] = b"boarding v1 resume ticket";
    /// A rotated keyring's client-to-server key (derived in a resume that rotates).
    pub const ROTATED_KEYRING_C2S: &[u8] = b"boarding v1 rotated keyring c2s";
    /// A rotated keyring's server-to-client key.
    pub const ROTATED_KEYRING_S2C: &[u8] = b"boarding v1 rotated keyring s2c";
    /// Label of a keyring's public fingerprint (SHA-256, not HKDF).
    pub const KEYRING_ID: &[u8] = b"boarding v1 keyring id";
    /// HKDF-Expand info of the attestation binding (over `TH_EV`, not a key: it is public).
    pub const ATTESTATION_BINDING: &[u8] = b"boarding v1 attestation binding";
}

/// A 32-byte symmetric key: zeroized on drop, compared in constant time, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; 32]);

impl SymmetricKey {
    /// Wraps raw key bytes (for example read back from storage).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key. Handle with care.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for SymmetricKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SymmetricKey {}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(<redacted>)")
    }
}

impl serde::Serialize for SymmetricKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SymmetricKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(<[u8; 32]>::deserialize(d)?);
        Ok(Self(*bytes))
    }
}

/// The two static directional keys a join establishes and both sides store under the
/// client id; every resume derives fresh session keys from them.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Keyring {
    /// Client-to-server key.
    pub c2s: SymmetricKey,
    /// Server-to-client key.
    pub s2c: SymmetricKey,
}

impl Keyring {
    /// The keyring's public fingerprint: `SHA-256(label || c2s || s2c)`. The gateway
    /// confirms a keyring by fingerprint, so a confirmation can never land on a
    /// keyring that replaced the one the handshake derived.
    pub fn id(&self) -> KeyringId {
        let mut h = Sha256::new();
        h.update(labels::KEYRING_ID);
        h.update(self.c2s.expose());
        h.update(self.s2c.expose());
        KeyringId(h.finalize().into())
    }
}

/// The public fingerprint of a keyring (see [`Keyring::id`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KeyringId(pub [u8; 32]);

impl fmt::Debug for KeyringId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.0.get(..8).unwrap_or(&[]);
        write!(f, "KeyringId({})", hex::encode(short))
    }
}

/// The two directional keys of one session's channel.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionKeys {
    /// Client-to-server MAC key.
    pub c2s: SymmetricKey,
    /// Server-to-client MAC key.
    pub s2c: SymmetricKey,
}

/// Everything a join derives.
#[derive(Debug)]
pub(crate) struct JoinSecrets {
    pub keyring: Keyring,
    pub session: SessionKeys,
    pub server_finished: SymmetricKey,
    pub client_finished: SymmetricKey,
}

/// Everything a resume derives.
#[derive(Debug)]
pub(crate) struct ResumeSecrets {
    pub session: SessionKeys,
    pub server_finished: SymmetricKey,
    pub client_finished: SymmetricKey,
    pub ticket: SymmetricKey,
    /// The keyring that replaces the resumed one if this resume rotates: from the
    /// resume's fresh DH and the old keyring, under a transcript that carries the
    /// rotation flag, so neither a thief of the old keyring nor an eavesdropper has it.
    pub rotated: Keyring,
}

/// An ephemeral X25519 secret, drawn from the caller's RNG, zeroized on drop.
pub struct EphemeralSecret(StaticSecret);

impl EphemeralSecret {
    /// Draws a fresh secret.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let bytes = Zeroizing::new(crate::random_array::<32, R>(rng));
        Self(StaticSecret::from(*bytes))
    }

    /// An ephemeral secret from given bytes, for known-answer tests; protocol code
    /// draws them with [`EphemeralSecret::generate`].
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        let secret = Zeroizing::new(secret);
        Self(StaticSecret::from(*secret))
    }

    /// The public share to send.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    /// X25519 with the peer's share; rejects the all-zero (non-contributory) result.
    ///
    /// # Errors
    ///
    /// [`PeerMisbehaved::NonContributoryShare`] if the shared secret is all zeros: the peer
    /// sent a low-order point, which would make the key schedule's input known to anyone.
    pub fn agree(&self, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, PeerMisbehaved> {
        let shared = self.0.diffie_hellman(&PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::NonContributoryShare);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

impl fmt::Debug for EphemeralSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EphemeralSecret(<redacted>)")
    }
}

/// HKDF-Expand info: `label || 0x00 || u8 len(client id) || client id || pin`.
fn expand(prk: &Hkdf<Sha256>, label: &[u8], client_id: &ClientId, pin: &Pin) -> SymmetricKey {
    let id = client_id.as_str().as_bytes();
    // Client ids are at most 63 bytes, so the length fits in one byte.
    let id_len = [u8::try_from(id.len()).unwrap_or(u8::MAX)];
    let info: [&[u8]; 5] = [label, &[0], &id_len, id, pin.as_bytes()];
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit, so expand cannot fail.
    let _ = prk.expand_multi_info(&info, &mut okm);
    SymmetricKey(okm)
}

/// The join key schedule.
pub(crate) fn join_secrets(
    dh: &[u8; 32],
    token_secret: &TokenSecret,
    transcript_hash: &[u8; 32],
    client_id: &ClientId,
    pin: &Pin,
) -> JoinSecrets {
    let mut ikm = Zeroizing::new([0u8; 48]);
    let (dh_part, secret_part) = ikm.split_at_mut(32);
    dh_part.copy_from_slice(dh);
    secret_part.copy_from_slice(token_secret.expose());
    let hk = Hkdf::<Sha256>::new(Some(transcript_hash), &ikm[..]);
    let x = |label| expand(&hk, label, client_id, pin);
    JoinSecrets {
        keyring: Keyring { c2s: x(labels::KEYRING_C2S), s2c: x(labels::KEYRING_S2C) },
        session: SessionKeys { c2s: x(labels::JOIN_C2S), s2c: x(labels::JOIN_S2C) },
        server_finished: x(labels::JOIN_SERVER_FINISHED),
        client_finished: x(labels::JOIN_CLIENT_FINISHED),
    }
}

/// The resume key schedule.
pub(crate) fn resume_secrets(
    dh: &[u8; 32],
    keyring: &Keyring,
    transcript_hash: &[u8; 32],
    client_id: &ClientId,
    pin: &Pin,
) -> ResumeSecrets {
    let mut ikm = Zeroizing::new([0u8; 96]);
    for (chunk, part) in ikm.chunks_exact_mut(32).zip([dh, keyring.c2s.expose(), keyring.s2c.expose()]) {
        chunk.copy_from_slice(part);
    }
    let hk = Hkdf::<Sha256>::new(Some(transcript_hash), &ikm[..]);
    let x = |label| expand(&hk, label, client_id, pin);
    ResumeSecrets {
        session: SessionKeys { c2s: x(labels::RESUME_C2S), s2c: x(labels::RESUME_S2C) },
        server_finished: x(labels::RESUME_SERVER_FINISHED),
        client_finished: x(labels::RESUME_CLIENT_FINISHED),
        ticket: x(labels::RESUME_TICKET),
        rotated: Keyring { c2s: x(labels::ROTATED_KEYRING_C2S), s2c: x(labels::ROTATED_KEYRING_S2C) },
    }
}

/// A finished MAC: `HMAC-SHA256(key, transcript hash)`.
pub(crate) fn finished_mac(key: &SymmetricKey, transcript_hash: &[u8; 32]) -> [u8; 32] {
    let mut mac = crate::suite::hmac_sha256(key.expose());
    mac.update(transcript_hash);
    mac.finalize().into_bytes().into()
}

/// Checks a finished MAC in constant time.
pub(crate) fn verify_finished(key: &SymmetricKey, transcript_hash: &[u8; 32], tag: &[u8; 32]) -> bool {
    finished_mac(key, transcript_hash).ct_eq(tag).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> alloc::vec::Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 7748 §6.1.
    #[test]
    fn rfc7748_x25519_known_answer() {
        let a: [u8; 32] = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").try_into().unwrap();
        let b: [u8; 32] = unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb").try_into().unwrap();
        let (a, b) = (EphemeralSecret(StaticSecret::from(a)), EphemeralSecret(StaticSecret::from(b)));
        assert_eq!(a.public().to_vec(), unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
        assert_eq!(b.public().to_vec(), unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
        let k = unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(a.agree(&b.public()).unwrap().to_vec(), k);
        assert_eq!(b.agree(&a.public()).unwrap().to_vec(), k);
    }

    #[test]
    fn all_zero_share_is_rejected() {
        let a = EphemeralSecret(StaticSecret::from([5u8; 32]));
        assert_eq!(a.agree(&[0u8; 32]), Err(PeerMisbehaved::NonContributoryShare));
        // The order-1 point (1, ...) is also non-contributory.
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(a.agree(&one), Err(PeerMisbehaved::NonContributoryShare));
    }

    /// RFC 5869 test case 1.
    #[test]
    fn rfc5869_hkdf_case_1() {
        let ikm = [0x0bu8; 22];
        let salt = unhex("000102030405060708090a0b0c");
        let info = unhex("f0f1f2f3f4f5f6f7f8f9");
        let (prk, hk) = Hkdf::<Sha256>::extract(Some(&salt), &ikm);
        assert_eq!(prk.to_vec(), unhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"));
        let mut okm = [0u8; 42];
        hk.expand(&info, &mut okm).unwrap();
        assert_eq!(
            okm.to_vec(),
            unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
    }

    /// RFC 4231 test cases 1 and 2 (HMAC-SHA256), through the channel's MAC state.
    #[test]
    fn rfc4231_hmac_cases_1_and_2() {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&[0x0b; 20]).unwrap();
        mac.update(b"Hi There");
        assert_eq!(
            mac.finalize().into_bytes().to_vec(),
            unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya ");
        mac.update(b"want for nothing?");
        assert_eq!(
            mac.finalize().into_bytes().to_vec(),
            unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn debug_never_prints_keys() {
        let k = SymmetricKey([0xab; 32]);
        let ring = Keyring { c2s: k.clone(), s2c: k };
        let shown = alloc::format!("{ring:?}");
        assert!(!shown.contains("ab, ") && !shown.contains("abab") && !shown.contains("171"), "{shown}");
    }
}
