//! The channel target: a receiving channel from a real session fed genuine frames,
//! tampered frames and arbitrary bytes in any order. Only the next genuine frame, byte
//! for byte, may ever be accepted, a rejection is final, and the genuine next frame is
//! always accepted while the channel is healthy.

use std::sync::OnceLock;

use boarding::channel::{Channel, ChannelError, Received, Side};
use boarding::keys::{SessionKeys, SymmetricKey};
use boarding::suite::MacSuite;

use super::fixtures::{Flow, Script};
use super::input::Input;

/// A sending and a receiving channel of one session.
#[derive(Debug, Clone)]
pub struct ChannelPair {
    /// The agent's end.
    pub client: Channel,
    /// The gateway's end.
    pub server: Channel,
}

fn real_session() -> ChannelPair {
    let mut script = Script::new(Flow::Join);
    script.run_honest();
    let (client, server) = script.pair.into_sessions().unwrap_or_else(|e| panic!("honest join failed: {e}"));
    ChannelPair { client: client.channel, server: server.channel }
}

fn hmac_session() -> ChannelPair {
    let keys = SessionKeys { c2s: SymmetricKey::from_bytes([0x11; 32]), s2c: SymmetricKey::from_bytes([0x22; 32]) };
    ChannelPair {
        client: Channel::new(Side::Client, MacSuite::HmacSha256, &keys),
        server: Channel::new(Side::Server, MacSuite::HmacSha256, &keys),
    }
}

/// The two sessions the target uses: a real join (BLAKE3) and an HMAC-SHA256 pair.
pub fn sessions() -> &'static [ChannelPair; 2] {
    static CELL: OnceLock<[ChannelPair; 2]> = OnceLock::new();
    CELL.get_or_init(|| [real_session(), hmac_session()])
}

/// One sealed frame and what it carries (`None`: the close).
pub type Sealed = (Vec<u8>, Option<Vec<u8>>);

/// A receiving channel and what the oracle knows about it.
#[derive(Debug)]
pub struct Receiver {
    /// The channel under test.
    pub channel: Channel,
    /// How many genuine frames it accepted.
    pub opened: usize,
    /// The error that closed it.
    pub failed: Option<ChannelError>,
}

impl Receiver {
    /// A fresh receiver around `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { channel, opened: 0, failed: None }
    }

    /// Opens `bytes` and checks the outcome against the frames the peer `sealed`.
    pub fn deliver(&mut self, bytes: &[u8], sealed: &[Sealed]) {
        let result = self.channel.open(bytes);
        if let Some(e) = self.failed {
            assert_eq!(result, Err(e), "a failed channel did not stay failed");
            return;
        }
        let genuine_next = sealed.get(self.opened);
        match result {
            Ok(received) => {
                let (frame, payload) =
                    genuine_next.unwrap_or_else(|| panic!("a frame nobody sealed was accepted: {bytes:02x?}"));
                assert_eq!(bytes, &frame[..], "a tampered or out-of-order frame was accepted");
                match (received, payload) {
                    (Received::Data(data), Some(payload)) => assert_eq!(data, &payload[..]),
                    (Received::Close, None) => {}
                    (got, want) => panic!("opened {got:?}, sealed {want:?}"),
                }
                self.opened += 1;
            }
            Err(e) => {
                if let Some((frame, _)) = genuine_next {
                    assert_ne!(bytes, &frame[..], "the genuine next frame was refused: {e}");
                }
                self.failed = Some(e);
                assert_eq!(self.channel.failure(), Some(e));
            }
        }
    }
}

/// What `frame` carries if it is byte for byte the frame `sender` seals next (`None`
/// inside: the close), without changing `sender`.
fn sealed_next(sender: &Channel, frame: &[u8]) -> Option<Option<Vec<u8>>> {
    let mut probe = sender.clone();
    let mut out = vec![0u8; frame.len().max(boarding::channel::FRAME_OVERHEAD)];
    let (n, carried) = match frame.first()? {
        0x17 => {
            let payload = frame.get(5..frame.len().checked_sub(32)?)?;
            (probe.seal(payload, &mut out).ok()?, Some(payload.to_vec()))
        }
        0x18 => (probe.seal_close(&mut out).ok()?, None),
        _ => return None,
    };
    (out.get(..n)? == frame).then_some(carried)
}

/// The channel target. Input: a byte choosing the session and direction, then a
/// script of seal and delivery operations.
pub fn open_frames(data: &[u8]) {
    let mut input = Input::new(data);
    let setup = input.byte();
    let pair = &sessions()[usize::from(setup & 1)];
    let (mut sender, receiver) = if setup & 2 == 0 {
        (pair.client.clone(), pair.server.clone())
    } else {
        (pair.server.clone(), pair.client.clone())
    };
    let mut receiver = Receiver::new(receiver);
    let mut sealed: Vec<Sealed> = Vec::new();
    // The sender as it was before each frame it sealed: `before[i]` seals frame `i`.
    let mut before: Vec<Channel> = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !input.is_empty() {
        if before.len() < sealed.len() + 1 {
            before.push(sender.clone());
        }
        match input.byte() % 7 {
            0 => {
                let len = usize::from(input.byte());
                let payload = input.take(len).to_vec();
                let result = sender.seal(&payload, &mut buf);
                if sender.locally_closed() {
                    assert_eq!(result, Err(ChannelError::LocallyClosed));
                } else {
                    let n = result.unwrap_or_else(|e| panic!("sealing failed: {e}"));
                    assert_eq!(n, payload.len() + boarding::channel::FRAME_OVERHEAD);
                    sealed.push((buf[..n].to_vec(), Some(payload)));
                }
            }
            1 => {
                if let Ok(n) = sender.seal_close(&mut buf) {
                    sealed.push((buf[..n].to_vec(), None));
                }
            }
            2 if !sealed.is_empty() => {
                let frame = sealed[input.below(sealed.len())].0.clone();
                receiver.deliver(&frame, &sealed);
            }
            3 if !sealed.is_empty() => {
                let mut frame = sealed[input.below(sealed.len())].0.clone();
                let bit = usize::from(input.u16()) % (frame.len() * 8);
                frame[bit / 8] ^= 1 << (bit % 8);
                receiver.deliver(&frame, &sealed);
            }
            4 => {
                let len = usize::from(input.u16()) % 1024;
                let frame = input.take(len).to_vec();
                // Likewise, they may be another execution's genuine frame for a sequence
                // number this sender has sealed another frame at: authentic, so no forgery
                // this oracle can judge (a real sender never seals two frames at one number).
                let at = receiver.opened;
                if at < sealed.len()
                    && frame != sealed[at].0
                    && before.get(at).is_some_and(|sender_then| sealed_next(sender_then, &frame).is_some())
                {
                    continue;
                }
                // The sessions are the same in every execution, so arbitrary bytes may be
                // the very frame the sender seals next, copied from another execution:
                // then the sender seals it here too, and it is genuine.
                match sealed_next(&sender, &frame) {
                    Some(Some(payload)) => {
                        let n = sender.seal(&payload, &mut buf).unwrap_or_else(|e| panic!("sealing failed: {e}"));
                        sealed.push((buf[..n].to_vec(), Some(payload)));
                    }
                    Some(None) => {
                        let n = sender.seal_close(&mut buf).unwrap_or_else(|e| panic!("sealing failed: {e}"));
                        sealed.push((buf[..n].to_vec(), None));
                    }
                    None => {}
                }
                receiver.deliver(&frame, &sealed);
            }
            5 if !sealed.is_empty() => {
                let mut frame = sealed[input.below(sealed.len())].0.clone();
                let cut = input.byte();
                if cut & 0x80 == 0 {
                    frame.truncate(frame.len().saturating_sub(usize::from(cut) + 1));
                } else {
                    frame.push(cut);
                }
                receiver.deliver(&frame, &sealed);
            }
            6 if !sealed.is_empty() => {
                // Reflection: a side's own frame fed back to it is never accepted.
                let frame = &sealed[input.below(sealed.len())].0;
                assert!(sender.clone().open(frame).is_err(), "a reflected frame was accepted");
            }
            _ => {}
        }
    }
}
