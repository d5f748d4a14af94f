//! The shipped binary as a process, for the benches that measure it (`service`,
//! `fleet`): built in release mode once, started on a free loopback port, read until
//! it listens, killed on drop.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use boarding::pin::Pin;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_owned).unwrap_or_default()
}

/// Builds the release `boarding` binary (a no-op when it is up to date) and returns
/// its path.
///
/// # Panics
///
/// If cargo cannot run or the build fails: a bench cannot go on without it.
pub fn release_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "boarding-cli", "--manifest-path"])
        .arg(workspace().join("Cargo.toml"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the release boarding binary failed");
    workspace().join("target/release/boarding")
}

/// A running `boarding gateway serve`: what it printed on start, and the process,
/// killed when this is dropped.
pub struct ServedGateway {
    /// The process.
    pub child: Child,
    /// The agents' address (`listening on …`).
    pub addr: String,
    /// The gateway's pin (`pin: …`).
    pub pin: Pin,
    /// The metrics endpoint (`metrics on http://…/metrics`), with `--metrics-listen`.
    pub metrics: Option<String>,
}

impl ServedGateway {
    /// Spawns `command` (a `gateway serve` with its arguments) with stdout piped and
    /// stdin and stderr closed, and waits until it prints its address. Its stdout is
    /// drained afterwards so that it never blocks on it.
    ///
    /// # Panics
    ///
    /// If it cannot start or stops before it listens.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let (mut addr, mut pin, mut metrics) = (None, None, None);
        while addr.is_none() {
            let line = lines.next().expect("the gateway printed its address").expect("its stdout is text");
            if let Some(p) = line.strip_prefix("pin: ") {
                pin = p.parse().ok();
            }
            if let Some(a) = line.strip_prefix("listening on ") {
                addr = Some(a.to_owned());
            }
            if let Some(m) = line.strip_prefix("metrics on http://").and_then(|m| m.strip_suffix("/metrics")) {
                metrics = Some(m.to_owned());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr: addr.unwrap_or_default(), pin: pin.expect("the gateway printed its pin"), metrics }
    }
}

impl Drop for ServedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A smol executor run by `threads` threads of its own, for the benches' agents.
pub fn executor(threads: usize) -> Arc<smol::Executor<'static>> {
    let ex = Arc::new(smol::Executor::new());
    for _ in 0..threads {
        let ex = Arc::clone(&ex);
        std::thread::spawn(move || smol::block_on(ex.run(std::future::pending::<()>())));
    }
    ex
}
