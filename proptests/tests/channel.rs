//! Channel laws, in both MAC suites.
//!
//! * open(seal(m)) == m for any interleaving of messages in both directions, ending
//!   in an authenticated `Close` each way;
//! * a stream that deviates from what the sender sealed (a frame dropped,
//!   duplicated, reordered, reflected back, spliced in from another session, or with
//!   one bit flipped) is accepted exactly up to the first deviation, rejected there,
//!   and the channel stays closed after: every later frame, the genuine next one
//!   included, is refused with the same error, and nothing more can be sealed;
//! * a stream cut short is accepted but never reports the peer's `Close` (so the
//!   truncation is visible);
//! * the same laws hold for channels built from real handshakes in the memory driver.

use boarding::channel::{Channel, ChannelError, FRAME_OVERHEAD, Received, Side};
use boarding::keys::{SessionKeys, SymmetricKey};
use boarding::suite::MacSuite;
use boarding_memory::World;
use boarding_proptests::config;
use proptest::collection::vec;
use proptest::prelude::*;

fn suite() -> impl Strategy<Value = MacSuite> {
    prop::sample::select(MacSuite::ALL.to_vec())
}

fn keys(c2s: [u8; 32], s2c: [u8; 32]) -> SessionKeys {
    SessionKeys { c2s: SymmetricKey::from_bytes(c2s), s2c: SymmetricKey::from_bytes(s2c) }
}

fn seal(channel: &mut Channel, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; payload.len() + FRAME_OVERHEAD];
    let n = channel.seal(payload, &mut buf).unwrap_or_else(|e| panic!("seal: {e}"));
    buf.truncate(n);
    buf
}

fn seal_close(channel: &mut Channel) -> Vec<u8> {
    let mut buf = vec![0u8; FRAME_OVERHEAD];
    let n = channel.seal_close(&mut buf).unwrap_or_else(|e| panic!("seal close: {e}"));
    buf.truncate(n);
    buf
}

/// What the network does to the stream of frames one side sealed.
#[derive(Debug, Clone)]
enum Attack {
    /// Lose frame `i` (losing the final `Close` is a truncation).
    Drop(usize),
    /// Deliver frame `i` twice.
    Duplicate(usize),
    /// Exchange frames `i` and `j`.
    Swap(usize, usize),
    /// Insert, before frame `i`, a frame the *receiver* sealed (reflection).
    Reflect(usize),
    /// Replace frame `i` by the frame sealed at the same position, with the same
    /// payload, in another session.
    Splice(usize),
    /// Flip one bit of frame `i`.
    FlipBit(usize, usize),
    /// Cut the stream after `i` frames.
    Truncate(usize),
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        any::<usize>().prop_map(Attack::Drop),
        any::<usize>().prop_map(Attack::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Attack::Swap(i, j)),
        any::<usize>().prop_map(Attack::Reflect),
        any::<usize>().prop_map(Attack::Splice),
        (any::<usize>(), any::<usize>()).prop_map(|(i, b)| Attack::FlipBit(i, b)),
        any::<usize>().prop_map(Attack::Truncate),
    ]
}

/// Applies `attack` to the honest stream. `own` are frames the receiver sealed,
/// `foreign` the same stream sealed in another session.
fn apply(attack: &Attack, honest: &[Vec<u8>], own: &[Vec<u8>], foreign: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let n = honest.len();
    let mut out = honest.to_vec();
    match *attack {
        Attack::Drop(i) => {
            out.remove(i % n);
        }
        Attack::Duplicate(i) => out.insert(i % n, honest[i % n].clone()),
        Attack::Swap(i, j) => out.swap(i % n, j % n),
        Attack::Reflect(i) => out.insert(i % (n + 1), own[i % own.len()].clone()),
        Attack::Splice(i) => out[i % n] = foreign[i % n].clone(),
        Attack::FlipBit(i, b) => {
            let frame = &mut out[i % n];
            let bit = b % (frame.len() * 8);
            frame[bit / 8] ^= 1 << (bit % 8);
        }
        Attack::Truncate(i) => out.truncate(i % n),
    }
    out
}

proptest! {
    #![proptest_config(config(1024, 16))]

    #[test]
    fn open_inverts_seal_in_both_directions(
        suite in suite(),
        c2s in any::<[u8; 32]>(),
        s2c in any::<[u8; 32]>(),
        script in vec((any::<bool>(), vec(any::<u8>(), 0..200)), 0..24),
    ) {
        let k = keys(c2s, s2c);
        let mut client = Channel::new(Side::Client, suite, &k);
        let mut server = Channel::new(Side::Server, suite, &k);
        for (to_server, payload) in &script {
            let (tx, rx) = if *to_server { (&mut client, &mut server) } else { (&mut server, &mut client) };
            let frame = seal(tx, payload);
            prop_assert_eq!(frame.len(), payload.len() + FRAME_OVERHEAD);
            prop_assert_eq!(Channel::frame_len(&frame), Ok(Some(frame.len())));
            prop_assert_eq!(rx.open(&frame), Ok(Received::Data(payload)));
        }
        // Authenticated close both ways; nothing after it.
        let close = seal_close(&mut client);
        prop_assert_eq!(server.open(&close), Ok(Received::Close));
        prop_assert!(server.peer_closed() && client.locally_closed());
        prop_assert_eq!(client.seal(b"late", &mut [0u8; 64]), Err(ChannelError::LocallyClosed));
        let back = seal_close(&mut server);
        prop_assert_eq!(client.open(&back), Ok(Received::Close));
        prop_assert_eq!(server.open(&close), Err(ChannelError::AfterClose));
    }

    #[test]
    fn any_deviation_is_rejected_and_the_channel_stays_closed(
        suite in suite(),
        c2s in any::<[u8; 32]>(),
        s2c in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        payloads in vec(vec(any::<u8>(), 0..64), 1..8),
        attack in attack(),
    ) {
        prop_assume!(c2s != s2c && other != c2s);
        let k = keys(c2s, s2c);
        let mut sender = Channel::new(Side::Client, suite, &k);
        let mut receiver = Channel::new(Side::Server, suite, &k);
        let mut foreign_sender = Channel::new(Side::Client, suite, &keys(other, s2c));
        let mut honest: Vec<Vec<u8>> = payloads.iter().map(|p| seal(&mut sender, p)).collect();
        honest.push(seal_close(&mut sender));
        let mut foreign: Vec<Vec<u8>> = payloads.iter().map(|p| seal(&mut foreign_sender, p)).collect();
        foreign.push(seal_close(&mut foreign_sender));
        // Frames the receiver sealed itself (from a copy, so its sequence is untouched).
        let mut receiver_copy = receiver.clone();
        let own: Vec<Vec<u8>> = payloads.iter().map(|p| seal(&mut receiver_copy, p)).collect();

        let delivered = apply(&attack, &honest, &own, &foreign);
        let deviation = delivered.iter().zip(&honest).position(|(d, h)| d != h)
            .or((delivered.len() > honest.len()).then_some(honest.len()));
        match deviation {
            None => {
                // A prefix of the honest stream: all accepted; if the Close is missing,
                // the receiver can tell the stream was cut.
                for (i, frame) in delivered.iter().enumerate() {
                    let expected = payloads.get(i).map_or(Received::Close, |p| Received::Data(p));
                    prop_assert_eq!(receiver.open(frame), Ok(expected));
                }
                prop_assert_eq!(receiver.peer_closed(), delivered.len() == honest.len(), "{:?}", attack);
            }
            Some(k) => {
                for (i, frame) in delivered[..k].iter().enumerate() {
                    let expected = payloads.get(i).map_or(Received::Close, |p| Received::Data(p));
                    prop_assert_eq!(receiver.open(frame), Ok(expected));
                }
                let error = receiver.open(&delivered[k]);
                prop_assert!(error.is_err(), "{:?} accepted at frame {}", attack, k);
                let error = error.err();
                prop_assert_eq!(receiver.failure(), error);
                // Sticky: the rest of the stream, and the genuine next frame, are refused
                // with the same error; sealing is refused too.
                for frame in delivered[k + 1..].iter().chain(honest.get(k)) {
                    prop_assert_eq!(receiver.open(frame).err(), error);
                }
                prop_assert_eq!(receiver.seal(b"x", &mut [0u8; 64]).err(), error);
                prop_assert!(!receiver.peer_closed() || k >= honest.len());
            }
        }
    }
}

proptest! {
    // Each case runs two real handshakes.
    #![proptest_config(config(128, 16))]

    #[test]
    fn real_sessions_agree_and_reject_spliced_and_reflected_frames(
        seed in any::<u64>(),
        suite in suite(),
        payloads in vec(vec(any::<u8>(), 0..64), 1..6),
    ) {
        let world = World::new(seed);
        let token = world.issue_token(None, 0);
        let session = |id: &str| {
            let config = world.join_config(id, &token).with_suites(&[suite]);
            let mut pair = world.pair_with(boarding::client::Client::join(config, &mut world.rng()));
            assert!(pair.drive().both_established());
            pair.into_sessions().unwrap_or_else(|e| panic!("{e}"))
        };
        let (mut c1, mut s1) = session("one");
        let (mut c2, s2) = session("two");
        prop_assert_eq!(c1.channel.suite(), suite);
        for p in &payloads {
            let up = seal(&mut c1.channel, p);
            prop_assert_eq!(s1.channel.open(&up), Ok(Received::Data(p)));
            let down = seal(&mut s1.channel, p);
            prop_assert_eq!(c1.channel.open(&down), Ok(Received::Data(p)));
            // The same frame in the other session, or reflected to its sender, fails.
            prop_assert_eq!(s2.channel.clone().open(&up), Err(ChannelError::BadTag));
            prop_assert_eq!(c2.channel.clone().open(&up), Err(ChannelError::BadTag));
            prop_assert_eq!(s1.channel.clone().open(&down), Err(ChannelError::BadTag));
        }
        let spliced = seal(&mut c2.channel, &payloads[0]);
        prop_assert_eq!(s1.channel.open(&spliced), Err(ChannelError::BadTag));
        let next = seal(&mut c1.channel, b"after");
        prop_assert_eq!(s1.channel.open(&next), Err(ChannelError::BadTag));
    }
}
