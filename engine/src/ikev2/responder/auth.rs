//! IKE_AUTH: checking the client, then answering it with our identity, its address and
//! the CHILD SA.

use std::net::IpAddr;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rustls::pki_types::CertificateDer;

use super::super::crypto::ChildSaKeys;
use super::super::crypto::sign::{AuthMethod as SignMethod, signed_octets};
use super::super::peer_cert::id_matches_cert;
use super::super::proposal::{choose_esp_in_ike_auth, esp_sa_payload};
use super::super::site::describe_id;
use super::auth_job::{AuthDone, AuthJob};
use super::*;
use crate::esp::EspSa;
use crate::wire::ikev2::{
    AddressRange, AuthMethod, AuthPayload, CertEncoding, CertPayload, CfgAttrType, CfgAttribute,
    CfgType, CpPayload, ExchangeType, IdPayload, IdType, NotifyType, Payload, TrafficSelector,
    TsPayload,
};

impl IkeResponder {
    pub(super) fn refuse(&mut self, message_id: u32, client: Option<String>, reason: String) {
        self.events.push_back(IkeEvent::Refused {
            site: self.site_claimed,
            client,
            reason: reason.clone(),
        });
        self.send_response(
            ExchangeType::IKE_AUTH,
            message_id,
            &[notify(NotifyType::AUTHENTICATION_FAILED, &[])],
        );
        self.close(format!("refused: {reason}"));
    }

    pub(super) fn on_ike_auth(&mut self, now: Instant, message_id: u32, payloads: &[Payload<'_>]) {
        let mut idi = None;
        let mut idr_wanted = None;
        let mut certs: Vec<CertificateDer<'_>> = Vec::new();
        let mut auth = None;
        let mut sa = None;
        let mut cp = None;
        let mut tsi = None;
        let mut tsr = None;
        let mut initial_contact = false;
        for p in payloads {
            match p {
                Payload::TsI(t) => tsi = Some(t),
                Payload::TsR(t) => tsr = Some(t),
                Payload::Notify(n) if n.notify_type == NotifyType::INITIAL_CONTACT => {
                    initial_contact = true
                }
                Payload::IdI(i) => idi = Some(i),
                Payload::IdR(i) => idr_wanted = Some(i),
                Payload::Cert(c) if c.encoding == CertEncoding::X509_SIGNATURE => {
                    certs.push(CertificateDer::from(c.data))
                }
                Payload::Auth(a) => auth = Some(a),
                Payload::Sa(s) => sa = Some(s),
                Payload::Cp(c) => cp = Some(c),
                _ => {}
            }
        }
        let (Some(idi), Some(auth)) = (idi, auth) else {
            self.refuse(
                message_id,
                None,
                "IKE_AUTH without identity or AUTH payload".into(),
            );
            return;
        };
        let id_text = describe_id(idi);
        self.note_mobike_offer(payloads);
        let psk = auth.method == AuthMethod::SHARED_KEY_MIC;
        let site = self.cfg.sites.iter().find(|s| s.id_matches(idi)).cloned();
        if let Some(site) = site {
            let req = site_auth::SiteRequest {
                message_id,
                idi,
                auth,
                certs: &certs,
                sa,
                tsi,
                tsr,
                initial_contact,
            };
            self.on_site_auth(now, site, req);
            return;
        }
        if psk && let Some(s) = self.site.clone() {
            // A PSK from a site's address: a site peer with the wrong identity.
            self.site_claimed = true;
            self.refuse(
                message_id,
                Some(s.name.clone()),
                format!(
                    "connection {}: the peer's identity {id_text} is not the configured remote_id {}",
                    s.name, s.remote_id
                ),
            );
            return;
        }
        if psk {
            self.refuse(
                message_id,
                None,
                format!("{id_text} tried pre-shared-key authentication; remote access needs a certificate"),
            );
            return;
        }
        let Some(time) = self.cfg.time.current_time() else {
            self.refuse(message_id, None, "gateway clock unavailable".into());
            return;
        };
        if certs.is_empty() {
            self.refuse(message_id, None, format!("{id_text} sent no certificate"));
            return;
        }
        let Some(ee) = self.cfg.cert_chain.first().cloned() else {
            self.close("gateway has no certificate".into());
            return;
        };
        // Our identity: what the client asked for when our certificate holds it, else the
        // certificate's first address or DNS name (what clients configure as the server's
        // identity), else its subject DN.
        let wanted_idr = idr_wanted
            .filter(|i| id_matches_cert(i, ee.as_ref()))
            .map(|i| (i.id_type, i.data.to_vec()));
        let idr = match wanted_idr.or_else(|| first_san(&ee)) {
            Some(x) => x,
            None => match subject_der(&ee) {
                Some(s) => (IdType::DER_ASN1_DN, s),
                None => {
                    self.close("gateway certificate does not parse".into());
                    return;
                }
            },
        };
        let mut idi_body = Vec::new();
        idi.emit_body(&mut idi_body);
        let peer_octets = signed_octets(
            self.suite.prf,
            &self.keys.sk_pi,
            &self.init_request,
            &self.nr,
            &idi_body,
        );
        let mut idr_body = Vec::new();
        IdPayload::new(idr.0, &idr.1).emit_body(&mut idr_body);
        let our_octets = signed_octets(
            self.suite.prf,
            &self.keys.sk_pr,
            &self.init_response,
            &self.ni,
            &idr_body,
        );
        let our_method = if self.peer_sig_hash {
            SignMethod::DigitalSignature
        } else {
            self.cfg.key.preferred_method()
        };
        let (peer_esp_spi, esp) = match sa.and_then(|s| choose_esp_in_ike_auth(self.policy(), s)) {
            Some((number, spi, cipher)) => (spi, Some((number, cipher))),
            None => (0, None),
        };
        let wants_address = cp.is_some_and(|c| {
            c.cfg_type == CfgType::CFG_REQUEST
                && c.attributes_of(CfgAttrType::INTERNAL_IP4_ADDRESS)
                    .next()
                    .is_some()
        });
        // IPv6 only for a client that asks for an address and proposes IPv6 selectors
        // (strongSwan with `vips = 0.0.0.0,::` and an IPv6 remote_ts).
        let wants_v6 = cp.is_some_and(|c| {
            c.cfg_type == CfgType::CFG_REQUEST
                && c.attributes_of(CfgAttrType::INTERNAL_IP6_ADDRESS)
                    .next()
                    .is_some()
        }) && tsi.is_some_and(|t| t.selectors.iter().any(is_v6))
            && tsr.is_some_and(|t| t.selectors.iter().any(is_v6));
        let job = AuthJob {
            cfg: self.cfg.clone(),
            certs: certs.iter().map(|c| c.as_ref().to_vec()).collect(),
            time,
            idi: (idi.id_type, idi.data.to_vec()),
            id_text: id_text.clone(),
            peer_octets,
            peer_method: auth.method.0,
            peer_auth: auth.data.to_vec(),
            our_octets,
            our_method,
        };
        self.checking = Some(Box::new(Checking {
            message_id,
            id_text,
            idr,
            our_method,
            peer_cert: certs[0].as_ref().to_vec(),
            peer_esp_spi,
            esp,
            wants_address,
            wants_v6,
        }));
        if self.cfg.offload {
            self.state = State::AwaitCheck;
            self.auth_job = Some(Box::new(job));
        } else {
            self.auth_job_done(now, job.run());
        }
    }

    /// The IKE_AUTH check to run elsewhere (with [`ResponderConfig::offload`] on). Give its
    /// result back with [`auth_job_done`](Self::auth_job_done).
    pub fn poll_auth_job(&mut self) -> Option<AuthJob> {
        self.auth_job.take().map(|j| *j)
    }

    /// The IKE_AUTH check came back: the client is refused, or authenticated and waits for
    /// [`accept`](Self::accept) or [`reject`](Self::reject). Ignored when the SA has moved
    /// on meanwhile (closed by its deadline).
    pub fn auth_job_done(&mut self, _now: Instant, done: AuthDone) {
        if !matches!(self.state, State::AwaitAuth | State::AwaitCheck) {
            return;
        }
        let Some(c) = self.checking.take() else {
            return;
        };
        let name = match done.verdict {
            Ok(name) => name,
            Err((name, reason)) => {
                self.refuse(c.message_id, name, reason);
                return;
            }
        };
        let our_auth = match done.our_auth {
            Ok(a) => a,
            Err(e) => {
                self.close(format!("signing failed: {e}"));
                return;
            }
        };
        self.client = Some(name.clone());
        self.peer_cert = Some(c.peer_cert);
        self.pending = Some(PendingAuth {
            message_id: c.message_id,
            idr: Some((c.idr, c.our_method, our_auth)),
            client: name.clone(),
            peer_esp_spi: c.peer_esp_spi,
            esp: c.esp,
            wants_address: c.wants_address,
            wants_v6: c.wants_v6,
            site: None,
        });
        self.state = State::AwaitDecision;
        self.events.push_back(IkeEvent::Authenticated {
            client: name,
            id: c.id_text,
        });
    }

    /// Whether the authenticated client waiting for [`accept`](Self::accept) asked for an
    /// IPv6 address (INTERNAL_IP6_ADDRESS) and proposed IPv6 selectors.
    pub fn wants_ipv6(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.wants_v6)
    }

    /// Admits the authenticated client: answers IKE_AUTH with our identity, certificate,
    /// signature, its address (CP and, when it asked for one, its IPv6 address), and the
    /// CHILD SA.
    pub fn accept(&mut self, now: Instant, a: IkeAssignment) {
        if self.state != State::AwaitDecision {
            return;
        }
        if self.pending.as_ref().is_some_and(|p| p.site.is_some()) {
            self.accept_site(now);
            return;
        }
        let Some(p) = self.pending.take() else {
            return;
        };
        let Some((number, cipher)) = p.esp else {
            self.refuse(
                p.message_id,
                Some(p.client),
                "no acceptable ESP proposal (we offer AES-GCM-16 and ChaCha20-Poly1305 without ESN)".into(),
            );
            return;
        };
        if !p.wants_address {
            self.refuse(
                p.message_id,
                Some(p.client),
                "client did not ask for a virtual address (configuration payload)".into(),
            );
            return;
        }
        let Some(ee) = self.cfg.cert_chain.first().cloned() else {
            self.close("gateway has no certificate".into());
            return;
        };
        let Some(((idr_type, idr_data), method, auth_data)) = p.idr else {
            self.close("IKE_AUTH answered without its checked identity".into());
            return;
        };
        let idr = IdPayload::new(idr_type, &idr_data);
        let Some((our_spi, sa)) = self.first_child_sa(cipher, p.peer_esp_spi) else {
            return;
        };
        let addr = a.address.octets();
        let mut cp_attrs = vec![CfgAttribute {
            attr_type: CfgAttrType::INTERNAL_IP4_ADDRESS,
            value: &addr,
        }];
        let dns: Vec<[u8; 4]> = a
            .dns
            .iter()
            .filter_map(|d| match d {
                IpAddr::V4(v) => Some(v.octets()),
                IpAddr::V6(_) => None,
            })
            .collect();
        for d in &dns {
            cp_attrs.push(CfgAttribute {
                attr_type: CfgAttrType::INTERNAL_IP4_DNS,
                value: d,
            });
        }
        // RFC 8598: one INTERNAL_DNS_DOMAIN per split-DNS domain, in presentation form.
        for d in &a.dns_domains {
            cp_attrs.push(CfgAttribute {
                attr_type: CfgAttrType::INTERNAL_DNS_DOMAIN,
                value: d.as_bytes(),
            });
        }
        let subnets: Vec<[u8; 8]> = a
            .subnets
            .iter()
            .map(|n| {
                let mut v = [0u8; 8];
                v[..4].copy_from_slice(&n.network().octets());
                v[4..].copy_from_slice(&n.netmask().octets());
                v
            })
            .collect();
        for s in &subnets {
            cp_attrs.push(CfgAttribute {
                attr_type: CfgAttrType::INTERNAL_IP4_SUBNET,
                value: s,
            });
        }
        let v6 = a.ipv6.as_ref().filter(|_| p.wants_v6);
        let v6_attrs = v6.map(|v6| V6Attributes::new(v6, &a.dns));
        if let Some(x) = &v6_attrs {
            x.push_to(&mut cp_attrs);
        }
        let mut tsi = vec![TrafficSelector::from_net(IpNet::V4(Ipv4Net::from(
            a.address,
        )))];
        let mut tsr = if a.full_tunnel || a.subnets.is_empty() {
            vec![TrafficSelector::any_v4()]
        } else {
            a.subnets
                .iter()
                .map(|n| TrafficSelector::from_net(IpNet::V4(*n)))
                .collect()
        };
        if let Some(v6) = v6 {
            tsi.push(TrafficSelector::from_net(IpNet::V6(Ipv6Net::from(
                v6.address,
            ))));
            if a.full_tunnel || v6.routes.is_empty() {
                tsr.push(TrafficSelector::any_v6());
            } else {
                tsr.extend(
                    v6.routes
                        .iter()
                        .map(|n| TrafficSelector::from_net(IpNet::V6(*n))),
                );
            }
        }
        let (tsi, tsr) = (TsPayload::new(tsi), TsPayload::new(tsr));
        let spi_bytes = our_spi.to_be_bytes();
        let mut payloads = vec![
            Payload::IdR(idr),
            Payload::Cert(CertPayload {
                encoding: CertEncoding::X509_SIGNATURE,
                data: ee.as_ref(),
            }),
            Payload::Auth(AuthPayload {
                method: AuthMethod(method.id()),
                data: &auth_data,
            }),
            Payload::Cp(CpPayload {
                cfg_type: CfgType::CFG_REPLY,
                attributes: cp_attrs,
            }),
            Payload::Sa(esp_sa_payload(number, cipher, &spi_bytes)),
            Payload::TsI(tsi.clone()),
            Payload::TsR(tsr.clone()),
        ];
        if let Some(t) = self.mobike_auth_notify() {
            payloads.push(notify(t, &[]));
        }
        self.send_response(ExchangeType::IKE_AUTH, p.message_id, &payloads);
        self.established(now, (tsi, tsr), our_spi, p.peer_esp_spi, cipher, sa);
    }

    /// IKE_AUTH answered: the SA is up with its first CHILD SA (`narrowed` are the selectors
    /// later CHILD SA rekeys get).
    pub(super) fn established(
        &mut self,
        now: Instant,
        narrowed: (TsPayload, TsPayload),
        our_spi: u32,
        peer_spi: u32,
        cipher: EspCipher,
        sa: EspSa,
    ) {
        self.narrowed = Some(narrowed);
        self.state = State::Established;
        self.last_rx = now;
        self.children.push(Child {
            our_spi,
            peer_spi,
            created: now,
            replaced: false,
            superseded: None,
        });
        self.events.push_back(IkeEvent::ChildUp {
            our_spi,
            peer_spi,
            cipher,
            sa: Box::new(sa),
            rekey_of: None,
        });
    }

    /// Keys for the CHILD SA made with IKE_AUTH, and our SPI for it (closes the SA on failure).
    pub(super) fn first_child_sa(
        &mut self,
        cipher: EspCipher,
        peer_spi: u32,
    ) -> Option<(u32, EspSa)> {
        let our_spi = self.new_child_spi();
        let keys = match ChildSaKeys::derive(
            self.suite.prf,
            &self.keys.sk_d,
            None,
            &self.ni,
            &self.nr,
            cipher.key_sizes(),
        ) {
            Ok(k) => k,
            Err(e) => {
                self.close(format!("CHILD SA key derivation failed: {e}"));
                return None;
            }
        };
        match EspSa::from_child_keys(cipher, &keys, false, our_spi, peer_spi) {
            Ok(s) => Some((our_spi, s)),
            Err(e) => {
                self.close(format!("ESP SA setup failed: {e}"));
                None
            }
        }
    }

    /// Refuses the authenticated client (AUTHENTICATION_FAILED) with `reason` for the log.
    pub fn reject(&mut self, _now: Instant, reason: &str) {
        if self.state != State::AwaitDecision {
            return;
        }
        if let Some(p) = self.pending.take() {
            self.refuse(p.message_id, Some(p.client), reason.to_owned());
        }
    }
}

fn first_san(cert: &CertificateDer<'_>) -> Option<(IdType, Vec<u8>)> {
    use x509_parser::extensions::GeneralName;
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = c.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::IPAddress(ip) if ip.len() == 4 => Some((IdType::IPV4_ADDR, ip.to_vec())),
        GeneralName::IPAddress(ip) if ip.len() == 16 => Some((IdType::IPV6_ADDR, ip.to_vec())),
        GeneralName::DNSName(d) => Some((IdType::FQDN, d.as_bytes().to_vec())),
        _ => None,
    })
}

pub(super) fn subject_der(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(c.subject().as_raw().to_vec())
}

/// An IPv6 traffic selector?
fn is_v6(ts: &TrafficSelector) -> bool {
    matches!(ts.range, AddressRange::V6 { .. })
}

/// The IPv6 configuration attributes of a CFG_REPLY (their values, which the attributes
/// borrow): INTERNAL_IP6_ADDRESS (address and prefix length), INTERNAL_IP6_DNS and
/// INTERNAL_IP6_SUBNET.
struct V6Attributes {
    address: [u8; 17],
    dns: Vec<[u8; 16]>,
    subnets: Vec<[u8; 17]>,
}

impl V6Attributes {
    fn new(v6: &crate::pool6::Ipv6Assignment, dns: &[IpAddr]) -> Self {
        let with_len = |a: std::net::Ipv6Addr, len: u8| {
            let mut v = [0u8; 17];
            v[..16].copy_from_slice(&a.octets());
            v[16] = len;
            v
        };
        Self {
            address: with_len(v6.address, v6.subnet.prefix_len()),
            dns: dns
                .iter()
                .filter_map(|d| match d {
                    IpAddr::V6(v) => Some(v.octets()),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            subnets: v6
                .routes
                .iter()
                .map(|n| with_len(n.network(), n.prefix_len()))
                .collect(),
        }
    }

    fn push_to<'a>(&'a self, attrs: &mut Vec<CfgAttribute<'a>>) {
        attrs.push(CfgAttribute {
            attr_type: CfgAttrType::INTERNAL_IP6_ADDRESS,
            value: &self.address,
        });
        for d in &self.dns {
            attrs.push(CfgAttribute {
                attr_type: CfgAttrType::INTERNAL_IP6_DNS,
                value: d,
            });
        }
        for s in &self.subnets {
            attrs.push(CfgAttribute {
                attr_type: CfgAttrType::INTERNAL_IP6_SUBNET,
                value: s,
            });
        }
    }
}
