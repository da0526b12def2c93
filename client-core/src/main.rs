//! `gatehouse`: the command-line VPN client.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse_client::ProtocolKind;
use gatehouse_client::profile_settings::SettingsChange;
use gatehouse_client::routing::Routing;
use gatehouse_client::trusted::AutoConnect;
use ipnet::IpNet;

/// Gatehouse VPN client.
///
/// State (profiles) lives in GATEHOUSE_HOME (default: the per-user config folder); the
/// client service listens on GATEHOUSE_SOCKET.
#[derive(Parser)]
#[command(name = "gatehouse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a Gatehouse profile or a stock .ovpn file (as install scripts write them).
    Import {
        /// The profile file.
        file: PathBuf,
        /// Name to keep it under (default: the profile's name, or the .ovpn file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the imported profiles.
    Profiles,
    /// Delete a profile and its private key.
    Remove {
        /// The profile.
        name: String,
    },
    /// Show or change one profile's settings (routing, auto-connect).
    Profile {
        #[command(subcommand)]
        action: ProfileAction,
    },
    /// The networks auto-connect trusts (identified by their gateway's address and MAC).
    Network {
        #[command(subcommand)]
        action: NetworkAction,
    },
    /// Connect with a profile.
    Connect {
        /// The profile.
        name: String,
        /// Use only this protocol (default: the profile's, in order).
        #[arg(long, value_parser = parse_protocol)]
        protocol: Option<ProtocolKind>,
        /// Run the connection in this process instead of the client service.
        #[arg(long)]
        foreground: bool,
        /// Let nothing out but the tunnel (Linux, nftables) until `gatehouse disconnect`,
        /// also while reconnecting and after the client crashed.
        #[arg(long)]
        kill_switch: bool,
        /// With --kill-switch: still reach the local LAN (private IPv4 ranges).
        #[arg(long, requires = "kill_switch")]
        allow_lan: bool,
    },
    /// Show the connection state.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disconnect.
    Disconnect,
    /// Run the privileged client service (socket: GATEHOUSE_SOCKET).
    Service,
}

#[derive(Subcommand)]
enum ProfileAction {
    /// Show a profile's settings.
    Show {
        /// The profile.
        name: String,
    },
    /// Change a profile's routing and auto-connect (where the gateway allows it).
    Set {
        /// The profile.
        name: String,
        /// gateway (what the gateway pushes), full (everything into the tunnel) or split
        /// (only the gateway's prefixes and --route ones).
        #[arg(long)]
        routing: Option<Routing>,
        /// Also route this prefix into the tunnel (IPv4 or IPv6; repeat for more).
        #[arg(long = "route", value_name = "PREFIX")]
        routes: Vec<IpNet>,
        /// Remove the extra routes first.
        #[arg(long)]
        clear_routes: bool,
        /// off, or untrusted: the client service connects by itself on networks not
        /// trusted with `gatehouse network trust`.
        #[arg(long)]
        auto_connect: Option<AutoConnect>,
    },
}

#[derive(Subcommand)]
enum NetworkAction {
    /// Trust the network this host is on: no auto-connect here.
    Trust {
        /// Only for this profile (default: every profile that auto-connects).
        #[arg(long)]
        profile: Option<String>,
    },
    /// Stop trusting the network this host is on.
    Untrust {
        /// Only for this profile (default: every profile that auto-connects).
        #[arg(long)]
        profile: Option<String>,
    },
    /// Show this network and each profile's trusted networks.
    List,
}

fn parse_protocol(s: &str) -> Result<ProtocolKind, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Service
            | Command::Connect {
                foreground: true,
                ..
            }
    ) {
        gatehouse_netio::logging::init("GATEHOUSE_LOG");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: library errors already quote
/// their source in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message.replace('\n', " ")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Import { file, name } => cli::profiles::import(&file, name.as_deref()),
        Command::Profiles => cli::profiles::list(),
        Command::Remove { name } => cli::profiles::remove(&name),
        Command::Profile {
            action: ProfileAction::Show { name },
        } => cli::profiles::show(&name),
        Command::Profile {
            action:
                ProfileAction::Set {
                    name,
                    routing,
                    routes,
                    clear_routes,
                    auto_connect,
                },
        } => cli::profiles::set(
            &name,
            &SettingsChange {
                routing,
                clear_routes,
                add_routes: routes,
                auto_connect,
            },
        ),
        Command::Network { action } => match action {
            NetworkAction::Trust { profile } => cli::network::trust(profile.as_deref()),
            NetworkAction::Untrust { profile } => cli::network::untrust(profile.as_deref()),
            NetworkAction::List => cli::network::list(),
        },
        Command::Connect {
            name,
            protocol,
            foreground,
            kill_switch,
            allow_lan,
        } => cli::connection::connect(&name, protocol, foreground, kill_switch, allow_lan),
        Command::Status { json } => cli::connection::status(json),
        Command::Disconnect => cli::connection::disconnect(),
        Command::Service => cli::connection::service(),
    }
}
