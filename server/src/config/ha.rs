//! `[ha]`: active-standby (issue 17, docs/ha.md). Two gateways share a floating address
//! (keepalived moves it); the active one copies its tunnels to etcd, the standby takes them
//! over when it becomes the active one (`gatehoused ctl takeover`, keepalived's
//! `notify_master`).

use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::parse_duration;

/// `[ha]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    /// Take part in an active-standby pair (default false: a single gateway).
    #[serde(default)]
    pub enabled: bool,
    /// etcd v3 endpoints, tried in order: "http://HOST:PORT" (etcd's JSON gateway, plain
    /// HTTP: put etcd on a private management network, see docs/ha.md).
    #[serde(default)]
    pub etcd: Vec<String>,
    /// The pair's name: the state is kept under `/gatehouse/<cluster>/` in etcd, so several
    /// pairs can share one etcd. Letters, digits, `-` and `_`.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// This gateway's name in the pair (logs, the `active` key in etcd); default: the host
    /// name. The two gateways of a pair must have different names.
    #[serde(default)]
    pub node: String,
    /// How this gateway starts: "standby" (default: serves, but copies nothing to etcd until
    /// `gatehoused ctl takeover` makes it the active one - keepalived's `notify_master` runs
    /// that) or "active" (takes over what etcd holds and copies its tunnels there from the
    /// start: for a pair whose failover is run by hand). Which gateway wins when both start
    /// is keepalived's `priority`, not this.
    #[serde(default = "default_role")]
    pub role: String,
    /// How often the active gateway copies its tunnels to etcd, e.g. "1s" (1-60 s). A
    /// session set up or rekeyed within the last interval before a failover reconnects.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// "active-standby" (default: one gateway serves, the other takes over) or
    /// "active-active" (every node serves its own clients; pool blocks, the CRL, the shared
    /// configuration and the session lists go through etcd; docs/ha.md).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Active-active: the prefix length of the blocks of `client_pool` each node claims in
    /// etcd, e.g. 26 (64 addresses a node). Longer than `client_pool`'s, at most 30.
    #[serde(default = "default_pool_block")]
    pub pool_block: u8,
}

/// `ha.mode` values.
pub const ACTIVE_STANDBY: &str = "active-standby";
/// Every node serves (docs/ha.md, Active-active).
pub const ACTIVE_ACTIVE: &str = "active-active";

fn default_mode() -> String {
    ACTIVE_STANDBY.into()
}

fn default_pool_block() -> u8 {
    26
}

fn default_cluster() -> String {
    "gatehouse".into()
}

fn default_role() -> String {
    "standby".into()
}

fn default_interval() -> String {
    "1s".into()
}

impl Default for HaSection {
    fn default() -> Self {
        Self {
            enabled: false,
            etcd: Vec::new(),
            cluster: default_cluster(),
            node: String::new(),
            role: default_role(),
            interval: default_interval(),
            mode: default_mode(),
            pool_block: default_pool_block(),
        }
    }
}

/// An etcd endpoint: host and port of `http://HOST:PORT[/]`.
pub fn parse_endpoint(s: &str) -> Option<(String, u16)> {
    let rest = s.trim().strip_prefix("http://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':')?;
    if host.is_empty() || host.contains('/') {
        return None;
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.to_owned(), port.parse().ok().filter(|p| *p != 0)?))
}

impl HaSection {
    /// Checks the section, naming the key and the fix.
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.etcd.is_empty() {
            bail!(
                "`ha.etcd` is empty but `ha.enabled` is true: list the etcd endpoints, e.g. [\"http://10.0.0.5:2379\"]"
            );
        }
        for e in &self.etcd {
            if e.starts_with("https://") {
                bail!(
                    "`ha.etcd` entry {e:?}: https is not supported; reach etcd over a private management network with http:// (docs/ha.md)"
                );
            }
            if parse_endpoint(e).is_none() {
                bail!(
                    "`ha.etcd` entry {e:?} is not an endpoint: write e.g. \"http://10.0.0.5:2379\""
                );
            }
        }
        if self.cluster.is_empty()
            || self.cluster.len() > 64
            || !self
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!(
                "`ha.cluster` = {:?}: use 1-64 letters, digits, `-` or `_` (it names the pair's keys in etcd)",
                self.cluster
            );
        }
        if self.node.len() > 64 || self.node.chars().any(|c| c.is_control() || c == '/') {
            bail!(
                "`ha.node` = {:?}: use up to 64 printable characters without `/`, or leave it out (the host name)",
                self.node
            );
        }
        if self.role != "standby" && self.role != "active" {
            bail!(
                "`ha.role` = {:?}: write \"standby\" (keepalived's notify_master runs `gatehoused ctl takeover`) or \"active\"",
                self.role
            );
        }
        if self.mode != ACTIVE_STANDBY && self.mode != ACTIVE_ACTIVE {
            bail!(
                "`ha.mode` = {:?}: write \"active-standby\" (a pair with a floating address) or \"active-active\" (every node serves its own clients)",
                self.mode
            );
        }
        if self.interval_duration().is_none() {
            bail!(
                "`ha.interval` = {:?} is not a duration of 1-60 s: write e.g. \"1s\"",
                self.interval
            );
        }
        Ok(())
    }

    /// True when every node serves its own clients (`mode = "active-active"`).
    pub fn active_active(&self) -> bool {
        self.enabled && self.mode == ACTIVE_ACTIVE
    }

    /// Checks `pool_block` against `client_pool` (active-active only).
    pub fn validate_pool(&self, client_pool: ipnet::Ipv4Net) -> Result<()> {
        if !self.active_active() {
            return Ok(());
        }
        if self.pool_block <= client_pool.prefix_len() || self.pool_block > 30 {
            bail!(
                "`ha.pool_block` = {}: give a prefix length longer than `client_pool`'s ({client_pool}) and at most 30, e.g. {} (each node claims blocks of that size)",
                self.pool_block,
                (client_pool.prefix_len() + 2).min(30)
            );
        }
        if self.pool_block - client_pool.prefix_len() > 10 {
            bail!(
                "`ha.pool_block` = {}: that splits `client_pool` {client_pool} into more than 1024 blocks; give a shorter prefix, e.g. {} (a block per node, with room for more nodes)",
                self.pool_block,
                client_pool.prefix_len() + 4
            );
        }
        Ok(())
    }

    /// `interval` parsed.
    pub fn interval_duration(&self) -> Option<Duration> {
        parse_duration(&self.interval)
            .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(60)).contains(d))
    }

    /// This node's name: `node`, else the host name.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "gatehoused".into())
    }

    /// The endpoints as host and port.
    pub fn endpoints(&self) -> Vec<(String, u16)> {
        self.etcd.iter().filter_map(|e| parse_endpoint(e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> HaSection {
        HaSection {
            enabled: true,
            etcd: vec!["http://10.0.0.5:2379".into()],
            ..HaSection::default()
        }
    }

    #[test]
    fn off_by_default_and_checked_only_when_on() {
        let h = HaSection::default();
        assert!(!h.enabled);
        h.validate().unwrap();
        on().validate().unwrap();
        assert_eq!(on().endpoints(), vec![("10.0.0.5".to_owned(), 2379)]);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        type Breaks = fn(&mut HaSection);
        let cases: [(&str, Breaks); 8] = [
            ("`ha.etcd` is empty", |h| h.etcd.clear()),
            ("https is not supported", |h| {
                h.etcd = vec!["https://e:2379".into()]
            }),
            ("is not an endpoint", |h| h.etcd = vec!["10.0.0.5".into()]),
            ("`ha.cluster`", |h| h.cluster = "a/b".into()),
            ("`ha.node`", |h| h.node = "x/y".into()),
            ("`ha.role`", |h| h.role = "master".into()),
            ("`ha.interval`", |h| h.interval = "0".into()),
            ("`ha.mode`", |h| h.mode = "active-passive".into()),
        ];
        for (want, break_it) in cases {
            let mut h = on();
            break_it(&mut h);
            let e = h.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        assert_eq!(
            parse_endpoint("http://[::1]:2379/").map(|e| e.1),
            Some(2379)
        );
        assert!(parse_endpoint("http://h:0").is_none());
        let mut h = on();
        h.mode = ACTIVE_ACTIVE.into();
        h.validate().unwrap();
        let pool: ipnet::Ipv4Net = "10.8.0.0/24".parse().unwrap();
        h.validate_pool(pool).unwrap();
        h.pool_block = 24;
        let e = h.validate_pool(pool).unwrap_err().to_string();
        assert!(
            e.contains("`ha.pool_block` = 24") && e.contains("e.g. 26"),
            "{e}"
        );
    }
}
