//! Live revocation: the serials a CRL lists, and the serial of a peer's certificate. When
//! the driver hands the core a new CRL, every tunnel whose certificate it lists ends.

use std::collections::HashSet;

/// Serial numbers of revoked certificates (raw big-endian bytes, as in the certificate).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevokedSerials(HashSet<Vec<u8>>);

impl RevokedSerials {
    /// The serials listed by `crls` (DER). A CRL that does not parse is skipped and reported
    /// in the error list (the driver keeps its previous view then).
    pub fn from_crls(crls: &[Vec<u8>]) -> Result<Self, String> {
        let mut set = HashSet::new();
        for der in crls {
            let (_, crl) = x509_parser::parse_x509_crl(der)
                .map_err(|e| format!("the CRL does not parse: {e}"))?;
            for r in crl.iter_revoked_certificates() {
                set.insert(strip(r.raw_serial()).to_vec());
            }
        }
        Ok(Self(set))
    }

    /// True when the certificate with `serial` is revoked.
    pub fn contains(&self, serial: &[u8]) -> bool {
        self.0.contains(strip(serial))
    }

    /// Number of revoked serials.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The serial number of a certificate (DER), as raw bytes.
pub fn cert_serial(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(strip(cert.raw_serial()).to_vec())
}

/// Serials compare as integers: a leading zero byte (DER sign padding) does not count.
fn strip(serial: &[u8]) -> &[u8] {
    let n = serial.iter().take_while(|b| **b == 0).count();
    &serial[n.min(serial.len().saturating_sub(1))..]
}

/// Hex of a serial, for log lines.
pub(super) fn hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02x}")).collect()
}
