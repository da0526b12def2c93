//! IKE_AUTH answers from a site-to-site peer: its identity must be the configured remote_id,
//! and it proves it with the shared key or a certificate of our CA.

use super::*;

impl IkeInitiator {
    /// Checks the peer gateway of a site-to-site SA (the caller knows `cfg.site` is set).
    pub(super) fn verify_site_auth(
        &mut self,
        now: Instant,
        idr: &IdPayload<'_>,
        auth: &AuthPayload<'_>,
        certs: &[CertificateDer<'_>],
    ) -> bool {
        let Some(site) = self.cfg.site.clone() else {
            return false;
        };
        let name = &site.name;
        if !id_matches_text(idr, &site.remote_id) {
            self.auth_failed(
                now,
                format!(
                    "connection {name}: the peer identified as {}, not as the configured remote_id {}",
                    super::super::site::describe_id(idr),
                    site.remote_id
                ),
                true,
            );
            return false;
        }
        let Some((prf, octets)) = self.responder_octets(idr) else {
            return false;
        };
        let method = SignMethod::from_id(auth.method.0);
        match &site.auth {
            SiteAuth::Psk(key) => {
                if method != Some(SignMethod::SharedKeyMic) {
                    self.auth_failed(
                        now,
                        format!(
                            "connection {name}: the peer authenticated with method {}, not the pre-shared key (auth = \"psk\")",
                            auth.method.0
                        ),
                        true,
                    );
                    return false;
                }
                if verify_psk_auth(prf, key, &octets, auth.data).is_err() {
                    self.auth_failed(
                        now,
                        format!(
                            "connection {name}: pre-shared key mismatch: the peer's AUTH payload does not verify with our key (check psk_file on both gateways)"
                        ),
                        true,
                    );
                    return false;
                }
                true
            }
            SiteAuth::Certificate => {
                let who = format!("connection {name}: the peer");
                self.verify_cert_auth(now, idr, auth, certs, &octets, &who)
            }
        }
    }
}
