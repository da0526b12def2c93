//! Active-standby (issue 17, docs/ha.md): the active gateway copies its tunnels to etcd every
//! `ha.interval`; the standby keeps the latest copy and takes the tunnels over when it becomes
//! the active one (`gatehoused ctl takeover`, which keepalived's `notify_master` runs once the
//! floating address is on this host).
//!
//! In etcd, under `/gatehouse/<cluster>/`:
//! - `state`: the JSON of [`Stored`]: every worker's [`CoreHandoff`] as
//!   [`GatewayCore::snapshot_for_standby`](gatehouse_engine::gateway::GatewayCore::snapshot_for_standby)
//!   made it (keys, packet-id counters written ahead, replay windows, leases, IKE SAs).
//!   Secret material: whoever reads it can decrypt and forge the tunnels' traffic.
//! - `active`: the name of the node that may write `state`. A takeover writes it first; the
//!   active node writes `state` only in a transaction that checks it, so a node that lost
//!   the role (it was presumed dead, the address moved away) finds out at its next write and
//!   stops at once, before its keys could catch up with the margin the new active one
//!   jumped ahead by.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use gatehouse_engine::gateway::CoreHandoff;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::worker::Msg;
use crate::admin::model::TakenOver;
use crate::config::HaSection;
use crate::etcd::Etcd;

/// How long a worker may take to answer a snapshot or an import.
const WORKER_WAIT: Duration = Duration::from_secs(2);

/// What the active gateway writes to `/gatehouse/<cluster>/state`.
#[derive(Serialize, Deserialize)]
pub struct Stored {
    /// The node that wrote it.
    pub node: String,
    /// When, in milliseconds since the Unix epoch (the age a takeover reports).
    pub written_unix_ms: u64,
    /// Every worker's tunnels, in worker order.
    pub workers: Vec<CoreHandoff>,
}

/// Orders for the replication task.
pub(crate) type TakeoverReply = oneshot::Sender<Result<TakenOver, String>>;

/// The replication task's state.
pub(super) struct Ha {
    etcd: Etcd,
    node: String,
    cluster: String,
    interval: Duration,
    active: bool,
    inboxes: Arc<Vec<mpsc::Sender<Msg>>>,
    /// The latest state read from etcd (standby).
    cached: Option<Vec<u8>>,
    /// The node whose state the standby follows (logged when it changes).
    following: Option<String>,
    /// The last write failed (logged once until a write succeeds).
    failing: bool,
    /// Poked by the workers when a session, keys or a peer address changed.
    replicate: Arc<tokio::sync::Notify>,
    /// When the state was last copied.
    last_publish: Option<Instant>,
}

/// The shortest time between two copies woken by changes: a burst of new sessions costs a
/// few copies a second, not one per session.
const MIN_GAP: Duration = Duration::from_millis(200);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Ha {
    /// The task for `cfg` (enabled), over the workers' `inboxes`.
    pub fn new(
        cfg: &HaSection,
        inboxes: Arc<Vec<mpsc::Sender<Msg>>>,
        replicate: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            etcd: Etcd::new(cfg.endpoints()),
            node: cfg.node_name(),
            cluster: cfg.cluster.clone(),
            interval: cfg.interval_duration().unwrap_or(Duration::from_secs(1)),
            active: false,
            inboxes,
            cached: None,
            following: None,
            failing: false,
            replicate,
            last_publish: None,
        }
    }

    fn key(&self, what: &str) -> String {
        format!("/gatehouse/{}/{what}", self.cluster)
    }

    /// Runs until the gateway stops: copies (active) or follows (standby) the state, and
    /// takes over when told to. `start_active`: `ha.role = "active"`; `after_handoff`: this
    /// process took its tunnels over from the previous one (a restart for an upgrade).
    pub async fn run(
        mut self,
        start_active: bool,
        after_handoff: bool,
        mut orders: mpsc::Receiver<TakeoverReply>,
    ) {
        info!(node = %self.node, cluster = %self.cluster, role = if start_active { "active" } else { "standby" }, interval_ms = self.interval.as_millis() as u64, "ha: replication through etcd");
        // Was this node the active one (a restart, an upgrade)? Then it still is: etcd
        // names it, so no other node has taken over.
        let key = self.key("active");
        let named = self.etcd(move |e| e.get(&key)).await;
        let was_active = matches!(&named, Ok(Some(kv)) if kv.value == self.node.as_bytes());
        if was_active && after_handoff {
            // The tunnels came through the handoff; go on copying them.
            self.active = true;
            self.initiate_sites().await;
            info!("ha: still the active gateway after the handoff");
        } else if start_active || was_active {
            match self.takeover().await {
                Ok(t) => info!(sessions = t.sessions, "ha: started as the active gateway"),
                Err(e) => {
                    warn!(error = %e, "ha: could not take over at start; serving as the active gateway anyway")
                }
            }
            self.active = true;
            self.initiate_sites().await;
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.active {
                        self.publish().await;
                    } else {
                        self.follow().await;
                    }
                }
                // A new session, new keys or a moved peer: copied now (at most every
                // MIN_GAP), not at the next tick.
                _ = self.replicate.notified(), if self.active => {
                    if let Some(last) = self.last_publish {
                        let wait = MIN_GAP.saturating_sub(last.elapsed());
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    debug!("ha: tunnels changed; copying the state now");
                    self.publish().await;
                    tick.reset();
                }
                order = orders.recv() => {
                    let Some(reply) = order else { break };
                    let r = self.takeover().await;
                    let _ = reply.send(r);
                }
            }
        }
    }

    /// The active node starts the `initiate = true` connections (a standby does not).
    async fn initiate_sites(&self) {
        for tx in self.inboxes.iter() {
            let _ = tx.send(Msg::SiteInitiation(true)).await;
        }
    }

    /// Runs a blocking etcd call off the async threads.
    async fn etcd<T: Send + 'static>(
        &self,
        f: impl FnOnce(Etcd) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let etcd = self.etcd.clone();
        tokio::task::spawn_blocking(move || f(etcd))
            .await
            .map_err(|e| anyhow!("etcd call panicked: {e}"))?
    }

    /// Standby: keeps the latest state.
    async fn follow(&mut self) {
        let key = self.key("state");
        match self.etcd(move |e| e.get(&key)).await {
            Ok(Some(kv)) => {
                let node = serde_json::from_slice::<serde_json::Value>(&kv.value)
                    .ok()
                    .and_then(|v| v["node"].as_str().map(str::to_owned));
                if node != self.following {
                    info!(active = ?node, bytes = kv.value.len(), "ha: standby, following the active gateway's state");
                    self.following = node;
                }
                self.cached = Some(kv.value);
                self.failing = false;
            }
            Ok(None) => {}
            Err(e) => {
                if !self.failing {
                    warn!(error = %format!("{e:#}"), "ha: cannot read the state from etcd; keeping the last copy");
                    self.failing = true;
                }
            }
        }
    }

    /// Active: copies every worker's tunnels to etcd, if this node is still the active one.
    async fn publish(&mut self) {
        let started = Instant::now();
        self.last_publish = Some(started);
        let mut waits = Vec::with_capacity(self.inboxes.len());
        for tx in self.inboxes.iter() {
            let (reply, rx) = oneshot::channel();
            if tx.send(Msg::Snapshot(reply)).await.is_err() {
                return; // stopping
            }
            waits.push(rx);
        }
        let mut workers = Vec::with_capacity(waits.len());
        for rx in waits {
            match tokio::time::timeout(WORKER_WAIT, rx).await {
                Ok(Ok(h)) => workers.push(h),
                _ => {
                    // A partial copy would lose that worker's sessions at a takeover.
                    warn!("ha: a worker did not answer in time; state not copied this round");
                    return;
                }
            }
        }
        let sessions: usize = workers.iter().map(|w| w.openvpn.len() + w.ike.len()).sum();
        let stored = Stored {
            node: self.node.clone(),
            written_unix_ms: unix_ms(),
            workers,
        };
        let bytes = match serde_json::to_vec(&stored) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "ha: cannot serialise the state");
                return;
            }
        };
        drop(stored);
        let len = bytes.len();
        let (guard, key, node) = (self.key("active"), self.key("state"), self.node.clone());
        let r = self
            .etcd(move |e| e.put_if(&guard, node.as_bytes(), &key, &bytes))
            .await;
        match r {
            Ok(true) => {
                if self.failing {
                    info!("ha: state copied to etcd again");
                    self.failing = false;
                }
                debug!(
                    sessions,
                    bytes = len,
                    took_ms = started.elapsed().as_millis() as u64,
                    "ha: state copied to etcd"
                );
            }
            Ok(false) => {
                // Another node took over: it seals with these keys from the copied counters
                // on. Stop now, without a word to the clients (a goodbye would end the
                // sessions the other node serves).
                let key = self.key("active");
                let other = self
                    .etcd(move |e| e.get(&key))
                    .await
                    .ok()
                    .flatten()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                error!(node = %self.node, active = ?other, cluster = %self.cluster, "ha: another gateway is the active one now; this one stops at once so that no key is used twice");
                std::process::exit(3);
            }
            Err(e) => {
                if !self.failing {
                    warn!(error = %format!("{e:#}"), "ha: cannot copy the state to etcd; a failover now would lose the sessions since the last copy");
                    self.failing = true;
                }
            }
        }
    }

    /// Becomes the active gateway: claims the role in etcd, reads the latest state (the
    /// cached copy when etcd does not answer) and gives each worker its tunnels.
    async fn takeover(&mut self) -> Result<TakenOver, String> {
        let was_active = self.active;
        let r = self.take_the_state().await;
        if self.active && !was_active {
            // After the copy's site SAs are in: connections without one start now.
            self.initiate_sites().await;
        }
        r
    }

    /// [`takeover`](Self::takeover) but for starting the sites.
    async fn take_the_state(&mut self) -> Result<TakenOver, String> {
        if self.active {
            return Ok(TakenOver {
                node: self.node.clone(),
                sessions: 0,
                from: None,
                state_age_ms: None,
                already_active: true,
            });
        }
        let started = Instant::now();
        let (akey, skey, node) = (self.key("active"), self.key("state"), self.node.clone());
        let fresh = self
            .etcd(move |e| {
                // Claim first: the previous active node's next write fails from now on.
                e.put(&akey, node.as_bytes())?;
                e.get(&skey)
            })
            .await;
        let bytes = match fresh {
            Ok(kv) => kv.map(|kv| kv.value),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "ha: etcd does not answer; taking over from the last copy read (the previous active gateway is not fenced)");
                self.cached.take()
            }
        };
        self.active = true;
        self.cached = None;
        let Some(bytes) = bytes else {
            info!(node = %self.node, "ha: active; etcd held no state to take over");
            return Ok(TakenOver {
                node: self.node.clone(),
                sessions: 0,
                from: None,
                state_age_ms: None,
                already_active: false,
            });
        };
        let stored: Stored = serde_json::from_slice(&bytes)
            .context("the state in etcd is not a gateway state")
            .map_err(|e| format!("{e:#}"))?;
        drop(bytes);
        let age = unix_ms().saturating_sub(stored.written_unix_ms);
        let from = stored.node.clone();
        let n = self.inboxes.len();
        if stored.workers.len() != n {
            let msg = format!(
                "the state of {from} has {} workers' tunnels, this gateway runs {n} workers: give both gateways the same `workers`",
                stored.workers.len()
            );
            error!("ha: {msg}");
            return Err(msg);
        }
        let mut waits = Vec::with_capacity(n);
        for (tx, h) in self.inboxes.iter().zip(stored.workers) {
            let (reply, rx) = oneshot::channel();
            if tx.send(Msg::Import(Box::new(h), reply)).await.is_err() {
                return Err("the gateway is stopping".into());
            }
            waits.push(rx);
        }
        let mut sessions = 0;
        for rx in waits {
            match tokio::time::timeout(WORKER_WAIT, rx).await {
                Ok(Ok(Ok(k))) => sessions += k,
                Ok(Ok(Err(e))) => {
                    warn!(error = %e, "ha: a worker's tunnels were not taken over; their clients reconnect")
                }
                _ => warn!("ha: a worker did not answer the takeover"),
            }
        }
        info!(sessions, from = %from, state_age_ms = age, took_ms = started.elapsed().as_millis() as u64, "ha: took over the cluster's sessions");
        // Copy at once: the new state (this node's, counters ahead) replaces the old.
        self.publish().await;
        Ok(TakenOver {
            node: self.node.clone(),
            sessions,
            from: Some(from),
            state_age_ms: Some(age),
            already_active: false,
        })
    }
}
