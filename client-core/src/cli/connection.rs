//! `gatehouse connect`, `status`, `disconnect` and `service`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use gatehouse_client::manager::{ConnectRequest, Manager, ManagerOptions};
use gatehouse_client::platform::NetConfig;
use gatehouse_client::service::client::ServiceClient;
use gatehouse_client::service::{Reply, Request, socket_path, state_dir};
use gatehouse_client::status::{ConnectionState, Status};
use gatehouse_client::{ProfileStore, ProtocolKind};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn request_for(
    name: &str,
    protocol: Option<ProtocolKind>,
    kill_switch: bool,
    allow_lan: bool,
) -> Result<ConnectRequest> {
    let store = ProfileStore::open_default()?;
    let profile = store.get(name)?;
    let key_pem = store.key_pem(name)?;
    Ok(ConnectRequest {
        profile,
        key_pem,
        protocol,
        kill_switch,
        allow_lan,
    })
}

/// One line describing a status, for humans.
pub fn describe(s: &Status) -> String {
    let line = describe_state(s);
    if s.kill_switch {
        format!("{line} [kill switch on: nothing but the tunnel gets out]")
    } else {
        line
    }
}

fn describe_state(s: &Status) -> String {
    match &s.state {
        ConnectionState::Disconnected => "Disconnected".into(),
        ConnectionState::Connecting { profile, protocol } => {
            format!("Connecting: {profile} over {protocol}")
        }
        ConnectionState::Connected {
            profile,
            since,
            address,
            gateway,
            protocol,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(*since);
            let moved = match s.path_changes {
                0 => String::new(),
                1 => "; moved with 1 network change".into(),
                n => format!("; moved with {n} network changes"),
            };
            format!(
                "Connected: {profile} to {gateway} over {protocol}, address {address}, for {}s; received {} bytes, sent {} bytes{moved}",
                now.saturating_sub(*since),
                s.counters.rx_bytes,
                s.counters.tx_bytes
            )
        }
        ConnectionState::Reconnecting {
            profile,
            attempt,
            reason,
        } => format!("Reconnecting: {profile} (attempt {attempt}): {reason}"),
        ConnectionState::Error { profile, reason } => match profile {
            Some(p) => format!("Error: {p}: {reason}"),
            None => format!("Error: {reason}"),
        },
    }
}

/// `gatehouse connect NAME [--protocol P] [--foreground] [--kill-switch [--allow-lan]]`.
pub fn connect(
    name: &str,
    protocol: Option<ProtocolKind>,
    foreground: bool,
    kill_switch: bool,
    allow_lan: bool,
) -> Result<()> {
    let req = request_for(name, protocol, kill_switch, allow_lan)?;
    let rt = runtime()?;
    if foreground {
        return rt.block_on(connect_foreground(req));
    }
    rt.block_on(async move {
        let path = socket_path();
        let mut updates = ServiceClient::connect(&path).await?;
        updates.request(&Request::Subscribe).await?;
        let mut control = ServiceClient::connect(&path).await?;
        let mine = match control
            .request(&Request::Connect {
                request: Box::new(req),
            })
            .await?
        {
            Reply::Ok { status } => status.request,
            Reply::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer from the client service: {other:?}"),
        };
        let wait = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(wait);
        let mut last = String::new();
        loop {
            tokio::select! {
                r = updates.next() => {
                    let Reply::Status { status } = r? else { continue };
                    // An earlier request's Connected or Error is not ours. (Waiting for our
                    // Connecting instead missed refusals that came within milliseconds:
                    // updates keep only the latest status.)
                    if status.request < mine {
                        continue;
                    }
                    let line = describe(&status);
                    if line != last {
                        println!("{line}");
                        last = line;
                    }
                    match status.state {
                        ConnectionState::Connected { .. } => return Ok(()),
                        ConnectionState::Error { reason, .. } => bail!("{reason}"),
                        _ => {}
                    }
                }
                _ = &mut wait => {
                    println!("still not connected after 60s; the service keeps trying - see `gatehouse status`");
                    return Ok(());
                }
            }
        }
    })
}

async fn connect_foreground(req: ConnectRequest) -> Result<()> {
    let manager = Manager::spawn(ManagerOptions::default(), NetConfig::new(&state_dir()));
    let mut status = manager.watch_status();
    manager.connect(req).await?;
    let mut last = String::new();
    // One handler for the whole run: a SIGINT between two loop passes is not lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = status.changed() => {
                if r.is_err() { bail!("the connection manager stopped"); }
                let s = status.borrow_and_update().clone();
                let line = describe(&s);
                if line != last {
                    println!("{line}");
                    last = line;
                }
                if let ConnectionState::Error { reason, .. } = s.state {
                    bail!("{reason}");
                }
            }
            _ = &mut ctrl_c => {
                println!("disconnecting...");
                manager.disconnect().await?;
                println!("{}", describe(&manager.status()));
                return Ok(());
            }
        }
    }
}

/// `gatehouse status [--json]`.
pub fn status(json: bool) -> Result<()> {
    runtime()?.block_on(async move {
        let mut c = ServiceClient::connect(&socket_path()).await?;
        let Reply::Status { status } = c.request(&Request::Status).await? else {
            bail!("unexpected answer from the client service");
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            println!("{}", describe(&status));
        }
        Ok(())
    })
}

/// `gatehouse disconnect`.
pub fn disconnect() -> Result<()> {
    runtime()?.block_on(async move {
        let mut c = ServiceClient::connect(&socket_path()).await?;
        if let Reply::Ok { status } = c.request(&Request::Disconnect).await? {
            println!("{}", describe(&status));
        }
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM (systemd stopping the unit). On Windows the service manager's stop
/// arrives as Ctrl-C / Ctrl-Break / close.
#[cfg(unix)]
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(windows)]
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut brk = tokio::signal::windows::ctrl_break()?;
    let mut close = tokio::signal::windows::ctrl_close()?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = brk.recv() => {}
            _ = close.recv() => {}
        }
    })
}

/// `gatehouse service`: the privileged client service.
pub fn service() -> Result<()> {
    runtime()?.block_on(async move {
        let manager = Manager::spawn(ManagerOptions::default(), NetConfig::new(&state_dir()));
        let path = socket_path();
        let stop = stop_signal()?;
        tokio::select! {
            r = gatehouse_client::service::serve(&path, manager.clone()) => {
                r.with_context(|| format!("client service on {}", path.display()))?;
            }
            _ = stop => {}
        }
        #[cfg(unix)]
        let _ = gatehouse_netio::notify::Notifier::from_env()
            .0
            .stopping("stopping: disconnecting and restoring routes and DNS");
        // Leave the host as we found it.
        let _ = manager.disconnect().await;
        #[cfg(unix)]
        let _ = std::fs::remove_file(&path);
        Ok(())
    })
}
