//! Helpers to run the `boarding` binary as a subprocess.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_boarding");

/// Runs `boarding ARGS` to completion; a run still going after 60 s is killed.
pub fn boarding(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .env_remove("BOARDING_TOKEN")
        .env("BOARDING_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (done, watched) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watched.recv_timeout(Duration::from_secs(60)) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    drop(done);
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `boarding ARGS`, asserting success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = boarding(args);
    assert!(o.status.success(), "boarding {args:?} failed:\nstdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// The lines a child writes on its (piped) stdout, as they come. A thread keeps
/// draining after the test stops listening, so the child never writes to a closed pipe.
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// A `boarding gateway serve` subprocess on a free loopback port.
pub struct GatewayProcess {
    pub child: Child,
    pub addr: String,
    pub pin: String,
    /// The metrics endpoint's address, with `--metrics-listen`.
    pub metrics: Option<String>,
}

impl GatewayProcess {
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Like [`GatewayProcess::start`], with more `gateway serve` arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["gateway", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--handshake-timeout", "5s"])
            .args(extra)
            .env("BOARDING_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let rx = stdout_lines(&mut child);
        let (mut addr, mut pin, mut metrics) = (None, None, None);
        while addr.is_none() {
            let line = rx.recv_timeout(Duration::from_secs(20)).expect("the gateway printed its address in time");
            if let Some(p) = line.strip_prefix("pin: ") {
                pin = Some(p.to_owned());
            }
            if let Some(a) = line.strip_prefix("listening on ") {
                addr = Some(a.to_owned());
            }
            if let Some(m) = line.strip_prefix("metrics on http://").and_then(|m| m.strip_suffix("/metrics")) {
                metrics = Some(m.to_owned());
            }
        }
        Self { child, addr: addr.unwrap(), pin: pin.expect("the pin was printed"), metrics }
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A README section's commands, as written: the lines of the first block after `heading` that start with `$ ` (continuations joined), and the
/// output lines the README shows for them.
pub fn readme_block(heading: &str) -> (Vec<String>, Vec<String>) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split_once(heading).unwrap_or_else(|| panic!("README has no {heading:?}")).1;
    let mut commands: Vec<String> = Vec::new();
    let mut outputs = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        let Some(code) = line.strip_prefix("    ") else {
            if in_block && !line.is_empty() {
                break;
            }
            continue;
        };
        in_block = true;
        let continues = commands.last().is_some_and(|c| c.ends_with('\\'));
        if continues {
            let last = commands.last_mut().unwrap();
            last.pop();
            last.push_str(code.trim_start());
        } else if let Some(command) = code.strip_prefix("$ ") {
            commands.push(command.to_owned());
        } else {
            outputs.push(code.to_owned());
        }
    }
    (commands, outputs)
}

/// Runs `commands` (a README block's, in order) with `sh -e` in `dir`, with the binary on
/// PATH, the running `gateway`'s address for the README's 127.0.0.1:7443 and its pin in
/// `$PIN`, and checks that stdout shows every one of the README's `outputs` lines.
pub fn run_readme_commands(dir: &Path, commands: &[String], outputs: &[String], gateway: &GatewayProcess) -> String {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = commands.join("\n").replace("127.0.0.1:7443", &gateway.addr);
    let out = Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", path)
        .env("PIN", &gateway.pin)
        .env("BOARDING_LOG", "warn")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script}\nfailed:\n{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in outputs {
        let expected = expected.replace("127.0.0.1:7443", &gateway.addr);
        assert!(
            printed.lines().any(|l| l == expected),
            "the README shows {expected:?}; the commands printed {printed}"
        );
    }
    printed
}

/// Runs `visits` (tasks already spawned) while SIGKILL takes `gateway` after `delay`;
/// their results, in order. A visit still running 30 s after the kill fails the test.
pub fn kill_during<T: Send + 'static>(gateway: GatewayProcess, delay: Duration, visits: Vec<smol::Task<T>>) -> Vec<T> {
    smol::block_on(async {
        let all = async {
            let mut results = Vec::new();
            for v in visits {
                results.push(v.await);
            }
            results
        };
        let killer = async {
            smol::Timer::after(delay).await;
            gateway.kill();
        };
        let (results, ()) = smol::future::zip(
            smol::future::or(all, async {
                smol::Timer::after(Duration::from_secs(30)).await;
                panic!("agents hung after the gateway was killed");
            }),
            killer,
        )
        .await;
        results
    })
}
