//! IKE_AUTH: our identity and proof (certificate signature or pre-shared key), the CHILD SA
//! we ask for, and the checks of the responder's answer (its certificate and identity, or the
//! site's key), then the tunnel's configuration.

use super::*;

impl IkeInitiator {
    pub(super) fn send_auth(&mut self, now: Instant) {
        let cfg = Arc::clone(&self.cfg);
        let site = cfg.site.as_deref();
        let psk = match site.map(|s| &s.auth) {
            Some(SiteAuth::Psk(k)) => Some(k.as_slice()),
            _ => None,
        };
        let (idi_type, idi_data) = match (site, cfg.cert_chain.first()) {
            (Some(s), _) => id_for(&s.local_id),
            (None, Some(ee)) => match subject_der(ee) {
                Some(subject) => (IdType::DER_ASN1_DN, subject),
                None => {
                    self.close("our certificate does not parse".into());
                    return;
                }
            },
            (None, None) => {
                self.close("no client certificate configured".into());
                return;
            }
        };
        let Some(sa) = &self.sa else {
            return;
        };
        let idi = IdPayload::new(idi_type, &idi_data);
        let mut idi_body = Vec::new();
        idi.emit_body(&mut idi_body);
        let octets = signed_octets(
            sa.suite.prf,
            &sa.keys.sk_pi,
            &self.init_request,
            &self.nr,
            &idi_body,
        );
        let (method, auth_data) = if let Some(key) = psk {
            (
                SignMethod::SharedKeyMic,
                psk_auth(sa.suite.prf, key, &octets),
            )
        } else {
            let method = if self.peer_sig_hash {
                SignMethod::DigitalSignature
            } else {
                cfg.key.preferred_method()
            };
            match cfg.key.auth_data(method, &octets, &*cfg.rng) {
                Ok(d) => (method, d),
                Err(e) => {
                    self.close(format!("signing failed: {e}"));
                    return;
                }
            }
        };
        self.auth_esp_spi = self.new_child_spi();
        let spi_bytes = self.auth_esp_spi.to_be_bytes();
        let ca_hashes: Vec<u8> = self
            .cfg
            .trust
            .roots
            .iter()
            .filter_map(spki_sha1)
            .flatten()
            .collect();
        let idr_data = match site {
            Some(s) => Some(id_for(&s.remote_id)),
            None => cfg.remote_id.as_deref().map(remote_id_payload),
        };
        let mut payloads = vec![Payload::IdI(idi)];
        if psk.is_none() {
            for c in &cfg.cert_chain {
                payloads.push(Payload::Cert(CertPayload {
                    encoding: CertEncoding::X509_SIGNATURE,
                    data: c.as_ref(),
                }));
            }
        }
        payloads.push(notify(NotifyType::INITIAL_CONTACT, &[]));
        if psk.is_none() && !ca_hashes.is_empty() {
            payloads.push(Payload::CertReq(CertReqPayload {
                encoding: CertEncoding::X509_SIGNATURE,
                authorities: &ca_hashes,
            }));
        }
        if let Some((t, d)) = &idr_data {
            payloads.push(Payload::IdR(IdPayload::new(*t, d)));
        }
        payloads.push(Payload::Auth(AuthPayload {
            method: AuthMethod(method.id()),
            data: &auth_data,
        }));
        if site.is_none() {
            let mut attributes = vec![
                CfgAttribute::request(CfgAttrType::INTERNAL_IP4_ADDRESS),
                CfgAttribute::request(CfgAttrType::INTERNAL_IP4_DNS),
                // RFC 8598 3.1: an empty one says we do split DNS.
                CfgAttribute::request(CfgAttrType::INTERNAL_DNS_DOMAIN),
            ];
            if cfg.request_ipv6 {
                attributes.push(CfgAttribute::request(CfgAttrType::INTERNAL_IP6_ADDRESS));
            }
            payloads.push(Payload::Cp(CpPayload {
                cfg_type: CfgType::CFG_REQUEST,
                attributes,
            }));
        }
        payloads.push(Payload::Sa(esp_offer(&cfg.policy, &spi_bytes)));
        payloads.push(Payload::TsI(TsPayload::new(self.child_ts.0.clone())));
        payloads.push(Payload::TsR(TsPayload::new(self.child_ts.1.clone())));
        self.send_request(now, ExchangeType::IKE_AUTH, Request::Auth, &payloads);
    }

    pub(super) fn on_auth_response(&mut self, now: Instant, payloads: &[Payload<'_>]) {
        let mut idr = None;
        let mut certs: Vec<CertificateDer<'_>> = Vec::new();
        let mut auth = None;
        let mut cp = None;
        let mut sa = None;
        let mut tsi = None;
        let mut tsr = None;
        for p in payloads {
            match p {
                Payload::Notify(n) if n.notify_type == NotifyType::AUTHENTICATION_FAILED => {
                    let why = match self.cfg.site.as_deref() {
                        Some(s) => format!(
                            "connection {}: the peer refused our authentication \
                             (AUTHENTICATION_FAILED): check that both gateways use the same \
                             pre-shared key or CA and matching local_id/remote_id; the peer's \
                             log says why",
                            s.name
                        ),
                        None => "the gateway refused our certificate or identity \
                                 (AUTHENTICATION_FAILED); its log says why (revoked, expired, \
                                 another CA...)"
                            .into(),
                    };
                    self.auth_failed(now, why, false);
                    return;
                }
                Payload::Notify(n) if n.notify_type.is_error() => {
                    self.close(format!("gateway refused the tunnel: {:?}", n.notify_type));
                    return;
                }
                Payload::IdR(i) => idr = Some(i),
                Payload::Cert(c) if c.encoding == CertEncoding::X509_SIGNATURE => {
                    certs.push(CertificateDer::from(c.data))
                }
                Payload::Auth(a) => auth = Some(a),
                Payload::Cp(c) => cp = Some(c),
                Payload::Sa(s) => sa = Some(s),
                Payload::TsI(t) => tsi = Some(t),
                Payload::TsR(t) => tsr = Some(t),
                _ => {}
            }
        }
        let (Some(idr), Some(auth)) = (idr, auth) else {
            self.auth_failed(
                now,
                "gateway's IKE_AUTH answer lacks its identity or AUTH payload".into(),
                true,
            );
            return;
        };
        let ok = if self.cfg.site.is_some() {
            self.verify_site_auth(now, idr, auth, &certs)
        } else {
            self.verify_gateway_auth(now, idr, auth, &certs)
        };
        if !ok {
            return;
        }
        let Some((prf, sk_d)) = self.sa.as_ref().map(|k| (k.suite.prf, k.keys.sk_d.clone())) else {
            return;
        };
        // Authenticated. What follows is configuration, not identity.
        let Some((_, peer_spi, cipher, None)) =
            sa.and_then(|s| choose_esp(&self.cfg.policy, s, &[]))
        else {
            self.fail_established(now, "gateway chose no ESP proposal we offered".into());
            return;
        };
        let cp = cp.filter(|c| c.cfg_type == CfgType::CFG_REPLY);
        let address = cp.and_then(|cp| {
            cp.attributes_of(CfgAttrType::INTERNAL_IP4_ADDRESS)
                .find_map(CfgAttribute::ipv4)
        });
        if address.is_none() && self.cfg.site.is_none() {
            self.fail_established(now, "gateway assigned no virtual IPv4 address".into());
            return;
        }
        let dns: Vec<IpAddr> = cp
            .into_iter()
            .flat_map(|cp| cp.attributes_of(CfgAttrType::INTERNAL_IP4_DNS))
            .filter_map(CfgAttribute::ipv4)
            .map(IpAddr::V4)
            .collect();
        let mut dns_domains: Vec<String> = Vec::new();
        // A domain that is not one (RFC 8598 says to ignore it) is dropped, not fatal.
        for d in cp
            .into_iter()
            .flat_map(|cp| cp.attributes_of(CfgAttrType::INTERNAL_DNS_DOMAIN))
            .filter_map(CfgAttribute::dns_domain)
        {
            if !dns_domains.contains(&d)
                && dns_domains.len() < crate::openvpn::push::MAX_DNS_DOMAINS
            {
                dns_domains.push(d);
            }
        }
        let mut subnets: Vec<Ipv4Net> = Vec::new();
        let from_cp = cp
            .into_iter()
            .flat_map(|cp| cp.attributes_of(CfgAttrType::INTERNAL_IP4_SUBNET))
            .filter_map(CfgAttribute::ipv4_subnet)
            .filter_map(|(a, m)| Ipv4Net::with_netmask(a, m).ok())
            .map(|n| n.trunc());
        let from_ts = tsr
            .into_iter()
            .flat_map(|t| t.selectors.iter())
            .filter_map(TrafficSelector::to_net)
            .filter_map(|n| match n {
                IpNet::V4(v) => Some(v),
                IpNet::V6(_) => None,
            });
        for n in from_cp.chain(from_ts) {
            if !subnets.contains(&n) {
                subnets.push(n);
            }
        }
        // IPv6 only with an address inside the tunnel to send it from.
        let address6 = cp
            .into_iter()
            .flat_map(|cp| cp.attributes_of(CfgAttrType::INTERNAL_IP6_ADDRESS))
            .find_map(CfgAttribute::ipv6_prefix)
            .filter(|(a, len)| *len <= 128 && !a.is_unspecified());
        let mut subnets6: Vec<Ipv6Net> = Vec::new();
        if address6.is_some() {
            for n in tsr
                .into_iter()
                .flat_map(|t| t.selectors.iter())
                .filter_map(TrafficSelector::to_net)
            {
                if let IpNet::V6(n) = n
                    && !subnets6.contains(&n.trunc())
                {
                    subnets6.push(n.trunc());
                }
            }
        }
        let our_spi = self.auth_esp_spi;
        let esp = ChildSaKeys::derive(prf, &sk_d, None, &self.ni, &self.nr, cipher.key_sizes())
            .ok()
            .and_then(|k| EspSa::from_child_keys(cipher, &k, true, our_spi, peer_spi).ok());
        let Some(esp) = esp else {
            self.fail_established(now, "CHILD SA key derivation failed".into());
            return;
        };
        if let (Some(i), Some(r)) = (tsi, tsr)
            && !i.selectors.is_empty()
            && !r.selectors.is_empty()
        {
            self.child_ts = (i.selectors.clone(), r.selectors.clone());
        }
        self.state = State::Established;
        self.last_rx = now;
        self.ike_rekey_at = deadline(now, self.cfg.ike_lifetime);
        self.child_rekey_at = deadline(now, self.cfg.child_lifetime);
        self.children.push(Child {
            our_spi,
            peer_spi,
            replaced: false,
            announced: true,
            expires: None,
        });
        self.events.push_back(InitiatorEvent::Connected {
            address,
            dns,
            dns_domains,
            subnets,
            address6,
            subnets6,
            our_spi,
            peer_spi,
            cipher,
            sa: Box::new(esp),
        });
    }

    /// The octets the responder signed (RFC 7296 2.15) for identity `idr`.
    pub(super) fn responder_octets(&self, idr: &IdPayload<'_>) -> Option<(Prf, Vec<u8>)> {
        let sa = self.sa.as_ref()?;
        let mut idr_body = Vec::new();
        idr.emit_body(&mut idr_body);
        let octets = signed_octets(
            sa.suite.prf,
            &sa.keys.sk_pr,
            &self.init_response,
            &self.ni,
            &idr_body,
        );
        Some((sa.suite.prf, octets))
    }

    /// Checks the responder's certificate chain (CA, validity, serverAuth, CRL), that `idr`
    /// is a name in it, and its AUTH signature over `octets`. `who` starts the reasons.
    pub(super) fn verify_cert_auth(
        &mut self,
        now: Instant,
        idr: &IdPayload<'_>,
        auth: &AuthPayload<'_>,
        certs: &[CertificateDer<'_>],
        octets: &[u8],
        who: &str,
    ) -> bool {
        let Some(time) = self.cfg.time.current_time() else {
            self.auth_failed(now, "system clock unavailable".into(), true);
            return false;
        };
        let verified = match self.cfg.trust.verify(certs, time, false) {
            Ok(v) => v,
            Err(r) => {
                self.auth_failed(now, format!("{who} certificate: {}", r.reason), true);
                return false;
            }
        };
        if !certs
            .first()
            .is_some_and(|c| id_matches_cert(idr, c.as_ref()))
        {
            self.auth_failed(
                now,
                format!("{who}'s IKE identity is not in its certificate"),
                true,
            );
            return false;
        }
        let ok = SignMethod::from_id(auth.method.0)
            .filter(|m| *m != SignMethod::SharedKeyMic)
            .is_some_and(|m| verify_auth(m, &verified.spki, octets, auth.data).is_ok());
        if !ok {
            self.auth_failed(
                now,
                format!(
                    "{who}'s AUTH payload (method {}) does not verify with its certificate",
                    auth.method.0
                ),
                true,
            );
            return false;
        }
        self.peer_cert = certs.first().map(|c| c.as_ref().to_vec());
        true
    }

    /// Checks a road-warrior gateway's certificate, identity and signature, and that it is
    /// the gateway the user asked for.
    fn verify_gateway_auth(
        &mut self,
        now: Instant,
        idr: &IdPayload<'_>,
        auth: &AuthPayload<'_>,
        certs: &[CertificateDer<'_>],
    ) -> bool {
        let Some((_, octets)) = self.responder_octets(idr) else {
            return false;
        };
        if !self.verify_cert_auth(now, idr, auth, certs, &octets, "gateway") {
            return false;
        }
        if let Some(want) = self.cfg.remote_id.clone()
            && !certs.first().is_some_and(|c| name_in_sans(&want, c))
        {
            self.auth_failed(
                now,
                format!(
                    "gateway certificate is not for {want} (not among its subject alternative \
                     names): wrong address, or someone else's gateway"
                ),
                true,
            );
            return false;
        }
        true
    }
}
