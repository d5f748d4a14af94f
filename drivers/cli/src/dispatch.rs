//! The dispatcher: one arm per command, each a call into `ops` or `demo`.

use boarding_smol::{Agent, KeyringStore, RedbKeyringStore};

use crate::cli::{AgentCommand, ClientsCommand, Command, GatewayCommand, TokenCommand};
use crate::demo;
use crate::error::{CliError, Result};
use crate::ops::{
    Create, GatewayAccess, clients_list, existing_agent_store, millis, serve, serve_in_memory, token_create, token_list,
};

/// Runs one command.
pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Gateway { command } => match command {
            GatewayCommand::Serve { listen, dir, limits, memory } => {
                let config = limits.config();
                if memory {
                    serve_in_memory(&listen, &dir.data_dir, config).await
                } else {
                    serve(&listen, &dir.data_dir, config).await
                }
            }
            GatewayCommand::Pin { dir } => {
                println!("{}", GatewayAccess::open(&dir.data_dir, Create::Yes).await?.pin().await?);
                Ok(())
            }
        },
        Command::Token { command } => match command {
            TokenCommand::Create { dir, ttl, uses, label, description } => {
                token_create(&dir.data_dir, ttl, uses, &label, &description).await
            }
            TokenCommand::List { dir } => token_list(&dir.data_dir).await,
            TokenCommand::Revoke { dir, id } => {
                let mut access = GatewayAccess::open(&dir.data_dir, Create::No).await?;
                if access.revoke_token(id).await? {
                    println!("token {id} revoked: no agent can join with it any more");
                    Ok(())
                } else {
                    Err(CliError::Usage(format!("no token {id} in {}; see `boarding token list`", access.describe())))
                }
            }
        },
        Command::Clients { command } => match command {
            ClientsCommand::List { dir } => clients_list(&dir.data_dir).await,
            ClientsCommand::Revoke { dir, id } => {
                let mut access = GatewayAccess::open(&dir.data_dir, Create::No).await?;
                match access.revoke_client(id.clone()).await? {
                    (true, closed) => {
                        println!(
                            "client {id} revoked: it can no longer connect ({closed} live session(s) closed); its id \
                             is free to join again"
                        );
                        Ok(())
                    }
                    (false, _) => Err(CliError::Usage(format!(
                        "no client {id} in {}; see `boarding clients list`",
                        access.describe()
                    ))),
                }
            }
        },
        Command::Agent { command } => match command {
            AgentCommand::Join { gateway, token, pin, id, dir } => {
                let store = RedbKeyringStore::agent_in(&dir.data_dir)?;
                if let Some(saved) = store.load_keyring().await? {
                    return Err(CliError::Usage(format!(
                        "{} already holds a keyring: this agent joined gateway {} as {}; use `boarding agent send`, \
                         or a fresh --data-dir to join again",
                        dir.data_dir.display(),
                        saved.server_pin,
                        saved.client_id
                    )));
                }
                let started = std::time::Instant::now();
                let session = Agent::default().join(&gateway, token, &pin, id.clone(), &store).await?;
                let joined = session.peer().clone();
                session.close().await?;
                println!(
                    "joined gateway {} as {id} in {} (MAC suite {:?}); keyring stored in {}",
                    joined.server_pin,
                    millis(started.elapsed()),
                    joined.suite,
                    store.path().display()
                );
                Ok(())
            }
            AgentCommand::Send { gateway, dir, message } => {
                let store = existing_agent_store(&dir.data_dir)?;
                let mut session = Agent::default().connect(&gateway, &store).await?;
                session.send(message.as_bytes()).await?;
                let reply = session
                    .recv()
                    .await?
                    .ok_or_else(|| CliError::Usage("the gateway closed the session without replying".into()))?;
                session.close().await?;
                println!("{}", String::from_utf8_lossy(&reply));
                Ok(())
            }
        },
    }
}
