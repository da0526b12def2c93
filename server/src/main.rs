//! `gatehoused`: the Gatehouse VPN gateway daemon.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gatehouse_server::config::GatewayConfig;
use gatehouse_server::datadir::{self, CONFIG_FILE, InitOptions};
use gatehouse_server::gateway::Gateway;
use ipnet::Ipv4Net;

/// Gatehouse VPN gateway.
#[derive(Parser)]
#[command(name = "gatehoused", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create DIR/gateway.toml and DIR/pki (CA and gateway certificate for --public-addr).
    Init {
        /// Data directory to create.
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        opts: InitArgs,
    },
    /// Run the gateway. On an empty --data-dir the first run bootstraps it like `init`.
    Run {
        /// Data directory (holds gateway.toml and pki/).
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        opts: InitArgs,
    },
    /// Show the running gateway's site-to-site connections and client count.
    Status {
        /// Data directory of the running gateway.
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Configuration file of the running gateway.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Talk to the running gateway's admin API (sessions, connections, disconnect, revoke,
    /// reload, capture). Root and the group `gatehouse-admin` may use its socket.
    Ctl {
        /// The admin socket (default: the one `--data-dir`/`--config` names, else
        /// $GATEHOUSE_ADMIN_SOCKET, else /run/gatehoused/admin.sock, the packaged gateway's).
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// Data directory of the running gateway.
        #[arg(long, global = true, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Configuration file of the running gateway.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: gatehouse_server::ctl::CtlCommand,
    },
    /// Print the gateway's WireGuard public key (for the peers' configuration), creating the
    /// key (DIR/wireguard.key, 0600) when it does not exist yet.
    WireguardPubkey {
        /// Data directory (holds gateway.toml).
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Configuration file (the key lives next to it).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the FRR (bgpd) configuration that announces `address_space` and `client_pool`
    /// and peers with every connection's `bgp_peer` over its own interface (docs/bgp.md).
    FrrConfig {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The gateway's AS number.
        #[arg(long)]
        asn: u32,
        /// BGP router id (default: `public_addr` if it is an IPv4 address).
        #[arg(long)]
        router_id: Option<std::net::Ipv4Addr>,
        /// Neighbor keepalive and hold time in seconds.
        #[arg(long, num_args = 2, value_names = ["KEEPALIVE", "HOLD"])]
        timers: Option<Vec<u16>>,
    },
    /// Validate a configuration and the certificates it points at, then exit.
    Check {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
struct InitArgs {
    /// DNS name or IP address clients dial (the gateway certificate's SAN). Default: hostname.
    #[arg(long)]
    public_addr: Option<String>,
    /// Network behind the gateway, pushed to clients as a route (repeatable).
    #[arg(long = "address-space")]
    address_space: Vec<Ipv4Net>,
    /// Pool of client addresses (default 172.16.201.0/24).
    #[arg(long)]
    client_pool: Option<Ipv4Net>,
    /// DNS server pushed to clients (repeatable).
    #[arg(long)]
    dns: Vec<IpAddr>,
    /// Another DNS name or IP address clients dial, put in the gateway certificate beside
    /// --public-addr (repeatable), e.g. the gateway's IPv6 address: Gatehouse's client checks
    /// that the certificate names the address it dials.
    #[arg(long)]
    san: Vec<String>,
}

impl InitArgs {
    fn to_options(&self) -> InitOptions {
        InitOptions {
            public_addr: self
                .public_addr
                .clone()
                .unwrap_or_else(datadir::default_public_addr),
            address_space: self.address_space.clone(),
            client_pool: self.client_pool,
            dns: self.dns.clone(),
            extra_sans: self.san.clone(),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    gatehouse_netio::logging::init("GATEHOUSE_LOG");
    if let Err(e) = real_main(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { data_dir, opts } => {
            let path = datadir::init(&data_dir, &opts.to_options())?;
            println!("wrote {}", path.display());
            println!(
                "manage client certificates with: gatehouse-certs --pki {} issue-client NAME",
                data_dir.join("pki").display()
            );
            println!(
                "start the gateway with: gatehoused run --data-dir {}",
                data_dir.display()
            );
            Ok(())
        }
        Command::Status {
            data_dir,
            config,
            json,
        } => {
            let config = match (data_dir, config) {
                (Some(d), _) => d.join(CONFIG_FILE),
                (None, Some(c)) => c,
                (None, None) => {
                    bail!("give --data-dir DIR or --config FILE of the running gateway")
                }
            };
            let socket = gatehouse_server::ctl::socket_of_config(&config);
            let s = gatehouse_server::ctl::status(&socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", gatehouse_server::status::render(&s));
            }
            Ok(())
        }
        Command::Ctl {
            socket,
            data_dir,
            config,
            json,
            command,
        } => {
            let socket = match (socket, data_dir, config) {
                (Some(s), _, _) => s,
                (None, Some(d), _) => gatehouse_server::ctl::socket_of_config(&d.join(CONFIG_FILE)),
                (None, None, Some(c)) => gatehouse_server::ctl::socket_of_config(&c),
                (None, None, None) => gatehouse_server::admin::default_socket(),
            };
            gatehouse_server::ctl::run(&socket, json, command)
        }
        Command::WireguardPubkey { data_dir, config } => {
            let dir = match (data_dir, config) {
                (Some(d), _) => d,
                (None, Some(c)) => config_dir(&c),
                (None, None) => bail!("give --data-dir DIR or --config FILE"),
            };
            let key = gatehouse_server::gateway::wireguard::gateway_key(&dir)?;
            println!("{}", key.public_key());
            Ok(())
        }
        Command::FrrConfig {
            config,
            asn,
            router_id,
            timers,
        } => {
            let cfg = GatewayConfig::load(&config)?;
            let dir = config_dir(&config);
            let conns = cfg
                .connections(&dir)
                .with_context(|| format!("invalid config {}", config.display()))?;
            let router_id = match router_id.or_else(|| cfg.public_addr.trim().parse().ok()) {
                Some(id) => id,
                None => bail!(
                    "`public_addr` = {:?} is not an IPv4 address: give --router-id A.B.C.D",
                    cfg.public_addr
                ),
            };
            let timers = match timers.as_deref() {
                Some([k, h]) => (*k, *h),
                _ => gatehouse_server::frr::DEFAULT_TIMERS,
            };
            print!(
                "{}",
                gatehouse_server::frr::render(&cfg, &conns, asn, router_id, timers)?
            );
            Ok(())
        }
        Command::Check { config } => {
            let cfg = GatewayConfig::load(&config)?;
            let dir = config_dir(&config);
            let pki = gatehouse_server::tls::PkiPaths::new(&cfg.pki_path(&dir), &cfg.server_cert);
            gatehouse_server::tls::openvpn_server_config(&pki, &cfg)?;
            // Wrapper keys (tls-crypt-v2 server key, tls-auth/tls-crypt static keys).
            let wrap = gatehouse_server::gateway::wrap::load(&cfg, &dir, false)?;
            println!("openvpn control-channel wrapper: {}", wrap.name());
            // PSK files are read here too (unreadable, empty, or readable by others).
            let connections = cfg
                .connections(&dir)
                .with_context(|| format!("invalid config {}", config.display()))?;
            for c in &connections {
                println!("{}", c.summary());
            }
            let wg = gatehouse_server::gateway::wireguard::build(&cfg, &dir, &cfg.pki_path(&dir))
                .with_context(|| format!("invalid config {}", config.display()))?;
            for c in cfg.wireguard_connections()? {
                println!("{}", c.summary());
            }
            if let Some(wg) = wg {
                println!(
                    "wireguard: public key {}, {} peer(s), {}",
                    wg.private_key.public_key(),
                    wg.peers.len(),
                    gatehouse_server::gateway::wireguard::listen_addr(&cfg)
                );
            }
            if cfg.ha.enabled {
                let h = &cfg.ha;
                let what = if h.active_active() {
                    format!("active-active, pool blocks /{}", h.pool_block)
                } else {
                    format!(
                        "active-standby, role {}, copies every {}; site connections start on the active node only",
                        h.role, h.interval
                    )
                };
                println!(
                    "ha: {what}, node {}, cluster {}, etcd {}",
                    h.node_name(),
                    h.cluster,
                    h.etcd.join(" ")
                );
            }
            println!("{}: OK", config.display());
            Ok(())
        }
        Command::Run {
            data_dir,
            config,
            opts,
        } => {
            let config = match (data_dir, config) {
                (_, Some(c)) => c,
                (Some(dir), None) => {
                    let path = dir.join(CONFIG_FILE);
                    if !path.exists() {
                        if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
                            bail!(
                                "{} has no {CONFIG_FILE} but is not empty; run `gatehoused init --data-dir {}` or point --data-dir at an empty directory",
                                dir.display(),
                                dir.display()
                            );
                        }
                        let o = opts.to_options();
                        tracing::info!(data_dir = %dir.display(), public_addr = %o.public_addr, "first run: bootstrapping configuration, CA and gateway certificate");
                        datadir::init(&dir, &o)?;
                        eprint!("{}", first_run_guide(&dir, &o.public_addr));
                    }
                    path
                }
                (None, None) => {
                    bail!("give --data-dir DIR (bootstraps on first run) or --config FILE")
                }
            };
            let cfg = GatewayConfig::load(&config)?;
            // One thread drives the sockets, TUN and the core: readiness events reach the loop
            // without a wake-up from another thread (a multi-threaded runtime parks the loop's
            // thread and wakes it from its I/O worker for every event: two context switches
            // per wake-up, ~10% of a core at 500 Mbit/s by perf).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async move {
                let gw = Gateway::bind(cfg, config).await?;
                gw.run().await
            })
        }
    }
}

/// What a newcomer does after the first run bootstrapped `dir`: where the files are, how to
/// issue a client certificate and hand it over. Printed once, before the gateway starts.
fn first_run_guide(dir: &Path, public_addr: &str) -> String {
    let d = dir.display();
    format!(
        "
Gatehouse bootstrapped {d}:
  {d}/gateway.toml      configuration (check it with: gatehoused check --config {d}/gateway.toml)
  {d}/pki/              CA, gateway certificate for {public_addr}, certificate registry, CRL

Next steps (in another shell, as root or the owner of {d}):
  1. issue a client certificate:
       gatehouse-certs --pki {d}/pki issue-client alice
  2. export a profile for the client:
       gatehouse-certs --pki {d}/pki export alice --gateway {public_addr} --format ovpn -o alice.ovpn
     (--format gatehouse for the Gatehouse app, mobileconfig for iPhone/iPad/Mac, windows for
     Windows' built-in IKEv2 client, swanctl for strongSwan, pkcs12 for Android; clients must
     reach {public_addr} - pass --public-addr on the first run to change it)
  3. on the client: openvpn --config alice.ovpn, or gatehouse import alice.ovpn && gatehouse connect alice
  revoke with: gatehouse-certs --pki {d}/pki revoke alice

"
    )
}

fn config_dir(config: &Path) -> PathBuf {
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
