//! A model-based test (`proptest-state-machine`) of one gateway, several agents, a
//! token store and an adversarial network, against the real core through the memory
//! driver.
//!
//! The reference model ([`Reference`]) holds what the test controls: the virtual
//! clock, the tokens (expiry, maximum uses, revoked or not), which agent holds which
//! token and which agents have a connection open. The system under test ([`System`])
//! runs real `Client`s and a fresh real `Server` per connection over one shared
//! `MemoryStore`, stepping the network one message at a time.
//!
//! Every agent attests its joins: its evidence commits to its client id and the
//! session's attestation binding, and the gateway's application refuses evidence
//! that does not commit to its own binding (`AttestationRefused`).
//!
//! Transitions: an agent starts a join (with its token, or a forged one with the
//! right id and a wrong secret, or presenting evidence recorded from any earlier
//! session instead of its own, as a thief of a token but not of a node key would) or a
//! resume (with or without an application request, which the gateway's application
//! answers in a `ResumeTicket`); the network delivers, drops,
//! duplicates, reorders or tampers with (flips one bit of) the next message of a
//! connection, or replays into it a message recorded in another session; the clock
//! moves past expiries; a token or a client is revoked; the gateway restarts (every
//! in-flight handshake dies; the store survives); the network settles (delivers
//! everything fairly).
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
//! * a keyring the gateway holds as confirmed is the one the agent persisted;
//! * replayed evidence never gets a join past the gateway's validator: its binding is
//!   another session's, so the gateway refuses it with `AttestationRefused` before any
//!   redemption; a completed join carries the agent's attested identity, and so does a resume;
//! * a resume's request reaches the gateway's application only from the holder of the
//!   keyring, exactly as the agent sent it, and the agent's ticket is the answer to it;
//! * a fair network always brings every connection to quiescence within a bound.
//!
//! At the end of each case the network settles and every agent tries once more over
//! a perfect network: a resume must succeed iff the gateway holds its confirmed
//! keyring, and a join must succeed iff the reference says its token still admits it.

use std::fmt;
use std::sync::{Arc, Mutex};

use boarding::attestation::{AttestationBinding, AttestedIdentity};
use boarding::channel::{FRAME_OVERHEAD, Received};
use boarding::client::{Client, ResumeConfig, SavedKeyring};
use boarding::error::Refusal;
use boarding::identity::ClientId;
use boarding::server::{Admission, AdmissionRequest};
use boarding::storage::StorageRequest;
use boarding::token::{BootstrapToken, TokenSecret};
use boarding_memory::{Dir, Pair, Standing, StoreSnapshot, World};
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
    /// Which agents have a connection open.
    connected: Vec<bool>,
}

impl Reference {
    /// Whether token `t` may still be redeemed at all (uses aside).
    fn alive(&self, t: usize) -> bool {
        let spec = &self.tokens[t];
        !spec.revoked && spec.ttl.is_none_or(|ttl| self.elapsed < ttl)
    }
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
    },
    Deliver {
        agent: usize,
        dir: Dir,
    },
    Drop {
        agent: usize,
        dir: Dir,
    },
    Duplicate {
        agent: usize,
        dir: Dir,
    },
    Reorder {
        agent: usize,
        dir: Dir,
    },
    Tamper {
        agent: usize,
        dir: Dir,
        bit: usize,
    },
    Replay {
        agent: usize,
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
            Self::StartResume { agent, request: false } => write!(f, "agent {agent} starts a resume"),
            Self::StartResume { agent, request: true } => write!(f, "agent {agent} starts a resume with a request"),
            Self::Deliver { agent, dir } => write!(f, "deliver the next message {} on agent {agent}'s line", to(dir)),
            Self::Drop { agent, dir } => write!(f, "drop the next message {} on agent {agent}'s line", to(dir)),
            Self::Duplicate { agent, dir } => {
                write!(f, "duplicate the next message {} on agent {agent}'s line", to(dir))
            }
            Self::Reorder { agent, dir } => {
                write!(f, "move the next message {} on agent {agent}'s line to the back", to(dir))
            }
            Self::Tamper { agent, dir, bit } => {
                write!(f, "flip bit {bit} (mod length) of the next message {} on agent {agent}'s line", to(dir))
            }
            Self::Replay { agent, dir, pick } => {
                write!(
                    f,
                    "replay recorded message #{pick} (mod count) from another session {} on agent {agent}'s line",
                    to(dir)
                )
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

impl ReferenceStateMachine for Reference {
    type State = Self;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Self> {
        let token = (proptest::option::weighted(0.6, 30u64..900), 0u32..3).prop_map(|(ttl, max_uses)| TokenSpec {
            ttl,
            max_uses,
            revoked: false,
        });
        (any::<u64>(), proptest::collection::vec(token, 1..=3), 2usize..=3)
            .prop_flat_map(|(seed, tokens, agents)| {
                let n = tokens.len();
                (Just(seed), Just(tokens), proptest::collection::vec(0..n, agents))
            })
            .prop_map(|(seed, tokens, holds)| {
                let connected = vec![false; holds.len()];
                Reference { seed, elapsed: 0, tokens, holds, connected }
            })
            .boxed()
    }

    fn transitions(state: &Self) -> BoxedStrategy<Transition> {
        let agents = state.holds.len();
        let tokens = state.tokens.len();
        let agent = 0..agents;
        prop_oneof![
            4 => (agent.clone(), proptest::bool::weighted(0.15))
                .prop_map(|(agent, forged)| Transition::StartJoin { agent, forged }),
            1 => (agent.clone(), any::<usize>()).prop_map(|(agent, pick)| Transition::StartReplayedJoin { agent, pick }),
            2 => (agent.clone(), any::<bool>()).prop_map(|(agent, request)| Transition::StartResume { agent, request }),
            24 => (agent.clone(), direction()).prop_map(|(agent, dir)| Transition::Deliver { agent, dir }),
            2 => (agent.clone(), direction()).prop_map(|(agent, dir)| Transition::Drop { agent, dir }),
            1 => (agent.clone(), direction()).prop_map(|(agent, dir)| Transition::Duplicate { agent, dir }),
            1 => (agent.clone(), direction()).prop_map(|(agent, dir)| Transition::Reorder { agent, dir }),
            2 => (agent.clone(), direction(), any::<usize>())
                .prop_map(|(agent, dir, bit)| Transition::Tamper { agent, dir, bit }),
            2 => (agent.clone(), direction(), any::<usize>())
                .prop_map(|(agent, dir, pick)| Transition::Replay { agent, dir, pick }),
            1 => (1u64..600).prop_map(|secs| Transition::AdvanceClock { secs }),
            1 => (0..tokens).prop_map(|token| Transition::RevokeToken { token }),
            1 => agent.prop_map(|agent| Transition::RevokeClient { agent }),
            1 => Just(Transition::RestartGateway),
            2 => Just(Transition::Settle),
        ]
        .boxed()
    }

    fn preconditions(state: &Self, transition: &Transition) -> bool {
        // Shrinking may drop agents or tokens: transitions naming them are then invalid.
        let agent_ok = |a: &usize| *a < state.holds.len();
        match transition {
            Transition::Deliver { agent, .. }
            | Transition::Drop { agent, .. }
            | Transition::Duplicate { agent, .. }
            | Transition::Reorder { agent, .. }
            | Transition::Tamper { agent, .. }
            | Transition::Replay { agent, .. } => state.connected.get(*agent).copied().unwrap_or(false),
            Transition::StartJoin { agent, .. }
            | Transition::StartReplayedJoin { agent, .. }
            | Transition::StartResume { agent, .. }
            | Transition::RevokeClient { agent } => agent_ok(agent),
            Transition::RevokeToken { token } => *token < state.tokens.len(),
            Transition::AdvanceClock { .. } | Transition::RestartGateway | Transition::Settle => true,
        }
    }

    fn apply(mut state: Self, transition: &Transition) -> Self {
        match transition {
            Transition::StartJoin { agent, .. }
            | Transition::StartReplayedJoin { agent, .. }
            | Transition::StartResume { agent, .. } => state.connected[*agent] = true,
            Transition::AdvanceClock { secs } => state.elapsed += secs,
            Transition::RevokeToken { token } => state.tokens[*token].revoked = true,
            Transition::RestartGateway => state.connected.iter_mut().for_each(|c| *c = false),
            _ => {}
        }
        state
    }
}

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
    /// How many of `pair.log` were copied into the global record.
    recorded: usize,
}

struct Agent {
    id: ClientId,
    token: usize,
    saved: Option<SavedKeyring>,
    connection: Option<Connection>,
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

impl System {
    fn token_index(&self, id: boarding::token::TokenId) -> usize {
        self.tokens.iter().position(|t| t.id() == id).unwrap_or_else(|| panic!("unknown token {id}"))
    }

    /// The pair on an agent's open connection.
    fn line(&mut self, agent: usize) -> Option<&mut Pair> {
        self.agents[agent].connection.as_mut().map(|c| &mut c.pair)
    }

    fn connect(&mut self, agent: usize, client: Client, forged: bool, replay: Option<usize>) {
        self.connect_with(agent, client, forged, replay, Vec::new(), false);
    }

    fn connect_with(
        &mut self,
        agent: usize,
        client: Client,
        forged: bool,
        replay: Option<usize>,
        request: Vec<u8>,
        made_up: bool,
    ) {
        self.sync(agent);
        let serial = self.serial;
        self.serial += 1;
        let recorded = self.evidence.clone();
        let replayed = replay.and_then(|pick| {
            let seen = recorded.lock().unwrap_or_else(|e| e.into_inner());
            (!seen.is_empty()).then(|| seen[pick % seen.len()].clone())
        });
        let id = self.agents[agent].id.clone();
        let is_replay = replayed.is_some();
        let pair = self
            .world
            .pair_with(client)
            .with_attester(move |binding| {
                let presented = replayed.clone().unwrap_or_else(|| evidence(&id, binding));
                recorded.lock().unwrap_or_else(|e| e.into_inner()).push(presented.clone());
                Ok(presented)
            })
            .with_admission(validate)
            .with_tickets(|r| answer(&r.request));
        self.agents[agent].connection = Some(Connection {
            pair,
            serial,
            forged,
            replayed: is_replay,
            revoked_during: false,
            request,
            made_up,
            recorded: 0,
        });
    }

    /// Copies what a connection sent into the record and what its agent persisted
    /// into the agent.
    fn sync(&mut self, agent: usize) {
        let id = self.agents[agent].id.clone();
        let Some(c) = self.agents[agent].connection.as_mut() else { return };
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
        if let Some(saved) = c.pair.saved.take() {
            assert!(!c.forged, "an agent with a forged secret got a keyring to persist");
            self.agents[agent].saved = Some(saved);
        }
    }

    /// Checks what a transition changed in the store: every new or replaced keyring
    /// is a legal redemption, and new ones are counted as admissions. `stepwise`: the
    /// change came from one delivered message, so a keyring cannot have been both
    /// written and confirmed by it.
    fn audit_store(&mut self, reference: &Reference, stepwise: bool) {
        let now = self.world.store.snapshot();
        for (client, record) in &now.keyrings {
            let before = self.store.keyrings.get(client);
            if before.is_some_and(|b| b.keyring == record.keyring) {
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
    fn check_established(&mut self, agent: usize) {
        let Some(c) = self.agents[agent].connection.as_ref() else { return };
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
        let c = self.agents[agent].connection.take().unwrap_or_else(|| unreachable!());
        let peer = c.pair.peer.clone().unwrap_or_else(|| panic!("established without a peer"));
        let me = &self.agents[agent];
        let attested = peer.attested().map(|a| a.name().to_owned());
        // Every join is attested with its client id; a resume carries the identity
        // attested at the join that created its keyring.
        assert_eq!(attested.as_deref(), Some(me.id.as_str()), "wrong attested identity");
        assert_eq!(peer.client_id(), &me.id, "the gateway accepted another identity");
        assert_eq!(peer.token_id(), self.tokens[me.token].id(), "the gateway recorded another token");
        match self.world.store.keyring(&me.id) {
            Some(record) => {
                assert!(record.confirmed);
                assert_eq!(Some(&record.keyring), me.saved.as_ref().map(|s| &s.keyring), "keyrings disagree");
            }
            // A resume of a confirmed keyring reads the store once, at its hello: a
            // revocation during the handshake does not stop it in the core (spec §11; the
            // smol gateway closes such a session once registered).
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
        }
        cross(&mut client.channel, &mut server.channel, b"up");
        cross(&mut server.channel, &mut client.channel, b"down");
        self.established += 1;
    }

    /// Delivers everything in flight on every connection, alternating directions;
    /// asserts that the network falls quiet within a bound.
    fn settle(&mut self, reference: &Reference) {
        for agent in 0..self.agents.len() {
            let mut steps = 0;
            while let Some(c) = self.agents[agent].connection.as_mut() {
                let moved = c.pair.step(Dir::ToServer) | c.pair.step(Dir::ToClient);
                if !moved {
                    break;
                }
                steps += 1;
                assert!(steps <= 32, "agent {agent}'s connection does not fall quiet under fair delivery");
                self.sync(agent);
                self.audit_store(reference, true);
                self.check_established(agent);
            }
        }
    }
}

struct Harness;

impl StateMachineTest for Harness {
    type SystemUnderTest = System;
    type Reference = Reference;

    fn init_test(reference: &Reference) -> System {
        let world = World::new(reference.seed);
        let tokens: Vec<BootstrapToken> =
            reference.tokens.iter().map(|spec| world.issue_token(spec.ttl, spec.max_uses)).collect();
        let agents = reference
            .holds
            .iter()
            .enumerate()
            .map(|(i, &token)| Agent {
                id: ClientId::new(&format!("agent-{i}")).unwrap_or_else(|e| panic!("{e}")),
                token,
                saved: None,
                connection: None,
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
            Transition::StartResume { agent, request } => {
                let made_up = sys.agents[agent].saved.is_none();
                // An agent that never joined resumes with a keyring of its own making.
                let saved = sys.agents[agent].saved.clone().unwrap_or_else(|| SavedKeyring {
                    client_id: sys.agents[agent].id.clone(),
                    server_pin: sys.world.config.pin(),
                    token_id: sys.tokens[sys.agents[agent].token].id(),
                    keyring: boarding::keys::Keyring {
                        c2s: boarding::keys::SymmetricKey::from_bytes([7; 32]),
                        s2c: boarding::keys::SymmetricKey::from_bytes([8; 32]),
                    },
                });
                let request = if request { format!("renew {}", sys.agents[agent].id).into_bytes() } else { Vec::new() };
                let config = ResumeConfig::new(saved).with_request(request.clone()).unwrap_or_else(|e| panic!("{e}"));
                let client = Client::resume(config, &mut sys.world.rng());
                sys.connect_with(agent, client, false, None, request, made_up);
            }
            Transition::Deliver { agent, dir } => {
                if let Some(pair) = sys.line(agent) {
                    pair.step(dir);
                }
            }
            Transition::Drop { agent, dir } => {
                if let Some(pair) = sys.line(agent) {
                    pair.in_flight(dir).pop_front();
                }
            }
            Transition::Duplicate { agent, dir } => {
                if let Some(queue) = sys.line(agent).map(|p| p.in_flight(dir))
                    && let Some(front) = queue.front().cloned()
                {
                    queue.push_front(front);
                }
            }
            Transition::Reorder { agent, dir } => {
                if let Some(queue) = sys.line(agent).map(|p| p.in_flight(dir))
                    && !queue.is_empty()
                {
                    queue.rotate_left(1);
                }
            }
            Transition::Tamper { agent, dir, bit } => {
                if let Some(front) = sys.line(agent).and_then(|p| p.in_flight(dir).front_mut())
                    && !front.is_empty()
                {
                    let bit = bit % (front.len() * 8);
                    front[bit / 8] ^= 1 << (bit % 8);
                }
            }
            Transition::Replay { agent, dir, pick } => {
                if let Some(serial) = sys.agents[agent].connection.as_ref().map(|c| c.serial) {
                    let others: Vec<Vec<u8>> = sys
                        .recorded
                        .iter()
                        .filter(|(s, d, _)| *s != serial && *d == dir)
                        .map(|(_, _, b)| b.clone())
                        .collect();
                    if !others.is_empty()
                        && let Some(pair) = sys.line(agent)
                    {
                        pair.in_flight(dir).push_front(others[pick % others.len()].clone());
                    }
                }
            }
            Transition::AdvanceClock { secs } => {
                sys.world.now += secs;
                let now = sys.world.now;
                for c in sys.agents.iter_mut().filter_map(|a| a.connection.as_mut()) {
                    c.pair.now = now;
                }
            }
            Transition::RevokeToken { token } => {
                sys.world.store.revoke_token(sys.tokens[token].id());
            }
            Transition::RevokeClient { agent } => {
                sys.world.store.revoke_client(&sys.agents[agent].id);
                if let Some(c) = sys.agents[agent].connection.as_mut() {
                    c.revoked_during = true;
                }
            }
            Transition::RestartGateway => {
                for agent in 0..sys.agents.len() {
                    sys.sync(agent);
                    sys.check_established(agent);
                    sys.agents[agent].connection = None;
                }
            }
            Transition::Settle => sys.settle(reference),
        }
        for agent in 0..sys.agents.len() {
            sys.sync(agent);
        }
        sys.audit_store(reference, true);
        for agent in 0..sys.agents.len() {
            sys.check_established(agent);
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
            if let Some(record) = store.keyrings.get(&agent.id)
                && record.confirmed
            {
                let saved = agent.saved.as_ref().map(|s| &s.keyring);
                assert_eq!(
                    saved,
                    Some(&record.keyring),
                    "the gateway confirmed a keyring {:?} never persisted",
                    agent.id
                );
            }
        }
    }

    fn teardown(mut sys: System, reference: Reference) {
        sys.settle(&reference);
        // Liveness over a perfect network, agent by agent.
        for agent in 0..sys.agents.len() {
            sys.agents[agent].connection = None;
            let me = &sys.agents[agent];
            let record = sys.world.store.keyring(&me.id);
            if let Some(record) = record.as_ref().filter(|r| r.confirmed) {
                let saved = me.saved.clone().unwrap_or_else(|| panic!("confirmed keyring, nothing persisted"));
                assert_eq!(saved.keyring, record.keyring);
                let mut pair = sys.world.resume_pair(&saved);
                let outcome = pair.drive();
                assert!(outcome.both_established(), "agent {agent} cannot resume: {outcome:?}");
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
                sys.agents[agent].saved = Some(saved);
            }
            sys.audit_store(&reference, false);
        }
        let _ = sys.established;
    }
}

/// The run configuration: network transitions on an agent without a connection are
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
