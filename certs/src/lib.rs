//! Gatehouse PKI library: root CA, gateway and client certificates, the SQLite registry of
//! everything issued, revocation and CRL, and client profile export.
//!
//! The `gatehouse-certs` binary is a thin CLI over [`Pki`]; the gateway links this library
//! to bootstrap its PKI folder and to find its certificate and the current CRL.
//!
//! # The PKI folder
//!
//! ```text
//! DIR/
//!   ca.crt                root CA certificate (PEM). Written last by `init`: the folder holds
//!                         a CA exactly when this file exists.
//!   ca.key                root CA private key, PKCS#8 PEM, mode 0600
//!   registry.sqlite       every issued certificate (serial, name, kind, SHA-256 thumbprint,
//!                         validity, PEM, revocation) and the CRL number counter
//!   crl.pem               the current CRL, rewritten atomically on every revocation
//!   private/              mode 0700
//!     <serial>.key        private key of each certificate issued with a generated key (0600)
//!   server/
//!     <name>.crt          gateway certificate, for the gateway to load by path
//!     <name>.key          its private key (0600)
//!   intermediate/
//!     <name>.crt          intermediate CA certificate (`issue-intermediate`); its key is
//!                         private/<serial>.key (0600)
//! ```
//!
//! # Intermediate CAs
//!
//! [`Pki::issue_intermediate`] makes a CA under the root (pathlen 0: it signs client
//! certificates, not further CAs); [`Pki::issue_client_signed_by`] issues under it. Every CRL
//! publication (revoke, `crl`, the gateway's re-signing) writes `crl.pem` as the root's CRL
//! followed by one CRL per valid intermediate, each listing what that CA revoked: with a CRL
//! in force a relying party needs a revocation status for every certificate of a chain.
//! CRLs of other issuers already in `crl.pem` (an intermediate made with openssl whose CRL
//! an admin appended) are kept as they are. Exports of a client issued by an intermediate
//! carry the intermediate after the client certificate, so clients send the whole chain.
//!
//! # Crash safety
//!
//! Every file is written to a temporary name (created with its final mode), fsynced and
//! renamed into place. Issuing writes the key first, then records the certificate in one
//! SQLite transaction, and only after the commit writes output files such as `server/*`: a
//! crash leaves at most an orphan key, never a certificate that was issued but not recorded.
//! A revocation and the CRL that lists it commit together or not at all.
//!
//! # Example
//!
//! ```no_run
//! use gatehouse_certs::{CaOptions, Format, Pki, Reason, Validity};
//!
//! # fn main() -> Result<(), gatehouse_certs::PkiError> {
//! let mut pki = Pki::init("/var/lib/gatehouse/pki", &CaOptions::default())?;
//! pki.issue_server("gw", &["vpn.example.com".into()], &Validity::default())?;
//! pki.issue_client("alice", &Validity::default(), None)?;
//! let profile = pki.export("alice", "vpn.example.com", Format::Gatehouse, None)?;
//! pki.export_swanctl("alice", "vpn.example.com", "alice-swanctl".as_ref())?;
//! pki.revoke("alice", Reason::KeyCompromise)?;
//! # let _ = profile;
//! # Ok(())
//! # }
//! ```

mod ca;
mod crl;
mod csr;
mod error;
mod export;
mod export_builtin;
mod fsutil;
mod issue;
pub mod offers;
pub mod profile;
mod registry;
mod san;
pub mod tls_crypt;
pub mod wireguard;

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair, SanType};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use ca::CaOptions;
pub use crl::{CRL_LIFETIME, Reason};
pub use error::{PkiError, Result};
pub use export::Format;
pub use issue::{
    CLIENT_DEFAULT_DAYS, INTERMEDIATE_DEFAULT_DAYS, Issued, SERVER_DEFAULT_DAYS, Validity,
};
pub use profile::Profile;
pub use registry::{CertRecord, Kind, Status};

use export::ClientBundle;
use fsutil::{KEY_MODE, PRIVATE_DIR_MODE, PUBLIC_MODE};
use issue::LeafRequest;
use registry::Registry;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const REGISTRY: &str = "registry.sqlite";
const CRL: &str = "crl.pem";
const PRIVATE_DIR: &str = "private";
const SERVER_DIR: &str = "server";
const INTERMEDIATE_DIR: &str = "intermediate";

/// Where the key of certificate `serial` is kept.
fn key_path(dir: &Path, serial: &str) -> PathBuf {
    dir.join(PRIVATE_DIR).join(format!("{serial}.key"))
}

/// An intermediate CA, loaded to sign.
struct Intermediate {
    record: CertRecord,
    issuer: Issuer<'static, KeyPair>,
}

/// Loads intermediate CA `record` (certificate in the registry, key in `private/`).
fn load_intermediate(dir: &Path, record: CertRecord) -> Result<Intermediate> {
    let path = key_path(dir, &record.serial);
    let key_pem = fsutil::read_to_string(&path)?;
    let (issuer, _) = ca::load_as(
        &record.cert_pem,
        &key_pem,
        &format!("the certificate of intermediate CA {}", record.name),
        &path.display().to_string(),
    )?;
    Ok(Intermediate { record, issuer })
}

/// An open PKI folder: the CA, ready to issue and revoke, and its registry.
///
/// Methods that change the folder take `&mut self`; the registry serializes concurrent
/// writers from other processes (SQLite `BEGIN IMMEDIATE`).
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca_cert_pem: String,
    ca_cert_der: Vec<u8>,
    registry: Registry,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the CA key.
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Creates a new root CA (ECDSA P-256) in `dir`, creating the folder if needed, and
    /// writes an empty CRL. Refuses if `dir` already holds a CA.
    pub fn init(dir: impl AsRef<Path>, options: &CaOptions) -> Result<Pki> {
        let dir = dir.as_ref();
        let ca_crt = dir.join(CA_CERT);
        if ca_crt.exists() {
            return Err(PkiError::CaExists {
                dir: dir.to_path_buf(),
            });
        }
        // A crashed init never leaves issued certificates behind (they can only be issued
        // once ca.crt exists), so a registry with rows means ca.crt was lost, not that init
        // was interrupted: re-creating the CA would orphan every certificate.
        let registry_path = dir.join(REGISTRY);
        if registry_path.is_file()
            && Registry::open(&registry_path).is_ok_and(|r| r.list().is_ok_and(|l| !l.is_empty()))
        {
            return Err(PkiError::Corrupt(format!(
                "{} has issued certificates but no ca.crt; restore ca.crt from a backup instead of creating a new CA",
                dir.display()
            )));
        }
        let now = OffsetDateTime::now_utc();
        // Validate and generate before touching the disk.
        let new_ca = ca::generate(options, now)?;
        let (issuer, _) = ca::load(&new_ca.cert_pem, &new_ca.key_pem)?;

        fsutil::ensure_dir(dir, 0o755)?;
        fsutil::write_atomic(&dir.join(CA_KEY), new_ca.key_pem.as_bytes(), KEY_MODE)?;

        // Build the registry under a temporary name so a crash never leaves a half-made
        // one under the real name. Leftovers of an earlier crashed init are not a CA yet
        // (no ca.crt), so they are replaced.
        let tmp = fsutil::temp_path(&registry_path);
        for stale in [&tmp, &sqlite_journal(&tmp), &sqlite_journal(&registry_path)] {
            let _ = fs::remove_file(stale);
        }
        let crl_path = dir.join(CRL);
        let mut registry = Registry::create(&tmp)?;
        registry.publish_crl(None, |_, number| {
            let pem = crl::sign_crl(&issuer, &[], number, now)?;
            fsutil::write_atomic(&crl_path, pem.as_bytes(), PUBLIC_MODE)
        })?;
        registry.close()?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| PkiError::io("sync", &tmp, e))?;
        fs::rename(&tmp, &registry_path)
            .map_err(|e| PkiError::io("rename into place", &registry_path, e))?;

        fsutil::ensure_dir(&dir.join(PRIVATE_DIR), PRIVATE_DIR_MODE)?;
        fsutil::ensure_dir(&dir.join(SERVER_DIR), 0o755)?;
        // Last: from here on the folder holds a CA.
        fsutil::write_atomic(&ca_crt, new_ca.cert_pem.as_bytes(), PUBLIC_MODE)?;
        Pki::open(dir)
    }

    /// Opens an existing PKI folder made by [`Pki::init`]. Never creates anything.
    pub fn open(dir: impl AsRef<Path>) -> Result<Pki> {
        let dir = dir.as_ref();
        let not_ours = || PkiError::NotAPki {
            dir: dir.to_path_buf(),
        };
        if ![CA_CERT, CA_KEY, REGISTRY]
            .iter()
            .all(|f| dir.join(f).is_file())
        {
            return Err(not_ours());
        }
        let ca_cert_pem = fsutil::read_to_string(&dir.join(CA_CERT))?;
        let key_pem = fsutil::read_to_string(&dir.join(CA_KEY))?;
        let (issuer, ca_cert_der) = ca::load(&ca_cert_pem, &key_pem)?;
        let registry = Registry::open(&dir.join(REGISTRY)).map_err(|_| not_ours())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            issuer,
            ca_cert_pem,
            ca_cert_der,
            registry,
        })
    }

    /// The PKI folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The root CA certificate, DER.
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca_cert_der
    }

    /// Where the current CRL is (`DIR/crl.pem`).
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL)
    }

    /// Where the gateway certificate `name` and its key are: `(server/<name>.crt,
    /// server/<name>.key)`.
    pub fn server_cert_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let server = self.dir.join(SERVER_DIR);
        (
            server.join(format!("{name}.crt")),
            server.join(format!("{name}.key")),
        )
    }

    /// Issues a gateway certificate: ECDSA P-256, CN = `name`, EKU serverAuth +
    /// ikeIntermediate, one SAN per entry of `sans` (IP address or DNS name). Writes
    /// `server/<name>.crt` and `server/<name>.key`.
    pub fn issue_server(
        &mut self,
        name: &str,
        sans: &[String],
        validity: &Validity,
    ) -> Result<Issued> {
        san::check_name(name)?;
        if sans.is_empty() {
            return Err(PkiError::NoSan);
        }
        let sans = sans
            .iter()
            .map(|s| san::parse_san(s))
            .collect::<Result<Vec<SanType>>>()?;
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = validity.resolve(SERVER_DEFAULT_DAYS, now)?;
        let request = LeafRequest {
            name,
            kind: Kind::Server,
            sans,
            not_before,
            not_after,
        };
        self.check_name_free(name, now)?;
        let key = issue::new_key()?;
        let record = issue::sign_leaf(&request, &key, &self.issuer, true)?;
        let issued = self.store_with_key(record, key, now)?;
        let (crt_path, key_path) = self.server_cert_paths(name);
        fsutil::ensure_dir(&self.dir.join(SERVER_DIR), 0o755)?;
        let key_pem = issued.key_pem.as_deref().unwrap_or_default();
        fsutil::write_atomic(&key_path, key_pem.as_bytes(), KEY_MODE)?;
        fsutil::write_atomic(&crt_path, issued.cert_pem.as_bytes(), PUBLIC_MODE)?;
        Ok(issued)
    }

    /// Issues a client certificate (EKU clientAuth, CN = `name`) signed by the root CA.
    ///
    /// Without `csr` a new ECDSA P-256 key is generated and kept in `private/`. With `csr`
    /// (PEM or DER PKCS#10), its self-signature is verified and its public key certified;
    /// the subject it asks for is ignored and no key is stored.
    pub fn issue_client(
        &mut self,
        name: &str,
        validity: &Validity,
        csr: Option<&[u8]>,
    ) -> Result<Issued> {
        self.issue_client_signed_by(name, validity, csr, None)
    }

    /// Issues a client certificate as [`Pki::issue_client`] does, signed by the valid
    /// intermediate CA named `ca` (see [`Pki::issue_intermediate`]) or, with `None`, by the
    /// root. [`Issued::chain_pem`] then holds the intermediate, which the client must send
    /// after its certificate.
    pub fn issue_client_signed_by(
        &mut self,
        name: &str,
        validity: &Validity,
        csr: Option<&[u8]>,
        ca: Option<&str>,
    ) -> Result<Issued> {
        san::check_name(name)?;
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = validity.resolve(CLIENT_DEFAULT_DAYS, now)?;
        let request = LeafRequest {
            name,
            kind: Kind::Client,
            sans: Vec::new(),
            not_before,
            not_after,
        };
        let intermediate = ca.map(|ca| self.intermediate(ca, now)).transpose()?;
        let Some(csr) = csr else {
            self.check_name_free(name, now)?;
            let key = issue::new_key()?;
            let record = self.sign_client(&request, &key, intermediate.as_ref(), true)?;
            return self.store_with_key(record, key, now);
        };
        let public_key = csr::verified_public_key(csr)?;
        self.check_name_free(name, now)?;
        let record = self.sign_client(&request, &public_key, intermediate.as_ref(), false)?;
        self.record(&record, now)?;
        Ok(Issued {
            cert_pem: record.cert_pem.clone(),
            chain_pem: self.chain_of(&record)?,
            record,
            key_pem: None,
            key_path: None,
        })
    }

    /// Creates an intermediate CA under the root: ECDSA P-256, CN = `name`, basicConstraints
    /// CA:TRUE pathlen:0, key usage keyCertSign + cRLSign; valid for `validity` (default
    /// [`INTERMEDIATE_DEFAULT_DAYS`]), never beyond the root's not-after. Its key goes to
    /// `private/<serial>.key` (0600), its certificate to `intermediate/<name>.crt`, and
    /// `crl.pem` is signed again so that it holds the new CA's (empty) CRL before any
    /// certificate the CA signs is presented. Issue clients under it with
    /// [`Pki::issue_client_signed_by`]; revoke it like any certificate (the root's CRL then
    /// lists it).
    pub fn issue_intermediate(&mut self, name: &str, validity: &Validity) -> Result<Issued> {
        san::check_name(name)?;
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = validity.resolve(INTERMEDIATE_DEFAULT_DAYS, now)?;
        let (_, root) = x509_parser::parse_x509_certificate(&self.ca_cert_der)
            .map_err(|e| PkiError::Corrupt(format!("cannot read ca.crt: {e}")))?;
        let root_end = root.validity().not_after.to_datetime();
        if not_after <= now {
            return Err(PkiError::InvalidValidity {
                reason: format!(
                    "not-after ({}) is in the past: an intermediate CA must be valid now to sign anything",
                    rfc3339(not_after)
                ),
            });
        }
        let not_after = not_after.min(root_end);
        if not_after <= not_before.max(now) {
            return Err(PkiError::InvalidValidity {
                reason: format!(
                    "the root CA is valid until {} only; an intermediate CA cannot outlive it",
                    rfc3339(root_end)
                ),
            });
        }
        let request = LeafRequest {
            name,
            kind: Kind::Intermediate,
            sans: Vec::new(),
            not_before,
            not_after,
        };
        self.check_name_free(name, now)?;
        let key = issue::new_key()?;
        let record = issue::sign_intermediate(&request, &key, &self.issuer)?;
        let issued = self.store_with_key(record, key, now)?;
        self.write_crl()?;
        let path = self.intermediate_cert_path(name);
        fsutil::ensure_dir(&self.dir.join(INTERMEDIATE_DIR), 0o755)?;
        fsutil::write_atomic(&path, issued.cert_pem.as_bytes(), PUBLIC_MODE)?;
        Ok(issued)
    }

    /// Where intermediate CA `name`'s certificate is written: `intermediate/<name>.crt`.
    pub fn intermediate_cert_path(&self, name: &str) -> PathBuf {
        self.dir.join(INTERMEDIATE_DIR).join(format!("{name}.crt"))
    }

    /// The valid intermediate CA `name`, ready to sign.
    fn intermediate(&self, name: &str, now: OffsetDateTime) -> Result<Intermediate> {
        let unknown = || PkiError::UnknownIntermediate {
            name: name.to_string(),
            dir: self.dir.clone(),
        };
        let record = self
            .registry
            .valid_by_name(name, now)?
            .filter(|r| r.kind == Kind::Intermediate && r.has_key)
            .ok_or_else(unknown)?;
        load_intermediate(&self.dir, record)
    }

    /// Signs a client certificate by `intermediate`, or by the root.
    fn sign_client(
        &self,
        request: &LeafRequest<'_>,
        public_key: &impl rcgen::PublicKeyData,
        intermediate: Option<&Intermediate>,
        has_key: bool,
    ) -> Result<CertRecord> {
        let Some(intermediate) = intermediate else {
            return issue::sign_leaf(request, public_key, &self.issuer, has_key);
        };
        let mut record = issue::sign_leaf(request, public_key, &intermediate.issuer, has_key)?;
        record.issuer = Some(intermediate.record.serial.clone());
        Ok(record)
    }

    /// The intermediate CA certificate (PEM) a client presents after `record`; empty for a
    /// certificate signed by the root.
    fn chain_of(&self, record: &CertRecord) -> Result<String> {
        let Some(serial) = &record.issuer else {
            return Ok(String::new());
        };
        let issuer = self.registry.by_serial(serial)?.ok_or_else(|| {
            PkiError::Corrupt(format!(
                "certificate {} names issuer {serial}, which is not in the registry",
                record.serial
            ))
        })?;
        Ok(issuer.cert_pem)
    }

    /// Every certificate in the registry, oldest first.
    pub fn list(&self) -> Result<Vec<CertRecord>> {
        self.registry.list()
    }

    /// Looks a certificate up by serial (hex, any case) or else by name (the valid one if
    /// there is one, else the newest).
    pub fn find(&self, name_or_serial: &str) -> Result<CertRecord> {
        if let Some(record) = self.registry.by_serial(name_or_serial)? {
            return Ok(record);
        }
        let now = OffsetDateTime::now_utc();
        let mut by_name = self.registry.by_name(name_or_serial)?;
        // Newest first; prefer a valid one, then one not yet revoked, then any.
        let pick = by_name
            .iter()
            .position(|r| r.status(now) == Status::Valid)
            .or_else(|| by_name.iter().position(|r| r.revoked_at.is_none()))
            .or(if by_name.is_empty() { None } else { Some(0) });
        match pick {
            Some(i) => Ok(by_name.swap_remove(i)),
            None => Err(PkiError::UnknownCertificate {
                what: name_or_serial.to_string(),
                dir: self.dir.clone(),
            }),
        }
    }

    /// Revokes a certificate (by serial, or the valid certificate with that name) and
    /// rewrites `crl.pem`. The revocation is recorded only if the new CRL was written.
    pub fn revoke(&mut self, name_or_serial: &str, reason: Reason) -> Result<CertRecord> {
        let target = self.find(name_or_serial)?;
        if let Some(at) = target.revoked_at {
            return Err(PkiError::AlreadyRevoked {
                name: target.name,
                serial: target.serial,
                date: rfc3339(at),
            });
        }
        // Whole seconds: the registry and the CRL store no more.
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        self.publish_crl(Some((&target.serial, now, reason)), now)?;
        self.registry
            .by_serial(&target.serial)?
            .ok_or_else(|| PkiError::Corrupt(format!("certificate {} vanished", target.serial)))
    }

    /// Signs a new CRL (next CRL number, next update in [`CRL_LIFETIME`]), writes it to
    /// `crl.pem` atomically and returns it (PEM).
    pub fn write_crl(&mut self) -> Result<String> {
        self.publish_crl(None, OffsetDateTime::now_utc())
    }

    /// The issuers (raw DER names) of the CRLs [`Pki::write_crl`] signs: the root, then each
    /// valid intermediate CA whose key is here. A `crl.pem` that lacks the CRL of one of
    /// them, or holds a stale one, is mended by signing again.
    pub fn crl_issuers(&self) -> Result<Vec<Vec<u8>>> {
        let now = OffsetDateTime::now_utc();
        let mut out = vec![ca::subject_der(&self.ca_cert_der)?];
        for record in self.registry.list()? {
            if record.kind != Kind::Intermediate
                || record.status(now) != Status::Valid
                || !record.has_key
            {
                continue;
            }
            let der = export::pem_der(&record.cert_pem, "intermediate CA certificate")?;
            if load_intermediate(&self.dir, record).is_ok() {
                out.push(ca::subject_der(&der)?);
            }
        }
        Ok(out)
    }

    /// Exports the valid client certificate `name` with its key and the CA, for a client
    /// connecting to `gateway`. `password` protects PKCS#12 output (empty if `None`); the
    /// other formats hold the key in clear, so write them with mode 0600. [`Format::Swanctl`]
    /// is a folder, not a file: use [`Pki::export_swanctl`] for it.
    pub fn export(
        &self,
        name: &str,
        gateway: &str,
        format: Format,
        password: Option<&str>,
    ) -> Result<Vec<u8>> {
        if format.is_folder() {
            return Err(PkiError::NotAFileFormat(format));
        }
        let (record, key_pem, chain_pem) = self.exportable(name, gateway)?;
        if format == Format::Gatehouse {
            let cert = export::with_chain(&record.cert_pem, &chain_pem);
            let mut profile = Profile::new(name, gateway, &self.ca_cert_pem, &cert, &key_pem);
            // With a tls-crypt-v2 server key in the PKI, the client's own key (made on first
            // export) goes with it.
            profile.tls_crypt_v2 = self
                .tls_crypt_v2_client_key(&record.serial, name)?
                .map(|v2| v2.to_pem());
            if let Some(port) = offers::quic_port(&self.dir) {
                profile.offer_quic(port);
            }
            profile.client_routing = offers::client_routing(&self.dir);
            return Ok(profile.to_toml()?.into_bytes());
        }
        // With a tls-crypt-v2 server key in the PKI, `.ovpn` exports carry the client's own
        // key (made on first export).
        if format == Format::Ovpn
            && let Some(v2) = self.tls_crypt_v2_client_key(&record.serial, name)?
        {
            let bundle = ClientBundle {
                name,
                gateway,
                ca_pem: &self.ca_cert_pem,
                cert_pem: &record.cert_pem,
                chain_pem: &chain_pem,
                key_pem: &key_pem,
            };
            return Ok(export::ovpn_with_tls_crypt_v2(&bundle, &v2.to_pem()).into_bytes());
        }
        export::render(
            &ClientBundle {
                name,
                gateway,
                ca_pem: &self.ca_cert_pem,
                cert_pem: &record.cert_pem,
                chain_pem: &chain_pem,
                key_pem: &key_pem,
            },
            format,
            password.unwrap_or(""),
        )
    }

    /// Exports the valid client certificate `name` as a strongSwan swanctl folder `out_dir`
    /// (usable as `SWANCTL_DIR`) for a road warrior connecting to `gateway`, the host name or
    /// address the gateway's certificate was issued for (the gateway's IKE identity):
    ///
    /// ```text
    /// out_dir/
    ///   swanctl.conf              the connection `gatehouse` (child `gatehouse`), how to use it
    ///   x509ca/gatehouse-ca.pem   the CA
    ///   x509/<name>.pem           the client certificate
    ///   private/<name>.pem        its key, PKCS#8 PEM, mode 0600 (private/ is 0700)
    /// ```
    ///
    /// `out_dir` must not exist or be an empty folder. The folder is built beside it under a
    /// temporary name and renamed into place, so it appears complete or not at all.
    pub fn export_swanctl(&self, name: &str, gateway: &str, out_dir: &Path) -> Result<()> {
        let (record, key_pem, chain_pem) = self.exportable(name, gateway)?;
        let entries = export::swanctl(&ClientBundle {
            name,
            gateway,
            ca_pem: &self.ca_cert_pem,
            cert_pem: &record.cert_pem,
            chain_pem: &chain_pem,
            key_pem: &key_pem,
        });
        fsutil::write_dir_atomic(out_dir, &entries)
    }

    /// The valid client certificate `name`, its key and the intermediate CA it was issued by
    /// (PEM, empty for the root), after checking `gateway`.
    fn exportable(&self, name: &str, gateway: &str) -> Result<(CertRecord, String, String)> {
        if san::parse_san(gateway).is_err() || gateway.starts_with("*.") {
            return Err(PkiError::InvalidSan {
                value: gateway.to_string(),
            });
        }
        let now = OffsetDateTime::now_utc();
        let mut records = self.registry.by_name(name)?;
        let Some(index) = records.iter().position(|r| r.status(now) == Status::Valid) else {
            let Some(newest) = records.first() else {
                return Err(PkiError::UnknownCertificate {
                    what: name.to_string(),
                    dir: self.dir.clone(),
                });
            };
            let detail = match newest.revoked_at {
                Some(at) => format!("the last one was revoked on {}", rfc3339(at)),
                None => format!("the last one expired on {}", rfc3339(newest.not_after)),
            };
            return Err(PkiError::NoValidCertificate {
                name: name.to_string(),
                detail,
                dir: self.dir.clone(),
            });
        };
        let record = records.swap_remove(index);
        let what = match record.kind {
            Kind::Client => None,
            Kind::Server => Some("a gateway certificate"),
            Kind::Intermediate => Some("an intermediate CA"),
        };
        if let Some(what) = what {
            return Err(PkiError::NotAClientCertificate {
                name: name.to_string(),
                what,
            });
        }
        if !record.has_key {
            return Err(PkiError::KeyNotHeld {
                name: name.to_string(),
            });
        }
        let key_pem = fsutil::read_to_string(&self.key_path(&record.serial))?;
        let chain_pem = self.chain_of(&record)?;
        Ok((record, key_pem, chain_pem))
    }

    fn key_path(&self, serial: &str) -> PathBuf {
        key_path(&self.dir, serial)
    }

    fn check_name_free(&self, name: &str, now: OffsetDateTime) -> Result<()> {
        match self.registry.valid_by_name(name, now)? {
            Some(existing) => Err(self.duplicate(name, existing.serial)),
            None => Ok(()),
        }
    }

    fn duplicate(&self, name: &str, serial: String) -> PkiError {
        PkiError::DuplicateName {
            name: name.to_string(),
            serial,
            dir: self.dir.clone(),
        }
    }

    /// Inserts `record`, turning a lost race for the name into [`PkiError::DuplicateName`].
    fn record(&mut self, record: &CertRecord, now: OffsetDateTime) -> Result<()> {
        self.registry
            .insert_unique(record, now)?
            .map_err(|serial| self.duplicate(&record.name, serial))
    }

    /// Stores the key of the freshly signed `record`, then records the certificate.
    fn store_with_key(
        &mut self,
        record: CertRecord,
        key: KeyPair,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        let key_pem = key.serialize_pem();
        let key_path = self.key_path(&record.serial);
        fsutil::ensure_dir(&self.dir.join(PRIVATE_DIR), PRIVATE_DIR_MODE)?;
        fsutil::write_atomic(&key_path, key_pem.as_bytes(), KEY_MODE)?;
        if let Err(e) = self.record(&record, now) {
            // Nothing refers to the key; do not leave it behind.
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
        Ok(Issued {
            cert_pem: record.cert_pem.clone(),
            chain_pem: self.chain_of(&record)?,
            record,
            key_pem: Some(key_pem),
            key_path: Some(key_path),
        })
    }

    /// Signs and writes `crl.pem`: the root's CRL, then one per valid intermediate CA whose
    /// key is here, then the CRLs of any other issuer the file already held (see the crate
    /// docs).
    fn publish_crl(
        &mut self,
        revoke: Option<(&str, OffsetDateTime, Reason)>,
        now: OffsetDateTime,
    ) -> Result<String> {
        let crl_path = self.crl_path();
        // Read before the registry's write lock: a file that cannot be read holds nothing
        // to keep.
        let existing = fs::read(&crl_path).unwrap_or_default();
        let issuer = &self.issuer;
        let root_der = &self.ca_cert_der;
        let dir = &self.dir;
        self.registry.publish_crl(revoke, |all, number| {
            let revoked_by = |ca: Option<&str>| -> Vec<&CertRecord> {
                all.iter()
                    .filter(|r| r.revoked_at.is_some() && r.issuer.as_deref() == ca)
                    .collect()
            };
            let mut pem = crl::sign_crl(issuer, &revoked_by(None), number, now)?;
            let mut signed = vec![ca::subject_der(root_der)?];
            for record in all.iter().filter(|r| r.kind == Kind::Intermediate) {
                if record.status(now) != Status::Valid || !record.has_key {
                    continue;
                }
                // An intermediate whose key is gone cannot sign: whatever CRL of it the
                // file holds is kept below, and the root's revocations still go out.
                let Ok(intermediate) = load_intermediate(dir, record.clone()) else {
                    continue;
                };
                let der = export::pem_der(&record.cert_pem, "intermediate CA certificate")?;
                pem.push_str(&crl::sign_crl(
                    &intermediate.issuer,
                    &revoked_by(Some(&record.serial)),
                    number,
                    now,
                )?);
                signed.push(ca::subject_der(&der)?);
            }
            pem.push_str(&crl::other_issuers(&existing, &signed));
            fsutil::write_atomic(&crl_path, pem.as_bytes(), PUBLIC_MODE)?;
            Ok(pem)
        })
    }
}

/// Formats a time as RFC 3339 (UTC, whole seconds).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn sqlite_journal(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push("-journal");
    db.with_file_name(name)
}
