//! Auto-connect on untrusted networks: a task beside the connection manager that looks at
//! the network whenever it changes (the same netlink announcements that move a tunnel) and
//! connects the armed profile when [`should_connect`] says so. It remembers a manual
//! disconnect until the network changes.

use tokio::sync::mpsc;

use crate::manager::{ConnectRequest, Manager};
use crate::platform::{NetWatch, current_network};
use crate::status::ConnectionState;
use crate::trusted::{AutoConnect, NetworkId, Situation, after_change, should_connect};

enum Cmd {
    Set(Box<ConnectRequest>),
    UserDisconnected,
}

/// A handle on the auto-connect task.
#[derive(Clone)]
pub(super) struct AutoConnector {
    tx: mpsc::Sender<Cmd>,
}

impl AutoConnector {
    /// Starts the task; it lives as long as a handle does.
    pub(super) fn spawn(manager: Manager) -> AutoConnector {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(run(manager, rx));
        AutoConnector { tx }
    }

    /// Arms `req`'s profile (or disarms it: `auto_connect = "off"`).
    pub(super) async fn set(&self, req: ConnectRequest) {
        let _ = self.tx.send(Cmd::Set(Box::new(req))).await;
    }

    /// The user disconnected: not again on this network.
    pub(super) async fn user_disconnected(&self) {
        let _ = self.tx.send(Cmd::UserDisconnected).await;
    }
}

/// The TUN device's name: its changes are the tunnel's, not the network's.
fn tun_name() -> String {
    crate::manager::ManagerOptions::default().tun_name
}

async fn network_now(tun: &str) -> Option<NetworkId> {
    let tun = tun.to_owned();
    tokio::task::spawn_blocking(move || current_network(&tun))
        .await
        .ok()
        .flatten()
}

async fn run(manager: Manager, mut rx: mpsc::Receiver<Cmd>) {
    let tun = tun_name();
    let mut watch = NetWatch::new(&tun);
    let mut armed: Option<Box<ConnectRequest>> = None;
    let mut disconnected_on: Option<NetworkId> = None;
    loop {
        let current = tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Set(req)) => {
                    if req.profile.auto_connect == AutoConnect::Untrusted {
                        armed = Some(req);
                    } else if armed.as_ref().is_some_and(|a| a.profile.name == req.profile.name) {
                        armed = None;
                    }
                    network_now(&tun).await
                }
                Some(Cmd::UserDisconnected) => {
                    disconnected_on = network_now(&tun).await;
                    if let Some(net) = &disconnected_on {
                        tracing::info!(network = %net, "disconnected by the user: no auto-connect on this network until it changes");
                    }
                    continue;
                }
            },
            _ = watch.settled() => {
                let current = network_now(&tun).await;
                disconnected_on = after_change(disconnected_on, current.as_ref());
                current
            }
        };
        let Some(req) = &armed else { continue };
        let busy = !matches!(
            manager.status().state,
            ConnectionState::Disconnected | ConnectionState::Error { .. }
        );
        let situation = Situation {
            auto_connect: req.profile.auto_connect,
            trusted: &req.profile.trusted_networks,
            current: current.as_ref(),
            busy,
            user_disconnected_on: disconnected_on.as_ref(),
        };
        if should_connect(situation) {
            if let Some(net) = &current {
                tracing::info!(profile = %req.profile.name, network = %net, "auto-connect: this network is not trusted; connecting");
            }
            if manager.connect((**req).clone()).await.is_err() {
                return;
            }
        } else if let Some(net) = &current {
            tracing::debug!(profile = %req.profile.name, network = %net, busy, "auto-connect: nothing to do");
        }
    }
}
