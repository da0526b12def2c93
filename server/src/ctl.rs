//! `gatehoused ctl ...` and `gatehoused status`: the admin API from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hyper::Method;

use crate::admin::client::Client;
use crate::admin::model::{Connection, Disconnected, Reloaded, Revoked, Session, Status};
use crate::cluster::shared_config::SharedConfig;
use crate::config::GatewayConfig;
use crate::status::{ConnectionStatus, GatewayStatus};

/// What `ctl` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// The gateway at a glance.
    Status,
    /// Connected remote-access clients.
    Sessions {
        /// Every node's sessions, with the node that holds each (active-active, docs/ha.md).
        #[arg(long)]
        cluster: bool,
    },
    /// Active-active: show the configuration every node applies on top of its gateway.toml,
    /// or set it from FILE (TOML: `address_space`, `dns`, `full_tunnel`); every node applies
    /// it within seconds.
    ClusterConfig {
        /// The settings to put into etcd (none: show the ones in force).
        file: Option<PathBuf>,
    },
    /// Site-to-site and VNet-to-VNet connections and their SAs.
    Connections,
    /// End every session of a client certificate name.
    Disconnect {
        /// The certificate name.
        name: String,
    },
    /// Revoke a client certificate (registry and CRL) and end its sessions.
    Revoke {
        /// The certificate name or serial.
        name: String,
    },
    /// Re-read gateway.toml and apply it without dropping untouched tunnels.
    Reload,
    /// Restart for an upgrade without dropping sessions: the gateway hands its sockets and
    /// tunnels to the binary now on disk (same PID; as `kill -USR2`).
    Handoff,
    /// Make this gateway the active one of its active-standby pair: take over the tunnels
    /// the other one copied to etcd (keepalived's notify_master runs it; docs/ha.md).
    Takeover,
    /// Write the inner packets of one tunnel (or all) to a pcap file.
    Capture {
        /// A client's certificate name or a connection's name (default: every tunnel).
        #[arg(long)]
        tunnel: Option<String>,
        /// How long to capture.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The pcap file to write ("-": standard output).
        #[arg(short = 'w', long = "write")]
        file: PathBuf,
    },
    /// The Prometheus metrics page.
    Metrics,
}

/// The admin socket of the gateway configured by `config` (its `[admin] socket`, or the
/// environment's override).
pub fn socket_of_config(config: &Path) -> PathBuf {
    let dir = match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match GatewayConfig::load(config) {
        Ok(cfg) => cfg
            .admin
            .socket_path(&dir)
            .unwrap_or_else(|| dir.join("admin.sock")),
        Err(_) => crate::config::AdminConfig::default()
            .socket_path(&dir)
            .unwrap_or_else(|| dir.join("admin.sock")),
    }
}

fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(&format!("{c:<w$}  ", w = widths[i]));
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs one `ctl` command against the API on `socket`.
pub fn run(socket: &Path, json: bool, cmd: CtlCommand) -> Result<()> {
    let c = Client::new(socket);
    runtime()?.block_on(async move {
        match cmd {
            CtlCommand::Status => {
                let s: Status = c.json(Method::GET, "/v1/status").await?;
                if json {
                    return print_json(&s);
                }
                print!("{}", crate::status::render(&legacy(&s)));
                println!(
                    "pool {}: {} of {} leased; CRL: {} revoked, next update in {}",
                    s.pool.cidr,
                    s.pool.leased,
                    s.pool.size,
                    s.crl.revoked,
                    s.crl
                        .next_update_secs
                        .map_or("-".to_owned(), |n| format!("{}h", n / 3600))
                );
                Ok(())
            }
            CtlCommand::ClusterConfig { file } => {
                let cfg: SharedConfig = match file {
                    None => c.json(Method::GET, "/v1/cluster/config").await?,
                    Some(f) => {
                        let text = std::fs::read_to_string(&f)
                            .with_context(|| format!("cannot read {}", f.display()))?;
                        let cfg: SharedConfig = toml::from_str(&text).map_err(|e| {
                            anyhow::anyhow!("{}: {}", f.display(), e.to_string().trim_end())
                        })?;
                        let body = serde_json::to_vec(&cfg)?;
                        c.json_body(Method::PUT, "/v1/cluster/config", Some(body))
                            .await?
                    }
                };
                if json {
                    return print_json(&cfg);
                }
                print!("{}", toml::to_string(&cfg)?);
                Ok(())
            }
            CtlCommand::Sessions { cluster } => {
                let path = if cluster {
                    "/v1/sessions?cluster=true"
                } else {
                    "/v1/sessions"
                };
                let s: Vec<Session> = c.json(Method::GET, path).await?;
                if json {
                    return print_json(&s);
                }
                let rows: Vec<Vec<String>> = s
                    .iter()
                    .map(|x| {
                        let mut row = Vec::new();
                        if cluster {
                            row.push(x.node.clone().unwrap_or_default());
                        }
                        row.extend([
                            x.client.clone(),
                            x.protocol.clone(),
                            x.virtual_address.clone().unwrap_or_default(),
                            x.real_address.clone(),
                            format!("{}s", x.connected_secs),
                            x.cipher.clone(),
                            format!("{}/{}", x.rx_bytes, x.rx_packets),
                            format!("{}/{}", x.tx_bytes, x.tx_packets),
                        ]);
                        row
                    })
                    .collect();
                let mut head = Vec::new();
                if cluster {
                    head.push("NODE");
                }
                head.extend([
                    "CLIENT",
                            "PROTOCOL",
                            "VIRTUAL",
                            "REAL",
                            "UP",
                            "CIPHER",
                    "IN (B/PKT)",
                    "OUT (B/PKT)",
                ]);
                print!("{}", table(&head, &rows));
                Ok(())
            }
            CtlCommand::Connections => {
                let s: Vec<Connection> = c.json(Method::GET, "/v1/connections").await?;
                if json {
                    return print_json(&s);
                }
                let rows: Vec<Vec<String>> = s
                    .iter()
                    .map(|x| {
                        vec![
                            x.name.clone(),
                            x.kind.clone(),
                            x.remote.clone(),
                            x.state.clone(),
                            x.detail.clone(),
                            x.sas.len().to_string(),
                            x.rx_bytes.to_string(),
                            x.tx_bytes.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "CONNECTION",
                            "TYPE",
                            "REMOTE",
                            "STATE",
                            "DETAIL",
                            "SAS",
                            "IN",
                            "OUT"
                        ],
                        &rows
                    )
                );
                Ok(())
            }
            CtlCommand::Disconnect { name } => {
                let path = format!("/v1/sessions/{}/disconnect", path_segment(&name));
                let r: Disconnected = c.json(Method::POST, &path).await?;
                if json {
                    return print_json(&r);
                }
                println!("{}: {} session(s) ended", r.client, r.sessions_ended);
                Ok(())
            }
            CtlCommand::Revoke { name } => {
                let path = format!("/v1/certificates/{}/revoke", path_segment(&name));
                let r: Revoked = c.json(Method::POST, &path).await?;
                if json {
                    return print_json(&r);
                }
                println!(
                    "revoked {} (serial {}); {} session(s) ended; the CRL was rewritten",
                    r.name, r.serial, r.sessions_ended
                );
                Ok(())
            }
            CtlCommand::Handoff => {
                let r: crate::admin::model::HandoffStarted =
                    c.json(Method::POST, "/v1/handoff?confirm=true").await?;
                if json {
                    return print_json(&r);
                }
                println!(
                    "handing the gateway's sessions to {} (same PID); its log says `handoff: took over` when done",
                    r.binary
                );
                Ok(())
            }
            CtlCommand::Takeover => {
                let r: crate::admin::model::TakenOver =
                    c.json(Method::POST, "/v1/takeover").await?;
                if json {
                    return print_json(&r);
                }
                if r.already_active {
                    println!("{} is the active gateway already", r.node);
                } else {
                    println!(
                        "{} is the active gateway: {} session(s) taken over from {} (state {} ms old)",
                        r.node,
                        r.sessions,
                        r.from.as_deref().unwrap_or("nobody"),
                        r.state_age_ms.unwrap_or(0)
                    );
                }
                Ok(())
            }
            CtlCommand::Reload => {
                let r: Reloaded = c.json(Method::POST, "/v1/reload").await?;
                if json {
                    return print_json(&r);
                }
                if r.changes.is_empty() {
                    println!("reloaded: nothing changed");
                } else {
                    println!("reloaded:");
                    for l in &r.changes {
                        println!("  {l}");
                    }
                }
                if r.tunnels_ended > 0 {
                    println!("{} tunnel(s) of changed connections ended", r.tunnels_ended);
                }
                Ok(())
            }
            CtlCommand::Capture {
                tunnel,
                seconds,
                file,
            } => {
                let mut path = format!("/v1/capture?seconds={seconds}");
                if let Some(t) = &tunnel {
                    path.push_str(&format!("&tunnel={}", path_segment(t)));
                }
                let mut r = c.send(Method::GET, &path).await?;
                if !r.status.is_success() {
                    let body = r.bytes().await?;
                    match serde_json::from_slice::<crate::admin::model::ApiError>(&body) {
                        Ok(e) => bail!("{}", e.error),
                        Err(_) => bail!("capture failed: {}", String::from_utf8_lossy(&body)),
                    }
                }
                let mut out: Box<dyn Write> = if file.as_os_str() == "-" {
                    Box::new(std::io::stdout())
                } else {
                    Box::new(
                        std::fs::File::create(&file)
                            .with_context(|| format!("cannot create {}", file.display()))?,
                    )
                };
                let mut bytes = 0usize;
                while let Some(chunk) = r.chunk().await? {
                    out.write_all(&chunk)?;
                    out.flush()?;
                    bytes += chunk.len();
                }
                if file.as_os_str() != "-" {
                    eprintln!(
                        "wrote {} ({bytes} bytes, {} s of {})",
                        file.display(),
                        seconds,
                        tunnel.as_deref().unwrap_or("every tunnel")
                    );
                }
                Ok(())
            }
            CtlCommand::Metrics => {
                let r = c.send(Method::GET, "/metrics").await?;
                let ok = r.status.is_success();
                let body = r.bytes().await?;
                if !ok {
                    bail!("metrics: {}", String::from_utf8_lossy(&body));
                }
                std::io::stdout().write_all(&body)?;
                Ok(())
            }
        }
    })
}

/// The status `gatehoused status` has always shown (its JSON keys are kept for scripts),
/// from the API's.
pub fn legacy(s: &Status) -> GatewayStatus {
    GatewayStatus {
        updated: crate::status::now_secs(),
        clients: s.sessions,
        tcp_connections: s.tcp_connections,
        drops: if s.drops.is_empty() {
            "none".to_owned()
        } else {
            s.drops
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        },
        connections: s
            .connections
            .iter()
            .map(|c| ConnectionStatus {
                name: c.name.clone(),
                kind: c.kind.clone(),
                remote: c.remote.clone(),
                state: c.state.clone(),
                detail: c.detail.clone(),
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
            })
            .collect(),
    }
}

/// `gatehoused status`: the API's status in the old shape.
pub fn status(socket: &Path) -> Result<GatewayStatus> {
    let c = Client::new(socket);
    runtime()?.block_on(async move {
        let s: Status = c.json(Method::GET, "/v1/status").await?;
        Ok(legacy(&s))
    })
}
