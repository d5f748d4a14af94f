//! The gateway fed arbitrary client bytes at every state it can be in, with its
//! storage requests answered by a real in-memory store.
//!
//! Asserted: errors are typed and final; everything the gateway sends decodes; it
//! redeems a token only after the genuine hello and proof, confirms a keyring or
//! reports a verified client only after the genuine complete exchange (for the decoy
//! resume: never); it always completes when the genuine exchange is there; the one-use
//! token is charged at most once and binds at most one client id; bytes after the
//! handshake are handed to the channel untouched.

use boarding::channel::Received;
use boarding::identity::ClientId;
use boarding::messages::HandshakeMessage;
use boarding::server::ServerOutput;
use boarding::storage::StorageRequest;

use super::fixtures::{CLIENT_ID, Flow, Script, check_emitted, concat, recording};
use super::input::{Input, chunks};

/// The gateway states the target reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStage {
    /// Nothing received yet.
    ExpectHello,
    /// Challenge sent (token named); waits for `ClientAuth`.
    JoinExpectClientAuth,
    /// Challenge sent (seed flow); waits for `ClientAuth`.
    SeedExpectClientAuth,
    /// `ClientAuth` accepted; the redemption is pending in storage while bytes arrive.
    JoinAwaitRedeem,
    /// `ServerFinished` sent; waits for `ClientFinished`.
    JoinExpectClientFinished,
    /// Join complete.
    JoinEstablished,
    /// Resume challenge sent; waits for `ResumeFinished`.
    ResumeExpectFinished,
    /// Decoy resume challenge sent to an unknown client id.
    ResumeUnknownExpectFinished,
    /// Resume complete.
    ResumeEstablished,
}

impl ServerStage {
    /// Every stage, indexed by the target's first input byte.
    pub const ALL: [ServerStage; 9] = [
        Self::ExpectHello,
        Self::JoinExpectClientAuth,
        Self::SeedExpectClientAuth,
        Self::JoinAwaitRedeem,
        Self::JoinExpectClientFinished,
        Self::JoinEstablished,
        Self::ResumeExpectFinished,
        Self::ResumeUnknownExpectFinished,
        Self::ResumeEstablished,
    ];

    /// The flow the stage belongs to.
    pub fn flow(self) -> Flow {
        match self {
            Self::SeedExpectClientAuth => Flow::Seed,
            Self::ResumeExpectFinished | Self::ResumeEstablished => Flow::Resume,
            Self::ResumeUnknownExpectFinished => Flow::ResumeUnknown,
            _ => Flow::Join,
        }
    }

    /// Drives an honest exchange to this stage.
    pub fn build(self) -> Script {
        let mut s = Script::new(self.flow());
        match self {
            Self::ExpectHello => {}
            Self::JoinExpectClientAuth
            | Self::SeedExpectClientAuth
            | Self::ResumeExpectFinished
            | Self::ResumeUnknownExpectFinished => s.hop_to_server(),
            Self::JoinAwaitRedeem => {
                s.hop_to_server();
                s.hop_to_client();
                s.deliver_to_server();
                s.server_flush(true);
            }
            Self::JoinExpectClientFinished => {
                s.hop_to_server();
                s.hop_to_client();
                s.hop_to_server();
            }
            Self::JoinEstablished | Self::ResumeEstablished => s.run_honest(),
        }
        s
    }
}

/// The target. Input: stage byte, fragmentation byte, then the client's bytes.
pub fn server_states(data: &[u8]) {
    let mut input = Input::new(data);
    let stage = ServerStage::ALL[input.below(ServerStage::ALL.len())];
    let chunk = input.byte();
    let stream = input.rest();
    let mut script = stage.build();
    let established_before = script.server.is_established();
    let prefix = script.server_got.clone();

    let mut first_error = None;
    let (mut sent, mut requests, mut verified) = (Vec::new(), Vec::new(), Vec::new());
    let mut step = |script: &mut Script, result: Result<(), boarding::Error>| {
        match (&first_error, result) {
            (None, Err(e)) => first_error = Some(e),
            (Some(e), result) => assert_eq!(result, Err(e.clone()), "the gateway's error did not stick"),
            (None, Ok(())) => {}
        }
        while let Some(out) = script.server.poll_output() {
            match out {
                ServerOutput::Transmit(frame) => sent.push(frame),
                ServerOutput::Storage(request) if script.held.is_some() => {
                    panic!("a second storage request while one is pending: {request:?}");
                }
                ServerOutput::Storage(request) => {
                    requests.push(request.clone());
                    let answer = script.world.store.answer(&request);
                    let result = script.server.handle_storage(answer);
                    if let (None, Err(e)) = (&first_error, result) {
                        first_error = Some(e);
                    }
                }
                ServerOutput::Established(peer) => verified.push(peer),
            }
        }
    };
    for piece in chunks(stream, chunk) {
        let result = script.server.handle_input(script.world.now, piece);
        step(&mut script, result);
    }
    if let Some(request) = script.held.take() {
        let answer = script.world.store.answer(&request);
        let result = script.server.handle_storage(answer);
        step(&mut script, result);
    }
    if let Some(e) = &first_error {
        assert_eq!(script.server.failure(), Some(e));
        assert!(!script.server.is_established());
    }

    let alerts = sent.iter().filter(|f| matches!(check_emitted(f), HandshakeMessage::Alert(_))).count();
    assert!(alerts <= 1, "the gateway sent {alerts} alerts");

    // Everything the gateway consumed, from its first byte.
    let mut got = prefix;
    got.extend_from_slice(stream);
    let join = recording(Flow::Join);
    let seed = recording(Flow::Seed);
    let genuine_join = [&join.client_sent[..], &seed.client_sent[..]];
    let starts = |frames: &[Vec<u8>]| got.starts_with(&concat(frames));
    for request in &requests {
        if let StorageRequest::Redeem(r) = request {
            assert!(
                genuine_join.iter().any(|frames| starts(&frames[..2])),
                "redeemed without the genuine hello and proof"
            );
            assert_eq!(r.client_id.as_str(), CLIENT_ID);
            assert_eq!(r.token_id, script.token.id());
        }
    }
    let resume = recording(Flow::Resume);
    for peer in &verified {
        assert!(!established_before);
        let genuine = match stage.flow() {
            Flow::Join | Flow::Seed => genuine_join.iter().any(|frames| starts(&frames[..3])),
            Flow::Resume => starts(&resume.client_sent[..2]),
            Flow::ResumeUnknown => false,
        };
        assert!(genuine, "verified a client without the genuine exchange: {peer:?}");
        assert_eq!(peer.client_id().as_str(), CLIENT_ID);
        assert_eq!(peer.token_id(), script.token.id());
        assert_eq!(peer.resumed(), stage.flow() == Flow::Resume);
    }

    // Liveness: the genuine exchange always completes, however it is fragmented.
    let complete = match stage.flow() {
        Flow::Join | Flow::Seed => genuine_join.iter().any(|frames| starts(&frames[..3])),
        Flow::Resume => starts(&resume.client_sent[..2]),
        Flow::ResumeUnknown => false,
    };
    if complete && !established_before {
        assert!(script.server.is_established(), "the genuine exchange did not complete: {first_error:?}");
    }

    // The store: one token use at most, one client id at most, confirmed only by a
    // completed exchange.
    let snapshot = script.world.store.snapshot();
    let token = &snapshot.tokens[&script.token.id()];
    assert!(token.use_count <= 1, "a one-use token was charged {} times", token.use_count);
    assert!(snapshot.keyrings.len() <= 1);
    let id = ClientId::new(CLIENT_ID).unwrap_or_else(|e| panic!("{e}"));
    if let Some(record) = snapshot.keyrings.get(&id) {
        assert_eq!(token.use_count, 1);
        if record.confirmed {
            let joining = matches!(stage.flow(), Flow::Join | Flow::Seed);
            assert!(!joining || script.server.is_established() || established_before, "confirmed without a join");
        }
    }

    if established_before {
        assert!(sent.is_empty() && requests.is_empty());
        let Script { client, server, .. } = script;
        let mut server = server.into_session().unwrap_or_else(|e| panic!("no session: {e}"));
        assert_eq!(server.buffered, stream, "bytes after the handshake were not kept for the channel");
        let mut client = client.into_session().unwrap_or_else(|e| panic!("no agent session: {e}"));
        let mut buf = [0u8; 64];
        let n = client.channel.seal(b"ping", &mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.channel.open(&buf[..n]), Ok(Received::Data(&b"ping"[..])));
    }
}
