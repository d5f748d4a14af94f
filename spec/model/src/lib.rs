//! # An exhaustive model check of the abstract Boarding join
//!
//! The join of `spec/PROTOCOL.md`, reduced to symbolic terms and explored
//! exhaustively with [`stateright`] against an active network attacker.
//!
//! ## The abstract protocol
//!
//! ```text
//! A → G  Hello     { nc, tid }
//! G → A  Challenge { nc, ns, tid }                      signed by G: A checks its pin
//! A → G  Auth      { tid, cid, eph_c, Mac(secret(tid), Bound(nc, ns, tid, cid, eph_c)),
//!                    Sig(key(cid), Bound(nc, ns, tid, cid, eph_c)) }     the attestation
//!        G's validator: the evidence is cid's node key over this session's binding
//!        G redeems atomically: uses(tid) < max, or a retry over cid's unconfirmed keyring
//! G → A  SFin      { Mac(K, "server") }                 K = Key(eph_c, eph_s, tid, nc, cid)
//! A → G  CFin      { Mac(K, "client") }                 G confirms the keyring, accepts cid
//! ```
//!
//! Nonces and ephemeral keys are fresh symbols; `Key(..)` stands for HKDF over the
//! X25519 secret, the token secret and the transcript. The attacker *is* the
//! network: every message sent goes into its knowledge ([`State::seen`]), and it
//! delivers any message it has seen, any number of times, in any order, to any
//! session (so dropping, reordering, duplicating and replaying across sessions are
//! all covered), or forges one from what it knows: its own nonce and ephemeral key,
//! its own one-use token `TM` (so it can join legitimately), every plaintext field it
//! has seen, every proof it has seen, and any MAC keyed by a secret it knows. It can
//! compute a session key only if the client ephemeral is its own and (when the key
//! schedule mixes in the token) it knows the token's secret. It cannot forge the
//! gateway's signature, nor an honest agent's node-key signature (its attestation
//! evidence): it may present any evidence it has seen, in any session, and evidence
//! signed by its own node key. The gateway requires attestation and that the client
//! id be the attested name; the evidence's `Bound(..)` stands for the attestation
//! binding of §7.3.1. Honest agents share one honest one-use token `T1`; each may
//! give up on an attempt at any point before it completes and retry (a fresh nonce,
//! the same token and client id), up to a bound.
//!
//! A delivery the recipient rejects is modelled as no transition: the recipient's
//! session is then indistinguishable from one the attacker silenced, which it can
//! always do, and an agent's reaction to a dead session is its `Abort`.
//!
//! ## Properties ([`BoardingModel::properties`])
//!
//! * `authentication` (always): if the gateway accepts client id `X` with the honest
//!   token, then honest agent `X` ran that very session (same client nonce and gateway
//!   nonce) to completion and derived the same session key; and no session of `X` is
//!   accepted twice.
//! * `token secrecy` (always): the attacker never learns the honest token's secret.
//! * `use bound` (always): no token is charged more often than its maximum.
//! * `charge once` (always): a token's use count equals the number of distinct
//!   client ids holding a keyring from it, however many attempts were redeemed.
//! * `key confirmation` (always): a keyring the gateway confirmed for an honest agent
//!   is the one that agent persisted.
//! * `attestation` (always): the gateway admits honest client id `X` in a session only
//!   if `X` attested that very session (evidence by `X`'s node key over that session's
//!   binding): replayed evidence is refused, because its binding is another session's.
//! * `honest join succeeds`, `retry after a charged attempt succeeds`, `attacker joins
//!   with its own token` (sometimes): reachability, so the checks above are not
//!   vacuous.
//!
//! ## Known-bad variants ([`Variant`])
//!
//! The reference flow's flaws, each of which the checker must catch:
//! [`Variant::StaticProof`] (a bearer proof not bound to the session, keys not bound
//! to the token) breaks `authentication`; [`Variant::CleartextToken`] (the proof is
//! the token itself) breaks `token secrecy`; [`Variant::UnboundEvidence`] (evidence
//! fixed before the session, the same in every join) breaks `attestation`.
//!
//! ## Keyring rotation on resume ([`rotation`])
//!
//! A second model, of the resume (§8) with keyring rotation: the gateway may ask a resuming
//! agent to rotate, the agent persists the new keyring (keeping the one it used as a fallback)
//! before it answers, and the gateway commits the rotation in one atomic store step, keeping
//! the keyrings it retired. Against the network attacker (which also crashes either side at
//! any point) and a **thief** that copies the agent's stored keyrings once and resumes with
//! them, it checks that at most one keyring is acceptable (`one acceptable keyring`), that the
//! owner loses access only to a thief's rotation and then holds a retired keyring, so its next
//! resume raises a clone event (`no silent lockout`), and that no clone event is raised without
//! a thief (`no false clone alarm`). Its known-bad [`rotation::Variant`]s include the three
//! gaps the checker finds without Boarding's three rules (a stale acceptance after a concurrent rotation,
//! a delayed rotation committing after the agent moved on, an unchecked finish of a concurrent
//! resume): see the module documentation. The claims stop at a thief on the path: holding the
//! keyring, it can answer the agent's resumes as the gateway (the resume keys need no identity
//! key) and talk it out of the gateway's keyring ([`rotation::RotationModel::thief_on_path`]).

pub mod rotation;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use stateright::{Checker, HasDiscoveries, Model, Property};

/// Which protocol the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Boarding: the proof is a MAC keyed by the token secret over the session
    /// transcript, and the keys mix in the token secret and the transcript.
    Boarding,
    /// The reference flow's replayable bearer proof: a MAC keyed by the token secret
    /// over a static value (kubeadm's cluster-info signature), and keys from the
    /// Diffie-Hellman exchange alone.
    StaticProof,
    /// A proof that is the token secret itself, sent in the clear.
    CleartextToken,
    /// Boarding, but with attestation evidence that does not commit to the session
    /// (the same signature in every join, as evidence configured before the session).
    UnboundEvidence,
}

/// A participant: the honest agents are `A` and `B`, the attacker is `M`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Agent {
    /// First honest agent (client id "a").
    A,
    /// Second honest agent (client id "b").
    B,
    /// The attacker, also a legitimate holder of its own token.
    M,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Agent::A => "A",
            Agent::B => "B",
            Agent::M => "M",
        })
    }
}

/// A bootstrap token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Token {
    /// The honest agents' one-use token.
    T1,
    /// The attacker's own one-use token.
    TM,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::T1 => "T1",
            Token::TM => "TM",
        })
    }
}

/// A fresh value: a nonce, and the ephemeral key drawn with it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fresh {
    /// Honest agent's attempt number `n`.
    Agent(Agent, u8),
    /// The gateway's session number `n`.
    Gateway(u8),
    /// The attacker's own.
    Attacker,
}

impl fmt::Debug for Fresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fresh::Agent(a, n) => write!(f, "{a:?}#{n}"),
            Fresh::Gateway(n) => write!(f, "G#{n}"),
            Fresh::Attacker => f.write_str("M#"),
        }
    }
}

/// What a proof covers.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Covered {
    /// The session transcript: both nonces, the token id, the client id, the client
    /// ephemeral.
    Bound {
        /// Client nonce.
        nc: Fresh,
        /// Gateway nonce.
        ns: Fresh,
        /// Token id.
        tid: Token,
        /// Client id.
        cid: Agent,
        /// Client ephemeral.
        eph: Fresh,
    },
    /// A value that is the same in every session.
    Static(Token),
    /// A value that is the same in every session of every token (evidence made once).
    Fixed,
}

impl fmt::Debug for Covered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Covered::Bound { nc, ns, tid, cid, eph } => write!(f, "th({nc:?},{ns:?},{tid:?},{cid:?},{eph:?})"),
            Covered::Static(t) => write!(f, "static({t:?})"),
            Covered::Fixed => f.write_str("fixed"),
        }
    }
}

/// Attestation evidence: a node key's signature over what it covers.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Evidence {
    /// Whose node key signed (the name it attests).
    pub signer: Agent,
    /// What it signed: a session's binding, or a value the same in every session.
    pub covered: Covered,
}

impl fmt::Debug for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig(key({:?}), {:?})", self.signer, self.covered)
    }
}

/// A token proof.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proof {
    /// A MAC keyed by the token's secret.
    Mac(Token, Covered),
    /// The token's secret itself.
    Cleartext(Token),
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proof::Mac(t, c) => write!(f, "Mac(secret({t:?}), {c:?})"),
            Proof::Cleartext(t) => write!(f, "secret({t:?})"),
        }
    }
}

/// A session key: what HKDF derives from.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Client ephemeral.
    pub eph_c: Fresh,
    /// Gateway ephemeral.
    pub eph_s: Fresh,
    /// Token and transcript mixed in (`None`: Diffie-Hellman alone).
    pub bound: Option<(Token, Fresh, Agent)>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.bound {
            Some((t, nc, cid)) => write!(f, "K({:?},{:?},{t:?},{nc:?},{cid:?})", self.eph_c, self.eph_s),
            None => write!(f, "K({:?},{:?})", self.eph_c, self.eph_s),
        }
    }
}

/// A message on the wire, as a symbolic term.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Join message 1.
    Hello {
        /// Client nonce.
        nc: Fresh,
        /// Named token.
        tid: Token,
    },
    /// Join message 2 (signed by the gateway).
    Challenge {
        /// Client nonce it answers.
        nc: Fresh,
        /// Gateway nonce (and ephemeral).
        ns: Fresh,
        /// The token challenged.
        tid: Token,
    },
    /// Join message 3.
    Auth {
        /// Token.
        tid: Token,
        /// Client id.
        cid: Agent,
        /// Client ephemeral.
        eph: Fresh,
        /// Token proof.
        proof: Proof,
        /// Attestation evidence.
        ev: Evidence,
    },
    /// Join message 4: the gateway's key confirmation.
    SFin(Key),
    /// Join message 5: the client's key confirmation.
    CFin(Key),
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Hello { nc, tid } => write!(f, "Hello({nc:?}, {tid:?})"),
            Msg::Challenge { nc, ns, tid } => write!(f, "Challenge({nc:?}, {ns:?}, {tid:?})"),
            Msg::Auth { tid, cid, eph, proof, ev } => {
                write!(f, "Auth({tid:?}, cid {cid:?}, eph {eph:?}, {proof:?}, {ev:?})")
            }
            Msg::SFin(k) => write!(f, "SFin(Mac({k:?}))"),
            Msg::CFin(k) => write!(f, "CFin(Mac({k:?}))"),
        }
    }
}

/// One attempt of an honest agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Run {
    /// Sent its hello, waiting for the challenge.
    Hello,
    /// Sent its proof in answer to gateway nonce `ns`.
    Auth {
        /// The gateway nonce it answered.
        ns: Fresh,
    },
    /// Verified the gateway's confirmation, persisted the keyring, sent its own.
    Done {
        /// The gateway nonce.
        ns: Fresh,
        /// The session key (and keyring) it holds.
        key: Key,
    },
    /// Gave up (a timeout, a dead connection).
    Aborted,
}

/// One gateway connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GatewaySession {
    /// Challenged token `tid` for client nonce `nc`.
    Challenged {
        /// Client nonce.
        nc: Fresh,
        /// Token.
        tid: Token,
    },
    /// Redeemed the token for `cid` and sent its confirmation under `key`.
    Redeemed {
        /// Client nonce.
        nc: Fresh,
        /// Client id.
        cid: Agent,
        /// Token.
        tid: Token,
        /// Session key.
        key: Key,
    },
    /// Accepted `cid`: the keyring is confirmed.
    Accepted {
        /// Client nonce.
        nc: Fresh,
        /// Client id.
        cid: Agent,
        /// Token.
        tid: Token,
        /// Session key.
        key: Key,
    },
}

/// The gateway's keyring record for a client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyringRecord {
    /// Token it was redeemed with.
    pub tid: Token,
    /// The keyring (identified with the session key of the join that wrote it).
    pub key: Key,
    /// Whether the client proved it holds it.
    pub confirmed: bool,
}

/// The whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// Every message ever sent: the attacker's knowledge of the wire.
    pub seen: BTreeSet<Msg>,
    /// Each honest agent's attempts, in order.
    pub runs: BTreeMap<Agent, Vec<Run>>,
    /// What each honest agent persisted.
    pub persisted: BTreeMap<Agent, Key>,
    /// The gateway's connections, by gateway nonce number.
    pub sessions: Vec<GatewaySession>,
    /// The gateway's keyrings.
    pub keyrings: BTreeMap<Agent, KeyringRecord>,
    /// Token use counts.
    pub uses: BTreeMap<Token, u8>,
    /// The sessions each honest agent attested, by their bindings.
    pub attested: BTreeSet<(Agent, Covered)>,
    /// The sessions the gateway's validator admitted: the client id and the session's binding.
    pub admitted: BTreeSet<(Agent, Covered)>,
}

/// What happens next.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// An honest agent starts an attempt.
    Start(Agent),
    /// An honest agent gives up on its current attempt.
    Abort(Agent),
    /// The network delivers a message seen before to the gateway (`None`: on a new
    /// connection) or to an honest agent.
    Deliver(Msg, To),
    /// The attacker sends a message it made up.
    Forge(Msg, To),
}

/// A recipient.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum To {
    /// A new gateway connection.
    NewSession,
    /// Gateway connection `n`.
    Session(u8),
    /// An honest agent's current attempt.
    Agent(Agent),
}

impl fmt::Debug for To {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            To::NewSession => f.write_str("G(new connection)"),
            To::Session(n) => write!(f, "G#{n}"),
            To::Agent(a) => write!(f, "{a:?}"),
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Start(a) => write!(f, "{a:?} starts a join"),
            Action::Abort(a) => write!(f, "{a:?} gives up its attempt"),
            Action::Deliver(m, to) => write!(f, "deliver {m:?} to {to:?}"),
            Action::Forge(m, to) => write!(f, "attacker forges {m:?} to {to:?}"),
        }
    }
}

/// The model and its bounds.
#[derive(Debug, Clone)]
pub struct BoardingModel {
    /// Which protocol.
    pub variant: Variant,
    /// Honest agents (1 or 2), all holding the one-use token `T1`.
    pub agents: Vec<Agent>,
    /// Attempts each honest agent may make.
    pub attempts: u8,
    /// Gateway connections in all.
    pub max_sessions: u8,
}

/// The most uses of every token.
pub const MAX_USES: u8 = 1;

impl BoardingModel {
    /// The standard bound: `agents` honest agents with `attempts` attempts each, and
    /// `max_sessions` gateway connections.
    pub fn new(variant: Variant, agents: usize, attempts: u8, max_sessions: u8) -> Self {
        Self { variant, agents: [Agent::A, Agent::B].into_iter().take(agents).collect(), attempts, max_sessions }
    }

    fn proof(&self, tid: Token, covered: Covered) -> Proof {
        match self.variant {
            Variant::Boarding | Variant::StaticProof | Variant::UnboundEvidence => Proof::Mac(tid, covered),
            Variant::CleartextToken => Proof::Cleartext(tid),
        }
    }

    /// The evidence `signer` makes for the session with this binding.
    fn evidence(&self, signer: Agent, binding: Covered) -> Evidence {
        let covered = match self.variant {
            Variant::UnboundEvidence => Covered::Fixed,
            _ => binding,
        };
        Evidence { signer, covered }
    }

    /// What an honest party covers with its proof in this session.
    fn covered(&self, nc: Fresh, ns: Fresh, tid: Token, cid: Agent, eph: Fresh) -> Covered {
        match self.variant {
            Variant::Boarding | Variant::UnboundEvidence => Covered::Bound { nc, ns, tid, cid, eph },
            Variant::StaticProof | Variant::CleartextToken => Covered::Static(tid),
        }
    }

    /// The session key both sides derive.
    fn key(&self, eph_c: Fresh, ns: Fresh, tid: Token, nc: Fresh, cid: Agent) -> Key {
        let bound = match self.variant {
            Variant::Boarding | Variant::UnboundEvidence => Some((tid, nc, cid)),
            Variant::StaticProof | Variant::CleartextToken => None,
        };
        Key { eph_c, eph_s: ns, bound }
    }

    /// The fresh value of an honest agent's current attempt.
    fn current(state: &State, agent: Agent) -> Option<(Fresh, &Run)> {
        let runs = state.runs.get(&agent)?;
        let n = runs.len().checked_sub(1)?;
        Some((Fresh::Agent(agent, u8::try_from(n).ok()?), runs.last()?))
    }

    /// Every token whose secret the attacker knows: its own, and any sent in clear.
    pub fn known_secrets(state: &State) -> BTreeSet<Token> {
        let mut known = BTreeSet::from([Token::TM]);
        for m in &state.seen {
            if let Msg::Auth { proof: Proof::Cleartext(t), .. } = m {
                known.insert(*t);
            }
        }
        known
    }

    /// Whether the attacker can compute `key`.
    fn attacker_knows_key(state: &State, key: &Key) -> bool {
        key.eph_c == Fresh::Attacker && key.bound.is_none_or(|(t, _, _)| Self::known_secrets(state).contains(&t))
    }

    /// The gateway's handling of a proof on session `n`: verify, redeem atomically,
    /// answer. `None` if it rejects.
    fn gateway_auth(&self, state: &mut State, n: usize, msg: &Msg) -> Option<()> {
        let Msg::Auth { tid, cid, eph, proof, ev } = msg.clone() else { return None };
        let GatewaySession::Challenged { nc, tid: named } = state.sessions.get(n)?.clone() else { return None };
        let ns = Fresh::Gateway(u8::try_from(n).ok()?);
        if tid != named || proof != self.proof(tid, self.covered(nc, ns, tid, cid, eph)) {
            return None;
        }
        // The validator (before redemption): the client id's node key over this
        // session's binding. A refusal changes nothing.
        let binding = Covered::Bound { nc, ns, tid, cid, eph };
        if ev != self.evidence(cid, binding.clone()) {
            return None;
        }
        state.admitted.insert((cid, binding));
        // Atomic redemption (the rule of `decide_redemption`, restated).
        let retry = match state.keyrings.get(&cid) {
            None => false,
            Some(r) if r.confirmed || r.tid != tid => return None,
            Some(_) => true,
        };
        let uses = state.uses.entry(tid).or_insert(0);
        if !retry {
            if *uses >= MAX_USES {
                return None;
            }
            *uses += 1;
        }
        let key = self.key(eph, ns, tid, nc, cid);
        state.keyrings.insert(cid, KeyringRecord { tid, key: key.clone(), confirmed: false });
        state.sessions[n] = GatewaySession::Redeemed { nc, cid, tid, key: key.clone() };
        state.seen.insert(Msg::SFin(key));
        Some(())
    }

    /// The gateway's handling of a key confirmation on session `n`.
    fn gateway_finished(state: &mut State, n: usize, msg: &Msg) -> Option<()> {
        let Msg::CFin(k) = msg else { return None };
        let GatewaySession::Redeemed { nc, cid, tid, key } = state.sessions.get(n)?.clone() else { return None };
        if *k != key {
            return None;
        }
        let record = state.keyrings.get_mut(&cid)?;
        if record.key != key {
            return None;
        }
        record.confirmed = true;
        state.sessions[n] = GatewaySession::Accepted { nc, cid, tid, key };
        Some(())
    }

    /// An honest agent's handling of a message on its current attempt.
    fn agent_receive(&self, state: &mut State, agent: Agent, msg: &Msg) -> Option<()> {
        let (fresh, run) = Self::current(state, agent)?;
        let run = run.clone();
        let next = match (&run, msg) {
            (Run::Hello, Msg::Challenge { nc, ns, tid }) if *nc == fresh && *tid == Token::T1 => {
                let proof = self.proof(Token::T1, self.covered(fresh, *ns, Token::T1, agent, fresh));
                // Asked only now, with the session's binding.
                let binding = Covered::Bound { nc: fresh, ns: *ns, tid: Token::T1, cid: agent, eph: fresh };
                state.attested.insert((agent, binding.clone()));
                let ev = self.evidence(agent, binding);
                state.seen.insert(Msg::Auth { tid: Token::T1, cid: agent, eph: fresh, proof, ev });
                Run::Auth { ns: *ns }
            }
            (Run::Auth { ns }, Msg::SFin(k)) if *k == self.key(fresh, *ns, Token::T1, fresh, agent) => {
                state.persisted.insert(agent, k.clone());
                state.seen.insert(Msg::CFin(k.clone()));
                Run::Done { ns: *ns, key: k.clone() }
            }
            _ => return None,
        };
        *state.runs.get_mut(&agent)?.last_mut()? = next;
        Some(())
    }

    /// The Auth messages the attacker can make up for gateway session `n`.
    fn forged_auths(&self, state: &State, n: usize, out: &mut Vec<Msg>) {
        let Some(GatewaySession::Challenged { nc, tid }) = state.sessions.get(n) else { return };
        let Ok(ns) = u8::try_from(n).map(Fresh::Gateway) else { return };
        let mut ephs = BTreeSet::from([Fresh::Attacker]);
        let mut proofs = BTreeSet::new();
        let mut seen_evidence = BTreeSet::new();
        for m in &state.seen {
            if let Msg::Auth { eph, proof, ev, .. } = m {
                ephs.insert(*eph);
                proofs.insert(proof.clone());
                seen_evidence.insert(ev.clone());
            }
        }
        let mut cids = self.agents.clone();
        cids.push(Agent::M);
        for &cid in &cids {
            for &eph in &ephs {
                let mut candidates = proofs.clone();
                for t in Self::known_secrets(state) {
                    candidates.insert(Proof::Mac(t, Covered::Bound { nc: *nc, ns, tid: t, cid, eph }));
                    candidates.insert(Proof::Mac(t, Covered::Static(t)));
                    candidates.insert(Proof::Cleartext(t));
                }
                // Evidence: any it has seen under this name (replays), and its own node
                // key's over this session's binding (for its own name).
                let mut evidence: Vec<Evidence> = seen_evidence.iter().filter(|e| e.signer == cid).cloned().collect();
                if cid == Agent::M {
                    evidence.push(self.evidence(Agent::M, Covered::Bound { nc: *nc, ns, tid: *tid, cid, eph }));
                }
                for proof in candidates {
                    for ev in &evidence {
                        let msg = Msg::Auth { tid: *tid, cid, eph, proof: proof.clone(), ev: ev.clone() };
                        if !state.seen.contains(&msg) {
                            out.push(msg);
                        }
                    }
                }
            }
        }
    }

    /// Whether the gateway accepted honest agent `agent` on its attempt `attempt`.
    fn accepted(state: &State, agent: Agent, attempt: u8) -> bool {
        state.sessions.iter().any(|s| {
            matches!(s, GatewaySession::Accepted { nc, cid, .. } if *cid == agent && *nc == Fresh::Agent(agent, attempt))
        })
    }

    /// Runs the checker to completion (breadth first, so counterexamples are
    /// shortest) and returns it.
    pub fn check(self, threads: usize) -> impl Checker<Self> {
        self.checker().threads(threads).spawn_bfs().join()
    }

    /// Searches for a shortest counterexample to the `always` property `property`:
    /// breadth first on one thread, with the depth bound raised one step at a time
    /// (up to `max_depth`) until a violation appears. Returns each step with the
    /// messages it put on the wire, up to the first state that violates the property.
    pub fn counterexample(self, property: &'static str, max_depth: usize) -> Option<Vec<Step>> {
        let (condition, path) = shortest_violation(&self, property, max_depth)?;
        let mut steps = Vec::new();
        let mut before: Option<State> = None;
        for (state, action) in path {
            if let (Some(last), Some(prev)) = (steps.last_mut(), &before) {
                let step: &mut Step = last;
                step.sent = state.seen.difference(&prev.seen).cloned().collect();
            }
            if !condition(&self, &state) {
                return Some(steps);
            }
            steps.push(Step { action: action?, sent: Vec::new() });
            before = Some(state);
        }
        None
    }
}

/// A path of a model's states and actions, as a checker's discovery yields it.
pub type Path<M> = Vec<(<M as Model>::State, Option<<M as Model>::Action>)>;

/// The condition of `model`'s property `property` with a shortest path to a state that
/// violates it: breadth first on one thread, the depth bound raised one step at a time
/// (up to `max_depth`) until the checker discovers one. Both models' counterexamples
/// start here.
#[allow(clippy::type_complexity)]
pub fn shortest_violation<M>(
    model: &M,
    property: &'static str,
    max_depth: usize,
) -> Option<(fn(&M, &M::State) -> bool, Path<M>)>
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Clone + fmt::Debug + std::hash::Hash + PartialEq + Send + Sync + 'static,
    M::Action: Clone + fmt::Debug + PartialEq + Send + Sync + 'static,
{
    let condition = model.properties().into_iter().find(|p| p.name == property)?.condition;
    (1..=max_depth).find_map(|depth| {
        model
            .clone()
            .checker()
            .threads(1)
            .target_max_depth(depth)
            .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
            .spawn_bfs()
            .join()
            .discovery(property)
            .map(|path| (condition, path.into_vec()))
    })
}

impl Model for BoardingModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            seen: BTreeSet::new(),
            runs: self.agents.iter().map(|a| (*a, Vec::new())).collect(),
            persisted: BTreeMap::new(),
            sessions: Vec::new(),
            keyrings: BTreeMap::new(),
            uses: BTreeMap::from([(Token::T1, 0), (Token::TM, 0)]),
            attested: BTreeSet::new(),
            admitted: BTreeSet::new(),
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let room = state.sessions.len() < usize::from(self.max_sessions);
        for &agent in &self.agents {
            match Self::current(state, agent) {
                Some((_, Run::Hello | Run::Auth { .. })) => actions.push(Action::Abort(agent)),
                Some((_, Run::Done { .. })) => {}
                None | Some((_, Run::Aborted)) => {
                    if state.runs.get(&agent).is_some_and(|r| r.len() < usize::from(self.attempts)) {
                        actions.push(Action::Start(agent));
                    }
                }
            }
        }
        for m in &state.seen {
            match m {
                Msg::Hello { .. } if room => actions.push(Action::Deliver(m.clone(), To::NewSession)),
                Msg::Hello { .. } => {}
                Msg::Challenge { .. } | Msg::SFin(_) => {
                    for &a in &self.agents {
                        actions.push(Action::Deliver(m.clone(), To::Agent(a)));
                    }
                }
                Msg::Auth { .. } | Msg::CFin(_) => {
                    for n in 0..state.sessions.len() {
                        if let Ok(n) = u8::try_from(n) {
                            actions.push(Action::Deliver(m.clone(), To::Session(n)));
                        }
                    }
                }
            }
        }
        // The attacker's own hellos, naming either token.
        if room {
            for tid in [Token::T1, Token::TM] {
                let msg = Msg::Hello { nc: Fresh::Attacker, tid };
                if !state.seen.contains(&msg) {
                    actions.push(Action::Forge(msg, To::NewSession));
                }
            }
        }
        for (n, session) in state.sessions.iter().enumerate() {
            let Ok(to) = u8::try_from(n).map(To::Session) else { continue };
            let mut forged = Vec::new();
            match session {
                GatewaySession::Challenged { .. } => self.forged_auths(state, n, &mut forged),
                GatewaySession::Redeemed { key, .. } if Self::attacker_knows_key(state, key) => {
                    let msg = Msg::CFin(key.clone());
                    if !state.seen.contains(&msg) {
                        forged.push(msg);
                    }
                }
                _ => {}
            }
            actions.extend(forged.into_iter().map(|m| Action::Forge(m, to)));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Start(agent) => {
                let runs = state.runs.get_mut(&agent)?;
                let nc = Fresh::Agent(agent, u8::try_from(runs.len()).ok()?);
                runs.push(Run::Hello);
                state.seen.insert(Msg::Hello { nc, tid: Token::T1 });
            }
            Action::Abort(agent) => *state.runs.get_mut(&agent)?.last_mut()? = Run::Aborted,
            Action::Deliver(msg, to) | Action::Forge(msg, to) => match (to, &msg) {
                (To::NewSession, Msg::Hello { nc, tid }) => {
                    let ns = Fresh::Gateway(u8::try_from(state.sessions.len()).ok()?);
                    state.sessions.push(GatewaySession::Challenged { nc: *nc, tid: *tid });
                    state.seen.insert(Msg::Challenge { nc: *nc, ns, tid: *tid });
                }
                (To::Session(n), Msg::Auth { .. }) => self.gateway_auth(&mut state, usize::from(n), &msg)?,
                (To::Session(n), Msg::CFin(_)) => Self::gateway_finished(&mut state, usize::from(n), &msg)?,
                (To::Agent(agent), _) => self.agent_receive(&mut state, agent, &msg)?,
                _ => return None,
            },
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("authentication", |_, s: &State| {
                let mut accepted = BTreeSet::new();
                s.sessions.iter().enumerate().all(|(n, session)| {
                    let GatewaySession::Accepted { nc, cid, tid: Token::T1, key } = session else { return true };
                    let Ok(ns) = u8::try_from(n).map(Fresh::Gateway) else { return false };
                    let ran_it = match nc {
                        Fresh::Agent(a, i) if a == cid => {
                            s.runs.get(a).and_then(|r| r.get(usize::from(*i))).is_some_and(
                                |run| matches!(run, Run::Done { ns: n2, key: k2 } if *n2 == ns && k2 == key),
                            )
                        }
                        _ => false,
                    };
                    ran_it && accepted.insert((*cid, *nc))
                })
            }),
            Property::always("token secrecy", |_, s: &State| !Self::known_secrets(s).contains(&Token::T1)),
            Property::always("use bound", |_, s: &State| s.uses.values().all(|u| *u <= MAX_USES)),
            Property::always("charge once", |_, s: &State| {
                s.uses.iter().all(|(t, u)| usize::from(*u) == s.keyrings.values().filter(|r| r.tid == *t).count())
            }),
            Property::always("key confirmation", |m: &Self, s: &State| {
                m.agents.iter().all(|a| match s.keyrings.get(a) {
                    Some(r) if r.confirmed && r.tid == Token::T1 => s.persisted.get(a) == Some(&r.key),
                    _ => true,
                })
            }),
            Property::always("attestation", |_, s: &State| {
                s.admitted
                    .iter()
                    .all(|(cid, binding)| *cid == Agent::M || s.attested.contains(&(*cid, binding.clone())))
            }),
            Property::sometimes("honest join succeeds", |m: &Self, s: &State| {
                m.agents.iter().any(|a| (0..m.attempts).any(|i| Self::accepted(s, *a, i)))
            }),
            Property::sometimes("retry after a charged attempt succeeds", |_, s: &State| {
                let first_charged = s.sessions.iter().any(|x| {
                    matches!(x, GatewaySession::Redeemed { nc: Fresh::Agent(Agent::A, 0), cid: Agent::A, .. })
                });
                first_charged && Self::accepted(s, Agent::A, 1) && s.uses.get(&Token::T1) == Some(&1)
            }),
            Property::sometimes("attacker joins with its own token", |_, s: &State| {
                s.sessions.iter().any(|x| matches!(x, GatewaySession::Accepted { tid: Token::TM, cid: Agent::M, .. }))
            }),
        ]
    }
}

/// The bounds CI runs: `(agents, attempts per agent, gateway connections)`. With
/// `BOARDING_DEEP` set (to anything but `0`), deeper ones.
pub fn bounds() -> Vec<(usize, u8, u8)> {
    let deep = std::env::var("BOARDING_DEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    if deep { vec![(1, 3, 4), (2, 2, 4)] } else { vec![(1, 2, 3), (2, 2, 3)] }
}

/// One step of a counterexample: what happened, and what it put on the wire.
#[derive(Debug, Clone)]
pub struct Step {
    /// The action.
    pub action: Action,
    /// The messages it sent.
    pub sent: Vec<Msg>,
}

/// Formats steps as a numbered trace, with the messages each one sent.
pub fn trace(steps: &[Step]) -> String {
    let mut out = String::new();
    for (i, step) in steps.iter().enumerate() {
        out.push_str(&format!("{:>3}. {:?}\n", i + 1, step.action));
        for m in &step.sent {
            out.push_str(&format!("       sends {m:?}\n"));
        }
    }
    out
}
