//! Deterministic connections for the state-machine targets: a fresh world from a
//! fixed seed, the same sequence of random draws every time, so the honest messages
//! of a run are the same bytes in every execution and can be recorded once.
//!
//! Every connection is a [`boarding_memory::Pair`]: the driver's one run loop drains
//! both sides' outputs, queues what they send and answers their requests through its
//! hooks. A script only decides which message moves next and how requests are
//! answered; the persist request is always held ([`PersistAction::Hold`]) so the
//! targets answer it themselves.
//!
//! Besides the plain resume, the scripted resumes cover keyring rotation
//! (`spec/PROTOCOL.md` §8.5): a resume the gateway rotates (the operator asked), a
//! clone's resume (the keyring copied before an honest rotation retired it), a resume
//! that offers the new and the old keyring after a rotation (the gateway's age policy
//! made it) and learns which one the gateway holds, one that offers both after a
//! rotation whose commit failed (the gateway fences it off and rotates again), and a
//! resume of a known client id that offers only keyrings the gateway never held.

use std::sync::OnceLock;

use boarding::attestation::AttestationBinding;
use boarding::client::{Client, ResumeConfig, SavedKeyring};
use boarding::identity::ClientId;
use boarding::keys::{Keyring, SymmetricKey};
use boarding::messages::HandshakeMessage;
use boarding::server::VerifiedClient;
use boarding::storage::{RotationPolicy, StorageRequest};
use boarding::token::BootstrapToken;
use boarding_memory::{Dir, Pair, PersistAction, StorageAction, World};

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
/// The age at which the gateway of [`Flow::ResumeSettling`] rotates a keyring; its clock
/// moves on by this much after the join.
pub const ROTATION_MAX_AGE: u64 = 30 * 86_400;

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
    /// A resume, with [`RESUME_REQUEST`], that the gateway rotates: the operator asked
    /// for it after the join. The agent stores the new keyring (held, then acknowledged)
    /// before its `ResumeFinished`, and the gateway commits it after the `ResumeTicket`.
    ResumeRotating,
    /// A clone's resume, with [`RESUME_REQUEST`]: the keyring saved at the join, copied
    /// before the honest agent resumed with a rotation that retired it. The gateway
    /// answers with the retired keyring, verifies the proof, records the clone and
    /// refuses with `RetiredKeyring`.
    ResumeClone,
    /// A resume, with [`RESUME_REQUEST`], after a rotation the gateway's age policy made
    /// (the clock moved on by [`ROTATION_MAX_AGE`]): the agent offers the new and the old
    /// keyring, the gateway answers with the new one without rotating again, and the
    /// agent learns it may keep that one alone.
    ResumeSettling,
    /// A resume of the joined client id offering two keyrings the gateway never held: a
    /// decoy, as for an unknown client id.
    ResumeForeign,
    /// A resume, with [`RESUME_REQUEST`], after a rotation whose commit failed (the
    /// agent stored the new keyring, the gateway's store refused to write it): the agent
    /// offers the new and the old keyring, the gateway still holds the old one and the
    /// operator's request still stands, so it fences the failed commit off and rotates
    /// again, from the old keyring.
    ResumeUnsettled,
}

impl Flow {
    /// Every flow.
    pub const ALL: [Flow; 9] = [
        Self::Join,
        Self::UnnamedToken,
        Self::Resume,
        Self::ResumeUnknown,
        Self::ResumeRotating,
        Self::ResumeClone,
        Self::ResumeSettling,
        Self::ResumeForeign,
        Self::ResumeUnsettled,
    ];

    /// The flows a resume stage of the state-machine targets runs, by the digit of
    /// their first byte that picks an answer a resume never asks for (the agent's
    /// evidence, the gateway's admission): 0, what the stage seeds without a digit use,
    /// is the plain resume. The gateway's digit has four values: the first four.
    pub const RESUMES: [Flow; 5] =
        [Self::Resume, Self::ResumeRotating, Self::ResumeClone, Self::ResumeSettling, Self::ResumeUnsettled];

    /// Whether the gateway rotates the keyring in the flow's resume.
    pub fn rotates(self) -> bool {
        matches!(self, Self::ResumeRotating | Self::ResumeUnsettled)
    }

    /// Whether the flow is a resume.
    pub fn is_resume(self) -> bool {
        !matches!(self, Self::Join | Self::UnnamedToken)
    }

    /// Whether the gateway knows the keyring the flow's resume offers first (the honest
    /// exchange verifies on both ends).
    pub fn is_genuine_resume(self) -> bool {
        matches!(
            self,
            Self::Resume | Self::ResumeRotating | Self::ResumeClone | Self::ResumeSettling | Self::ResumeUnsettled
        )
    }

    /// The flow's digit among [`Flow::RESUMES`] (0 for the others).
    pub fn resume_digit(self) -> usize {
        Self::RESUMES.iter().position(|f| *f == self).unwrap_or(0)
    }
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
    /// The stored state a resume flow's agent resumes with.
    pub resumed_from: Option<SavedKeyring>,
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
        let mut script = Self { world, token, pair, server_got: Vec::new(), resumed_from: None };
        if flow.is_resume() {
            script.run_honest();
            let mut saved = script.pair.saved.clone().unwrap_or_else(|| panic!("the honest join did not persist"));
            let id = saved.client_id.clone();
            match flow {
                Flow::ResumeUnknown => {
                    saved.client_id = ClientId::new(UNKNOWN_CLIENT_ID).unwrap_or_else(|e| panic!("{e}"));
                }
                Flow::ResumeForeign => {
                    saved.keyring = fixed_keyring(0x42);
                    saved.rotated_from = Some(fixed_keyring(0x24));
                }
                Flow::ResumeRotating => {
                    assert!(script.world.store.request_rotation(&id), "no keyring to rotate");
                }
                Flow::ResumeClone => {
                    // The thief copies the state now; the honest agent then rotates.
                    assert!(script.world.store.request_rotation(&id), "no keyring to rotate");
                    let rotated = script.resume_honestly(&saved);
                    assert_eq!(rotated.rotated_from.as_ref(), Some(&saved.keyring), "the honest resume did not rotate");
                }
                Flow::ResumeUnsettled => {
                    assert!(script.world.store.request_rotation(&id), "no keyring to rotate");
                    // The agent stores the rotation and sends its proof; the commit fails.
                    script.pair =
                        script.world.resume_pair(&saved).with_persist(PersistAction::Hold).with_storage(|request| {
                            match request {
                                StorageRequest::RotateKeyring(_) => StorageAction::Fail,
                                _ => StorageAction::Answer,
                            }
                        });
                    script.pair.flush();
                    script.run_honest();
                    let unsettled = script.pair.saved.clone().unwrap_or_else(|| panic!("the rotation was not stored"));
                    assert_eq!(unsettled.rotated_from.as_ref(), Some(&saved.keyring), "the resume did not rotate");
                    let record = script.world.store.keyring(&id).unwrap_or_else(|| panic!("no keyring record"));
                    assert_eq!(record.keyring, saved.keyring, "the failed commit changed the gateway's keyring");
                    saved = unsettled;
                }
                Flow::ResumeSettling => {
                    script.world =
                        script.world.clone().with_rotation(RotationPolicy { max_age: Some(ROTATION_MAX_AGE) });
                    script.world.now = script.world.now.saturating_add(ROTATION_MAX_AGE);
                    let rotated = script.resume_honestly(&saved);
                    assert_eq!(rotated.rotated_from.as_ref(), Some(&saved.keyring), "the aged keyring was not rotated");
                    saved = rotated;
                }
                _ => {}
            }
            script.resumed_from = Some(saved.clone());
            script.pair = if matches!(flow, Flow::ResumeUnknown | Flow::ResumeForeign) {
                script.world.resume_pair(&saved)
            } else {
                let config = ResumeConfig::new(saved)
                    .with_request(RESUME_REQUEST.to_vec())
                    .unwrap_or_else(|e| panic!("the scripted request: {e}"));
                script
                    .world
                    .pair_with(Client::resume(config, &mut script.world.rng()))
                    .with_tickets(|_| RESUME_TICKET.to_vec())
            }
            .with_persist(PersistAction::Hold);
            script.server_got.clear();
        }
        script.pair.flush();
        script
    }

    /// Runs an honest resume of `saved` to completion on a pair of its own (which then
    /// stays the script's until replaced) and returns what it stored: the rotated state if
    /// it rotated, else `saved`.
    fn resume_honestly(&mut self, saved: &SavedKeyring) -> SavedKeyring {
        self.pair = self.world.resume_pair(saved).with_persist(PersistAction::Hold);
        self.pair.flush();
        self.run_honest();
        assert!(self.pair.outcome().both_established(), "the honest resume failed: {:?}", self.pair.outcome());
        self.pair.saved.clone().unwrap_or_else(|| saved.clone())
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
    /// What the agent persisted (a join; a rotating resume: the new keyring, with the
    /// one it was rotated from).
    pub saved: Option<SavedKeyring>,
    /// The gateway's verified peer.
    pub peer: Option<VerifiedClient>,
    /// The bindings the agent was asked to attest (one for a join).
    pub bindings: Vec<AttestationBinding>,
    /// The stored state a resume started from.
    pub resumed_from: Option<SavedKeyring>,
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
        resumed_from: script.resumed_from.clone(),
    }
}

/// The honest transcript of `flow`.
pub fn recording(flow: Flow) -> &'static Recording {
    static CELLS: [OnceLock<Recording>; Flow::ALL.len()] = [const { OnceLock::new() }; Flow::ALL.len()];
    let i = Flow::ALL.iter().position(|f| *f == flow).unwrap_or(0);
    CELLS[i].get_or_init(|| record(flow))
}

/// A keyring of fixed bytes, one no gateway ever derived.
pub fn fixed_keyring(b: u8) -> Keyring {
    Keyring { c2s: SymmetricKey::from_bytes([b; 32]), s2c: SymmetricKey::from_bytes([b ^ 0xff; 32]) }
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
