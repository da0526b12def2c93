//! Building and signing leaf certificates (gateway and client).

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SigningKey,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

use crate::crl::hex_encode;
use crate::error::{PkiError, Result};
use crate::registry::{CertRecord, Kind};

/// Default lifetime of a gateway certificate (the CA/Browser Forum's old ceiling, which
/// some clients still enforce).
pub const SERVER_DEFAULT_DAYS: u32 = 825;
/// Default lifetime of a client certificate.
pub const CLIENT_DEFAULT_DAYS: u32 = 365;
/// Default lifetime of an intermediate CA (never beyond the root's own not-after).
pub const INTERMEDIATE_DEFAULT_DAYS: u32 = 1825;

/// id-kp-ipsecIKE / ikeIntermediate (RFC 4945): Windows' and macOS' IKEv2 clients want it on
/// the gateway certificate.
const IKE_INTERMEDIATE: [u64; 9] = [1, 3, 6, 1, 5, 5, 8, 2, 2];

/// How long a new certificate is valid.
///
/// By default it starts now (backdated 5 minutes for clock skew) and lasts the kind's default
/// number of days. `not_before` / `not_after` pin either end exactly - for migrations and
/// for test fixtures such as an already-expired certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validity {
    /// Lifetime in days from the start (ignored when `not_after` is given).
    pub days: Option<u32>,
    /// Exact start of validity.
    pub not_before: Option<OffsetDateTime>,
    /// Exact end of validity.
    pub not_after: Option<OffsetDateTime>,
}

impl Validity {
    /// `days` days from now.
    pub fn days(days: u32) -> Self {
        Validity {
            days: Some(days),
            ..Validity::default()
        }
    }

    /// The concrete (not_before, not_after), whole seconds.
    pub(crate) fn resolve(
        &self,
        default_days: u32,
        now: OffsetDateTime,
    ) -> Result<(OffsetDateTime, OffsetDateTime)> {
        let days = self.days.unwrap_or(default_days);
        if days == 0 {
            return Err(PkiError::InvalidValidity {
                reason: "--days must be at least 1".into(),
            });
        }
        let whole = |t: OffsetDateTime| t.replace_nanosecond(0).unwrap_or(t);
        let start = whole(
            self.not_before
                .unwrap_or_else(|| now - Duration::minutes(5)),
        );
        let end = whole(
            self.not_after
                .unwrap_or_else(|| start + Duration::days(i64::from(days))),
        );
        if end <= start {
            return Err(PkiError::InvalidValidity {
                reason: format!("not-after ({end}) must be later than not-before ({start})"),
            });
        }
        // X.509 times end at 9999-12-31; far earlier than that is already silly.
        if end.year() > 9999 || start.year() < 1950 {
            return Err(PkiError::InvalidValidity {
                reason: "dates must lie between 1950 and 9999".into(),
            });
        }
        Ok((start, end))
    }
}

/// A newly issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its registry entry.
    pub record: CertRecord,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The intermediate CA that signed it (PEM), which a client sends after its
    /// certificate; empty when the root signed it.
    pub chain_pem: String,
    /// Its private key (PKCS#8 PEM) if we generated it; `None` for CSR-issued ones.
    pub key_pem: Option<String>,
    /// Where the key is stored (`private/<serial>.key`), if we hold it.
    pub key_path: Option<PathBuf>,
}

/// 16 random bytes, top bit clear (a positive INTEGER) and first byte non-zero (so the DER
/// encoding, and the hex everyone prints, is always exactly 16 bytes).
pub(crate) fn random_serial() -> Result<[u8; 16]> {
    let rng = SystemRandom::new();
    loop {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(|_| PkiError::Random)?;
        bytes[0] &= 0x7f;
        if bytes[0] != 0 {
            return Ok(bytes);
        }
    }
}

/// Everything that goes into a leaf certificate.
pub(crate) struct LeafRequest<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub sans: Vec<SanType>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Signs a leaf certificate for `public_key`; returns its registry record (not yet stored).
pub(crate) fn sign_leaf(
    request: &LeafRequest<'_>,
    public_key: &impl PublicKeyData,
    issuer: &Issuer<'_, impl SigningKey>,
    has_key: bool,
) -> Result<CertRecord> {
    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, request.name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.subject_alt_names = request.sans.clone();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.extended_key_usages = match request.kind {
        Kind::Server => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::Other(IKE_INTERMEDIATE.to_vec()),
        ],
        Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Kind::Intermediate => {
            return Err(PkiError::Corrupt(
                "an intermediate CA is not a leaf certificate".into(),
            ));
        }
    };
    let cert = params.signed_by(public_key, issuer)?;
    Ok(record_of(request, &serial, &cert, has_key))
}

/// Signs an intermediate CA certificate for `public_key` under the root `issuer`: CN =
/// `request.name`, basicConstraints CA:TRUE pathlen:0 (it may sign leaves only), key usage
/// keyCertSign + cRLSign, a subject key identifier (which its leaves and CRLs name as their
/// authority key identifier).
pub(crate) fn sign_intermediate(
    request: &LeafRequest<'_>,
    public_key: &impl PublicKeyData,
    issuer: &Issuer<'_, impl SigningKey>,
) -> Result<CertRecord> {
    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, request.name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(public_key, issuer)?;
    Ok(record_of(request, &serial, &cert, true))
}

fn record_of(
    request: &LeafRequest<'_>,
    serial: &[u8],
    cert: &rcgen::Certificate,
    has_key: bool,
) -> CertRecord {
    CertRecord {
        serial: hex_encode(serial),
        name: request.name.to_string(),
        kind: request.kind,
        sha256: thumbprint(cert.der()),
        not_before: request.not_before,
        not_after: request.not_after,
        cert_pem: cert.pem(),
        has_key,
        revoked_at: None,
        reason: None,
        issuer: None,
    }
}

/// A new ECDSA P-256 key for a certificate we issue with its key.
pub(crate) fn new_key() -> Result<KeyPair> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

/// SHA-256 of `der`, lowercase hex.
pub(crate) fn thumbprint(der: &[u8]) -> String {
    hex_encode(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_16_byte_and_distinct() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_ne!(a, b);
        for s in [a, b] {
            assert!(s[0] != 0 && s[0] & 0x80 == 0);
        }
    }

    #[test]
    fn validity_defaults_and_explicit_dates() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let (nb, na) = Validity::default().resolve(365, now).unwrap();
        assert_eq!(nb, now - Duration::minutes(5));
        assert_eq!(na - nb, Duration::days(365));

        let past = Validity {
            not_before: Some(now - Duration::days(30)),
            not_after: Some(now - Duration::days(1)),
            ..Validity::default()
        };
        let (nb, na) = past.resolve(365, now).unwrap();
        assert!(nb < na && na < now);

        let backwards = Validity {
            not_before: Some(now),
            not_after: Some(now - Duration::days(1)),
            ..Validity::default()
        };
        assert!(backwards.resolve(365, now).is_err());
        assert!(Validity::days(0).resolve(365, now).is_err());
    }
}
