//! The command-line grammar.

use std::path::PathBuf;
use std::time::Duration;

use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::{BootstrapToken, TokenId};
use clap::{Args, Parser, Subcommand};

/// Boarding: agents join a gateway with a bootstrap token and the gateway's pin, then
/// talk to it over MAC-authenticated frames inside TLS 1.3, reconnecting at will.
///
/// Start with `boarding demo`. A real setup is `boarding gateway serve` on the gateway,
/// `boarding token create` there, then `boarding agent join` and `boarding agent send`
/// on each agent.
#[derive(Debug, Parser)]
#[command(name = "boarding", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Log filter (tracing syntax, e.g. `debug` or `boarding_smol=debug`). Logs go to
    /// stderr; the default is `info` for the gateway and `warn` otherwise.
    #[arg(long, global = true, env = "BOARDING_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
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
    /// they open the database in --data-dir directly.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List and revoke the agents (clients) that joined a gateway.
    ///
    /// Like `boarding token`, these go through the running gateway's admin socket, or
    /// open the database when no gateway runs. Revoking a client also ends its live
    /// sessions.
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Join a gateway, and talk to it.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
}

/// Where a gateway keeps its database.
#[derive(Debug, Args)]
pub struct GatewayDir {
    /// The gateway's data directory (holds `gateway.redb`: identity key, tokens,
    /// keyrings). Created with mode 0700 if missing.
    #[arg(long, env = "BOARDING_GATEWAY_DIR", value_name = "DIR", default_value = "boarding-gateway")]
    pub data_dir: PathBuf,
}

/// Gateway commands.
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Serve agents over TCP and TLS 1.3; every message an agent sends is echoed back.
    ///
    /// The first run creates the gateway's Ed25519 identity in --data-dir and prints its
    /// pin; later runs reuse it (same pin). Stops gracefully on Ctrl-C or SIGTERM.
    /// Prints `pin: …` and `listening on ADDR` on stdout once ready.
    Serve {
        /// Address to listen on (use port 0 for any free port; the chosen address is
        /// printed).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
        listen: String,
        #[command(flatten)]
        dir: GatewayDir,
        #[command(flatten)]
        limits: ServeLimits,
        /// Keep everything in memory instead of `DIR/gateway.redb`: a fresh identity
        /// each run, and every token and keyring lost at exit. For benchmarks and
        /// experiments; --data-dir still holds the admin socket.
        #[arg(long)]
        memory: bool,
    },
    /// Print the gateway's pin (creating its identity on first use).
    Pin {
        #[command(flatten)]
        dir: GatewayDir,
    },
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
            ..boarding_smol::GatewayConfig::default()
        }
    }
}

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (this is the only time its secret is shown).
    ///
    /// The token alone goes to stdout (so `TOKEN=$(boarding token create)` works); its
    /// details and the matching `agent join` command go to stderr.
    Create {
        #[command(flatten)]
        dir: GatewayDir,
        /// How long the token stays valid (e.g. `30m`, `24h`, `7d`), or `never`.
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
    },
    /// List tokens: id, state, uses, expiry, labels, description (never the secret).
    List {
        #[command(flatten)]
        dir: GatewayDir,
    },
    /// Delete a token: agents can no longer join with it (agents that joined stay).
    Revoke {
        #[command(flatten)]
        dir: GatewayDir,
        /// The token's id (the six characters before the dot).
        #[arg(value_name = "TOKEN_ID")]
        id: TokenId,
    },
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// List the agents that joined: client id, token, labels, confirmed, join time.
    List {
        #[command(flatten)]
        dir: GatewayDir,
    },
    /// Delete an agent's keyring: it can no longer connect (it must join again with a
    /// new token; its id becomes free).
    Revoke {
        #[command(flatten)]
        dir: GatewayDir,
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
        /// The bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`). Prefer the environment
        /// variable to keep it out of the process list.
        #[arg(long, env = "BOARDING_TOKEN", value_name = "TOKEN", hide_env_values = true)]
        token: BootstrapToken,
        /// The gateway's pin, `sha256:<hex>` as `boarding gateway serve` printed it
        /// (repeatable: any one matching is enough).
        #[arg(long, value_name = "PIN", required = true)]
        pin: Vec<Pin>,
        /// This agent's client id: a DNS label (lowercase letters, digits, '-').
        #[arg(long, value_name = "CLIENT_ID")]
        id: ClientId,
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

fn parse_ttl(s: &str) -> Result<Ttl, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(Ttl::Never);
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30m, 24h, 7d, never)"))?;
    if d.is_zero() {
        return Err("a zero TTL would create an expired token; use `never` for no expiry".into());
    }
    Ok(Ttl::For(d))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err("the label key is empty".into());
    }
    Ok((k.to_owned(), v.to_owned()))
}
