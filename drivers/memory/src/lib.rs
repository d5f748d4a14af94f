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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use boarding::Error;
use boarding::client::{Client, ClientOutput, ClientSession, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::identity::{ClientId, GatewayIdentity};
use boarding::server::{Server, ServerConfig, ServerOutput, ServerSession, VerifiedClient};
use boarding::storage::{
    KeyringRecord, Redemption, StorageAnswer, StorageRequest, decide_confirmation, decide_redemption,
};
use boarding::token::{BootstrapToken, TokenId, TokenRecord};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Everything a store holds, for tests that assert a failure changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreSnapshot {
    /// Token records by id.
    pub tokens: BTreeMap<TokenId, TokenRecord>,
    /// Keyring records by client id.
    pub keyrings: BTreeMap<ClientId, KeyringRecord>,
}

/// An in-memory gateway store. Each request is answered under one lock, so a
/// redemption (read token and keyring, decide, write both) is atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<StoreSnapshot>,
    ticket: Mutex<Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, StoreSnapshot> {
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

    /// Sets the ticket handed to every client that joins.
    pub fn set_ticket(&self, ticket: Vec<u8>) {
        *self.ticket.lock().unwrap_or_else(|e| e.into_inner()) = ticket;
    }

    /// Answers one storage request atomically.
    pub fn answer(&self, request: &StorageRequest) -> StorageAnswer {
        let mut state = self.lock();
        match request {
            StorageRequest::LookupToken { token_id } => {
                StorageAnswer::Tokens(state.tokens.get(token_id).cloned().into_iter().collect())
            }
            StorageRequest::ActiveTokens { now, limit } => StorageAnswer::Tokens(
                state
                    .tokens
                    .values()
                    .filter(|r| r.usable_at(*now) != Err(boarding::token::TokenUnusable::Expired))
                    .take(*limit)
                    .cloned()
                    .collect(),
            ),
            StorageRequest::Redeem(req) => {
                let decision =
                    decide_redemption(state.tokens.get(&req.token_id), state.keyrings.get(&req.client_id), req);
                StorageAnswer::Redeemed(decision.and_then(|d| {
                    if d.charge {
                        let Some(token) = state.tokens.get_mut(&req.token_id) else {
                            return Err(boarding::storage::RedeemRefusal::UnknownToken);
                        };
                        token.use_count = token.use_count.saturating_add(1);
                    }
                    let labels = d.record.labels.clone();
                    state.keyrings.insert(req.client_id.clone(), d.record);
                    let ticket = self.ticket.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    Ok(Redemption::new(labels, d.charge, ticket))
                }))
            }
            StorageRequest::LookupKeyring { client_id } => {
                StorageAnswer::Keyring(state.keyrings.get(client_id).cloned())
            }
            StorageRequest::ConfirmKeyring { client_id, keyring_id } => {
                let outcome = decide_confirmation(state.keyrings.get(client_id), keyring_id);
                if outcome.is_ok()
                    && let Some(record) = state.keyrings.get_mut(client_id)
                {
                    record.confirmed = true;
                }
                StorageAnswer::Confirmed(outcome)
            }
            _ => StorageAnswer::Failed,
        }
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

/// How a [`Pair::drive`] ended for each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The agent's result: `Ok(true)` established, `Ok(false)` still waiting.
    pub client: Result<bool, Error>,
    /// The gateway's result, likewise.
    pub server: Result<bool, Error>,
}

impl Outcome {
    /// Whether both sides completed.
    pub fn both_established(&self) -> bool {
        self.client == Ok(true) && self.server == Ok(true)
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
    seed: u64,
    counter: Arc<Mutex<u64>>,
}

impl World {
    /// A world whose every random choice derives from `seed`; the clock starts at
    /// 1,700,000,000.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = GatewayIdentity::generate(&mut rng);
        Self {
            config: Arc::new(ServerConfig::new(identity)),
            store: Arc::new(MemoryStore::new()),
            now: 1_700_000_000,
            seed,
            counter: Arc::new(Mutex::new(0)),
        }
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
        Pair::new(client, server, self.store.clone(), self.now)
    }
}

/// A client and a gateway connected by an in-memory network.
pub struct Pair {
    /// The agent.
    pub client: Client,
    /// The gateway.
    pub server: Server,
    /// The gateway's store.
    pub store: Arc<MemoryStore>,
    /// The virtual clock passed to the gateway.
    pub now: u64,
    /// What the agent persisted (answered automatically).
    pub saved: Option<SavedKeyring>,
    /// The gateway's verified peer, once established.
    pub peer: Option<VerifiedClient>,
    /// Every message sent, in order, before tampering: (direction, bytes).
    pub log: Vec<(Dir, Vec<u8>)>,
    /// Whether to answer the agent's persist request (false simulates a crash there).
    pub persist: bool,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    sent: [usize; 2],
    delayed: [Option<Vec<u8>>; 2],
    tamper: Option<TamperHook>,
    client_error: Option<Error>,
    server_error: Option<Error>,
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
    /// Connects `client` and `server` with a perfect network.
    pub fn new(client: Client, server: Server, store: Arc<MemoryStore>, now: u64) -> Self {
        Self {
            client,
            server,
            store,
            now,
            saved: None,
            peer: None,
            log: Vec::new(),
            persist: true,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            sent: [0, 0],
            delayed: [None, None],
            tamper: None,
            client_error: None,
            server_error: None,
        }
    }

    /// Installs a tamper hook.
    pub fn tamper(mut self, hook: impl FnMut(Dir, usize, &mut Vec<u8>) -> Delivery + Send + 'static) -> Self {
        self.tamper = Some(Box::new(hook));
        self
    }

    /// Injects raw bytes into one direction, bypassing the hook (replays, forgeries).
    pub fn inject(&mut self, dir: Dir, bytes: Vec<u8>) {
        match dir {
            Dir::ToServer => self.to_server.push_back(bytes),
            Dir::ToClient => self.to_client.push_back(bytes),
        }
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

    /// Runs both sides until neither can move. Storage requests are answered by the
    /// store, persist requests by recording the keyring.
    pub fn drive(&mut self) -> Outcome {
        loop {
            let mut progressed = self.flush();
            if let Some(bytes) = self.to_server.pop_front() {
                progressed = true;
                if let Err(e) = self.server.handle_input(self.now, &bytes) {
                    self.server_error.get_or_insert(e);
                }
            }
            if let Some(bytes) = self.to_client.pop_front() {
                progressed = true;
                if let Err(e) = self.client.handle_input(&bytes) {
                    self.client_error.get_or_insert(e);
                }
            }
            if !progressed {
                break;
            }
        }
        self.outcome()
    }

    /// Drains both sides' outputs without delivering anything: transmissions go
    /// through the tamper hook into the in-flight queues, storage requests are
    /// answered by the store, persist requests are recorded (if `persist`). Returns
    /// whether there was anything to drain. A building block for tests that step the
    /// network one message at a time (see [`Pair::step`]).
    pub fn flush(&mut self) -> bool {
        let mut progressed = false;
        loop {
            let mut drained = false;
            while let Some(out) = self.client.poll_output() {
                drained = true;
                match out {
                    ClientOutput::Transmit(bytes) => self.send(Dir::ToServer, bytes),
                    ClientOutput::PersistKeyring(saved) => {
                        if self.persist {
                            self.saved = Some(saved);
                            if let Err(e) = self.client.handle_persisted() {
                                self.client_error.get_or_insert(e);
                            }
                        }
                    }
                    ClientOutput::Established(_) => {}
                }
            }
            while let Some(out) = self.server.poll_output() {
                drained = true;
                match out {
                    ServerOutput::Transmit(bytes) => self.send(Dir::ToClient, bytes),
                    ServerOutput::Storage(request) => {
                        let answer = self.store.answer(&request);
                        if let Err(e) = self.server.handle_storage(answer) {
                            self.server_error.get_or_insert(e);
                        }
                    }
                    ServerOutput::Established(peer) => self.peer = Some(peer),
                }
            }
            if !drained {
                return progressed;
            }
            progressed = true;
        }
    }

    /// Delivers the message at the front of one direction's in-flight queue to its
    /// receiver, then [`flush`](Pair::flush)es. Returns `false` (and does nothing) if
    /// that queue is empty. Unlike [`Pair::drive`], the caller decides the order.
    pub fn step(&mut self, dir: Dir) -> bool {
        self.flush();
        let Some(bytes) = self.in_flight(dir).pop_front() else { return false };
        match dir {
            Dir::ToServer => {
                if let Err(e) = self.server.handle_input(self.now, &bytes) {
                    self.server_error.get_or_insert(e);
                }
            }
            Dir::ToClient => {
                if let Err(e) = self.client.handle_input(&bytes) {
                    self.client_error.get_or_insert(e);
                }
            }
        }
        self.flush();
        true
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
        Outcome {
            client: self.client_error.clone().map_or(Ok(self.client.is_established()), Err),
            server: self.server_error.clone().map_or(Ok(self.server.is_established()), Err),
        }
    }

    /// The two sessions of an established pair.
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
