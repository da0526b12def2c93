//! `gatehouse`: the command-line VPN client.
use clap::Parser;

/// Gatehouse VPN client.
#[derive(Parser)]
#[command(name = "gatehouse", version, about)]
struct Cli {
    /// Command and arguments (import, profiles, remove, connect, status, disconnect, service).
    #[arg(trailing_var_arg = true)]
    args: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "`gatehouse {}` is not implemented yet; for now connect with the stock OpenVPN client and a \
         profile from `gatehouse-certs export --format ovpn`",
        cli.args.join(" ")
    )
}
