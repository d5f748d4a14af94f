//! The agent fed arbitrary gateway bytes at every state it can be in. A real
//! handshake is driven to the state first (deterministically), then the fuzzer's
//! bytes arrive in fuzzer-chosen pieces.
//!
//! Asserted: errors are typed and final; everything the agent sends decodes; it
//! moves on only when the genuine gateway message is at the head of the stream (for
//! the challenge: the genuine signed fields and the genuine signature; the challenge
//! list itself is not authenticated until the gateway checks the agent's proof); it
//! always moves on when the genuine message is there; and bytes that arrive after the
//! handshake are handed to the channel untouched.

use boarding::channel::Received;
use boarding::client::ClientOutput;
use boarding::jws::{challenge_header_prefix, header_starts_with};
use boarding::messages::{HandshakeMessage, Message, ServerChallenge, peek_handshake_frame};

use super::fixtures::{Flow, Script, check_emitted, concat, recording};
use super::input::{Input, chunks};

/// The agent states the target reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStage {
    /// Join sent its hello; waits for the challenge.
    JoinExpectChallenge,
    /// Seed-flow join waits for the challenge.
    SeedExpectChallenge,
    /// Join sent its proof; waits for `ServerFinished`.
    JoinExpectServerFinished,
    /// Join verified the gateway; waits for the caller to persist the keyring.
    JoinAwaitPersist,
    /// Join complete.
    JoinEstablished,
    /// Resume sent its hello; waits for the challenge.
    ResumeExpectChallenge,
    /// Resume complete.
    ResumeEstablished,
}

impl ClientStage {
    /// Every stage, indexed by the target's first input byte.
    pub const ALL: [ClientStage; 7] = [
        Self::JoinExpectChallenge,
        Self::SeedExpectChallenge,
        Self::JoinExpectServerFinished,
        Self::JoinAwaitPersist,
        Self::JoinEstablished,
        Self::ResumeExpectChallenge,
        Self::ResumeEstablished,
    ];

    /// The flow the stage belongs to.
    pub fn flow(self) -> Flow {
        match self {
            Self::SeedExpectChallenge => Flow::Seed,
            Self::ResumeExpectChallenge | Self::ResumeEstablished => Flow::Resume,
            _ => Flow::Join,
        }
    }

    /// Drives an honest exchange to this stage.
    pub fn build(self) -> Script {
        let mut s = Script::new(self.flow());
        match self {
            Self::JoinExpectChallenge | Self::SeedExpectChallenge | Self::ResumeExpectChallenge => {}
            Self::JoinExpectServerFinished => {
                s.hop_to_server();
                s.hop_to_client();
            }
            Self::JoinAwaitPersist => {
                s.hop_to_server();
                s.hop_to_client();
                s.hop_to_server();
                s.hop_to_client();
            }
            Self::JoinEstablished | Self::ResumeEstablished => s.run_honest(),
        }
        s
    }

    /// The gateway message the agent waits for here, if it waits for one.
    pub fn genuine_next(self) -> Option<&'static [u8]> {
        let rec = recording(self.flow());
        let index = match self {
            Self::JoinExpectChallenge | Self::SeedExpectChallenge | Self::ResumeExpectChallenge => 0,
            Self::JoinExpectServerFinished => 1,
            _ => return None,
        };
        Some(&rec.server_sent[index])
    }
}

/// The target. Input: stage byte, fragmentation byte, then the gateway's bytes.
pub fn client_states(data: &[u8]) {
    let mut input = Input::new(data);
    let stage = ClientStage::ALL[input.below(ClientStage::ALL.len())];
    let chunk = input.byte();
    let stream = input.rest();
    let mut script = stage.build();
    let established_before = script.client.is_established();
    let rec = recording(stage.flow());

    let mut first_error = None;
    for piece in chunks(stream, chunk) {
        let result = script.client.handle_input(piece);
        match (&first_error, result) {
            (None, Err(e)) => first_error = Some(e),
            (Some(e), result) => assert_eq!(result, Err(e.clone()), "the agent's error did not stick"),
            (None, Ok(())) => {}
        }
    }
    if let Some(e) = &first_error {
        assert_eq!(script.client.failure(), Some(e));
        assert!(!script.client.is_established());
    }

    // What the agent did with the bytes.
    let (mut sent, mut persisted, mut alerts) = (Vec::new(), None, 0);
    while let Some(out) = script.client.poll_output() {
        match out {
            ClientOutput::Transmit(frame) => {
                if let HandshakeMessage::Alert(_) = check_emitted(&frame) {
                    alerts += 1;
                }
                sent.push(frame);
            }
            ClientOutput::PersistKeyring(saved) => persisted = Some(saved),
            ClientOutput::Established(_) => {}
        }
    }
    assert!(alerts <= 1, "the agent sent {alerts} alerts");
    let head_is_genuine = stage.genuine_next().is_some_and(|g| stream.starts_with(g));

    match stage {
        ClientStage::JoinExpectChallenge | ClientStage::SeedExpectChallenge => {
            let advanced = sent.iter().any(|f| matches!(check_emitted(f), HandshakeMessage::ClientAuth(_)));
            if advanced {
                let frame = peek_handshake_frame(stream).ok().flatten().unwrap_or_else(|| panic!("no frame consumed"));
                let got = ServerChallenge::decode(frame.body).unwrap_or_else(|e| panic!("accepted undecodable: {e}"));
                let genuine = match HandshakeMessage::decode_frame(&rec.server_sent[0]) {
                    Ok(HandshakeMessage::ServerChallenge(m)) => m,
                    other => panic!("recorded challenge: {other:?}"),
                };
                assert_eq!(got.signed_part(), genuine.signed_part(), "accepted a challenge with forged fields");
                let prefix = challenge_header_prefix(script.token.id());
                let genuine_jws = genuine.challenges.iter().find(|c| header_starts_with(c, &prefix));
                let used = got.challenges.iter().find(|c| header_starts_with(c, &prefix));
                assert_eq!(used, genuine_jws, "accepted a challenge signature the gateway did not make");
                if frame.bytes == rec.server_sent[0] {
                    assert_eq!(sent.first(), Some(&rec.client_sent[1]), "the proof differs from the honest one");
                }
            }
            if head_is_genuine {
                assert!(advanced, "the genuine challenge was refused");
            }
            if let Some(saved) = &persisted {
                // Two messages accepted: both must be exactly the gateway's.
                assert!(stream.starts_with(&concat(&rec.server_sent[..2])), "accepted a forged join");
                assert_eq!(Some(saved), rec.saved.as_ref());
            }
        }
        ClientStage::JoinExpectServerFinished => {
            if let Some(saved) = &persisted {
                assert!(head_is_genuine, "accepted a ServerFinished the gateway did not send");
                assert_eq!(Some(saved), rec.saved.as_ref(), "persisted a keyring other than the honest one");
            }
            if head_is_genuine {
                assert!(persisted.is_some(), "the genuine ServerFinished was refused");
            }
        }
        ClientStage::ResumeExpectChallenge => {
            let advanced = script.client.is_established();
            if advanced {
                assert!(head_is_genuine, "accepted a ResumeChallenge the gateway did not send");
                assert_eq!(sent.first(), Some(&rec.client_sent[1]));
            }
            if head_is_genuine {
                assert!(advanced, "the genuine ResumeChallenge was refused");
            }
        }
        ClientStage::JoinAwaitPersist => {
            assert!(sent.is_empty() && persisted.is_none(), "the agent acted on input while awaiting persist");
            script.persist();
            assert!(script.client.is_established(), "persisting did not complete the join");
            assert_eq!(script.client_sent.last(), Some(&rec.client_sent[2]));
            check_buffered(script, stream);
        }
        ClientStage::JoinEstablished | ClientStage::ResumeEstablished => {
            assert!(established_before && sent.is_empty());
            check_buffered(script, stream);
        }
    }
}

/// After the handshake, the agent hands every later byte to the channel, and its
/// channel talks to the gateway's.
fn check_buffered(mut script: Script, stream: &[u8]) {
    script.hop_to_server();
    let Script { client, server, .. } = script;
    let mut client = client.into_session().unwrap_or_else(|e| panic!("no session: {e}"));
    assert_eq!(client.buffered, stream, "bytes after the handshake were not kept for the channel");
    let mut server = server.into_session().unwrap_or_else(|e| panic!("no gateway session: {e}"));
    let mut buf = [0u8; 64];
    let n = server.channel.seal(b"ping", &mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(client.channel.open(&buf[..n]), Ok(Received::Data(&b"ping"[..])));
}
