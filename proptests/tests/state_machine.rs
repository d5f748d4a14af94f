//! A model-based test (`proptest-state-machine`) of one gateway, several agents, a
//! token store and an adversarial network, against the real core through the memory
//! driver.
//!
//! The reference model ([`Reference`]) holds what the test controls: the virtual
//! clock, the tokens (expiry, maximum uses, revoked or not), which agent holds which
//! token, the gateway's keyring rotation policy, which agents' saved state a thief has
//! copied, and which lines have a connection open (each agent has one line, and so has
//! the thief of its keyring). The system under test ([`System`]) runs real `Client`s and
//! a fresh real `Server` per connection over one shared `MemoryStore`, stepping the
//! network one message at a time.
//!
//! Every agent attests its joins: its evidence commits to its client id and the
//! session's attestation binding, and the gateway's application refuses evidence
//! that does not commit to its own binding (`AttestationRefused`).
//!
//! Transitions: an agent starts a join (with its token, or a forged one with the
//! right id and a wrong secret, or presenting evidence recorded from any earlier
//! session instead of its own, as a thief of a token but not of a node key would) or a
//! resume (with or without an application request, which the gateway's application
//! answers in a `ResumeTicket`; the store of a rotated keyring answered, failed, or held
//! until released); the operator asks for an agent's keyring to be rotated (and the
//! gateway may rotate keyrings by age); a thief copies an agent's saved state (its
//! keyrings) and later resumes with its copy, storing the rotations it is given; the
//! network delivers, drops, duplicates, reorders or tampers with (flips one bit of) the
//! next message of a connection, or replays into it a message recorded in another
//! session; the clock moves past expiries; a token or a client is revoked; the gateway
//! restarts (every in-flight handshake dies; the store survives); the network settles
//! (delivers everything fairly).
//!
//! Checked after every step:
//! * token uses never exceed the maximum;
//! * charge-once: each token's use count equals the number of *admissions* the test
//!   observed (a client id gaining a keyring it did not have); an interrupted join
//!   retried over its unconfirmed keyring replaces it without a charge;
//! * an admission only happens with a token that is neither revoked nor expired, nor
//!   (for a first admission) exhausted;
//! * every pair that both sides report established agrees on keys (frames sealed on
//!   each side open on the other), on the client id and on the token; the gateway
//!   never reports success before the agent (key confirmation) but after a resume's
//!   ResumeFinished that carried a request (that was the agent's confirmation; its
//!   ResumeTicket follows), and never for a forged token;
//! * a keyring the gateway holds as confirmed is one a holder of the client's keys
//!   persisted; a confirmed keyring changes only by a rotation, to a keyring the resuming
//!   holder stored before its proof, retiring the old one;
//! * the gateway never completes a resume with a keyring it has retired (the test keeps
//!   its own record of every keyring ever retired, beyond the store's bounded history):
//!   the keyring a completed resume confirmed, or rotated from, was current then;
//! * an agent whose keyrings no thief has used is never locked out (its stored
//!   keyrings always include the gateway's current one) and never causes a clone
//!   suspicion;
//! * a resume the gateway answered with a retired keyring never completes, and once its
//!   proof verifies it asks for nothing but the clone's record; a recorded clone adds
//!   exactly one to the record's suspicion and refuses the resume with `RetiredKeyring`;
//! * what a completed resume tells the agent agrees with the store: it rotated exactly
//!   when it stored a rotation from the keyring the gateway held, and a resume that
//!   offered two keyrings without rotating settles on the one the gateway answered with;
//! * replayed evidence never gets a join past the gateway's validator: its binding is
//!   another session's, so the gateway refuses it with `AttestationRefused` before any
//!   redemption; a completed join carries the agent's attested identity, and so does a resume;
//! * a resume's request reaches the gateway's application only from a holder of the
//!   keyring, exactly as the agent sent it, and the agent's ticket is the answer to it;
//! * a fair network always brings every connection to quiescence within a bound.
//!
//! At the end of each case the network settles and every agent, then its thief, tries
//! once more over a perfect network: a resume must succeed iff the gateway's confirmed
//! keyring is among the keyrings it offers, must be refused as a clone's (and recorded)
//! iff it offers only keyrings the gateway retired, and (no thief having resumed) the
//! agent's must succeed; a join must succeed iff the reference says its token still
//! admits it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use boarding::Error;
use boarding::attestation::{AttestationBinding, AttestedIdentity};
use boarding::channel::{FRAME_OVERHEAD, Received};
use boarding::client::{Client, ResumeConfig, SavedKeyring};
use boarding::error::Refusal;
use boarding::identity::ClientId;
use boarding::keys::KeyringId;
use boarding::server::{Admission, AdmissionRequest};
use boarding::storage::{KeyringRecord, RotationPolicy, StorageRequest};
use boarding::token::{BootstrapToken, TokenSecret};
use boarding_memory::{Dir, MemoryStore, Pair, PersistAction, Standing, StorageAction, StoreSnapshot, World};
use boarding_proptests::{config, deep};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

/// A token as the reference sees it.
#[derive(Clone, Debug)]
struct TokenSpec {
    /// Lifetime in seconds from the start (`None`: never expires).
    ttl: Option<u64>,
    /// Most uses (0: unlimited).
    max_uses: u32,
    /// Revoked by the operator.
    revoked: bool,
}

/// A connection slot: an agent's own, or the one of the thief of its keyring.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Line {
    agent: usize,
    thief: bool,
}

impl Line {
    fn index(self) -> usize {
        self.agent * 2 + usize::from(self.thief)
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.thief {
            write!(f, "agent {}'s thief's line", self.agent)
        } else {
            write!(f, "agent {}'s line", self.agent)
        }
    }
}

/// The reference model.
#[derive(Clone, Debug)]
struct Reference {
    /// The seed of every random choice in the system.
    seed: u64,
    /// Seconds since the start.
    elapsed: u64,
    tokens: Vec<TokenSpec>,
    /// Which token each agent holds.
    holds: Vec<usize>,
    /// The gateway rotates a keyring this many seconds old (`None`: only on request).
    rotation_max_age: Option<u64>,
    /// Which agents' saved state a thief has copied.
    stolen: Vec<bool>,
    /// Which lines have a connection open (by [`Line::index`]).
    connected: Vec<bool>,
}

impl Reference {
    /// Whether token `t` may still be redeemed at all (uses aside).
    fn alive(&self, t: usize) -> bool {
        let spec = &self.tokens[t];
        !spec.revoked && spec.ttl.is_none_or(|ttl| self.elapsed < ttl)
    }

    /// The lines with a connection open.
    fn open_lines(&self) -> Vec<Line> {
        (0..self.holds.len())
            .flat_map(|agent| [false, true].map(|thief| Line { agent, thief }))
            .filter(|l| self.connected.get(l.index()).copied().unwrap_or(false))
            .collect()
    }
}

/// What the agent's store does with the state a rotating resume asks it to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persist {
    /// Stored and acknowledged.
    Store,
    /// The store fails: the resume fails before its proof.
    Fail,
    /// Stored but not acknowledged until released (a slow disk, or a crash after the
    /// write if the connection dies first).
    Hold,
}

/// One step of a test case.
#[derive(Clone)]
enum Transition {
    StartJoin {
        agent: usize,
        forged: bool,
    },
    /// A join presenting evidence recorded from an earlier session (`pick` mod count).
    StartReplayedJoin {
        agent: usize,
        pick: usize,
    },
    StartResume {
        agent: usize,
        /// The resume carries an application request (answered in a `ResumeTicket`).
        request: bool,
        /// What the agent's store does with a rotated keyring.
        persist: Persist,
    },
    /// A thief copies the agent's saved state (a no-op if it has none).
    Steal {
        agent: usize,
    },
    /// The thief resumes with its copy (a no-op if it has none).
    StartThiefResume {
        agent: usize,
        request: bool,
    },
    /// The operator asks for the agent's keyring to be rotated at its next resume.
    RequestRotation {
        agent: usize,
    },
    /// Acknowledge a held store of a rotated keyring.
    ReleasePersist {
        line: Line,
    },
    Deliver {
        line: Line,
        dir: Dir,
    },
    Drop {
        line: Line,
        dir: Dir,
    },
    Duplicate {
        line: Line,
        dir: Dir,
    },
    Reorder {
        line: Line,
        dir: Dir,
    },
    Tamper {
        line: Line,
        dir: Dir,
        bit: usize,
    },
    Replay {
        line: Line,
        dir: Dir,
        pick: usize,
    },
    AdvanceClock {
        secs: u64,
    },
    RevokeToken {
        token: usize,
    },
    RevokeClient {
        agent: usize,
    },
    RestartGateway,
    Settle,
}

fn to(dir: &Dir) -> &'static str {
    match dir {
        Dir::ToServer => "to the gateway",
        Dir::ToClient => "to the agent",
    }
}

impl fmt::Debug for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StartJoin { agent, forged: false } => write!(f, "agent {agent} starts a join"),
            Self::StartJoin { agent, forged: true } => write!(f, "agent {agent} starts a join with a forged secret"),
            Self::StartReplayedJoin { agent, pick } => {
                write!(f, "agent {agent} starts a join presenting recorded evidence #{pick} (mod count)")
            }
            Self::StartResume { agent, request, persist } => {
                let with = if *request { " with a request" } else { "" };
                write!(f, "agent {agent} starts a resume{with} (a rotation's store: {persist:?})")
            }
            Self::Steal { agent } => write!(f, "a thief copies agent {agent}'s saved keyrings"),
            Self::StartThiefResume { agent, request: false } => write!(f, "agent {agent}'s thief starts a resume"),
            Self::StartThiefResume { agent, request: true } => {
                write!(f, "agent {agent}'s thief starts a resume with a request")
            }
            Self::RequestRotation { agent } => write!(f, "the operator asks to rotate agent {agent}'s keyring"),
            Self::ReleasePersist { line } => write!(f, "acknowledge the held store on {line:?}"),
            Self::Deliver { line, dir } => write!(f, "deliver the next message {} on {line:?}", to(dir)),
            Self::Drop { line, dir } => write!(f, "drop the next message {} on {line:?}", to(dir)),
            Self::Duplicate { line, dir } => write!(f, "duplicate the next message {} on {line:?}", to(dir)),
            Self::Reorder { line, dir } => write!(f, "move the next message {} on {line:?} to the back", to(dir)),
            Self::Tamper { line, dir, bit } => {
                write!(f, "flip bit {bit} (mod length) of the next message {} on {line:?}", to(dir))
            }
            Self::Replay { line, dir, pick } => {
                write!(f, "replay recorded message #{pick} (mod count) from another session {} on {line:?}", to(dir))
            }
            Self::AdvanceClock { secs } => write!(f, "advance the clock {secs} s"),
            Self::RevokeToken { token } => write!(f, "revoke token {token}"),
            Self::RevokeClient { agent } => write!(f, "revoke agent {agent}'s client id"),
            Self::RestartGateway => f.write_str("restart the gateway (in-flight handshakes die)"),
            Self::Settle => f.write_str("the network delivers everything fairly"),
        }
    }
}

fn direction() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::ToServer), Just(Dir::ToClient)]
}

fn persist_plan() -> impl Strategy<Value = Persist> {
    prop_oneof![6 => Just(Persist::Store), 1 => Just(Persist::Fail), 1 => Just(Persist::Hold)]
}

impl ReferenceStateMachine for Reference {
    type State = Self;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Self> {
        let token = (proptest::option::weighted(0.6, 30u64..900), 0u32..3).prop_map(|(ttl, max_uses)| TokenSpec {
            ttl,
            max_uses,
            revoked: false,
        });
        let policy = proptest::option::weighted(0.5, 60u64..1_200);
        (any::<u64>(), proptest::collection::vec(token, 1..=3), 2usize..=3, policy)
            .prop_flat_map(|(seed, tokens, agents, policy)| {
                let n = tokens.len();
                (Just(seed), Just(tokens), proptest::collection::vec(0..n, agents), Just(policy))
            })
            .prop_map(|(seed, tokens, holds, rotation_max_age)| {
                let (stolen, connected) = (vec![false; holds.len()], vec![false; 2 * holds.len()]);
                Reference { seed, elapsed: 0, tokens, holds, rotation_max_age, stolen, connected }
            })
            .boxed()
    }

    fn transitions(state: &Self) -> BoxedStrategy<Transition> {
        let agents = state.holds.len();
        let tokens = state.tokens.len();
        let agent = 0..agents;
        // Network transitions name an open line (any line when none is open: they are
        // then rejected by the preconditions).
        let open = state.open_lines();
        let all: Vec<Line> = (0..agents).flat_map(|agent| [false, true].map(|thief| Line { agent, thief })).collect();
        let line = proptest::sample::select(if open.is_empty() { all } else { open });
        prop_oneof![
            4 => (agent.clone(), proptest::bool::weighted(0.15))
                .prop_map(|(agent, forged)| Transition::StartJoin { agent, forged }),
            1 => (agent.clone(), any::<usize>()).prop_map(|(agent, pick)| Transition::StartReplayedJoin { agent, pick }),
            5 => (agent.clone(), any::<bool>(), persist_plan())
                .prop_map(|(agent, request, persist)| Transition::StartResume { agent, request, persist }),
            1 => agent.clone().prop_map(|agent| Transition::Steal { agent }),
            2 => (agent.clone(), any::<bool>())
                .prop_map(|(agent, request)| Transition::StartThiefResume { agent, request }),
            2 => agent.clone().prop_map(|agent| Transition::RequestRotation { agent }),
            1 => line.clone().prop_map(|line| Transition::ReleasePersist { line }),
            24 => (line.clone(), direction()).prop_map(|(line, dir)| Transition::Deliver { line, dir }),
            2 => (line.clone(), direction()).prop_map(|(line, dir)| Transition::Drop { line, dir }),
            1 => (line.clone(), direction()).prop_map(|(line, dir)| Transition::Duplicate { line, dir }),
            1 => (line.clone(), direction()).prop_map(|(line, dir)| Transition::Reorder { line, dir }),
            2 => (line.clone(), direction(), any::<usize>())
                .prop_map(|(line, dir, bit)| Transition::Tamper { line, dir, bit }),
            2 => (line, direction(), any::<usize>())
                .prop_map(|(line, dir, pick)| Transition::Replay { line, dir, pick }),
            1 => (1u64..600).prop_map(|secs| Transition::AdvanceClock { secs }),
            1 => (0..tokens).prop_map(|token| Transition::RevokeToken { token }),
            1 => agent.prop_map(|agent| Transition::RevokeClient { agent }),
            1 => Just(Transition::RestartGateway),
            3 => Just(Transition::Settle),
        ]
        .boxed()
    }

    fn preconditions(state: &Self, transition: &Transition) -> bool {
        // Shrinking may drop agents or tokens: transitions naming them are then invalid.
        let agent_ok = |a: &usize| *a < state.holds.len();
        let open = |l: &Line| l.agent < state.holds.len() && state.connected.get(l.index()).copied().unwrap_or(false);
        match transition {
            Transition::Deliver { line, .. }
            | Transition::Drop { line, .. }
            | Transition::Duplicate { line, .. }
            | Transition::Reorder { line, .. }
            | Transition::Tamper { line, .. }
            | Transition::Replay { line, .. }
            | Transition::ReleasePersist { line } => open(line),
            Transition::StartThiefResume { agent, .. } => agent_ok(agent) && state.stolen[*agent],
            Transition::StartJoin { agent, .. }
            | Transition::StartReplayedJoin { agent, .. }
            | Transition::StartResume { agent, .. }
            | Transition::Steal { agent }
            | Transition::RequestRotation { agent }
            | Transition::RevokeClient { agent } => agent_ok(agent),
            Transition::RevokeToken { token } => *token < state.tokens.len(),
            Transition::AdvanceClock { .. } | Transition::RestartGateway | Transition::Settle => true,
        }
    }

    fn apply(mut state: Self, transition: &Transition) -> Self {
        match transition {
            Transition::StartJoin { agent, .. }
            | Transition::StartReplayedJoin { agent, .. }
            | Transition::StartResume { agent, .. } => {
                state.connected[Line { agent: *agent, thief: false }.index()] = true
            }
            Transition::StartThiefResume { agent, .. } => {
                state.connected[Line { agent: *agent, thief: true }.index()] = true
            }
            Transition::Steal { agent } => state.stolen[*agent] = true,
            Transition::AdvanceClock { secs } => state.elapsed += secs,
            Transition::RevokeToken { token } => state.tokens[*token].revoked = true,
            Transition::RestartGateway => state.connected.iter_mut().for_each(|c| *c = false),
            _ => {}
        }
        state
    }
}

/// A storage request the gateway made, with the client's keyring record as the store
/// held it just before answering.
type Logged = (StorageRequest, Option<KeyringRecord>);

/// One open connection: a real client and a fresh real gateway state machine.
struct Connection {
    pair: Pair,
    /// Which session this is, for replays "from another session".
    serial: usize,
    forged: bool,
    /// The agent presents evidence recorded from another session.
    replayed: bool,
    /// The agent's client id was revoked while this connection was open.
    revoked_during: bool,
    /// The resume's application request (empty: none, and for joins).
    request: Vec<u8>,
    /// The resume uses a keyring the agent made up (it never joined).
    made_up: bool,
    /// The keyrings the resume offered (empty for a join).
    offered: Vec<KeyringId>,
    /// Every storage request of the gateway, with the record it found.
    storage: Arc<Mutex<Vec<Logged>>>,
    /// How many of `storage` were checked.
    checked: usize,
    /// What the agent stored in this connection (a join's keyring, a rotation).
    persisted: Option<SavedKeyring>,
    /// Whether each side's completion was checked.
    client_done: bool,
    server_done: bool,
    /// How many of `pair.log` were copied into the global record.
    recorded: usize,
}

/// A holder of a client's keys: the agent, or the thief of its keyring.
#[derive(Default)]
struct Holder {
    /// The stored state (the agent's, or the thief's copy with the rotations it got).
    saved: Option<SavedKeyring>,
    connection: Option<Connection>,
}

struct Agent {
    id: ClientId,
    token: usize,
    own: Holder,
    thief: Holder,
    /// The thief has resumed with the copy (it may have rotated the gateway's keyring).
    thief_acted: bool,
    /// Every keyring a holder of the client's keys ever stored (the thief may drop its
    /// own for a fresh copy).
    stored: HashSet<KeyringId>,
}

impl Agent {
    fn holder(&mut self, thief: bool) -> &mut Holder {
        if thief { &mut self.thief } else { &mut self.own }
    }

    fn keep(&mut self, thief: bool, saved: SavedKeyring) {
        self.stored.extend(saved.offered());
        self.holder(thief).saved = Some(saved);
    }

    fn offers(&self, thief: bool, id: &KeyringId) -> bool {
        let holder = if thief { &self.thief } else { &self.own };
        holder.saved.as_ref().is_some_and(|s| s.offered().contains(id))
    }
}

/// The system under test.
struct System {
    world: World,
    tokens: Vec<BootstrapToken>,
    agents: Vec<Agent>,
    /// Admissions observed per token: a client id gaining a keyring it did not have.
    admissions: Vec<u32>,
    /// Every message any session sent: (session, direction, bytes).
    recorded: Vec<(usize, Dir, Vec<u8>)>,
    serial: usize,
    store: StoreSnapshot,
    /// Every keyring the gateway ever retired, by client (the store forgets the oldest).
    ever_retired: BTreeMap<ClientId, HashSet<KeyringId>>,
    /// Handshakes that completed on both sides (for the record).
    established: usize,
    /// Every evidence any agent presented.
    evidence: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// The gateway application's answer to a resume's request.
fn answer(request: &[u8]) -> Vec<u8> {
    [b"answer to ".as_slice(), request].concat()
}

/// What an agent's attester presents: evidence committing to its client id and the
/// session's binding (the stand-in for a signature by its node key).
fn evidence(client_id: &ClientId, binding: &AttestationBinding) -> Vec<u8> {
    [client_id.as_str().as_bytes(), &b":"[..], binding.as_bytes()].concat()
}

/// The gateway application's validator: the evidence must commit to the requesting
/// client id and to the binding of this very session.
fn validate(request: &AdmissionRequest) -> Admission {
    if request.evidence == evidence(&request.client_id, &request.binding) {
        let attested = AttestedIdentity::new(request.client_id.as_str()).ok();
        Admission::Admit { ticket: Vec::new(), attested }
    } else {
        Admission::RefuseAttestation
    }
}

/// Where the keyrings a resume offers stand in a record, by the core's rule stated
/// independently: the current one if offered, else the newest retired one offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    Current(KeyringId),
    Retired(KeyringId),
    /// Nothing the record holds (or no record): a decoy.
    Stranger,
}

fn standing(record: Option<&KeyringRecord>, offered: &[KeyringId]) -> Offer {
    let Some(record) = record else { return Offer::Stranger };
    if offered.contains(&record.keyring.id()) {
        return Offer::Current(record.keyring.id());
    }
    match record.retired.iter().rev().map(|k| k.id()).find(|id| offered.contains(id)) {
        Some(id) => Offer::Retired(id),
        None => Offer::Stranger,
    }
}

/// The client id a storage request is about.
fn client_of(request: &StorageRequest) -> Option<&ClientId> {
    match request {
        StorageRequest::LookupKeyring { client_id }
        | StorageRequest::ConfirmKeyring { client_id, .. }
        | StorageRequest::CheckKeyring { client_id, .. }
        | StorageRequest::FenceKeyring { client_id, .. }
        | StorageRequest::RecordClone { client_id, .. }
        | StorageRequest::RequestRotation { client_id } => Some(client_id),
        StorageRequest::RotateKeyring(r) => Some(&r.client_id),
        StorageRequest::Redeem(r) => Some(&r.client_id),
        StorageRequest::LookupToken { .. } | StorageRequest::UnexpiredTokens { .. } => None,
    }
}

fn clone_count(record: Option<&KeyringRecord>) -> u64 {
    record.and_then(|r| r.clone_suspected.as_ref()).map_or(0, |c| c.count)
}

impl System {
    fn token_index(&self, id: boarding::token::TokenId) -> usize {
        self.tokens.iter().position(|t| t.id() == id).unwrap_or_else(|| panic!("unknown token {id}"))
    }

    fn connection(&mut self, line: Line) -> &mut Option<Connection> {
        &mut self.agents[line.agent].holder(line.thief).connection
    }

    /// The pair on a line's open connection.
    fn line(&mut self, line: Line) -> Option<&mut Pair> {
        self.connection(line).as_mut().map(|c| &mut c.pair)
    }

    fn lines(&self) -> Vec<Line> {
        (0..self.agents.len()).flat_map(|agent| [false, true].map(|thief| Line { agent, thief })).collect()
    }

    fn connect(&mut self, agent: usize, client: Client, forged: bool, replay: Option<usize>) {
        let line = Line { agent, thief: false };
        self.connect_with(line, client, forged, replay, Vec::new(), false, Persist::Store, Vec::new());
    }

    #[allow(clippy::too_many_arguments)]
    fn connect_with(
        &mut self,
        line: Line,
        client: Client,
        forged: bool,
        replay: Option<usize>,
        request: Vec<u8>,
        made_up: bool,
        persist: Persist,
        offered: Vec<KeyringId>,
    ) {
        self.sync(line);
        let serial = self.serial;
        self.serial += 1;
        let recorded = self.evidence.clone();
        let replayed = replay.and_then(|pick| {
            let seen = recorded.lock().unwrap_or_else(|e| e.into_inner());
            (!seen.is_empty()).then(|| seen[pick % seen.len()].clone())
        });
        let id = self.agents[line.agent].id.clone();
        let is_replay = replayed.is_some();
        let storage: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let (log, store): (_, Arc<MemoryStore>) = (storage.clone(), self.world.store.clone());
        let pair = self
            .world
            .pair_with(client)
            .with_attester(move |binding| {
                let presented = replayed.clone().unwrap_or_else(|| evidence(&id, binding));
                recorded.lock().unwrap_or_else(|e| e.into_inner()).push(presented.clone());
                Ok(presented)
            })
            .with_admission(validate)
            .with_tickets(|r| answer(&r.request))
            .with_storage(move |request| {
                let record = client_of(request).and_then(|id| store.keyring(id));
                log.lock().unwrap_or_else(|e| e.into_inner()).push((request.clone(), record));
                StorageAction::Answer
            })
            .with_persist(match persist {
                Persist::Store => PersistAction::Store,
                Persist::Fail => PersistAction::Fail,
                Persist::Hold => PersistAction::Hold,
            });
        *self.connection(line) = Some(Connection {
            pair,
            serial,
            forged,
            replayed: is_replay,
            revoked_during: false,
            request,
            made_up,
            offered,
            storage,
            checked: 0,
            persisted: None,
            client_done: false,
            server_done: false,
            recorded: 0,
        });
    }

    /// A resume of `line`'s holder with its stored state (an agent that never joined
    /// makes a keyring up).
    fn start_resume(&mut self, line: Line, request: bool, persist: Persist) {
        let me = &self.agents[line.agent];
        let made_up = !line.thief && me.own.saved.is_none();
        let stored = if line.thief { me.thief.saved.clone() } else { me.own.saved.clone() };
        let Some(saved) = stored.or_else(|| {
            (!line.thief).then(|| SavedKeyring {
                client_id: me.id.clone(),
                server_pin: self.world.config.pin(),
                token_id: self.tokens[me.token].id(),
                keyring: boarding::keys::Keyring {
                    c2s: boarding::keys::SymmetricKey::from_bytes([7; 32]),
                    s2c: boarding::keys::SymmetricKey::from_bytes([8; 32]),
                },
                rotated_from: None,
            })
        }) else {
            return;
        };
        let request = if request { format!("renew {}", me.id).into_bytes() } else { Vec::new() };
        let offered = saved.offered();
        let config = ResumeConfig::new(saved).with_request(request.clone()).unwrap_or_else(|e| panic!("{e}"));
        let client = Client::resume(config, &mut self.world.rng());
        self.connect_with(line, client, false, None, request, made_up, persist, offered);
    }

    /// Copies what a connection sent into the record and what its holder stored into
    /// the holder, and checks what the connection's two sides did since the last sync.
    fn sync(&mut self, line: Line) {
        let id = self.agents[line.agent].id.clone();
        let Some(c) = self.agents[line.agent].holder(line.thief).connection.as_mut() else { return };
        c.pair.flush();
        for (dir, bytes) in &c.pair.log[c.recorded..] {
            self.recorded.push((c.serial, *dir, bytes.clone()));
        }
        c.recorded = c.pair.log.len();
        // A resume's request reaches the application only from the keyring's holder, and
        // as the agent sent it, however the network tampered.
        for asked in &c.pair.ticket_requests {
            assert!(!c.made_up, "a request under a made-up keyring reached the gateway's application");
            assert_eq!(asked.client.client_id(), &id, "a request for another client");
            assert_eq!(asked.request, c.request, "the application saw another request than the agent sent");
        }
        // Replayed evidence names another session's binding: refused before redemption.
        if c.replayed && !c.pair.admissions.is_empty() {
            let request = &c.pair.admissions[0];
            assert_ne!(request.evidence, evidence(&request.client_id, &request.binding), "a binding repeated");
            assert_eq!(
                c.pair.outcome().server,
                Standing::Failed(Refusal::Attestation.into()),
                "replayed evidence was not refused with AttestationRefused"
            );
            assert!(
                !c.pair.requests.iter().any(|r| matches!(r, StorageRequest::Redeem(_))),
                "replayed evidence reached redemption"
            );
        }
        let mut stored = None;
        if let Some(saved) = c.pair.saved.take() {
            assert!(!c.forged, "an agent with a forged secret got a keyring to persist");
            c.persisted = Some(saved.clone());
            stored = Some(saved);
        }
        let log = c.storage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let resume = !c.offered.is_empty();
        let lookup = log.iter().find(|(r, _)| matches!(r, StorageRequest::LookupKeyring { .. }));
        let offer = lookup.map(|(_, record)| standing(record.as_ref(), &c.offered));
        let retired = self.ever_retired.get(&id).cloned().unwrap_or_default();
        // A clone's record: what the rule wrote, and the resume refused.
        for (request, before) in &log[c.checked..] {
            if let StorageRequest::RecordClone { keyring_id, .. } = request {
                let listed = before.as_ref().is_some_and(|r| r.retired.iter().any(|k| k.id() == *keyring_id));
                let now = self.world.store.keyring(&id);
                let added = if listed { 1 } else { 0 };
                assert_eq!(clone_count(now.as_ref()), clone_count(before.as_ref()) + added, "the clone's record");
                let refusal = if listed { Refusal::RetiredKeyring } else { Refusal::UnknownClient };
                assert_eq!(c.pair.outcome().server, Standing::Failed(refusal.into()), "a recorded clone's resume");
            }
        }
        // A resume answered with a retired keyring asks, once its proof verifies, for the
        // clone's record and nothing else.
        if let Some(Offer::Retired(_)) = offer {
            let after: Vec<&StorageRequest> =
                log.iter().map(|(r, _)| r).filter(|r| !matches!(r, StorageRequest::LookupKeyring { .. })).collect();
            assert!(
                after.iter().all(|r| matches!(r, StorageRequest::RecordClone { .. })),
                "a resume with a retired keyring went on: {after:?}"
            );
            assert!(!c.pair.server.is_established(), "the gateway completed a resume with a retired keyring");
        }
        c.checked = log.len();

        // The agent completed: what it learned agrees with what the gateway held.
        let mut settled = None;
        if resume && !c.client_done && c.pair.client.is_established() {
            c.client_done = true;
            let info = c.pair.info.clone().unwrap_or_else(|| panic!("established without SessionInfo"));
            let record = lookup.and_then(|(_, r)| r.clone()).unwrap_or_else(|| panic!("completed against a decoy"));
            let used = match offer {
                Some(Offer::Current(k) | Offer::Retired(k)) => k,
                _ => panic!("the agent completed a resume the gateway answered with a decoy"),
            };
            if info.rotated {
                let new = c.persisted.as_ref().unwrap_or_else(|| panic!("rotated without storing a keyring"));
                assert_eq!(Offer::Current(used), offer.unwrap_or(Offer::Stranger), "rotated from a retired keyring");
                assert_eq!(new.rotated_from.as_ref().map(|k| k.id()), Some(used), "rotated from another keyring");
                assert_eq!(info.settled, None, "a rotation also settled");
            } else {
                assert!(c.persisted.is_none(), "stored a keyring in a resume that did not rotate");
                match &info.settled {
                    Some(s) => {
                        assert_eq!(c.offered.len(), 2, "settled after offering one keyring");
                        assert_eq!((s.keyring.id(), s.rotated_from.is_none()), (used, true), "settled otherwise");
                        settled = Some(s.clone());
                    }
                    None => assert_eq!(c.offered.len(), 1, "offered two keyrings and did not settle"),
                }
            }
            let _ = record;
        }

        // The gateway completed a resume: with a keyring that was current when it
        // confirmed or rotated it, and never one it had retired.
        if resume && !c.server_done && c.pair.server.is_established() {
            c.server_done = true;
            let peer = c.pair.peer.clone().unwrap_or_else(|| panic!("established without a peer"));
            let last = log.iter().rev().find(|(r, _)| {
                matches!(
                    r,
                    StorageRequest::ConfirmKeyring { .. }
                        | StorageRequest::CheckKeyring { .. }
                        | StorageRequest::RotateKeyring(_)
                )
            });
            let (used, before) = match last {
                Some((
                    StorageRequest::ConfirmKeyring { keyring_id, .. } | StorageRequest::CheckKeyring { keyring_id, .. },
                    before,
                )) => (*keyring_id, before.clone()),
                Some((StorageRequest::RotateKeyring(r), before)) => {
                    let to = c.persisted.as_ref().map(|s| s.keyring.clone());
                    assert_eq!(Some(&r.to), to.as_ref(), "the gateway rotated to another keyring than was stored");
                    let now = self.world.store.keyring(&id).map(|r| r.keyring.id());
                    assert_eq!(now, Some(r.to.id()), "the committed rotation is not in the store");
                    (r.from, before.clone())
                }
                // A core that does not check the keyring again at the end: the one looked up.
                _ => match (offer, lookup) {
                    (Some(Offer::Current(k)), Some((_, before))) => (k, before.clone()),
                    _ => panic!("a resume completed without a current keyring: {offer:?}"),
                },
            };
            assert_eq!(peer.rotated(), matches!(last, Some((StorageRequest::RotateKeyring(_), _))));
            assert!(c.offered.contains(&used), "completed with a keyring the agent did not offer");
            assert!(!retired.contains(&used), "the gateway completed a resume with a keyring it had retired");
            assert_eq!(before.map(|r| r.keyring.id()), Some(used), "completed with a keyring that was not current");
        }

        let me = &mut self.agents[line.agent];
        if let Some(saved) = stored {
            me.keep(line.thief, saved);
        }
        if let Some(saved) = settled {
            // The agent keeps the keyring the gateway holds, alone.
            me.keep(line.thief, saved);
        }
    }

    /// Checks what a transition changed in the store: every new or replaced keyring
    /// is a legal redemption (counted as an admission when new) or a rotation to a
    /// keyring a holder stored; records every retired keyring. `stepwise`: the change
    /// came from one delivered message, so a keyring cannot have been both written and
    /// confirmed by it.
    fn audit_store(&mut self, reference: &Reference, stepwise: bool) {
        let now = self.world.store.snapshot();
        for (client, record) in &now.keyrings {
            let retired = self.ever_retired.entry(client.clone()).or_default();
            retired.extend(record.retired.iter().map(|k| k.id()));
            let before = self.store.keyrings.get(client);
            if before.is_some_and(|b| b.keyring == record.keyring) {
                continue;
            }
            if let Some(b) = before.filter(|b| b.confirmed && record.retired.last() == Some(&b.keyring)) {
                // A rotation: confirmed, to a keyring a holder stored before its proof.
                assert!(record.confirmed && record.token_id == b.token_id, "a rotation rewrote the record");
                let agent = self.agents.iter().find(|a| &a.id == client).unwrap_or_else(|| panic!("{client:?}"));
                assert!(agent.stored.contains(&record.keyring.id()), "rotated to a keyring nobody stored");
                retired.insert(b.keyring.id());
                continue;
            }
            let t = self.token_index(record.token_id);
            assert!(reference.alive(t), "{client:?} admitted with token {t}, which is revoked or expired");
            assert!(!(stepwise && record.confirmed), "a keyring was written already confirmed");
            match before {
                None => {
                    let spec = &reference.tokens[t];
                    let used = self.store.tokens.get(&record.token_id).map_or(0, |r| r.use_count);
                    assert!(spec.max_uses == 0 || used < spec.max_uses, "token {t} admitted {client:?} exhausted");
                    self.admissions[t] += 1;
                }
                Some(b) => {
                    assert!(!b.confirmed && b.token_id == record.token_id, "a confirmed keyring was replaced");
                }
            }
        }
        self.store = now;
    }

    /// Checks a connection whose two sides are both established, then closes it.
    fn check_established(&mut self, line: Line) {
        let Some(c) = self.agents[line.agent].holder(line.thief).connection.as_ref() else { return };
        let outcome = c.pair.outcome();
        if outcome.server != Standing::Established {
            return;
        }
        if outcome.client != Standing::Established {
            // Only a resume with a request lets the gateway finish first: the agent's
            // ResumeFinished was its key confirmation, and the ResumeTicket is in
            // flight, lost or tampered with (the agent then fails, the gateway does not).
            let resumed = c.pair.peer.as_ref().is_some_and(|p| p.resumed());
            assert!(
                resumed && !c.request.is_empty(),
                "the gateway succeeded before the agent (no key confirmation): {:?}",
                outcome.client
            );
            return;
        }
        assert!(!c.forged, "established with a forged token secret");
        assert!(!c.replayed, "established with evidence replayed from another session");
        let c = self.agents[line.agent].holder(line.thief).connection.take().unwrap_or_else(|| unreachable!());
        let peer = c.pair.peer.clone().unwrap_or_else(|| panic!("established without a peer"));
        let me = &self.agents[line.agent];
        let held = if line.thief { &me.thief } else { &me.own };
        let attested = peer.attested().map(|a| a.name().to_owned());
        // Every join is attested with its client id; a resume carries the identity
        // attested at the join that created its keyring.
        assert_eq!(attested.as_deref(), Some(me.id.as_str()), "wrong attested identity");
        assert_eq!(peer.client_id(), &me.id, "the gateway accepted another identity");
        assert_eq!(peer.token_id(), self.tokens[me.token].id(), "the gateway recorded another token");
        match self.world.store.keyring(&me.id) {
            Some(record) => {
                assert!(record.confirmed);
                // A thief may have rotated the keyring between the gateway's completion
                // and the agent's (the ResumeTicket in flight meanwhile).
                if !me.thief_acted {
                    assert_eq!(Some(&record.keyring), held.saved.as_ref().map(|s| &s.keyring), "keyrings disagree");
                }
            }
            // The gateway checks the keyring when a resume completes, so only a client
            // revoked after that (a resume with a request, its ResumeTicket in flight)
            // completes without a record.
            None => assert!(c.revoked_during && peer.resumed(), "established without a keyring"),
        }
        let (mut client, mut server) = c.pair.into_sessions().unwrap_or_else(|e| panic!("{e}"));
        let cross = |tx: &mut boarding::channel::Channel, rx: &mut boarding::channel::Channel, payload: &[u8]| {
            let mut frame = vec![0u8; payload.len() + FRAME_OVERHEAD];
            let n = tx.seal(payload, &mut frame).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rx.open(&frame[..n]), Ok(Received::Data(payload)), "session keys disagree");
        };
        // A resume's request was answered, in its ResumeTicket; no request, no ticket.
        if peer.resumed() {
            let expected = if c.request.is_empty() { Vec::new() } else { answer(&c.request) };
            assert_eq!(client.info.ticket, expected, "the agent got another ticket than its request's answer");
            assert_eq!(client.info.rotated, peer.rotated(), "the two ends disagree on the rotation");
        }
        cross(&mut client.channel, &mut server.channel, b"up");
        cross(&mut server.channel, &mut client.channel, b"down");
        self.established += 1;
    }

    /// Delivers everything in flight on every connection, alternating directions;
    /// asserts that the network falls quiet within a bound.
    fn settle(&mut self, reference: &Reference) {
        for line in self.lines() {
            let mut steps = 0;
            while let Some(c) = self.connection(line).as_mut() {
                let moved = c.pair.step(Dir::ToServer) | c.pair.step(Dir::ToClient) | c.pair.release_persist(Ok(()));
                if !moved {
                    break;
                }
                steps += 1;
                assert!(steps <= 32, "{line:?}'s connection does not fall quiet under fair delivery");
                self.sync(line);
                self.audit_store(reference, true);
                self.check_established(line);
            }
        }
    }

    /// One resume of `line`'s holder over a perfect network, at the end: it completes
    /// iff the gateway's confirmed keyring is among those it offers, and is refused as a
    /// clone's, recorded, iff it offers only keyrings the gateway retired.
    fn final_resume(&mut self, line: Line, reference: &Reference) {
        let me = &self.agents[line.agent];
        let Some(saved) = (if line.thief { me.thief.saved.clone() } else { me.own.saved.clone() }) else { return };
        let record = self.world.store.keyring(&me.id);
        let offer = standing(record.as_ref().filter(|r| r.confirmed), &saved.offered());
        let mut pair = self.world.resume_pair(&saved);
        let outcome = pair.drive();
        let after = self.world.store.keyring(&me.id);
        match offer {
            Offer::Current(_) => {
                assert!(outcome.both_established(), "{line:?} cannot resume: {outcome:?}");
                let held = pair.saved.take().or(pair.info.and_then(|i| i.settled)).unwrap_or(saved);
                assert_eq!(after.map(|r| r.keyring.id()), Some(held.keyring.id()), "{line:?}: the store moved away");
                self.agents[line.agent].keep(line.thief, held);
            }
            Offer::Retired(_) => {
                let refusal = Standing::Failed(Error::Refused(Refusal::RetiredKeyring));
                assert_eq!(outcome.server, refusal, "{line:?}: a retired keyring was not refused as a clone's");
                assert_eq!(clone_count(after.as_ref()), clone_count(record.as_ref()) + 1, "the clone went unrecorded");
            }
            Offer::Stranger => assert!(!outcome.both_established(), "{line:?} resumed with a keyring nobody holds"),
        }
        self.audit_store(reference, false);
    }
}

struct Harness;

impl StateMachineTest for Harness {
    type SystemUnderTest = System;
    type Reference = Reference;

    fn init_test(reference: &Reference) -> System {
        let mut world = World::new(reference.seed);
        if let Some(age) = reference.rotation_max_age {
            world = world.with_rotation(RotationPolicy { max_age: Some(age) });
        }
        let tokens: Vec<BootstrapToken> =
            reference.tokens.iter().map(|spec| world.issue_token(spec.ttl, spec.max_uses)).collect();
        let agents = reference
            .holds
            .iter()
            .enumerate()
            .map(|(i, &token)| Agent {
                id: ClientId::new(&format!("agent-{i}")).unwrap_or_else(|e| panic!("{e}")),
                token,
                own: Holder::default(),
                thief: Holder::default(),
                thief_acted: false,
                stored: HashSet::new(),
            })
            .collect();
        let store = world.store.snapshot();
        System {
            world,
            admissions: vec![0; tokens.len()],
            tokens,
            agents,
            recorded: Vec::new(),
            serial: 0,
            store,
            ever_retired: BTreeMap::new(),
            established: 0,
            evidence: Arc::default(),
        }
    }

    fn apply(mut sys: System, reference: &Reference, transition: Transition) -> System {
        match transition {
            Transition::StartJoin { agent, forged } => {
                let holder = &sys.agents[agent];
                let mut token = sys.tokens[holder.token].clone();
                if forged {
                    let mut secret = *token.secret().expose();
                    secret[0] = if secret[0] == b'a' { b'b' } else { b'a' };
                    let secret = TokenSecret::from_bytes(&secret).unwrap_or_else(|e| panic!("{e}"));
                    token = BootstrapToken::new(token.id(), secret);
                }
                let config = sys.world.join_config(holder.id.as_str(), &token);
                let client = Client::join(config, &mut sys.world.rng());
                sys.connect(agent, client, forged, None);
            }
            Transition::StartReplayedJoin { agent, pick } => {
                let holder = &sys.agents[agent];
                let config = sys.world.join_config(holder.id.as_str(), &sys.tokens[holder.token]);
                let client = Client::join(config, &mut sys.world.rng());
                sys.connect(agent, client, false, Some(pick));
            }
            Transition::StartResume { agent, request, persist } => {
                sys.start_resume(Line { agent, thief: false }, request, persist);
            }
            Transition::Steal { agent } => {
                let line = Line { agent, thief: false };
                sys.sync(line);
                let copy = sys.agents[agent].own.saved.clone();
                if copy.is_some() {
                    sys.agents[agent].thief.saved = copy;
                }
            }
            Transition::StartThiefResume { agent, request } => {
                if sys.agents[agent].thief.saved.is_some() {
                    sys.agents[agent].thief_acted = true;
                    sys.start_resume(Line { agent, thief: true }, request, Persist::Store);
                }
            }
            Transition::RequestRotation { agent } => {
                sys.world.store.request_rotation(&sys.agents[agent].id);
            }
            Transition::ReleasePersist { line } => {
                if let Some(pair) = sys.line(line) {
                    pair.release_persist(Ok(()));
                }
            }
            Transition::Deliver { line, dir } => {
                if let Some(pair) = sys.line(line) {
                    pair.step(dir);
                }
            }
            Transition::Drop { line, dir } => {
                if let Some(pair) = sys.line(line) {
                    pair.in_flight(dir).pop_front();
                }
            }
            Transition::Duplicate { line, dir } => {
                if let Some(queue) = sys.line(line).map(|p| p.in_flight(dir))
                    && let Some(front) = queue.front().cloned()
                {
                    queue.push_front(front);
                }
            }
            Transition::Reorder { line, dir } => {
                if let Some(queue) = sys.line(line).map(|p| p.in_flight(dir))
                    && !queue.is_empty()
                {
                    queue.rotate_left(1);
                }
            }
            Transition::Tamper { line, dir, bit } => {
                if let Some(front) = sys.line(line).and_then(|p| p.in_flight(dir).front_mut())
                    && !front.is_empty()
                {
                    let bit = bit % (front.len() * 8);
                    front[bit / 8] ^= 1 << (bit % 8);
                }
            }
            Transition::Replay { line, dir, pick } => {
                if let Some(serial) = sys.connection(line).as_ref().map(|c| c.serial) {
                    let others: Vec<Vec<u8>> = sys
                        .recorded
                        .iter()
                        .filter(|(s, d, _)| *s != serial && *d == dir)
                        .map(|(_, _, b)| b.clone())
                        .collect();
                    if !others.is_empty()
                        && let Some(pair) = sys.line(line)
                    {
                        pair.in_flight(dir).push_front(others[pick % others.len()].clone());
                    }
                }
            }
            Transition::AdvanceClock { secs } => {
                sys.world.now += secs;
                let now = sys.world.now;
                for agent in &mut sys.agents {
                    for c in [&mut agent.own, &mut agent.thief].into_iter().filter_map(|h| h.connection.as_mut()) {
                        c.pair.now = now;
                    }
                }
            }
            Transition::RevokeToken { token } => {
                sys.world.store.revoke_token(sys.tokens[token].id());
            }
            Transition::RevokeClient { agent } => {
                sys.world.store.revoke_client(&sys.agents[agent].id);
                for thief in [false, true] {
                    if let Some(c) = sys.agents[agent].holder(thief).connection.as_mut() {
                        c.revoked_during = true;
                    }
                }
            }
            Transition::RestartGateway => {
                for line in sys.lines() {
                    sys.sync(line);
                    sys.check_established(line);
                    *sys.connection(line) = None;
                }
            }
            Transition::Settle => sys.settle(reference),
        }
        for line in sys.lines() {
            sys.sync(line);
        }
        sys.audit_store(reference, true);
        for line in sys.lines() {
            sys.check_established(line);
        }
        sys
    }

    fn check_invariants(sys: &System, reference: &Reference) {
        let store = sys.world.store.snapshot();
        for (t, token) in sys.tokens.iter().enumerate() {
            let Some(record) = store.tokens.get(&token.id()) else {
                assert!(reference.tokens[t].revoked, "token {t} vanished without being revoked");
                continue;
            };
            let spec = &reference.tokens[t];
            assert!(spec.max_uses == 0 || record.use_count <= spec.max_uses, "token {t} over-used");
            assert_eq!(record.use_count, sys.admissions[t], "token {t} charged other than once per admission");
        }
        for agent in &sys.agents {
            let Some(record) = store.keyrings.get(&agent.id) else { continue };
            if !agent.thief_acted {
                // No copy was used: the agent alone holds the keys.
                assert!(record.clone_suspected.is_none(), "{:?}: a clone suspected with no thief", agent.id);
            }
            if record.confirmed {
                let id = record.keyring.id();
                assert!(agent.stored.contains(&id), "the gateway confirmed a keyring {:?} never persisted", agent.id);
                if !agent.thief_acted {
                    assert!(agent.offers(false, &id), "{:?} is locked out with no thief", agent.id);
                }
            }
        }
    }

    fn teardown(mut sys: System, reference: Reference) {
        sys.settle(&reference);
        // Liveness over a perfect network, agent by agent (then its thief).
        for agent in 0..sys.agents.len() {
            sys.agents[agent].own.connection = None;
            sys.agents[agent].thief.connection = None;
            let me = &sys.agents[agent];
            let record = sys.world.store.keyring(&me.id);
            if record.as_ref().is_some_and(|r| r.confirmed) {
                let thief_acted = me.thief_acted;
                assert!(me.own.saved.is_some(), "confirmed keyring, nothing persisted");
                let offered = me.own.saved.as_ref().map(SavedKeyring::offered).unwrap_or_default();
                if !thief_acted {
                    let offer = standing(record.as_ref(), &offered);
                    assert!(matches!(offer, Offer::Current(_)), "agent {agent} is locked out: {offer:?}");
                }
                sys.final_resume(Line { agent, thief: false }, &reference);
                sys.final_resume(Line { agent, thief: true }, &reference);
                continue;
            }
            let t = me.token;
            let used = sys.world.store.token(sys.tokens[t].id()).map_or(0, |r| r.use_count);
            let spec = &reference.tokens[t];
            let retry = record.is_some_and(|r| r.token_id == sys.tokens[t].id());
            let admits = reference.alive(t) && (retry || spec.max_uses == 0 || used < spec.max_uses);
            let id = me.id.clone();
            let mut pair = sys
                .world
                .join_pair(me.id.as_str(), &sys.tokens[t])
                .with_attester(move |binding| Ok(evidence(&id, binding)))
                .with_admission(validate);
            let outcome = pair.drive();
            assert_eq!(outcome.both_established(), admits, "agent {agent} joining with token {t}: {outcome:?}");
            if let Some(saved) = pair.saved.take() {
                sys.agents[agent].keep(false, saved);
            }
            sys.audit_store(&reference, false);
        }
        let _ = sys.established;
    }
}

/// The run configuration: network transitions on a line without a connection are
/// rejected by the preconditions while sequences are generated, so the reject budget
/// grows with the number of cases.
fn machine_config() -> proptest::test_runner::Config {
    let base = config(512, 16);
    proptest::test_runner::Config { max_local_rejects: base.cases.saturating_mul(1_000), ..base }
}

prop_state_machine! {
    #![proptest_config(machine_config())]

    #[test]
    fn gateway_agents_store_and_adversarial_network(sequential 1..if deep() { 200 } else { 100 } => Harness);
}
