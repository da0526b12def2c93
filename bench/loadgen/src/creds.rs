//! Client credentials from a gateway's PKI folder (`DATA_DIR/pki`, made by `gatehoused init`
//! and managed with `gatehouse-certs`): one client certificate per session, because the
//! gateway keeps one session per certificate. Certificates are named `PREFIX00000`,
//! `PREFIX00001`...; [`issue`] makes the missing ones with the `gatehouse-certs` library
//! (ECDSA P-256 keys, kept in `pki/private/<serial>.key` like `gatehouse-certs issue-client`
//! keeps them). Private keys are read, never printed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gatehouse_certs::{Kind, Pki, Status, Validity};
use gatehouse_engine::openvpn::tls::{certs_from_pem, key_from_pem};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// One client's certificate chain and key.
pub struct Credential {
    /// The certificate's name (its CN).
    pub name: String,
    /// End-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Credential")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The private key (for rustls).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The private key as PKCS#8 DER (for the IKEv2 signer).
    pub fn pkcs8(&self) -> &[u8] {
        self.key.secret_der()
    }
}

/// The CA clients trust and the client credentials, in name order.
#[derive(Debug)]
pub struct Credentials {
    pub ca: Vec<CertificateDer<'static>>,
    pub clients: Vec<Arc<Credential>>,
}

/// The name of certificate `i`.
pub fn name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

fn valid_names(pki: &Pki, prefix: &str) -> Result<HashSet<String>> {
    let now = time_now();
    Ok(pki
        .list()?
        .into_iter()
        .filter(|r| r.kind == Kind::Client && r.has_key && r.status(now) == Status::Valid)
        .filter(|r| r.name.starts_with(prefix))
        .map(|r| r.name)
        .collect())
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Issues the certificates `PREFIX00000`..`PREFIX{count-1}` that the PKI at `dir` does not
/// hold yet (valid, with a key), on `threads` threads. Returns how many were issued.
pub fn issue(dir: &Path, prefix: &str, count: usize, threads: usize) -> Result<usize> {
    let pki = open(dir)?;
    let have = valid_names(&pki, prefix)?;
    drop(pki);
    let missing: Vec<String> = (0..count)
        .map(|i| name(prefix, i))
        .filter(|n| !have.contains(n))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let threads = threads.clamp(1, 16).min(missing.len());
    let chunks: Vec<Vec<String>> = (0..threads)
        .map(|t| missing.iter().skip(t).step_by(threads).cloned().collect())
        .collect();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|names| {
                s.spawn(move || -> Result<()> {
                    let mut pki = open(dir)?;
                    for n in names {
                        pki.issue_client(&n, &Validity::days(30), None)
                            .with_context(|| format!("issuing client certificate {n}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(_) => bail!("a certificate-issuing thread panicked"),
            }
        }
        Ok(())
    })?;
    eprintln!(
        "issued {} client certificates ({prefix}*) in {:.1} s",
        missing.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(missing.len())
}

fn open(dir: &Path) -> Result<Pki> {
    Pki::open(dir).with_context(|| {
        format!(
            "opening the PKI folder {} (the gateway's DATA_DIR/pki)",
            dir.display()
        )
    })
}

/// Loads the CA and the first `count` valid certificates named `PREFIX*` (with their keys)
/// from the PKI at `dir`.
pub fn load(dir: &Path, prefix: &str, count: usize) -> Result<Credentials> {
    let pki = open(dir)?;
    let ca = certs_from_pem(pki.ca_cert_pem().as_bytes()).context("the PKI's ca.crt")?;
    let now = time_now();
    let mut records: Vec<_> = pki
        .list()?
        .into_iter()
        .filter(|r| r.kind == Kind::Client && r.has_key && r.status(now) == Status::Valid)
        .filter(|r| r.name.starts_with(prefix))
        .collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records.dedup_by(|a, b| a.name == b.name);
    if records.len() < count {
        bail!(
            "the PKI at {} holds {} valid client certificates named {prefix}*, {count} needed: \
             run `gatehouse-loadgen issue --pki {} --count {count} --prefix {prefix}` (or add --issue)",
            dir.display(),
            records.len(),
            dir.display()
        );
    }
    let mut clients = Vec::with_capacity(count);
    for r in records.into_iter().take(count) {
        let chain = certs_from_pem(r.cert_pem.as_bytes())
            .with_context(|| format!("certificate {}", r.name))?;
        let key_path = key_path(pki.dir(), &r.serial);
        let pem = std::fs::read(&key_path)
            .with_context(|| format!("reading the key of {} ({})", r.name, key_path.display()))?;
        let key = key_from_pem(&pem).with_context(|| format!("the key of {}", r.name))?;
        clients.push(Arc::new(Credential {
            name: r.name,
            chain,
            key,
        }));
    }
    Ok(Credentials { ca, clients })
}

/// Where `gatehouse-certs` keeps the key of the certificate with `serial`.
fn key_path(pki: &Path, serial: &str) -> PathBuf {
    pki.join("private").join(format!("{serial}.key"))
}
