//! kubeadm-format bootstrap tokens (`[a-z0-9]{6}.[a-z0-9]{16}`) and the gateway's
//! record of each token.
//!
//! The id is public (it names the token on the wire); the 16-character secret (about
//! 83 bits) never crosses the wire: only proofs keyed by it do. Secrets are compared
//! in constant time, zeroized on drop and redacted in `Debug`.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::UnixTime;

/// Length of a token id.
pub const TOKEN_ID_LEN: usize = 6;
/// Length of a token secret.
pub const TOKEN_SECRET_LEN: usize = 16;
/// Most labels a token record may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a token string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not of the form `<id>.<secret>`.
    MissingDot,
    /// The id is not 6 characters of `[a-z0-9]`.
    BadId,
    /// The secret is not 16 characters of `[a-z0-9]`.
    BadSecret,
    /// A label or the description breaks its limits.
    BadMetadata(&'static str),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingDot => f.write_str("a bootstrap token has the form <6 chars>.<16 chars>"),
            Self::BadId => f.write_str("the token id must be 6 characters of [a-z0-9]"),
            Self::BadSecret => f.write_str("the token secret must be 16 characters of [a-z0-9]"),
            Self::BadMetadata(what) => write!(f, "token metadata rejected: {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TokenError {}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Exactly `N` bytes of `[a-z0-9]`, or `None`.
fn token_chars<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let arr: [u8; N] = bytes.try_into().ok()?;
    arr.iter().all(|&b| is_token_char(b)).then_some(arr)
}

fn random_chars<const N: usize, R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> [u8; N] {
    let mut out = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let mut byte = [0u8; 1];
        rng.fill_bytes(&mut byte);
        // Rejection sampling: 252 = 7 * 36, so accepted bytes map uniformly.
        if let (true, Some(slot)) = (byte[0] < 252, out.get_mut(filled)) {
            *slot = ALPHABET.get(usize::from(byte[0] % 36)).copied().unwrap_or(b'a');
            filled = filled.saturating_add(1);
        }
        byte.zeroize();
    }
    out
}

/// The public half of a token: 6 characters of `[a-z0-9]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId([u8; TOKEN_ID_LEN]);

impl TokenId {
    /// Validates raw id bytes.
    ///
    /// # Errors
    ///
    /// [`TokenError::BadId`] unless `bytes` is 6 characters of `[a-z0-9]`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        token_chars(bytes).map(Self).ok_or(TokenError::BadId)
    }

    /// The id's ASCII bytes.
    pub fn as_bytes(&self) -> &[u8; TOKEN_ID_LEN] {
        &self.0
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        // Only [a-z0-9] bytes are ever stored, which are valid UTF-8.
        core::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", self.as_str())
    }
}

impl FromStr for TokenId {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(s.as_bytes())
    }
}

impl Serialize for TokenId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The secret half of a token: 16 characters of `[a-z0-9]`. Zeroized on drop,
/// compared in constant time, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TokenSecret([u8; TOKEN_SECRET_LEN]);

impl TokenSecret {
    /// Validates raw secret bytes.
    ///
    /// # Errors
    ///
    /// [`TokenError::BadSecret`] unless `bytes` is 16 characters of `[a-z0-9]`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        token_chars(bytes).map(Self).ok_or(TokenError::BadSecret)
    }

    /// The secret's ASCII bytes: the HS256 key of a token proof.
    pub fn expose(&self) -> &[u8; TOKEN_SECRET_LEN] {
        &self.0
    }
}

impl ConstantTimeEq for TokenSecret {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for TokenSecret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for TokenSecret {}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// A bootstrap token `id.secret`. `Display` prints the whole token (the secret
/// included: that is how an operator hands it to a node); `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: TokenId,
    secret: TokenSecret,
}

impl BootstrapToken {
    /// Assembles a token from its halves.
    pub fn new(id: TokenId, secret: TokenSecret) -> Self {
        Self { id, secret }
    }

    /// Generates a fresh token from the caller's RNG (uniform over the alphabet).
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let id = TokenId(random_chars(rng));
        let mut secret = random_chars::<TOKEN_SECRET_LEN, R>(rng);
        let token = Self { id, secret: TokenSecret(secret) };
        secret.zeroize();
        token
    }

    /// The public id.
    pub fn id(&self) -> TokenId {
        self.id
    }

    /// The secret.
    pub fn secret(&self) -> &TokenSecret {
        &self.secret
    }

    /// Whether `s` is a well-formed token, without keeping it.
    pub fn is_valid(s: &str) -> bool {
        s.parse::<Self>().is_ok()
    }

    /// Writes `id.secret` into a zeroizing buffer: the payload of the gateway's EdDSA
    /// challenge, reconstructed locally and never sent.
    pub(crate) fn to_payload(&self) -> zeroize::Zeroizing<[u8; 23]> {
        let mut out = zeroize::Zeroizing::new([b'.'; 23]);
        if let Some(id) = out.get_mut(..TOKEN_ID_LEN) {
            id.copy_from_slice(&self.id.0);
        }
        if let Some(secret) = out.get_mut(TOKEN_ID_LEN + 1..) {
            secret.copy_from_slice(&self.secret.0);
        }
        out
    }
}

impl FromStr for BootstrapToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, secret) = s.split_once('.').ok_or(TokenError::MissingDot)?;
        Ok(Self { id: id.parse()?, secret: TokenSecret::from_bytes(secret.as_bytes())? })
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = core::str::from_utf8(&self.secret.0).unwrap_or("");
        write!(f, "{}.{}", self.id, secret)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

impl Serialize for BootstrapToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = self.to_string();
        let result = s.serialize_str(&text);
        text.zeroize();
        result
    }
}

impl<'de> Deserialize<'de> for BootstrapToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut s = String::deserialize(d)?;
        let parsed = s.parse().map_err(serde::de::Error::custom);
        s.zeroize();
        parsed
    }
}

/// Why a token cannot be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUnusable {
    /// `now` is at or past the expiry.
    Expired,
    /// `max_uses` is non-zero and reached.
    Exhausted,
}

/// The gateway's record of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token itself (its secret is redacted in `Debug`).
    pub token: BootstrapToken,
    /// Unix second from which the token is expired; `None` never expires.
    pub expires_at: Option<UnixTime>,
    /// Most redemptions allowed; 0 is unlimited.
    pub max_uses: u32,
    /// Redemptions so far.
    pub use_count: u32,
    /// Labels handed to every client that joins with this token.
    pub labels: BTreeMap<String, String>,
    /// Free text for operators.
    pub description: String,
}

impl TokenRecord {
    /// A record with no labels, no description and no uses yet.
    pub fn new(token: BootstrapToken, expires_at: Option<UnixTime>, max_uses: u32) -> Self {
        Self { token, expires_at, max_uses, use_count: 0, labels: BTreeMap::new(), description: String::new() }
    }

    /// Adds a label, checking the limits.
    ///
    /// # Errors
    ///
    /// [`TokenError::BadMetadata`] if the key is empty or longer than
    /// [`MAX_LABEL_KEY_LEN`], the value is longer than [`MAX_LABEL_VALUE_LEN`], or the
    /// record has [`MAX_LABELS`] labels already and `key` is not one of them.
    pub fn with_label(mut self, key: &str, value: &str) -> Result<Self, TokenError> {
        if key.is_empty() || key.len() > MAX_LABEL_KEY_LEN {
            return Err(TokenError::BadMetadata("label keys are 1 to 63 bytes"));
        }
        if value.len() > MAX_LABEL_VALUE_LEN {
            return Err(TokenError::BadMetadata("label values are at most 256 bytes"));
        }
        if self.labels.len() >= MAX_LABELS && !self.labels.contains_key(key) {
            return Err(TokenError::BadMetadata("at most 32 labels"));
        }
        self.labels.insert(key.to_string(), value.to_string());
        Ok(self)
    }

    /// Sets the description, checking its limit.
    ///
    /// # Errors
    ///
    /// [`TokenError::BadMetadata`] if `description` is longer than [`MAX_DESCRIPTION_LEN`].
    pub fn with_description(mut self, description: &str) -> Result<Self, TokenError> {
        if description.len() > MAX_DESCRIPTION_LEN {
            return Err(TokenError::BadMetadata("descriptions are at most 1024 bytes"));
        }
        self.description = description.to_string();
        Ok(self)
    }

    /// The token id.
    pub fn id(&self) -> TokenId {
        self.token.id()
    }

    /// Whether the token is expired at `now` (expiry is the instant `expires_at`
    /// itself). The one expiry predicate: lookups, the unnamed-token flow, redemption
    /// and listings all use it.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Whether the token may be redeemed once more at `now`.
    ///
    /// # Errors
    ///
    /// [`TokenUnusable::Expired`] from `expires_at` on; [`TokenUnusable::Exhausted`] once a
    /// limited token has been redeemed `max_uses` times.
    pub fn usable_at(&self, now: UnixTime) -> Result<(), TokenUnusable> {
        if self.is_expired(now) {
            return Err(TokenUnusable::Expired);
        }
        if self.max_uses != 0 && self.use_count >= self.max_uses {
            return Err(TokenUnusable::Exhausted);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn kubeadm_token_table() {
        let valid = ["abcdef.0123456789abcdef", "000000.0000000000000000", "z9z9z9.a1b2c3d4e5f6g7h8"];
        for t in valid {
            let parsed: BootstrapToken = t.parse().unwrap();
            assert_eq!(parsed.to_string(), t);
            assert_eq!(parsed.id().as_str(), &t[..6]);
        }
        let invalid = [
            ("", TokenError::MissingDot),
            ("abcdef0123456789abcdef", TokenError::MissingDot),
            ("abcdef:0123456789abcdef", TokenError::MissingDot),
            ("ABCDEF.0123456789abcdef", TokenError::BadId),
            ("abcde.0123456789abcdef", TokenError::BadId),
            ("abcdefg.0123456789abcdef", TokenError::BadId),
            ("abcdef.0123456789ABCDEF", TokenError::BadSecret),
            ("abcdef.0123456789abcde", TokenError::BadSecret),
            ("abcdef.0123456789abcdefa", TokenError::BadSecret),
            ("abcdef.0123456789abcde.", TokenError::BadSecret),
            ("abcdef..0123456789abcdef", TokenError::BadSecret),
            (" abcdef.0123456789abcdef", TokenError::BadId),
            ("abcdef.0123456789abcdef\n", TokenError::BadSecret),
            ("abc-ef.0123456789abcdef", TokenError::BadId),
            ("abcdéf.0123456789abcdef", TokenError::BadId),
        ];
        for (t, err) in invalid {
            assert_eq!(t.parse::<BootstrapToken>().unwrap_err(), err, "{t:?}");
            assert!(!BootstrapToken::is_valid(t));
        }
    }

    #[test]
    fn generated_tokens_are_valid_and_distinct() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let a = BootstrapToken::generate(&mut rng);
        let b = BootstrapToken::generate(&mut rng);
        assert!(BootstrapToken::is_valid(&a.to_string()));
        assert_ne!(a, b);
    }

    #[test]
    fn debug_redacts_the_secret() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let shown = alloc::format!("{t:?} {:?}", TokenRecord::new(t.clone(), None, 0));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("abcdef"));
    }

    #[test]
    fn usability_follows_expiry_and_uses() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let mut r = TokenRecord::new(t, Some(100), 2);
        assert_eq!(r.usable_at(99), Ok(()));
        assert_eq!(r.usable_at(100), Err(TokenUnusable::Expired));
        r.use_count = 2;
        assert_eq!(r.usable_at(1), Err(TokenUnusable::Exhausted));
        r.max_uses = 0;
        assert_eq!(r.usable_at(1), Ok(()));
    }
}
