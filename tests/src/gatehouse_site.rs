//! Gatehouse gateways in a [`SiteLab`]: a data directory per site (`gatehoused init` with
//! the site's underlay address, LAN and pool) and `[[connection]]` tables appended to its
//! `gateway.toml`, with PSK files written 0600 next to it.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};

use crate::Ipv4Cidr;
use crate::gatehoused::{GatewayDir, toml_str};
use crate::sites::{SiteId, SiteLab};

/// One `[[connection]]`.
#[derive(Clone, Debug)]
pub struct GhConnection {
    pub name: String,
    /// `site-to-site` or `vnet-to-vnet`.
    pub kind: &'static str,
    pub remote_gateway: Ipv4Addr,
    pub remote_address_space: Vec<Ipv4Cidr>,
    /// IPv6 prefixes behind the peer (a dual-stack site), listed after the IPv4 ones.
    pub remote_address_space_v6: Vec<String>,
    /// The shared key (written to `<name>.psk`); `None`: certificates.
    pub psk: Option<String>,
    pub remote_id: Option<String>,
    pub policy_based: bool,
    pub initiate: bool,
    pub ike_proposals: Option<Vec<String>>,
    pub esp_proposals: Option<Vec<String>>,
    pub dpd: Option<String>,
    pub child_lifetime: Option<String>,
    pub ike_lifetime: Option<String>,
}

impl GhConnection {
    /// A route-based PSK connection of `lab`'s gateway `local` to gateway `remote`, which
    /// reaches `remote`'s LAN and point-to-site pool; initiating.
    pub fn between(lab: &SiteLab, local: SiteId, remote: SiteId, psk: &str) -> GhConnection {
        let r = lab.site(remote);
        GhConnection {
            name: format!("{}{}", local.name(), remote.name()),
            kind: "site-to-site",
            remote_gateway: r.underlay_addr,
            remote_address_space: vec![r.lan.network(), r.pool.network()],
            remote_address_space_v6: Vec::new(),
            psk: Some(psk.to_owned()),
            remote_id: None,
            policy_based: false,
            initiate: true,
            ike_proposals: None,
            esp_proposals: None,
            dpd: Some("5s".into()),
            child_lifetime: None,
            ike_lifetime: None,
        }
    }

    /// The TOML table.
    pub fn render(&self) -> String {
        let list = |v: &[String]| v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
        let mut t = String::from("\n[[connection]]\n");
        let _ = writeln!(t, "name = {}", toml_str(&self.name));
        let _ = writeln!(t, "type = {}", toml_str(self.kind));
        let _ = writeln!(
            t,
            "remote_gateway = {}",
            toml_str(&self.remote_gateway.to_string())
        );
        let space: Vec<String> = self
            .remote_address_space
            .iter()
            .map(|c| c.network().to_string())
            .chain(self.remote_address_space_v6.iter().cloned())
            .collect();
        let _ = writeln!(t, "remote_address_space = [{}]", list(&space));
        match &self.psk {
            Some(_) => {
                let _ = writeln!(t, "auth = \"psk\"");
                let _ = writeln!(t, "psk_file = {}", toml_str(&format!("{}.psk", self.name)));
            }
            None => {
                let _ = writeln!(t, "auth = \"certificate\"");
            }
        }
        if let Some(id) = &self.remote_id {
            let _ = writeln!(t, "remote_id = {}", toml_str(id));
        }
        let _ = writeln!(t, "policy_based = {}", self.policy_based);
        let _ = writeln!(t, "initiate = {}", self.initiate);
        if let Some(p) = &self.ike_proposals {
            let _ = writeln!(t, "ike_proposals = [{}]", list(p));
        }
        if let Some(p) = &self.esp_proposals {
            let _ = writeln!(t, "esp_proposals = [{}]", list(p));
        }
        for (k, v) in [
            ("dpd", &self.dpd),
            ("child_lifetime", &self.child_lifetime),
            ("ike_lifetime", &self.ike_lifetime),
        ] {
            if let Some(v) = v {
                let _ = writeln!(t, "{k} = {}", toml_str(v));
            }
        }
        t
    }
}

/// The data directory of Gatehouse gateway `id` in `lab`: public address = its underlay
/// address (the SAN of its certificate), address space = its LAN, pool = its pool, TUN
/// `gh<k><a|b|c>`.
pub fn site_gateway_dir(lab: &SiteLab, id: SiteId, dir: &Path) -> Result<GatewayDir> {
    fs::create_dir_all(dir)?;
    let s = lab.site(id);
    let gw = GatewayDir::init(
        dir,
        &s.underlay_addr.to_string(),
        &[s.lan.network()],
        Some(s.pool.network()),
    )?;
    gw.set(
        "tun_name",
        &toml_str(&format!("gh{}{}", lab.k, id.name().to_ascii_lowercase())),
    )?;
    Ok(gw)
}

/// Appends `conns` to the gateway's `gateway.toml` and writes their PSK files (0600).
pub fn add_connections(gw: &GatewayDir, conns: &[GhConnection]) -> Result<()> {
    let mut text = gw.config_text()?;
    for c in conns {
        if let Some(psk) = &c.psk {
            let path = gw.path().join(format!("{}.psk", c.name));
            write_secret(&path, psk)?;
        }
        text.push_str(&c.render());
    }
    fs::write(gw.config_path(), text)
        .with_context(|| format!("writing {}", gw.config_path().display()))
}

/// Replaces the gateway's connections (everything from the first `[[connection]]` on).
pub fn set_connections(gw: &GatewayDir, conns: &[GhConnection]) -> Result<()> {
    let text = gw.config_text()?;
    let base = match text.find("\n[[connection]]") {
        Some(i) => &text[..i],
        None => text.as_str(),
    };
    fs::write(gw.config_path(), format!("{}\n", base.trim_end()))?;
    add_connections(gw, conns)
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))
}
