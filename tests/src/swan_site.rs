//! A strongSwan 5.9 site gateway (charon-systemd + swanctl, kernel-libipsec userspace ESP) for
//! the site-to-site tests: one net-to-net connection to one peer gateway, policy-based or
//! route-based, PSK or certificates. Built on [`Charon`] (its own `strongswan.conf`, VICI
//! socket and file log in a folder of the test).
//!
//! Policy-based: the child's `local_ts` / `remote_ts` are the site prefixes, and charon
//! installs a route per remote prefix into `ipsec0` (routing table 220) as usual.
//!
//! Route-based: the child's traffic selectors are `0.0.0.0/0 === 0.0.0.0/0`, and what goes
//! through the tunnel is decided by routes: `ip route replace PREFIX dev ipsec0` in the main
//! table for every remote prefix. kernel-libipsec ignores `charon.install_routes = no` and
//! still installs `default dev ipsec0` (plus `throw PEER`) into table 220, which the rule
//! `220: from all lookup 220` consults before the main table: everything, even packets just
//! decrypted for the local LAN, would loop back into the tunnel. So [`SwanSite::start`] deletes
//! that rule in the gateway's namespace (charon adds it once, at start) and adds the routes;
//! [`SwanSite::restart`] does both again (the routes vanish with the old `ipsec0`).
//!
//! kernel-libipsec never raises acquires, so there is no `start_action = trap` (nor
//! `dpd_action` / `close_action = trap`): one side initiates (`start`) or is told to
//! ([`SwanSite::initiate`]).
//!
//! ```text
//! let lab = SiteLab::new("s2s", 71)?;                      // declare the lab first
//! let mut cfg = SwanSiteConfig::between(&lab, SiteId::C, SiteId::A, SwanAuth::Psk(psk));
//! cfg.remote_prefixes.push(lab.a.pool);                    // A's point-to-site clients too
//! cfg.mode = SwanMode::RouteBased;                          // or PolicyBased (the default)
//! cfg.start_action = StartAction::Start;                    // C initiates; None = respond
//! let c = SwanSite::start(&lab.c.gw, &dir.join("gwc"), &cfg)?;
//! c.wait_child_installed(Duration::from_secs(20))?;
//! wait_ping(&lab.c.host, lab.a.host_addr, Duration::from_secs(10))?;
//! c.wait_log(PSK_MISMATCH, timeout)?;                      // refusals: the constants below
//! ```

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cidr::Ipv4Cidr;
use crate::gatehoused::certs_cli;
use crate::netns::Netns;
use crate::proc::signal;
use crate::sites::{SiteId, SiteLab, ip_ok};
use crate::strongswan::{Charon, IPSEC_DEV, SwanctlCreds, tail};

/// Logged by both ends for every CHILD SA (first one and rekeys):
/// `CHILD_SA NAME{N} established with SPIs ... and TS ... === ...`.
pub const CHILD_ESTABLISHED: &str = "established with SPIs";
/// Logged by the side whose AUTH payload the peer refused.
pub const AUTH_FAILED_RECEIVED: &str = "received AUTHENTICATION_FAILED notify error";
/// Logged by the side that checked the peer's PSK AUTH and found it wrong:
/// `tried 1 shared key for 'ID' - 'ID', but MAC mismatched`.
pub const PSK_MISMATCH: &str = "but MAC mismatched";
/// Logged when there is no PSK at all for the two identities.
pub const NO_SHARED_KEY: &str = "no shared key found for";
/// Logged by the responder that found no common IKE proposal in IKE_SA_INIT (after
/// `received proposals: ...` and `configured proposals: ...` lines), before it answers
/// N(NO_PROPOSAL_CHOSEN).
pub const IKE_NO_PROPOSAL: &str = "received proposals unacceptable";
/// Logged by the initiator whose IKE proposals the responder refused.
pub const IKE_NO_PROPOSAL_RECEIVED: &str = "received NO_PROPOSAL_CHOSEN notify error";
/// Logged by the responder that found no common ESP proposal for the CHILD SA (the IKE SA
/// stays up).
pub const ESP_NO_PROPOSAL: &str = "no acceptable proposal found";
/// Logged by the initiator whose ESP proposals the responder refused.
pub const ESP_NO_PROPOSAL_RECEIVED: &str = "received NO_PROPOSAL_CHOSEN notify";
/// The rule kernel-netlink installs for charon's routing table (see the module docs).
const ROUTING_TABLE: &str = "220";
const POLL: Duration = Duration::from_millis(200);
/// How long charon gets to make `ipsec0` and its routing rule after its VICI socket exists.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How the two gateways prove who they are.
#[derive(Clone, Debug)]
pub enum SwanAuth {
    /// A pre-shared key (the same string at both ends; strongSwan reads a `0x` prefix as hex
    /// and `0s` as base64). Stored in a `secrets { ike-... { id-1, id-2, secret } }` entry for
    /// the two identities.
    Psk(String),
    /// A certificate and its key, and the CA that issued the peer's certificate. `id`s must
    /// match a subject alternative name of the certificates (the gateways' addresses with
    /// [`issue_site_cert`]).
    Pubkey(SwanctlCreds),
}

/// Which traffic goes through the tunnel, see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwanMode {
    PolicyBased,
    RouteBased,
}

/// The child's `start_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAction {
    /// Initiate as soon as the connection is loaded.
    Start,
    /// Only respond (or [`SwanSite::initiate`] explicitly).
    None,
    // No `trap`: kernel-libipsec never raises an acquire (libipsec drops a packet that
    // matches a policy without SA: "could not find an outbound IPsec SA ... dropping packet"),
    // so a trap policy never starts anything.
}

impl StartAction {
    fn as_str(self) -> &'static str {
        match self {
            StartAction::Start => "start",
            StartAction::None => "none",
        }
    }
}

/// One net-to-net connection, rendered into `swanctl.conf`.
#[derive(Clone, Debug)]
pub struct SwanSiteConfig {
    /// Connection name; the child is `<name>-net` ([`SwanSiteConfig::child`]).
    pub name: String,
    pub local_addr: std::net::IpAddr,
    pub remote_addr: std::net::IpAddr,
    /// `local.id` / `remote.id` (default: the addresses, IKE ID type IPv4).
    pub local_id: String,
    pub remote_id: String,
    /// This site's prefixes: the child's `local_ts` when policy-based.
    pub local_prefixes: Vec<Ipv4Cidr>,
    /// The peer's prefixes: `remote_ts` when policy-based, the routes into `ipsec0` when
    /// route-based.
    pub remote_prefixes: Vec<Ipv4Cidr>,
    /// IPv6 prefixes of this site and of the peer (a dual-stack site): added to the
    /// selectors when policy-based; route-based selectors then take `::/0` too.
    pub local_prefixes_v6: Vec<String>,
    pub remote_prefixes_v6: Vec<String>,
    pub mode: SwanMode,
    pub auth: SwanAuth,
    pub start_action: StartAction,
    /// IKE `proposals` (default `default`: strongSwan's stock set).
    pub ike_proposals: String,
    /// Child `esp_proposals` (default `default`).
    pub esp_proposals: String,
    /// `dpd_delay` (default 10s).
    pub dpd_delay: String,
    /// Child `dpd_action` (default `restart`: re-establish when the peer is declared dead;
    /// not `trap`, see [`StartAction`]).
    pub dpd_action: String,
    /// Child `close_action` (default `none`).
    pub close_action: String,
    /// IKE SA `rekey_time` (default 4h).
    pub ike_rekey_time: String,
    /// CHILD SA `rekey_time` (default 1h).
    pub child_rekey_time: String,
    /// `keyingtries` (default 0: retry forever).
    pub keyingtries: u32,
    /// Further lines for the connection block, as they are (e.g. `mobike = no`).
    pub extra: Vec<String>,
    /// Further lines for the child block, as they are (e.g. `rand_time = 0s`).
    pub child_extra: Vec<String>,
    /// Goes into `strongswan.conf`'s `charon { }` section as it is (e.g.
    /// `retransmit_timeout = 1\n`).
    pub charon_extra: String,
}

impl SwanSiteConfig {
    /// A policy-based responder (`start_action = none`) with the addresses as identities and
    /// strongSwan's default proposals.
    pub fn new(
        name: &str,
        local_addr: impl Into<std::net::IpAddr>,
        remote_addr: impl Into<std::net::IpAddr>,
        local_prefixes: &[Ipv4Cidr],
        remote_prefixes: &[Ipv4Cidr],
        auth: SwanAuth,
    ) -> SwanSiteConfig {
        let (local_addr, remote_addr) = (local_addr.into(), remote_addr.into());
        SwanSiteConfig {
            name: name.to_string(),
            local_addr,
            remote_addr,
            local_id: local_addr.to_string(),
            remote_id: remote_addr.to_string(),
            local_prefixes: local_prefixes.iter().map(Ipv4Cidr::network).collect(),
            remote_prefixes: remote_prefixes.iter().map(Ipv4Cidr::network).collect(),
            local_prefixes_v6: Vec::new(),
            remote_prefixes_v6: Vec::new(),
            mode: SwanMode::PolicyBased,
            auth,
            start_action: StartAction::None,
            ike_proposals: "default".to_string(),
            esp_proposals: "default".to_string(),
            dpd_delay: "10s".to_string(),
            dpd_action: "restart".to_string(),
            close_action: "none".to_string(),
            ike_rekey_time: "4h".to_string(),
            child_rekey_time: "1h".to_string(),
            keyingtries: 0,
            extra: Vec::new(),
            child_extra: Vec::new(),
            charon_extra: String::new(),
        }
    }

    /// [`SwanSiteConfig::new`] for gateway `local` of `lab` towards gateway `remote`: the
    /// underlay addresses, local prefix = `local`'s LAN, remote prefix = `remote`'s LAN.
    /// Connection name `<local><remote>`, e.g. `ca`. Push a pool onto `remote_prefixes` (and
    /// the peer's `local_prefixes`) for point-to-site clients of the peer.
    pub fn between(lab: &SiteLab, local: SiteId, remote: SiteId, auth: SwanAuth) -> Self {
        let (l, r) = (lab.site(local), lab.site(remote));
        let name = format!("{}{}", local.name(), remote.name());
        SwanSiteConfig::new(
            &name,
            l.underlay_addr,
            r.underlay_addr,
            &[l.lan],
            &[r.lan],
            auth,
        )
    }

    /// The child's name (what `swanctl --initiate --child` takes and the log shows).
    pub fn child(&self) -> String {
        format!("{}-net", self.name)
    }

    /// The child's traffic selectors as written: the prefixes, or `0.0.0.0/0` route-based.
    pub fn traffic_selectors(&self) -> (String, String) {
        let join = |p: &[Ipv4Cidr], v6: &[String]| {
            p.iter()
                .map(ToString::to_string)
                .chain(v6.iter().cloned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let dual = !self.local_prefixes_v6.is_empty() || !self.remote_prefixes_v6.is_empty();
        let any = if dual { "0.0.0.0/0, ::/0" } else { "0.0.0.0/0" };
        match self.mode {
            SwanMode::PolicyBased => (
                join(&self.local_prefixes, &self.local_prefixes_v6),
                join(&self.remote_prefixes, &self.remote_prefixes_v6),
            ),
            SwanMode::RouteBased => (any.to_string(), any.to_string()),
        }
    }

    /// The whole `swanctl.conf`: the connection, and the PSK in `secrets` if there is one.
    /// `cert` is the certificate's file name in `swanctl/x509/` for [`SwanAuth::Pubkey`].
    pub fn render(&self, cert: Option<&str>) -> Result<String> {
        let method = match &self.auth {
            SwanAuth::Psk(_) => "psk",
            SwanAuth::Pubkey(_) => "pubkey",
        };
        let (local_ts, remote_ts) = self.traffic_selectors();
        ensure!(
            !local_ts.is_empty() && !remote_ts.is_empty(),
            "connection {}: a policy-based child needs local and remote prefixes",
            self.name
        );
        let mut c = String::from("# written by gatehouse-tests (swan_site.rs)\nconnections {\n");
        let _ = writeln!(c, "  {} {{", self.name);
        let _ = writeln!(c, "    version = 2");
        let _ = writeln!(c, "    local_addrs = {}", self.local_addr);
        let _ = writeln!(c, "    remote_addrs = {}", self.remote_addr);
        let _ = writeln!(c, "    proposals = {}", self.ike_proposals);
        let _ = writeln!(c, "    rekey_time = {}", self.ike_rekey_time);
        let _ = writeln!(c, "    dpd_delay = {}", self.dpd_delay);
        let _ = writeln!(c, "    keyingtries = {}", self.keyingtries);
        for line in &self.extra {
            let _ = writeln!(c, "    {line}");
        }
        let _ = writeln!(c, "    local {{");
        let _ = writeln!(c, "      auth = {method}");
        let _ = writeln!(c, "      id = \"{}\"", self.local_id);
        if let Some(cert) = cert {
            let _ = writeln!(c, "      certs = {cert}");
        }
        let _ = writeln!(c, "    }}");
        let _ = writeln!(c, "    remote {{");
        let _ = writeln!(c, "      auth = {method}");
        let _ = writeln!(c, "      id = \"{}\"", self.remote_id);
        let _ = writeln!(c, "    }}");
        let _ = writeln!(c, "    children {{");
        let _ = writeln!(c, "      {} {{", self.child());
        let _ = writeln!(c, "        local_ts = {local_ts}");
        let _ = writeln!(c, "        remote_ts = {remote_ts}");
        let _ = writeln!(c, "        esp_proposals = {}", self.esp_proposals);
        let _ = writeln!(c, "        rekey_time = {}", self.child_rekey_time);
        let _ = writeln!(c, "        dpd_action = {}", self.dpd_action);
        let _ = writeln!(c, "        close_action = {}", self.close_action);
        let _ = writeln!(c, "        start_action = {}", self.start_action.as_str());
        for line in &self.child_extra {
            let _ = writeln!(c, "        {line}");
        }
        let _ = writeln!(c, "      }}");
        let _ = writeln!(c, "    }}");
        let _ = writeln!(c, "  }}");
        c.push_str("}\n");
        if let SwanAuth::Psk(secret) = &self.auth {
            ensure!(
                !secret.contains(['"', '\n', '\\']),
                "PSK {secret:?}: no quotes, backslashes or newlines"
            );
            let _ = writeln!(c, "secrets {{\n  ike-{} {{", self.name);
            let _ = writeln!(c, "    id-local = \"{}\"", self.local_id);
            let _ = writeln!(c, "    id-remote = \"{}\"", self.remote_id);
            let _ = writeln!(c, "    secret = \"{secret}\"");
            c.push_str("  }\n}\n");
        }
        Ok(c)
    }
}

/// Issues a gateway certificate `NAME` for address `san` from the `gatehouse-certs` PKI in
/// `pki` (creating its CA first if `pki/ca.crt` does not exist) and returns the files a
/// [`SwanAuth::Pubkey`] needs: the CA, `pki/server/NAME.crt` and `pki/server/NAME.key`.
/// Needs the workspace's binaries built (`cargo build --workspace --bins`).
pub fn issue_site_cert(pki: &Path, name: &str, san: Ipv4Addr) -> Result<SwanctlCreds> {
    let ca = pki.join("ca.crt");
    if !ca.exists() {
        certs_cli(pki, &["init-ca", "--name", "Gatehouse site test CA"])?;
    }
    let san = san.to_string();
    let printed = certs_cli(pki, &["issue-server", "--name", name, "--san", &san])?;
    let cert = pki.join("server").join(format!("{name}.crt"));
    let key = pki.join("server").join(format!("{name}.key"));
    ensure!(
        ca.exists() && cert.exists() && key.exists(),
        "issue-server --name {name} wrote no {} / {}: {printed}",
        cert.display(),
        key.display()
    );
    Ok(SwanctlCreds { ca, cert, key })
}

/// One CHILD SA as `swanctl --list-sas` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildSaInfo {
    pub name: String,
    /// The `#N` after the name.
    pub unique_id: u32,
    /// `INSTALLED`, `REKEYED`, ...
    pub state: String,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    pub bytes_in: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub packets_out: u64,
}

/// One IKE SA as `swanctl --list-sas` shows it, with its CHILD SAs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IkeSaInfo {
    pub name: String,
    pub unique_id: u32,
    /// `ESTABLISHED`, `CONNECTING`, ...
    pub state: String,
    /// The line after `local  ` / `remote `: `'ID' @ ADDR[PORT]`.
    pub local: String,
    pub remote: String,
    /// E.g. `AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519`.
    pub algorithms: String,
    pub children: Vec<ChildSaInfo>,
}

/// `NAME: #N, REST` -> (NAME, N, REST).
fn name_id(line: &str) -> Option<(&str, u32, &str)> {
    let (name, rest) = line.split_once(": #")?;
    let (id, rest) = rest.split_once(", ")?;
    Some((name, id.parse().ok()?, rest))
}

/// `in  c1d2e3f4,   1234 bytes,    12 packets, ...` -> (bytes, packets).
fn counters(rest: &str) -> (u64, u64) {
    let mut parts = rest.split(',').skip(1);
    let mut num = |unit: &str| {
        parts
            .next()
            .and_then(|p| p.trim().strip_suffix(unit))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let bytes = num("bytes");
    let packets = num("packets");
    (bytes, packets)
}

/// Parses the text of `swanctl --list-sas`.
pub fn parse_list_sas(text: &str) -> Vec<IkeSaInfo> {
    let mut ikes: Vec<IkeSaInfo> = Vec::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        match indent {
            0 => {
                if let Some((name, id, rest)) = name_id(t) {
                    ikes.push(IkeSaInfo {
                        name: name.to_string(),
                        unique_id: id,
                        state: rest.split(',').next().unwrap_or("").trim().to_string(),
                        ..IkeSaInfo::default()
                    });
                }
            }
            2 => {
                let Some(ike) = ikes.last_mut() else { continue };
                if let Some((name, id, rest)) =
                    name_id(t).filter(|(_, _, r)| r.starts_with("reqid"))
                {
                    ike.children.push(ChildSaInfo {
                        name: name.to_string(),
                        unique_id: id,
                        state: rest.split(',').nth(1).unwrap_or("").trim().to_string(),
                        ..ChildSaInfo::default()
                    });
                } else if let Some(l) = t.strip_prefix("local ") {
                    ike.local = l.trim().to_string();
                } else if let Some(r) = t.strip_prefix("remote ") {
                    ike.remote = r.trim().to_string();
                } else if t.contains('/') && !t.contains(' ') {
                    ike.algorithms = t.to_string();
                }
            }
            _ => {
                let Some(child) = ikes.last_mut().and_then(|i| i.children.last_mut()) else {
                    continue;
                };
                let ts = |s: &str| s.split_whitespace().map(str::to_string).collect();
                if let Some(rest) = t.strip_prefix("in ") {
                    (child.bytes_in, child.packets_in) = counters(rest);
                } else if let Some(rest) = t.strip_prefix("out ") {
                    (child.bytes_out, child.packets_out) = counters(rest);
                } else if let Some(l) = t.strip_prefix("local ") {
                    child.local_ts = ts(l);
                } else if let Some(r) = t.strip_prefix("remote ") {
                    child.remote_ts = ts(r);
                }
            }
        }
    }
    ikes
}

/// A strongSwan site gateway running in a gateway's namespace; stopped on Drop (declare it
/// after the lab whose namespace it runs in).
#[derive(Debug)]
pub struct SwanSite<'a> {
    // Declared first: dropped (stopped) first.
    charon: Charon,
    ns: &'a Netns,
    dir: PathBuf,
    config: SwanSiteConfig,
    /// How many times it was restarted (earlier logs are `charon.log.1`, ...).
    runs: u32,
}

impl<'a> SwanSite<'a> {
    /// Starts charon in `ns` with its files in `dir` (created), installs the credentials,
    /// writes `swanctl.conf` for `config` and loads it (with `start_action = start` this
    /// initiates at once); route-based, also removes charon's routing rule and adds the
    /// routes into `ipsec0`. Does not wait for the tunnel: see
    /// [`SwanSite::wait_child_installed`].
    pub fn start(ns: &'a Netns, dir: &Path, config: &SwanSiteConfig) -> Result<SwanSite<'a>> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let charon = Charon::start(ns, dir, &config.charon_extra)?;
        let cert = match &config.auth {
            SwanAuth::Psk(_) => None,
            SwanAuth::Pubkey(creds) => Some(charon.install_creds(&config.name, creds)?),
        };
        charon.write_swanctl_conf(&config.render(cert.as_deref())?)?;
        let site = SwanSite {
            charon,
            ns,
            dir: dir.to_path_buf(),
            config: config.clone(),
            runs: 1,
        };
        site.setup()?;
        Ok(site)
    }

    /// What every run of charon needs once it is up: the route-based plumbing, then the
    /// connection loaded.
    fn setup(&self) -> Result<()> {
        if self.config.mode == SwanMode::RouteBased {
            self.wait_ipsec_dev()?;
            self.remove_routing_rule()?;
            for p in &self.config.remote_prefixes {
                self.add_route(*p)?;
            }
        }
        self.charon
            .load_all()
            .with_context(|| format!("loading {}'s connection", self.config.name))?;
        Ok(())
    }

    /// Waits until kernel-libipsec's TUN device exists (it is made when the plugin loads).
    fn wait_ipsec_dev(&self) -> Result<()> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let out = self.ns.exec("ip", ["link", "show", IPSEC_DEV])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline || !self.charon.proc().is_running() {
                bail!(
                    "no {IPSEC_DEV} in {} (is kernel-libipsec loaded before kernel-netlink?); \
                     charon log:\n{}",
                    self.ns.name(),
                    self.charon.log_tail(20)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Deletes `from all lookup 220` (see the module docs), waiting for charon to add it.
    fn remove_routing_rule(&self) -> Result<()> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let rules = self
                .ns
                .exec_ok("ip", ["rule", "show", "table", ROUTING_TABLE])?;
            if !rules.trim().is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "charon added no routing rule for table {ROUTING_TABLE} in {}",
                    self.ns.name()
                );
            }
            thread::sleep(POLL);
        }
        while !self
            .ns
            .exec_ok("ip", ["rule", "show", "table", ROUTING_TABLE])?
            .trim()
            .is_empty()
        {
            ip_ok(&["-n", self.ns.name(), "rule", "del", "table", ROUTING_TABLE])?;
        }
        Ok(())
    }

    /// `ip route replace PREFIX dev ipsec0` in the main table of the gateway's namespace
    /// (route-based: more prefixes through the tunnel; the route goes when charon stops).
    pub fn add_route(&self, prefix: Ipv4Cidr) -> Result<()> {
        let dest = prefix.network().to_string();
        ip_ok(&[
            "-n",
            self.ns.name(),
            "route",
            "replace",
            &dest,
            "dev",
            IPSEC_DEV,
        ])
    }

    pub fn config(&self) -> &SwanSiteConfig {
        &self.config
    }

    /// The daemon, for `swanctl` commands of one's own.
    pub fn charon(&self) -> &Charon {
        &self.charon
    }

    pub fn ns(&self) -> &Netns {
        self.ns
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The child's name ([`SwanSiteConfig::child`]).
    pub fn child(&self) -> String {
        self.config.child()
    }

    pub fn is_running(&self) -> bool {
        self.charon.proc().is_running()
    }

    pub fn pid(&self) -> u32 {
        self.charon.pid()
    }

    /// `swanctl --list-sas` as text.
    pub fn list_sas(&self) -> Result<String> {
        self.charon.swanctl(&["--list-sas"])
    }

    /// `swanctl --list-sas`, parsed.
    pub fn sas(&self) -> Result<Vec<IkeSaInfo>> {
        Ok(parse_list_sas(&self.list_sas()?))
    }

    /// The installed CHILD SA of this connection, if there is one.
    pub fn installed_child(&self) -> Result<Option<ChildSaInfo>> {
        let child = self.child();
        Ok(self
            .sas()?
            .into_iter()
            .filter(|ike| ike.name == self.config.name && ike.state == "ESTABLISHED")
            .flat_map(|ike| ike.children)
            .find(|c| c.name == child && c.state == "INSTALLED"))
    }

    /// Polls `swanctl --list-sas` until this connection's CHILD SA is installed; fails with
    /// the log's tail after `timeout` or if charon exits.
    pub fn wait_child_installed(&self, timeout: Duration) -> Result<ChildSaInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.installed_child()? {
                return Ok(c);
            }
            if !self.is_running() || Instant::now() >= deadline {
                bail!(
                    "{} in {}: no installed CHILD SA {} within {timeout:?} (running: {}); \
                     SAs:\n{}\nlog:\n{}",
                    self.config.name,
                    self.ns.name(),
                    self.child(),
                    self.is_running(),
                    self.list_sas().unwrap_or_default(),
                    self.log_tail(30)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Polls until this connection has no installed CHILD SA (e.g. after the peer went away).
    pub fn wait_child_gone(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.installed_child()?.is_some() {
            if Instant::now() >= deadline {
                bail!(
                    "{}: CHILD SA {} still installed after {timeout:?}:\n{}",
                    self.config.name,
                    self.child(),
                    self.list_sas().unwrap_or_default()
                );
            }
            thread::sleep(POLL);
        }
        Ok(())
    }

    /// How many CHILD SAs of this connection charon established in this run (the first one
    /// and every rekey or re-establishment), from the log.
    pub fn children_established(&self) -> usize {
        let pat = format!("CHILD_SA {}{{", self.child());
        let mut ids: Vec<String> = self
            .log()
            .lines()
            .filter(|l| l.contains(CHILD_ESTABLISHED))
            .filter_map(|l| l.split(&pat).nth(1))
            .filter_map(|rest| rest.split('}').next())
            .map(str::to_string)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// `swanctl --initiate --child CHILD`: returns once the CHILD SA is up (or fails with
    /// swanctl's output and the log).
    pub fn initiate(&self) -> Result<String> {
        self.charon.initiate(&self.child())
    }

    /// `swanctl --terminate --ike NAME` (sends DELETE).
    pub fn terminate(&self) -> Result<String> {
        self.charon.terminate(&self.config.name)
    }

    /// This run's charon log.
    pub fn log(&self) -> String {
        self.charon.log()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    pub fn log_path(&self) -> &Path {
        self.charon.log_path()
    }

    /// Every run's log, oldest first (a [`SwanSite::restart`] keeps the earlier ones).
    pub fn all_logs(&self) -> String {
        let mut all = String::new();
        for run in 1..self.runs {
            let old = self.old_log(run);
            all.push_str(&fs::read_to_string(old).unwrap_or_default());
        }
        all.push_str(&self.log());
        all
    }

    /// Waits until this run's log contains `pattern` (fails early if charon exits).
    pub fn wait_log(&self, pattern: &str, timeout: Duration) -> Result<()> {
        self.charon.wait_log(pattern, timeout)
    }

    /// The lines of this run's log that contain `pattern`.
    pub fn log_lines(&self, pattern: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(pattern))
            .map(str::to_string)
            .collect()
    }

    fn old_log(&self, run: u32) -> PathBuf {
        self.dir.join(format!("charon.log.{run}"))
    }

    /// SIGTERM (charon deletes its SAs, telling the peer), SIGKILL after 3 s.
    pub fn stop(&self) {
        self.charon.stop();
    }

    /// SIGKILL: a crash, the peer hears nothing (it finds out by DPD).
    pub fn kill_hard(&self) {
        signal(self.charon.pid(), "KILL");
        self.charon.stop();
    }

    /// Stops charon (SIGTERM, unless it already exited), keeps its log as
    /// `charon.log.N`, and starts it again with the same config (and files), routes and
    /// all. Does not wait for the tunnel.
    pub fn restart(&mut self) -> Result<()> {
        self.charon.stop();
        let log = self.charon.log_path().to_path_buf();
        if log.exists() {
            fs::rename(&log, self.old_log(self.runs))
                .with_context(|| format!("keeping {}", log.display()))?;
        }
        self.runs += 1;
        self.charon = Charon::start(self.ns, &self.dir, &self.config.charon_extra)?;
        self.setup()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "\
ca: #3, ESTABLISHED, IKEv2, 7d5ed0c18f8b5c72_i* 8f3a135cb3661c97_r
  local  '10.79.0.3' @ 10.79.0.3[4500]
  remote '10.79.0.1' @ 10.79.0.1[4500]
  AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519
  established 1s ago, rekeying in 14266s
  ca-net: #5, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128
    installed 1s ago, rekeying in 3326s, expires in 3959s
    in  577f8c1e,  23044 bytes,   269 packets,     1s ago
    out e8929e59,      0 bytes,     0 packets
    local  10.79.3.0/24
    remote 10.79.1.0/24 10.79.101.0/24
";

    #[test]
    fn parses_list_sas() {
        let sas = parse_list_sas(LIST);
        assert_eq!(sas.len(), 1);
        let ike = &sas[0];
        assert_eq!(
            (ike.name.as_str(), ike.unique_id, ike.state.as_str()),
            ("ca", 3, "ESTABLISHED")
        );
        assert_eq!(ike.local, "'10.79.0.3' @ 10.79.0.3[4500]");
        assert_eq!(ike.remote, "'10.79.0.1' @ 10.79.0.1[4500]");
        assert!(ike.algorithms.starts_with("AES_CBC-128/"), "{ike:?}");
        let c = &ike.children[0];
        assert_eq!(
            (c.name.as_str(), c.unique_id, c.state.as_str()),
            ("ca-net", 5, "INSTALLED")
        );
        assert_eq!((c.bytes_in, c.packets_in), (23044, 269));
        assert_eq!((c.bytes_out, c.packets_out), (0, 0));
        assert_eq!(c.local_ts, ["10.79.3.0/24"]);
        assert_eq!(c.remote_ts, ["10.79.1.0/24", "10.79.101.0/24"]);
        assert!(parse_list_sas("").is_empty());
    }

    fn config(mode: SwanMode, auth: SwanAuth) -> SwanSiteConfig {
        let mut c = SwanSiteConfig::new(
            "ca",
            Ipv4Addr::new(10, 79, 0, 3),
            Ipv4Addr::new(10, 79, 0, 1),
            &[Ipv4Cidr::new(Ipv4Addr::new(10, 79, 3, 1), 24)],
            &[
                Ipv4Cidr::new(Ipv4Addr::new(10, 79, 1, 0), 24),
                Ipv4Cidr::new(Ipv4Addr::new(10, 79, 101, 0), 24),
            ],
            auth,
        );
        c.mode = mode;
        c
    }

    fn has_line(t: &str, line: &str) -> bool {
        t.lines().any(|l| l.trim() == line)
    }

    #[test]
    fn renders_policy_based_psk() {
        let t = config(SwanMode::PolicyBased, SwanAuth::Psk("s3cret".into()))
            .render(None)
            .unwrap();
        for line in [
            "local_addrs = 10.79.0.3",
            "remote_addrs = 10.79.0.1",
            "auth = psk",
            "id = \"10.79.0.3\"",
            "id = \"10.79.0.1\"",
            "ca-net {",
            "local_ts = 10.79.3.0/24",
            "remote_ts = 10.79.1.0/24, 10.79.101.0/24",
            "start_action = none",
            "secret = \"s3cret\"",
            "id-remote = \"10.79.0.1\"",
        ] {
            assert!(has_line(&t, line), "missing {line:?}:\n{t}");
        }
        assert!(
            config(SwanMode::PolicyBased, SwanAuth::Psk("a\"b".into()))
                .render(None)
                .is_err()
        );
    }

    #[test]
    fn renders_route_based_pubkey() {
        let creds = SwanctlCreds {
            ca: "/ca.crt".into(),
            cert: "/c.crt".into(),
            key: "/c.key".into(),
        };
        let t = config(SwanMode::RouteBased, SwanAuth::Pubkey(creds))
            .render(Some("ca.crt"))
            .unwrap();
        for line in [
            "auth = pubkey",
            "certs = ca.crt",
            "local_ts = 0.0.0.0/0",
            "remote_ts = 0.0.0.0/0",
        ] {
            assert!(has_line(&t, line), "missing {line:?}:\n{t}");
        }
        assert!(!t.contains("secrets"), "{t}");
    }
}
