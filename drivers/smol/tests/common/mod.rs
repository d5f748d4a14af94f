//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::time::Duration;

use boarding::identity::ClientId;
use boarding_smol::{Gateway, GatewayStats, Store};

/// Runs a test body under a deadline, so a hang fails instead of blocking CI.
pub fn run_within<F: Future<Output = ()>>(limit: Duration, f: F) {
    smol::block_on(smol::future::or(f, async move {
        smol::Timer::after(limit).await;
        panic!("test timed out after {limit:?}");
    }))
}

pub fn id(s: &str) -> ClientId {
    ClientId::new(s).unwrap()
}

/// The gateway bumps its counters in the connection's task after it has let go of the
/// socket, so a peer can see the close first: wait (bounded) for the counters to match.
pub async fn stats_eventually<S: Store>(
    gateway: &Gateway<S>,
    expected: impl Fn(&GatewayStats) -> bool,
) -> GatewayStats {
    for _ in 0..300 {
        let stats = gateway.stats();
        if expected(&stats) {
            return stats;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    gateway.stats()
}
