//! Deterministic connections for the state-machine targets: a fresh world from a
//! fixed seed, the same sequence of random draws every time, so the honest messages
//! of a run are the same bytes in every execution and can be recorded once.
//!
//! Every connection is a [`boarding_memory::Pair`]: the driver's one run loop drains
//! both sides' outputs, queues what they send and answers their requests through its
//! hooks. A script only decides which message moves next and how requests are
//! answered; the persist request is always held ([`PersistAction::Hold`]) so the
//! targets answer it themselves.

use std::sync::OnceLock;

use boarding::attestation::AttestationBinding;
use boarding::client::{Client, ResumeConfig, SavedKeyring};
use boarding::identity::ClientId;
use boarding::messages::HandshakeMessage;
use boarding::server::VerifiedClient;
use boarding::token::BootstrapToken;
use boarding_memory::{Dir, Pair, PersistAction, World};

/// The seed of every scripted world.
pub const WORLD_SEED: u64 = 0x0b0a_4d19;
/// The client id of scripted joins.
pub const CLIENT_ID: &str = "node-1";
/// A client id the gateway has never seen (resumes with it get a decoy).
pub const UNKNOWN_CLIENT_ID: &str = "node-9";
/// The application request of the scripted resume (the decoy resume sends none).
pub const RESUME_REQUEST: &[u8] = b"renew node-1";
/// The gateway application's answer to it, in the ResumeTicket.
pub const RESUME_TICKET: &[u8] = b"renewed node-1";

/// Which handshake a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A join naming its token.
    Join,
    /// A join in the unnamed-token flow (no token id in the hello; two tokens are
    /// unexpired).
    UnnamedToken,
    /// A resume after an honest join, with an application request ([`RESUME_REQUEST`],
    /// answered with [`RESUME_TICKET`] in a ResumeTicket).
    Resume,
    /// A resume under a client id the gateway does not know.
    ResumeUnknown,
}

/// A client and a gateway over a perfect network that moves one message at a time
/// when told to. Storage requests are answered from the world's store (unless the
/// pair's storage hook says otherwise), admission with the world's ticket, and the
/// persist request is held until [`Pair::release_persist`].
#[derive(Debug)]
pub struct Script {
    /// The world (store, clock, gateway config).
    pub world: World,
    /// The one-use token the client joins with.
    pub token: BootstrapToken,
    /// The connection: both state machines, the network and the request hooks.
    pub pair: Pair,
    /// Every byte delivered to the gateway so far.
    pub server_got: Vec<u8>,
}

impl Script {
    /// A fresh world and connection for `flow`, before any message moved (the first
    /// hello is already in flight to the gateway).
    pub fn new(flow: Flow) -> Self {
        let world = World::new(WORLD_SEED);
        // Two tokens: the unnamed-token flow then challenges both; the client uses the second.
        let _other = world.issue_token(None, 0);
        let token = world.issue_token(None, 1);
        let mut config = world.join_config(CLIENT_ID, &token);
        if flow == Flow::UnnamedToken {
            config = config.without_token_id();
        }
        // The client's draws come before the gateway's (`pair_with` makes the gateway).
        let pair = world.pair_with(Client::join(config, &mut world.rng())).with_persist(PersistAction::Hold);
        let mut script = Self { world, token, pair, server_got: Vec::new() };
        if matches!(flow, Flow::Resume | Flow::ResumeUnknown) {
            script.run_honest();
            let mut saved = script.pair.saved.clone().unwrap_or_else(|| panic!("the honest join did not persist"));
            if flow == Flow::ResumeUnknown {
                saved.client_id = ClientId::new(UNKNOWN_CLIENT_ID).unwrap_or_else(|e| panic!("{e}"));
            }
            script.pair = if flow == Flow::Resume {
                let config = ResumeConfig::new(saved)
                    .with_request(RESUME_REQUEST.to_vec())
                    .unwrap_or_else(|e| panic!("the scripted request: {e}"));
                script
                    .world
                    .pair_with(Client::resume(config, &mut script.world.rng()))
                    .with_tickets(|_| RESUME_TICKET.to_vec())
            } else {
                script.world.resume_pair(&saved)
            }
            .with_persist(PersistAction::Hold);
            script.server_got.clear();
        }
        script.pair.flush();
        script
    }

    /// Delivers the next message in flight in `dir` and lets both sides answer (the
    /// driver's [`Pair::step`]); returns whether there was one.
    pub fn hop(&mut self, dir: Dir) -> bool {
        self.pair.flush();
        if dir == Dir::ToServer
            && let Some(next) = self.pair.in_flight(Dir::ToServer).front()
        {
            self.server_got.extend_from_slice(next);
        }
        self.pair.step(dir)
    }

    /// One honest hop to the gateway.
    pub fn hop_to_server(&mut self) {
        self.hop(Dir::ToServer);
    }

    /// One honest hop to the agent.
    pub fn hop_to_client(&mut self) {
        self.hop(Dir::ToClient);
    }

    /// Runs the honest exchange until nothing moves, telling the agent its keyring is
    /// stored whenever it asks.
    pub fn run_honest(&mut self) {
        while self.pair.release_persist(Ok(())) || self.hop(Dir::ToServer) || self.hop(Dir::ToClient) {}
    }
}

/// What an honest run of a flow sends, recorded once per process.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The agent's frames, in order.
    pub client_sent: Vec<Vec<u8>>,
    /// The gateway's frames, in order.
    pub server_sent: Vec<Vec<u8>>,
    /// What the agent persisted (joins).
    pub saved: Option<SavedKeyring>,
    /// The gateway's verified peer.
    pub peer: Option<VerifiedClient>,
    /// The bindings the agent was asked to attest (one for a join).
    pub bindings: Vec<AttestationBinding>,
}

fn record(flow: Flow) -> Recording {
    let mut script = Script::new(flow);
    script.run_honest();
    Recording {
        client_sent: script.pair.sent(Dir::ToServer),
        server_sent: script.pair.sent(Dir::ToClient),
        saved: script.pair.saved.clone(),
        peer: script.pair.peer.clone(),
        bindings: script.pair.bindings.clone(),
    }
}

/// The honest transcript of `flow`.
pub fn recording(flow: Flow) -> &'static Recording {
    static CELLS: [OnceLock<Recording>; 4] = [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = match flow {
        Flow::Join => 0,
        Flow::UnnamedToken => 1,
        Flow::Resume => 2,
        Flow::ResumeUnknown => 3,
    };
    CELLS[i].get_or_init(|| record(flow))
}

/// Checks that a frame a state machine emitted is a well-formed handshake frame that
/// re-encodes to the same bytes, and returns it decoded.
pub fn check_emitted(frame: &[u8]) -> HandshakeMessage {
    let message = HandshakeMessage::decode_frame(frame)
        .unwrap_or_else(|e| panic!("a state machine emitted an undecodable frame ({e}): {frame:02x?}"));
    assert_eq!(message.to_frame(), frame, "an emitted frame does not re-encode to itself");
    message
}

/// The concatenation of frames.
pub fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}
