//! Round trips and robustness of every encoding the protocol defines: handshake
//! messages and frames, bootstrap tokens, pins, client ids and detached JWS.
//!
//! * decode(encode(x)) == x for every message (body and whole frame) and
//!   parse(display(x)) == x for tokens, token ids, pins and client ids;
//! * decoders are canonical: whatever decodes re-encodes to the same bytes;
//! * arbitrary bytes and mutated valid encodings never panic any decoder, nor the
//!   client and gateway state machines;
//! * a resume challenge's rotate byte is `0x00` or `0x01`, a resume hello offers one or two
//!   keyrings: anything else is refused;
//! * token, pin and client-id validity agree with independent regex predicates;
//! * JWS sign/verify round trips, and any change to content, key, kid or the compact
//!   form is rejected.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use boarding::channel::Channel;
use boarding::client::Client;
use boarding::codec::DecodeError;
use boarding::identity::ClientId;
use boarding::jws::{
    DetachedJws, JwsError, check_hs256_detached, eddsa_detached, hs256_detached, verify_eddsa_detached,
    verify_hs256_detached,
};
use boarding::messages::{
    AlertMessage, ClientAuth, ClientFinished, ClientHello, FrameType, HandshakeMessage, MAX_OFFERED_KEYRINGS,
    MAX_OFFERS, Message, ResumeChallenge, ResumeFinished, ResumeHello, ResumeTicket, ServerChallenge, ServerFinished,
    encode_frame, peek_handshake_frame,
};
use boarding::pin::Pin;
use boarding::server::Server;
use boarding::token::{BootstrapToken, TokenId};
use boarding_memory::World;
use boarding_proptests::*;
use ed25519_dalek::SigningKey;
use proptest::collection::vec;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use regex::Regex;

/// Checks decode(encode(m)) == m for one message type, body and frame.
fn round_trip<M: Message + PartialEq + Clone + std::fmt::Debug>(
    m: &M,
    wrap: fn(M) -> HandshakeMessage,
) -> Result<(), TestCaseError> {
    let body = m.encode_body();
    prop_assert_eq!(&M::decode(&body).map_err(|e| TestCaseError::fail(e.to_string()))?, m);
    let frame = m.to_frame();
    prop_assert_eq!(frame.first().copied(), Some(M::TYPE as u8));
    prop_assert_eq!(HandshakeMessage::decode_frame(&frame), Ok(wrap(m.clone())));
    // The signed part is a prefix of the body: the proof comes last.
    prop_assert!(body.starts_with(&m.signed_part()));
    Ok(())
}

/// Every decoder in the crate, fed the same bytes; none may panic. Decoded frames
/// must re-encode to exactly the input (the encoding is canonical).
fn decode_everything(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = HandshakeMessage::decode_frame(bytes) {
        prop_assert_eq!(m.to_frame(), bytes.to_vec(), "a decoded frame re-encodes differently");
    }
    let _ = peek_handshake_frame(bytes);
    let _ = Channel::frame_len(bytes);
    if let Some((&t, body)) = bytes.split_first()
        && let Ok(frame_type) = FrameType::from_byte(t)
        && let Ok(m) = HandshakeMessage::decode(frame_type, body)
    {
        prop_assert_eq!(m.to_frame(), encode_frame(frame_type, body));
    }
    macro_rules! canonical {
        ($($ty:ty),*) => {$(
            if let Ok(m) = <$ty>::decode(bytes) {
                prop_assert_eq!(m.encode_body(), bytes.to_vec(), "{} is not canonical", stringify!($ty));
            }
        )*};
    }
    canonical!(
        ClientHello,
        ServerChallenge,
        ClientAuth,
        ServerFinished,
        ClientFinished,
        ResumeHello,
        ResumeChallenge,
        ResumeFinished,
        ResumeTicket,
        AlertMessage
    );
    let text = String::from_utf8_lossy(bytes);
    let _ = text.parse::<BootstrapToken>();
    let _ = text.parse::<TokenId>();
    let _ = text.parse::<Pin>();
    let _ = TokenId::from_bytes(bytes);
    let _ = ClientId::from_bytes(bytes);
    let _ = DetachedJws::parse(&text);
    let _ = check_hs256_detached(&text, bytes, "abcdef", bytes);
    let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
    let _ = verify_eddsa_detached(&text, "{\"alg\":\"EdDSA\"}", bytes, &key);
    Ok(())
}

/// A valid encoding with one mutation applied: a flipped bit, a truncation, an
/// inserted byte or an overwritten length-ish byte. Reaches far deeper into the
/// decoders than uniformly random bytes do.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (handshake_message(), any::<prop::sample::Index>(), any::<u8>(), 0u8..4).prop_map(|(m, at, byte, op)| {
        let mut frame = m.to_frame();
        let i = at.index(frame.len());
        match op {
            0 => frame[i] ^= 1 << (byte % 8),
            1 => frame.truncate(i),
            2 => frame.insert(i, byte),
            _ => frame[i] = byte,
        }
        frame
    })
}

proptest! {
    #![proptest_config(config(1024, 16))]

    #[test]
    fn every_message_round_trips(m in handshake_message()) {
        match &m {
            HandshakeMessage::ClientHello(x) => round_trip(x, HandshakeMessage::ClientHello)?,
            HandshakeMessage::ServerChallenge(x) => round_trip(x, HandshakeMessage::ServerChallenge)?,
            HandshakeMessage::ClientAuth(x) => round_trip(x, HandshakeMessage::ClientAuth)?,
            HandshakeMessage::ServerFinished(x) => round_trip(x, HandshakeMessage::ServerFinished)?,
            HandshakeMessage::ClientFinished(x) => round_trip(x, HandshakeMessage::ClientFinished)?,
            HandshakeMessage::ResumeHello(x) => round_trip(x, HandshakeMessage::ResumeHello)?,
            HandshakeMessage::ResumeChallenge(x) => round_trip(x, HandshakeMessage::ResumeChallenge)?,
            HandshakeMessage::ResumeFinished(x) => round_trip(x, HandshakeMessage::ResumeFinished)?,
            HandshakeMessage::ResumeTicket(x) => round_trip(x, HandshakeMessage::ResumeTicket)?,
            HandshakeMessage::Alert(x) => round_trip(x, HandshakeMessage::Alert)?,
        }
        let frame = m.to_frame();
        prop_assert_eq!(HandshakeMessage::decode_frame(&frame), Ok(m.clone()));
        // The frame header announces exactly the body.
        let raw = peek_handshake_frame(&frame).ok().flatten().ok_or_else(|| TestCaseError::fail("no frame"))?;
        prop_assert_eq!(raw.bytes.len(), frame.len());
        // A strict prefix is incomplete or malformed, never a different message.
        for cut in [0, 1, 4, 5, frame.len() / 2, frame.len() - 1] {
            prop_assert!(HandshakeMessage::decode_frame(&frame[..cut]).is_err());
        }
        // One trailing byte is refused.
        let mut long = frame.clone();
        long.push(0);
        prop_assert!(HandshakeMessage::decode_frame(&long).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in vec(any::<u8>(), 0..600)) {
        decode_everything(&bytes)?;
    }

    #[test]
    fn mutated_frames_never_panic_and_stay_canonical(frame in mutated_frame()) {
        decode_everything(&frame)?;
        if frame.len() > 5 {
            decode_everything(&frame[5..])?;
        }
    }

    #[test]
    fn over_long_lists_are_refused_before_reading(count in (MAX_OFFERS as u8 + 1)..=u8::MAX, fill in any::<u8>()) {
        // A hello announcing more offers than allowed, with all the bytes present.
        let mut body = vec![count];
        body.extend(std::iter::repeat_n(fill, usize::from(count) * 2 + 200));
        prop_assert!(ClientHello::decode(&body).is_err());
        prop_assert!(ResumeHello::decode(&body).is_err());
    }

    #[test]
    fn a_rotate_byte_other_than_0_or_1_is_refused(m in resume_challenge(), byte in 2u8..) {
        // The flag follows the version and the suite; everything else stays valid.
        let mut body = m.encode_body();
        body[4] = byte;
        prop_assert_eq!(ResumeChallenge::decode(&body), Err(DecodeError::InvalidValue { field: "rotate" }));
    }

    #[test]
    fn a_resume_hello_offers_one_or_two_keyrings(m in resume_hello(), n in 0usize..=8) {
        let mut m = m;
        m.keyrings = vec![[0x6b; 32]; n];
        let decoded = ResumeHello::decode(&m.encode_body());
        prop_assert_eq!(decoded.is_ok(), (1..=MAX_OFFERED_KEYRINGS).contains(&n), "{} keyrings: {:?}", n, decoded);
    }

    #[test]
    fn state_machines_never_panic_on_arbitrary_input(seed in any::<u64>(), chunks in vec(vec(any::<u8>(), 0..200), 1..4)) {
        let world = World::new(seed);
        let token = world.issue_token(None, 0);
        let mut client = Client::join(world.join_config("node", &token), &mut world.rng());
        let mut server = Server::new(world.config.clone(), &mut world.rng());
        for chunk in &chunks {
            let _ = client.handle_input(chunk);
            let _ = server.handle_input(world.now, chunk);
            while client.poll_output().is_some() {}
            while server.poll_output().is_some() {}
        }
        prop_assert!(!client.is_established() && !server.is_established());
    }

    #[test]
    fn state_machines_never_panic_on_mutated_frames(seed in any::<u64>(), frames in vec(mutated_frame(), 1..4)) {
        let world = World::new(seed);
        let token = world.issue_token(None, 0);
        let mut client = Client::join(world.join_config("node", &token), &mut world.rng());
        let mut server = Server::new(world.config.clone(), &mut world.rng());
        for frame in &frames {
            let _ = client.handle_input(frame);
            let _ = server.handle_input(world.now, frame);
            while client.poll_output().is_some() {}
            while server.poll_output().is_some() {}
        }
        prop_assert!(!client.is_established() && !server.is_established());
    }
}

// ---------------------------------------------------------------------------------
// Tokens, token ids and client ids against regex reference predicates.

/// The kubeadm token grammar, written independently of the parser.
fn token_reference() -> Regex {
    Regex::new(r"\A[a-z0-9]{6}\.[a-z0-9]{16}\z").unwrap_or_else(|e| panic!("{e}"))
}

/// A DNS label, the client id grammar.
fn client_id_reference() -> Regex {
    Regex::new(r"\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\z").unwrap_or_else(|e| panic!("{e}"))
}

/// The pin grammar: `sha256:` in any case, then 64 hex digits in any case or the 43
/// characters of unpadded base64url of 32 bytes (whose last character carries two
/// zero padding bits, so it is one of 16).
fn pin_reference() -> Regex {
    Regex::new(r"\A(?i:sha256):(?:[0-9A-Fa-f]{64}|[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048])\z")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Strings near the token grammar: valid tokens with one edit, the right shape with
/// characters from a wider alphabet, and anything printable.
fn token_like() -> impl Strategy<Value = String> {
    let edit = (
        "[a-z0-9]{6}\\.[a-z0-9]{16}",
        any::<prop::sample::Index>(),
        prop::sample::select(vec!['a', '0', 'A', 'Z', '.', '-', '_', ' ', '\n', 'é', '\u{0}', 'ſ', 'K']),
        0u8..3,
    )
        .prop_map(|(s, at, c, op)| {
            let mut chars: Vec<char> = s.chars().collect();
            let i = at.index(chars.len());
            match op {
                0 => chars[i] = c,
                1 => chars.insert(i, c),
                _ => {
                    chars.remove(i);
                }
            }
            chars.into_iter().collect()
        });
    prop_oneof![
        2 => "[a-z0-9]{6}\\.[a-z0-9]{16}",
        4 => edit,
        2 => "[a-zA-Z0-9._:-]{5,7}[.:][a-zA-Z0-9._-]{15,17}",
        1 => "\\PC{0,30}",
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(2048, 16))]

    #[test]
    fn token_validity_agrees_with_the_regex_reference(s in token_like()) {
        let reference = token_reference().is_match(&s);
        prop_assert_eq!(BootstrapToken::is_valid(&s), reference, "{:?}", s);
        prop_assert_eq!(s.parse::<BootstrapToken>().is_ok(), reference);
        if let Ok(token) = s.parse::<BootstrapToken>() {
            prop_assert_eq!(token.to_string(), s.clone());
            prop_assert_eq!(token.id().to_string(), &s[..6]);
        }
    }

    #[test]
    fn tokens_and_ids_round_trip(token in bootstrap_token()) {
        let text = token.to_string();
        prop_assert!(token_reference().is_match(&text));
        prop_assert_eq!(text.parse::<BootstrapToken>().ok(), Some(token.clone()));
        prop_assert_eq!(token.id().to_string().parse::<TokenId>().ok(), Some(token.id()));
        prop_assert_eq!(TokenId::from_bytes(token.id().as_bytes()).ok(), Some(token.id()));
        // Debug never shows the secret.
        let secret = &text[7..];
        let shown = format!("{token:?}");
        prop_assert!(!shown.contains(secret));
    }

    #[test]
    fn generated_tokens_are_valid(seed in any::<u64>()) {
        let token = BootstrapToken::generate(&mut ChaCha20Rng::seed_from_u64(seed));
        prop_assert!(token_reference().is_match(&token.to_string()));
    }

    #[test]
    fn client_id_validity_agrees_with_the_regex_reference(
        s in prop_oneof!["[a-z0-9-]{0,66}", "[a-zA-Z0-9_.-]{1,8}", "\\PC{0,8}"],
    ) {
        let reference = client_id_reference().is_match(&s) && s.len() <= 63;
        prop_assert_eq!(ClientId::new(&s).is_ok(), reference, "{:?}", s);
        prop_assert_eq!(ClientId::from_bytes(s.as_bytes()).is_ok(), reference);
        if let Ok(id) = s.parse::<ClientId>() {
            prop_assert_eq!(id.to_string(), s.clone());
        }
    }

    #[test]
    fn pins_round_trip_in_every_accepted_form(digest in any::<[u8; 32]>(), upper_prefix in any::<bool>()) {
        let pin = Pin::from_digest(digest);
        let shown = pin.to_string();
        let display_form = Regex::new(r"\Asha256:[0-9a-f]{64}\z").unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(display_form.is_match(&shown));
        prop_assert_eq!(shown.parse::<Pin>(), Ok(pin));
        let prefix = if upper_prefix { "SHA256:" } else { "sha256:" };
        let hex_upper = format!("{prefix}{}", shown[7..].to_uppercase());
        prop_assert_eq!(hex_upper.parse::<Pin>(), Ok(pin));
        let b64 = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(digest));
        prop_assert!(pin_reference().is_match(&b64));
        prop_assert_eq!(b64.parse::<Pin>(), Ok(pin));
        prop_assert!(pin.matches_any(&[Pin::from_digest([0; 32]), pin]) && !pin.matches_any(&[]));
    }

    #[test]
    fn pin_validity_agrees_with_the_regex_reference(
        s in prop_oneof![
            "(sha256|SHA256|Sha256|sha-256|md5):[0-9a-fA-F]{63,65}",
            "(sha256|SHA256):[A-Za-z0-9_=+/-]{42,44}",
            "(sha256|SHA256):[0-9a-gA-G]{64}",
            "\\PC{0,72}",
        ],
    ) {
        prop_assert_eq!(s.parse::<Pin>().is_ok(), pin_reference().is_match(&s), "{:?}", s);
    }
}

// ---------------------------------------------------------------------------------
// Detached JWS.

/// Every single-character change of a compact JWS string (to another base64url
/// character, `.` or `=`).
fn one_char_changes(jws: &str, at: usize, to: char) -> Option<String> {
    let mut chars: Vec<char> = jws.chars().collect();
    let slot = chars.get_mut(at % jws.len())?;
    if *slot == to {
        return None;
    }
    *slot = to;
    Some(chars.into_iter().collect())
}

proptest! {
    #![proptest_config(config(1024, 16))]

    #[test]
    fn hs256_round_trips_and_rejects_every_change(
        token in bootstrap_token(),
        content in vec(any::<u8>(), 0..80),
        other in vec(any::<u8>(), 0..80),
        at in any::<usize>(),
        to in prop::sample::select("AZaz09-_.=".chars().collect::<Vec<_>>()),
    ) {
        let (kid, key) = (token.id().to_string(), token.secret().expose().to_vec());
        let jws = hs256_detached(&content, &kid, &key);
        prop_assert!(verify_hs256_detached(&jws, &content, &kid, &key));
        // parse(display(x)) == x: the compact form rebuilds from its parts.
        let parsed = DetachedJws::parse(&jws).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(format!("{}..{}", parsed.header_b64, URL_SAFE_NO_PAD.encode(&parsed.signature)), jws.clone());
        prop_assert_eq!(parsed.signature.len(), 32);
        // The header is kubeadm's, byte for byte.
        let header = URL_SAFE_NO_PAD.decode(parsed.header_b64).unwrap_or_default();
        prop_assert_eq!(header, format!("{{\"alg\":\"HS256\",\"kid\":\"{kid}\"}}").into_bytes());
        if other != content {
            prop_assert!(!verify_hs256_detached(&jws, &other, &kid, &key));
        }
        let mut wrong_key = key.clone();
        wrong_key[at % key.len()] ^= 1;
        prop_assert!(!verify_hs256_detached(&jws, &content, &kid, &wrong_key));
        prop_assert!(!verify_hs256_detached(&jws, &content, "zzzzzy", &key) || kid == "zzzzzy");
        if let Some(changed) = one_char_changes(&jws, at, to) {
            prop_assert!(!verify_hs256_detached(&changed, &content, &kid, &key), "{} accepted", changed);
        }
    }

    #[test]
    fn eddsa_round_trips_and_rejects_every_change(
        seed in any::<[u8; 32]>(),
        payload in vec(any::<u8>(), 0..80),
        other in vec(any::<u8>(), 0..80),
        transcript in any::<[u8; 32]>(),
        kid in token_id(),
        at in any::<usize>(),
        to in prop::sample::select("AZaz09-_.=".chars().collect::<Vec<_>>()),
    ) {
        let key = SigningKey::from_bytes(&seed);
        let header = boarding::jws::challenge_header(kid, &transcript);
        let jws = eddsa_detached(&header, &payload, &key);
        let vk = key.verifying_key();
        prop_assert_eq!(verify_eddsa_detached(&jws, &header, &payload, &vk), Ok(()));
        let parsed = DetachedJws::parse(&jws).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(format!("{}..{}", parsed.header_b64, URL_SAFE_NO_PAD.encode(&parsed.signature)), jws.clone());
        prop_assert!(boarding::jws::header_starts_with(&jws, &boarding::jws::challenge_header_prefix(kid)));
        if other != payload {
            prop_assert_eq!(verify_eddsa_detached(&jws, &header, &other, &vk), Err(JwsError::BadSignature));
        }
        let mut other_transcript = transcript;
        other_transcript[at % 32] ^= 0x80;
        let other_header = boarding::jws::challenge_header(kid, &other_transcript);
        prop_assert_eq!(verify_eddsa_detached(&jws, &other_header, &payload, &vk), Err(JwsError::UnexpectedHeader));
        if let Some(changed) = one_char_changes(&jws, at, to) {
            prop_assert!(verify_eddsa_detached(&changed, &header, &payload, &vk).is_err(), "{} accepted", changed);
        }
    }
}
