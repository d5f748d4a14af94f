//! The whole-session target: real agents and a real gateway (real crypto, one shared
//! in-memory store) over a network the fuzzer controls. Each input byte picks a
//! connection and an action: deliver, drop, duplicate, reorder, flip a bit, split,
//! truncate, inject any message recorded earlier in the run, acknowledge a persist,
//! fail the next storage request, open a new join (a retry, or a second client) or a
//! resume, and send channel data once a session is up. The worlds are seeded, so
//! every input replays exactly.
//!
//! Asserted after every action:
//! * an agent completes only if the head of what it received is exactly what its
//!   gateway sent, and a gateway reports a verified client (or redeems) only if the
//!   head of what it received is exactly what its agent sent: nothing tampered is
//!   accepted;
//! * when both ends of a connection complete they hold the same keys (a frame sealed
//!   on either end opens on the other), the gateway's verified client names the
//!   agent's client id, token and kind, and the store holds the agent's keyring,
//!   confirmed;
//! * on the channel, only the next genuine frame is ever accepted as data;
//! * the token is charged exactly once per client id it binds (a retry is free), never
//!   beyond its uses, and a confirmed keyring never changes and is one an agent holds.

use std::collections::{BTreeMap, VecDeque};

use boarding::channel::Received;
use boarding::client::{Client, ClientOutput, ClientSession, JoinConfig, Joined, ResumeConfig, SavedKeyring};
use boarding::identity::ClientId;
use boarding::keys::KeyringId;
use boarding::server::{Server, ServerOutput, ServerSession, VerifiedClient};
use boarding::storage::{StorageAnswer, StorageRequest};
use boarding::token::BootstrapToken;
use boarding_memory::World;

use super::channel::{Receiver, Sealed};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToServer,
    ToClient,
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
}

#[derive(Debug)]
struct Conn {
    client: Option<Client>,
    server: Option<Server>,
    client_id: ClientId,
    resume: Option<SavedKeyring>,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    client_sent: Vec<Vec<u8>>,
    server_sent: Vec<Vec<u8>>,
    client_got: Vec<u8>,
    server_got: Vec<u8>,
    pending_persist: Option<SavedKeyring>,
    saved: Option<SavedKeyring>,
    joined: Option<Joined>,
    peer: Option<VerifiedClient>,
    redeemed: bool,
    fail_storage: bool,
    sessions: Option<Box<Sessions>>,
}

struct Net {
    world: World,
    token: BootstrapToken,
    max_uses: u32,
    conns: Vec<Conn>,
    /// Every message any side sent in this run (handshake and channel frames).
    recorded: Vec<Vec<u8>>,
    /// Every keyring an agent persisted.
    persisted: Vec<SavedKeyring>,
    /// Keyrings seen confirmed: they may never change.
    confirmed: BTreeMap<ClientId, KeyringId>,
}

impl Net {
    fn connect(&mut self, resume: Option<SavedKeyring>, client_id: &str) {
        if self.conns.len() >= MAX_CONNECTIONS {
            return;
        }
        let (client, client_id) = match resume {
            Some(ref saved) => {
                (Client::resume(ResumeConfig::new(saved.clone()), &mut self.world.rng()), saved.client_id.clone())
            }
            None => {
                let config: JoinConfig = self.world.join_config(client_id, &self.token);
                let id = ClientId::new(client_id).unwrap_or_else(|e| panic!("{e}"));
                (Client::join(config, &mut self.world.rng()), id)
            }
        };
        let server = Server::new(self.world.config.clone(), &mut self.world.rng());
        self.conns.push(Conn {
            client: Some(client),
            server: Some(server),
            client_id,
            resume,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            client_sent: Vec::new(),
            server_sent: Vec::new(),
            client_got: Vec::new(),
            server_got: Vec::new(),
            pending_persist: None,
            saved: None,
            joined: None,
            peer: None,
            redeemed: false,
            fail_storage: false,
            sessions: None,
        });
        let last = self.conns.len() - 1;
        self.flush(last);
    }

    /// Drains both ends' outputs, answering storage from the shared store.
    fn flush(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        loop {
            let mut moved = false;
            if let Some(client) = conn.client.as_mut() {
                while let Some(out) = client.poll_output() {
                    moved = true;
                    match out {
                        ClientOutput::Transmit(frame) => {
                            check_emitted(&frame);
                            self.recorded.push(frame.clone());
                            conn.client_sent.push(frame.clone());
                            conn.to_server.push_back(frame);
                        }
                        ClientOutput::PersistKeyring(saved) => conn.pending_persist = Some(saved),
                        ClientOutput::Established(joined) => conn.joined = Some(joined),
                    }
                }
            }
            if let Some(server) = conn.server.as_mut() {
                while let Some(out) = server.poll_output() {
                    moved = true;
                    match out {
                        ServerOutput::Transmit(frame) => {
                            check_emitted(&frame);
                            self.recorded.push(frame.clone());
                            conn.server_sent.push(frame.clone());
                            conn.to_client.push_back(frame);
                        }
                        ServerOutput::Storage(request) => {
                            if matches!(request, StorageRequest::Redeem(_)) {
                                conn.redeemed = true;
                            }
                            let answer = if std::mem::take(&mut conn.fail_storage) {
                                StorageAnswer::Failed
                            } else {
                                self.world.store.answer(&request)
                            };
                            let _ = server.handle_storage(answer);
                        }
                        ServerOutput::Established(peer) => conn.peer = Some(peer),
                    }
                }
            }
            if !moved {
                break;
            }
        }
        self.check_handshake(i);
    }

    /// Nothing tampered is accepted; completed connections agree on everything.
    fn check_handshake(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let join = conn.resume.is_none();
        let accepted_by_client = |n: usize| {
            conn.client_got.starts_with(&concat(&conn.server_sent[..n.min(conn.server_sent.len())]))
                && conn.server_sent.len() >= n
        };
        let accepted_by_server = |n: usize| {
            conn.server_got.starts_with(&concat(&conn.client_sent[..n.min(conn.client_sent.len())]))
                && conn.client_sent.len() >= n
        };
        if conn.pending_persist.is_some() || conn.saved.is_some() {
            assert!(join && accepted_by_client(2), "the agent accepted a join its gateway did not send");
        }
        if conn.joined.is_some() {
            assert!(accepted_by_client(if join { 2 } else { 1 }), "the agent completed on tampered messages");
        }
        if conn.redeemed {
            assert!(join && accepted_by_server(2), "the gateway redeemed on a hello and proof its agent did not send");
        }
        if conn.peer.is_some() {
            assert!(accepted_by_server(if join { 3 } else { 2 }), "the gateway verified tampered messages");
        }
        let both = conn.client.as_ref().is_some_and(Client::is_established)
            && conn.server.as_ref().is_some_and(Server::is_established);
        if !both || conn.sessions.is_some() {
            return;
        }
        let (Some(client), Some(server)) = (conn.client.take(), conn.server.take()) else { return };
        let client = client.into_session().unwrap_or_else(|e| panic!("{e}"));
        let server = server.into_session().unwrap_or_else(|e| panic!("{e}"));
        // Same identity on both ends.
        let peer = &server.peer;
        assert_eq!(peer.client_id(), &conn.client_id, "the gateway verified another client id");
        assert_eq!(peer.token_id(), self.token.id(), "the gateway verified another token");
        assert_eq!(peer.resumed(), !join);
        assert_eq!(client.joined.resumed, !join);
        assert_eq!(client.joined.gateway_pin, self.world.config.pin());
        assert_eq!(client.joined.suite, server.channel.suite());
        // Same keys, both directions.
        let mut buf = [0u8; 64];
        let n = client.channel.clone().seal(b"c2s", &mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.channel.clone().open(&buf[..n]), Ok(Received::Data(&b"c2s"[..])), "c2s keys differ");
        let n = server.channel.clone().seal(b"s2c", &mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(client.channel.clone().open(&buf[..n]), Ok(Received::Data(&b"s2c"[..])), "s2c keys differ");
        // The store holds the keyring the agent holds, confirmed.
        let record = self.world.store.keyring(&conn.client_id).unwrap_or_else(|| panic!("no keyring record"));
        assert!(record.confirmed, "both ends completed but the keyring is unconfirmed");
        let held = conn.saved.as_ref().or(conn.resume.as_ref()).unwrap_or_else(|| panic!("the agent holds nothing"));
        assert_eq!(record.keyring, held.keyring, "the store and the agent hold different keyrings");
        let mut sessions = Sessions {
            server_rx: Receiver::new(server.channel.clone()),
            client_rx: Receiver::new(client.channel.clone()),
            client,
            server,
            c2s: Vec::new(),
            s2c: Vec::new(),
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
        let now = self.world.now;
        let conn = &mut self.conns[i];
        let queue = match dir {
            Dir::ToServer => &mut conn.to_server,
            Dir::ToClient => &mut conn.to_client,
        };
        let Some(bytes) = queue.pop_front() else { return };
        if let Some(s) = conn.sessions.as_mut() {
            match dir {
                Dir::ToServer => s.server_rx.deliver(&bytes, &s.c2s),
                Dir::ToClient => s.client_rx.deliver(&bytes, &s.s2c),
            }
            return;
        }
        match dir {
            Dir::ToServer => {
                conn.server_got.extend_from_slice(&bytes);
                if let Some(server) = conn.server.as_mut() {
                    let _ = server.handle_input(now, &bytes);
                }
            }
            Dir::ToClient => {
                conn.client_got.extend_from_slice(&bytes);
                if let Some(client) = conn.client.as_mut() {
                    let _ = client.handle_input(&bytes);
                }
            }
        }
        self.flush(i);
    }

    fn send(&mut self, i: usize, dir: Dir, payload: &[u8]) {
        let conn = &mut self.conns[i];
        let Some(s) = conn.sessions.as_mut() else { return };
        let mut buf = vec![0u8; payload.len() + boarding::channel::FRAME_OVERHEAD];
        let (channel, sealed, queue) = match dir {
            Dir::ToServer => (&mut s.client.channel, &mut s.c2s, &mut conn.to_server),
            Dir::ToClient => (&mut s.server.channel, &mut s.s2c, &mut conn.to_client),
        };
        if let Ok(n) = channel.seal(payload, &mut buf) {
            sealed.push((buf[..n].to_vec(), Some(payload.to_vec())));
            self.recorded.push(buf[..n].to_vec());
            queue.push_back(buf[..n].to_vec());
        }
    }

    fn persist(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let (Some(saved), Some(client)) = (conn.pending_persist.take(), conn.client.as_mut()) else { return };
        self.persisted.push(saved.clone());
        conn.saved = Some(saved);
        let _ = client.handle_persisted();
        self.flush(i);
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
                assert!(held, "a keyring no agent holds was confirmed");
                self.confirmed.insert(id.clone(), record.keyring.id());
            }
        }
        for id in self.confirmed.keys() {
            assert!(snapshot.keyrings.contains_key(id), "a confirmed keyring vanished");
        }
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
                let conn = &mut net.conns[i];
                let queue = match dir {
                    Dir::ToServer => &mut conn.to_server,
                    Dir::ToClient => &mut conn.to_client,
                };
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
            11 => net.persist(i),
            12 => net.conns[i].fail_storage = true,
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
            _ => {}
        }
        net.check_store();
    }
    for i in 0..net.conns.len() {
        net.check_handshake(i);
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
    }
}
