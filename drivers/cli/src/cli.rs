//! The command-line grammar.

use std::path::PathBuf;
use std::time::Duration;

use boarding::identity::ClientId;
use boarding::pin::Pin;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_CODES_HELP;
use crate::output::{LAST_PRINTABLE, OutputFormat};
use crate::secret::{SecretArg, secret_arg};

/// Boarding: agents join a gateway with a bootstrap token and the gateway's pin, then
/// talk to it over MAC-authenticated frames inside TLS 1.3, reconnecting at will.
///
/// Start with `boarding demo`. A real setup is `boarding gateway init` and
/// `boarding gateway serve` on the gateway, `boarding token create` there, then
/// `boarding agent join` and `boarding agent send` on each agent.
#[derive(Debug, Parser)]
#[command(name = "boarding", version, propagate_version = true, max_term_width = 100, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Log filter (tracing's `EnvFilter` syntax, e.g. `debug` or
    /// `info,boarding_smol=debug`). Logs go to stderr. The first of --log,
    /// BOARDING_LOG and RUST_LOG that is set wins; without any, the default is `info`
    /// for `gateway`, `off` for `demo` and `warn` otherwise. An invalid filter is a
    /// usage error.
    #[arg(long, global = true, env = "BOARDING_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log line format: `text` for people, `json` (one object per line) for log
    /// collectors.
    #[arg(long, global = true, env = "BOARDING_LOG_FORMAT", value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
// Parsed once per run: the size of `Gateway`'s options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a gateway and an agent in this process on loopback, printing every step.
    ///
    /// Uses a temporary data directory (removed at the end unless --keep). Shows the
    /// gateway's identity and pin, a token, a join, a resume, messages both ways, the
    /// errors that a spent token, a wrong pin and a revoked client produce, and timings.
    Demo(DemoArgs),
    /// Run or inspect a gateway.
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// Create, list and revoke bootstrap tokens in a gateway's database.
    ///
    /// While `boarding gateway serve` runs on --data-dir, these commands ask it over
    /// its admin socket (`DIR/admin.sock`, this user only); with no gateway running,
    /// they open the database in --data-dir directly. With --store etcd they work on
    /// the fleet's store in etcd, from any machine that reaches it, and need no data
    /// directory.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List and revoke the agents (clients) that joined a gateway.
    ///
    /// Like `boarding token`, these go through the running gateway's admin socket, or
    /// open the database when no gateway runs, or (--store etcd) work on the fleet's
    /// store in etcd. Revoking a client also ends its live sessions (on every replica
    /// of an etcd fleet).
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Join a gateway, and talk to it.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Print a shell completion script to stdout.
    ///
    /// For example `boarding completions bash > /etc/bash_completion.d/boarding`, or
    /// `boarding completions zsh > "${fpath[1]}/_boarding"`.
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout, or write one per command into --dir.
    ///
    /// For example `boarding man | man -l -`, or `boarding man --dir /usr/local/share/man/man1`.
    Man {
        /// Write `boarding.1` and one page per subcommand (`boarding-token-create.1`, …)
        /// into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The default gateway data directory.
pub const DEFAULT_GATEWAY_DIR: &str = "boarding-gateway";

/// Where a gateway keeps its database.
#[derive(Debug, Args)]
pub struct GatewayDir {
    /// The gateway's data directory (holds `gateway.redb`: identity key, tokens,
    /// keyrings). `gateway init` and `gateway serve` create it (mode 0700); the `token`
    /// and `clients` commands refuse a directory with no gateway in it.
    #[arg(long, env = "BOARDING_GATEWAY_DIR", value_name = "DIR", default_value = DEFAULT_GATEWAY_DIR)]
    pub data_dir: PathBuf,
}

/// Which store an operator command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataStore {
    /// The gateway's database in --data-dir (through its admin socket while it runs).
    Redb,
    /// A fleet of gateway replicas on etcd (see the etcd options); no data directory.
    Etcd,
}

/// Which store `gateway serve` keeps its tokens, keyrings and identity in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeStore {
    /// `DIR/gateway.redb` in --data-dir, with the admin socket beside it.
    Redb,
    /// Memory only: a fresh identity each run, everything lost at exit (as --memory).
    Memory,
    /// etcd, shared by every replica of a fleet (see the etcd options).
    Etcd,
}

/// How to reach a fleet's store on etcd (`--store etcd`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "etcd store (--store etcd)")]
pub struct EtcdArgs {
    /// etcd's client URLs, comma-separated, e.g. `http://10.0.0.5:2379,http://10.0.0.6:2379`
    /// (`https://` with --etcd-ca). Giving them selects --store etcd unless --store says
    /// otherwise.
    #[arg(long, env = "BOARDING_ETCD_ENDPOINTS", value_name = "URL[,URL…]", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The fleet's key prefix: every key of the fleet's tokens, keyrings and identity
    /// starts with it, so one etcd serves several fleets (two fleets' prefixes must not
    /// be prefixes of one another).
    #[arg(long, env = "BOARDING_ETCD_PREFIX", value_name = "PREFIX", default_value = boarding_etcd::DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    /// The fleet's sealing key file: 32 bytes, or 64 hexadecimal digits (`openssl rand
    /// -hex 32 > FILE`), mode 0600. Token secrets, keyrings and the identity are sealed
    /// with it in etcd; every replica and operator command of the fleet needs the same
    /// file. Required with --store etcd.
    #[arg(long, env = "BOARDING_ETCD_SEALING_KEY", value_name = "FILE")]
    pub etcd_sealing_key: Option<PathBuf>,
    /// The CA certificate (PEM) that signs etcd's server certificates: etcd is then
    /// reached over TLS (`https://` endpoints).
    #[arg(long, env = "BOARDING_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present to etcd (its `--client-cert-auth`), with
    /// --etcd-key and --etcd-ca.
    #[arg(long, env = "BOARDING_ETCD_CERT", value_name = "FILE", requires = "etcd_key", requires = "etcd_ca")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with --etcd-cert.
    #[arg(long, env = "BOARDING_ETCD_KEY", value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// An etcd user name (etcd's user and password authentication). The password is
    /// read from --etcd-password-file, or from the environment variable
    /// BOARDING_ETCD_PASSWORD; it is never taken on the command line.
    #[arg(long, env = "BOARDING_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// A file holding the password of --etcd-user (surrounding whitespace is ignored).
    #[arg(long, env = "BOARDING_ETCD_PASSWORD_FILE", value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// How long to wait for etcd to answer when the command starts; past it the command
    /// fails with exit status 3 (`gateway serve` does not start).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub etcd_dial_timeout: Duration,
    /// Deadline of one store operation on etcd, its retries included. A join or resume
    /// that needs etcd waits at most this long before the gateway refuses it with
    /// `Internal`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub etcd_command_timeout: Duration,
}

/// Where an operator command finds the gateway's data: the data directory, or a
/// fleet's store on etcd.
#[derive(Debug, Args)]
pub struct GatewayData {
    #[command(flatten)]
    pub dir: GatewayDir,
    /// Where the gateway's data is: `redb` (the database in --data-dir) or `etcd` (a
    /// fleet of replicas on etcd, reached from any machine with the etcd options below;
    /// no data directory needed). Default: `etcd` if --etcd-endpoints is given, else
    /// `redb`.
    #[arg(long, env = "BOARDING_STORE", value_name = "STORE")]
    pub store: Option<DataStore>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

impl GatewayData {
    /// The store these options name.
    pub fn kind(&self) -> DataStore {
        match self.store {
            Some(kind) => kind,
            None if !self.etcd.etcd_endpoints.is_empty() => DataStore::Etcd,
            None => DataStore::Redb,
        }
    }
}

/// Gateway commands.
// Parsed once per run: the size of `Serve`'s options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Serve agents over TCP and TLS 1.3: services behind the gateway with --service,
    /// else an echo of every message an agent sends.
    ///
    /// With --service NAME=HOST:PORT (repeatable), each session carries one stream an
    /// agent forwards (`agent forward`, `agent connect`) to a named service: the gateway
    /// checks the service's --allow rules against the agent's verified identity, connects
    /// to the upstream, and writes a PROXY protocol v2 header with the agent's address and
    /// identity (client id, token id, token labels, attested name, join or resume) before
    /// the stream (spec/FORWARDING.md).
    ///
    /// The first run creates the gateway's Ed25519 identity in --data-dir and prints its
    /// pin; later runs reuse it (same pin). Stops gracefully on Ctrl-C or SIGTERM.
    /// Prints `pin: …` and `listening on ADDR` on stdout once ready.
    ///
    /// With --store etcd, several replicas (on one machine or many) serve one fleet: one
    /// set of tokens and keyrings, one identity (the first replica creates it, sealed, and
    /// the others load it), a one-use token redeemed once in the whole fleet, and a
    /// revocation made anywhere closing the client's sessions on every replica. Such a
    /// replica keeps nothing on local disk and opens no admin socket: the `token` and
    /// `clients` commands take --store etcd and work on etcd directly, from any machine.
    Serve {
        /// Address to listen on (use port 0 for any free port; the chosen address is
        /// printed).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
        listen: String,
        /// The gateway's data directory (holds `gateway.redb` and the admin socket
        /// `admin.sock`), created with mode 0700. Default `boarding-gateway`. Not used
        /// with --store etcd.
        #[arg(long, env = "BOARDING_GATEWAY_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Where tokens, keyrings and the identity are kept: `redb` (in --data-dir),
        /// `memory`, or `etcd` (a fleet of replicas; see the etcd options). Default:
        /// `etcd` if --etcd-endpoints is given, else `redb`.
        #[arg(long, env = "BOARDING_STORE", value_name = "STORE", conflicts_with = "memory")]
        store: Option<ServeStore>,
        /// The gateway's Ed25519 identity key from this file (PKCS#8 PEM, mode 0600;
        /// `openssl genpkey -algorithm ed25519 -out FILE` makes one) instead of a
        /// generated one. The store keeps it from the first run on (sealed, with --store
        /// etcd), and a later run or another replica with a different key is refused, so
        /// the pin agents hold stays valid.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        #[command(flatten)]
        limits: ServeLimits,
        /// Keep everything in memory instead of `DIR/gateway.redb` (the same as --store
        /// memory): a fresh identity each run, and every token and keyring lost at exit.
        /// For benchmarks and experiments; --data-dir still holds the admin socket.
        #[arg(long)]
        memory: bool,
        /// Serve Prometheus metrics on `http://ADDR/metrics`, and the probes
        /// `/healthz` (alive) and `/readyz` (store open and listener bound), e.g.
        /// `127.0.0.1:9090`. Off by default.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        attest: AttestServeArgs,
        #[command(flatten)]
        certificates: CertificateServeArgs,
        #[command(flatten)]
        services: ServiceArgs,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Create the gateway's identity in --data-dir and print its pin.
    ///
    /// The pin (`sha256:…`) goes to stdout; what happened goes to stderr. A directory
    /// that already holds a gateway is left as it is (its pin is printed), so running
    /// this twice is safe. With --store etcd, creates the fleet (its sealing check and
    /// identity) under --etcd-prefix, or prints the pin of the fleet already there.
    Init {
        #[command(flatten)]
        data: GatewayData,
    },
    /// Print the gateway's pin. The data directory must hold a gateway (`gateway
    /// init` creates one); with --store etcd, the fleet under --etcd-prefix must exist.
    Pin {
        #[command(flatten)]
        data: GatewayData,
    },
    /// Print the certificate (PEM) of the gateway's client CA: what services trust to
    /// verify the node certificates `gateway serve --issue-certificates` signs.
    ///
    /// The CA's key is derived from the gateway's identity, so every replica of a fleet
    /// and every restart has the same CA, and this prints the same certificate each
    /// time. The data directory must hold a gateway; with --store etcd, the fleet must
    /// exist.
    Ca {
        #[command(flatten)]
        data: GatewayData,
    },
}

/// Node certificates, as `gateway serve` takes them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Node certificates (the kubelet's TLS bootstrap)")]
pub struct CertificateServeArgs {
    /// Sign the certificate an agent asks for at its join (`agent join --certificate`)
    /// with the gateway's client CA (`gateway ca` prints it), and renew it at a resume
    /// past two thirds of its lifetime. The certificate names the client id (its CN and
    /// its one DNS name) and is for TLS client authentication. Without this flag, a join
    /// that asks for a certificate is refused (and charged nothing).
    #[arg(long)]
    pub issue_certificates: bool,
    /// How long a node certificate is valid (from five minutes before its issue, for
    /// clocks that run behind).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub cert_lifetime: Duration,
    /// Put the value of this token label into the certificate's organization (O), as
    /// Kubernetes reads a client's groups from O; a token without the label gives none.
    #[arg(long, value_name = "KEY", requires = "issue_certificates")]
    pub cert_organization_label: Option<String>,
    /// Put the name the join's attestation showed (`--attest-ca`) into the
    /// certificate's organizational unit (OU).
    #[arg(long, requires = "issue_certificates")]
    pub cert_attested_unit: bool,
}

/// Services behind the gateway, as `gateway serve` takes them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Services (streams agents forward)")]
pub struct ServiceArgs {
    /// Serve the service NAME (1 to 63 of a-z, 0-9, '-', '.' and '_') at the upstream
    /// HOST:PORT (repeatable). With any --service, each session forwards one stream
    /// instead of echoing.
    #[arg(long = "service", value_name = "NAME=HOST:PORT")]
    pub service: Vec<String>,
    /// Admit to the service NAME only the agents a rule matches (repeatable; with several
    /// rules for one service, one matching is enough): KEY=VALUE (the agent's token
    /// carries the label KEY with the value VALUE) or attested:NAME (its attested name;
    /// only a join's session has one). A service without --allow admits every agent that
    /// completed its handshake.
    #[arg(long = "allow", value_name = "NAME=RULE")]
    pub allow: Vec<String>,
    /// Write no PROXY header to the upstream of the service NAME (repeatable), for an
    /// upstream that cannot read one (sshd, say): it then learns nothing of the agent.
    #[arg(long = "no-proxy-header", value_name = "NAME")]
    pub no_proxy_header: Vec<String>,
}

/// Node attestation (`x509pop`), as `gateway serve` takes it.
#[derive(Debug, Args)]
pub struct AttestServeArgs {
    /// Judge each joining agent's attestation evidence against the CA certificates in
    /// this PEM file: its certificate chain must verify to one of them now, and its
    /// signature must be over this session's binding. The certificate's name (its CN, or
    /// its first DNS subjectAltName) is logged with the session. Agents that send no
    /// evidence are still admitted unless --require-attestation is given.
    #[arg(long, value_name = "FILE")]
    pub attest_ca: Option<PathBuf>,
    /// Refuse agents that send no attestation evidence.
    #[arg(long, requires = "attest_ca")]
    pub require_attestation: bool,
    /// Refuse agents whose client id (--id) is not their certificate's name.
    #[arg(long, requires = "attest_ca")]
    pub attest_name_is_client_id: bool,
}

/// The gateway's limits, as `gateway serve` takes them.
#[derive(Debug, Args)]
pub struct ServeLimits {
    /// Deadline for a connection's TLS and Boarding handshakes.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Deadline for a new connection's TLS ClientHello.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub hello_timeout: Duration,
    /// Most handshakes in progress at once. At the cap, the oldest handshake that
    /// has not sent its ClientHello is evicted to make room.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_handshakes: usize,
    /// Most handshakes in progress from one source address.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_handshakes_per_source: usize,
    /// Most established sessions at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_sessions: usize,
    /// Most established sessions of one client id.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_sessions_per_client: usize,
    /// Close a session that receives nothing (agents send keepalives every 20 s)
    /// for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Largest message, in bytes: at most 1048576, the protocol's limit and the
    /// default. A lower limit must be configured on the agents too.
    #[arg(long, value_name = "BYTES", default_value_t = 1_048_576)]
    pub max_message: usize,
    /// Executor threads for connections (0: one per available core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Rotate a client's keyring at its first resume once the keyring is this old
    /// (`never`: only when `boarding clients rotate` asks). A keyring copied from an
    /// agent's disk stops working at the next rotation, and its use is reported as a
    /// clone.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_rotate_after)]
    pub rotate_after: RotateAfter,
}

/// `--rotate-after`: a duration, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateAfter(pub Option<Duration>);

fn parse_rotate_after(text: &str) -> Result<RotateAfter, String> {
    if text == "never" {
        return Ok(RotateAfter(None));
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("a zero age would rotate at every resume; give a duration, or `never`".into()),
        Ok(d) => Ok(RotateAfter(Some(d))),
        Err(e) => Err(format!("{e} (a duration such as 30d or 12h, or `never`)")),
    }
}

impl ServeLimits {
    /// The driver's configuration for these limits.
    pub fn config(&self) -> boarding_smol::GatewayConfig {
        boarding_smol::GatewayConfig {
            handshake_timeout: self.handshake_timeout,
            hello_timeout: self.hello_timeout,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_source: self.max_handshakes_per_source,
            max_sessions: self.max_sessions,
            max_sessions_per_client: self.max_sessions_per_client,
            idle_timeout: self.idle_timeout,
            max_payload: self.max_message.min(boarding::channel::MAX_PAYLOAD),
            threads: self.threads,
            rotate_after: self.rotate_after.0,
            ..boarding_smol::GatewayConfig::default()
        }
    }
}

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (this is the only time its secret is shown).
    ///
    /// The token alone goes to stdout (so `TOKEN=$(boarding token create)` works), or
    /// with --print-join-command the `agent join` command that uses it; its details go
    /// to stderr. With -o json|yaml, stdout is one document with the token, its record
    /// and (with --print-join-command) the join command.
    Create {
        #[command(flatten)]
        data: GatewayData,
        /// Use this token (`[a-z0-9]{6}.[a-z0-9]{16}`) instead of drawing a random one,
        /// e.g. one from `boarding token generate`; `-` reads it from stdin (an
        /// argument is visible to other users in the process list). Only with no
        /// gateway running on --data-dir: the admin socket draws its own tokens.
        #[arg(value_name = "TOKEN", value_parser = secret_arg)]
        token: Option<SecretArg>,
        /// How long the token stays valid: a Go duration as kubeadm takes it (`24h0m0s`,
        /// `1h30m`, `90s`), days (`7d`) or words (`2weeks`); `0` or `never` for no
        /// expiry. The expiry must fall before the year 10000.
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
        ttl: Ttl,
        /// How many agents may join with it (0 = unlimited).
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: u32,
        /// A label `KEY=VALUE` handed to every agent that joins with it (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
        label: Vec<(String, String)>,
        /// Free text for operators.
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
        /// Print, instead of the bare token, an `agent join` command to paste on the
        /// agent. It hands the token over on stdin (`echo TOKEN | boarding agent join
        /// … --token -`; `echo` is a shell builtin), so the secret never shows in the
        /// agent's process list.
        #[arg(long)]
        print_join_command: bool,
        /// The gateway's address as agents reach it, for --print-join-command
        /// (`HOST:PORT` is printed for you to fill in otherwise).
        #[arg(long, value_name = "ADDR", requires = "print_join_command")]
        gateway: Option<String>,
        /// Output format.
        #[arg(short, long, value_name = "FORMAT", default_value = "table")]
        output: OutputFormat,
    },
    /// Print a fresh random token, without storing it anywhere.
    ///
    /// For `boarding token create TOKEN`, or to prepare an agent's token file before
    /// the token exists on the gateway.
    Generate,
    /// List tokens: id, state, uses, expiry, labels, description (never the secret).
    ///
    /// Expired tokens are hidden (they can never be used again); --all shows them, and
    /// `boarding token prune` deletes them.
    List {
        #[command(flatten)]
        data: GatewayData,
        /// Show expired tokens too.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(short, long, value_name = "FORMAT", default_value = "table")]
        output: OutputFormat,
    },
    /// Delete tokens: agents can no longer join with them (agents that joined stay).
    ///
    /// Each argument is a token id (the six characters before the dot) or a whole
    /// token; a whole token is matched by its id alone, as in kubeadm (deleting needs
    /// the gateway's data directory, not the secret), and its secret is never printed.
    /// Every argument is checked before anything is deleted.
    #[command(visible_alias = "revoke")]
    Delete {
        #[command(flatten)]
        data: GatewayData,
        /// Token ids or whole tokens.
        #[arg(value_name = "TOKEN", required = true, num_args = 1.., value_parser = secret_arg)]
        tokens: Vec<SecretArg>,
    },
    /// Delete every expired token.
    Prune {
        #[command(flatten)]
        data: GatewayData,
    },
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// List the agents that joined: client id, token, labels, confirmed, join time, the
    /// keyring's age and rotation, and any clone suspicion.
    List {
        #[command(flatten)]
        data: GatewayData,
        /// Output format.
        #[arg(short, long, value_name = "FORMAT", default_value = "table")]
        output: OutputFormat,
    },
    /// Delete an agent's keyring: it can no longer connect (it must join again with a
    /// new token; its id becomes free).
    Revoke {
        #[command(flatten)]
        data: GatewayData,
        /// The agent's client id.
        #[arg(value_name = "CLIENT_ID")]
        id: ClientId,
    },
    /// Rotate an agent's keyring at its next resume: the agent gets a new keyring and
    /// the old one stops working; a copy of the old one that resumes later is refused
    /// and reported as a clone (`clients list`).
    Rotate {
        #[command(flatten)]
        data: GatewayData,
        /// The agent's client id.
        #[arg(value_name = "CLIENT_ID")]
        id: ClientId,
    },
}

/// Where an agent keeps its keyring.
#[derive(Debug, Args)]
pub struct AgentDir {
    /// The agent's data directory (holds `agent.redb` with its keyring). Created with
    /// mode 0700 if missing.
    #[arg(long, env = "BOARDING_AGENT_DIR", value_name = "DIR", default_value = "boarding-agent")]
    pub data_dir: PathBuf,
}

/// Agent commands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Join a gateway once with a bootstrap token; the keyring is stored in --data-dir.
    Join {
        /// The gateway's address, host:port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
        gateway: String,
        /// The bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`); `-` reads it from stdin.
        /// A token written here is visible to other users in the process list: prefer
        /// `-` or --token-file. With neither flag, the token is taken from the
        /// environment variable BOARDING_TOKEN.
        #[arg(long, value_name = "TOKEN", value_parser = secret_arg)]
        token: Option<SecretArg>,
        /// Read the token from this file (surrounding whitespace is ignored; `-` is
        /// stdin).
        #[arg(long, value_name = "FILE", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The gateway's pin, `sha256:<hex>` as `boarding gateway serve` printed it
        /// (repeatable: any one matching is enough).
        #[arg(long, value_name = "PIN", required = true)]
        pin: Vec<Pin>,
        /// This agent's client id: a DNS label (lowercase letters, digits, '-'). The
        /// default is this host's name (its first label, in lowercase), as kubeadm
        /// names a node.
        #[arg(long, value_name = "CLIENT_ID")]
        id: Option<ClientId>,
        /// Attest this node with the certificate chain in this PEM file (the node's
        /// certificate first, then any intermediates), issued by a CA the gateway's
        /// --attest-ca trusts: the join signs its session's binding with --attest-key.
        #[arg(long, value_name = "FILE", requires = "attest_key")]
        attest_cert: Option<PathBuf>,
        /// The node's private key for --attest-cert: Ed25519 or ECDSA P-256, PKCS#8 PEM
        /// (`openssl genpkey`) or, for P-256, SEC1 PEM (`openssl ecparam -genkey`).
        #[arg(long, value_name = "FILE", requires = "attest_cert")]
        attest_key: Option<PathBuf>,
        /// Ask for a node certificate: the join sends a signing request for a fresh
        /// ECDSA P-256 key, and the key and the certificate the gateway's CA issues
        /// (`gateway serve --issue-certificates`) are stored in --data-dir before the
        /// join completes. `agent cert` prints them; later resumes renew the certificate
        /// once it is two thirds through its lifetime.
        #[arg(long)]
        certificate: bool,
        #[command(flatten)]
        dir: AgentDir,
    },
    /// Print the node certificate (PEM) this agent holds, or with --key its private
    /// key.
    ///
    /// The certificate goes to stdout, its validity and renewal time to stderr. The key
    /// is printed only when asked, for a file only its user can read:
    /// `(umask 077; boarding agent cert --key > node.key)`.
    Cert {
        /// Print the private key (PKCS#8 PEM) instead of the certificate.
        #[arg(long)]
        key: bool,
        #[command(flatten)]
        dir: AgentDir,
    },
    /// Forward local TCP connections to a service behind the gateway.
    ///
    /// Each connection to --listen is carried through a resumed session of its own to the
    /// service --service (one the gateway serves with `gateway serve --service`). Prints
    /// `forwarding ADDR to service NAME` once ready; runs until Ctrl-C or SIGTERM. A
    /// connection the gateway refuses (unknown service, not allowed, upstream down) is
    /// closed and logged on stderr.
    Forward {
        /// The gateway's address, host:port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
        gateway: String,
        /// The local address to listen on, e.g. 127.0.0.1:15432 (port 0: any free port;
        /// the chosen address is printed).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// The service's name at the gateway.
        #[arg(long, value_name = "NAME")]
        service: boarding_smol::forward::ServiceName,
        /// At most this many forwarded connections at once; the next ones wait to be
        /// accepted (the gateway's --max-sessions-per-client caps them as well).
        #[arg(long, value_name = "N", default_value_t = 8)]
        max_streams: usize,
        #[command(flatten)]
        dir: AgentDir,
    },
    /// Connect stdin and stdout to a service behind the gateway.
    ///
    /// The stream goes through a resumed session to the service --service, as ssh's
    /// ProxyCommand needs: `ssh -o ProxyCommand='boarding agent connect --gateway GW:7443
    /// --service ssh' HOST`. Exits once both directions have ended.
    Connect {
        /// The gateway's address, host:port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
        gateway: String,
        /// The service's name at the gateway.
        #[arg(long, value_name = "NAME")]
        service: boarding_smol::forward::ServiceName,
        #[command(flatten)]
        dir: AgentDir,
    },
    /// Reconnect with the stored keyring, send MESSAGE, and print the gateway's reply.
    Send {
        /// The gateway's address, host:port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
        gateway: String,
        #[command(flatten)]
        dir: AgentDir,
        /// The message to send.
        #[arg(value_name = "MESSAGE")]
        message: String,
    },
}

/// Demo options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary data directory and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// A token lifetime.
#[derive(Debug, Clone, Copy)]
pub enum Ttl {
    /// Expires after this long.
    For(Duration),
    /// Never expires.
    Never,
}

impl Ttl {
    /// The expiry (Unix seconds) of a token created at `now`, rounded up to a whole
    /// second: `Some(None)` for never, `None` if it would fall after
    /// [`LAST_PRINTABLE`] (or overflow).
    pub fn expires_at(self, now: u64) -> Option<Option<u64>> {
        match self {
            Ttl::Never => Some(None),
            Ttl::For(d) => {
                let secs = d.as_secs().checked_add(u64::from(d.subsec_nanos() > 0))?.max(1);
                now.checked_add(secs).filter(|at| *at <= LAST_PRINTABLE).map(Some)
            }
        }
    }
}

/// `--ttl`: `0` and `never` are no expiry (kubeadm reads `0` so); anything else is a
/// duration whose expiry, counted from now, can be stored and printed.
fn parse_ttl(s: &str) -> Result<Ttl, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(Ttl::Never);
    }
    let d = crate::duration::parse(s).map_err(|e| format!("{e}; or 0 or never for no expiry"))?;
    if d.is_zero() {
        return Ok(Ttl::Never);
    }
    let ttl = Ttl::For(d);
    match ttl.expires_at(boarding_smol::unix_now()) {
        Some(_) => Ok(ttl),
        None => Err(format!(
            "a TTL of {s} would expire after 9999-12-31T23:59:59Z, the last expiry a token can have; use 0 or \
             never for a token that never expires"
        )),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err("the label key is empty".into());
    }
    Ok((k.to_owned(), v.to_owned()))
}
