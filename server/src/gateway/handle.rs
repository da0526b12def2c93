//! What the admin API holds of the running gateway: the workers' inboxes (to ask them for
//! their status or to end a session), the control loop's inbox (revocation and reload touch
//! files and configuration, which that loop owns), and what does not change while it runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_engine::gateway::{CoreStatus, Drops};
use tokio::sync::{mpsc, oneshot};

use super::capture::CaptureTap;
use super::tcp::Limits;
use super::worker::{Msg, Published, Report};
use crate::admin::model::{Reloaded, Revoked};

/// How long a worker may take to answer before its last published status is used.
const QUERY_WAIT: Duration = Duration::from_secs(1);

/// An order for the control loop.
pub(crate) enum Control {
    /// Revoke a certificate, rewrite the CRL and end its sessions.
    Revoke {
        name: String,
        reply: oneshot::Sender<Result<Revoked, String>>,
    },
    /// Site connections whose DNS name points to another address now: apply the running
    /// configuration again (which resolves them anew).
    Reresolved(Vec<super::reresolve::Moved>),
    /// Re-read gateway.toml and apply what changed.
    Reload {
        reply: oneshot::Sender<Result<Reloaded, String>>,
    },
    /// Active-active: the cluster's CRLs were written to `crl.pem`; load them now.
    CrlChanged,
    /// Active-active: apply the cluster's shared configuration (read from etcd).
    Shared {
        config: crate::cluster::shared_config::SharedConfig,
        from: String,
        revision: i64,
    },
    /// Active-active: check a shared configuration here and put it into etcd for all.
    SetShared {
        config: crate::cluster::shared_config::SharedConfig,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Facts about the gateway that the API reports.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Every listener (the start-up log line's).
    pub listeners: String,
    /// The client pool.
    pub pool: ipnet::Ipv4Net,
    /// Data-plane workers.
    pub workers: usize,
    /// The CRL file.
    pub crl: std::path::PathBuf,
    /// When the gateway started.
    pub started_at: Instant,
    /// Each site connection's remote address space.
    pub sites: Vec<(String, Vec<ipnet::Ipv4Net>)>,
}

/// The gateway's workers added up.
pub struct Snapshot {
    /// Sessions, sites and counters of every worker.
    pub status: CoreStatus,
    /// Drops of every worker and of the TCP accept loop.
    pub drops: Drops,
    /// Addresses leased.
    pub leased: usize,
    /// OpenVPN TCP connections open.
    pub tcp_connections: usize,
    /// Which worker each session of `status.clients` is on (same order).
    pub workers_of_clients: Vec<usize>,
    /// Packets that captures lost because their reader fell behind.
    pub capture_lost: u64,
}

/// A cloneable handle on the running gateway.
#[derive(Clone)]
pub struct GatewayHandle {
    pub(super) inboxes: Arc<Vec<mpsc::Sender<Msg>>>,
    pub(super) published: Arc<Vec<Arc<Mutex<Published>>>>,
    pub(super) control: mpsc::Sender<Control>,
    pub(super) tcp_limits: Arc<Limits>,
    pub(super) facts: Arc<Mutex<Facts>>,
    pub(super) capture: Arc<CaptureTap>,
    /// The active-standby replication task, when `[ha]` is on.
    pub(super) ha: Option<mpsc::Sender<super::ha::TakeoverReply>>,
    /// This node's cluster, when `ha.mode = "active-active"`.
    pub(super) cluster: Option<Arc<super::ClusterView>>,
}

impl GatewayHandle {
    /// What does not change often (updated by a reload).
    pub fn facts(&self) -> Facts {
        self.facts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The remote address space of connection `name`, if there is one by that name.
    pub fn site_prefixes(&self, name: &str) -> Option<Vec<ipnet::Ipv4Net>> {
        self.facts()
            .sites
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    /// This node's active-active cluster, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<super::ClusterView>> {
        self.cluster.as_ref()
    }

    /// The packet tap for captures.
    pub fn capture(&self) -> &Arc<CaptureTap> {
        &self.capture
    }

    /// Every worker's status now (or, from a worker too busy to answer within a second,
    /// what it published last).
    pub async fn snapshot(&self) -> Snapshot {
        let mut waits = Vec::with_capacity(self.inboxes.len());
        for tx in self.inboxes.iter() {
            let (reply, rx) = oneshot::channel();
            let sent = tx.try_send(Msg::Query(reply)).is_ok();
            waits.push(sent.then_some(rx));
        }
        let mut snap = Snapshot {
            status: CoreStatus::empty(),
            drops: Drops::default(),
            leased: 0,
            tcp_connections: self.tcp_limits.open(),
            workers_of_clients: Vec::new(),
            capture_lost: self.capture.lost(),
        };
        for (i, w) in waits.into_iter().enumerate() {
            let report = match w {
                Some(rx) => tokio::time::timeout(QUERY_WAIT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            let report = report.unwrap_or_else(|| {
                let p = self.published[i].lock().unwrap_or_else(|e| e.into_inner());
                Report {
                    status: p.status.clone().unwrap_or_else(CoreStatus::empty),
                    drops: p.drops.clone(),
                    leased: p.leased,
                }
            });
            snap.workers_of_clients
                .extend(std::iter::repeat_n(i, report.status.clients.len()));
            snap.status.merge(&report.status);
            snap.drops.add(&report.drops);
            // One pool: every worker sees the same count.
            snap.leased = report.leased;
        }
        snap.drops.add(&self.tcp_limits.drops());
        snap
    }

    /// Ends the sessions of certificate name `client` on every worker; how many ended.
    pub async fn disconnect(&self, client: &str) -> usize {
        let mut waits = Vec::new();
        for tx in self.inboxes.iter() {
            let (reply, rx) = oneshot::channel();
            let msg = Msg::Disconnect {
                client: client.to_owned(),
                reply,
            };
            if tx.send(msg).await.is_ok() {
                waits.push(rx);
            }
        }
        let mut n = 0;
        for rx in waits {
            n += rx.await.unwrap_or(0);
        }
        n
    }

    /// Revokes certificate `name` (the registry, the CRL) and ends its sessions.
    pub async fn revoke(&self, name: &str) -> Result<Revoked, String> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::Revoke {
                name: name.to_owned(),
                reply,
            })
            .await
            .map_err(|_| "the gateway is stopping".to_owned())?;
        rx.await.map_err(|_| "the gateway is stopping".to_owned())?
    }

    /// Makes this gateway the active one of its pair: takes over the tunnels the other one
    /// copied to etcd (keepalived's `notify_master` calls this through `gatehoused ctl`).
    pub async fn takeover(&self) -> Result<crate::admin::model::TakenOver, String> {
        let Some(ha) = &self.ha else {
            return Err(
                "active-standby is off: set `ha.enabled = true` and `ha.etcd` in gateway.toml (docs/ha.md)"
                    .to_owned(),
            );
        };
        let (reply, rx) = oneshot::channel();
        ha.send(reply)
            .await
            .map_err(|_| "the gateway is stopping".to_owned())?;
        rx.await.map_err(|_| "the gateway is stopping".to_owned())?
    }

    /// Re-reads gateway.toml and applies it.
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::Reload { reply })
            .await
            .map_err(|_| "the gateway is stopping".to_owned())?;
        rx.await.map_err(|_| "the gateway is stopping".to_owned())?
    }

    /// Active-active: checks `config` here and puts it into etcd for every node.
    pub async fn set_cluster_config(
        &self,
        config: crate::cluster::shared_config::SharedConfig,
    ) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::SetShared { config, reply })
            .await
            .map_err(|_| "the gateway is stopping".to_owned())?;
        rx.await.map_err(|_| "the gateway is stopping".to_owned())?
    }
}
