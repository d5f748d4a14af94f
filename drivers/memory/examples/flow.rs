//! The whole Boarding flow in memory, printed step by step: a gateway issues a
//! one-use token, an agent joins with it and the gateway's pin, resumes with its
//! stored keyring, and both exchange MAC-authenticated frames in each MAC suite.
//! Then a tampered frame and a reused token are shown being refused.
//!
//! Run with `cargo run -p boarding-memory --example flow`.

use boarding::channel::{Channel, FRAME_OVERHEAD, Received};
use boarding::client::{Client, ResumeConfig, SavedKeyring};
use boarding::messages::{FrameType, HandshakeMessage};
use boarding::suite::MacSuite;
use boarding_memory::{Dir, Pair, World, hex};

fn describe(frame: &[u8]) -> String {
    match HandshakeMessage::decode_frame(frame) {
        Ok(HandshakeMessage::ClientHello(m)) => {
            format!("ClientHello     versions {:?} suites {:?} token id {:?}", m.versions, m.suites, m.token_id)
        }
        Ok(HandshakeMessage::ServerChallenge(m)) => format!(
            "ServerChallenge version {} suite {} identity {}… {} EdDSA challenge(s)",
            m.version,
            m.suite,
            hex(&m.identity_key[..8]),
            m.challenges.len()
        ),
        Ok(HandshakeMessage::ClientAuth(m)) => format!(
            "ClientAuth      client id {:?} proof {}…",
            String::from_utf8_lossy(&m.client_id),
            &m.proof[..m.proof.len().min(40)]
        ),
        Ok(HandshakeMessage::ServerFinished(m)) => {
            format!("ServerFinished  ticket {:?} mac {}…", String::from_utf8_lossy(&m.ticket), hex(&m.mac[..8]))
        }
        Ok(HandshakeMessage::ClientFinished(m)) => format!("ClientFinished  mac {}…", hex(&m.mac[..8])),
        Ok(HandshakeMessage::ResumeHello(m)) => {
            format!("ResumeHello     client id {:?}", String::from_utf8_lossy(&m.client_id))
        }
        Ok(HandshakeMessage::ResumeChallenge(m)) => format!("ResumeChallenge mac {}…", hex(&m.mac[..8])),
        Ok(HandshakeMessage::ResumeFinished(m)) => {
            format!("ResumeFinished  request {} bytes mac {}…", m.request.len(), hex(&m.mac[..8]))
        }
        Ok(HandshakeMessage::ResumeTicket(m)) => {
            format!("ResumeTicket    ticket {:?} mac {}…", String::from_utf8_lossy(&m.ticket), hex(&m.mac[..8]))
        }
        Ok(HandshakeMessage::Alert(a)) => format!("Alert           code {}", a.code),
        Err(e) => format!("(undecodable: {e})"),
    }
}

fn print_log(pair: &Pair) {
    for (dir, bytes) in &pair.log {
        let arrow = match dir {
            Dir::ToServer => "agent   -> gateway",
            Dir::ToClient => "gateway -> agent  ",
        };
        println!("    {arrow} {:>4} B  {}", bytes.len(), describe(bytes));
    }
}

fn exchange(client: &mut Channel, server: &mut Channel) -> Result<(), boarding::Error> {
    let mut buf = vec![0u8; 256];
    for text in ["status: ready", "metrics: cpu=3%"] {
        let n = client.seal(text.as_bytes(), &mut buf)?;
        let Received::Data(got) = server.open(&buf[..n])? else { unreachable!("data frame") };
        println!(
            "    agent   -> gateway {n:>4} B  Data {:?} (tag {}…)",
            String::from_utf8_lossy(got),
            hex(&buf[n - 32..n - 24])
        );
    }
    let n = server.seal(b"config: interval=30s", &mut buf)?;
    let Received::Data(got) = client.open(&buf[..n])? else { unreachable!("data frame") };
    println!("    gateway -> agent   {n:>4} B  Data {:?}", String::from_utf8_lossy(got));
    let n = client.seal_close(&mut buf)?;
    assert_eq!(server.open(&buf[..n])?, Received::Close);
    println!("    agent   -> gateway {n:>4} B  Close (authenticated)");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut world = World::new(2026);
    world.ticket = b"welcome to the fleet".to_vec();
    println!("Boarding in memory (seed 2026, clock at unix {})", world.now);
    println!();
    println!("1. The gateway's identity");
    println!("    pin {}", world.config.pin());
    let token = world.issue_token(Some(3600), 1);
    println!("2. An operator creates a one-use token, valid for an hour");
    println!("    token {token}   (the agent is given this and the pin; only the id ever crosses the wire)");
    println!();

    println!("3. Join (2 round trips; the fifth message confirms the keyring)");
    let mut pair = world.join_pair("edge-node-1", &token);
    let outcome = pair.drive();
    print_log(&pair);
    if !outcome.both_established() {
        return Err(format!("join failed: {outcome:?}").into());
    }
    let peer = pair.peer.clone().ok_or("no verified peer")?;
    let saved: SavedKeyring = pair.saved.clone().ok_or("nothing persisted")?;
    println!("    gateway verified: client {} joined with token {}", peer.client_id(), peer.token_id());
    println!(
        "    keyring fingerprint {:?}, token uses now {}/1",
        saved.keyring.id(),
        world.store.token(token.id()).map_or(0, |t| t.use_count)
    );
    let (mut c, mut s) = pair.into_sessions()?;
    println!("    ticket {:?}, channel suite {}", String::from_utf8_lossy(&c.info.ticket), c.channel.suite());
    exchange(&mut c.channel, &mut s.channel)?;
    println!();

    for suite in [MacSuite::HmacSha256, MacSuite::Blake3] {
        println!("4. Resume with the stored keyring, suite {suite} (1.5 round trips, fresh X25519)");
        let mut pair =
            world.pair_with(Client::resume(ResumeConfig::new(saved.clone()).with_suites(&[suite]), &mut world.rng()));
        let outcome = pair.drive();
        print_log(&pair);
        if !outcome.both_established() {
            return Err(format!("resume failed: {outcome:?}").into());
        }
        let (mut c, mut s) = pair.into_sessions()?;
        exchange(&mut c.channel, &mut s.channel)?;
        println!();
    }

    println!("5. What an attacker gets");
    let mut pair = world.resume_pair(&saved);
    pair.drive();
    let (mut c, mut s) = pair.into_sessions()?;
    let mut frame = vec![0u8; 64 + FRAME_OVERHEAD];
    let n = c.channel.seal(b"reboot now", &mut frame)?;
    frame[6] ^= 0x01;
    println!(
        "    one bit flipped in a data frame: {}",
        s.channel.open(&frame[..n]).map(|_| "accepted".to_string()).unwrap_or_else(|e| e.to_string())
    );
    let mut again = world.join_pair("edge-node-2", &token);
    let outcome = again.drive();
    println!(
        "    the used token presented again: agent sees {:?}; gateway: {}",
        outcome.client_error().map(ToString::to_string),
        outcome.server_error().map_or_else(|| "accepted".to_string(), ToString::to_string)
    );
    let frames = again.log.iter().filter(|(_, b)| b.first() == Some(&(FrameType::Alert as u8))).count();
    println!(
        "    ({frames} alert frame on the wire; the store is unchanged: uses {}/1)",
        world.store.token(token.id()).map_or(0, |t| t.use_count)
    );
    Ok(())
}
