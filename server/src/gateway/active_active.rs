//! Active-active (`ha.mode = "active-active"`, docs/ha.md): this node's part of the cluster.
//! At start it takes a lease in etcd and claims a block of `client_pool` ([`join`]); then,
//! every `ha.interval`, the task ([`Member::run`]) keeps the lease alive, publishes this
//! node's sessions, publishes the CRLs when a revocation was made here, installs them when
//! one was made elsewhere, and applies the cluster's shared configuration when it changes.
//! The CRL and the configuration reach the control loop as [`Control`] orders, so they go
//! through the same reload paths as a local change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ipnet::Ipv4Net;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::handle::{Control, GatewayHandle};
use crate::cluster::crl::{self, Flow};
use crate::cluster::shared_config::{self, SharedConfig};
use crate::cluster::{LEASE_TTL_SECS, NodeSessions, blocks, key};
use crate::config::GatewayConfig;
use crate::etcd::Etcd;

/// This node in the cluster: what the admin API needs to read the cluster's keys.
#[derive(Debug)]
pub struct ClusterView {
    /// The cluster's etcd.
    pub etcd: Etcd,
    /// `ha.cluster`.
    pub cluster: String,
    /// `ha.node`.
    pub node: String,
    /// The block of `client_pool` this node leases from.
    pub block: Ipv4Net,
    /// `client_pool` as configured: the whole cluster's pool.
    pub pool: Ipv4Net,
    /// Wakes the task before its next round (a revocation or a configuration made here).
    pub wake: tokio::sync::Notify,
}

impl ClusterView {
    /// Runs a blocking etcd call off the async threads.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(Etcd) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let etcd = self.etcd.clone();
        tokio::task::spawn_blocking(move || f(etcd))
            .await
            .map_err(|e| anyhow!("etcd call panicked: {e}"))?
    }

    /// The key `what` of this cluster.
    pub fn key(&self, what: &str) -> String {
        key(&self.cluster, what)
    }
}

/// This node's membership: its view and its lease.
pub(super) struct Membership {
    pub view: Arc<ClusterView>,
    pub lease: i64,
}

/// Joins the cluster of `cfg` (active-active): a lease, and a block of `client_pool`
/// claimed under it, which becomes this node's pool.
pub(super) async fn join(cfg: &GatewayConfig) -> Result<Membership> {
    let (etcd, cluster, node) = (
        Etcd::new(cfg.ha.endpoints()),
        cfg.ha.cluster.clone(),
        cfg.ha.node_name(),
    );
    let (pool, prefix) = (cfg.client_pool, cfg.ha.pool_block);
    let (c, n, e) = (cluster.clone(), node.clone(), etcd.clone());
    let (lease, block) = tokio::task::spawn_blocking(move || -> Result<(i64, Ipv4Net)> {
        let lease = e.grant(LEASE_TTL_SECS)?;
        Ok((lease, blocks::claim(&e, &c, &n, pool, prefix, lease)?))
    })
    .await
    .map_err(|e| anyhow!("etcd call panicked: {e}"))?
    .context("ha (active-active): cannot claim a block of `client_pool` in etcd")?;
    info!(node = %node, cluster = %cluster, block = %block, client_pool = %pool, key = %blocks::block_key(&cluster, block), "cluster: claimed a block of the client pool; route it to this node");
    Ok(Membership {
        view: Arc::new(ClusterView {
            etcd,
            cluster,
            node,
            block,
            pool,
            wake: tokio::sync::Notify::new(),
        }),
        lease,
    })
}

/// The task's state.
pub(super) struct Member {
    view: Arc<ClusterView>,
    lease: i64,
    interval: Duration,
    crl_path: PathBuf,
    pki_dir: PathBuf,
    control: mpsc::Sender<Control>,
    handle: GatewayHandle,
    /// The revision of `crl` and our file's bytes when last compared (skip when unchanged).
    crl_seen: Option<(i64, Vec<u8>)>,
    /// The revision of `config` last applied (or refused).
    config_seen: i64,
    /// An etcd call failed (logged once until one succeeds).
    failing: bool,
}

impl Member {
    /// The task for `m`, over `handle`; orders go to the control loop on `control`.
    pub fn new(
        m: &Membership,
        cfg: &GatewayConfig,
        pki_dir: PathBuf,
        crl_path: PathBuf,
        handle: GatewayHandle,
        control: mpsc::Sender<Control>,
    ) -> Self {
        Self {
            view: m.view.clone(),
            lease: m.lease,
            interval: cfg.ha.interval_duration().unwrap_or(Duration::from_secs(1)),
            crl_path,
            pki_dir,
            control,
            handle,
            crl_seen: None,
            config_seen: 0,
            failing: false,
        }
    }

    /// Runs until the gateway stops.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.view.wake.notified() => {}
            }
            if self.control.is_closed() {
                return;
            }
            let r = async {
                self.keep_lease().await?;
                self.sync_crl().await?;
                self.sync_config().await?;
                self.publish_sessions().await
            }
            .await;
            match r {
                Ok(()) if self.failing => {
                    info!("cluster: etcd answers again");
                    self.failing = false;
                }
                Ok(()) => {}
                Err(e) if !self.failing => {
                    warn!(error = %format!("{e:#}"), "cluster: etcd call failed; this node goes on serving its block, and retries every interval");
                    self.failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Renews the lease; when it expired (etcd unreachable for longer than the TTL), takes a
    /// new one and claims the same block again - or stops, when another node has it now:
    /// two nodes must never lease the same addresses.
    async fn keep_lease(&mut self) -> Result<()> {
        let lease = self.lease;
        if self.view.call(move |e| e.keep_alive(lease)).await? {
            return Ok(());
        }
        let (cluster, node, block) = (
            self.view.cluster.clone(),
            self.view.node.clone(),
            self.view.block,
        );
        let (lease, claimed) = self
            .view
            .call(move |e| {
                let lease = e.grant(LEASE_TTL_SECS)?;
                Ok((
                    lease,
                    e.claim(&blocks::block_key(&cluster, block), node.as_bytes(), lease)?,
                ))
            })
            .await?;
        if !claimed {
            error!(node = %self.view.node, block = %block, "cluster: this node's lease expired and another node claimed its block of the client pool; it stops at once so that no address is leased twice");
            std::process::exit(3);
        }
        warn!(block = %block, "cluster: this node's lease had expired; claimed its block again");
        self.lease = lease;
        Ok(())
    }

    /// Publishes our CRLs or installs the cluster's, whichever lists more.
    async fn sync_crl(&mut self) -> Result<()> {
        let k = self.view.key("crl");
        let kv = self.view.call(move |e| e.get(&k)).await?;
        let Ok(ours) = std::fs::read(&self.crl_path) else {
            return Ok(()); // crl_upkeep signs it again from the registry.
        };
        let rev = kv.as_ref().map_or(0, |kv| kv.mod_revision);
        if self
            .crl_seen
            .as_ref()
            .is_some_and(|(r, b)| *r == rev && *b == ours)
        {
            return Ok(());
        }
        self.crl_seen = Some((rev, ours.clone()));
        let mine = match crl::revocations(&ours) {
            Ok(r) => r,
            Err(e) => {
                warn!(crl = %self.crl_path.display(), error = %format!("{e:#}"), "cluster: this node's CRL does not parse; not published");
                return Ok(());
            }
        };
        let cas = crl::ca_certs(&self.pki_dir)?;
        let theirs = match &kv {
            None => None,
            Some(kv) => match crl::check_published(&kv.value, &cas) {
                Ok(t) => Some(t),
                Err(e) => {
                    // Not overwritten: it may hold revocations this node cannot check (an
                    // intermediate CA made on another node), and revocations never go back.
                    let key = self.view.key("crl");
                    error!(error = %format!("{e:#}"), revision = rev, key = %key, "cluster: the CRL in etcd was refused, and revocations made here are not published while it is there: copy the other nodes' intermediate CAs (pki/intermediate/) to this node, or, if the value is not a gateway's, delete it (`etcdctl del KEY`)");
                    return Ok(());
                }
            },
        };
        let flow = theirs
            .as_ref()
            .map_or(Flow::Publish, |(_, t)| crl::flow(&mine, t));
        match flow {
            Flow::Same => {}
            Flow::Publish => {
                let value = serde_json::to_vec(&crl::Published {
                    node: self.view.node.clone(),
                    pem: String::from_utf8_lossy(&ours).into_owned(),
                })?;
                let k = self.view.key("crl");
                let put = self
                    .view
                    .call(move |e| e.put_if_unchanged(&k, rev, &value))
                    .await?;
                if put {
                    info!(
                        revoked = mine.listed.len(),
                        "cluster: published this node's CRL; every node installs it within seconds"
                    );
                }
                // Else another node published meanwhile: compared again next round.
                self.crl_seen = None;
            }
            Flow::Install | Flow::Diverged => {
                let Some((p, t)) = theirs else { return Ok(()) };
                self.install(p, t, mine, flow).await?;
            }
        }
        Ok(())
    }

    /// Takes on the revocations of the published CRLs `t` (from node `p.node`) that this
    /// node's (`mine`) lacks: records them in this node's registry, which signs a CRL with
    /// them and its own (published at the next round when it lists more); without a registry
    /// that can sign, installs the published file as it is (`Flow::Install`), or says what
    /// to do (`Flow::Diverged`: neither file lists every revocation).
    async fn install(
        &mut self,
        p: crl::Published,
        t: crl::Revocations,
        mine: crl::Revocations,
        flow: Flow,
    ) -> Result<()> {
        let newly = t.listed.difference(&mine.listed).count();
        let (dir, path) = (self.pki_dir.clone(), self.crl_path.clone());
        let (m, tt) = (mine.clone(), t.clone());
        // Whether revocations were recorded and the CRL signed here now lists all published.
        let recorded = tokio::task::spawn_blocking(move || -> Result<bool> {
            if crl::record_revocations(&dir, &m, &tt)? == 0 {
                return Ok(false);
            }
            let now = crl::revocations(&std::fs::read(&path)?)?;
            Ok(now.listed.is_superset(&tt.listed))
        })
        .await
        .map_err(|e| anyhow!("the registry task panicked: {e}"))?;
        match recorded {
            Ok(true) => {
                info!(from = %p.node, newly_revoked = newly, "cluster: recorded the revocations published by another node in this node's registry and signed its CRL with them; sessions of the certificates it revokes end now");
            }
            _ if flow == Flow::Install => {
                if let Err(e) = &recorded {
                    warn!(error = %format!("{e:#}"), "cluster: cannot record the published revocations in this node's registry; installing the published CRL as it is");
                }
                write_atomic(&self.crl_path, p.pem.as_bytes())?;
                info!(from = %p.node, revoked = t.listed.len(), newly_revoked = newly, "cluster: installed the CRL published by another node (signature checked); sessions of the certificates it revokes end now");
            }
            Ok(false) | Err(_) => {
                error!(from = %p.node, error = ?recorded.err().map(|e| format!("{e:#}")), "cluster: this node's CRL and the cluster's each revoke a certificate the other does not, and this node's registry cannot take the cluster's: keeping this node's; revoke the missing certificates on this node (`gatehouse-certs revoke`)");
                return Ok(());
            }
        }
        self.crl_seen = None;
        let _ = self.control.send(Control::CrlChanged).await;
        Ok(())
    }

    /// Applies the cluster's configuration when it changed.
    async fn sync_config(&mut self) -> Result<()> {
        let k = self.view.key("config");
        let Some(kv) = self.view.call(move |e| e.get(&k)).await? else {
            return Ok(());
        };
        if kv.mod_revision == self.config_seen {
            return Ok(());
        }
        self.config_seen = kv.mod_revision;
        match shared_config::parse_published(&kv.value) {
            Ok(p) => {
                let _ = self
                    .control
                    .send(Control::Shared {
                        config: p.config,
                        from: p.node,
                        revision: kv.mod_revision,
                    })
                    .await;
            }
            Err(e) => {
                error!(revision = kv.mod_revision, error = %format!("{e:#}"), "cluster: the configuration in etcd was refused; the running one stays")
            }
        }
        Ok(())
    }

    /// Writes this node's sessions under its lease.
    async fn publish_sessions(&mut self) -> Result<()> {
        let snap = self.handle.snapshot().await;
        let list = NodeSessions {
            node: self.view.node.clone(),
            blocks: vec![self.view.block.to_string()],
            sessions: crate::admin::api::session_list(&snap),
        };
        let value = serde_json::to_vec(&list)?;
        let (k, lease) = (
            self.view.key(&format!("sessions/{}", self.view.node)),
            self.lease,
        );
        self.view
            .call(move |e| e.put_leased(&k, &value, lease))
            .await
    }
}

/// Puts the shared configuration `config` into etcd for every node (the admin API's
/// `PUT /v1/cluster/config`), after checking it against this node's configuration.
pub async fn publish_config(
    view: &ClusterView,
    config: SharedConfig,
    file: &GatewayConfig,
) -> Result<()> {
    config.apply_to(file)?;
    let value = serde_json::to_vec(&shared_config::Published {
        node: view.node.clone(),
        config,
    })?;
    let k = view.key("config");
    view.call(move |e| e.put(&k, &value)).await?;
    view.wake.notify_one();
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename (readers never see half).
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("cluster.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
