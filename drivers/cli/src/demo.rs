//! `boarding demo`: the whole flow in one process on loopback, every step printed.

use std::time::Instant;

use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding_smol::admin::{ClientView, TokenView};
use boarding_smol::{Agent, GatewayConfig, GatewaySession, GatewayStream, MemoryKeyringStore, RedbKeyringStore, Store};

use crate::cli::{DemoArgs, Ttl};
use crate::error::{CliError, Result};
use crate::ops::{create_token, millis, open_gateway, resume_error};
use crate::output::{client_table, token_table};

/// An error as the command line shows it: the cause, then the hint.
fn with_hint(e: CliError) -> String {
    match e.hint() {
        Some(hint) => format!("{e}; {hint}"),
        None => e.to_string(),
    }
}

fn step(n: u32, title: &str) {
    println!();
    println!("── {n}. {title}");
}

/// The demo gateway's handler: greets the agent (gateway → agent), then echoes.
async fn greet_and_echo(mut session: GatewaySession<GatewayStream>) -> std::result::Result<(), boarding_smol::Error> {
    let peer = session.peer().clone();
    println!(
        "   [gateway] verified client {:?} (token {}, labels {:?}, {})",
        peer.client_id().as_str(),
        peer.token_id(),
        peer.labels(),
        if peer.resumed() { "resumed" } else { "joined" }
    );
    session.send(format!("welcome, {}", peer.client_id()).as_bytes()).await?;
    while let Some(message) = session.recv().await? {
        println!("   [gateway] received {:?}; echoing it", String::from_utf8_lossy(&message));
        session.send(&message).await?;
    }
    session.close().await
}

async fn exchange(session: &mut boarding_smol::AgentSession<boarding_smol::AgentStream>, message: &str) -> Result<()> {
    let greeting = session.recv().await?.unwrap_or_default();
    println!("   [agent]   gateway says {:?}", String::from_utf8_lossy(&greeting));
    let started = Instant::now();
    session.send(message.as_bytes()).await?;
    let reply = session.recv().await?.unwrap_or_default();
    println!(
        "   [agent]   sent {message:?}, got back {:?} (round trip {})",
        String::from_utf8_lossy(&reply),
        millis(started.elapsed())
    );
    Ok(())
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    let total = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("boarding-demo-")
        .tempdir()
        .map_err(|source| CliError::Io { context: "cannot create a temporary directory".into(), source })?;
    let gateway_dir = dir.path().join("gateway");
    let agent_dir = dir.path().join("agent");
    println!("Boarding demo: a gateway and an agent in one process, over TCP + TLS 1.3 on 127.0.0.1");
    println!("data directory: {}", dir.path().display());

    step(1, "gateway identity");
    let t = Instant::now();
    let (gateway, _) = open_gateway(&gateway_dir, GatewayConfig::default()).await?;
    println!(
        "   created an Ed25519 identity in {} ({})",
        gateway_dir.join("gateway.redb").display(),
        millis(t.elapsed())
    );
    println!("   pin: {}", gateway.pin());
    println!("   (agents pin this hash of the gateway's public key; it is also the TLS certificate's key)");

    step(2, "bootstrap token");
    let labels = [("role".to_owned(), "worker".to_owned())];
    let (token, record) =
        create_token(gateway.store(), Ttl::For(std::time::Duration::from_secs(600)), 1, &labels, "demo").await?;
    println!("   token: {token}   (one use, 10 minutes, label role=worker)");
    println!("   the gateway's token list never shows the secret:");
    for line in token_table(&[TokenView::from(&record)], boarding_smol::unix_now()).to_string().lines() {
        println!("   {line}");
    }

    step(3, "gateway listening");
    let listener = smol::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| CliError::Io { context: "cannot listen on 127.0.0.1".into(), source })?;
    let serving = gateway.serve(listener, greet_and_echo)?;
    let addr = serving.local_addr().to_string();
    println!("   listening on {addr}");

    step(4, "agent joins with the token and the pin");
    let agent = Agent::default();
    let keyrings = RedbKeyringStore::agent_in(&agent_dir)?;
    let id = ClientId::new("node-1").map_err(|e| CliError::Usage(e.to_string()))?;
    let t = Instant::now();
    let mut session = agent.join(&addr, token.clone(), &[gateway.pin()], id.clone(), &keyrings).await?;
    println!(
        "   [agent]   joined in {} (TLS 1.3 + Boarding join; MAC suite {:?}); keyring stored in {} before confirming",
        millis(t.elapsed()),
        session.peer().suite,
        keyrings.path().display()
    );
    exchange(&mut session, "hello from node-1").await?;
    session.close().await?;

    step(5, "agent reconnects (resume with the stored keyring; no token needed)");
    for round in 1..=2 {
        let t = Instant::now();
        let mut session = agent.connect(&addr, &keyrings).await?;
        println!("   [agent]   resumed in {} (round {round})", millis(t.elapsed()));
        exchange(&mut session, &format!("resumed message {round}")).await?;
        session.close().await?;
    }
    let clients: Vec<ClientView> = gateway.store().clients().await?.iter().map(ClientView::from).collect();
    for line in client_table(&clients).to_string().lines() {
        println!("   {line}");
    }

    step(6, "mistakes give clear errors");
    let other = ClientId::new("node-2").map_err(|e| CliError::Usage(e.to_string()))?;
    let spare = MemoryKeyringStore::new();
    match agent.join(&addr, token.clone(), &[gateway.pin()], other.clone(), &spare).await {
        Ok(_) => println!("   unexpected: a one-use token was accepted twice"),
        Err(e) => println!("   second join with the spent token:\n     error: {}", with_hint(e.into())),
    }
    let wrong: Pin = boarding::identity::ServerIdentity::from_seed([7; 32]).pin();
    let (token2, _) = create_token(gateway.store(), Ttl::For(std::time::Duration::from_secs(600)), 1, &[], "").await?;
    match agent.join(&addr, token2, &[wrong], other, &spare).await {
        Ok(_) => println!("   unexpected: a wrong pin was accepted"),
        Err(e) => println!("   join with a wrong pin:\n     error: {}", with_hint(e.into())),
    }
    gateway.store().revoke_client(id.clone()).await?;
    match agent.connect(&addr, &keyrings).await {
        Ok(_) => println!("   unexpected: a revoked client resumed"),
        Err(e) => {
            println!("   resume after `boarding clients revoke node-1`:\n     error: {}", with_hint(resume_error(e)))
        }
    }

    step(7, "graceful shutdown");
    let stats = gateway.stats();
    let t = Instant::now();
    serving.shutdown().await;
    println!("   gateway stopped in {}", millis(t.elapsed()));
    println!(
        "   connections: {} accepted, {} sessions, {} rejected handshakes",
        stats.accepted, stats.established, stats.failed
    );
    println!();
    println!("demo finished in {}", millis(total.elapsed()));
    if args.keep {
        let kept = dir.keep();
        println!("data kept in {}", kept.display());
    }
    Ok(())
}
