//! Runs one command.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use tacit_client::Client;

use crate::args::{
    AccountCommand, BenchCommand, Cli, Command, DeviceCommand, GroupCommand, ServeArgs,
};
use crate::output::{self, print_events, to_json, ConversationJson};
use crate::unlock::{create_client, open_client};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Serve(args) => serve(args).await.map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Bench(BenchCommand::Relay(mut args)) => {
            args.json = g.json;
            tacit_bench::relay::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Connections(mut args)) => {
            args.json = g.json;
            tacit_bench::connections::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::ConnectionsWorker(args)) => {
            tacit_bench::connections::run_worker(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Account(AccountCommand::Create {
            handle,
            server,
            key_file,
        }) => {
            let mut client = create_client(g, key_file)?;
            client.create_account(&handle, &server).await?;
            let reg = client.device().registration()?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"handle": reg.handle, "device_id": format!("{:016x}", reg.device_id), "identity_key": reg.identity_key.to_hex()})
                );
            } else {
                println!(
                    "Created {} (device {:016x}) on {server}",
                    reg.handle, reg.device_id
                );
                println!("Identity key: {}", reg.identity_key.to_hex());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Device(DeviceCommand::Link { timeout_secs }) => {
            let mut client = open_client(g)?;
            let json = g.json;
            let name = client
                .link_device(
                    |code| {
                        if json {
                            println!("{}", serde_json::json!({"code": code}));
                        } else {
                            println!("On the new device, run:\n\n    tacit device join {code} --server <this server>\n\nWaiting for it...");
                        }
                    },
                    Duration::from_secs(timeout_secs),
                )
                .await?;
            if json {
                println!("{}", serde_json::json!({"linked": name}));
            } else {
                println!("Linked {name}.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Device(DeviceCommand::Join {
            code,
            server,
            key_file,
            timeout_secs,
        }) => {
            let mut client = create_client(g, key_file)?;
            let name = client
                .join_device(&code, &server, Duration::from_secs(timeout_secs))
                .await?;
            if g.json {
                println!("{}", serde_json::json!({"device": name}));
            } else {
                println!("This device is now {name}.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Device(DeviceCommand::Remove { device }) => {
            let mut client = open_client(g)?;
            let handle = client.device().handle()?.to_owned();
            let device_id = parse_device(&device, &handle)?;
            let removed = client.remove_device(device_id).await?;
            if g.json {
                println!("{}", to_json(&removed));
            } else {
                println!(
                    "Removed {}: it can no longer connect, and nothing more is sent to it.",
                    removed.name
                );
                if !removed.removed_from.is_empty() {
                    println!(
                        "Removed it from {} conversation(s): {}.",
                        removed.removed_from.len(),
                        removed.removed_from.join(", ")
                    );
                }
                for (name, why) in &removed.failed {
                    println!(
                        "Could not remove it from {name}: {why}. Run `tacit device remove {device}` again to retry."
                    );
                }
            }
            Ok(if removed.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Devices => {
            let mut client = open_client(g)?;
            let devices = client.devices().await?;
            if g.json {
                println!("{}", to_json(&devices));
            } else {
                for d in devices {
                    println!(
                        "{}{}",
                        d.name,
                        if d.this_device { "  (this device)" } else { "" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Send { target, text } => {
            let mut client = open_client(g)?;
            let (c, _) = client.send(&target, &text).await?;
            print_events(&client.take_events(), g.json);
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"sent": true, "conversation": c.short_id(), "name": c.name})
                );
            } else {
                println!("sent to {} ({})", c.name, c.short_id());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Group(cmd) => group(g, cmd).await,
        Command::Groups => {
            let mut client = open_client(g)?;
            for c in client.device().conversations()? {
                let members: Vec<String> = if c.active {
                    let mut m: Vec<String> = client
                        .device()
                        .members(&c.group_id)?
                        .into_iter()
                        .map(|(h, _)| h)
                        .collect();
                    m.dedup();
                    m
                } else {
                    vec![]
                };
                if g.json {
                    println!(
                        "{}",
                        to_json(&ConversationJson {
                            id: c.short_id(),
                            name: &c.name,
                            direct_peer: c.direct_peer.as_deref(),
                            active: c.active,
                            members
                        })
                    );
                } else {
                    let kind = if c.direct_peer.is_some() {
                        "1:1"
                    } else {
                        "group"
                    };
                    let state = if c.active {
                        String::new()
                    } else {
                        " (left)".into()
                    };
                    println!(
                        "{}  {:5}  {}{}  [{}]",
                        c.short_id(),
                        kind,
                        c.name,
                        state,
                        members.join(", ")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync => {
            let mut client = open_client(g)?;
            let events = client.sync().await?;
            print_events(&events, g.json);
            if !g.json && events.is_empty() {
                println!("nothing new");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Listen => {
            let mut client = open_client(g)?;
            let json = g.json;
            if !json {
                eprintln!("listening; Ctrl-C to stop");
            }
            client
                .listen(|e| print_events(&[e], json), async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::History { target } => {
            let mut client = open_client(g)?;
            let (c, entries) = client.history(&target)?;
            output::print_history(&c, &entries, g.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::SafetyNumber { handle } => {
            let mut client = open_client(g)?;
            let sn = client.safety_number(&handle).await?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"handle": handle, "digits": sn.digits, "qr_payload": sn.qr_payload})
                );
            } else {
                println!("Safety number with {handle} (compare it in person):\n\n    {}\n\nQR payload: {}", sn.digits, sn.qr_payload);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn find_group(client: &mut Client, name: &str) -> anyhow::Result<Vec<u8>> {
    let c = client
        .device()
        .find_conversation(name)?
        .with_context(|| format!("no conversation named {name:?}; `tacit groups` lists them"))?;
    if !c.active {
        bail!("you are no longer a member of {}", c.name);
    }
    Ok(c.group_id)
}

async fn group(g: &crate::args::Global, cmd: GroupCommand) -> anyhow::Result<ExitCode> {
    let mut client = open_client(g)?;
    client.sync().await?;
    let done = match cmd {
        GroupCommand::Create { name, handles } => {
            let c = client.create_group(&name, &handles).await?;
            format!(
                "created {} ({}) with {}",
                c.name,
                c.short_id(),
                handles.join(", ")
            )
        }
        GroupCommand::Add { group, handles } => {
            let id = find_group(&mut client, &group).await?;
            client.add_members(&id, &handles).await?;
            format!("added {} to {group}", handles.join(", "))
        }
        GroupCommand::Remove { group, handles } => {
            let id = find_group(&mut client, &group).await?;
            client.remove_members(&id, &handles).await?;
            format!("removed {} from {group}", handles.join(", "))
        }
        GroupCommand::Leave { group } => {
            let id = find_group(&mut client, &group).await?;
            client.leave(&id).await?;
            format!("left {group}")
        }
        GroupCommand::UpdateKeys { group } => {
            let id = find_group(&mut client, &group).await?;
            client.update_keys(&id).await?;
            format!("updated this device's keys in {group}")
        }
    };
    print_events(&client.take_events(), g.json);
    if g.json {
        println!("{}", serde_json::json!({"ok": true, "result": done}));
    } else {
        println!("{done}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("TACIT_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let mut config = tacit_server::ServerConfig::new(&args.data, args.listen);
    config.limits.unauthenticated_per_sec_per_address = args.unauthenticated_per_sec_per_address;
    config.limits.unauthenticated_burst_per_address = args.unauthenticated_burst_per_address;
    config.limits.max_unauthenticated_connections = args.max_unauthenticated_connections;
    if let Some(url) = args.database {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!(
                "--database must be a postgres:// URL; leave it out to use SQLite in --data"
            );
        }
        let ca_certs_pem = match &args.database_ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read --database-ca-cert {}: {e}", path.display())
            })?),
            None => None,
        };
        config.database = tacit_server::Database::Postgres {
            url,
            options: tacit_server::store::PgOptions {
                max_connections: args.database_max_connections.max(1),
                ca_certs_pem,
                ..Default::default()
            },
        };
    }
    if let Some(url) = args.nats {
        config.nats = Some(tacit_server::NatsConfig {
            url,
            subject_prefix: args.nats_subject_prefix,
        });
    }
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if let (Some(cert_path), Some(key_path)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(tacit_server::TlsConfig {
            cert_path,
            key_path,
        });
    }
    tacit_server::run_until_signal(config).await?;
    Ok(())
}

/// A device of `handle` as the user typed it: `handle/0123456789abcdef` (as `tacit devices`
/// prints it) or just the hex device id.
fn parse_device(text: &str, handle: &str) -> anyhow::Result<u64> {
    let hex = match text.split_once('/') {
        Some((h, id)) if h == handle => id,
        Some((h, _)) => anyhow::bail!(
            "{text} is a device of {h}; you can only remove devices of your own account ({handle})"
        ),
        None => text,
    };
    u64::from_str_radix(hex, 16).map_err(|_| {
        anyhow::anyhow!(
            "{text} is not a device; give it as `tacit devices` shows it, e.g. {handle}/0123456789abcdef"
        )
    })
}
