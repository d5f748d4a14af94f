//! The whole-session target: real agents and a real gateway (real crypto, one shared
//! in-memory store) over a network the fuzzer controls. Each connection is a memory
//! driver [`Pair`], whose one run loop drains both sides and answers their requests
//! through hooks the fuzzer steers. Each input byte picks a connection and an action:
//! deliver, drop, duplicate, reorder, flip a bit, split, truncate, inject any message
//! recorded earlier in the run, acknowledge or fail a persist, fail, hold, release or
//! fail late the gateway's storage requests, make an agent present evidence recorded
//! from another session, refuse the next admission or admit it
//! with a ticket of any length, answer either side what it did not ask for, open a new
//! join (a retry, or a second client) or a resume, and send channel data once a
//! session is up. The worlds are seeded, so every input replays exactly.
//!
//! Asserted after every action:
//! * an agent completes only if the head of what it received is exactly what its
//!   gateway sent, and a gateway asks for admission, redeems or reports a verified
//!   client only if the head of what it received is exactly what its agent sent:
//!   nothing tampered is accepted; it redeems only what its application admitted;
//! * a failure is reported as an output and sends at most one alert, last; an answer
//!   nobody asked for is misuse and changes nothing;
//! * when both ends of a connection complete they hold the same keys (a frame sealed
//!   on either end opens on the other), the gateway's verified client names the
//!   agent's client id, token and kind, the agent received the admitted ticket, and the
//!   store holds the agent's keyring, confirmed;
//! * on the channel, only the next genuine frame is ever accepted as data;
//! * no two sessions share an attestation binding; evidence that does not commit to
//!   the session's binding (a replay) is refused with `AttestationRefused`, and the
//!   verified client of a join, and of a resume, carries the identity attested at the join;
//! * the token is charged exactly once per client id it binds (a retry is free, a
//!   refused admission costs nothing), never beyond its uses, and a confirmed keyring
//!   never changes and is one an agent acknowledged persisting.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use boarding::Error;
use boarding::attestation::{AttestationBinding, AttestedIdentity};
use boarding::channel::Received;
use boarding::client::{ClientSession, PersistFailed, SavedKeyring};
use boarding::error::{LocalFailure, Refusal};
use boarding::identity::ClientId;
use boarding::keys::KeyringId;
use boarding::messages::MAX_TICKET;
use boarding::server::{Admission, AdmissionRequest, ServerSession};
use boarding::storage::{StorageAnswer, StorageRequest};
use boarding::token::BootstrapToken;
use boarding_memory::{Dir, Pair, PersistAction, StorageAction, World};

use super::channel::{Receiver, Sealed};
use super::contract::{check_failure, probe_client_misuse, probe_server_misuse};
use super::fixtures::{check_emitted, concat};
use super::input::Input;

/// The client ids agents may use.
pub const CLIENT_IDS: [&str; 2] = ["node-a", "node-b"];
/// Most connections in one run.
pub const MAX_CONNECTIONS: usize = 6;
/// Most actions in one run.
pub const MAX_ACTIONS: usize = 1024;

/// The actions, by the low four bits of an action byte (the high four bits pick the
/// connection). The seed generator writes scripts with these.
pub mod action {
    /// Deliver the next message to the gateway.
    pub const TO_SERVER: u8 = 0;
    /// Deliver the next message to the agent.
    pub const TO_CLIENT: u8 = 2;
    /// Drop the next message (parameter byte: direction).
    pub const DROP: u8 = 4;
    /// Duplicate the next message (parameter: direction).
    pub const DUPLICATE: u8 = 5;
    /// Swap the next two messages (parameter: direction).
    pub const REORDER: u8 = 6;
    /// Flip a bit of the next message (parameter: direction, then a u16 bit index).
    pub const FLIP: u8 = 7;
    /// Split the next message in two at a point (parameter: direction, then a u16).
    pub const SPLIT: u8 = 8;
    /// Cut bytes off the end of the next message (parameter: direction and count).
    pub const TRUNCATE: u8 = 9;
    /// Inject a message recorded earlier in the run (parameter: direction, then u16 index).
    pub const INJECT: u8 = 10;
    /// Tell the agent its keyring is stored.
    pub const PERSIST: u8 = 11;
    /// Make the gateway's next storage request fail.
    pub const FAIL_STORAGE: u8 = 12;
    /// Open a new connection (parameter: bit 0 resume, then the client id or keyring).
    pub const CONNECT: u8 = 13;
    /// Seal channel data (parameter: bit 0 direction, the rest the length; then the bytes).
    pub const SEND: u8 = 14;
    /// Answer a request another way, or answer what was not asked (parameter: the low
    /// three bits pick one of [`super::answer`]).
    pub const ANSWER: u8 = 15;
}

/// The sub-actions of [`action::ANSWER`], by the low three bits of its parameter.
pub mod answer {
    /// Tell the agent its keyring could not be stored.
    pub const PERSIST_FAILED: u8 = 0;
    /// Refuse the connection's next admission.
    pub const REFUSE: u8 = 1;
    /// Admit the connection's next join with a ticket of `u16 % (MAX_TICKET + 2)` bytes
    /// (a u16 follows): within the limit, or one past it.
    pub const TICKET: u8 = 2;
    /// Hold the gateway's next storage request unanswered.
    pub const HOLD_STORAGE: u8 = 3;
    /// Answer the held storage request from the store.
    pub const RELEASE_STORAGE: u8 = 4;
    /// Answer the held storage request `Failed`.
    pub const FAIL_HELD: u8 = 5;
    /// Answer the gateway what it did not ask for (every mismatched storage answer, and
    /// admission): misuse.
    pub const GATEWAY_MISUSE: u8 = 6;
    /// Answer the agent a persist it did not ask for: misuse.
    pub const AGENT_MISUSE: u8 = 7;
    /// Make the connection's agent send, at its next attestation, evidence recorded
    /// from any session of the run (a u16 picks which) instead of its own: the
    /// gateway's validator must refuse it (parameter bits: `0b1000`, the only
    /// sub-action with bit 3 set).
    pub const REPLAY_EVIDENCE: u8 = 8;
}

/// The stand-in evidence an agent's attester sends: its client id and the session's
/// binding (what a signature by its node key would commit to).
pub fn evidence(client_id: &ClientId, binding: &AttestationBinding) -> Vec<u8> {
    [client_id.as_str().as_bytes(), &b":"[..], binding.as_bytes()].concat()
}

#[derive(Debug)]
struct Sessions {
    client: ClientSession,
    server: ServerSession,
    /// What the agent sealed, and what the gateway accepted of it.
    c2s: Vec<Sealed>,
    server_rx: Receiver,
    /// What the gateway sealed, and what the agent accepted of it.
    s2c: Vec<Sealed>,
    client_rx: Receiver,
    /// Frames in flight, handed over from the pair when both ends completed.
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
}

/// How one connection's hooks answer, steered by the fuzzer.
#[derive(Debug, Default)]
struct Steering {
    fail_next: bool,
    hold_next: bool,
    next_admission: Option<Admission>,
    /// Evidence to send at the next attestation instead of the agent's own.
    next_evidence: Option<Vec<u8>>,
    /// Every admission request and its answer.
    admitted: Vec<(AdmissionRequest, Admission)>,
}

#[derive(Debug)]
struct Conn {
    /// The handshake, until both ends complete.
    pair: Option<Box<Pair>>,
    /// The sessions, after.
    sessions: Option<Box<Sessions>>,
    client_id: ClientId,
    resume: Option<SavedKeyring>,
    steering: Arc<Mutex<Steering>>,
    /// How much of the pair's log has been looked at.
    logged: usize,
    client_sent: Vec<Vec<u8>>,
    server_sent: Vec<Vec<u8>>,
    client_got: Vec<u8>,
    server_got: Vec<u8>,
    /// The keyring the agent was told is stored.
    acked: Option<SavedKeyring>,
}

fn lock(steering: &Mutex<Steering>) -> MutexGuard<'_, Steering> {
    steering.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    fn queue(&mut self, dir: Dir) -> Option<&mut VecDeque<Vec<u8>>> {
        if let Some(pair) = self.pair.as_mut() {
            return Some(pair.in_flight(dir));
        }
        let s = self.sessions.as_mut()?;
        Some(match dir {
            Dir::ToServer => &mut s.to_server,
            Dir::ToClient => &mut s.to_client,
        })
    }
}

/// What the stand-in validator attests: the client id as the name.
fn attested(request: &AdmissionRequest) -> Option<AttestedIdentity> {
    AttestedIdentity::new(request.client_id.as_str()).ok()
}

/// The ticket of `len` bytes the target admits with.
pub fn ticket(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8).collect()
}

struct Net {
    world: World,
    token: BootstrapToken,
    max_uses: u32,
    conns: Vec<Conn>,
    /// Every message any side sent in this run (handshake and channel frames).
    recorded: Vec<Vec<u8>>,
    /// Every keyring an agent was told is stored.
    persisted: Vec<SavedKeyring>,
    /// Keyrings seen confirmed: they may never change.
    confirmed: BTreeMap<ClientId, KeyringId>,
    /// Admissions refused (or failed for an over-long ticket).
    refused: usize,
    /// Persists answered `PersistFailed`.
    persist_failed: usize,
    /// Every evidence any agent sent in this run.
    evidence_sent: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Every binding any agent was asked to attest in this run.
    bindings: Arc<Mutex<Vec<AttestationBinding>>>,
}

impl Net {
    fn connect(&mut self, resume: Option<SavedKeyring>, client_id: &str) {
        if self.conns.len() >= MAX_CONNECTIONS {
            return;
        }
        let (pair, client_id) = match resume {
            Some(ref saved) => (self.world.resume_pair(saved), saved.client_id.clone()),
            None => {
                let id = ClientId::new(client_id).unwrap_or_else(|e| panic!("{e}"));
                (self.world.join_pair(client_id, &self.token), id)
            }
        };
        let steering: Arc<Mutex<Steering>> = Arc::default();
        let (s1, s2, s3) = (steering.clone(), steering.clone(), steering.clone());
        let (sent, own, bindings) = (self.evidence_sent.clone(), client_id.clone(), self.bindings.clone());
        let pair = pair
            .with_persist(PersistAction::Hold)
            .with_attester(move |binding| {
                bindings.lock().unwrap_or_else(|e| e.into_inner()).push(*binding);
                let chosen = lock(&s3).next_evidence.take().unwrap_or_else(|| evidence(&own, binding));
                sent.lock().unwrap_or_else(|e| e.into_inner()).push(chosen.clone());
                Ok(chosen)
            })
            .with_storage(move |_| {
                let mut s = lock(&s1);
                if std::mem::take(&mut s.fail_next) {
                    StorageAction::Fail
                } else if std::mem::take(&mut s.hold_next) {
                    StorageAction::Hold
                } else {
                    StorageAction::Answer
                }
            })
            .with_admission(move |request| {
                let mut s = lock(&s2);
                // The validator: the evidence must commit to this session's binding.
                let answer = if request.evidence != evidence(&request.client_id, &request.binding) {
                    Admission::RefuseAttestation
                } else {
                    match s.next_admission.take() {
                        Some(Admission::Admit { ticket, .. }) => {
                            Admission::Admit { ticket, attested: attested(request) }
                        }
                        Some(other) => other,
                        None => Admission::Admit { ticket: Vec::new(), attested: attested(request) },
                    }
                };
                s.admitted.push((request.clone(), answer.clone()));
                answer
            });
        self.conns.push(Conn {
            pair: Some(Box::new(pair)),
            sessions: None,
            client_id,
            resume,
            steering,
            logged: 0,
            client_sent: Vec::new(),
            server_sent: Vec::new(),
            client_got: Vec::new(),
            server_got: Vec::new(),
            acked: None,
        });
        let last = self.conns.len() - 1;
        self.sync(last);
    }

    /// Lets the pair's loop drain both ends, records what they sent, and checks.
    fn sync(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if let Some(pair) = conn.pair.as_mut() {
            pair.flush();
            for (dir, frame) in &pair.log[conn.logged..] {
                check_emitted(frame);
                self.recorded.push(frame.clone());
                match dir {
                    Dir::ToServer => conn.client_sent.push(frame.clone()),
                    Dir::ToClient => conn.server_sent.push(frame.clone()),
                }
            }
            conn.logged = pair.log.len();
        }
        self.check_handshake(i);
    }

    /// Nothing tampered is accepted; failures keep the contract; completed
    /// connections agree on everything.
    fn check_handshake(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let Some(pair) = conn.pair.as_ref() else { return };
        let join = conn.resume.is_none();
        let accepted_by_client = |n: usize| {
            conn.client_got.starts_with(&concat(&conn.server_sent[..n.min(conn.server_sent.len())]))
                && conn.server_sent.len() >= n
        };
        let accepted_by_server = |n: usize| {
            conn.server_got.starts_with(&concat(&conn.client_sent[..n.min(conn.client_sent.len())]))
                && conn.client_sent.len() >= n
        };
        if pair.saved.is_some() {
            assert!(join && accepted_by_client(2), "the agent accepted a join its gateway did not send");
        }
        if pair.info.is_some() {
            assert!(accepted_by_client(if join { 2 } else { 1 }), "the agent completed on tampered messages");
        }
        let steering = lock(&conn.steering);
        assert!(steering.admitted.len() <= 1, "asked to admit one connection twice");
        for (request, _) in &steering.admitted {
            assert!(join && accepted_by_server(2), "the gateway asked to admit on a proof its agent did not send");
            assert_eq!(&request.client_id, &conn.client_id);
            assert_eq!(request.token_id, self.token.id());
        }
        let admitted_ticket = match steering.admitted.first() {
            Some((_, Admission::Admit { ticket, .. })) if ticket.len() <= MAX_TICKET => Some(ticket.clone()),
            _ => None,
        };
        if let Some((request, Admission::RefuseAttestation)) = steering.admitted.first() {
            assert_ne!(request.evidence, evidence(&conn.client_id, &request.binding));
            assert!(
                pair.server.failure() == Some(&Error::Refused(Refusal::Attestation)),
                "refused evidence did not fail the gateway with AttestationRefused: {:?}",
                pair.server.failure()
            );
        }
        drop(steering);
        if pair.requests.iter().any(|r| matches!(r, StorageRequest::Redeem(_))) {
            assert!(join && accepted_by_server(2), "the gateway redeemed on a hello and proof its agent did not send");
            assert!(admitted_ticket.is_some(), "the gateway redeemed a client its application did not admit");
        }
        if pair.peer.is_some() {
            assert!(accepted_by_server(if join { 3 } else { 2 }), "the gateway verified tampered messages");
        }
        let outcome = pair.outcome();
        check_failure("agent", pair.client.failure(), outcome.client_error(), &conn.client_sent);
        check_failure("gateway", pair.server.failure(), outcome.server_error(), &conn.server_sent);
        if !outcome.both_established() {
            return;
        }
        let Some(mut pair) = conn.pair.take() else { return };
        let to_server = std::mem::take(pair.in_flight(Dir::ToServer));
        let to_client = std::mem::take(pair.in_flight(Dir::ToClient));
        let (client, server) = pair.into_sessions().unwrap_or_else(|e| panic!("{e}"));
        // Same identity on both ends.
        let peer = &server.peer;
        assert_eq!(peer.client_id(), &conn.client_id, "the gateway verified another client id");
        assert_eq!(peer.token_id(), self.token.id(), "the gateway verified another token");
        assert_eq!(peer.resumed(), !join);
        let attested = peer.attested().map(|a| a.name().to_owned());
        // Every join here is attested with its client id; a resume carries the identity
        // attested at the join that created its keyring.
        assert_eq!(attested.as_deref(), Some(conn.client_id.as_str()), "the attested identity is wrong");
        assert_eq!(client.info.resumed, !join);
        assert_eq!(client.info.server_pin, self.world.config.pin());
        assert_eq!(client.info.suite, server.channel.suite());
        let expected_ticket = if join { admitted_ticket } else { Some(Vec::new()) };
        assert_eq!(Some(&client.info.ticket), expected_ticket.as_ref(), "the agent got another ticket");
        // Same keys, both directions.
        let mut buf = [0u8; 64];
        let n = client.channel.clone().seal(b"c2s", &mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.channel.clone().open(&buf[..n]), Ok(Received::Data(&b"c2s"[..])), "c2s keys differ");
        let n = server.channel.clone().seal(b"s2c", &mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(client.channel.clone().open(&buf[..n]), Ok(Received::Data(&b"s2c"[..])), "s2c keys differ");
        // The store holds the keyring the agent holds, confirmed.
        let record = self.world.store.keyring(&conn.client_id).unwrap_or_else(|| panic!("no keyring record"));
        assert!(record.confirmed, "both ends completed but the keyring is unconfirmed");
        let held = conn.acked.as_ref().or(conn.resume.as_ref()).unwrap_or_else(|| panic!("the agent holds nothing"));
        assert_eq!(record.keyring, held.keyring, "the store and the agent hold different keyrings");
        let mut sessions = Sessions {
            server_rx: Receiver::new(server.channel.clone()),
            client_rx: Receiver::new(client.channel.clone()),
            client,
            server,
            c2s: Vec::new(),
            s2c: Vec::new(),
            to_server,
            to_client,
        };
        // Bytes that followed the handshake are the channel's first input.
        let (cb, sb) = (std::mem::take(&mut sessions.client.buffered), std::mem::take(&mut sessions.server.buffered));
        if !sb.is_empty() {
            sessions.server_rx.deliver(&sb, &[]);
        }
        if !cb.is_empty() {
            sessions.client_rx.deliver(&cb, &[]);
        }
        conn.sessions = Some(Box::new(sessions));
    }

    fn deliver(&mut self, i: usize, dir: Dir) {
        let conn = &mut self.conns[i];
        if let Some(s) = conn.sessions.as_mut() {
            match dir {
                Dir::ToServer => {
                    if let Some(bytes) = s.to_server.pop_front() {
                        s.server_rx.deliver(&bytes, &s.c2s);
                    }
                }
                Dir::ToClient => {
                    if let Some(bytes) = s.to_client.pop_front() {
                        s.client_rx.deliver(&bytes, &s.s2c);
                    }
                }
            }
            return;
        }
        let Some(pair) = conn.pair.as_mut() else { return };
        pair.flush();
        let Some(bytes) = pair.in_flight(dir).front() else { return };
        match dir {
            Dir::ToServer => conn.server_got.extend_from_slice(bytes),
            Dir::ToClient => conn.client_got.extend_from_slice(bytes),
        }
        pair.step(dir);
        self.sync(i);
    }

    fn send(&mut self, i: usize, dir: Dir, payload: &[u8]) {
        let conn = &mut self.conns[i];
        let Some(s) = conn.sessions.as_mut() else { return };
        let mut buf = vec![0u8; payload.len() + boarding::channel::FRAME_OVERHEAD];
        let (channel, sealed, queue) = match dir {
            Dir::ToServer => (&mut s.client.channel, &mut s.c2s, &mut s.to_server),
            Dir::ToClient => (&mut s.server.channel, &mut s.s2c, &mut s.to_client),
        };
        if let Ok(n) = channel.seal(payload, &mut buf) {
            sealed.push((buf[..n].to_vec(), Some(payload.to_vec())));
            self.recorded.push(buf[..n].to_vec());
            queue.push_back(buf[..n].to_vec());
        }
    }

    /// Answers the agent's pending persist: stored, or failed.
    fn persist(&mut self, i: usize, outcome: Result<(), PersistFailed>) {
        let conn = &mut self.conns[i];
        let Some(pair) = conn.pair.as_mut().filter(|p| p.held_persist) else { return };
        let saved = pair.saved.clone().unwrap_or_else(|| panic!("a persist is held but nothing was saved"));
        let failed_before = pair.client.failure().cloned();
        if outcome.is_ok() {
            self.persisted.push(saved.clone());
            conn.acked = Some(saved);
        } else {
            self.persist_failed += 1;
        }
        pair.release_persist(outcome);
        if outcome.is_err() {
            let expected = failed_before.unwrap_or(Error::Local(LocalFailure::Persist));
            assert_eq!(pair.client.failure(), Some(&expected), "a failed persist did not fail the join");
        }
        self.sync(i);
    }

    /// One of [`answer`]'s sub-actions.
    fn answer(&mut self, i: usize, what: u8, input: &mut Input<'_>) {
        let steering = self.conns[i].steering.clone();
        match what {
            answer::PERSIST_FAILED => return self.persist(i, Err(PersistFailed)),
            answer::REFUSE => lock(&steering).next_admission = Some(Admission::Refuse),
            answer::TICKET => {
                let len = usize::from(input.u16()) % (MAX_TICKET + 2);
                lock(&steering).next_admission = Some(Admission::with_ticket(ticket(len)));
            }
            answer::HOLD_STORAGE => lock(&steering).hold_next = true,
            answer::REPLAY_EVIDENCE => {
                let seen = self.evidence_sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if !seen.is_empty() {
                    let pick = usize::from(input.u16()) % seen.len();
                    lock(&steering).next_evidence = Some(seen[pick].clone());
                }
            }
            _ => {
                let Some(pair) = self.conns[i].pair.as_mut() else { return };
                match what {
                    answer::RELEASE_STORAGE => {
                        pair.release_storage();
                    }
                    answer::FAIL_HELD => {
                        if pair.held_storage.take().is_some() {
                            let expected =
                                pair.server.failure().cloned().unwrap_or(Error::Local(LocalFailure::Storage));
                            assert_eq!(pair.server.handle_storage(StorageAnswer::Failed), Err(expected));
                        }
                    }
                    answer::GATEWAY_MISUSE => probe_server_misuse(pair),
                    _ => probe_client_misuse(pair),
                }
            }
        }
        self.sync(i);
    }

    /// No two sessions of the run share an attestation binding, so evidence recorded in
    /// one is refused in every other.
    fn check_bindings(&self) {
        let mut seen = std::collections::BTreeSet::new();
        for binding in self.bindings.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            assert!(seen.insert(*binding.as_bytes()), "two sessions share the binding {binding}");
        }
    }

    /// The token is charged once per client id it binds; confirmed keyrings are
    /// immutable and held by an agent.
    fn check_store(&mut self) {
        let snapshot = self.world.store.snapshot();
        let token = &snapshot.tokens[&self.token.id()];
        let bound = u32::try_from(snapshot.keyrings.len()).unwrap_or(u32::MAX);
        assert_eq!(token.use_count, bound, "token charged {} times for {bound} client ids", token.use_count);
        if self.max_uses != 0 {
            assert!(token.use_count <= self.max_uses, "token used beyond its limit");
        }
        for (id, record) in &snapshot.keyrings {
            assert_eq!(&record.client_id, id);
            assert_eq!(record.token_id, self.token.id());
            if let Some(kid) = self.confirmed.get(id) {
                assert!(record.confirmed && record.keyring.id() == *kid, "a confirmed keyring changed");
            }
            if record.confirmed {
                let held = self.persisted.iter().any(|s| &s.client_id == id && s.keyring == record.keyring);
                assert!(held, "a keyring no agent acknowledged persisting was confirmed");
                self.confirmed.insert(id.clone(), record.keyring.id());
            }
        }
        for id in self.confirmed.keys() {
            assert!(snapshot.keyrings.contains_key(id), "a confirmed keyring vanished");
        }
        self.refused = self
            .conns
            .iter()
            .filter_map(|c| c.pair.as_ref())
            .filter(|p| {
                matches!(
                    p.server.failure(),
                    Some(
                        Error::Refused(Refusal::Admission | Refusal::Attestation)
                            | Error::Local(LocalFailure::TicketTooLong { .. })
                    )
                )
            })
            .count();
    }
}

/// What a run of the session target achieved (for seeds and regression tests that
/// must reach deep, not just pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Connections opened.
    pub connections: usize,
    /// Connections where both ends completed.
    pub established: usize,
    /// Channel frames accepted, both directions, all connections.
    pub frames_accepted: usize,
    /// The token's final use count.
    pub use_count: u32,
    /// Connections whose admission was refused (or failed for an over-long ticket).
    pub refused: usize,
    /// Persists answered `PersistFailed`.
    pub persist_failed: usize,
}

/// The target. Input: a setup byte (world seed and token uses), then actions.
pub fn session(data: &[u8]) {
    run(data);
}

/// Runs the session target and reports what it reached.
pub fn run(data: &[u8]) -> Summary {
    let mut input = Input::new(data);
    let setup = input.byte();
    let world = World::new(u64::from(setup >> 2));
    let max_uses = [1, 2, 0, 1][usize::from(setup & 3)];
    let token = world.issue_token(None, max_uses);
    let mut net = Net {
        world,
        token,
        max_uses,
        conns: Vec::new(),
        recorded: Vec::new(),
        persisted: Vec::new(),
        confirmed: BTreeMap::new(),
        refused: 0,
        persist_failed: 0,
        evidence_sent: Arc::default(),
        bindings: Arc::default(),
    };
    net.connect(None, CLIENT_IDS[0]);
    for _ in 0..MAX_ACTIONS {
        if input.is_empty() {
            break;
        }
        let op = input.byte();
        let i = usize::from(op >> 4) % net.conns.len();
        match op & 0x0f {
            0 | 1 => net.deliver(i, Dir::ToServer),
            2 | 3 => net.deliver(i, Dir::ToClient),
            action @ 4..=10 => {
                let p = input.byte();
                let dir = if p & 1 == 0 { Dir::ToServer } else { Dir::ToClient };
                let extra = if matches!(action, 7 | 8 | 10) { usize::from(input.u16()) } else { 0 };
                let recorded_len = net.recorded.len();
                let injected = (action == 10 && recorded_len > 0).then(|| net.recorded[extra % recorded_len].clone());
                let Some(queue) = net.conns[i].queue(dir) else { continue };
                match action {
                    4 => {
                        queue.pop_front();
                    }
                    5 => {
                        if let Some(head) = queue.front().cloned() {
                            queue.push_front(head);
                        }
                    }
                    6 => {
                        if queue.len() >= 2 {
                            queue.swap(0, 1);
                        }
                    }
                    7 => {
                        if let Some(head) = queue.front_mut().filter(|h| !h.is_empty()) {
                            let bit = extra % (head.len() * 8);
                            head[bit / 8] ^= 1 << (bit % 8);
                        }
                    }
                    8 => {
                        if let Some(head) = queue.pop_front() {
                            let (a, b) = head.split_at(extra % (head.len() + 1));
                            queue.push_front(b.to_vec());
                            queue.push_front(a.to_vec());
                        }
                    }
                    9 => {
                        if let Some(head) = queue.front_mut() {
                            head.truncate(head.len().saturating_sub(usize::from(p >> 1) + 1));
                        }
                    }
                    _ => {
                        if let Some(message) = injected {
                            queue.push_back(message);
                        }
                    }
                }
            }
            11 => net.persist(i, Ok(())),
            12 => lock(&net.conns[i].steering).fail_next = true,
            13 => {
                let p = input.byte();
                let resume = (p & 1 == 1 && !net.persisted.is_empty())
                    .then(|| net.persisted[usize::from(p >> 1) % net.persisted.len()].clone());
                net.connect(resume, CLIENT_IDS[usize::from(p >> 1) & 1]);
            }
            14 => {
                let p = input.byte();
                let dir = if p & 1 == 0 { Dir::ToServer } else { Dir::ToClient };
                let payload = input.take(usize::from(p >> 1)).to_vec();
                net.send(i, dir, &payload);
            }
            _ => {
                let p = input.byte();
                let what = if p & 0x0f == answer::REPLAY_EVIDENCE { answer::REPLAY_EVIDENCE } else { p & 7 };
                net.answer(i, what, &mut input);
            }
        }
        net.check_bindings();
        net.check_store();
    }
    for i in 0..net.conns.len() {
        net.sync(i);
    }
    net.check_store();
    Summary {
        connections: net.conns.len(),
        established: net.conns.iter().filter(|c| c.sessions.is_some()).count(),
        frames_accepted: net
            .conns
            .iter()
            .filter_map(|c| c.sessions.as_ref())
            .map(|s| s.server_rx.opened + s.client_rx.opened)
            .sum(),
        use_count: net.world.store.token(net.token.id()).map_or(0, |t| t.use_count),
        refused: net.refused,
        persist_failed: net.persist_failed,
    }
}
