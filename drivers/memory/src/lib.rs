//! # boarding-memory: the deterministic in-memory driver
//!
//! Runs a real Boarding client and a real gateway against each other with no I/O:
//! a seeded RNG per side, a virtual clock, in-memory token and keyring stores with
//! atomic redemption, and a network that can be told to drop, duplicate, reorder,
//! corrupt, truncate or replace any message in flight. Tests, fuzzing, the
//! model-based harness and the demo all drive the protocol through it.
//!
//! ```
//! use boarding_memory::{MemoryStore, Pair, World};
//!
//! let world = World::new(42);
//! let token = world.issue_token(Some(3_600), 1);
//! let mut pair = world.join_pair("node-1", &token);
//! let outcome = pair.drive();
//! assert!(outcome.both_established(), "{outcome:?}");
//! let saved = pair.saved.clone().expect("the agent persisted its keyring");
//! let mut resume = world.resume_pair(&saved);
//! assert!(resume.drive().both_established());
//! ```
#![warn(clippy::missing_errors_doc)]

pub mod conformance;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use boarding::Error;
use boarding::attestation::{AttestFailed, AttestationBinding};
use boarding::client::{
    Client, ClientRequest, ClientSession, JoinConfig, PersistFailed, ResumeConfig, SavedKeyring, SessionInfo,
};
use boarding::handshake::Output;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::server::{
    Admission, AdmissionRequest, Server, ServerConfig, ServerRequest, ServerSession, TicketRequest, VerifiedClient,
};
use boarding::storage::{KeyringRecord, Records, StorageAnswer, StorageRequest};
use boarding::token::{BootstrapToken, TokenId, TokenRecord};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Everything a store holds, for tests that assert a failure changed nothing.
pub type StoreSnapshot = Records;

/// An in-memory gateway store: [`Records`] behind one lock, so every request (a
/// redemption reads the token and the keyring, decides and writes both) is atomic.
/// It implements nothing of the storage rule itself: [`Records::answer`] does.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<Records>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // A panic elsewhere while holding the lock leaves consistent data (every write
        // is a whole decision), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a token record.
    pub fn insert_token(&self, record: TokenRecord) {
        self.lock().tokens.insert(record.id(), record);
    }

    /// Deletes a token; later joins with it see "unknown token". Returns whether it existed.
    pub fn revoke_token(&self, id: TokenId) -> bool {
        self.lock().tokens.remove(&id).is_some()
    }

    /// Deletes a client's keyring; its resumes then get a decoy. Returns whether it existed.
    pub fn revoke_client(&self, id: &ClientId) -> bool {
        self.lock().keyrings.remove(id).is_some()
    }

    /// Asks for the client's keyring to be rotated at its next resume (the operator's
    /// `clients rotate`). Returns whether the client exists.
    pub fn request_rotation(&self, id: &ClientId) -> bool {
        self.lock().keyrings.get_mut(id).map(|r| r.rotation_requested = true).is_some()
    }

    /// A token record.
    pub fn token(&self, id: TokenId) -> Option<TokenRecord> {
        self.lock().tokens.get(&id).cloned()
    }

    /// A keyring record.
    pub fn keyring(&self, id: &ClientId) -> Option<KeyringRecord> {
        self.lock().keyrings.get(id).cloned()
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> StoreSnapshot {
        self.lock().clone()
    }

    /// Answers one storage request atomically.
    pub fn answer(&self, request: &StorageRequest) -> StorageAnswer {
        self.lock().answer(request)
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Agent to gateway.
    ToServer,
    /// Gateway to agent.
    ToClient,
}

/// What the network does with one message (decided by a [`Pair`]'s tamper hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Deliver it (possibly modified in place by the hook).
    Deliver,
    /// Lose it.
    Drop,
    /// Deliver it twice.
    Duplicate,
    /// Hold it and deliver it after the next message in the same direction.
    Delay,
}

/// A tamper hook: sees each message (direction, its index in that direction, its
/// bytes, which it may change) and decides its fate.
pub type TamperHook = Box<dyn FnMut(Dir, usize, &mut Vec<u8>) -> Delivery + Send>;

/// What the pair does with one of the gateway's storage requests (decided by its
/// storage hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageAction {
    /// Answer it from the store now.
    Answer,
    /// Answer [`StorageAnswer::Failed`] (the store is down).
    Fail,
    /// Hold it unanswered until [`Pair::release_storage`].
    Hold,
}

/// A storage hook: sees each storage request and decides what happens to it.
pub type StorageHook = Box<dyn FnMut(&StorageRequest) -> StorageAction + Send>;

/// An admission hook: the gateway application's decision for each join.
pub type AdmissionHook = Box<dyn FnMut(&AdmissionRequest) -> Admission + Send>;

/// A ticket hook: the gateway application's answer to a resume's request.
pub type TicketHook = Box<dyn FnMut(&TicketRequest) -> Vec<u8> + Send>;

/// An attestation hook: the agent application's evidence for a session's binding, or
/// `Err(AttestFailed)` if its attester fails.
pub type AttestHook = Box<dyn FnMut(&AttestationBinding) -> Result<Vec<u8>, AttestFailed> + Send>;

/// What the pair does with the agent's request to persist its keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistAction {
    /// Record the keyring in [`Pair::saved`] and answer that it is stored.
    Store,
    /// Answer that storing failed (the agent's disk is full).
    Fail,
    /// Record the keyring but do not answer until [`Pair::release_persist`] (a crash
    /// between storing and confirming, or a slow disk).
    Hold,
    /// Do nothing at all (a crash before the keyring reached the disk).
    Ignore,
}

/// How the bytes of each delivered message reach the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stream {
    /// One `handle_input` per message.
    #[default]
    Whole,
    /// Every message split into pieces of at most this many bytes, fed one by one.
    Fragmented(usize),
    /// Every message queued in that direction merged into one `handle_input`.
    Coalesced,
}

/// Where one side stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The handshake completed.
    Established,
    /// Still waiting (for bytes, or for an answer that was held or not given).
    Waiting,
    /// The handshake failed with this error (the side's `Output::Failed`).
    Failed(Error),
}

/// How a [`Pair::drive`] ended for each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The agent.
    pub client: Standing,
    /// The gateway.
    pub server: Standing,
}

impl Outcome {
    /// Whether both sides completed.
    pub fn both_established(&self) -> bool {
        self.client == Standing::Established && self.server == Standing::Established
    }

    /// The agent's error, if it failed.
    pub fn client_error(&self) -> Option<&Error> {
        match &self.client {
            Standing::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The gateway's error, if it failed.
    pub fn server_error(&self) -> Option<&Error> {
        match &self.server {
            Standing::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// A gateway identity, a store and a clock shared by many pairs, with seeded RNGs.
#[derive(Debug, Clone)]
pub struct World {
    /// The gateway's settings.
    pub config: Arc<ServerConfig>,
    /// The gateway's store.
    pub store: Arc<MemoryStore>,
    /// The virtual clock (Unix seconds).
    pub now: u64,
    /// The ticket the default admission hook gives every joining client.
    pub ticket: Vec<u8>,
    seed: u64,
    counter: Arc<Mutex<u64>>,
}

impl World {
    /// A world whose every random choice derives from `seed`; the clock starts at
    /// 1,700,000,000.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = ServerIdentity::generate(&mut rng);
        Self {
            config: Arc::new(ServerConfig::new(identity)),
            store: Arc::new(MemoryStore::new()),
            now: 1_700_000_000,
            ticket: Vec::new(),
            seed,
            counter: Arc::new(Mutex::new(0)),
        }
    }

    /// The same world with the gateway rotating keyrings by `policy` (besides the
    /// operator's requests).
    pub fn with_rotation(mut self, policy: boarding::storage::RotationPolicy) -> Self {
        self.config = Arc::new((*self.config).clone().with_rotation(policy));
        self
    }

    /// A fresh deterministic RNG (each call gets the next stream of the seed).
    pub fn rng(&self) -> ChaCha20Rng {
        let mut counter = self.counter.lock().unwrap_or_else(|e| e.into_inner());
        *counter = counter.wrapping_add(1);
        let mut rng = ChaCha20Rng::seed_from_u64(self.seed);
        rng.set_stream(*counter);
        rng
    }

    /// Issues a token valid for `ttl` seconds (`None`: no expiry) with `max_uses`.
    pub fn issue_token(&self, ttl: Option<u64>, max_uses: u32) -> BootstrapToken {
        let token = BootstrapToken::generate(&mut self.rng());
        let expires = ttl.map(|t| self.now.saturating_add(t));
        self.store.insert_token(TokenRecord::new(token.clone(), expires, max_uses));
        token
    }

    /// A join configuration pinned to this world's gateway.
    pub fn join_config(&self, client_id: &str, token: &BootstrapToken) -> JoinConfig {
        let id = ClientId::new(client_id).unwrap_or_else(|e| panic!("test client id {client_id:?}: {e}"));
        JoinConfig::new(token.clone(), vec![self.config.pin()], id)
    }

    /// A pair that will join.
    pub fn join_pair(&self, client_id: &str, token: &BootstrapToken) -> Pair {
        self.pair_with(Client::join(self.join_config(client_id, token), &mut self.rng()))
    }

    /// A pair that will resume.
    pub fn resume_pair(&self, saved: &SavedKeyring) -> Pair {
        self.pair_with(Client::resume(ResumeConfig::new(saved.clone()), &mut self.rng()))
    }

    /// A pair around any client.
    pub fn pair_with(&self, client: Client) -> Pair {
        let server = Server::new(self.config.clone(), &mut self.rng());
        let mut pair = Pair::new(client, server, self.store.clone(), self.now);
        let ticket = self.ticket.clone();
        pair.admission = Box::new(move |_| Admission::with_ticket(ticket.clone()));
        pair
    }
}

/// A client and a gateway connected by an in-memory network: quinn-proto's `Pair`.
///
/// Both sides are driven by one loop each, draining outputs as [`boarding::handshake`]
/// prescribes; requests are answered through hooks (storage, attestation, admission,
/// persist) that can answer, fail or hold them, and the network can tamper with, drop,
/// duplicate, delay, fragment or coalesce every message.
pub struct Pair {
    /// The agent.
    pub client: Client,
    /// The gateway.
    pub server: Server,
    /// The gateway's store.
    pub store: Arc<MemoryStore>,
    /// The virtual clock passed to the gateway.
    pub now: u64,
    /// What the agent asked to persist (recorded on [`PersistAction::Store`] and
    /// [`PersistAction::Hold`]).
    pub saved: Option<SavedKeyring>,
    /// What the agent learned, once established.
    pub info: Option<SessionInfo>,
    /// The gateway's verified peer, once established.
    pub peer: Option<VerifiedClient>,
    /// Every message sent, in order, before tampering: (direction, bytes).
    pub log: Vec<(Dir, Vec<u8>)>,
    /// What to do with the agent's persist request.
    pub persist: PersistAction,
    /// How bytes reach each receiver.
    pub stream: Stream,
    /// The gateway application's admission decision.
    pub admission: AdmissionHook,
    /// The agent application's attester (by default: nothing to attest, empty evidence).
    pub attester: AttestHook,
    /// Every binding the agent was asked to attest, in order.
    pub bindings: Vec<AttestationBinding>,
    /// Whether the agent's attestation request is held unanswered (until
    /// [`Pair::release_evidence`]) instead of going to [`Pair::attester`].
    pub hold_attest: bool,
    /// Whether an attestation request is held.
    pub held_attest: bool,
    /// Every admission request the gateway made, in order.
    pub admissions: Vec<AdmissionRequest>,
    /// The gateway application's answer to a resume's request (by default: an empty
    /// ticket).
    pub ticketer: TicketHook,
    /// Every ticket request the gateway made, in order.
    pub ticket_requests: Vec<TicketRequest>,
    /// The ticket the agent was asked to persist with its keyring at join.
    pub saved_ticket: Option<Vec<u8>>,
    /// What to do with each storage request.
    pub storage: StorageHook,
    /// Every storage request the gateway made, in order.
    pub requests: Vec<StorageRequest>,
    /// A storage request held by [`StorageAction::Hold`].
    pub held_storage: Option<StorageRequest>,
    /// Whether a persist request is held by [`PersistAction::Hold`].
    pub held_persist: bool,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    sent: [usize; 2],
    delayed: [Option<Vec<u8>>; 2],
    tamper: Option<TamperHook>,
    client_failure: Option<Error>,
    server_failure: Option<Error>,
}

impl fmt::Debug for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pair")
            .field("client", &self.client)
            .field("server", &self.server)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

fn slot(dir: Dir) -> usize {
    match dir {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

impl Pair {
    /// Connects `client` and `server` with a perfect network; every request is answered
    /// (storage from `store`, attestation with empty evidence, admission with no ticket,
    /// persist stored).
    pub fn new(client: Client, server: Server, store: Arc<MemoryStore>, now: u64) -> Self {
        Self {
            client,
            server,
            store,
            now,
            saved: None,
            info: None,
            peer: None,
            log: Vec::new(),
            persist: PersistAction::Store,
            stream: Stream::Whole,
            admission: Box::new(|_| Admission::admit()),
            attester: Box::new(|_| Ok(Vec::new())),
            bindings: Vec::new(),
            hold_attest: false,
            held_attest: false,
            admissions: Vec::new(),
            ticketer: Box::new(|_| Vec::new()),
            ticket_requests: Vec::new(),
            saved_ticket: None,
            storage: Box::new(|_| StorageAction::Answer),
            requests: Vec::new(),
            held_storage: None,
            held_persist: false,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            sent: [0, 0],
            delayed: [None, None],
            tamper: None,
            client_failure: None,
            server_failure: None,
        }
    }

    /// Installs a tamper hook.
    pub fn tamper(mut self, hook: impl FnMut(Dir, usize, &mut Vec<u8>) -> Delivery + Send + 'static) -> Self {
        self.tamper = Some(Box::new(hook));
        self
    }

    /// Installs a storage hook.
    pub fn with_storage(mut self, hook: impl FnMut(&StorageRequest) -> StorageAction + Send + 'static) -> Self {
        self.storage = Box::new(hook);
        self
    }

    /// Installs a ticket hook: the answer to each resume's request.
    pub fn with_tickets(mut self, hook: impl FnMut(&TicketRequest) -> Vec<u8> + Send + 'static) -> Self {
        self.ticketer = Box::new(hook);
        self
    }

    /// Installs an admission hook.
    pub fn with_admission(mut self, hook: impl FnMut(&AdmissionRequest) -> Admission + Send + 'static) -> Self {
        self.admission = Box::new(hook);
        self
    }

    /// Holds the agent's attestation request until [`Pair::release_evidence`].
    pub fn with_attest_held(mut self) -> Self {
        self.hold_attest = true;
        self
    }

    /// Installs an attestation hook (the agent application's attester).
    pub fn with_attester(
        mut self,
        hook: impl FnMut(&AttestationBinding) -> Result<Vec<u8>, AttestFailed> + Send + 'static,
    ) -> Self {
        self.attester = Box::new(hook);
        self
    }

    /// Sets what happens to the persist request.
    pub fn with_persist(mut self, action: PersistAction) -> Self {
        self.persist = action;
        self
    }

    /// Sets how bytes reach each receiver.
    pub fn with_stream(mut self, stream: Stream) -> Self {
        self.stream = stream;
        self
    }

    /// Injects raw bytes into one direction, bypassing the hook (replays, forgeries).
    pub fn inject(&mut self, dir: Dir, bytes: Vec<u8>) {
        self.in_flight(dir).push_back(bytes);
    }

    fn send(&mut self, dir: Dir, mut bytes: Vec<u8>) {
        self.log.push((dir, bytes.clone()));
        let i = slot(dir);
        let index = self.sent[i];
        self.sent[i] = index.saturating_add(1);
        let fate = match self.tamper.as_mut() {
            Some(hook) => hook(dir, index, &mut bytes),
            None => Delivery::Deliver,
        };
        let queue = match dir {
            Dir::ToServer => &mut self.to_server,
            Dir::ToClient => &mut self.to_client,
        };
        match fate {
            Delivery::Drop => {}
            Delivery::Deliver => queue.push_back(bytes),
            Delivery::Duplicate => {
                queue.push_back(bytes.clone());
                queue.push_back(bytes);
            }
            Delivery::Delay => {
                if let Some(previous) = self.delayed[i].replace(bytes) {
                    queue.push_back(previous);
                }
                return;
            }
        }
        if let Some(held) = self.delayed[i].take() {
            queue.push_back(held);
        }
    }

    /// Runs both sides until neither can move.
    pub fn drive(&mut self) -> Outcome {
        loop {
            let mut progressed = self.flush();
            progressed |= self.deliver(Dir::ToServer);
            progressed |= self.deliver(Dir::ToClient);
            if !progressed {
                break;
            }
        }
        self.outcome()
    }

    /// Drains both sides' outputs without delivering anything: transmissions go
    /// through the tamper hook into the in-flight queues, requests go to the hooks.
    /// Returns whether there was anything to drain. A building block for tests that
    /// step the network one message at a time (see [`Pair::step`]).
    pub fn flush(&mut self) -> bool {
        let mut progressed = false;
        loop {
            let mut drained = false;
            while let Some(out) = self.client.poll_output() {
                drained = true;
                match out {
                    Output::Transmit(bytes) => self.send(Dir::ToServer, bytes),
                    Output::Request(ClientRequest::Attest { binding }) => {
                        self.bindings.push(binding);
                        if self.hold_attest {
                            self.held_attest = true;
                        } else {
                            let evidence = (self.attester)(&binding);
                            // A failure is an output too: the loop records it.
                            let _ = self.client.handle_evidence(evidence);
                        }
                    }
                    Output::Request(ClientRequest::PersistKeyring { saved, ticket }) => {
                        self.saved_ticket = Some(ticket);
                        self.on_persist(saved);
                    }
                    // The pair's agent has one store and runs one resume at a time, so
                    // the compare-and-swap always finds the state it started from.
                    Output::Request(ClientRequest::PersistRotation { saved, .. }) => self.on_persist(saved),
                    Output::Established(info) => self.info = Some(info),
                    Output::Failed(e) => self.client_failure = Some(e),
                }
            }
            while let Some(out) = self.server.poll_output() {
                drained = true;
                match out {
                    Output::Transmit(bytes) => self.send(Dir::ToClient, bytes),
                    Output::Request(ServerRequest::Storage(request)) => self.on_storage(request),
                    Output::Request(ServerRequest::Admit(request)) => {
                        let admission = (self.admission)(&request);
                        self.admissions.push(request);
                        // A failure is an output too: the loop above records it.
                        let _ = self.server.handle_admission(admission);
                    }
                    Output::Request(ServerRequest::Ticket(request)) => {
                        let ticket = (self.ticketer)(&request);
                        self.ticket_requests.push(request);
                        // A failure is an output too: the loop above records it.
                        let _ = self.server.handle_ticket(ticket);
                    }
                    Output::Established(peer) => self.peer = Some(peer),
                    Output::Failed(e) => self.server_failure = Some(e),
                }
            }
            if !drained {
                return progressed;
            }
            progressed = true;
        }
    }

    fn on_persist(&mut self, saved: SavedKeyring) {
        match self.persist {
            PersistAction::Store => {
                self.saved = Some(saved);
                let _ = self.client.handle_persisted(Ok(()));
            }
            PersistAction::Fail => {
                let _ = self.client.handle_persisted(Err(PersistFailed));
            }
            PersistAction::Hold => {
                self.saved = Some(saved);
                self.held_persist = true;
            }
            PersistAction::Ignore => {}
        }
    }

    fn on_storage(&mut self, request: StorageRequest) {
        self.requests.push(request.clone());
        match (self.storage)(&request) {
            StorageAction::Answer => {
                let answer = self.store.answer(&request);
                let _ = self.server.handle_storage(answer);
            }
            StorageAction::Fail => {
                let _ = self.server.handle_storage(StorageAnswer::Failed);
            }
            StorageAction::Hold => self.held_storage = Some(request),
        }
    }

    /// Answers the held storage request from the store now (the store's state at
    /// release time decides), then flushes. Returns whether one was held.
    pub fn release_storage(&mut self) -> bool {
        let Some(request) = self.held_storage.take() else { return false };
        let answer = self.store.answer(&request);
        let _ = self.server.handle_storage(answer);
        self.flush();
        true
    }

    /// Answers the held attestation request with `outcome`, then flushes. Returns
    /// whether one was held.
    pub fn release_evidence(&mut self, outcome: Result<Vec<u8>, AttestFailed>) -> bool {
        if !std::mem::take(&mut self.held_attest) {
            return false;
        }
        let _ = self.client.handle_evidence(outcome);
        self.flush();
        true
    }

    /// Answers the held persist request (`Ok` stored, `Err` failed), then flushes.
    /// Returns whether one was held.
    pub fn release_persist(&mut self, outcome: Result<(), PersistFailed>) -> bool {
        if !std::mem::take(&mut self.held_persist) {
            return false;
        }
        let _ = self.client.handle_persisted(outcome);
        self.flush();
        true
    }

    /// Delivers what is queued in one direction according to [`Pair::stream`]: the
    /// front message (whole or in pieces), or every queued message merged. Returns
    /// whether anything was delivered.
    fn deliver(&mut self, dir: Dir) -> bool {
        let bytes = match self.stream {
            Stream::Coalesced => {
                let queue = self.in_flight(dir);
                if queue.is_empty() {
                    return false;
                }
                queue.drain(..).flatten().collect::<Vec<u8>>()
            }
            Stream::Whole | Stream::Fragmented(_) => match self.in_flight(dir).pop_front() {
                Some(bytes) => bytes,
                None => return false,
            },
        };
        let piece = match self.stream {
            Stream::Fragmented(n) => n.max(1),
            Stream::Whole | Stream::Coalesced => bytes.len().max(1),
        };
        for chunk in bytes.chunks(piece) {
            // Errors are outputs too (`Output::Failed`), recorded by `flush`.
            let _ = match dir {
                Dir::ToServer => self.server.handle_input(self.now, chunk),
                Dir::ToClient => self.client.handle_input(chunk),
            };
            self.flush();
        }
        true
    }

    /// Delivers the message at the front of one direction's in-flight queue to its
    /// receiver (as [`Pair::stream`] says), then [`flush`](Pair::flush)es. Returns
    /// `false` (and does nothing) if that queue is empty. Unlike [`Pair::drive`], the
    /// caller decides the order.
    pub fn step(&mut self, dir: Dir) -> bool {
        self.flush();
        let delivered = self.deliver(dir);
        self.flush();
        delivered
    }

    /// The messages in flight in one direction, front (next delivered) first. A test
    /// may drop, duplicate, reorder, rewrite or insert messages here; a message held
    /// back by [`Delivery::Delay`] is not in this queue until released.
    pub fn in_flight(&mut self, dir: Dir) -> &mut VecDeque<Vec<u8>> {
        match dir {
            Dir::ToServer => &mut self.to_server,
            Dir::ToClient => &mut self.to_client,
        }
    }

    /// How each side stands now, without moving anything (what [`Pair::drive`]
    /// returns at the end).
    pub fn outcome(&self) -> Outcome {
        let standing = |failure: &Option<Error>, established: bool| match failure {
            Some(e) => Standing::Failed(e.clone()),
            None if established => Standing::Established,
            None => Standing::Waiting,
        };
        Outcome {
            client: standing(&self.client_failure, self.client.is_established()),
            server: standing(&self.server_failure, self.server.is_established()),
        }
    }

    /// The two sessions of an established pair.
    ///
    /// # Errors
    ///
    /// The agent's [`Client::into_session`] error, else the gateway's
    /// [`Server::into_session`] error: a side's handshake error if it failed, or
    /// [`Error::Misuse`] if it has not completed.
    pub fn into_sessions(self) -> Result<(ClientSession, ServerSession), Error> {
        Ok((self.client.into_session()?, self.server.into_session()?))
    }

    /// The messages sent in one direction, in order (before tampering).
    pub fn sent(&self, dir: Dir) -> Vec<Vec<u8>> {
        self.log.iter().filter(|(d, _)| *d == dir).map(|(_, b)| b.clone()).collect()
    }
}

/// Encodes bytes as lowercase hex (for printing flows and vectors).
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}
