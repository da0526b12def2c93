//! IKE_AUTH from a site-to-site peer: a pre-shared key or a certificate of our CA, traffic
//! selectors narrowed to the configured prefixes, and no virtual address.

use rustls::pki_types::CertificateDer;

use super::super::crypto::sign::{
    AuthMethod as SignMethod, psk_auth, signed_octets, verify_auth, verify_psk_auth,
};
use super::super::peer_cert::id_matches_cert;
use super::super::proposal::{choose_esp, esp_sa_payload};
use super::super::site::{SiteAuth, describe_id, id_for, narrow, nets_of};
use super::*;
use crate::wire::ikev2::{
    AuthMethod, AuthPayload, CertPayload, IdPayload, SaPayload, TrafficSelector, TsPayload,
};

/// What the peer's IKE_AUTH request carried.
pub(super) struct SiteRequest<'a, 'b> {
    pub(super) message_id: u32,
    pub(super) idi: &'b IdPayload<'a>,
    pub(super) auth: &'b AuthPayload<'a>,
    pub(super) certs: &'b [CertificateDer<'a>],
    pub(super) sa: Option<&'b SaPayload<'a>>,
    pub(super) tsi: Option<&'b TsPayload>,
    pub(super) tsr: Option<&'b TsPayload>,
    pub(super) initial_contact: bool,
}

fn describe_ts(ts: &[TrafficSelector]) -> String {
    let nets = nets_of(ts);
    if nets.is_empty() {
        return "nothing".into();
    }
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_nets(nets: &[ipnet::IpNet]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl IkeResponder {
    /// Refuses with `t` (not AUTHENTICATION_FAILED: the peer did authenticate, but what it
    /// asks for does not fit the connection).
    fn refuse_with(&mut self, message_id: u32, name: String, t: NotifyType, reason: String) {
        self.events.push_back(IkeEvent::Refused {
            site: true,
            client: Some(name),
            reason: reason.clone(),
        });
        self.send_response(ExchangeType::IKE_AUTH, message_id, &[notify(t, &[])]);
        self.close(format!("refused: {reason}"));
    }

    pub(super) fn on_site_auth(
        &mut self,
        now: Instant,
        site: Arc<SitePeer>,
        req: SiteRequest<'_, '_>,
    ) {
        self.site_claimed = true;
        let name = site.name.clone();
        let id_text = describe_id(req.idi);
        let mid = req.message_id;
        let psk = req.auth.method == AuthMethod::SHARED_KEY_MIC;
        if let SiteAuth::Psk(_) = &site.auth {
            // A PSK site is its remote_gateway: from anywhere else the key is not even tried
            // (no guessing from other addresses), unless remote_gateway_any allows it.
            if !site.any_remote_addr && self.peer.ip() != site.remote_addr {
                self.refuse(
                    mid,
                    Some(name.clone()),
                    format!(
                        "connection {name}: {id_text} authenticated from {}, not from the connection's remote_gateway {} (set `remote_gateway_any = true` for a peer whose address changes)",
                        self.peer.ip(),
                        site.remote_addr
                    ),
                );
                return;
            }
            if let Some(th) = &self.psk_throttle
                && th.blocked(&name, now)
            {
                // Guessing: no answer at all, and the half-open SA goes.
                self.discards.psk_throttled = self.discards.psk_throttled.saturating_add(1);
                self.close(format!(
                    "connection {name}: IKE_AUTH dropped (failed pre-shared-key authentications are throttled)"
                ));
                return;
            }
        }
        let mut idi_body = Vec::new();
        req.idi.emit_body(&mut idi_body);
        let octets = signed_octets(
            self.suite.prf,
            &self.keys.sk_pi,
            &self.init_request,
            &self.nr,
            &idi_body,
        );
        match &site.auth {
            SiteAuth::Psk(_) if !psk => {
                self.refuse(
                    mid,
                    Some(name.clone()),
                    format!(
                        "connection {name}: {id_text} authenticated with a signature (method {}), but the connection uses a pre-shared key (auth = \"psk\")",
                        req.auth.method.0
                    ),
                );
                return;
            }
            SiteAuth::Psk(key) => {
                if verify_psk_auth(self.suite.prf, key, &octets, req.auth.data).is_err() {
                    if let Some(th) = &self.psk_throttle {
                        th.failed(&name, now);
                    }
                    self.refuse(
                        mid,
                        Some(name.clone()),
                        format!(
                            "connection {name}: pre-shared key mismatch: {id_text}'s AUTH payload does not verify with our key (check psk_file on both gateways)"
                        ),
                    );
                    return;
                }
            }
            SiteAuth::Certificate if psk => {
                self.refuse(
                    mid,
                    Some(name.clone()),
                    format!(
                        "connection {name}: {id_text} used a pre-shared key, but the connection uses certificates (auth = \"certificate\")"
                    ),
                );
                return;
            }
            SiteAuth::Certificate => {
                let Some(time) = self.cfg.time.current_time() else {
                    self.refuse(mid, Some(name), "gateway clock unavailable".into());
                    return;
                };
                let verified = match self.cfg.trust.verify(req.certs, time, false) {
                    Ok(v) => v,
                    Err(r) => {
                        self.refuse(
                            mid,
                            Some(name.clone()),
                            format!("connection {name}: certificate refused: {}", r.reason),
                        );
                        return;
                    }
                };
                if !req
                    .certs
                    .first()
                    .is_some_and(|c| id_matches_cert(req.idi, c.as_ref()))
                {
                    self.refuse(
                        mid,
                        Some(name.clone()),
                        format!("connection {name}: identity {id_text} is not in its certificate"),
                    );
                    return;
                }
                let ok = SignMethod::from_id(req.auth.method.0).is_some_and(|m| {
                    verify_auth(m, &verified.spki, &octets, req.auth.data).is_ok()
                });
                if !ok {
                    self.refuse(
                        mid,
                        Some(name.clone()),
                        format!(
                            "connection {name}: AUTH payload (method {}) does not verify with its certificate",
                            req.auth.method.0
                        ),
                    );
                    return;
                }
            }
        }
        // Authenticated as the site. Now the CHILD SA it asks for.
        if let (SiteAuth::Psk(_), Some(th)) = (&site.auth, &self.psk_throttle) {
            th.succeeded(&name);
        }
        self.site = Some(Arc::clone(&site));
        self.site_confirmed = true;
        self.client = Some(name.clone());
        self.peer_cert = req.certs.first().map(|c| c.as_ref().to_vec());
        let Some((number, peer_spi, cipher, _)) =
            req.sa.and_then(|s| choose_esp(&site.policy, s, &[]))
        else {
            let offered = req
                .sa
                .map(super::super::proposal::describe_offer)
                .unwrap_or_default();
            self.refuse_with(
                mid,
                name.clone(),
                NotifyType::NO_PROPOSAL_CHOSEN,
                format!(
                    "connection {name}: no ESP proposal chosen: the peer offered ESP {offered}; we accept {}",
                    super::super::proposal::describe_policy(&site.policy)
                ),
            );
            return;
        };
        let proposed_i = req.tsi.map(|t| t.selectors.clone()).unwrap_or_default();
        let proposed_r = req.tsr.map(|t| t.selectors.clone()).unwrap_or_default();
        let tsi = narrow(&proposed_i, &site.remote_ts);
        let tsr = narrow(&proposed_r, &site.local_ts);
        if tsi.is_empty() || tsr.is_empty() {
            self.refuse_with(
                mid,
                name.clone(),
                NotifyType::TS_UNACCEPTABLE,
                format!(
                    "connection {name}: traffic selectors do not fit: the peer proposed {} === {}; we accept {} === {}",
                    describe_ts(&proposed_i),
                    describe_ts(&proposed_r),
                    describe_nets(&site.remote_ts),
                    describe_nets(&site.local_ts),
                ),
            );
            return;
        }
        self.pending = Some(PendingAuth {
            message_id: mid,
            idr: None,
            client: name.clone(),
            peer_esp_spi: peer_spi,
            esp: Some((number, cipher)),
            wants_address: false,
            wants_v6: false,
            site: Some(SitePending { site, tsi, tsr }),
        });
        self.state = State::AwaitDecision;
        self.events.push_back(IkeEvent::SiteAuthenticated {
            connection: name,
            id: id_text,
            initial_contact: req.initial_contact,
        });
    }

    /// Admits the authenticated site: answers IKE_AUTH with our identity, AUTH (the shared
    /// key, or our certificate and signature), the CHILD SA and the narrowed selectors.
    pub fn accept_site(&mut self, now: Instant) {
        if self.state != State::AwaitDecision {
            return;
        }
        let Some(mut p) = self.pending.take() else {
            return;
        };
        let (Some(sp), Some((number, cipher))) = (p.site.take(), p.esp) else {
            self.pending = Some(p);
            return;
        };
        let site = sp.site;
        let (idr_type, idr_data) = id_for(&site.local_id);
        let idr = IdPayload::new(idr_type, &idr_data);
        let mut idr_body = Vec::new();
        idr.emit_body(&mut idr_body);
        let octets = signed_octets(
            self.suite.prf,
            &self.keys.sk_pr,
            &self.init_response,
            &self.ni,
            &idr_body,
        );
        let (method, auth_data) = match &site.auth {
            SiteAuth::Psk(key) => (
                AuthMethod::SHARED_KEY_MIC,
                psk_auth(self.suite.prf, key, &octets),
            ),
            SiteAuth::Certificate => {
                let m = if self.peer_sig_hash {
                    SignMethod::DigitalSignature
                } else {
                    self.cfg.key.preferred_method()
                };
                match self.cfg.key.auth_data(m, &octets, &*self.cfg.rng) {
                    Ok(d) => (AuthMethod(m.id()), d),
                    Err(e) => {
                        self.close(format!("signing failed: {e}"));
                        return;
                    }
                }
            }
        };
        let Some((our_spi, sa)) = self.first_child_sa(cipher, p.peer_esp_spi) else {
            return;
        };
        let ee = self.cfg.cert_chain.first().cloned();
        let spi_bytes = our_spi.to_be_bytes();
        let tsi = TsPayload::new(sp.tsi);
        let tsr = TsPayload::new(sp.tsr);
        let mut payloads = vec![Payload::IdR(idr)];
        if let (SiteAuth::Certificate, Some(ee)) = (&site.auth, ee.as_ref()) {
            payloads.push(Payload::Cert(CertPayload {
                encoding: CertEncoding::X509_SIGNATURE,
                data: ee.as_ref(),
            }));
        }
        payloads.push(Payload::Auth(AuthPayload {
            method,
            data: &auth_data,
        }));
        payloads.push(Payload::Sa(esp_sa_payload(number, cipher, &spi_bytes)));
        payloads.push(Payload::TsI(tsi.clone()));
        payloads.push(Payload::TsR(tsr.clone()));
        self.send_response(ExchangeType::IKE_AUTH, p.message_id, &payloads);
        self.established(now, (tsi, tsr), our_spi, p.peer_esp_spi, cipher, sa);
    }
}
