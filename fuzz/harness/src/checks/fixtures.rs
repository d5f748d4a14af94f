//! Deterministic connections for the state-machine targets: a fresh world from a
//! fixed seed, the same sequence of random draws every time, so the honest messages
//! of a run are the same bytes in every execution and can be recorded once.

use std::collections::VecDeque;
use std::sync::OnceLock;

use boarding::client::{Client, ClientOutput, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::identity::ClientId;
use boarding::messages::HandshakeMessage;
use boarding::server::{Server, ServerOutput, VerifiedClient};
use boarding::storage::StorageRequest;
use boarding::token::BootstrapToken;
use boarding_memory::World;

/// The seed of every scripted world.
pub const WORLD_SEED: u64 = 0x0b0a_4d19;
/// The client id of scripted joins.
pub const CLIENT_ID: &str = "node-1";
/// A client id the gateway has never seen (resumes with it get a decoy).
pub const UNKNOWN_CLIENT_ID: &str = "node-9";

/// Which handshake a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A join naming its token.
    Join,
    /// A join in the seed flow (no token id in the hello; two tokens are active).
    Seed,
    /// A resume after an honest join.
    Resume,
    /// A resume under a client id the gateway does not know.
    ResumeUnknown,
}

/// A client and a gateway over a perfect, hand-cranked network. Storage requests
/// are answered from the world's store when [`Script::server_flush`] runs.
#[derive(Debug)]
pub struct Script {
    /// The world (store, clock, gateway config).
    pub world: World,
    /// The one-use token the client joins with.
    pub token: BootstrapToken,
    /// The agent.
    pub client: Client,
    /// The gateway.
    pub server: Server,
    /// Frames in flight to the gateway.
    pub to_server: VecDeque<Vec<u8>>,
    /// Frames in flight to the agent.
    pub to_client: VecDeque<Vec<u8>>,
    /// Every frame the agent sent, in order.
    pub client_sent: Vec<Vec<u8>>,
    /// Every frame the gateway sent, in order.
    pub server_sent: Vec<Vec<u8>>,
    /// Every byte delivered to the gateway so far.
    pub server_got: Vec<u8>,
    /// A persist request the agent is waiting on.
    pub pending_persist: Option<SavedKeyring>,
    /// What the agent persisted.
    pub saved: Option<SavedKeyring>,
    /// The gateway's verified peer, once established.
    pub peer: Option<VerifiedClient>,
    /// A storage request held back instead of answered.
    pub held: Option<StorageRequest>,
}

impl Script {
    /// A fresh world and connection for `flow`, before any message moved.
    pub fn new(flow: Flow) -> Self {
        let world = World::new(WORLD_SEED);
        // Two tokens: the seed flow then challenges both; the client uses the second.
        let _other = world.issue_token(None, 0);
        let token = world.issue_token(None, 1);
        let id = ClientId::new(CLIENT_ID).unwrap_or_else(|e| panic!("{e}"));
        let mut config = JoinConfig::new(token.clone(), vec![world.config.pin()], id);
        if flow == Flow::Seed {
            config = config.without_token_id();
        }
        let client = Client::join(config, &mut world.rng());
        let server = Server::new(world.config.clone(), &mut world.rng());
        let mut script = Self {
            world,
            token,
            client,
            server,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            client_sent: Vec::new(),
            server_sent: Vec::new(),
            server_got: Vec::new(),
            pending_persist: None,
            saved: None,
            peer: None,
            held: None,
        };
        if matches!(flow, Flow::Resume | Flow::ResumeUnknown) {
            script.run_honest();
            let mut saved = script.saved.clone().unwrap_or_else(|| panic!("the honest join did not persist"));
            if flow == Flow::ResumeUnknown {
                saved.client_id = ClientId::new(UNKNOWN_CLIENT_ID).unwrap_or_else(|e| panic!("{e}"));
            }
            let client = Client::resume(ResumeConfig::new(saved), &mut script.world.rng());
            let server = Server::new(script.world.config.clone(), &mut script.world.rng());
            script = Self {
                world: script.world,
                token: script.token,
                client,
                server,
                to_server: VecDeque::new(),
                to_client: VecDeque::new(),
                client_sent: Vec::new(),
                server_sent: Vec::new(),
                server_got: Vec::new(),
                pending_persist: None,
                saved: None,
                peer: None,
                held: None,
            };
        }
        script.client_flush();
        script
    }

    /// Drains the agent's outputs (a persist request is held until [`Script::persist`]).
    pub fn client_flush(&mut self) {
        while let Some(out) = self.client.poll_output() {
            match out {
                ClientOutput::Transmit(bytes) => {
                    self.client_sent.push(bytes.clone());
                    self.to_server.push_back(bytes);
                }
                ClientOutput::PersistKeyring(saved) => self.pending_persist = Some(saved),
                ClientOutput::Established(_) => {}
            }
        }
    }

    /// Drains the gateway's outputs, answering storage requests (or holding the
    /// first one back when `hold` is set).
    pub fn server_flush(&mut self, hold: bool) {
        while let Some(out) = self.server.poll_output() {
            match out {
                ServerOutput::Transmit(bytes) => {
                    self.server_sent.push(bytes.clone());
                    self.to_client.push_back(bytes);
                }
                ServerOutput::Storage(request) if hold && self.held.is_none() => self.held = Some(request),
                ServerOutput::Storage(request) => {
                    let answer = self.world.store.answer(&request);
                    let _ = self.server.handle_storage(answer);
                }
                ServerOutput::Established(peer) => self.peer = Some(peer),
            }
        }
    }

    /// Answers the held storage request, if any.
    pub fn release(&mut self) {
        if let Some(request) = self.held.take() {
            let answer = self.world.store.answer(&request);
            let _ = self.server.handle_storage(answer);
        }
        self.server_flush(false);
    }

    /// Delivers the next frame in flight to the gateway.
    pub fn deliver_to_server(&mut self) {
        if let Some(bytes) = self.to_server.pop_front() {
            self.server_got.extend_from_slice(&bytes);
            let _ = self.server.handle_input(self.world.now, &bytes);
        }
    }

    /// Delivers the next frame in flight to the agent.
    pub fn deliver_to_client(&mut self) {
        if let Some(bytes) = self.to_client.pop_front() {
            let _ = self.client.handle_input(&bytes);
        }
    }

    /// Tells the agent its keyring is stored.
    pub fn persist(&mut self) {
        if let Some(saved) = self.pending_persist.take() {
            self.saved = Some(saved);
            let _ = self.client.handle_persisted();
        }
        self.client_flush();
    }

    /// Runs the honest exchange until nothing moves.
    pub fn run_honest(&mut self) {
        loop {
            self.client_flush();
            self.server_flush(false);
            if self.pending_persist.is_some() {
                self.persist();
            } else if !self.to_server.is_empty() {
                self.deliver_to_server();
            } else if !self.to_client.is_empty() {
                self.deliver_to_client();
            } else {
                break;
            }
        }
    }

    /// One honest hop: deliver a frame to the gateway and let it answer.
    pub fn hop_to_server(&mut self) {
        self.deliver_to_server();
        self.server_flush(false);
    }

    /// One honest hop: deliver a frame to the agent and let it answer.
    pub fn hop_to_client(&mut self) {
        self.deliver_to_client();
        self.client_flush();
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
}

fn record(flow: Flow) -> Recording {
    let mut script = Script::new(flow);
    script.run_honest();
    Recording {
        client_sent: script.client_sent,
        server_sent: script.server_sent,
        saved: script.saved,
        peer: script.peer,
    }
}

/// The honest transcript of `flow`.
pub fn recording(flow: Flow) -> &'static Recording {
    static CELLS: [OnceLock<Recording>; 4] = [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = match flow {
        Flow::Join => 0,
        Flow::Seed => 1,
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
