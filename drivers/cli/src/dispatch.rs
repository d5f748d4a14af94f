//! The dispatcher: one arm per command, each a call into `ops`, `demo` or `docs`.

use crate::cli::{AgentCommand, ClientsCommand, Command, GatewayCommand, TokenCommand};
use crate::error::Result;
use crate::ops::{
    CreateOptions, clients_list, clients_revoke, default_client_id, gateway_init, gateway_pin, serve, serve_in_memory,
    token_create, token_delete, token_list, token_prune,
};
use crate::{demo, docs, ops, output, secret};

/// Runs one command.
pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Gateway { command } => match command {
            GatewayCommand::Serve { listen, dir, limits, memory, metrics_listen } => {
                let config = limits.config();
                let observer = match metrics_listen {
                    Some(addr) => Some(crate::observe::Observer::start(addr).await?),
                    None => None,
                };
                if memory {
                    serve_in_memory(&listen, &dir.data_dir, config, observer).await
                } else {
                    serve(&listen, &dir.data_dir, config, observer).await
                }
            }
            GatewayCommand::Init { dir } => gateway_init(&dir.data_dir).await,
            GatewayCommand::Pin { dir } => gateway_pin(&dir.data_dir).await,
        },
        Command::Token { command } => match command {
            TokenCommand::Create { dir, token, ttl, uses, label, description, print_join_command, gateway, output } => {
                let token = token.as_ref().map(|t| secret::token_from_arg(t, "TOKEN")).transpose()?;
                let options =
                    CreateOptions { token, ttl, uses, labels: label, description, print_join_command, gateway, output };
                token_create(&dir.data_dir, options).await
            }
            TokenCommand::Generate => {
                output::out(boarding::token::BootstrapToken::generate(&mut boarding_smol::os_rng()))
            }
            TokenCommand::List { dir, all, output } => token_list(&dir.data_dir, all, output).await,
            TokenCommand::Delete { dir, tokens } => token_delete(&dir.data_dir, &tokens).await,
            TokenCommand::Prune { dir } => token_prune(&dir.data_dir).await,
        },
        Command::Clients { command } => match command {
            ClientsCommand::List { dir, output } => clients_list(&dir.data_dir, output).await,
            ClientsCommand::Revoke { dir, id } => clients_revoke(&dir.data_dir, id).await,
        },
        Command::Agent { command } => match command {
            AgentCommand::Join { gateway, token, token_file, pin, id, dir } => {
                // Checked before the token is read, so a bad --id never consumes stdin.
                let id = match id {
                    Some(id) => id,
                    None => default_client_id()?,
                };
                let token = secret::agent_token(token.as_ref(), token_file.as_ref())?;
                ops::agent_join(&gateway, token, &pin, id, &dir.data_dir).await
            }
            AgentCommand::Send { gateway, dir, message } => ops::agent_send(&gateway, &dir.data_dir, &message).await,
        },
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
    }
}
