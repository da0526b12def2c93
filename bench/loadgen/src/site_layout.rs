//! Where the load generator's site-to-site peers live: site `i`'s name, the source address it
//! sends from (the gateway's `remote_gateway` for it), its address space (its
//! `remote_address_space`) and its pre-shared key file. The same options drive the run
//! (`--sites N`) and `gatehouse-loadgen sites-config`, which writes the gateway's matching
//! `[[connection]]` entries and the key files, so both sides agree by construction.
//!
//! Keys are 32 random bytes from the OS generator written as 64 hex digits (the file's bytes
//! are the key, as the gateway reads `psk_file`), mode 0600 in a 0700 folder. They are read,
//! never printed.

use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ipnet::Ipv4Net;
use ring::rand::SecureRandom;

/// Options that lay the sites out (shared by the run and `sites-config`).
#[derive(Args, Debug, Clone)]
pub struct SiteArgs {
    /// IKEv2 site-to-site peers (PSK), each from its own source address.
    #[arg(long, default_value_t = 0)]
    pub sites: usize,
    /// Source address of site 0; site i sends from this address + i (each must be on an
    /// interface of the load generator's namespace).
    #[arg(long)]
    pub site_source_base: Option<Ipv4Addr>,
    /// Address space of site 0; site i has the i-th prefix of the same length after it.
    #[arg(long, default_value = "10.200.0.0/24")]
    pub site_space_base: Ipv4Net,
    /// Folder of the sites' pre-shared key files, PREFIXnnn.psk (`sites-config` writes them).
    #[arg(long)]
    pub site_psk_dir: Option<PathBuf>,
    /// Connection name prefix: sites are PREFIX000, PREFIX001...
    #[arg(long, default_value = "lg-site-")]
    pub site_prefix: String,
    /// Policy-based sites: the gateway's side of their traffic selectors (repeat for several
    /// prefixes; the gateway's `address_space`). Without it: route-based (0.0.0.0/0).
    #[arg(long)]
    pub site_gateway_space: Vec<Ipv4Net>,
    /// Rekey each site's CHILD SA after about this many seconds (0: after 1 h). Site i's
    /// lifetime is shortened by (i mod 10) % so the sites do not all rekey at once.
    #[arg(long, default_value_t = 0)]
    pub site_child_lifetime: u64,
    /// Rekey each site's IKE SA after about this many seconds (0: after 4 h); spread as above.
    #[arg(long, default_value_t = 0)]
    pub site_ike_lifetime: u64,
}

/// One site-to-site peer.
pub struct SiteSpec {
    /// 0.. in the run.
    pub index: usize,
    /// The gateway's connection name for it.
    pub name: String,
    /// Where it sends from (its IKE identity too).
    pub source: Ipv4Addr,
    /// The prefix behind it.
    pub space: Ipv4Net,
    psk: Vec<u8>,
}

impl std::fmt::Debug for SiteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("SiteSpec")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("space", &self.space)
            .finish_non_exhaustive()
    }
}

impl SiteSpec {
    /// The pre-shared key.
    pub fn psk(&self) -> &[u8] {
        &self.psk
    }

    /// The address echo requests come from: the first host of its space.
    pub fn host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.space.network()).saturating_add(1))
    }
}

/// Site `i` without its key: name, source address, address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub source: Ipv4Addr,
    pub space: Ipv4Net,
}

impl SiteArgs {
    /// The key file of site `name`.
    pub fn psk_path(&self, dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.psk"))
    }

    fn psk_dir(&self) -> Result<&Path> {
        self.site_psk_dir.as_deref().context(
            "--site-psk-dir DIR is required with --sites (the sites' key files; `gatehouse-loadgen sites-config` writes them)",
        )
    }

    /// Every site's name, source address and address space.
    pub fn slots(&self) -> Result<Vec<Slot>> {
        let Some(src) = self.site_source_base else {
            bail!("--site-source-base ADDR is required with --sites (site i sends from ADDR + i)");
        };
        ensure!(
            self.site_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "--site-prefix {:?}: letters, digits, '-', '_', '.' only (it names connections)",
            self.site_prefix
        );
        let base = self.site_space_base.trunc();
        let len = base.prefix_len();
        ensure!(len > 0, "--site-space-base must be a prefix longer than /0");
        let size = 1u64 << (32 - len);
        (0..self.sites)
            .map(|i| {
                let source = u64::from(u32::from(src)) + i as u64;
                let net = u64::from(u32::from(base.network())) + i as u64 * size;
                ensure!(
                    source <= u64::from(u32::MAX) && net + size - 1 <= u64::from(u32::MAX),
                    "{} sites do not fit after --site-source-base {src} / --site-space-base {base}",
                    self.sites
                );
                let space =
                    Ipv4Net::new(Ipv4Addr::from(net as u32), len).context("site address space")?;
                Ok(Slot {
                    name: format!("{}{i:03}", self.site_prefix),
                    source: Ipv4Addr::from(source as u32),
                    space,
                })
            })
            .collect()
    }

    /// The sites of a run, with their keys read from `--site-psk-dir`.
    pub fn load(&self) -> Result<Vec<SiteSpec>> {
        let dir = self.psk_dir()?;
        self.slots()?
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                let path = self.psk_path(dir, &s.name);
                let psk = read_psk(&path)?;
                Ok(SiteSpec {
                    index,
                    name: s.name,
                    source: s.source,
                    space: s.space,
                    psk,
                })
            })
            .collect()
    }

    /// Writes a fresh random key for every site into `--site-psk-dir` (created 0700).
    pub fn write_psks(&self, rng: &dyn SecureRandom) -> Result<Vec<(Slot, PathBuf)>> {
        let dir = self.psk_dir()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        self.slots()?
            .into_iter()
            .map(|s| {
                let path = self.psk_path(&dir, &s.name);
                write_psk(&path, rng)?;
                Ok((s, path))
            })
            .collect()
    }

    /// Site `index`'s CHILD and IKE SA lifetimes (zero: the engine's defaults).
    pub fn lifetimes(&self, index: usize) -> (Duration, Duration) {
        let spread = |secs: u64| {
            let d = Duration::from_secs(secs);
            d.saturating_sub(d.mul_f64((index % 10) as f64 / 100.0))
        };
        (
            spread(self.site_child_lifetime),
            spread(self.site_ike_lifetime),
        )
    }
}

fn write_psk(path: &Path, rng: &dyn SecureRandom) -> Result<()> {
    let mut key = [0u8; 32];
    rng.fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the OS random number generator failed"))?;
    let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode through open(): set it.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A key file's bytes less one trailing newline, as the gateway reads `psk_file`.
fn read_psk(path: &Path) -> Result<Vec<u8>> {
    let mut psk = fs::read(path).with_context(|| {
        format!(
            "reading {} (write the key files with `gatehouse-loadgen sites-config`)",
            path.display()
        )
    })?;
    if psk.ends_with(b"\r\n") {
        psk.truncate(psk.len() - 2);
    } else if psk.ends_with(b"\n") {
        psk.truncate(psk.len() - 1);
    }
    ensure!(!psk.is_empty(), "{} is empty", path.display());
    Ok(psk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(n: usize) -> SiteArgs {
        SiteArgs {
            sites: n,
            site_source_base: Some(Ipv4Addr::new(10, 250, 176, 10)),
            site_space_base: "10.200.0.0/24".parse().expect("net"),
            site_psk_dir: None,
            site_prefix: "lg-site-".into(),
            site_gateway_space: Vec::new(),
            site_child_lifetime: 20,
            site_ike_lifetime: 0,
        }
    }

    #[test]
    fn sites_get_consecutive_sources_and_prefixes() {
        let s = args(100).slots().expect("slots");
        assert_eq!(s.len(), 100);
        assert_eq!(s[0].name, "lg-site-000");
        assert_eq!(s[0].source, Ipv4Addr::new(10, 250, 176, 10));
        assert_eq!(s[0].space, "10.200.0.0/24".parse::<Ipv4Net>().expect("net"));
        assert_eq!(s[99].name, "lg-site-099");
        assert_eq!(s[99].source, Ipv4Addr::new(10, 250, 176, 109));
        assert_eq!(
            s[99].space,
            "10.200.99.0/24".parse::<Ipv4Net>().expect("net")
        );
    }

    #[test]
    fn layouts_that_do_not_fit_are_refused() {
        let mut a = args(10);
        a.site_source_base = Some(Ipv4Addr::new(255, 255, 255, 250));
        assert!(a.slots().is_err());
        let mut a = args(1);
        a.site_source_base = None;
        assert!(a.slots().is_err());
        let mut a = args(1);
        a.site_prefix = "bad name".into();
        assert!(a.slots().is_err());
    }

    #[test]
    fn lifetimes_are_spread() {
        let a = args(20);
        assert_eq!(a.lifetimes(0).0, Duration::from_secs(20));
        assert_eq!(a.lifetimes(5).0, Duration::from_millis(19_000));
        assert_eq!(a.lifetimes(10).0, Duration::from_secs(20));
        assert_eq!(a.lifetimes(3).1, Duration::ZERO);
    }

    #[test]
    fn keys_are_private_random_and_read_back() {
        let dir = std::env::temp_dir().join(format!("lg-psk-test-{}", std::process::id()));
        let mut a = args(3);
        a.site_psk_dir = Some(dir.clone());
        let rng = ring::rand::SystemRandom::new();
        let written = a.write_psks(&rng).expect("write");
        assert_eq!(written.len(), 3);
        for (_, p) in &written {
            let mode = fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let loaded = a.load().expect("load");
        assert_eq!(loaded[0].psk().len(), 64);
        assert_ne!(loaded[0].psk(), loaded[1].psk());
        assert!(
            !format!("{:?}", loaded[0])
                .contains(&String::from_utf8_lossy(loaded[0].psk()).to_string())
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
