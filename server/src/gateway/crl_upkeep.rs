//! Keeping the CRL present and fresh, so revocation never silently turns off.
//!
//! - A missing `crl.pem` is re-signed from the certificate registry when the gateway holds its
//!   own CA (the data dir's PKI): the registry, not the file, is where revocations live. A
//!   gateway that cannot re-sign keeps the CRL it has loaded and says so loudly.
//! - `crl.pem` holds the root's CRL and one per intermediate CA (`gatehouse-certs
//!   issue-intermediate`); each is re-signed when less than [`RESIGN_BEFORE`] is left before
//!   its `nextUpdate` (`gatehouse-certs` signs them for 30 days), and the file is re-signed
//!   when it lacks the CRL of a valid intermediate. Re-signing writes every CRL the PKI signs
//!   and keeps those of other issuers (an intermediate made elsewhere, its CRL appended by
//!   hand); such a CRL near or past its `nextUpdate` is logged, since only its CA can renew it.
//!   A stale CRL that cannot be re-signed logs an error every check.

use std::path::Path;

use anyhow::{Context, Result};
use time::{Duration, OffsetDateTime};
use tracing::{error, info, warn};
use x509_parser::prelude::FromDer;

/// Re-sign when this much (or less) is left before a CRL's `nextUpdate`.
pub const RESIGN_BEFORE: Duration = Duration::days(7);

/// One CRL of `crl.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// Its issuer, raw DER (to compare with the PKI's CAs).
    pub issuer_der: Vec<u8>,
    /// Its issuer, for the log.
    pub issuer: String,
    /// Its `nextUpdate`, if it has one.
    pub next_update: Option<OffsetDateTime>,
}

/// Every CRL in `pem`, in file order.
pub fn crls_in(pem: &[u8]) -> Result<Vec<CrlInfo>> {
    let crls = gatehouse_engine::openvpn::tls::crls_from_pem(pem)?;
    anyhow::ensure!(!crls.is_empty(), "no CRL in the file");
    crls.iter()
        .map(|der| {
            let (_, crl) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
                    .map_err(|e| anyhow::anyhow!("unparsable CRL: {e}"))?;
            Ok(CrlInfo {
                issuer_der: crl.issuer().as_raw().to_vec(),
                issuer: crl.issuer().to_string(),
                next_update: crl.next_update().map(|t| t.to_datetime()),
            })
        })
        .collect()
}

/// What operators are shown of a `crl.pem`: its age, its freshness, how many it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFacts {
    /// The first CRL's `thisUpdate`.
    pub this_update: OffsetDateTime,
    /// The earliest `nextUpdate` of its CRLs.
    pub next_update: Option<OffsetDateTime>,
    /// Certificates listed, over all its CRLs.
    pub revoked: usize,
}

/// The [`CrlFacts`] of `pem`.
pub fn crl_facts(pem: &[u8]) -> Result<CrlFacts> {
    let crls = gatehouse_engine::openvpn::tls::crls_from_pem(pem)?;
    let mut facts: Option<CrlFacts> = None;
    for der in &crls {
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
                .map_err(|e| anyhow::anyhow!("unparsable CRL: {e}"))?;
        let next = crl.next_update().map(|t| t.to_datetime());
        let n = crl.iter_revoked_certificates().count();
        match &mut facts {
            None => {
                facts = Some(CrlFacts {
                    this_update: crl.last_update().to_datetime(),
                    next_update: next,
                    revoked: n,
                })
            }
            Some(f) => {
                f.revoked += n;
                f.next_update = match (f.next_update, next) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
    }
    facts.context("no CRL in the file")
}

/// The `nextUpdate` of the first CRL in `pem` (the root's, in a file `gatehouse-certs`
/// wrote), if it has one.
#[cfg(test)]
pub fn next_update(pem: &[u8]) -> Result<Option<OffsetDateTime>> {
    Ok(crls_in(pem)?.first().and_then(|c| c.next_update))
}

/// Signs new CRLs from the registry of the PKI in `pki_dir` (`gatehouse-certs`' own).
fn resign(pki: Result<gatehouse_certs::Pki>) -> Result<()> {
    pki?.write_crl().context("cannot sign a new CRL")?;
    Ok(())
}

fn open(pki_dir: &Path) -> Result<gatehouse_certs::Pki> {
    gatehouse_certs::Pki::open(pki_dir)
        .with_context(|| format!("cannot open the PKI in {}", pki_dir.display()))
}

/// Re-signs `crl` from the registry when the file is missing. Returns whether it did.
pub fn ensure_present(pki_dir: &Path, crl: &Path) -> bool {
    if crl.exists() {
        return false;
    }
    match resign(open(pki_dir)) {
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

/// Re-signs `crl` when one of its CRLs that the PKI signs is near its `nextUpdate` or
/// missing (see the module docs); logs the others that are near or past theirs. `now`: the
/// wall clock.
pub fn refresh_if_due(pki_dir: &Path, crl: &Path, now: OffsetDateTime) {
    let Ok(pem) = std::fs::read(crl) else {
        ensure_present(pki_dir, crl);
        return;
    };
    let crls = match crls_in(&pem) {
        Ok(crls) => crls,
        Err(e) => {
            error!(crl = %crl.display(), error = %format!("{e:#}"), "the CRL cannot be parsed");
            return;
        }
    };
    let due = |c: &CrlInfo| c.next_update.is_some_and(|t| t - now <= RESIGN_BEFORE);
    let pki = open(pki_dir);
    // What the PKI signs; without it (its CA key is elsewhere), nothing here is ours to sign.
    let ours = match &pki {
        Ok(p) => p.crl_issuers().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let is_ours = |c: &CrlInfo| ours.contains(&c.issuer_der);
    let missing = ours
        .iter()
        .filter(|o| !crls.iter().any(|c| &c.issuer_der == *o))
        .count();
    let due_ours: Vec<&CrlInfo> = crls.iter().filter(|c| is_ours(c) && due(c)).collect();
    if missing > 0 || !due_ours.is_empty() {
        let oldest = due_ours.iter().filter_map(|c| c.next_update).min();
        match resign(pki) {
            Ok(()) => {
                info!(crl = %crl.display(), old_next_update = ?oldest, missing_crls = missing, "CRL signed again (a CRL near its nextUpdate, or an intermediate CA's CRL missing)")
            }
            Err(e) => {
                error!(crl = %crl.display(), error = %format!("{e:#}"), "the CRL is due and cannot be signed again")
            }
        }
    }
    for c in crls.iter().filter(|c| !is_ours(c) && due(c)) {
        let Some(next) = c.next_update else { continue };
        if next <= now {
            error!(crl = %crl.display(), issuer = %c.issuer, next_update = %next, "a CRL is stale (past its nextUpdate) and cannot be signed again here: run `gatehouse-certs --pki DIR crl` where the CA key is (for a CA made elsewhere, sign its CRL there and put it in crl.pem again)")
        } else {
            warn!(crl = %crl.display(), issuer = %c.issuer, next_update = %next, "a CRL expires soon and cannot be signed again here")
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

    /// A PKI with intermediate CA `branch` and `alice` under it, revoked; returns alice's
    /// serial.
    fn pki_with_intermediate(dir: &Path) -> String {
        let mut pki = gatehouse_certs::Pki::open(dir).unwrap();
        let v = gatehouse_certs::Validity::default();
        pki.issue_intermediate("branch", &v).unwrap();
        let alice = pki
            .issue_client_signed_by("alice", &v, None, Some("branch"))
            .unwrap();
        pki.revoke("alice", gatehouse_certs::Reason::KeyCompromise)
            .unwrap();
        alice.record.serial
    }

    /// Each CRL's issuer CN-string and revoked serials (lowercase hex).
    fn contents(pem: &[u8]) -> Vec<(String, Vec<String>)> {
        gatehouse_engine::openvpn::tls::crls_from_pem(pem)
            .unwrap()
            .iter()
            .map(|der| {
                let (_, crl) =
                    x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
                        .unwrap();
                let serials = crl
                    .iter_revoked_certificates()
                    .map(|r| r.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
                    .collect();
                (crl.issuer().to_string(), serials)
            })
            .collect()
    }

    #[test]
    fn re_signing_keeps_the_intermediate_crl_and_its_revocations() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = pki(tmp.path());
        let alice = pki_with_intermediate(&dir);
        let crl = dir.join("crl.pem");
        let pem = std::fs::read(&crl).unwrap();
        let before = crls_in(&pem).unwrap();
        assert_eq!(before.len(), 2);
        let expected = vec![
            ("CN=Gatehouse Root CA".to_string(), vec![]),
            ("CN=branch".to_string(), vec![alice.clone()]),
        ];
        assert_eq!(contents(&pem), expected);
        // Fresh: nothing to do.
        refresh_if_due(&dir, &crl, OffsetDateTime::now_utc());
        assert_eq!(std::fs::read(&crl).unwrap(), pem);
        // 5 days before nextUpdate: both CRLs are signed again, alice still revoked.
        let next = before[0].next_update.unwrap();
        refresh_if_due(&dir, &crl, next - Duration::days(5));
        let again = std::fs::read(&crl).unwrap();
        assert_ne!(again, pem, "not re-signed");
        assert_eq!(contents(&again), expected);
        let after = crls_in(&again).unwrap();
        assert!(
            after
                .iter()
                .zip(&before)
                .all(|(a, b)| a.next_update >= b.next_update),
            "{after:?} vs {before:?}"
        );
        // The gateway's view: alice is revoked.
        let ders: Vec<Vec<u8>> = gatehouse_engine::openvpn::tls::crls_from_pem(&again)
            .unwrap()
            .iter()
            .map(|d| d.to_vec())
            .collect();
        let revoked = gatehouse_engine::gateway::RevokedSerials::from_crls(&ders).unwrap();
        let serial: Vec<u8> = (0..alice.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&alice[i..i + 2], 16).unwrap())
            .collect();
        assert!(revoked.contains(&serial) && revoked.len() == 1);
    }

    #[test]
    fn a_crl_pem_without_the_intermediate_crl_is_signed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = pki(tmp.path());
        let alice = pki_with_intermediate(&dir);
        let crl = dir.join("crl.pem");
        // Only the root's CRL left (as `openssl ca -gencrl` for the root alone would write).
        let text = std::fs::read_to_string(&crl).unwrap();
        let end = "-----END X509 CRL-----";
        let first = &text[..text.find(end).unwrap() + end.len()];
        std::fs::write(&crl, format!("{first}\n")).unwrap();
        assert_eq!(crls_in(first.as_bytes()).unwrap().len(), 1);
        refresh_if_due(&dir, &crl, OffsetDateTime::now_utc());
        let again = std::fs::read(&crl).unwrap();
        assert_eq!(
            contents(&again),
            vec![
                ("CN=Gatehouse Root CA".to_string(), vec![]),
                ("CN=branch".to_string(), vec![alice]),
            ]
        );
    }

    #[test]
    fn crls_of_other_issuers_are_kept_when_signing_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = pki(tmp.path());
        pki_with_intermediate(&dir);
        let other = tmp.path().join("other");
        let options = gatehouse_certs::CaOptions {
            name: "Elsewhere CA".into(),
            ..Default::default()
        };
        gatehouse_certs::Pki::init(&other, &options).unwrap();
        let foreign = std::fs::read_to_string(other.join("crl.pem")).unwrap();
        let crl = dir.join("crl.pem");
        let mut text = std::fs::read_to_string(&crl).unwrap();
        text.push_str(&foreign);
        std::fs::write(&crl, &text).unwrap();
        let next = crls_in(text.as_bytes()).unwrap()[0].next_update.unwrap();
        refresh_if_due(&dir, &crl, next - Duration::days(5));
        let again = std::fs::read_to_string(&crl).unwrap();
        assert_ne!(again, text, "not re-signed");
        let issuers: Vec<String> = contents(again.as_bytes())
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(
            issuers,
            ["CN=Gatehouse Root CA", "CN=branch", "CN=Elsewhere CA"]
        );
        assert!(
            again.ends_with(&foreign),
            "the foreign CRL is kept as it was"
        );
        // A missing file: signed again from the registry (the foreign CRL went with it).
        std::fs::remove_file(&crl).unwrap();
        assert!(ensure_present(&dir, &crl));
        assert_eq!(crls_in(&std::fs::read(&crl).unwrap()).unwrap().len(), 2);
    }

    #[test]
    fn without_the_ca_a_missing_crl_stays_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let crl = tmp.path().join("crl.pem");
        assert!(!ensure_present(tmp.path(), &crl));
        assert!(!crl.exists());
    }
}
