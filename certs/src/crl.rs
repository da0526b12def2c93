//! Revocation reasons and the certificate revocation list.

use std::fmt;
use std::str::FromStr;

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber, SigningKey,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::error::{PkiError, Result};
use crate::registry::CertRecord;

/// How long a CRL stays current: the gateway treats a CRL past its next update as stale,
/// so `gatehouse-certs crl` must run again within this period (every revoke also does).
pub const CRL_LIFETIME: Duration = Duration::days(30);

/// Why a certificate was revoked (RFC 5280 CRLReason, the subset an admin picks from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reason {
    /// No reason given.
    #[default]
    Unspecified,
    /// The certificate's private key leaked.
    KeyCompromise,
    /// The CA's key leaked.
    CaCompromise,
    /// The holder moved on (left the company, changed role).
    AffiliationChanged,
    /// A new certificate replaces this one.
    Superseded,
    /// The certificate is no longer needed.
    CessationOfOperation,
}

impl Reason {
    /// Every reason, in CRLReason code order.
    pub const ALL: [Reason; 6] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
    ];

    /// The command-line spelling, also stored in the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::CaCompromise => "ca-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
        }
    }

    fn to_rcgen(self) -> RevocationReason {
        match self {
            Reason::Unspecified => RevocationReason::Unspecified,
            Reason::KeyCompromise => RevocationReason::KeyCompromise,
            Reason::CaCompromise => RevocationReason::CaCompromise,
            Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
            Reason::Superseded => RevocationReason::Superseded,
            Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == wanted)
            .ok_or_else(|| PkiError::InvalidReason(s.to_string()))
    }
}

/// Signs a CRL listing every revoked certificate in `revoked`, numbered `number`.
pub fn sign_crl(
    issuer: &Issuer<'_, impl SigningKey>,
    revoked: &[&CertRecord],
    number: u64,
    now: OffsetDateTime,
) -> Result<String> {
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for record in revoked {
        let Some(at) = record.revoked_at else {
            continue;
        };
        let serial = hex_decode(&record.serial)
            .ok_or_else(|| PkiError::Corrupt(format!("bad serial {:?}", record.serial)))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: at,
            reason_code: record.reason.map(Reason::to_rcgen),
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_LIFETIME,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(issuer)?.pem()?)
}

/// The CRLs in `pem` (a `crl.pem`) whose issuer is none of `signed` (raw DER names), PEM:
/// what a new `crl.pem` keeps of the old one besides the CRLs it signs afresh. Blocks that
/// are not parsable CRLs are dropped.
pub(crate) fn other_issuers(pem: &[u8], signed: &[Vec<u8>]) -> String {
    let Ok(blocks) = pem::parse_many(pem) else {
        return String::new();
    };
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    blocks
        .into_iter()
        .filter(|block| block.tag() == "X509 CRL")
        .filter(|block| {
            CertificateRevocationList::from_der(block.contents())
                .is_ok_and(|(_, crl)| !signed.iter().any(|s| s == crl.issuer().as_raw()))
        })
        .map(|block| pem::encode_config(&block, config))
        .collect()
}

/// Decodes lowercase or uppercase hex.
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Encodes bytes as lowercase hex.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_from_their_cli_spelling() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>().unwrap(), r);
        }
        assert_eq!(
            "Key_Compromise".parse::<Reason>().unwrap(),
            Reason::KeyCompromise
        );
        let err = "stolen".parse::<Reason>().unwrap_err().to_string();
        assert!(
            err.contains("\"stolen\"") && err.contains("key-compromise"),
            "{err}"
        );
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(hex_encode(&bytes), "007fabff");
        assert_eq!(hex_decode("007FABff").unwrap(), bytes);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("zz").is_none());
    }
}
