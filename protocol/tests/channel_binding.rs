//! Channel binding (`spec/PROTOCOL.md` §6.1): a handshake bound to a TLS session
//! completes only when both ends are bound to the same value, which a relay that
//! terminates TLS on each side cannot arrange; the first proof that covers the
//! transcript fails, and nothing is charged or written.

use boarding::Alert;
use boarding::client::{Client, ResumeConfig, SavedKeyring};
use boarding::error::{Error, PeerMisbehaved, ReceivedAlert};
use boarding::server::Server;
use boarding::transcript::ChannelBinding;
use boarding_memory::{Pair, Standing, World};

fn binding(byte: u8) -> ChannelBinding {
    ChannelBinding::from_exporter([byte; 32])
}

/// A pair whose agent is bound to `client` and gateway to `server` (`None`: unbound).
fn join_pair(world: &World, id: &str, client: Option<u8>, server: Option<u8>) -> Pair {
    let token = world.issue_token(None, 1);
    let mut config = world.join_config(id, &token);
    if let Some(b) = client {
        config = config.with_channel_binding(binding(b));
    }
    let client = Client::join(config, &mut world.rng());
    let server = Server::bound(world.config.clone(), &mut world.rng(), server.map(binding));
    Pair::new(client, server, world.store.clone(), world.now)
}

fn resume_pair(world: &World, saved: &SavedKeyring, client: Option<u8>, server: Option<u8>) -> Pair {
    let mut config = ResumeConfig::new(saved.clone());
    if let Some(b) = client {
        config = config.with_channel_binding(binding(b));
    }
    let client = Client::resume(config, &mut world.rng());
    let server = Server::bound(world.config.clone(), &mut world.rng(), server.map(binding));
    Pair::new(client, server, world.store.clone(), world.now)
}

#[test]
fn a_join_and_a_resume_bound_to_the_same_session_complete() {
    let world = World::new(61);
    let mut pair = join_pair(&world, "bound", Some(1), Some(1));
    assert!(pair.drive().both_established());
    let saved = pair.saved.clone().unwrap();
    let mut resumed = resume_pair(&world, &saved, Some(2), Some(2));
    assert!(resumed.drive().both_established());
}

#[test]
fn a_join_relayed_between_two_tls_sessions_fails_at_the_first_proof_and_charges_nothing() {
    // Each end bound to its own TLS session (a relay in between), or one end unbound.
    for (client, server) in [(Some(1), Some(2)), (Some(1), None), (None, Some(2))] {
        let world = World::new(62);
        let mut pair = join_pair(&world, "relayed", client, server);
        let before = world.store.snapshot();
        let outcome = pair.drive();
        // The gateway's challenge signs its own transcript: the agent sees another one.
        assert_eq!(
            outcome.client,
            Standing::Failed(PeerMisbehaved::TranscriptMismatch.into()),
            "{client:?} {server:?}"
        );
        assert_eq!(outcome.server, Standing::Failed(Error::PeerAlert(ReceivedAlert::Known(Alert::BadProof))));
        assert_eq!(world.store.snapshot(), before, "a relayed join changed the store");
        assert!(pair.saved.is_none());
    }
}

#[test]
fn a_resume_relayed_between_two_tls_sessions_fails_at_the_gateways_proof() {
    let world = World::new(63);
    let mut pair = join_pair(&world, "resumer", Some(1), Some(1));
    assert!(pair.drive().both_established());
    let saved = pair.saved.clone().unwrap();
    for (client, server) in [(Some(3), Some(4)), (None, Some(4)), (Some(3), None)] {
        let mut relayed = resume_pair(&world, &saved, client, server);
        let outcome = relayed.drive();
        assert_eq!(outcome.client, Standing::Failed(PeerMisbehaved::BadGatewayProof.into()), "{client:?} {server:?}");
        assert_eq!(outcome.server, Standing::Failed(Error::PeerAlert(ReceivedAlert::Known(Alert::BadIdentity))));
    }
    // The keyring is untouched: the next resume on one TLS session completes.
    assert!(resume_pair(&world, &saved, Some(5), Some(5)).drive().both_established());
}

#[test]
fn a_binding_is_never_printed() {
    assert_eq!(format!("{:?}", binding(0xaa)), "ChannelBinding(<redacted>)");
}
