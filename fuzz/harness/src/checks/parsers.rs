//! Parser targets: every string or byte format a peer or a user controls. Each check
//! compares the parser with an independent statement of the format and asserts that
//! whatever decodes re-encodes to exactly the input.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use boarding::channel::{Channel, FRAME_OVERHEAD, MAX_PAYLOAD};
use boarding::codec::DecodeError;
use boarding::identity::MAX_CLIENT_ID_LEN;
use boarding::jws::{
    DetachedJws, MAX_JWS_LEN, challenge_header, challenge_header_prefix, check_hs256_detached, eddsa_detached,
    header_starts_with, hs256_detached, verify_eddsa_detached, verify_hs256_detached,
};
use boarding::messages::{
    AlertMessage, ClientAuth, ClientFinished, ClientHello, FRAME_HEADER_LEN, FrameType, HandshakeMessage,
    MAX_HANDSHAKE_BODY, MAX_OFFERED_KEYRINGS, MAX_OFFERS, Message, ResumeChallenge, ResumeFinished, ResumeHello,
    ResumeTicket, ServerChallenge, ServerFinished, encode_frame, peek_handshake_frame,
};
use boarding::pin::Pin;
use boarding::token::{BootstrapToken, TokenId, TokenSecret};
use ed25519_dalek::SigningKey;

fn token_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// The kubeadm token grammar, stated independently of the parser.
pub fn is_kubeadm_token(s: &[u8]) -> bool {
    s.len() == 23 && s.iter().enumerate().all(|(i, &b)| if i == 6 { b == b'.' } else { token_char(b) })
}

/// Token parsing agrees with the grammar, and a parsed token prints as its input.
pub fn token(data: &[u8]) {
    let grammar = is_kubeadm_token(data);
    let id_ok = TokenId::from_bytes(data.get(..6).unwrap_or(data)).is_ok();
    assert_eq!(id_ok, data.len() >= 6 && data[..6].iter().all(|&b| token_char(b)));
    let secret_ok = TokenSecret::from_bytes(data.get(7..).unwrap_or(&[])).is_ok();
    assert_eq!(secret_ok, data.len() == 23 && data[7..].iter().all(|&b| token_char(b)));
    let Ok(text) = core::str::from_utf8(data) else {
        assert!(!grammar);
        return;
    };
    let parsed = text.parse::<BootstrapToken>();
    assert_eq!(parsed.is_ok(), grammar, "token parser disagrees with the grammar on {text:?}");
    assert_eq!(BootstrapToken::is_valid(text), grammar);
    if let Ok(token) = parsed {
        assert_eq!(token.to_string(), text, "a token does not print as it was parsed");
        assert_eq!(token.id().as_str(), &text[..6]);
        assert_eq!(token.secret().expose(), &data[7..]);
        let shown = format!("{token:?}");
        assert!(!shown.contains(&text[7..]), "Debug leaks the secret: {shown}");
    }
}

/// Pin parsing accepts exactly `sha256:` (any case) + 64 hex or 43 canonical
/// base64url characters, and the digest survives printing and re-parsing.
pub fn pin(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else { return };
    let parsed = text.parse::<Pin>();
    let prefix_ok = text.len() >= 7 && text.is_char_boundary(7) && text[..7].eq_ignore_ascii_case("sha256:");
    let digest = if prefix_ok { &text[7..] } else { "" };
    let hex_ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    let b64_ok = digest.len() == 43 && URL_SAFE_NO_PAD.decode(digest).is_ok_and(|d| d.len() == 32);
    assert_eq!(parsed.is_ok(), prefix_ok && (hex_ok || b64_ok), "pin parser disagrees with the grammar on {text:?}");
    let Ok(pin) = parsed else { return };
    let shown = pin.to_string();
    assert!(shown.starts_with("sha256:") && shown.len() == 71);
    assert!(shown[7..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(shown.parse::<Pin>(), Ok(pin), "a printed pin does not parse back");
    if hex_ok {
        assert_eq!(shown[7..], digest.to_ascii_lowercase());
    } else {
        // Canonical base64url: the digest re-encodes to the very characters given.
        assert_eq!(URL_SAFE_NO_PAD.encode(pin.as_bytes()), digest, "non-canonical base64url pin accepted");
    }
}

/// The key, kid and content every JWS input is verified against.
pub const JWS_KID: &str = "abcdef";
/// The HS256 key (a token secret's ASCII bytes).
pub const JWS_KEY: &[u8] = b"0123456789abcdef";
/// The signed content.
pub const JWS_CONTENT: &[u8] = b"boarding fuzz content";
/// The seed of the EdDSA key.
pub const JWS_SEED: [u8; 32] = [7; 32];

/// The EdDSA signing key of the JWS target.
pub fn eddsa_key() -> SigningKey {
    SigningKey::from_bytes(&JWS_SEED)
}

/// The EdDSA protected header of the JWS target: a challenge header for [`JWS_KID`].
pub fn eddsa_header() -> String {
    let kid: TokenId = JWS_KID.parse().unwrap_or_else(|e| panic!("{e}"));
    challenge_header(kid, &[3; 32])
}

/// The only HS256 JWS that may verify in the JWS target.
pub fn hs256_reference() -> String {
    hs256_detached(JWS_CONTENT, JWS_KID, JWS_KEY)
}

/// The only EdDSA JWS that may verify in the JWS target.
pub fn eddsa_reference() -> String {
    eddsa_detached(&eddsa_header(), JWS_CONTENT, &eddsa_key())
}

/// JWS parsing is strict (three segments, empty payload, canonical unpadded
/// base64url, bounded length), and verification accepts nothing but the one
/// signature the key would produce: no other spelling of it, no forgery.
pub fn jws(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else { return };
    if let Ok(parsed) = DetachedJws::parse(text) {
        assert!(text.len() <= MAX_JWS_LEN);
        let segments: Vec<&str> = text.split('.').collect();
        assert_eq!(segments.len(), 3, "parsed a JWS without three segments: {text:?}");
        assert!(segments[1].is_empty(), "parsed an attached JWS: {text:?}");
        assert_eq!(parsed.header_b64, segments[0]);
        let header = URL_SAFE_NO_PAD.decode(segments[0]).unwrap_or_else(|_| panic!("header not base64url: {text:?}"));
        assert_eq!(URL_SAFE_NO_PAD.encode(&header), segments[0], "non-canonical header accepted: {text:?}");
        assert_eq!(URL_SAFE_NO_PAD.encode(&parsed.signature), segments[2], "non-canonical signature accepted");
    }
    let hs_ok = check_hs256_detached(text, JWS_CONTENT, JWS_KID, JWS_KEY).is_ok();
    assert_eq!(hs_ok, verify_hs256_detached(text, JWS_CONTENT, JWS_KID, JWS_KEY));
    if hs_ok {
        assert_eq!(text, hs256_reference(), "an HS256 JWS other than the signer's verified");
    }
    let header = eddsa_header();
    let ed_ok = verify_eddsa_detached(text, &header, JWS_CONTENT, &eddsa_key().verifying_key()).is_ok();
    if ed_ok {
        assert_eq!(text, eddsa_reference(), "an EdDSA JWS other than the signer's verified");
    }
    let kid: TokenId = JWS_KID.parse().unwrap_or_else(|e| panic!("{e}"));
    let prefix = challenge_header_prefix(kid);
    if header_starts_with(text, &prefix) {
        let (head, _) = text.split_once('.').unwrap_or((text, ""));
        let decoded = URL_SAFE_NO_PAD.decode(head).unwrap_or_default();
        assert!(decoded.starts_with(prefix.as_bytes()));
    }
    // The same text as a body of a verifier with another content or key never verifies.
    assert!(!verify_hs256_detached(text, b"other content", JWS_KID, JWS_KEY));
    assert!(!verify_hs256_detached(text, JWS_CONTENT, JWS_KID, b"0123456789abcdeg"));
}

/// Frame decoding: a frame that decodes re-encodes to exactly its bytes, and the
/// header parser, the whole-frame decoder and the channel's length check agree.
pub fn frame(data: &[u8]) {
    let peeked = peek_handshake_frame(data);
    let decoded = HandshakeMessage::decode_frame(data);
    match peeked {
        Ok(Some(raw)) => {
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            assert!(len <= MAX_HANDSHAKE_BODY);
            assert_eq!(raw.bytes, &data[..FRAME_HEADER_LEN + len]);
            assert_eq!(raw.body, &data[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len]);
            assert_eq!(raw.frame_type as u8, data[0]);
            assert!(raw.frame_type.is_handshake());
            if raw.bytes.len() != data.len() {
                assert!(decoded.is_err(), "a frame with trailing bytes decoded");
            }
        }
        Ok(None) => {
            assert!(decoded.is_err());
            if data.len() >= FRAME_HEADER_LEN {
                let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
                assert!(data.len() < FRAME_HEADER_LEN + len, "a complete frame was reported incomplete");
            }
        }
        Err(_) => assert!(decoded.is_err()),
    }
    if let Ok(message) = decoded {
        assert_eq!(message.to_frame(), data, "a decoded frame does not re-encode to its bytes");
        assert_eq!(HandshakeMessage::decode_frame(&message.to_frame()), Ok(message));
    }
    match Channel::frame_len(data) {
        Ok(Some(n)) => {
            assert!(data[0] == FrameType::Data as u8 || data[0] == FrameType::Close as u8);
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            assert!(len <= MAX_PAYLOAD);
            assert_eq!(n, len + FRAME_OVERHEAD);
        }
        Ok(None) => assert!(data.len() < FRAME_HEADER_LEN),
        Err(_) => assert!(data.len() >= FRAME_HEADER_LEN),
    }
}

/// One message's decoder: what decodes re-encodes to the same body, and framed it
/// decodes the same through the frame decoder.
pub fn message<M: Message + PartialEq + core::fmt::Debug>(data: &[u8], wrap: fn(M) -> HandshakeMessage) {
    let Ok(message) = M::decode(data) else {
        assert!(HandshakeMessage::decode(M::TYPE, data).is_err());
        return;
    };
    let body = message.encode_body();
    assert_eq!(body, data, "{:?} does not re-encode to its bytes", M::TYPE);
    assert!(body.starts_with(&message.signed_part()), "the signed part is not a prefix of the body");
    let frame = encode_frame(M::TYPE, data);
    assert_eq!(message.to_frame(), frame);
    let again = M::decode(&body).unwrap_or_else(|e| panic!("re-decoding failed: {e}"));
    assert_eq!(again, message);
    assert_eq!(HandshakeMessage::decode_frame(&frame), Ok(wrap(message)));
}

/// `ClientHello` decoding.
pub fn client_hello(data: &[u8]) {
    message::<ClientHello>(data, HandshakeMessage::ClientHello);
}
/// `ServerChallenge` decoding (and every challenge is JWS-shaped text).
pub fn server_challenge(data: &[u8]) {
    if let Ok(m) = ServerChallenge::decode(data) {
        assert!((1..=16).contains(&m.challenges.len()));
        assert!(m.challenges.iter().all(|c| !c.is_empty() && c.len() <= MAX_JWS_LEN));
    }
    message::<ServerChallenge>(data, HandshakeMessage::ServerChallenge);
}
/// `ClientAuth` decoding.
pub fn client_auth(data: &[u8]) {
    message::<ClientAuth>(data, HandshakeMessage::ClientAuth);
}
/// `ServerFinished` decoding.
pub fn server_finished(data: &[u8]) {
    message::<ServerFinished>(data, HandshakeMessage::ServerFinished);
}
/// `ClientFinished` decoding.
pub fn client_finished(data: &[u8]) {
    message::<ClientFinished>(data, HandshakeMessage::ClientFinished);
}
/// A cursor for the specification's own walks over a message body (`None`: the body
/// ends inside a field, or a count is out of its range).
struct Walk<'a> {
    rest: &'a [u8],
}

impl<'a> Walk<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.rest.get(..n)?, self.rest.get(n..)?);
        self.rest = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A one-byte count in `min..=max`, then that many items of `width` bytes.
    fn counted(&mut self, min: usize, max: usize, width: usize) -> Option<Vec<&'a [u8]>> {
        let n = usize::from(self.byte()?);
        if !(min..=max).contains(&n) {
            return None;
        }
        (0..n).map(|_| self.take(width)).collect()
    }
}

/// The fields of a `ResumeHello` body as `spec/PROTOCOL.md` §8.1 lays it out, judged
/// without the decoder: versions and suites (a count of 1 to 16, two bytes each), the
/// client id (a length of 1 to 63, then its bytes), the keyrings offered (a count of 1 to
/// 2, a 32-byte fingerprint each, newest first), the nonce and the ephemeral share (32
/// bytes each), and nothing after.
#[allow(clippy::type_complexity)]
fn resume_hello_fields(data: &[u8]) -> Option<(Vec<u16>, Vec<u16>, &[u8], Vec<[u8; 32]>, &[u8], &[u8])> {
    let mut w = Walk { rest: data };
    let u16s = |items: Vec<&[u8]>| items.iter().map(|b| u16::from_be_bytes([b[0], b[1]])).collect::<Vec<u16>>();
    let versions = u16s(w.counted(1, MAX_OFFERS, 2)?);
    let suites = u16s(w.counted(1, MAX_OFFERS, 2)?);
    let len = usize::from(w.byte()?);
    if !(1..=MAX_CLIENT_ID_LEN).contains(&len) {
        return None;
    }
    let client_id = w.take(len)?;
    let keyrings = w.counted(1, MAX_OFFERED_KEYRINGS, 32)?;
    let keyrings = keyrings.iter().map(|k| <[u8; 32]>::try_from(*k).ok()).collect::<Option<Vec<_>>>()?;
    let (nonce, ephemeral) = (w.take(32)?, w.take(32)?);
    w.rest.is_empty().then_some((versions, suites, client_id, keyrings, nonce, ephemeral))
}

/// `ResumeHello` decoding: the decoder accepts exactly what the specification's walk
/// does ([`resume_hello_fields`]) and reads the same fields; a keyring count outside
/// 1..=2 is refused as such.
pub fn resume_hello(data: &[u8]) {
    let decoded = ResumeHello::decode(data);
    match (&decoded, resume_hello_fields(data)) {
        (Ok(m), Some((versions, suites, client_id, keyrings, nonce, ephemeral))) => {
            assert_eq!((&m.versions, &m.suites, &m.client_id[..]), (&versions, &suites, client_id));
            assert_eq!(m.keyrings, keyrings, "the keyrings offered differ from the specification's walk");
            assert_eq!((&m.nonce[..], &m.ephemeral[..]), (nonce, ephemeral));
        }
        (Err(_), None) => {}
        (Ok(m), None) => panic!("a ResumeHello the specification rules out decoded: {m:?} from {data:02x?}"),
        (Err(e), Some(_)) => panic!("a ResumeHello the specification allows was refused ({e}): {data:02x?}"),
    }
    if let Some(n) = keyring_count(data).filter(|n| !(1..=MAX_OFFERED_KEYRINGS).contains(n)) {
        let expected = if n == 0 {
            DecodeError::TooShort { field: "keyrings", len: 0, min: 1 }
        } else {
            DecodeError::TooLong { field: "keyrings", len: n, max: MAX_OFFERED_KEYRINGS }
        };
        assert_eq!(decoded, Err(expected), "a keyring count of {n} refused otherwise");
    }
    message::<ResumeHello>(data, HandshakeMessage::ResumeHello);
}

/// The keyring count of a `ResumeHello` body whose versions, suites and client id are
/// well formed (the byte after them), by the specification's walk.
fn keyring_count(data: &[u8]) -> Option<usize> {
    let mut w = Walk { rest: data };
    w.counted(1, MAX_OFFERS, 2)?;
    w.counted(1, MAX_OFFERS, 2)?;
    let len = usize::from(w.byte()?);
    if !(1..=MAX_CLIENT_ID_LEN).contains(&len) {
        return None;
    }
    w.take(len)?;
    w.byte().map(usize::from)
}

/// `ResumeChallenge` decoding against the specification (§8.2): version and suite (two
/// bytes each), the rotate flag (one byte, `0x00` or `0x01`; any other value is
/// malformed, as such), nonce, ephemeral share and MAC (32 bytes each), nothing after;
/// the signed part is the first 69 bytes.
pub fn resume_challenge(data: &[u8]) {
    let decoded = ResumeChallenge::decode(data);
    let rotate = data.get(4).copied();
    let spec_ok = data.len() == 2 + 2 + 1 + 32 + 32 + 32 && rotate.is_some_and(|r| r <= 1);
    match &decoded {
        Ok(m) => {
            assert!(spec_ok, "a ResumeChallenge the specification rules out decoded: {data:02x?}");
            assert_eq!(m.version.to_be_bytes(), data[..2]);
            assert_eq!(m.suite.to_be_bytes(), data[2..4]);
            assert_eq!(m.rotate, data[4] == 1, "the rotate flag misread");
            assert_eq!((&m.nonce[..], &m.ephemeral[..], &m.mac[..]), (&data[5..37], &data[37..69], &data[69..]));
            assert_eq!(m.signed_part(), data[..69], "the signed part is not version, suite, rotate, nonce, ephemeral");
        }
        Err(e) => {
            assert!(!spec_ok, "a ResumeChallenge the specification allows was refused ({e}): {data:02x?}");
            if rotate.is_some_and(|r| r > 1) {
                assert_eq!(*e, DecodeError::InvalidValue { field: "rotate" }, "a bad rotate byte refused otherwise");
            }
        }
    }
    message::<ResumeChallenge>(data, HandshakeMessage::ResumeChallenge);
}
/// `ResumeFinished` decoding.
pub fn resume_finished(data: &[u8]) {
    message::<ResumeFinished>(data, HandshakeMessage::ResumeFinished);
}
/// `ResumeTicket` decoding.
pub fn resume_ticket(data: &[u8]) {
    message::<ResumeTicket>(data, HandshakeMessage::ResumeTicket);
}
/// `Alert` decoding.
pub fn alert(data: &[u8]) {
    message::<AlertMessage>(data, HandshakeMessage::Alert);
}
