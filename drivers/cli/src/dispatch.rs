//! The dispatcher: one arm per command, each a call into `ops`, `demo` or `docs`.

use std::path::PathBuf;

use crate::cli::{
    AgentCommand, ClientsCommand, Command, DEFAULT_GATEWAY_DIR, GatewayCommand, ServeStore, TokenCommand,
};
use crate::error::Result;
use crate::ops::{
    CreateOptions, ServeOn, clients_list, clients_revoke, clients_rotate, default_client_id, gateway_init, gateway_pin,
    serve, token_create, token_delete, token_list, token_prune,
};
use crate::{demo, docs, ops, output, secret};

/// Runs one command.
pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Gateway { command } => match command {
            GatewayCommand::Serve {
                listen,
                data_dir,
                store,
                identity,
                limits,
                memory,
                metrics_listen,
                attest,
                certificates,
                services,
                etcd,
            } => {
                let config = limits.config();
                let validator = ops::validator(&attest)?;
                let certificates = ops::certificate_policy(&certificates)?;
                let services = ops::services(&services)?;
                let kind = match (store, memory) {
                    (Some(kind), _) => kind,
                    (None, true) => ServeStore::Memory,
                    (None, false) if !etcd.etcd_endpoints.is_empty() => ServeStore::Etcd,
                    (None, false) => ServeStore::Redb,
                };
                let dir = data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_GATEWAY_DIR));
                let on = match kind {
                    ServeStore::Redb => ServeOn::Redb(&dir),
                    ServeStore::Memory => ServeOn::Memory(&dir),
                    ServeStore::Etcd => {
                        if let Some(dir) = &data_dir {
                            output::note(format_args!(
                                "note: --data-dir {} is not used with --store etcd: a replica keeps nothing on local \
                                 disk and opens no admin socket",
                                dir.display()
                            ));
                        }
                        ServeOn::Etcd(&etcd)
                    }
                };
                let observer = match metrics_listen {
                    Some(addr) => Some(crate::observe::Observer::start(addr).await?),
                    None => None,
                };
                let admission = ops::Admission { validator, certificates };
                serve(&listen, on, identity.as_deref(), config, observer, admission, services).await
            }
            GatewayCommand::Init { data } => gateway_init(&data).await,
            GatewayCommand::Pin { data } => gateway_pin(&data).await,
            GatewayCommand::Ca { data } => ops::gateway_ca(&data).await,
        },
        Command::Token { command } => match command {
            TokenCommand::Create {
                data,
                token,
                ttl,
                uses,
                label,
                description,
                print_join_command,
                gateway,
                output,
            } => {
                let token = token.as_ref().map(|t| secret::token_from_arg(t, "TOKEN")).transpose()?;
                let options =
                    CreateOptions { token, ttl, uses, labels: label, description, print_join_command, gateway, output };
                token_create(&data, options).await
            }
            TokenCommand::Generate => {
                output::out(boarding::token::BootstrapToken::generate(&mut boarding_smol::os_rng()))
            }
            TokenCommand::List { data, all, output } => token_list(&data, all, output).await,
            TokenCommand::Delete { data, tokens } => token_delete(&data, &tokens).await,
            TokenCommand::Prune { data } => token_prune(&data).await,
        },
        Command::Clients { command } => match command {
            ClientsCommand::List { data, output } => clients_list(&data, output).await,
            ClientsCommand::Revoke { data, id } => clients_revoke(&data, id).await,
            ClientsCommand::Rotate { data, id } => clients_rotate(&data, id).await,
        },
        Command::Agent { command } => match command {
            AgentCommand::Join { gateway, token, token_file, pin, id, attest_cert, attest_key, certificate, dir } => {
                // Checked before the token is read, so a bad --id never consumes stdin.
                let id = match id {
                    Some(id) => id,
                    None => default_client_id()?,
                };
                let attester = ops::attester(attest_cert.as_deref(), attest_key.as_deref())?;
                let token = secret::agent_token(token.as_ref(), token_file.as_ref())?;
                ops::agent_join(&gateway, token, &pin, id, &dir.data_dir, attester, certificate).await
            }
            AgentCommand::Cert { key, dir } => ops::agent_cert(&dir.data_dir, key).await,
            AgentCommand::Send { gateway, dir, message } => ops::agent_send(&gateway, &dir.data_dir, &message).await,
            AgentCommand::Forward { gateway, listen, service, max_streams, dir } => {
                ops::agent_forward(&gateway, &listen, &service, max_streams, &dir.data_dir).await
            }
            AgentCommand::Connect { gateway, service, dir } => {
                ops::agent_connect(&gateway, &service, &dir.data_dir).await
            }
        },
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
    }
}
