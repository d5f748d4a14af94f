//! Detached compact JWS (RFC 7515 Appendix F): the payload is base64url-encoded into
//! the signing input and cut out of the compact form, which reads `header..signature`.
//!
//! Two algorithms, each with a byte-exact protected header:
//!
//! * `HS256` keyed with a token secret's ASCII bytes, header
//!   `{"alg":"HS256","kid":"<kid>"}`: byte-identical to kubeadm's cluster-info
//!   signatures, so [`hs256_detached`] can sign, and [`verify_hs256_detached`] can
//!   check, a real `jws-kubeconfig-<id>` entry. Verification is constant-time.
//! * `EdDSA` (Ed25519, RFC 8037) with the gateway's identity key, verified strictly
//!   (no small-order keys, no malleable signatures).
//!
//! Parsing is strict: exactly three segments, an empty payload segment, canonical
//! unpadded base64url, and a header that must equal the expected one byte for byte.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::token::TokenId;

/// Longest compact JWS accepted anywhere in the protocol, in bytes.
pub const MAX_JWS_LEN: usize = 512;

/// Why a JWS was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwsError {
    /// Longer than [`MAX_JWS_LEN`].
    TooLong,
    /// Not three `.`-separated segments.
    NotThreeSegments,
    /// The payload segment is not empty (the JWS is not detached).
    NotDetached,
    /// A segment is not canonical unpadded base64url.
    BadBase64,
    /// The protected header differs from the expected one.
    UnexpectedHeader,
    /// The signature has the wrong length for the algorithm.
    BadSignatureLength,
    /// The signature does not verify.
    BadSignature,
}

impl fmt::Display for JwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLong => "JWS longer than the limit",
            Self::NotThreeSegments => "a compact JWS has exactly three segments",
            Self::NotDetached => "the JWS payload segment must be empty (detached form)",
            Self::BadBase64 => "a JWS segment is not unpadded base64url",
            Self::UnexpectedHeader => "the JWS protected header is not the expected one",
            Self::BadSignatureLength => "the JWS signature has the wrong length",
            Self::BadSignature => "the JWS signature does not verify",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for JwsError {}

/// A detached compact JWS split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedJws<'a> {
    /// The base64url protected-header segment, as it appeared.
    pub header_b64: &'a str,
    /// The decoded signature bytes.
    pub signature: Vec<u8>,
}

impl<'a> DetachedJws<'a> {
    /// Splits and decodes `header..signature` strictly.
    ///
    /// # Errors
    ///
    /// [`JwsError::TooLong`] above [`MAX_JWS_LEN`], [`JwsError::NotThreeSegments`],
    /// [`JwsError::NotDetached`] if the payload segment is not empty, and
    /// [`JwsError::BadBase64`] if the header or the signature is not canonical unpadded
    /// base64url.
    pub fn parse(jws: &'a str) -> Result<Self, JwsError> {
        if jws.len() > MAX_JWS_LEN {
            return Err(JwsError::TooLong);
        }
        let mut parts = jws.split('.');
        let (Some(header_b64), Some(payload), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::NotThreeSegments);
        };
        if !payload.is_empty() {
            return Err(JwsError::NotDetached);
        }
        // Decoding the header checks it is canonical base64url; its bytes are then
        // compared as text against the expected header by the verifiers.
        URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| JwsError::BadBase64)?;
        let signature = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| JwsError::BadBase64)?;
        Ok(Self { header_b64, signature })
    }
}

/// Escapes `s` as a JSON string body the way Go's `encoding/json` does (which is what
/// kubeadm's JOSE library serializes headers with), so headers stay byte-identical.
fn push_json_string(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => push_unicode_escape(out, c),
            c if u32::from(c) < 0x20 => push_unicode_escape(out, c),
            c => out.push(c),
        }
    }
}

fn push_unicode_escape(out: &mut String, c: char) {
    let code = u32::from(c);
    let _ = fmt::Write::write_fmt(out, format_args!("\\u{code:04x}"));
}

/// The protected header of a kubeadm-style token signature: `{"alg":"HS256","kid":"<kid>"}`.
pub fn hs256_header(kid: &str) -> String {
    let mut out = String::from("{\"alg\":\"HS256\",\"kid\":\"");
    push_json_string(&mut out, kid);
    out.push_str("\"}");
    out
}

/// The protected header of a gateway challenge:
/// `{"alg":"EdDSA","kid":"<token id>","th":"<base64url transcript hash>"}`.
pub fn challenge_header(kid: TokenId, transcript_hash: &[u8; 32]) -> String {
    let mut out = challenge_header_prefix(kid);
    URL_SAFE_NO_PAD.encode_string(transcript_hash, &mut out);
    out.push_str("\"}");
    out
}

/// `base64url(header) "." base64url(payload)`: the JWS signing input.
fn signing_input(header_b64: &str, payload: &[u8]) -> Vec<u8> {
    let capacity = payload.len().div_ceil(3).saturating_mul(4).saturating_add(header_b64.len()).saturating_add(1);
    let mut input = String::with_capacity(capacity);
    input.push_str(header_b64);
    input.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut input);
    input.into_bytes()
}

fn hs256_mac(key: &[u8], header_b64: &str, content: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC state would
    // only ever fail verification.
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256>>::new(&Default::default()));
    mac.update(&signing_input(header_b64, content));
    mac
}

/// Signs `content` as a detached `HS256` JWS with header `{"alg":"HS256","kid":"<kid>"}`,
/// returning `header..signature` exactly as kubeadm would.
pub fn hs256_detached(content: &[u8], kid: &str, key: &[u8]) -> String {
    let header_b64 = URL_SAFE_NO_PAD.encode(hs256_header(kid));
    let tag = hs256_mac(key, &header_b64, content).finalize().into_bytes();
    let mut out = header_b64;
    out.push_str("..");
    URL_SAFE_NO_PAD.encode_string(tag, &mut out);
    out
}

/// Checks a detached `HS256` JWS over `content` with the expected `kid` and `key`, in
/// constant time. Any parse failure, other header, or wrong signature is `false`.
pub fn verify_hs256_detached(jws: &str, content: &[u8], kid: &str, key: &[u8]) -> bool {
    check_hs256_detached(jws, content, kid, key).is_ok()
}

/// Like [`verify_hs256_detached`], with the reason for a rejection.
///
/// # Errors
///
/// Any [`DetachedJws::parse`] error; [`JwsError::UnexpectedHeader`] if the protected header
/// is not the `HS256` header for `kid` byte for byte; [`JwsError::BadSignatureLength`]
/// unless the signature is 32 bytes; [`JwsError::BadSignature`] if the MAC does not verify.
pub fn check_hs256_detached(jws: &str, content: &[u8], kid: &str, key: &[u8]) -> Result<(), JwsError> {
    let parsed = DetachedJws::parse(jws)?;
    let expected_header = URL_SAFE_NO_PAD.encode(hs256_header(kid));
    if parsed.header_b64 != expected_header {
        return Err(JwsError::UnexpectedHeader);
    }
    if parsed.signature.len() != 32 {
        return Err(JwsError::BadSignatureLength);
    }
    hs256_mac(key, parsed.header_b64, content).verify_slice(&parsed.signature).map_err(|_| JwsError::BadSignature)
}

/// Signs `payload` as a detached `EdDSA` JWS with the given protected header.
pub fn eddsa_detached(header_json: &str, payload: &[u8], key: &SigningKey) -> String {
    let header_b64 = URL_SAFE_NO_PAD.encode(header_json);
    let signature = key.sign(&signing_input(&header_b64, payload));
    let mut out = header_b64;
    out.push_str("..");
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut out);
    out
}

/// Checks a detached `EdDSA` JWS whose header must equal `header_json` byte for byte,
/// over `payload`, with strict Ed25519 verification.
///
/// # Errors
///
/// Any [`DetachedJws::parse`] error; [`JwsError::UnexpectedHeader`] if the protected header
/// is not `header_json` byte for byte; [`JwsError::BadSignatureLength`] unless the
/// signature is 64 bytes; [`JwsError::BadSignature`] if strict Ed25519 verification fails.
pub fn verify_eddsa_detached(jws: &str, header_json: &str, payload: &[u8], key: &VerifyingKey) -> Result<(), JwsError> {
    let parsed = DetachedJws::parse(jws)?;
    if parsed.header_b64 != URL_SAFE_NO_PAD.encode(header_json) {
        return Err(JwsError::UnexpectedHeader);
    }
    let signature = Signature::from_slice(&parsed.signature).map_err(|_| JwsError::BadSignatureLength)?;
    key.verify_strict(&signing_input(parsed.header_b64, payload), &signature).map_err(|_| JwsError::BadSignature)
}

/// The start of a challenge header for `kid`, up to the transcript hash: how a client
/// finds its token's challenge among several before verifying it.
pub fn challenge_header_prefix(kid: TokenId) -> String {
    let mut out = String::from("{\"alg\":\"EdDSA\",\"kid\":\"");
    out.push_str(kid.as_str());
    out.push_str("\",\"th\":\"");
    out
}

/// Whether `jws`'s decoded protected header starts with `prefix`.
pub fn header_starts_with(jws: &str, prefix: &str) -> bool {
    let Some((header_b64, _)) = jws.split_once('.') else { return false };
    if header_b64.len() > MAX_JWS_LEN {
        return false;
    }
    URL_SAFE_NO_PAD.decode(header_b64).is_ok_and(|h| h.starts_with(prefix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// RFC 8037 Appendix A.4: Ed25519 signing of "Example of Ed25519 signing".
    #[test]
    fn rfc8037_a4_eddsa_known_answer() {
        let d: [u8; 32] = b64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").try_into().unwrap();
        let x = b64("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        let key = SigningKey::from_bytes(&d);
        assert_eq!(key.verifying_key().as_bytes().as_slice(), x.as_slice());
        let jws = eddsa_detached("{\"alg\":\"EdDSA\"}", b"Example of Ed25519 signing", &key);
        assert_eq!(
            jws,
            "eyJhbGciOiJFZERTQSJ9..hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
        // The RFC's attached form is the same with the payload segment restored.
        assert_eq!(
            signing_input("eyJhbGciOiJFZERTQSJ9", b"Example of Ed25519 signing"),
            b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
        );
        let vk = key.verifying_key();
        assert_eq!(verify_eddsa_detached(&jws, "{\"alg\":\"EdDSA\"}", b"Example of Ed25519 signing", &vk), Ok(()));
        assert_eq!(
            verify_eddsa_detached(&jws, "{\"alg\":\"EdDSA\"}", b"Example of Ed25519 signinG", &vk),
            Err(JwsError::BadSignature)
        );
    }

    #[test]
    fn hs256_matches_kubeadm_layout() {
        let jws = hs256_detached(b"cluster-info", "abcdef", b"0123456789abcdef");
        let (header, rest) = jws.split_once("..").unwrap();
        // base64url of {"alg":"HS256","kid":"abcdef"}
        assert_eq!(header, "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9");
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(b"eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9.Y2x1c3Rlci1pbmZv");
        assert_eq!(b64(rest), mac.finalize().into_bytes().to_vec());
        assert!(verify_hs256_detached(&jws, b"cluster-info", "abcdef", b"0123456789abcdef"));
        assert!(!verify_hs256_detached(&jws, b"cluster-infO", "abcdef", b"0123456789abcdef"));
        assert!(!verify_hs256_detached(&jws, b"cluster-info", "abcdeg", b"0123456789abcdef"));
        assert!(!verify_hs256_detached(&jws, b"cluster-info", "abcdef", b"0123456789abcdeg"));
    }

    #[test]
    fn hs256_header_escapes_like_go() {
        assert_eq!(hs256_header("a\"<\n"), "{\"alg\":\"HS256\",\"kid\":\"a\\\"\\u003c\\n\"}");
    }

    #[test]
    fn strict_parsing() {
        let good = hs256_detached(b"x", "abcdef", b"k");
        let (h, s) = good.split_once("..").unwrap();
        let cases = [
            (alloc::format!("{h}.{s}"), JwsError::NotThreeSegments),
            (alloc::format!("{h}.eA.{s}"), JwsError::NotDetached),
            (alloc::format!("{h}..{s}."), JwsError::NotThreeSegments),
            (alloc::format!("{h}..{s}="), JwsError::BadBase64),
            (alloc::format!("{h}=..{s}"), JwsError::BadBase64),
            (alloc::format!("{h}..!{s}"), JwsError::BadBase64),
            (alloc::format!("{h}..{}", &s[..40]), JwsError::BadSignatureLength),
            (alloc::format!("{}..{s}", URL_SAFE_NO_PAD.encode("{\"alg\":\"none\"}")), JwsError::UnexpectedHeader),
            ("a".repeat(MAX_JWS_LEN + 1), JwsError::TooLong),
        ];
        for (jws, err) in cases {
            assert_eq!(check_hs256_detached(&jws, b"x", "abcdef", b"k"), Err(err), "{jws}");
        }
    }
}
