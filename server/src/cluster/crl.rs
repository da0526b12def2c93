//! The CRLs through etcd (`/gatehouse/<cluster>/crl`): the node where a certificate was
//! revoked publishes its `crl.pem`; every other node checks it as it would check a local
//! one, plus what a file from the network needs (size, every CRL signed by a CA of this
//! PKI), writes it to its own `crl.pem` and reloads, which ends the revoked sessions.
//!
//! Revocations only accumulate: a node publishes its CRLs only when they list everything
//! the published ones list (and more, or the same set signed later), and installs the
//! published ones only when they list everything its own list. Two CRLs that each lack a
//! revocation of the other (two revocations on two nodes within a second) are logged; the
//! node keeps its own until the revocation is repeated where the other was made.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// The largest CRL value read from etcd, in bytes.
pub const MAX_CRL_BYTES: usize = 1 << 20;

/// What `crl` holds in etcd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    /// The node that published it.
    pub node: String,
    /// The CRLs (DER, PEM-armoured: a `crl.pem`).
    pub pem: String,
}

/// What a set of CRLs says, for comparing two of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocations {
    /// (issuer DER, serial) of every certificate listed.
    pub listed: BTreeSet<(Vec<u8>, Vec<u8>)>,
    /// The latest `thisUpdate` (Unix seconds).
    pub latest: i64,
}

/// Which way CRLs should flow between this node and etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The same: nothing to do.
    Same,
    /// Ours lists more (or the same, signed later): publish ours.
    Publish,
    /// The published ones list more (or the same, signed later): install them.
    Install,
    /// Each lists a revocation the other lacks.
    Diverged,
}

/// Reads what `pem` lists. Fails on a file without a CRL or with one that does not parse.
pub fn revocations(pem: &[u8]) -> Result<Revocations> {
    let ders = gatehouse_engine::openvpn::tls::crls_from_pem(pem)?;
    ensure!(!ders.is_empty(), "no CRL in it");
    let mut listed = BTreeSet::new();
    let mut latest = i64::MIN;
    for der in &ders {
        let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
            .map_err(|e| anyhow!("a CRL does not parse: {e}"))?;
        latest = latest.max(crl.last_update().timestamp());
        let issuer = crl.issuer().as_raw().to_vec();
        for r in crl.iter_revoked_certificates() {
            listed.insert((issuer.clone(), strip(r.raw_serial()).to_vec()));
        }
    }
    Ok(Revocations { listed, latest })
}

fn strip(serial: &[u8]) -> &[u8] {
    let n = serial.iter().take_while(|b| **b == 0).count();
    &serial[n.min(serial.len().saturating_sub(1))..]
}

/// Which way to go from `ours` and the `published` CRLs.
pub fn flow(ours: &Revocations, published: &Revocations) -> Flow {
    let more = ours.listed.is_superset(&published.listed);
    let less = published.listed.is_superset(&ours.listed);
    match (more, less) {
        (true, true) if ours.latest > published.latest => Flow::Publish,
        (true, true) if ours.latest < published.latest => Flow::Install,
        (true, true) => Flow::Same,
        (true, false) => Flow::Publish,
        (false, true) => Flow::Install,
        (false, false) => Flow::Diverged,
    }
}

/// The certificates of the CAs in `pki_dir` (`ca.crt`, `intermediate/*.crt`), DER.
pub fn ca_certs(pki_dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut files = vec![pki_dir.join("ca.crt")];
    if let Ok(dir) = std::fs::read_dir(pki_dir.join("intermediate")) {
        files.extend(
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt")),
        );
    }
    let mut out = Vec::new();
    for f in files {
        let pem = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
        for c in gatehouse_engine::openvpn::tls::certs_from_pem(&pem)
            .with_context(|| format!("{}", f.display()))?
        {
            out.push(c.as_ref().to_vec());
        }
    }
    Ok(out)
}

/// Checks that every CRL in `pem` is signed by one of `cas` (DER certificates), the one
/// whose subject is the CRL's issuer.
pub fn verify_signed(pem: &[u8], cas: &[Vec<u8>]) -> Result<()> {
    let ders = gatehouse_engine::openvpn::tls::crls_from_pem(pem)?;
    ensure!(!ders.is_empty(), "no CRL in it");
    for der in &ders {
        let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
            .map_err(|e| anyhow!("a CRL does not parse: {e}"))?;
        let issuer = crl.issuer().to_string();
        let signed = cas.iter().any(|ca| {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(ca) else {
                return false;
            };
            cert.subject().as_raw() == crl.issuer().as_raw()
                && signature_holds(
                    &crl.signature_algorithm.algorithm.to_id_string(),
                    &cert.public_key().subject_public_key.data,
                    crl.tbs_cert_list.as_ref(),
                    &crl.signature_value.data,
                )
        });
        if !signed {
            bail!("the CRL of {issuer} is not signed by a CA of this gateway's PKI");
        }
    }
    Ok(())
}

/// Whether `signature` over `message` holds under `key` for signature algorithm `oid`.
fn signature_holds(oid: &str, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use ring::signature as s;
    let algs: &[&'static dyn s::VerificationAlgorithm] = match oid {
        "1.2.840.10045.4.3.2" => &[&s::ECDSA_P256_SHA256_ASN1, &s::ECDSA_P384_SHA256_ASN1],
        "1.2.840.10045.4.3.3" => &[&s::ECDSA_P384_SHA384_ASN1, &s::ECDSA_P256_SHA384_ASN1],
        "1.2.840.113549.1.1.11" => &[&s::RSA_PKCS1_2048_8192_SHA256],
        "1.2.840.113549.1.1.12" => &[&s::RSA_PKCS1_2048_8192_SHA384],
        "1.2.840.113549.1.1.13" => &[&s::RSA_PKCS1_2048_8192_SHA512],
        "1.3.101.112" => &[&s::ED25519],
        _ => &[],
    };
    algs.iter().any(|a| {
        s::UnparsedPublicKey::new(*a, key)
            .verify(message, signature)
            .is_ok()
    })
}

/// Records in the registry of the PKI in `pki_dir` the revocations of `published` that this
/// node's CRL lacks (`ours`), so that the CRL it signs from now on - after a revocation made
/// here, or when it is renewed - lists them too. `Pki::revoke` signs `crl.pem` again each
/// time. Returns how many were recorded; serials the registry does not know (issued
/// elsewhere) are skipped. Blocking.
pub fn record_revocations(
    pki_dir: &Path,
    ours: &Revocations,
    published: &Revocations,
) -> Result<usize> {
    let missing: Vec<&Vec<u8>> = published
        .listed
        .difference(&ours.listed)
        .map(|(_, serial)| serial)
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let mut pki = gatehouse_certs::Pki::open(pki_dir)
        .with_context(|| format!("cannot open the PKI in {}", pki_dir.display()))?;
    let mut recorded = 0;
    for serial in missing {
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        // The registry may keep a leading zero byte (a serial with its top bit set).
        for candidate in [hex.clone(), format!("00{hex}")] {
            match pki.revoke(&candidate, gatehouse_certs::Reason::Unspecified) {
                Ok(_) => {
                    recorded += 1;
                    break;
                }
                Err(gatehouse_certs::PkiError::AlreadyRevoked { .. }) => break,
                Err(gatehouse_certs::PkiError::UnknownCertificate { .. }) => continue,
                Err(e) => return Err(e).context("cannot record a revocation in the registry"),
            }
        }
    }
    Ok(recorded)
}

/// Parses and checks a value of `crl` from etcd: size, JSON, CRLs that parse, each signed
/// by a CA of `cas`. Returns it with what it lists.
pub fn check_published(value: &[u8], cas: &[Vec<u8>]) -> Result<(Published, Revocations)> {
    ensure!(
        value.len() <= MAX_CRL_BYTES,
        "{} bytes, more than the {MAX_CRL_BYTES} allowed",
        value.len()
    );
    let p: Published = serde_json::from_slice(value).context("not a published CRL")?;
    let r = revocations(p.pem.as_bytes())?;
    verify_signed(p.pem.as_bytes(), cas)?;
    Ok((p, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki(dir: &Path) -> gatehouse_certs::Pki {
        gatehouse_certs::Pki::init(dir, &gatehouse_certs::CaOptions::default()).unwrap()
    }

    #[test]
    fn a_published_crl_is_installed_only_when_signed_by_our_ca_and_never_loses_a_revocation() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ours = pki(&tmp.path().join("a"));
        let v = gatehouse_certs::Validity::default();
        ours.issue_client("alice", &v, None).unwrap();
        ours.write_crl().unwrap();
        let before = std::fs::read(ours.crl_path()).unwrap();
        ours.revoke("alice", gatehouse_certs::Reason::KeyCompromise)
            .unwrap();
        let after = std::fs::read(ours.crl_path()).unwrap();
        let cas = ca_certs(ours.dir()).unwrap();
        let publish = |pem: &[u8]| {
            serde_json::to_vec(&Published {
                node: "a".into(),
                pem: String::from_utf8(pem.to_vec()).unwrap(),
            })
            .unwrap()
        };
        let (p, r) = check_published(&publish(&after), &cas).unwrap();
        assert_eq!((p.node.as_str(), r.listed.len()), ("a", 1));
        let old = revocations(&before).unwrap();
        assert_eq!(flow(&old, &r), Flow::Install);
        assert_eq!(flow(&r, &old), Flow::Publish);
        assert_eq!(flow(&r, &r), Flow::Same);
        // Another CA's CRL, however well formed, is refused.
        let other = pki(&tmp.path().join("b"));
        let foreign = std::fs::read(other.crl_path()).unwrap();
        let e = check_published(&publish(&foreign), &cas).unwrap_err();
        assert!(format!("{e:#}").contains("not signed by a CA"), "{e:#}");
        // A flipped bit in the signed part breaks the signature.
        let ders = gatehouse_engine::openvpn::tls::crls_from_pem(&after).unwrap();
        let mut der = ders[0].as_ref().to_vec();
        let i = der.len() / 2;
        der[i] ^= 1;
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der);
        let forged = format!("-----BEGIN X509 CRL-----\n{b64}\n-----END X509 CRL-----\n");
        assert!(check_published(&publish(forged.as_bytes()), &cas).is_err());
        // Garbage and oversize values are errors, not panics.
        assert!(check_published(b"{", &cas).is_err());
        assert!(check_published(&vec![b' '; MAX_CRL_BYTES + 1], &cas).is_err());
    }

    #[test]
    fn a_node_records_revocations_made_elsewhere_so_its_own_crl_keeps_them() {
        let tmp = tempfile::tempdir().unwrap();
        let a_dir = tmp.path().join("a");
        let mut a = pki(&a_dir);
        let v = gatehouse_certs::Validity::default();
        a.issue_client("alice", &v, None).unwrap();
        a.issue_client("bob", &v, None).unwrap();
        drop(a);
        // Node b: a copy of the same PKI, as an operator sets a cluster up.
        let b_dir = tmp.path().join("b");
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(&a_dir)
            .arg(&b_dir)
            .status()
            .unwrap();
        assert!(cp.success());
        let mut a = gatehouse_certs::Pki::open(&a_dir).unwrap();
        a.revoke("alice", gatehouse_certs::Reason::KeyCompromise)
            .unwrap();
        let published = revocations(&std::fs::read(a.crl_path()).unwrap()).unwrap();
        let b_crl = b_dir.join("crl.pem");
        let ours = revocations(&std::fs::read(&b_crl).unwrap()).unwrap();
        assert_eq!(flow(&ours, &published), Flow::Install);
        assert_eq!(record_revocations(&b_dir, &ours, &published).unwrap(), 1);
        let now = revocations(&std::fs::read(&b_crl).unwrap()).unwrap();
        assert_eq!(now.listed, published.listed, "b's CRL lists alice now");
        assert_eq!(record_revocations(&b_dir, &now, &published).unwrap(), 0);
        // A revocation on b now keeps alice's.
        let mut b = gatehouse_certs::Pki::open(&b_dir).unwrap();
        b.revoke("bob", gatehouse_certs::Reason::KeyCompromise)
            .unwrap();
        let both = revocations(&std::fs::read(&b_crl).unwrap()).unwrap();
        assert_eq!(both.listed.len(), 2);
        assert_eq!(flow(&both, &published), Flow::Publish);
    }
}
