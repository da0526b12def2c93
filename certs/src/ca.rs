//! The root certificate authority: creating it and loading it back.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::error::{PkiError, Result};
use crate::issue::random_serial;

/// Settings for a new root CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaOptions {
    /// Common name of the CA certificate.
    pub name: String,
    /// Lifetime in days.
    pub days: u32,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            name: "Gatehouse Root CA".to_string(),
            days: 3650,
        }
    }
}

/// A freshly generated CA, not yet on disk.
pub(crate) struct NewCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generates a self-signed ECDSA P-256 root CA.
pub(crate) fn generate(options: &CaOptions, now: OffsetDateTime) -> Result<NewCa> {
    if options.name.trim().is_empty() || options.name.len() > 64 {
        return Err(PkiError::InvalidName {
            name: options.name.clone(),
        });
    }
    if options.days == 0 {
        return Err(PkiError::InvalidValidity {
            reason: "--days must be at least 1".into(),
        });
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, options.name.as_str());
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    let start = now.replace_nanosecond(0).unwrap_or(now) - Duration::minutes(5);
    params.not_before = start;
    params.not_after = start + Duration::days(i64::from(options.days));
    let cert = params.self_signed(&key)?;
    Ok(NewCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Loads the CA as an issuer from its certificate and PKCS#8 key (both PEM).
pub(crate) fn load(cert_pem: &str, key_pem: &str) -> Result<(Issuer<'static, KeyPair>, Vec<u8>)> {
    load_as(cert_pem, key_pem, "ca.crt", "ca.key")
}

/// Loads a CA (the root or an intermediate) as an issuer; errors name `cert_file` and
/// `key_file`.
pub(crate) fn load_as(
    cert_pem: &str,
    key_pem: &str,
    cert_file: &str,
    key_file: &str,
) -> Result<(Issuer<'static, KeyPair>, Vec<u8>)> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| PkiError::Corrupt(format!("cannot read {key_file}: {e}")))?;
    let block = pem::parse(cert_pem)
        .map_err(|e| PkiError::Corrupt(format!("cannot read {cert_file}: {e}")))?;
    let der = block.into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::Corrupt(format!("cannot read {cert_file}: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(PkiError::Corrupt(format!(
            "{key_file} does not belong to {cert_file}; restore both from the same backup"
        )));
    }
    let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
        .map_err(|e| PkiError::Corrupt(format!("cannot read {cert_file}: {e}")))?;
    Ok((issuer, der))
}

/// The raw (DER) subject name of a certificate: what the CRLs it signs carry as issuer.
pub(crate) fn subject_der(cert_der: &[u8]) -> Result<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::Corrupt(format!("cannot read a CA certificate: {e}")))?;
    Ok(cert.subject().as_raw().to_vec())
}
