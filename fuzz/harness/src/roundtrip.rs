//! Round-trip properties driven by `arbitrary`: values are built from the fuzzer's
//! bytes (mostly within the protocol's limits, sometimes just outside), encoded with
//! the real encoders, and decoded back. Within the limits decode(encode(x)) == x;
//! outside them decoding refuses, so encoder, decoder and limits agree.

use arbitrary::{Result, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use boarding::channel::{Channel, ChannelError, FRAME_OVERHEAD, Received, Side};
use boarding::identity::{ClientId, MAX_CLIENT_ID_LEN};
use boarding::jws::{
    MAX_JWS_LEN, challenge_header, check_hs256_detached, eddsa_detached, hs256_detached, hs256_header,
    verify_eddsa_detached,
};
use boarding::keys::{SessionKeys, SymmetricKey};
use boarding::messages::{
    AlertMessage, ClientAuth, ClientFinished, ClientHello, HandshakeMessage, MAX_CHALLENGES, MAX_EVIDENCE,
    MAX_OFFERED_KEYRINGS, MAX_OFFERS, MAX_REQUEST, MAX_TICKET, Message, ResumeChallenge, ResumeFinished, ResumeHello,
    ResumeTicket, ServerChallenge, ServerFinished,
};
use boarding::pin::Pin;
use boarding::suite::MacSuite;
use boarding::token::{BootstrapToken, TokenId};

const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const JWS_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
const LABEL_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";

/// A length around `max`: usually within `min..=max`, sometimes one past either end.
fn length(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => min.saturating_sub(1),
        1 => max + 1,
        2 => max,
        _ => u.int_in_range(min..=max.min(min + 64))?,
    })
}

fn text_from(u: &mut Unstructured<'_>, alphabet: &[u8], len: usize) -> Result<Vec<u8>> {
    (0..len)
        .map(|_| {
            // Now and then a byte from outside the alphabet.
            if u.ratio(1u8, 64)? { u.arbitrary::<u8>() } else { Ok(*u.choose(alphabet)?) }
        })
        .collect()
}

fn token_id(u: &mut Unstructured<'_>) -> Result<TokenId> {
    let mut id = [0u8; 6];
    for b in &mut id {
        *b = *u.choose(TOKEN_ALPHABET)?;
    }
    Ok(TokenId::from_bytes(&id).unwrap_or_else(|e| panic!("{e}")))
}

fn u16_list(u: &mut Unstructured<'_>) -> Result<Vec<u16>> {
    let n = length(u, 1, MAX_OFFERS)?;
    (0..n).map(|_| u.arbitrary()).collect()
}

fn jws_text(u: &mut Unstructured<'_>) -> Result<String> {
    let len = length(u, 1, MAX_JWS_LEN)?;
    // Strings must be UTF-8: outside-alphabet bytes are folded into ASCII.
    Ok(text_from(u, JWS_ALPHABET, len)?.into_iter().map(|b| char::from(b & 0x7f)).collect())
}

fn bytes(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<Vec<u8>> {
    let n = length(u, min, max)?;
    (0..n).map(|_| u.arbitrary()).collect()
}

/// Whether a message is within every limit the decoders enforce.
pub fn within_limits(m: &HandshakeMessage) -> bool {
    let list_ok = |l: &[u16]| (1..=MAX_OFFERS).contains(&l.len());
    let jws_ok = |s: &str| {
        (1..=MAX_JWS_LEN).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let id_ok = |id: &[u8]| (1..=MAX_CLIENT_ID_LEN).contains(&id.len());
    match m {
        HandshakeMessage::ClientHello(h) => list_ok(&h.versions) && list_ok(&h.suites),
        HandshakeMessage::ServerChallenge(c) => {
            (1..=MAX_CHALLENGES).contains(&c.challenges.len()) && c.challenges.iter().all(|s| jws_ok(s))
        }
        HandshakeMessage::ClientAuth(a) => {
            id_ok(&a.client_id)
                && a.evidence.len() <= MAX_EVIDENCE
                && a.request.len() <= MAX_REQUEST
                && jws_ok(&a.proof)
        }
        HandshakeMessage::ServerFinished(f) => f.ticket.len() <= MAX_TICKET,
        HandshakeMessage::ResumeFinished(f) => f.request.len() <= MAX_REQUEST,
        HandshakeMessage::ResumeTicket(t) => t.ticket.len() <= MAX_TICKET,
        HandshakeMessage::ResumeHello(h) => {
            list_ok(&h.versions)
                && list_ok(&h.suites)
                && id_ok(&h.client_id)
                && (1..=MAX_OFFERED_KEYRINGS).contains(&h.keyrings.len())
        }
        _ => true,
    }
}

/// Up to 64 bytes from the fuzzer, or now and then a field of `fill` right at `max` or
/// one byte past it (so the limit itself is exercised).
fn limited_bytes(u: &mut Unstructured<'_>, max: usize, fill: u8) -> Result<Vec<u8>> {
    if u.ratio(1u8, 32)? { Ok(vec![fill; max + u.int_in_range(0..=1)?]) } else { bytes(u, 0, 64) }
}

/// Builds any handshake message from the fuzzer's bytes.
pub fn any_message(u: &mut Unstructured<'_>) -> Result<HandshakeMessage> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => HandshakeMessage::ClientHello(ClientHello {
            versions: u16_list(u)?,
            suites: u16_list(u)?,
            nonce: u.arbitrary()?,
            token_id: if u.arbitrary()? { Some(token_id(u)?) } else { None },
        }),
        1 => HandshakeMessage::ServerChallenge(ServerChallenge {
            version: u.arbitrary()?,
            suite: u.arbitrary()?,
            nonce: u.arbitrary()?,
            identity_key: u.arbitrary()?,
            ephemeral: u.arbitrary()?,
            challenges: {
                let n = length(u, 1, MAX_CHALLENGES)?;
                (0..n).map(|_| jws_text(u)).collect::<Result<_>>()?
            },
        }),
        2 => HandshakeMessage::ClientAuth(ClientAuth {
            token_id: token_id(u)?,
            client_id: bytes(u, 1, MAX_CLIENT_ID_LEN)?,
            ephemeral: u.arbitrary()?,
            evidence: if u.ratio(1u8, 32)? {
                vec![0xa5; MAX_EVIDENCE + u.int_in_range(0..=1)?]
            } else {
                bytes(u, 0, 64)?
            },
            request: limited_bytes(u, MAX_REQUEST, 0x3c)?,
            proof: jws_text(u)?,
        }),
        3 => HandshakeMessage::ServerFinished(ServerFinished {
            ticket: if u.ratio(1u8, 32)? { vec![0x5a; MAX_TICKET + u.int_in_range(0..=1)?] } else { bytes(u, 0, 64)? },
            mac: u.arbitrary()?,
        }),
        4 => HandshakeMessage::ClientFinished(ClientFinished { mac: u.arbitrary()? }),
        5 => HandshakeMessage::ResumeHello(ResumeHello {
            versions: u16_list(u)?,
            suites: u16_list(u)?,
            client_id: bytes(u, 1, MAX_CLIENT_ID_LEN)?,
            keyrings: {
                let n = length(u, 1, MAX_OFFERED_KEYRINGS)?;
                (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?
            },
            nonce: u.arbitrary()?,
            ephemeral: u.arbitrary()?,
        }),
        6 => HandshakeMessage::ResumeChallenge(ResumeChallenge {
            version: u.arbitrary()?,
            suite: u.arbitrary()?,
            rotate: u.arbitrary()?,
            nonce: u.arbitrary()?,
            ephemeral: u.arbitrary()?,
            mac: u.arbitrary()?,
        }),
        7 => HandshakeMessage::ResumeFinished(ResumeFinished {
            request: limited_bytes(u, MAX_REQUEST, 0x3c)?,
            mac: u.arbitrary()?,
        }),
        8 => HandshakeMessage::ResumeTicket(ResumeTicket {
            ticket: limited_bytes(u, MAX_TICKET, 0x5a)?,
            mac: u.arbitrary()?,
        }),
        _ => HandshakeMessage::Alert(AlertMessage { code: u.arbitrary()? }),
    })
}

fn body_of(m: &HandshakeMessage) -> Vec<u8> {
    match m {
        HandshakeMessage::ClientHello(x) => x.encode_body(),
        HandshakeMessage::ServerChallenge(x) => x.encode_body(),
        HandshakeMessage::ClientAuth(x) => x.encode_body(),
        HandshakeMessage::ServerFinished(x) => x.encode_body(),
        HandshakeMessage::ClientFinished(x) => x.encode_body(),
        HandshakeMessage::ResumeHello(x) => x.encode_body(),
        HandshakeMessage::ResumeChallenge(x) => x.encode_body(),
        HandshakeMessage::ResumeFinished(x) => x.encode_body(),
        HandshakeMessage::ResumeTicket(x) => x.encode_body(),
        HandshakeMessage::Alert(x) => x.encode_body(),
    }
}

/// decode(encode(m)) == m exactly when `m` is within the limits.
pub fn messages(u: &mut Unstructured<'_>) -> Result<()> {
    let message = any_message(u)?;
    let frame = message.to_frame();
    let decoded = HandshakeMessage::decode_frame(&frame);
    if within_limits(&message) {
        assert_eq!(decoded.as_ref(), Ok(&message), "a message within the limits did not round-trip");
        assert_eq!(&frame[5..], &body_of(&message)[..]);
    } else {
        assert!(decoded.is_err(), "a message outside the limits decoded: {message:?}");
    }
    Ok(())
}

/// Tokens, pins, JWS headers and signatures, and client ids round-trip.
pub fn text(u: &mut Unstructured<'_>) -> Result<()> {
    // Tokens.
    let id = token_id(u)?;
    let secret: String = (0..16).map(|_| u.choose(TOKEN_ALPHABET).map(|&b| char::from(b))).collect::<Result<_>>()?;
    let text = format!("{id}.{secret}");
    let token: BootstrapToken = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(token.to_string(), text);
    assert_eq!(token.id(), id);

    // Pins, in both accepted spellings and any prefix case.
    let pin = Pin::from_digest(u.arbitrary()?);
    let shown = pin.to_string();
    assert_eq!(shown.parse::<Pin>(), Ok(pin));
    assert_eq!(shown.to_uppercase().parse::<Pin>(), Ok(pin));
    assert_eq!(format!("sha256:{}", URL_SAFE_NO_PAD.encode(pin.as_bytes())).parse::<Pin>(), Ok(pin));
    assert_eq!(format!("Sha256:{}", URL_SAFE_NO_PAD.encode(pin.as_bytes())).parse::<Pin>(), Ok(pin));

    // The HS256 header is JSON naming exactly the kid, whatever it holds.
    let kid: String = u.arbitrary()?;
    let header = hs256_header(&kid);
    let value: serde_json::Value = serde_json::from_str(&header).unwrap_or_else(|e| panic!("{header:?}: {e}"));
    assert_eq!(value, serde_json::json!({"alg": "HS256", "kid": kid}), "{header:?}");
    let th: [u8; 32] = u.arbitrary()?;
    let value: serde_json::Value = serde_json::from_str(&challenge_header(id, &th)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value, serde_json::json!({"alg": "EdDSA", "kid": id.as_str(), "th": URL_SAFE_NO_PAD.encode(th)}));

    // Signatures verify exactly when they fit the length limit.
    let content: Vec<u8> = u.arbitrary()?;
    let key: Vec<u8> = u.arbitrary()?;
    let jws = hs256_detached(&content, &kid, &key);
    assert_eq!(check_hs256_detached(&jws, &content, &kid, &key).is_ok(), jws.len() <= MAX_JWS_LEN);
    let seed: [u8; 32] = u.arbitrary()?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let header: String = u.arbitrary()?;
    let jws = eddsa_detached(&header, &content, &signing);
    let verified = verify_eddsa_detached(&jws, &header, &content, &signing.verifying_key());
    assert_eq!(verified.is_ok(), jws.len() <= MAX_JWS_LEN, "{verified:?}");

    // Client ids: the parser and the byte validator agree, and valid ids round-trip.
    let len = length(u, 1, MAX_CLIENT_ID_LEN)?;
    let raw = text_from(u, LABEL_ALPHABET, len)?;
    let from_bytes = ClientId::from_bytes(&raw);
    if let Ok(s) = core::str::from_utf8(&raw) {
        assert_eq!(ClientId::new(s), from_bytes);
    }
    if let Ok(id) = from_bytes {
        assert_eq!(id.as_str().as_bytes(), &raw[..]);
        assert_eq!(id.to_string().parse::<ClientId>(), Ok(id));
    }
    Ok(())
}

/// Whatever one end of a channel seals, in order, the other end opens to the same
/// payload; `seal_in_place` writes exactly what `seal` writes; nothing follows a close.
pub fn channel(u: &mut Unstructured<'_>) -> Result<()> {
    let keys =
        SessionKeys { c2s: SymmetricKey::from_bytes(u.arbitrary()?), s2c: SymmetricKey::from_bytes(u.arbitrary()?) };
    let suite = if u.arbitrary()? { MacSuite::Blake3 } else { MacSuite::HmacSha256 };
    let mut client = Channel::new(Side::Client, suite, &keys);
    let mut server = Channel::new(Side::Server, suite, &keys);
    let mut buf = vec![0u8; 1024 + FRAME_OVERHEAD];
    while !u.is_empty() {
        let from_client: bool = u.arbitrary()?;
        let (sender, receiver) = if from_client { (&mut client, &mut server) } else { (&mut server, &mut client) };
        if u.ratio(1u8, 16)? {
            match sender.seal_close(&mut buf) {
                Ok(n) => assert_eq!(receiver.open(&buf[..n]), Ok(Received::Close)),
                Err(e) => assert_eq!(e, ChannelError::LocallyClosed),
            }
            continue;
        }
        let payload = bytes(u, 0, 1024)?;
        let mut twin = sender.clone();
        match sender.seal(&payload, &mut buf) {
            Ok(n) => {
                assert_eq!(n, payload.len() + FRAME_OVERHEAD);
                let mut in_place = vec![0u8; n];
                in_place[5..5 + payload.len()].copy_from_slice(&payload);
                assert_eq!(twin.seal_in_place(&mut in_place, payload.len()), Ok(n));
                assert_eq!(in_place, &buf[..n], "seal_in_place differs from seal");
                if receiver.peer_closed() {
                    assert_eq!(receiver.open(&buf[..n]), Err(ChannelError::AfterClose));
                } else {
                    assert_eq!(receiver.open(&buf[..n]), Ok(Received::Data(&payload[..])));
                }
            }
            Err(e) => assert!(
                matches!(e, ChannelError::LocallyClosed | ChannelError::BufferTooSmall { .. })
                    || receiver.failure().is_some(),
                "{e}"
            ),
        }
    }
    Ok(())
}
