//! The one error type of the PKI library.
//!
//! Every message is a single line that tells an administrator what went wrong and, where
//! there is one, what to do next; the CLI prints it as `error: <message>`.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the PKI library.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// `init` found a CA already in place.
    #[error(
        "{} already holds a certificate authority (ca.crt); refusing to overwrite it - pick another folder or remove the old PKI on purpose",
        .dir.display()
    )]
    CaExists {
        /// The PKI folder.
        dir: PathBuf,
    },

    /// The folder is missing or lacks ca.crt / ca.key / registry.sqlite.
    #[error(
        "{} is not a Gatehouse PKI folder; create one with `gatehouse-certs --pki {} init-ca`",
        .dir.display(), .dir.display()
    )]
    NotAPki {
        /// The folder that was given.
        dir: PathBuf,
    },

    /// A certificate name that cannot be used (also used as a file name).
    #[error(
        "invalid certificate name {name:?}: use 1-64 letters, digits, '.', '_', '-', '+' or '@', not starting with '.' or '-'"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },

    /// A `--san` value that is neither an IP address nor a DNS name.
    #[error(
        "invalid subject alternative name {value:?}: give an IP address or a DNS name (letters, digits and hyphens in dot-separated labels, optionally starting with \"*.\")"
    )]
    InvalidSan {
        /// The rejected value.
        value: String,
    },

    /// A gateway certificate was requested without any SAN.
    #[error("a gateway certificate needs at least one --san (its DNS name or IP address)")]
    NoSan,

    /// The validity period does not make sense.
    #[error("invalid validity period: {reason}")]
    InvalidValidity {
        /// What is wrong with it.
        reason: String,
    },

    /// Names are unique among valid certificates.
    #[error(
        "a valid certificate named {name} already exists (serial {serial}); revoke it first with `gatehouse-certs --pki {} revoke {name}`",
        .dir.display()
    )]
    DuplicateName {
        /// The name asked for.
        name: String,
        /// Serial of the certificate that holds the name.
        serial: String,
        /// The PKI folder (for the suggested command).
        dir: PathBuf,
    },

    /// The CSR could not be parsed at all.
    #[error(
        "cannot read the certificate signing request: {reason}; give a PEM or DER PKCS#10 file"
    )]
    CsrUnreadable {
        /// Parser detail.
        reason: String,
    },

    /// The CSR's self-signature does not verify.
    #[error(
        "the certificate signing request's signature does not verify (corrupted or tampered with); create a new CSR on the device"
    )]
    CsrBadSignature,

    /// The CSR carries a key type we do not sign.
    #[error(
        "unsupported key in the certificate signing request: {reason}; use RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519"
    )]
    CsrUnsupportedKey {
        /// Which key it was.
        reason: String,
    },

    /// No certificate with that name or serial.
    #[error(
        "no certificate named or with serial {what:?}; see the issued certificates with `gatehouse-certs --pki {} list`",
        .dir.display()
    )]
    UnknownCertificate {
        /// The name or serial asked for.
        what: String,
        /// The PKI folder (for the suggested command).
        dir: PathBuf,
    },

    /// Revoking a certificate that is already revoked.
    #[error("certificate {name} (serial {serial}) was already revoked on {date}")]
    AlreadyRevoked {
        /// Name of the certificate.
        name: String,
        /// Its serial.
        serial: String,
        /// When it was revoked (RFC 3339).
        date: String,
    },

    /// The name exists but only as revoked or expired certificates.
    #[error(
        "there is no valid certificate named {name} ({detail}); issue a new one with `gatehouse-certs --pki {} issue-client {name}`",
        .dir.display()
    )]
    NoValidCertificate {
        /// The name asked for.
        name: String,
        /// Why none of its certificates is usable.
        detail: String,
        /// The PKI folder (for the suggested command).
        dir: PathBuf,
    },

    /// Export was asked for a gateway certificate or an intermediate CA.
    #[error("{name} is {what}; profiles are exported for client certificates only")]
    NotAClientCertificate {
        /// The name asked for.
        name: String,
        /// What it is instead ("a gateway certificate", "an intermediate CA").
        what: &'static str,
    },

    /// `--ca NAME` names no valid intermediate CA.
    #[error(
        "there is no valid intermediate CA named {name:?}; make one with `gatehouse-certs --pki {} issue-intermediate {name}` (`list` shows what exists)",
        .dir.display()
    )]
    UnknownIntermediate {
        /// The name asked for.
        name: String,
        /// The PKI folder (for the suggested command).
        dir: PathBuf,
    },

    /// Export of a certificate issued from a CSR: the key never came here.
    #[error(
        "certificate {name} was issued from a CSR, so its private key stays on the device that made the request; build the profile there, or issue a new certificate without --csr"
    )]
    KeyNotHeld {
        /// The name asked for.
        name: String,
    },

    /// An unknown revocation reason.
    #[error(
        "unknown revocation reason {0:?}; use one of unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, cessation-of-operation"
    )]
    InvalidReason(String),

    /// An unknown export format.
    #[error(
        "unknown export format {0:?}; use gatehouse, ovpn, pkcs12, swanctl, mobileconfig or windows"
    )]
    InvalidFormat(String),

    /// The export format needs a non-empty PKCS#12 password.
    #[error(
        "the {0} export needs --password: Apple devices refuse a PKCS#12 without one; the device asks for it when the profile is installed"
    )]
    PasswordRequired(crate::Format),

    /// [`crate::Pki::export`] was asked for a format that is a folder, not one file.
    #[error("the {0} export is a folder, not a file; write it with Pki::export_swanctl")]
    NotAFileFormat(crate::Format),

    /// The output folder of a folder export cannot be used.
    #[error("cannot export into {}: {reason}", .path.display())]
    OutputDir {
        /// The folder that was given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// A Gatehouse profile that could not be read.
    #[error("invalid Gatehouse profile: {0}")]
    InvalidProfile(String),

    /// The PKI folder holds something we cannot parse (damaged by hand?).
    #[error("the PKI folder is damaged: {0}")]
    Corrupt(String),

    /// A filesystem operation failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What we were doing ("write", "read", ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The registry database failed.
    #[error("certificate registry (registry.sqlite): {0}")]
    Registry(#[from] rusqlite::Error),

    /// Certificate generation or signing failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),

    /// PKCS#12 encoding failed.
    #[error("PKCS#12 encoding failed: {0}")]
    Pkcs12(String),

    /// The OS random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl PkiError {
    /// Wraps an I/O error with what we were doing and on which path.
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        PkiError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias for the PKI library.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;
