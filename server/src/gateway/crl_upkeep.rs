//! Keeping the CRL present and fresh, so revocation never silently turns off.
//!
//! - A missing `crl.pem` is re-signed from the certificate registry when the gateway holds its
//!   own CA (the data dir's PKI): the registry, not the file, is where revocations live. A
//!   gateway that cannot re-sign keeps the CRL it has loaded and says so loudly.
//! - A CRL is re-signed when less than [`RESIGN_BEFORE`] is left before its `nextUpdate`
//!   (`gatehouse-certs` signs them for 30 days); past it, every check logs an error.

use std::path::Path;

use anyhow::{Context, Result};
use time::{Duration, OffsetDateTime};
use tracing::{error, info, warn};
use x509_parser::prelude::FromDer;

/// Re-sign when this much (or less) is left before the CRL's `nextUpdate`.
pub const RESIGN_BEFORE: Duration = Duration::days(7);

/// The `nextUpdate` of the first CRL in `pem`, if it has one.
pub fn next_update(pem: &[u8]) -> Result<Option<OffsetDateTime>> {
    let crls = gatehouse_engine::openvpn::tls::crls_from_pem(pem)?;
    let der = crls.first().context("no CRL in the file")?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("unparsable CRL: {e}"))?;
    Ok(crl.next_update().map(|t| t.to_datetime()))
}

/// Signs a new CRL from the registry of the PKI in `pki_dir` (`gatehouse-certs`' own).
fn resign(pki_dir: &Path) -> Result<()> {
    let mut pki = gatehouse_certs::Pki::open(pki_dir)
        .with_context(|| format!("cannot open the PKI in {}", pki_dir.display()))?;
    pki.write_crl().context("cannot sign a new CRL")?;
    Ok(())
}

/// Re-signs `crl` from the registry when the file is missing. Returns whether it did.
pub fn ensure_present(pki_dir: &Path, crl: &Path) -> bool {
    if crl.exists() {
        return false;
    }
    match resign(pki_dir) {
        Ok(()) => {
            warn!(crl = %crl.display(), "the CRL was missing; signed it again from the certificate registry");
            true
        }
        Err(e) => {
            error!(crl = %crl.display(), error = %format!("{e:#}"), "the CRL is missing and cannot be signed again here; revocations already loaded stay in force");
            false
        }
    }
}

/// Re-signs `crl` when its `nextUpdate` is near (see the module docs); logs an error for a
/// stale one that cannot be re-signed. `now`: the wall clock.
pub fn refresh_if_due(pki_dir: &Path, crl: &Path, now: OffsetDateTime) {
    let Ok(pem) = std::fs::read(crl) else {
        ensure_present(pki_dir, crl);
        return;
    };
    let next = match next_update(&pem) {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => {
            error!(crl = %crl.display(), error = %format!("{e:#}"), "the CRL cannot be parsed");
            return;
        }
    };
    if next - now > RESIGN_BEFORE {
        return;
    }
    match resign(pki_dir) {
        Ok(()) => {
            info!(crl = %crl.display(), old_next_update = %next, "CRL signed again before its nextUpdate")
        }
        Err(e) if next <= now => {
            error!(crl = %crl.display(), next_update = %next, error = %format!("{e:#}"), "the CRL is stale (past its nextUpdate) and cannot be signed again here: run `gatehouse-certs --pki DIR crl` where the CA key is")
        }
        Err(e) => {
            warn!(crl = %crl.display(), next_update = %next, error = %format!("{e:#}"), "the CRL expires soon and cannot be signed again here")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("pki");
        gatehouse_certs::Pki::init(&p, &gatehouse_certs::CaOptions::default()).unwrap();
        p
    }

    #[test]
    fn a_missing_crl_is_signed_again_and_a_fresh_one_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = pki(tmp.path());
        let crl = dir.join("crl.pem");
        let _ = std::fs::remove_file(&crl);
        assert!(ensure_present(&dir, &crl));
        let pem = std::fs::read(&crl).unwrap();
        let next = next_update(&pem).unwrap().expect("nextUpdate");
        assert!(next > OffsetDateTime::now_utc() + Duration::days(20));
        assert!(!ensure_present(&dir, &crl), "present: nothing to do");
        refresh_if_due(&dir, &crl, OffsetDateTime::now_utc());
        assert_eq!(std::fs::read(&crl).unwrap(), pem, "fresh: not re-signed");
    }

    #[test]
    fn a_crl_near_its_next_update_is_signed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = pki(tmp.path());
        let crl = dir.join("crl.pem");
        assert!(ensure_present(&dir, &crl) || crl.exists());
        let pem = std::fs::read(&crl).unwrap();
        let next = next_update(&pem).unwrap().unwrap();
        // Pretend 25 days passed: 5 days left.
        refresh_if_due(&dir, &crl, next - Duration::days(5));
        let again = std::fs::read(&crl).unwrap();
        assert_ne!(again, pem, "not re-signed");
    }

    #[test]
    fn without_the_ca_a_missing_crl_stays_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let crl = tmp.path().join("crl.pem");
        assert!(!ensure_present(tmp.path(), &crl));
        assert!(!crl.exists());
    }
}
