//! # Keyring rotation on resume, against the network and a keyring thief
//!
//! The resume of `spec/PROTOCOL.md` §8 with keyring rotation (§8.5), reduced to symbolic terms and explored exhaustively with [`stateright`].
//! One client id; its agent (the **owner**, `A`) holds one keyring, or two while the
//! outcome of a rotation is unknown to it; a **thief** (`T`) may copy the owner's stored
//! keyrings once, at any moment, and then resume with its copy.
//!
//! ## The abstract protocol
//!
//! ```text
//! A → G  ResumeHello     { nc, eph_c, offered }        offered: [primary] or [primary, fallback]
//!        G selects: an offered id = current → current; else an offered id retired → that
//!        one (the clone path); else a decoy
//! G → A  ResumeChallenge { rotate, ns, eph_s, Mac(server key of K_sel, transcript) }
//!        A verifies against each offered keyring and learns `used`; if rotate:
//!        new = Rot(used, dh, transcript), persisted as {new, fallback: used} (compare and swap
//!        with the state this resume started from) before it answers
//! A → G  ResumeFinished  { Mac(client key of used, transcript) }
//!        G: selected retired → refuse, record a clone event; current and rotate → one atomic
//!        store step (current := new, retired += used) if the record allows it, else refuse;
//!        current, no rotate → established
//! ```
//!
//! `Rot(..)` ([`Keyring::Rotated`]) stands for HKDF over the used keyring, the resume's
//! X25519 secret and the transcript: only a party that knows the used keyring *and* that
//! resume's ephemeral secret computes it, which in the model is the agent (owner or thief)
//! that ran the resume and the gateway session that answered it. Every MAC covers the whole
//! transcript ([`Transcript`]: the hello as the gateway received it, with its offered list,
//! the gateway nonce and the rotate flag), so an agent accepts a challenge only for the hello
//! it sent and the gateway a finished only for its own session.
//!
//! **Attacker = network**, as in the join model: every message sent is in its knowledge
//! ([`State::seen`]); it delivers any of them any number of times, in any order, to any
//! recipient (drop, delay, duplicate, replay, reorder), and it sends resume hellos of its own
//! with any list of keyring ids it has seen (ids are public; a hello with an altered list under
//! an honest nonce has the same effect at the gateway, and no agent accepts its challenge). It
//! knows no keyring, so it makes no MAC. It **crashes** either side at any point
//! ([`Action::Crash`], [`Action::CrashGateway`]): in-flight resumes are lost; the agents'
//! stored keyrings and the gateway's store survive.
//!
//! **The thief** ([`Action::Copy`], once, at any moment) copies the owner's stored keyrings
//! (both if two are stored) and from then on runs resumes of its own with its own nonces and
//! ephemerals, following the agent's rules exactly (it rotates when asked, persisting to its
//! copy). It knows the copied keyrings and those it derived itself, never an honest resume's
//! ephemeral secret. By default it does not answer the owner's hellos as the gateway; with
//! [`RotationModel::thief_on_path`] it does, and this design does not withstand that (see
//! below).
//!
//! **The gateway** answers each hello on a new session (up to a bound). Its rotate flag is
//! nondeterministic whenever it selected its current keyring (policy: age, an operator's
//! request). Its store is one record: the current keyring, a bounded list of retired ones, a
//! revision (bumped by every write: compare and swap on it is etcd's `mod_revision`) and the
//! clone events. A **delivery the recipient rejects is no transition**, as in the join model.
//!
//! ## Three rules the checker shows are needed
//!
//! Rotation without each of these rules is checked too; the checker finds the gap each one
//! closes, kept as a [`Variant`] with its counterexample. Boarding
//! ([`Variant::Boarding`]) adds:
//!
//! 1. **Re-check at completion.** A resume without rotation is established only if the
//!    keyring it selected is still the record's current one (a linearizable read at
//!    ResumeFinished; refuse otherwise, with no clone event). Without it a resume that looked
//!    up `K` before a concurrent rotation away from `K` completes under `K` afterwards
//!    ([`Variant::StaleAccept`]).
//! 2. **Fence on a fallback selection.** When the gateway selects its current keyring and it
//!    is not the first offered id (the agent holds a rotation whose outcome it does not know),
//!    it writes the record (bumps its revision) before it answers, and a rotation commits only
//!    if the record's revision is still the one its own session read. Without it the first
//!    rotation's delayed ResumeFinished commits after the agent has moved on from that
//!    keyring (settled to the fallback, or rotated from it): the owner is locked out with no
//!    thief, and its next resume raises a false clone alarm ([`Variant::NoFence`]).
//! 3. **Check before every finished.** The agent sends any ResumeFinished only if its stored
//!    state is still the one the resume started from (compare and swap when it persists a
//!    rotation, compare otherwise). Without it, two concurrent resumes of one agent raise a
//!    false clone alarm: one rotates, the other's hello (looked up after that commit) meets
//!    the retired keyring ([`Variant::UncheckedFinish`], needs two resumes in flight).
//!
//! ## Properties ([`RotationModel::properties`])
//!
//! * `one acceptable keyring` (always): every resume the gateway established was under the
//!   keyring that was current when it completed, so no state lets two keyrings resume, and
//!   once a rotation away from `K` commits no later resume completes under `K`.
//! * `no silent lockout` (always): if the owner's stored keyrings no longer include the
//!   gateway's current one, the thief completed a resume that committed a rotation, and the
//!   owner's stored keyrings include a retired one (its next resume records a clone event).
//!   Without a thief: the owner always holds the current keyring.
//! * `no false clone alarm` (always): a clone event is recorded only if the thief exists.
//! * `honest rotation committed`, `owner resumes with its rotated keyring`, `clone detected
//!   at the thief after the owner rotated`, `clone detected at the owner after the thief
//!   rotated` (sometimes): reachability, so the above are not vacuous.
//!
//! ## Known-bad variants ([`Variant`])
//!
//! [`Variant::StaleAccept`] breaks `one acceptable keyring`; [`Variant::NoFence`] and
//! [`Variant::AgentPersistsAfterFinished`] break `no silent lockout` and `no false clone
//! alarm`; [`Variant::GatewayForgetsOld`] breaks `no silent lockout` (the owner holds nothing
//! the gateway knows, so the thief's lockout is silent); [`Variant::UncheckedFinish`] and
//! [`Variant::AlarmOnHello`] break `no false clone alarm`.
//!
//! ## The boundary: a thief on the path
//!
//! The resume keys are derived from the keyring, the ephemeral DH and the gateway's *public*
//! pin (§7.7): nothing in a resume needs the gateway's identity key. A thief that holds the
//! keyring and sits on the path (no TLS pinning) therefore answers the owner's hellos as the
//! gateway, and may ask it to rotate. Two such answers (one while an honest rotation is
//! unresolved) and the owner has discarded the gateway's current keyring for keyrings the
//! gateway never saw: locked out, with no retired keyring to raise a clone event
//! ([`RotationModel::with_thief_on_path`] finds it). The properties above are claimed for a
//! thief that is not on the path, or for resumes over the pinned TLS of §13.1.

use std::collections::BTreeSet;
use std::fmt;

use stateright::{Checker, Model, Property};

/// Which protocol the rotation model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Boarding: rotation with the three rules of the module documentation
    /// (re-check at completion, fence on a fallback selection, check before every finished).
    Boarding,
    /// The gateway establishes a resume without rotation without re-reading the record: a
    /// resume that selected `K` completes after a concurrent rotation away from `K`.
    StaleAccept,
    /// No fence: a fallback selection writes nothing, and a rotation commits if the record's
    /// current keyring is still the one it used (a compare and swap on the current keyring alone).
    NoFence,
    /// The agent sends a ResumeFinished without rotation without checking that its stored
    /// state is still the one the resume started from (compare and swap only when persisting).
    UncheckedFinish,
    /// The agent sends ResumeFinished first and persists the rotated keyring afterwards: a
    /// crash in between loses the keyring the gateway then commits.
    AgentPersistsAfterFinished,
    /// The gateway keeps no retired keyrings: a thief's resume with the old keyring meets
    /// the decoy instead of the clone path, and an owner locked out by the thief holds
    /// nothing the gateway recognises.
    GatewayForgetsOld,
    /// The gateway records the clone event when it selects a retired keyring, at the hello,
    /// instead of after a ResumeFinished proved possession: a replayed old hello is an alarm.
    AlarmOnHello,
}

/// Who runs a resume: the owner of the client id, or the thief with its copy.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// The honest agent (`A`).
    Owner,
    /// The thief (`T`), once it has copied the owner's stored keyrings.
    Thief,
}

impl fmt::Debug for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Party::Owner => "A",
            Party::Thief => "T",
        })
    }
}

/// A client nonce, and the ephemeral key drawn with it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fresh {
    /// Resume number `n` of a party.
    Resume(Party, u8),
    /// The network attacker's own.
    Attacker,
}

impl Fresh {
    /// The party that ran this resume, if an agent did.
    pub fn party(self) -> Option<Party> {
        match self {
            Fresh::Resume(p, _) => Some(p),
            Fresh::Attacker => None,
        }
    }
}

impl fmt::Debug for Fresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fresh::Resume(p, n) => write!(f, "{p:?}#{n}"),
            Fresh::Attacker => f.write_str("M#"),
        }
    }
}

/// Who answered a hello: a gateway session, or the thief posing as the gateway.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Server {
    /// Gateway session `n` (its nonce and ephemeral).
    Gateway(u8),
    /// The thief's `n`-th answer as the gateway ([`RotationModel::thief_on_path`]).
    Thief(u8),
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Gateway(n) => write!(f, "G#{n}"),
            Server::Thief(n) => write!(f, "T-as-G#{n}"),
        }
    }
}

/// A keyring (and its public id: the model does not tell them apart, knowing an id is not
/// knowing the keyring).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyring {
    /// The keyring of the join, `K0`.
    Joined,
    /// `Rot(used, dh, transcript)` of the resume with client nonce `nc` answered by `ns`
    /// (which determines the keyring it used and the transcript).
    Rotated {
        /// Client nonce of the rotating resume.
        nc: Fresh,
        /// Who answered the rotating resume.
        ns: Server,
    },
    /// The decoy gateway session `ns` drew: nobody holds it.
    Decoy(u8),
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keyring::Joined => f.write_str("K0"),
            Keyring::Rotated { nc, ns } => write!(f, "K({nc:?},{ns:?})"),
            Keyring::Decoy(ns) => write!(f, "decoy(G#{ns})"),
        }
    }
}

/// One or two keyrings, newest first: what an agent stores, and what it offers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Keys {
    /// The newest (the primary).
    pub first: Keyring,
    /// The one it rotated from, while the rotation's outcome is unknown (the fallback).
    pub second: Option<Keyring>,
}

impl Keys {
    /// One keyring.
    pub fn one(k: Keyring) -> Self {
        Self { first: k, second: None }
    }

    /// Whether `k` is one of them.
    pub fn contains(&self, k: Keyring) -> bool {
        self.first == k || self.second == Some(k)
    }

    /// Them, newest first.
    pub fn iter(&self) -> impl Iterator<Item = Keyring> + use<> {
        std::iter::once(self.first).chain(self.second)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.second {
            Some(s) => write!(f, "[{:?}, {s:?}]", self.first),
            None => write!(f, "[{:?}]", self.first),
        }
    }
}

/// What the resume MACs cover: the hello as the gateway received it, the gateway's nonce
/// and ephemeral, and the rotate flag.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Transcript {
    /// Client nonce (and ephemeral).
    pub nc: Fresh,
    /// The keyring ids offered in the hello.
    pub offered: Keys,
    /// Who answered: the gateway session (its nonce and ephemeral).
    pub ns: Server,
    /// Whether the gateway asked for a rotation.
    pub rotate: bool,
}

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}, {:?}, {:?}{}", self.nc, self.offered, self.ns, if self.rotate { ", rotate" } else { "" })
    }
}

/// A message on the wire, as a symbolic term.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Resume message 1 (the client id is the one client's, so it is left out).
    Hello {
        /// Client nonce (and ephemeral).
        nc: Fresh,
        /// The keyring ids offered, newest first.
        offered: Keys,
    },
    /// Resume message 2: the MAC under the server key derived from `mac`.
    Challenge {
        /// What the MAC covers.
        t: Transcript,
        /// The keyring the gateway selected (a decoy if none).
        mac: Keyring,
    },
    /// Resume message 3: the MAC under the client key derived from `mac`.
    Finished {
        /// What the MAC covers.
        t: Transcript,
        /// The keyring the agent used.
        mac: Keyring,
    },
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Hello { nc, offered } => write!(f, "ResumeHello({nc:?}, {offered:?})"),
            Msg::Challenge { t, mac } => write!(f, "ResumeChallenge({t:?}, Mac({mac:?}))"),
            Msg::Finished { t, mac } => write!(f, "ResumeFinished({t:?}, Mac({mac:?}))"),
        }
    }
}

/// One resume of an agent (owner or thief).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Run {
    /// Sent its hello, offering the keyrings it had stored: waiting for the challenge.
    Hello {
        /// The stored state the resume started from (and offered).
        from: Keys,
    },
    /// ([`Variant::AgentPersistsAfterFinished`] only) sent its finished, the rotated
    /// keyring not yet persisted.
    Unpersisted {
        /// The stored state the resume started from.
        from: Keys,
        /// The state it is to persist.
        to: Keys,
    },
    /// Sent a finished without rotation after offering two keyrings: it may settle its
    /// stored state to the one the gateway used (compare and swap).
    Settle {
        /// The stored state the resume started from.
        from: Keys,
        /// The settled state.
        to: Keys,
    },
    /// Nothing left to do: finished, aborted, or lost in a crash.
    Over,
}

/// An agent: its durable state and its resumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    /// Its stored keyrings (durable: survives a crash).
    pub stored: Keys,
    /// Its resumes, by nonce number.
    pub runs: Vec<Run>,
}

impl Holder {
    /// Resumes still in the protocol (waiting for the challenge, or for the persist).
    fn in_flight(&self) -> usize {
        self.runs.iter().filter(|r| matches!(r, Run::Hello { .. } | Run::Unpersisted { .. })).count()
    }
}

/// What the gateway selected for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selection {
    /// Its current keyring.
    Current(Keyring),
    /// One of its retired keyrings (the clone path).
    Retired(Keyring),
    /// None offered is known: a decoy.
    Decoy,
}

/// One gateway session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Session {
    /// Sent its challenge, waiting for the finished.
    Challenged {
        /// Its transcript.
        t: Transcript,
        /// What it selected.
        sel: Selection,
        /// The record's revision when it looked it up (after its own fence, if any).
        revision: u8,
    },
    /// Established (the resume completed).
    Established {
        /// Client nonce.
        nc: Fresh,
        /// The keyring it completed under.
        used: Keyring,
        /// The record's current keyring when it completed (before its own rotation, if it
        /// rotated): a ghost, for `one acceptable keyring`.
        current: Keyring,
    },
    /// Refused, or lost in a crash.
    Closed,
}

/// The gateway's record for the client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The current keyring.
    pub current: Keyring,
    /// Retired keyrings, oldest first (bounded).
    pub retired: Vec<Keyring>,
    /// Bumped by every write (etcd's `mod_revision`).
    pub revision: u8,
    /// The clone events, each named (a ghost) by the nonce of the resume that raised it.
    pub clones: BTreeSet<Fresh>,
}

/// The whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// Every message ever sent: the network attacker's knowledge.
    pub seen: BTreeSet<Msg>,
    /// The owner.
    pub owner: Holder,
    /// The thief, once it has copied the owner's stored keyrings.
    pub thief: Option<Holder>,
    /// The gateway's sessions, by gateway nonce number.
    pub sessions: Vec<Session>,
    /// The gateway's store.
    pub record: Record,
    /// Every rotation the gateway committed, in order, with the nonce of the resume that
    /// committed it (a ghost).
    pub commits: Vec<(Fresh, Keyring)>,
    /// The keyrings the thief knows (kept only when it is on the path: it may answer the
    /// owner's hellos as the gateway with any of them).
    pub thief_knows: BTreeSet<Keyring>,
    /// How many of the owner's hellos the thief answered as the gateway.
    pub impersonations: u8,
}

impl State {
    fn holder(&self, p: Party) -> Option<&Holder> {
        match p {
            Party::Owner => Some(&self.owner),
            Party::Thief => self.thief.as_ref(),
        }
    }

    fn holder_mut(&mut self, p: Party) -> Option<&mut Holder> {
        match p {
            Party::Owner => Some(&mut self.owner),
            Party::Thief => self.thief.as_mut(),
        }
    }

    /// Whether a resume of `party` committed a rotation.
    pub fn committed_by(&self, party: Party) -> bool {
        self.commits.iter().any(|(nc, _)| nc.party() == Some(party))
    }

    /// Whether a resume of `party` raised a clone event.
    pub fn clone_raised_by(&self, party: Party) -> bool {
        self.record.clones.iter().any(|nc| nc.party() == Some(party))
    }
}

/// What happens next.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// A party starts a resume: sends its hello, offering its stored keyrings.
    Start(Party),
    /// The thief copies the owner's stored keyrings.
    Copy,
    /// A party crashes: its in-flight resumes are lost, its stored keyrings survive.
    Crash(Party),
    /// The gateway crashes: its in-flight sessions are lost, its store survives.
    CrashGateway,
    /// A party settles its stored state after resume `n` (compare and swap).
    Settle(Party, u8),
    /// ([`Variant::AgentPersistsAfterFinished`]) a party persists resume `n`'s rotation.
    Persist(Party, u8),
    /// The network delivers a message seen before.
    Deliver(Msg, To),
    /// The network attacker sends a hello of its own.
    Forge(Msg, To),
    /// ([`RotationModel::thief_on_path`]) the thief answers a hello of the owner as the
    /// gateway, with a challenge under a keyring it knows.
    Impersonate(Msg),
}

/// A recipient.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum To {
    /// A new gateway session, whose policy asks for a rotation or not.
    NewSession {
        /// The gateway's rotate flag (only when it selects its current keyring).
        rotate: bool,
    },
    /// Gateway session `n`.
    Session(u8),
    /// A party (the resume the message's nonce names).
    Agent(Party),
}

impl fmt::Debug for To {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            To::NewSession { rotate: true } => f.write_str("G(new session, wants a rotation)"),
            To::NewSession { rotate: false } => f.write_str("G(new session)"),
            To::Session(n) => write!(f, "G#{n}"),
            To::Agent(p) => write!(f, "{p:?}"),
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Start(p) => write!(f, "{p:?} starts a resume"),
            Action::Copy => f.write_str("T copies A's stored keyrings"),
            Action::Crash(p) => write!(f, "{p:?} crashes"),
            Action::CrashGateway => f.write_str("G crashes"),
            Action::Settle(p, n) => write!(f, "{p:?} settles after its resume #{n}"),
            Action::Persist(p, n) => write!(f, "{p:?} persists the rotation of its resume #{n}"),
            Action::Deliver(m, to) => write!(f, "deliver {m:?} to {to:?}"),
            Action::Forge(m, to) => write!(f, "attacker sends {m:?} to {to:?}"),
            Action::Impersonate(m) => match m {
                Msg::Challenge { t, .. } => write!(f, "T, posing as G, answers {:?}'s hello", t.nc),
                _ => write!(f, "T, posing as G, sends {m:?}"),
            },
        }
    }
}

/// The rotation model and its bounds.
#[derive(Debug, Clone)]
pub struct RotationModel {
    /// Which protocol.
    pub variant: Variant,
    /// Resumes the owner may start.
    pub owner_resumes: u8,
    /// Resumes the thief may start once it has copied (0: no thief).
    pub thief_resumes: u8,
    /// Gateway sessions in all.
    pub max_sessions: u8,
    /// Resumes of one party in flight at once (1: an agent that resumes one at a time).
    pub in_flight: u8,
    /// Retired keyrings the gateway keeps.
    pub retired_kept: u8,
    /// How many of the owner's hellos the thief may answer as the gateway (0: none, a thief off the path). The resume keys are derived from the keyring, the ephemeral DH and the
    /// gateway's public pin alone (§7.7), so a thief holding the keyring and sitting on the
    /// path (no TLS pinning) can; the gateway's identity key proves nothing in a resume.
    pub thief_on_path: u8,
}

impl RotationModel {
    /// A bound: the owner's and the thief's resumes, gateway sessions, resumes in flight per
    /// party; the gateway keeps two retired keyrings.
    pub fn new(variant: Variant, owner_resumes: u8, thief_resumes: u8, max_sessions: u8, in_flight: u8) -> Self {
        Self { variant, owner_resumes, thief_resumes, max_sessions, in_flight, retired_kept: 2, thief_on_path: 0 }
    }

    /// The same bound with a thief on the path that answers up to `answers` of the owner's
    /// hellos as the gateway.
    pub fn with_thief_on_path(self, answers: u8) -> Self {
        Self { thief_on_path: answers, ..self }
    }

    /// The same bound with `kept` retired keyrings kept.
    pub fn with_retired_kept(self, kept: u8) -> Self {
        Self { retired_kept: kept, ..self }
    }

    /// The same bound for another variant.
    pub fn with_variant(self, variant: Variant) -> Self {
        Self { variant, ..self }
    }

    /// The bound, in words.
    pub fn describe(&self) -> String {
        let on_path = match self.thief_on_path {
            0 => String::new(),
            n => format!(", thief on the path answers {n} hello(s)"),
        };
        format!(
            "{:?}, owner x {} resume(s), thief x {}, {} gateway sessions, {} in flight, {} retired kept{on_path}",
            self.variant, self.owner_resumes, self.thief_resumes, self.max_sessions, self.in_flight, self.retired_kept
        )
    }

    fn resumes(&self, p: Party) -> u8 {
        match p {
            Party::Owner => self.owner_resumes,
            Party::Thief => self.thief_resumes,
        }
    }

    /// The gateway's selection for a hello offering `offered`.
    fn select(record: &Record, offered: &Keys) -> Selection {
        if offered.contains(record.current) {
            Selection::Current(record.current)
        } else if let Some(k) = offered.iter().find(|k| record.retired.contains(k)) {
            Selection::Retired(k)
        } else {
            Selection::Decoy
        }
    }

    /// The gateway answers a hello on a new session.
    fn gateway_hello(&self, state: &mut State, nc: Fresh, offered: Keys, rotate: bool) -> Option<()> {
        if state.sessions.len() >= usize::from(self.max_sessions) {
            return None;
        }
        let n = u8::try_from(state.sessions.len()).ok()?;
        let ns = Server::Gateway(n);
        let sel = Self::select(&state.record, &offered);
        match sel {
            Selection::Current(k) => {
                // The fence: the agent offered a newer keyring first, whose rotation may still
                // commit; writing the record makes that commit fail.
                if k != offered.first && self.variant != Variant::NoFence {
                    state.record.revision = state.record.revision.checked_add(1)?;
                }
            }
            Selection::Retired(_) | Selection::Decoy if rotate => return None,
            Selection::Retired(_) if self.variant == Variant::AlarmOnHello => {
                state.record.clones.insert(nc);
            }
            Selection::Retired(_) | Selection::Decoy => {}
        }
        let t = Transcript { nc, offered, ns, rotate };
        let mac = match sel {
            Selection::Current(k) | Selection::Retired(k) => k,
            Selection::Decoy => Keyring::Decoy(n),
        };
        state.sessions.push(Session::Challenged { t, sel, revision: state.record.revision });
        state.seen.insert(Msg::Challenge { t, mac });
        Some(())
    }

    /// An agent's handling of a challenge: verify, rotate and persist if asked, answer.
    fn agent_challenge(&self, state: &mut State, party: Party, t: Transcript, mac: Keyring) -> Option<()> {
        let Fresh::Resume(p, n) = t.nc else { return None };
        if p != party {
            return None;
        }
        let holder = state.holder_mut(party)?;
        let run = holder.runs.get_mut(usize::from(n))?;
        // The MAC covers the hello as the gateway saw it: only the agent's own verifies, and
        // only under one of the keyrings it offered.
        let Run::Hello { from } = *run else { return None };
        if t.offered != from || !from.contains(mac) {
            return None;
        }
        let used = mac;
        let unchanged = holder.stored == from;
        let finished = Msg::Finished { t, mac: used };
        if t.rotate {
            let to = Keys { first: Keyring::Rotated { nc: t.nc, ns: t.ns }, second: Some(used) };
            if self.variant == Variant::AgentPersistsAfterFinished {
                *run = Run::Unpersisted { from, to };
                state.seen.insert(finished);
                return Some(());
            }
            // Compare and swap, then answer; otherwise abort. (Persist and send are one step:
            // a crash between them is the same as the network dropping the finished.)
            *run = Run::Over;
            if unchanged {
                holder.stored = to;
                state.seen.insert(finished);
                if party == Party::Thief && self.thief_on_path > 0 {
                    state.thief_knows.insert(to.first);
                }
            }
            return Some(());
        }
        if !unchanged && self.variant != Variant::UncheckedFinish {
            *run = Run::Over;
            return Some(());
        }
        *run = if from.second.is_some() { Run::Settle { from, to: Keys::one(used) } } else { Run::Over };
        state.seen.insert(finished);
        Some(())
    }

    /// The gateway's handling of a finished on session `n`.
    fn gateway_finished(&self, state: &mut State, n: usize, t: Transcript, mac: Keyring) -> Option<()> {
        let Session::Challenged { t: mine, sel, revision } = *state.sessions.get(n)? else { return None };
        if t != mine {
            return None;
        }
        let record = &mut state.record;
        let current = record.current;
        let next = match sel {
            Selection::Current(k) if k == mac => {
                if t.rotate {
                    let allowed = match self.variant {
                        Variant::NoFence => record.current == k,
                        _ => record.revision == revision,
                    };
                    if allowed {
                        // One atomic store step.
                        let new = Keyring::Rotated { nc: t.nc, ns: t.ns };
                        let kept = match self.variant {
                            Variant::GatewayForgetsOld => 0,
                            _ => usize::from(self.retired_kept),
                        };
                        record.retired.push(k);
                        let excess = record.retired.len().saturating_sub(kept);
                        record.retired.drain(..excess);
                        record.current = new;
                        record.revision = record.revision.checked_add(1)?;
                        state.commits.push((t.nc, new));
                        Session::Established { nc: t.nc, used: k, current }
                    } else {
                        Session::Closed
                    }
                } else if self.variant == Variant::StaleAccept || record.current == k {
                    Session::Established { nc: t.nc, used: k, current }
                } else {
                    Session::Closed
                }
            }
            Selection::Retired(k) if k == mac => {
                if self.variant != Variant::AlarmOnHello {
                    record.clones.insert(t.nc);
                    record.revision = record.revision.checked_add(1)?;
                }
                Session::Closed
            }
            _ => return None,
        };
        state.sessions[n] = next;
        Some(())
    }

    /// Runs the checker to completion (breadth first) and returns it.
    pub fn check(self, threads: usize) -> impl Checker<Self> {
        self.checker().threads(threads).spawn_bfs().join()
    }

    /// Searches for a shortest counterexample to the `always` property `property`, as
    /// [`crate::BoardingModel::counterexample`] does: breadth first on one thread, the depth
    /// bound raised one step at a time up to `max_depth`.
    pub fn counterexample(self, property: &'static str, max_depth: usize) -> Option<Vec<Step>> {
        let (condition, path) = crate::shortest_violation(&self, property, max_depth)?;
        let mut steps = Vec::new();
        let mut before: Option<State> = None;
        for (state, action) in path {
            if let (Some(last), Some(prev)) = (steps.last_mut(), &before) {
                let step: &mut Step = last;
                step.sent = state.seen.difference(&prev.seen).cloned().collect();
                step.after = summary(&state);
            }
            if !condition(&self, &state) {
                return Some(steps);
            }
            steps.push(Step { action: action?, sent: Vec::new(), after: String::new() });
            before = Some(state);
        }
        None
    }
}

impl Model for RotationModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            seen: BTreeSet::new(),
            owner: Holder { stored: Keys::one(Keyring::Joined), runs: Vec::new() },
            thief: None,
            sessions: Vec::new(),
            record: Record { current: Keyring::Joined, retired: Vec::new(), revision: 0, clones: BTreeSet::new() },
            commits: Vec::new(),
            thief_knows: BTreeSet::new(),
            impersonations: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if state.thief.is_none() && self.thief_resumes > 0 {
            actions.push(Action::Copy);
        }
        for party in [Party::Owner, Party::Thief] {
            let Some(holder) = state.holder(party) else { continue };
            if holder.runs.len() < usize::from(self.resumes(party)) && holder.in_flight() < usize::from(self.in_flight)
            {
                actions.push(Action::Start(party));
            }
            if holder.runs.iter().any(|r| *r != Run::Over) {
                actions.push(Action::Crash(party));
            }
            for (n, run) in holder.runs.iter().enumerate() {
                let Ok(n) = u8::try_from(n) else { continue };
                match run {
                    Run::Settle { .. } => actions.push(Action::Settle(party, n)),
                    Run::Unpersisted { .. } => actions.push(Action::Persist(party, n)),
                    Run::Hello { .. } | Run::Over => {}
                }
            }
        }
        if state.sessions.iter().any(|s| matches!(s, Session::Challenged { .. })) {
            actions.push(Action::CrashGateway);
        }
        let room = state.sessions.len() < usize::from(self.max_sessions);
        let mut ids = BTreeSet::new();
        for m in &state.seen {
            match m {
                Msg::Hello { nc, offered } => {
                    ids.extend(offered.iter());
                    if room {
                        // The policy may ask for a rotation only of the current keyring; the
                        // attacker's own hellos cannot complete, so their flag is irrelevant.
                        let current = matches!(Self::select(&state.record, offered), Selection::Current(_));
                        actions.push(Action::Deliver(m.clone(), To::NewSession { rotate: false }));
                        if current && *nc != Fresh::Attacker {
                            actions.push(Action::Deliver(m.clone(), To::NewSession { rotate: true }));
                        }
                    }
                }
                Msg::Challenge { t, .. } => {
                    let Fresh::Resume(p, n) = t.nc else { continue };
                    let waiting = state
                        .holder(p)
                        .and_then(|h| h.runs.get(usize::from(n)))
                        .is_some_and(|r| matches!(r, Run::Hello { .. }));
                    if waiting {
                        actions.push(Action::Deliver(m.clone(), To::Agent(p)));
                    }
                }
                Msg::Finished { .. } => {
                    for (n, s) in state.sessions.iter().enumerate() {
                        if let (Session::Challenged { .. }, Ok(n)) = (s, u8::try_from(n)) {
                            actions.push(Action::Deliver(m.clone(), To::Session(n)));
                        }
                    }
                }
            }
        }
        if state.impersonations < self.thief_on_path {
            for m in &state.seen {
                let Msg::Hello { nc: nc @ Fresh::Resume(Party::Owner, _), offered } = m else { continue };
                for mac in offered.iter().filter(|k| state.thief_knows.contains(k)) {
                    for rotate in [false, true] {
                        let ns = Server::Thief(state.impersonations);
                        let t = Transcript { nc: *nc, offered: *offered, ns, rotate };
                        actions.push(Action::Impersonate(Msg::Challenge { t, mac }));
                    }
                }
            }
        }
        if room {
            for &a in &ids {
                for b in std::iter::once(None).chain(ids.iter().filter(|b| **b != a).map(|b| Some(*b))) {
                    let msg = Msg::Hello { nc: Fresh::Attacker, offered: Keys { first: a, second: b } };
                    if !state.seen.contains(&msg) {
                        actions.push(Action::Forge(msg, To::NewSession { rotate: false }));
                    }
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Start(party) => {
                let holder = state.holder_mut(party)?;
                let nc = Fresh::Resume(party, u8::try_from(holder.runs.len()).ok()?);
                let from = holder.stored;
                holder.runs.push(Run::Hello { from });
                state.seen.insert(Msg::Hello { nc, offered: from });
            }
            Action::Copy => {
                if state.thief.is_some() {
                    return None;
                }
                state.thief = Some(Holder { stored: state.owner.stored, runs: Vec::new() });
                if self.thief_on_path > 0 {
                    state.thief_knows.extend(state.owner.stored.iter());
                }
            }
            Action::Crash(party) => {
                for run in &mut state.holder_mut(party)?.runs {
                    *run = Run::Over;
                }
            }
            Action::CrashGateway => {
                for s in &mut state.sessions {
                    if matches!(s, Session::Challenged { .. }) {
                        *s = Session::Closed;
                    }
                }
            }
            Action::Settle(party, n) | Action::Persist(party, n) => {
                let holder = state.holder_mut(party)?;
                let run = holder.runs.get_mut(usize::from(n))?;
                let (Run::Settle { from, to } | Run::Unpersisted { from, to }) = *run else { return None };
                *run = Run::Over;
                if holder.stored == from {
                    holder.stored = to;
                }
            }
            Action::Deliver(msg, to) | Action::Forge(msg, to) => match (to, msg) {
                (To::NewSession { rotate }, Msg::Hello { nc, offered }) => {
                    self.gateway_hello(&mut state, nc, offered, rotate)?;
                }
                (To::Agent(p), Msg::Challenge { t, mac }) => self.agent_challenge(&mut state, p, t, mac)?,
                (To::Session(n), Msg::Finished { t, mac }) => {
                    self.gateway_finished(&mut state, usize::from(n), t, mac)?;
                }
                _ => return None,
            },
            Action::Impersonate(msg) => {
                let Msg::Challenge { t, mac } = msg else { return None };
                let hello = Msg::Hello { nc: t.nc, offered: t.offered };
                if t.ns != Server::Thief(state.impersonations)
                    || !state.thief_knows.contains(&mac)
                    || !t.offered.contains(mac)
                    || !state.seen.contains(&hello)
                {
                    return None;
                }
                state.impersonations = state.impersonations.checked_add(1)?;
                if t.rotate {
                    // The thief chose the server ephemeral: it computes the rotated keyring.
                    state.thief_knows.insert(Keyring::Rotated { nc: t.nc, ns: t.ns });
                }
                state.seen.insert(msg);
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("one acceptable keyring", |_, s: &State| {
                s.sessions.iter().all(|x| match x {
                    Session::Established { used, current, .. } => used == current,
                    _ => true,
                })
            }),
            Property::always("no silent lockout", |_, s: &State| {
                let held = s.owner.stored;
                held.contains(s.record.current)
                    || (s.committed_by(Party::Thief) && held.iter().any(|k| s.record.retired.contains(&k)))
            }),
            Property::always("no false clone alarm", |_, s: &State| s.record.clones.is_empty() || s.thief.is_some()),
            Property::sometimes("honest rotation committed", |_, s: &State| s.committed_by(Party::Owner)),
            Property::sometimes("owner resumes with its rotated keyring", |_, s: &State| {
                s.sessions.iter().any(|x| {
                    matches!(
                        x,
                        Session::Established { nc: Fresh::Resume(Party::Owner, _), used: Keyring::Rotated { .. }, .. }
                    )
                })
            }),
            Property::sometimes("clone detected at the thief after the owner rotated", |_, s: &State| {
                s.commits.first().is_some_and(|(nc, _)| nc.party() == Some(Party::Owner))
                    && s.clone_raised_by(Party::Thief)
            }),
            Property::sometimes("clone detected at the owner after the thief rotated", |_, s: &State| {
                s.commits.first().is_some_and(|(nc, _)| nc.party() == Some(Party::Thief))
                    && s.clone_raised_by(Party::Owner)
            }),
        ]
    }
}

/// The always-properties of the rotation model.
pub const SAFETY: [&str; 3] = ["one acceptable keyring", "no silent lockout", "no false clone alarm"];

/// The bounds CI runs (Boarding). With `BOARDING_DEEP` set (to anything but `0`), deeper
/// ones.
pub fn bounds() -> Vec<RotationModel> {
    let deep = std::env::var("BOARDING_DEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    let v = Variant::Boarding;
    if deep {
        vec![RotationModel::new(v, 3, 1, 4, 1), RotationModel::new(v, 2, 2, 4, 2)]
    } else {
        vec![
            RotationModel::new(v, 3, 0, 4, 2),
            RotationModel::new(v, 2, 1, 4, 1),
            RotationModel::new(v, 2, 2, 3, 1),
            RotationModel::new(v, 2, 1, 3, 2),
        ]
    }
}

/// One step of a counterexample: what happened, what it put on the wire, and the stored
/// state after it.
#[derive(Debug, Clone)]
pub struct Step {
    /// The action.
    pub action: Action,
    /// The messages it sent.
    pub sent: Vec<Msg>,
    /// The agents' stored keyrings and the gateway's record after it.
    pub after: String,
}

/// The durable state, in one line.
pub fn summary(s: &State) -> String {
    let thief = s.thief.as_ref().map(|t| format!(", T stores {:?}", t.stored)).unwrap_or_default();
    let clones =
        if s.record.clones.is_empty() { String::new() } else { format!(", clone events {:?}", s.record.clones) };
    format!(
        "A stores {:?}{thief}; G current {:?}, retired {:?}, rev {}{clones}",
        s.owner.stored, s.record.current, s.record.retired, s.record.revision
    )
}

/// Formats steps as a numbered trace, with the messages each one sent and the durable state
/// after it.
pub fn trace(steps: &[Step]) -> String {
    let mut out = String::new();
    for (i, step) in steps.iter().enumerate() {
        out.push_str(&format!("{:>3}. {:?}\n", i + 1, step.action));
        for m in &step.sent {
            out.push_str(&format!("       sends {m:?}\n"));
        }
        if !step.after.is_empty() {
            out.push_str(&format!("       ({})\n", step.after));
        }
    }
    out
}
