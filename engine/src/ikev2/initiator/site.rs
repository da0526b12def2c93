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
        let Some((prf, sk_pr)) = self
            .sa
            .as_ref()
            .map(|k| (k.suite.prf, k.keys.sk_pr.clone()))
        else {
            return false;
        };
        let mut idr_body = Vec::new();
        idr.emit_body(&mut idr_body);
        let octets = signed_octets(prf, &sk_pr, &self.init_response, &self.ni, &idr_body);
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
                let Some(time) = self.cfg.time.current_time() else {
                    self.auth_failed(now, "system clock unavailable".into(), true);
                    return false;
                };
                let verified = match self.cfg.trust.verify(certs, time, false) {
                    Ok(v) => v,
                    Err(r) => {
                        self.auth_failed(
                            now,
                            format!("connection {name}: peer certificate refused: {}", r.reason),
                            true,
                        );
                        return false;
                    }
                };
                if !certs
                    .first()
                    .is_some_and(|c| id_matches_cert(idr, c.as_ref()))
                {
                    self.auth_failed(
                        now,
                        format!("connection {name}: the peer's identity is not in its certificate"),
                        true,
                    );
                    return false;
                }
                let ok = method
                    .filter(|m| *m != SignMethod::SharedKeyMic)
                    .is_some_and(|m| verify_auth(m, &verified.spki, &octets, auth.data).is_ok());
                if !ok {
                    self.auth_failed(
                        now,
                        format!(
                            "connection {name}: the peer's AUTH payload (method {}) does not verify with its certificate",
                            auth.method.0
                        ),
                        true,
                    );
                    return false;
                }
                true
            }
        }
    }
}
