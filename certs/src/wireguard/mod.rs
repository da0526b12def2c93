//! WireGuard identities for stock WireGuard apps (point-to-site): a keypair and a fixed
//! address of the gateway's client pool per client, a registry of them, and `wg-quick`
//! exports (with a QR code for phones).
//!
//! Files, in the PKI folder:
//! - `wireguard/peers.toml`: the registry (`[[peer]]` name, public key, address, issued,
//!   revoked); the gateway reads it at start and again whenever it changes, so a revoked
//!   peer's tunnel ends within seconds;
//! - `wireguard/<name>.key`: the client's private key (0600), read only by `export`.
//!
//! The gateway's own key is `wireguard.key` in the data directory (the PKI folder's parent,
//! next to `gateway.toml`): [`gateway_key`] creates it (0600) when missing, so the gateway and
//! this tool agree on it whichever runs first.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gatehouse_engine::wireguard::{WgKey, WgPublicKey};
use serde::{Deserialize, Serialize};

use crate::fsutil::{KEY_MODE, PRIVATE_DIR_MODE, PUBLIC_MODE, ensure_dir, write_atomic};

mod facts;
pub use facts::{GatewayFacts, gateway_facts};

/// The gateway's WireGuard key file name (in the data directory).
pub const GATEWAY_KEY_FILE: &str = "wireguard.key";
/// Default WireGuard port (`[wireguard] port`).
pub const DEFAULT_PORT: u16 = 51820;

/// One client's WireGuard identity (a registry entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgIdentity {
    /// The client's name.
    pub name: String,
    /// Its public key (base64).
    pub public_key: String,
    /// Its address in the client pool (the gateway never leases it to anyone else).
    pub address: Ipv4Addr,
    /// When it was issued (RFC 3339).
    pub issued: String,
    /// When it was revoked (RFC 3339); None: valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

impl WgIdentity {
    /// The public key, parsed.
    pub fn key(&self) -> Result<WgPublicKey> {
        WgPublicKey::from_base64(&self.public_key)
            .map_err(|e| anyhow::anyhow!("WireGuard peer {}: public key: {e}", self.name))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    #[serde(default, rename = "peer")]
    peers: Vec<WgIdentity>,
}

/// `wireguard/peers.toml` of PKI folder `pki`.
pub fn registry_path(pki: &Path) -> PathBuf {
    pki.join("wireguard").join("peers.toml")
}

fn key_path(pki: &Path, name: &str) -> PathBuf {
    pki.join("wireguard").join(format!("{name}.key"))
}

/// Every WireGuard identity of PKI folder `pki`, revoked ones included (none when the
/// registry does not exist).
pub fn identities(pki: &Path) -> Result<Vec<WgIdentity>> {
    let path = registry_path(pki);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let r: Registry = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    Ok(r.peers)
}

fn save(pki: &Path, peers: Vec<WgIdentity>) -> Result<()> {
    let path = registry_path(pki);
    if let Some(dir) = path.parent() {
        ensure_dir(dir, PRIVATE_DIR_MODE)?;
    }
    let text = toml::to_string(&Registry { peers })?;
    write_atomic(&path, text.as_bytes(), PUBLIC_MODE)?;
    Ok(())
}

fn random_key() -> Result<WgKey> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the OS random number generator failed"))?;
    Ok(WgKey::from_random(b))
}

/// Reads the gateway's WireGuard key from `data_dir/wireguard.key`, creating it (0600) when
/// missing. Refuses a key file others can read.
pub fn gateway_key(data_dir: &Path) -> Result<WgKey> {
    let path = data_dir.join(GATEWAY_KEY_FILE);
    let shown = path.display();
    if !path.exists() {
        let key = random_key()?;
        write_atomic(&path, format!("{}\n", key.to_base64()).as_bytes(), KEY_MODE)?;
        return Ok(key);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{shown} is accessible by group or others (mode {mode:04o}): run `chmod 600 {shown}`"
            );
        }
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {shown}"))?;
    WgKey::from_base64(&text).map_err(|e| {
        anyhow::anyhow!(
            "{shown} is not a WireGuard private key ({e}): replace it with `wg genkey > {shown}` (peers then need the new public key) or restore it from a backup"
        )
    })
}

/// The data directory of PKI folder `pki` (its parent).
pub fn data_dir_of(pki: &Path) -> PathBuf {
    match pki.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Issues WireGuard identity `name`: a new keypair (the private key stored 0600 for
/// `export`) and `address`, or the highest free address of the pool (dynamic clients lease
/// from the bottom).
pub fn issue(pki: &Path, name: &str, address: Option<Ipv4Addr>, now: &str) -> Result<WgIdentity> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
        || name.starts_with('.')
    {
        bail!("{name:?} is not a valid name: use 1-64 letters, digits, '-', '_', '.' or '@'");
    }
    if !pki.is_dir() {
        bail!(
            "{} does not exist: create the PKI with `gatehouse-certs --pki {} init-ca` (or `gatehoused init`)",
            pki.display(),
            pki.display()
        );
    }
    let mut peers = identities(pki)?;
    if let Some(p) = peers.iter().find(|p| p.name == name && p.revoked.is_none()) {
        bail!(
            "WireGuard identity {name} exists already (address {}): revoke it first with `gatehouse-certs --pki {} revoke {name}`",
            p.address,
            pki.display()
        );
    }
    let facts = gateway_facts(&data_dir_of(pki))?;
    let pool = facts.pool;
    let used = |a: Ipv4Addr| peers.iter().any(|p| p.revoked.is_none() && p.address == a);
    let gateway = Ipv4Addr::from(u32::from(pool.network()) + 1);
    let address = match address {
        Some(a) => {
            if !pool.contains(&a) || a == pool.network() || a == pool.broadcast() || a == gateway {
                bail!(
                    "--address {a} is not a client address of `client_pool` {pool}: pick one between {} and {}",
                    Ipv4Addr::from(u32::from(gateway) + 1),
                    Ipv4Addr::from(u32::from(pool.broadcast()) - 1)
                );
            }
            if used(a) {
                bail!("--address {a} belongs to another WireGuard identity: pick another");
            }
            a
        }
        None => {
            let first = u32::from(gateway) + 1;
            let last = u32::from(pool.broadcast()) - 1;
            (first..=last)
                .rev()
                .map(Ipv4Addr::from)
                .find(|a| !used(*a))
                .with_context(|| {
                    format!("`client_pool` {pool} has no address left for WireGuard identities: widen it")
                })?
        }
    };
    let key = random_key()?;
    ensure_dir(&pki.join("wireguard"), PRIVATE_DIR_MODE)?;
    write_atomic(
        &key_path(pki, name),
        format!("{}\n", key.to_base64()).as_bytes(),
        KEY_MODE,
    )?;
    let id = WgIdentity {
        name: name.to_owned(),
        public_key: key.public_key().to_string(),
        address,
        issued: now.to_owned(),
        revoked: None,
    };
    // A revoked identity of the same name stays in the registry (its record); the new one
    // is appended.
    peers.push(id.clone());
    save(pki, peers)?;
    Ok(id)
}

/// Revokes identity `name`: the gateway drops its tunnel when it next reads the registry
/// (within seconds). Its private key file is deleted.
pub fn revoke(pki: &Path, name: &str, now: &str) -> Result<Option<WgIdentity>> {
    let mut peers = identities(pki)?;
    let Some(p) = peers
        .iter_mut()
        .find(|p| p.name == name && p.revoked.is_none())
    else {
        return Ok(None);
    };
    p.revoked = Some(now.to_owned());
    let out = p.clone();
    save(pki, peers)?;
    let _ = std::fs::remove_file(key_path(pki, name));
    Ok(Some(out))
}

/// The `wg-quick` configuration of identity `name`, dialing `gateway` (a host name or
/// address; the port comes from `gateway.toml`).
pub fn export_config(pki: &Path, name: &str, gateway: &str) -> Result<String> {
    let peers = identities(pki)?;
    let Some(p) = peers.iter().find(|p| p.name == name && p.revoked.is_none()) else {
        bail!(
            "no valid WireGuard identity {name}: issue one with `gatehouse-certs --pki {} issue-wireguard {name}`",
            pki.display()
        );
    };
    let path = key_path(pki, name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the private key {}", path.display()))?;
    let key = WgKey::from_base64(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let data_dir = data_dir_of(pki);
    let facts = gateway_facts(&data_dir)?;
    let server = gateway_key(&data_dir)?.public_key();
    let allowed: Vec<String> = facts.allowed_ips().iter().map(|n| n.to_string()).collect();
    let mut addresses = vec![format!("{}/32", p.address)];
    if let Some(v6) = facts.ipv6_of(p.address) {
        addresses.push(format!("{v6}/128"));
    }
    let endpoint = if gateway.contains(':') && gateway.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{gateway}]:{}", facts.port)
    } else {
        format!("{gateway}:{}", facts.port)
    };
    let mut out = String::new();
    out.push_str(&format!(
        "# Gatehouse WireGuard identity {name}\n[Interface]\n"
    ));
    out.push_str(&format!("PrivateKey = {}\n", key.to_base64()));
    out.push_str(&format!("Address = {}\n", addresses.join(", ")));
    if !facts.dns.is_empty() {
        let dns: Vec<String> = facts.dns.iter().map(|d| d.to_string()).collect();
        out.push_str(&format!("DNS = {}\n", dns.join(", ")));
    }
    out.push_str("\n[Peer]\n");
    out.push_str(&format!("PublicKey = {server}\n"));
    out.push_str(&format!("Endpoint = {endpoint}\n"));
    out.push_str(&format!("AllowedIPs = {}\n", allowed.join(", ")));
    out.push_str("PersistentKeepalive = 25\n");
    Ok(out)
}

/// A QR code of `text` as a PNG (black on white, 4-module quiet zone), for the WireGuard
/// phone apps' "scan from QR code".
pub fn qr_png(text: &str) -> Result<Vec<u8>> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| anyhow::anyhow!("the configuration does not fit a QR code: {e}"))?;
    let width = code.width();
    let colors = code.to_colors();
    let (scale, quiet) = (8usize, 4usize);
    let side = (width + 2 * quiet) * scale;
    let mut pixels = vec![255u8; side * side];
    for y in 0..width {
        for x in 0..width {
            if colors[y * width + x] == qrcode::Color::Dark {
                for dy in 0..scale {
                    let row = (y + quiet) * scale + dy;
                    let start = row * side + (x + quiet) * scale;
                    pixels[start..start + scale].fill(0);
                }
            }
        }
    }
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, side as u32, side as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&pixels)?;
    }
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_gateway_key_is_created_private_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k = gateway_key(dir.path()).unwrap();
        let path = dir.path().join(GATEWAY_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            gateway_key(dir.path()).unwrap(),
            k,
            "read back, not made again"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", gateway_key(dir.path()).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = format!("{:#}", gateway_key(dir.path()).unwrap_err());
        assert!(e.contains("wg genkey"), "{e}");
    }

    #[test]
    fn issue_export_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        std::fs::write(
            dir.path().join("gateway.toml"),
            "public_addr = \"gw\"\nclient_pool = \"10.9.0.0/29\"\naddress_space = [\"10.1.0.0/24\"]\ndns = [\"10.1.0.53\"]\n[wireguard]\nport = 51999\n",
        )
        .unwrap();
        let a = issue(&pki, "phone", None, "t0").unwrap();
        assert_eq!(a.address, Ipv4Addr::new(10, 9, 0, 6));
        let b = issue(&pki, "laptop", None, "t0").unwrap();
        assert_eq!(b.address, Ipv4Addr::new(10, 9, 0, 5));
        assert!(issue(&pki, "phone", None, "t0").is_err());
        assert!(issue(&pki, "x", Some(Ipv4Addr::new(10, 9, 0, 5)), "t0").is_err());
        assert!(issue(&pki, "x", Some(Ipv4Addr::new(10, 9, 0, 1)), "t0").is_err());
        let conf = export_config(&pki, "phone", "vpn.example").unwrap();
        assert!(
            conf.contains("Address = 10.9.0.6/32\nDNS = 10.1.0.53\n"),
            "{conf}"
        );
        assert!(conf.contains("Endpoint = vpn.example:51999\n"), "{conf}");
        assert!(
            conf.contains("AllowedIPs = 10.1.0.0/24, 10.9.0.0/29\n"),
            "{conf}"
        );
        let server = gateway_key(dir.path()).unwrap().public_key();
        assert!(conf.contains(&format!("PublicKey = {server}\n")));
        let png = qr_png(&conf).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(revoke(&pki, "phone", "t1").unwrap().is_some());
        assert!(revoke(&pki, "phone", "t1").unwrap().is_none());
        assert!(export_config(&pki, "phone", "vpn.example").is_err());
        let all = identities(&pki).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].revoked.as_deref(), Some("t1"));
        // The address of a revoked identity is free again.
        assert_eq!(
            issue(&pki, "tablet", None, "t2").unwrap().address,
            a.address
        );
    }
}
