//! Throwaway etcd members for tests of code built on this store: each runs the `etcd`
//! binary on 127.0.0.1 with ports of its own and a data directory in a temporary
//! directory, and is killed (and its directory removed) when dropped. An
//! [`EtcdCluster`] is several such members in one cluster, for tests through a
//! leader's death or a lost quorum.
//!
//! etcd must be installed (`apt-get install etcd-server` on Debian); without it
//! [`EtcdMember::start`] fails with [`MemberError::NotInstalled`], so a test that
//! needs etcd fails with that message rather than passing without it.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Why a member did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// No `etcd` binary on `PATH`.
    #[error(
        "the `etcd` binary is not on PATH: install etcd (Debian: `apt-get install etcd-server etcd-client`); \
         the etcd store's tests need a real etcd and CI installs it"
    )]
    NotInstalled,
    /// The member could not be started or did not become healthy.
    #[error("etcd did not start: {reason}; its log:\n{log}")]
    Start {
        /// What happened.
        reason: String,
        /// The end of etcd's log.
        log: String,
    },
    /// The temporary directory could not be made.
    #[error("cannot create a directory for etcd: {0}")]
    Dir(#[from] std::io::Error),
}

/// TLS for a member's client URL: its certificate and key, and (for
/// `--client-cert-auth`) the CA that signs client certificates.
#[derive(Debug, Clone)]
pub struct MemberTls {
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
    /// The CA whose client certificates etcd requires, if any.
    pub client_ca: Option<PathBuf>,
}

/// How to start a member.
#[derive(Debug, Clone, Default)]
pub struct MemberOptions {
    /// Serve clients over TLS.
    pub tls: Option<MemberTls>,
    /// Further `etcd` arguments.
    pub extra_args: Vec<String>,
}

/// One running etcd member, killed on drop.
#[derive(Debug)]
pub struct EtcdMember {
    child: Option<Child>,
    dir: PathBuf,
    endpoint: String,
}

/// How many times a member start is tried with fresh ports (another process may take
/// a port between choosing it and etcd binding it).
const START_TRIES: usize = 5;
/// How long a member has to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|candidate| candidate.is_file())
}

/// Three distinct ports that were free a moment ago.
fn free_ports() -> std::io::Result<[u16; 3]> {
    let listeners = [
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?,
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?,
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?,
    ];
    let mut ports = [0u16; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

fn temp_dir() -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "boarding-etcd-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir)?;
    Ok(dir)
}

/// The body of `GET path` on a member's metrics port, if it answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    Some(body)
}

/// Whether etcd's `/health` on the metrics port says it has a leader.
fn healthy(port: u16) -> bool {
    http_get(port, "/health").is_some_and(|body| body.contains("\"health\":\"true\""))
}

fn log_tail(path: &Path) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines.iter().skip(lines.len().saturating_sub(20)).copied().collect::<Vec<_>>().join("\n")
}

impl EtcdMember {
    /// Starts a one-member cluster serving plain HTTP on 127.0.0.1.
    ///
    /// # Errors
    ///
    /// [`MemberError::NotInstalled`] without an `etcd` binary, or why it did not start.
    pub fn start() -> Result<Self, MemberError> {
        Self::start_with(&MemberOptions::default())
    }

    /// Starts a one-member cluster with these options.
    ///
    /// # Errors
    ///
    /// As [`EtcdMember::start`].
    pub fn start_with(options: &MemberOptions) -> Result<Self, MemberError> {
        let etcd = find_etcd().ok_or(MemberError::NotInstalled)?;
        let mut last = None;
        for _ in 0..START_TRIES {
            match Self::try_start(&etcd, options)? {
                Ok(member) => return Ok(member),
                Err(failure) => last = Some(failure),
            }
        }
        Err(last.unwrap_or(MemberError::Start { reason: "no attempt was made".into(), log: String::new() }))
    }

    /// One attempt: `Ok(Err(_))` if it should be tried again with other ports.
    fn try_start(etcd: &Path, options: &MemberOptions) -> Result<Result<Self, MemberError>, MemberError> {
        let [client, peer, metrics] = free_ports()?;
        let dir = temp_dir()?;
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = dir.join("etcd.log");
        let log = fs::File::create(&log_path)?;
        let mut command = Command::new(etcd);
        command
            .arg("--name=m0")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=m0={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=boarding-test")
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"))
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-level=warn");
        if let Some(tls) = &options.tls {
            command.arg(format!("--cert-file={}", tls.cert.display()));
            command.arg(format!("--key-file={}", tls.key.display()));
            if let Some(ca) = &tls.client_ca {
                command.arg("--client-cert-auth").arg(format!("--trusted-ca-file={}", ca.display()));
            }
        }
        command.args(&options.extra_args);
        let child = command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
        let mut member = Self { child: Some(child), dir, endpoint };
        let started = Instant::now();
        loop {
            if healthy(metrics) {
                return Ok(Ok(member));
            }
            let exited = member.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let log = log_tail(&log_path);
                let failure = MemberError::Start { reason: format!("etcd exited ({status})"), log: log.clone() };
                // A port taken in between: try again with others.
                return if log.contains("address already in use") { Ok(Err(failure)) } else { Err(failure) };
            }
            if started.elapsed() > HEALTHY_WITHIN {
                return Err(MemberError::Start {
                    reason: format!("not healthy within {HEALTHY_WITHIN:?}"),
                    log: log_tail(&log_path),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The client URL, such as `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The member's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the member now (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One member of an [`EtcdCluster`].
#[derive(Debug)]
struct ClusterMember {
    child: Option<Child>,
    args: Vec<String>,
    endpoint: String,
    metrics: u16,
    log: PathBuf,
    stopped: bool,
}

/// A cluster of etcd members on 127.0.0.1, started together with a static
/// `--initial-cluster` on ports of their own (heartbeat 50 ms, election timeout 500 ms),
/// each with a data directory in one temporary directory. Members can be killed
/// (SIGKILL), stopped (SIGSTOP) and continued (SIGCONT), to test what a client does
/// through a leader's death or a lost quorum. Every member is killed, and the
/// directory removed, when the cluster is dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<ClusterMember>,
    dir: PathBuf,
    etcd: PathBuf,
}

/// Starts `etcd ARGS`, appending its output to `log`.
fn spawn_logged(etcd: &Path, args: &[String], log: &Path) -> std::io::Result<Child> {
    let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
    Command::new(etcd).args(args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()
}

/// Sends `signal` to a process (best effort: it may have exited).
fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until every member is healthy (the
    /// cluster has a leader).
    ///
    /// # Errors
    ///
    /// [`MemberError::NotInstalled`] without an `etcd` binary, or why it did not start.
    pub fn start(size: usize) -> Result<Self, MemberError> {
        let etcd = find_etcd().ok_or(MemberError::NotInstalled)?;
        let mut last = None;
        for _ in 0..START_TRIES {
            match Self::try_start(&etcd, size.max(1))? {
                Ok(cluster) => return Ok(cluster),
                Err(failure) => last = Some(failure),
            }
        }
        Err(last.unwrap_or(MemberError::Start { reason: "no attempt was made".into(), log: String::new() }))
    }

    /// One attempt: `Ok(Err(_))` if it should be tried again with other ports.
    fn try_start(etcd: &Path, size: usize) -> Result<Result<Self, MemberError>, MemberError> {
        let mut ports = Vec::with_capacity(size);
        for _ in 0..size {
            ports.push(free_ports()?);
        }
        let dir = temp_dir()?;
        let peer_url = |peer: u16| format!("http://127.0.0.1:{peer}");
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, [_, peer, _])| format!("m{i}={}", peer_url(*peer))).collect();
        let initial = initial.join(",");
        let mut cluster = Self { members: Vec::with_capacity(size), dir, etcd: etcd.to_owned() };
        for (i, [client, peer, metrics]) in ports.iter().copied().enumerate() {
            let endpoint = format!("http://127.0.0.1:{client}");
            let log_path = cluster.dir.join(format!("m{i}.log"));
            let args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", cluster.dir.join(format!("m{i}")).display()),
                format!("--listen-client-urls={endpoint}"),
                format!("--advertise-client-urls={endpoint}"),
                format!("--listen-peer-urls={}", peer_url(peer)),
                format!("--initial-advertise-peer-urls={}", peer_url(peer)),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".to_owned(),
                "--initial-cluster-token=boarding-test-cluster".to_owned(),
                format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
                "--heartbeat-interval=50".to_owned(),
                "--election-timeout=500".to_owned(),
                "--logger=zap".to_owned(),
                "--log-level=warn".to_owned(),
            ];
            let child = spawn_logged(etcd, &args, &log_path)?;
            cluster.members.push(ClusterMember {
                child: Some(child),
                args,
                endpoint,
                metrics,
                log: log_path,
                stopped: false,
            });
        }
        let started = Instant::now();
        loop {
            if cluster.members.iter().all(|m| healthy(m.metrics)) {
                return Ok(Ok(cluster));
            }
            for member in &mut cluster.members {
                let exited = member.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    let log = log_tail(&member.log);
                    let failure = MemberError::Start { reason: format!("etcd exited ({status})"), log: log.clone() };
                    return if log.contains("address already in use") { Ok(Err(failure)) } else { Err(failure) };
                }
            }
            if started.elapsed() > HEALTHY_WITHIN {
                let logs: Vec<String> = cluster.members.iter().map(|m| log_tail(&m.log)).collect();
                return Err(MemberError::Start {
                    reason: format!("the cluster was not healthy within {HEALTHY_WITHIN:?}"),
                    log: logs.join("\n---\n"),
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// How many members the cluster was started with.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never: it starts with at least one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> Option<&str> {
        self.members.get(i).map(|m| m.endpoint.as_str())
    }

    /// Member `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members.get(i).and_then(|m| m.child.as_ref()).map(Child::id)
    }

    /// The member that is the leader now, by its own metrics (`etcd_server_is_leader`).
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            m.child.is_some()
                && !m.stopped
                && http_get(m.metrics, "/metrics")
                    .is_some_and(|body| body.lines().any(|l| l == "etcd_server_is_leader 1"))
        })
    }

    /// Waits up to `within` for a leader among the running members.
    pub fn wait_for_leader(&self, within: Duration) -> Option<usize> {
        let started = Instant::now();
        loop {
            let leader = self.leader();
            if leader.is_some() || started.elapsed() > within {
                return leader;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Whether member `i` reports itself healthy (it runs and sees a leader).
    pub fn healthy(&self, i: usize) -> bool {
        self.members.get(i).is_some_and(|m| m.child.is_some() && !m.stopped && healthy(m.metrics))
    }

    /// Kills member `i` now (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(member) = self.members.get_mut(i)
            && let Some(mut child) = member.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again after [`EtcdCluster::kill`], on its ports and data
    /// directory: it rejoins the cluster (its data directory names the cluster).
    ///
    /// # Errors
    ///
    /// [`MemberError::Dir`] if etcd cannot be started.
    pub fn restart(&mut self, i: usize) -> Result<(), MemberError> {
        let etcd = self.etcd.clone();
        if let Some(member) = self.members.get_mut(i)
            && member.child.is_none()
        {
            member.child = Some(spawn_logged(&etcd, &member.args, &member.log)?);
            member.stopped = false;
        }
        Ok(())
    }

    /// Waits up to `within` for member `i` to be healthy.
    pub fn wait_healthy(&self, i: usize, within: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.healthy(i) {
                return true;
            }
            if started.elapsed() > within {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops member `i` (SIGSTOP): it holds its connections open and answers nothing.
    pub fn stop(&mut self, i: usize) {
        if let Some(member) = self.members.get_mut(i)
            && let Some(child) = &member.child
        {
            signal(child.id(), rustix::process::Signal::STOP);
            member.stopped = true;
        }
    }

    /// Continues member `i` after [`EtcdCluster::stop`] (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        if let Some(member) = self.members.get_mut(i)
            && let Some(child) = &member.child
        {
            signal(child.id(), rustix::process::Signal::CONT);
            member.stopped = false;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                // A stopped process dies of SIGKILL too; continued first all the same.
                if member.stopped {
                    signal(child.id(), rustix::process::Signal::CONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
