//! The costly half of answering a client's IKE_AUTH as a value that can run on another
//! thread (issue 13: handshakes must not hold up the worker forwarding other tunnels' data).
//! [`AuthJob::run`] checks the client's certificate chain (CA, validity, EKU, CRL), that its
//! identity is in the certificate and that its AUTH payload verifies, and signs our own AUTH
//! payload. Everything it needs is copied in; the SA keeps its state meanwhile and carries on
//! with [`IkeResponder::auth_job_done`].
//!
//! With [`ResponderConfig::offload`] off the job runs at once on the calling thread: one code
//! path either way.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};

use super::super::crypto::sign::{AuthMethod as SignMethod, verify_auth};
use super::super::peer_cert::id_matches_cert;
use super::ResponderConfig;
use crate::wire::ikev2::{IdPayload, IdType};

/// Checks a client's IKE_AUTH and signs our answer; see the module documentation.
pub struct AuthJob {
    pub(super) cfg: Arc<ResponderConfig>,
    /// The client's certificates as received (end entity first).
    pub(super) certs: Vec<Vec<u8>>,
    pub(super) time: UnixTime,
    /// IDi as received, and how the log names it.
    pub(super) idi: (IdType, Vec<u8>),
    pub(super) id_text: String,
    /// What the client's AUTH signs, its method number and data.
    pub(super) peer_octets: Vec<u8>,
    pub(super) peer_method: u8,
    pub(super) peer_auth: Vec<u8>,
    /// What our AUTH signs, and how.
    pub(super) our_octets: Vec<u8>,
    pub(super) our_method: SignMethod,
}

/// What an [`AuthJob`] found.
pub struct AuthDone {
    /// The client's name (its certificate's CN), or the refusal: the name if known, why.
    pub(super) verdict: Result<String, (Option<String>, String)>,
    /// Our AUTH payload data (only made for a client that passed).
    pub(super) our_auth: Result<Vec<u8>, String>,
}

impl AuthJob {
    /// Does the checks and the signature.
    pub fn run(self) -> AuthDone {
        let verdict = self.check();
        let our_auth = match &verdict {
            Ok(_) => self
                .cfg
                .key
                .auth_data(self.our_method, &self.our_octets, &*self.cfg.rng)
                .map_err(|e| e.to_string()),
            Err(_) => Err("not signed: the client was refused".into()),
        };
        AuthDone { verdict, our_auth }
    }

    fn check(&self) -> Result<String, (Option<String>, String)> {
        let certs: Vec<CertificateDer<'_>> = self
            .certs
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let verified = self
            .cfg
            .trust
            .verify(&certs, self.time, true)
            .map_err(|r| (r.name.clone(), r.reason))?;
        let name = verified.name;
        let idi = IdPayload::new(self.idi.0, &self.idi.1);
        if !id_matches_cert(&idi, &certs[0]) {
            return Err((
                Some(name),
                format!("identity {} is not in its certificate", self.id_text),
            ));
        }
        let method = SignMethod::from_id(self.peer_method);
        let ok = method.is_some_and(|m| {
            verify_auth(m, &verified.spki, &self.peer_octets, &self.peer_auth).is_ok()
        });
        if !ok {
            return Err((
                Some(name),
                format!(
                    "AUTH payload (method {}) does not verify with its certificate",
                    self.peer_method
                ),
            ));
        }
        Ok(name)
    }
}

impl std::fmt::Debug for AuthJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthJob")
            .field("id", &self.id_text)
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthDone")
            .field("verdict", &self.verdict)
            .finish_non_exhaustive()
    }
}
