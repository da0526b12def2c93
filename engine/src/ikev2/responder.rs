//! The gateway side of one IKE SA (RFC 7296) with remote-access clients: IKE_SA_INIT,
//! IKE_AUTH with certificates (RFC 7427 signatures, RFC 7383 fragments), a virtual address
//! through the configuration payload, one CHILD SA (ESP-in-UDP), CHILD SA rekeying,
//! liveness checks (DPD) and deletes.
//!
//! Inputs: [`respond_to_init`] for a new IKE_SA_INIT request (it may answer statelessly:
//! COOKIE, INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN), then
//! [`handle_message`](IkeResponder::handle_message) for every later message of the SA,
//! [`accept`](IkeResponder::accept) / [`reject`](IkeResponder::reject) to answer
//! [`IkeEvent::Authenticated`], [`handle_timeout`](IkeResponder::handle_timeout) and
//! [`note_activity`](IkeResponder::note_activity) (ESP traffic seen by the driver). Outputs:
//! [`poll_transmit`](IkeResponder::poll_transmit), [`poll_event`](IkeResponder::poll_event),
//! [`poll_timeout`](IkeResponder::poll_timeout).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;
use rustls::time_provider::TimeProvider;

use super::crypto::natd::{fake_source_hash, natd_hash};
use super::crypto::sign::{AuthMethod as SignMethod, SigningKey, signed_octets, verify_auth};
use super::crypto::{ChildSaKeys, DhGroup, DhPrivate, IkeSaKeys, SkKeys};
use super::message::{self, Opened, Reassembly};
use super::peer_cert::{PeerTrust, id_matches_cert};
use super::proposal::{
    IkeChoice, IkeSuite, Policy, choose_esp, choose_ike, esp_sa_payload, ike_sa_payload,
};
use crate::entropy::Entropy;
use crate::esp::{EspCipher, EspSa};
use crate::wire::ikev2::{
    AuthMethod, AuthPayload, CertEncoding, CertPayload, CertReqPayload, CfgAttrType, CfgAttribute,
    CfgType, CpPayload, DeletePayload, ExchangeType, IdPayload, IdType, KePayload, Message,
    NotifyPayload, NotifyType, Payload, ProtocolId, TrafficSelector, TsPayload, nonce_len_ok,
};

/// Gateway-wide IKEv2 settings.
pub struct ResponderConfig {
    /// Acceptable algorithms.
    pub policy: Policy,
    /// CA and CRLs for client certificates.
    pub trust: PeerTrust,
    /// Wall clock for certificate validity.
    pub time: Arc<dyn TimeProvider>,
    /// Our certificate chain (end entity first).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: Arc<SigningKey>,
    /// ring's generator for DH and signatures (ring does not take ours).
    pub rng: Arc<dyn SecureRandom + Send + Sync>,
    /// SHA-1 hashes of our CA's SubjectPublicKeyInfo, sent in CERTREQ.
    pub ca_hashes: Vec<[u8; 20]>,
    /// Send DPD after this long without traffic from the peer.
    pub dpd_interval: Duration,
    /// Give up when IKE_AUTH has not completed after this long.
    pub auth_timeout: Duration,
    /// Largest IKE datagram we send before fragmenting (when the peer supports it).
    pub fragment_size: usize,
}

impl std::fmt::Debug for ResponderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderConfig")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A datagram to send to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// From port 4500 with the non-ESP marker (true) or from port 500 (false).
    pub nat_t: bool,
    /// The IKE message.
    pub data: Vec<u8>,
}

/// What the gateway assigns to an authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeAssignment {
    /// The client's virtual address.
    pub address: Ipv4Addr,
    /// DNS servers.
    pub dns: Vec<IpAddr>,
    /// Networks behind the gateway (traffic selectors and INTERNAL_IP4_SUBNET).
    pub subnets: Vec<Ipv4Net>,
    /// Everything through the tunnel.
    pub full_tunnel: bool,
}

/// Something the driver must act on.
#[derive(Debug)]
pub enum IkeEvent {
    /// The client's certificate and AUTH verified: answer with accept or reject.
    Authenticated {
        /// The certificate's common name.
        client: String,
        /// The IKE identity it used.
        id: String,
    },
    /// A CHILD SA is ready: install it in the data path.
    ChildUp {
        /// Our inbound SPI (ESP packets to us carry it).
        our_spi: u32,
        /// The peer's inbound SPI (we send with it).
        peer_spi: u32,
        /// The negotiated cipher.
        cipher: EspCipher,
        /// The SA itself.
        sa: Box<EspSa>,
        /// The inbound SPI of the CHILD SA this one replaces, when it is a rekey.
        rekey_of: Option<u32>,
    },
    /// A CHILD SA is gone (deleted by the peer).
    ChildDown {
        /// Our inbound SPI of it.
        our_spi: u32,
    },
    /// The client was refused before it got a tunnel.
    Refused {
        /// Its certificate's name, when known.
        client: Option<String>,
        /// Why.
        reason: String,
    },
    /// The IKE SA is over.
    Closed(String),
}

/// The answer to an IKE_SA_INIT request.
pub enum InitOutcome {
    /// A stateless reply (COOKIE, INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN) and no SA.
    Reply(Vec<u8>),
    /// A new SA; its response is waiting in `poll_transmit`.
    Session(Box<IkeResponder>),
    /// Not a valid IKE_SA_INIT request: drop it.
    Drop(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitAuth,
    AwaitDecision,
    Established,
    Closed,
}

struct PendingAuth {
    message_id: u32,
    /// The IDr the client asked for, if our certificate holds it.
    wanted_idr: Option<(IdType, Vec<u8>)>,
    client: String,
    peer_esp_spi: u32,
    esp: Option<(u8, EspCipher)>,
    wants_address: bool,
}

struct Child {
    our_spi: u32,
    peer_spi: u32,
}

struct Outstanding {
    message_id: u32,
    datagrams: Vec<Vec<u8>>,
    next_send: Instant,
    tries: u32,
}

/// One IKE SA on the gateway.
pub struct IkeResponder {
    cfg: Arc<ResponderConfig>,
    entropy: Box<dyn Entropy>,
    state: State,
    spi_i: u64,
    spi_r: u64,
    suite: IkeSuite,
    keys: IkeSaKeys,
    sk_in: SkKeys,
    sk_out: SkKeys,
    ni: Vec<u8>,
    nr: Vec<u8>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    peer_fragments: bool,
    peer_sig_hash: bool,
    peer: SocketAddr,
    peer_nat_t: bool,
    next_peer_id: u32,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    reassembly: Reassembly,
    pending: Option<PendingAuth>,
    children: Vec<Child>,
    next_our_id: u32,
    outstanding: Option<Outstanding>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IkeEvent>,
    created: Instant,
    last_rx: Instant,
    client: Option<String>,
}

fn notify(t: NotifyType, data: &[u8]) -> Payload<'_> {
    Payload::Notify(NotifyPayload::new(t, data))
}

/// A stateless cookie (RFC 7296 2.6): SHA-256 of a gateway secret, Ni, the peer's address and
/// SPIi. The driver rotates the secret.
pub fn cookie_for(secret: &[u8; 32], ni: &[u8], peer: SocketAddr, spi_i: u64) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(secret);
    ctx.update(ni);
    match peer.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&peer.port().to_be_bytes());
    ctx.update(&spi_i.to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Answers an IKE_SA_INIT request from `peer`. `cookie_secret` is set when the gateway is
/// under half-open load: then a request without the right COOKIE gets one and nothing else.
pub fn respond_to_init(
    cfg: Arc<ResponderConfig>,
    mut entropy: Box<dyn Entropy>,
    now: Instant,
    peer: SocketAddr,
    nat_t: bool,
    raw: &[u8],
    cookie_secret: Option<&[u8; 32]>,
) -> InitOutcome {
    let msg = match Message::parse(raw) {
        Ok(m) => m,
        Err(e) => return InitOutcome::Drop(format!("malformed IKE_SA_INIT: {e}")),
    };
    let h = msg.header;
    if h.exchange != ExchangeType::IKE_SA_INIT
        || h.flags.response()
        || !h.flags.initiator()
        || h.message_id != 0
        || h.responder_spi != 0
    {
        return InitOutcome::Drop("not an IKE_SA_INIT request".into());
    }
    let mut sa = None;
    let mut ke = None;
    let mut ni = None;
    for p in &msg.payloads {
        match p {
            Payload::Sa(s) => sa = Some(s),
            Payload::Ke(k) => ke = Some(k),
            Payload::Nonce(n) => ni = Some(*n),
            _ => {}
        }
    }
    let (Some(sa), Some(ke), Some(ni)) = (sa, ke, ni) else {
        return InitOutcome::Drop("IKE_SA_INIT lacks SA, KE or Nonce".into());
    };
    if !nonce_len_ok(ni) {
        return InitOutcome::Drop("nonce length out of range".into());
    }
    let reply_header = message::header(
        h.initiator_spi,
        0,
        ExchangeType::IKE_SA_INIT,
        false,
        true,
        0,
    );
    if let Some(secret) = cookie_secret {
        let want = cookie_for(secret, ni, peer, h.initiator_spi);
        let got = msg.notify(NotifyType::COOKIE).map(|n| n.data);
        if got != Some(&want[..]) {
            return InitOutcome::Reply(message::plain(
                reply_header,
                vec![notify(NotifyType::COOKIE, &want)],
            ));
        }
    }
    let suite = match choose_ike(&cfg.policy, sa, ke.dh_group) {
        IkeChoice::Chosen { number, suite } => (number, suite),
        IkeChoice::WrongGroup(g) => {
            let group = g.transform_id().to_be_bytes();
            return InitOutcome::Reply(message::plain(
                reply_header,
                vec![notify(NotifyType::INVALID_KE_PAYLOAD, &group)],
            ));
        }
        IkeChoice::NoProposal => {
            return InitOutcome::Reply(message::plain(
                reply_header,
                vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, &[])],
            ));
        }
    };
    let (number, suite) = suite;
    let (dh, public): (DhPrivate, Vec<u8>) = match suite.dh.generate(&mut *entropy, &*cfg.rng) {
        Ok(x) => x,
        Err(e) => return InitOutcome::Drop(format!("key generation failed: {e}")),
    };
    let g_ir = match dh.shared_secret(ke.data) {
        Ok(s) => s,
        Err(e) => return InitOutcome::Drop(format!("peer's KE value is invalid: {e}")),
    };
    let mut spi_r = 0;
    while spi_r == 0 {
        spi_r = entropy.next_u64();
    }
    let mut nr = vec![0u8; 32];
    entropy.fill(&mut nr);
    let keys = match IkeSaKeys::from_ike_sa_init(
        suite.prf,
        suite.cipher.key_sizes(),
        ni,
        &nr,
        &g_ir,
        h.initiator_spi,
        spi_r,
    ) {
        Ok(k) => k,
        Err(e) => return InitOutcome::Drop(format!("key derivation failed: {e}")),
    };
    let (sk_in, sk_out) = match (
        SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai),
        SkKeys::new(suite.cipher, &keys.sk_er, &keys.sk_ar),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return InitOutcome::Drop("cannot build SK keys".into()),
    };
    let peer_fragments = msg
        .notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED)
        .is_some();
    let peer_sig_hash = msg.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS).is_some();

    // We claim to be behind a NAT (a source hash that cannot match) so every client moves to
    // UDP 4500 and encapsulates ESP in UDP: the gateway never handles raw ESP.
    let fake_src = fake_source_hash(&mut *entropy);
    let dst = natd_hash(h.initiator_spi, spi_r, peer);
    let ca_hashes: Vec<u8> = cfg.ca_hashes.iter().flatten().copied().collect();
    let sig_algs = [0u8, 2, 0, 3, 0, 4];
    let sa_reply = ike_sa_payload(number, suite, &[]);
    let mut payloads = vec![
        Payload::Sa(sa_reply),
        Payload::Ke(KePayload {
            dh_group: suite.dh.transform_id(),
            data: &public,
        }),
        Payload::Nonce(&nr),
        notify(NotifyType::NAT_DETECTION_SOURCE_IP, &fake_src),
        notify(NotifyType::NAT_DETECTION_DESTINATION_IP, &dst),
        notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, &[]),
    ];
    if peer_sig_hash {
        payloads.push(notify(NotifyType::SIGNATURE_HASH_ALGORITHMS, &sig_algs));
    }
    if !ca_hashes.is_empty() {
        payloads.push(Payload::CertReq(CertReqPayload {
            encoding: CertEncoding::X509_SIGNATURE,
            authorities: &ca_hashes,
        }));
    }
    let response = message::plain(
        message::header(
            h.initiator_spi,
            spi_r,
            ExchangeType::IKE_SA_INIT,
            false,
            true,
            0,
        ),
        payloads,
    );
    let mut r = IkeResponder {
        cfg,
        entropy,
        state: State::AwaitAuth,
        spi_i: h.initiator_spi,
        spi_r,
        suite,
        keys,
        sk_in,
        sk_out,
        ni: ni.to_vec(),
        nr,
        init_request: raw.to_vec(),
        init_response: response.clone(),
        peer_fragments,
        peer_sig_hash,
        peer,
        peer_nat_t: nat_t,
        next_peer_id: 1,
        last_response: Some((0, vec![response.clone()])),
        reassembly: Reassembly::default(),
        pending: None,
        children: Vec::new(),
        next_our_id: 0,
        outstanding: None,
        transmits: VecDeque::new(),
        events: VecDeque::new(),
        created: now,
        last_rx: now,
        client: None,
    };
    r.transmits.push_back(Transmit {
        to: peer,
        nat_t,
        data: response,
    });
    InitOutcome::Session(Box::new(r))
}

impl IkeResponder {
    /// The SPI pair naming this SA.
    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }

    /// Where the peer is now (IKE and ESP go there).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The authenticated client's name.
    pub fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }

    /// The negotiated IKE suite.
    pub fn suite(&self) -> IkeSuite {
        self.suite
    }

    /// True once the SA is gone.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// ESP from the peer arrived (the driver saw it); DPD waits longer.
    pub fn note_activity(&mut self, now: Instant, from: SocketAddr) {
        self.last_rx = now;
        self.peer = from;
        self.peer_nat_t = true;
    }

    fn send_response(&mut self, exchange: ExchangeType, message_id: u32, payloads: &[Payload<'_>]) {
        let header = message::header(self.spi_i, self.spi_r, exchange, false, true, message_id);
        let datagrams = message::seal(
            &mut self.sk_out,
            &mut *self.entropy,
            header,
            payloads,
            self.peer_fragments,
            self.cfg.fragment_size,
        );
        for d in &datagrams {
            self.transmits.push_back(Transmit {
                to: self.peer,
                nat_t: self.peer_nat_t,
                data: d.clone(),
            });
        }
        self.last_response = Some((message_id, datagrams));
    }

    fn send_request(&mut self, now: Instant, payloads: &[Payload<'_>]) {
        let id = self.next_our_id;
        let header = message::header(
            self.spi_i,
            self.spi_r,
            ExchangeType::INFORMATIONAL,
            false,
            false,
            id,
        );
        let datagrams = message::seal(
            &mut self.sk_out,
            &mut *self.entropy,
            header,
            payloads,
            false,
            self.cfg.fragment_size,
        );
        for d in &datagrams {
            self.transmits.push_back(Transmit {
                to: self.peer,
                nat_t: self.peer_nat_t,
                data: d.clone(),
            });
        }
        self.outstanding = Some(Outstanding {
            message_id: id,
            datagrams,
            next_send: now + Duration::from_secs(2),
            tries: 1,
        });
    }

    fn close(&mut self, reason: String) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.events.push_back(IkeEvent::Closed(reason));
        }
    }

    /// Deletes the SA from the gateway's side (tells the peer, best effort).
    pub fn delete(&mut self, now: Instant, reason: &str) {
        if self.state == State::Established {
            self.send_request(now, &[Payload::Delete(DeletePayload::ike())]);
        }
        self.close(reason.to_owned());
    }

    /// Feeds a message of this SA (already matched by SPIs) from `from`.
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, nat_t: bool, raw: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        let Ok(msg) = Message::parse(raw) else {
            return;
        };
        let h = msg.header;
        // A retransmitted IKE_SA_INIT request still carries SPIr = 0.
        let init_again = h.exchange == ExchangeType::IKE_SA_INIT && h.responder_spi == 0;
        if h.initiator_spi != self.spi_i || (h.responder_spi != self.spi_r && !init_again) {
            return;
        }
        if h.flags.response() {
            self.handle_response(now, &msg, raw);
            return;
        }
        if h.exchange == ExchangeType::IKE_SA_INIT {
            // A retransmitted IKE_SA_INIT: the stored answer again.
            if let Some((0, d)) = &self.last_response {
                for x in d.clone() {
                    self.transmits.push_back(Transmit {
                        to: from,
                        nat_t,
                        data: x,
                    });
                }
            }
            return;
        }
        if h.message_id.wrapping_add(1) == self.next_peer_id {
            // Retransmission: answer from the cache, never process twice.
            if let Some((id, d)) = &self.last_response
                && *id == h.message_id
            {
                let last = msg.payloads.last();
                // Resend once per request (the last fragment of a fragmented one).
                let resend = match last {
                    Some(Payload::EncryptedFragment {
                        fragment_number,
                        total_fragments,
                        ..
                    }) => fragment_number == total_fragments,
                    _ => true,
                };
                if resend {
                    for x in d.clone() {
                        self.transmits.push_back(Transmit {
                            to: from,
                            nat_t,
                            data: x,
                        });
                    }
                }
            }
            return;
        }
        if h.message_id != self.next_peer_id {
            return;
        }
        let (first_inner, plaintext) = match self.reassembly.open(&self.sk_in, &msg, raw) {
            Ok(Opened::Complete {
                first_inner,
                plaintext,
            }) => (first_inner, plaintext),
            Ok(Opened::Partial) => {
                self.last_rx = now;
                return;
            }
            Err(_) => return,
        };
        // Authentic: the peer may have moved (charon-cmd sends IKE_AUTH from a new port).
        self.peer = from;
        self.peer_nat_t = nat_t;
        self.last_rx = now;
        self.next_peer_id = h.message_id.wrapping_add(1);
        let Ok(payloads) = message::inner(first_inner, &plaintext) else {
            self.send_response(
                h.exchange,
                h.message_id,
                &[notify(NotifyType::INVALID_SYNTAX, &[])],
            );
            return;
        };
        match h.exchange {
            ExchangeType::IKE_AUTH if self.state == State::AwaitAuth => {
                self.on_ike_auth(now, h.message_id, &payloads)
            }
            ExchangeType::INFORMATIONAL => self.on_informational(h.message_id, &payloads),
            ExchangeType::CREATE_CHILD_SA if self.state == State::Established => {
                self.on_create_child(h.message_id, &payloads)
            }
            other => {
                let t = if other == ExchangeType::CREATE_CHILD_SA {
                    NotifyType::TEMPORARY_FAILURE
                } else {
                    NotifyType::INVALID_SYNTAX
                };
                self.send_response(other, h.message_id, &[notify(t, &[])]);
            }
        }
    }

    fn refuse(&mut self, message_id: u32, client: Option<String>, reason: String) {
        self.events.push_back(IkeEvent::Refused {
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

    fn on_ike_auth(&mut self, now: Instant, message_id: u32, payloads: &[Payload<'_>]) {
        let mut idi = None;
        let mut idr_wanted = None;
        let mut certs: Vec<CertificateDer<'_>> = Vec::new();
        let mut auth = None;
        let mut sa = None;
        let mut cp = None;
        for p in payloads {
            match p {
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
        if auth.method == AuthMethod::SHARED_KEY_MIC {
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
        let verified = match self.cfg.trust.verify(&certs, time, true) {
            Ok(v) => v,
            Err(r) => {
                self.refuse(message_id, r.name.clone(), r.reason);
                return;
            }
        };
        let name = verified.name.clone();
        if !id_matches_cert(idi, &certs[0]) {
            self.refuse(
                message_id,
                Some(name),
                format!("identity {id_text} is not in its certificate"),
            );
            return;
        }
        let mut idi_body = Vec::new();
        idi.emit_body(&mut idi_body);
        let octets = signed_octets(
            self.suite.prf,
            &self.keys.sk_pi,
            &self.init_request,
            &self.nr,
            &idi_body,
        );
        let method = SignMethod::from_id(auth.method.0);
        let ok = method.is_some_and(|m| verify_auth(m, &verified.spki, &octets, auth.data).is_ok());
        if !ok {
            self.refuse(
                message_id,
                Some(name),
                format!(
                    "AUTH payload (method {}) does not verify with its certificate",
                    auth.method.0
                ),
            );
            return;
        }
        let (peer_esp_spi, esp) = match sa.and_then(|s| choose_esp(&self.cfg.policy, s, &[])) {
            Some((number, spi, cipher, _)) => (spi, Some((number, cipher))),
            None => (0, None),
        };
        let wants_address = cp.is_some_and(|c| {
            c.cfg_type == CfgType::CFG_REQUEST
                && c.attributes_of(CfgAttrType::INTERNAL_IP4_ADDRESS)
                    .next()
                    .is_some()
        });
        let _ = now;
        self.client = Some(name.clone());
        let wanted_idr = idr_wanted
            .filter(|i| {
                self.cfg
                    .cert_chain
                    .first()
                    .is_some_and(|c| id_matches_cert(i, c.as_ref()))
            })
            .map(|i| (i.id_type, i.data.to_vec()));
        self.pending = Some(PendingAuth {
            message_id,
            wanted_idr,
            client: name.clone(),
            peer_esp_spi,
            esp,
            wants_address,
        });
        self.state = State::AwaitDecision;
        self.events.push_back(IkeEvent::Authenticated {
            client: name,
            id: id_text,
        });
    }

    /// Admits the authenticated client: answers IKE_AUTH with our identity, certificate,
    /// signature, its address (CP), and the CHILD SA.
    pub fn accept(&mut self, now: Instant, a: IkeAssignment) {
        if self.state != State::AwaitDecision {
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
        // Our identity: what the client asked for when our certificate holds it, else the
        // certificate's first address or DNS name (what clients configure as the server's
        // identity), else its subject DN.
        let (idr_type, idr_data) = match p.wanted_idr.clone().or_else(|| first_san(&ee)) {
            Some(x) => x,
            None => match subject_der(&ee) {
                Some(s) => (IdType::DER_ASN1_DN, s),
                None => {
                    self.close("gateway certificate does not parse".into());
                    return;
                }
            },
        };
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
        let method = if self.peer_sig_hash {
            SignMethod::DigitalSignature
        } else {
            self.cfg.key.preferred_method()
        };
        let auth_data = match self.cfg.key.auth_data(method, &octets, &*self.cfg.rng) {
            Ok(d) => d,
            Err(e) => {
                self.close(format!("signing failed: {e}"));
                return;
            }
        };
        let mut our_spi = 0;
        while our_spi == 0 {
            let mut b = [0u8; 4];
            self.entropy.fill(&mut b);
            our_spi = u32::from_be_bytes(b);
        }
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
                return;
            }
        };
        let sa = match EspSa::from_child_keys(cipher, &keys, false, our_spi, p.peer_esp_spi) {
            Ok(s) => s,
            Err(e) => {
                self.close(format!("ESP SA setup failed: {e}"));
                return;
            }
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
        let tsi = TsPayload::new(vec![TrafficSelector::from_net(IpNet::V4(Ipv4Net::from(
            a.address,
        )))]);
        let tsr = if a.full_tunnel || a.subnets.is_empty() {
            TsPayload::new(vec![TrafficSelector::any_v4()])
        } else {
            TsPayload::new(
                a.subnets
                    .iter()
                    .map(|n| TrafficSelector::from_net(IpNet::V4(*n)))
                    .collect(),
            )
        };
        let spi_bytes = our_spi.to_be_bytes();
        let payloads = vec![
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
            Payload::TsI(tsi),
            Payload::TsR(tsr),
        ];
        self.send_response(ExchangeType::IKE_AUTH, p.message_id, &payloads);
        self.state = State::Established;
        self.last_rx = now;
        self.children.push(Child {
            our_spi,
            peer_spi: p.peer_esp_spi,
        });
        self.events.push_back(IkeEvent::ChildUp {
            our_spi,
            peer_spi: p.peer_esp_spi,
            cipher,
            sa: Box::new(sa),
            rekey_of: None,
        });
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

    fn on_informational(&mut self, message_id: u32, payloads: &[Payload<'_>]) {
        let mut reply_spis: Vec<u8> = Vec::new();
        let mut delete_ike = false;
        let mut downs = Vec::new();
        for p in payloads {
            if let Payload::Delete(d) = p {
                if d.protocol_id == ProtocolId::IKE {
                    delete_ike = true;
                } else if d.protocol_id == ProtocolId::ESP {
                    for spi in d.spis_u32() {
                        if let Some(i) = self.children.iter().position(|c| c.peer_spi == spi) {
                            let c = self.children.remove(i);
                            reply_spis.extend_from_slice(&c.our_spi.to_be_bytes());
                            downs.push(c.our_spi);
                        }
                    }
                }
            }
        }
        if delete_ike {
            self.send_response(ExchangeType::INFORMATIONAL, message_id, &[]);
            self.close("client deleted the IKE SA (disconnect)".into());
            return;
        }
        if reply_spis.is_empty() {
            self.send_response(ExchangeType::INFORMATIONAL, message_id, &[]);
        } else {
            let spis = reply_spis.clone();
            self.send_response(
                ExchangeType::INFORMATIONAL,
                message_id,
                &[Payload::Delete(DeletePayload::esp(&spis))],
            );
        }
        for our_spi in downs {
            self.events.push_back(IkeEvent::ChildDown { our_spi });
        }
    }

    fn on_create_child(&mut self, message_id: u32, payloads: &[Payload<'_>]) {
        let mut rekey = None;
        let mut sa = None;
        let mut nonce = None;
        let mut ke = None;
        let mut tsi = None;
        let mut tsr = None;
        for p in payloads {
            match p {
                Payload::Notify(n) if n.notify_type == NotifyType::REKEY_SA => rekey = n.spi_u32(),
                Payload::Sa(s) => sa = Some(s),
                Payload::Nonce(n) => nonce = Some(*n),
                Payload::Ke(k) => ke = Some(k),
                Payload::TsI(t) => tsi = Some(t),
                Payload::TsR(t) => tsr = Some(t),
                _ => {}
            }
        }
        let (Some(sa), Some(ni)) = (sa, nonce) else {
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::INVALID_SYNTAX, &[])],
            );
            return;
        };
        if sa.proposals.iter().any(|p| p.protocol == ProtocolId::IKE) {
            // IKE SA rekeying is not implemented yet; the peer keeps the current IKE SA.
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::NO_ADDITIONAL_SAS, &[])],
            );
            return;
        }
        let (Some(tsi), Some(tsr)) = (tsi, tsr) else {
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::TS_UNACCEPTABLE, &[])],
            );
            return;
        };
        let old = rekey.and_then(|spi| self.children.iter().position(|c| c.peer_spi == spi));
        let Some(old) = old else {
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::CHILD_SA_NOT_FOUND, &[])],
            );
            return;
        };
        let Some((number, peer_spi, cipher, dh)) =
            choose_esp(&self.cfg.policy, sa, &self.cfg.policy.dh_groups)
        else {
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::NO_PROPOSAL_CHOSEN, &[])],
            );
            return;
        };
        let mut g_ir = None;
        let mut our_public = Vec::new();
        let mut group = 0u16;
        if let Some(g) = dh {
            let Some(ke) = ke.filter(|k| k.dh_group == g.transform_id()) else {
                let b = g.transform_id().to_be_bytes();
                self.send_response(
                    ExchangeType::CREATE_CHILD_SA,
                    message_id,
                    &[notify(NotifyType::INVALID_KE_PAYLOAD, &b)],
                );
                return;
            };
            let generated: Result<(DhPrivate, Vec<u8>), _> =
                DhGroup::generate(g, &mut *self.entropy, &*self.cfg.rng);
            let Ok((private, public)) = generated else {
                return;
            };
            let Ok(secret) = private.shared_secret(ke.data) else {
                self.send_response(
                    ExchangeType::CREATE_CHILD_SA,
                    message_id,
                    &[notify(NotifyType::INVALID_SYNTAX, &[])],
                );
                return;
            };
            g_ir = Some(secret);
            our_public = public;
            group = g.transform_id();
        }
        let mut nr = vec![0u8; 32];
        self.entropy.fill(&mut nr);
        let mut our_spi = 0;
        while our_spi == 0 {
            let mut b = [0u8; 4];
            self.entropy.fill(&mut b);
            our_spi = u32::from_be_bytes(b);
        }
        let Ok(keys) = ChildSaKeys::derive(
            self.suite.prf,
            &self.keys.sk_d,
            g_ir.as_deref(),
            ni,
            &nr,
            cipher.key_sizes(),
        ) else {
            return;
        };
        let Ok(esp) = EspSa::from_child_keys(cipher, &keys, false, our_spi, peer_spi) else {
            return;
        };
        let spi_bytes = our_spi.to_be_bytes();
        let mut out = vec![
            Payload::Sa(esp_sa_payload(number, cipher, &spi_bytes)),
            Payload::Nonce(&nr),
        ];
        if dh.is_some() {
            out.push(Payload::Ke(KePayload {
                dh_group: group,
                data: &our_public,
            }));
        }
        // Keep the selectors of the SA being rekeyed (they were narrowed at IKE_AUTH).
        out.push(Payload::TsI(tsi.clone()));
        out.push(Payload::TsR(tsr.clone()));
        self.send_response(ExchangeType::CREATE_CHILD_SA, message_id, &out);
        let old_our = self.children[old].our_spi;
        self.children.push(Child { our_spi, peer_spi });
        self.events.push_back(IkeEvent::ChildUp {
            our_spi,
            peer_spi,
            cipher,
            sa: Box::new(esp),
            rekey_of: Some(old_our),
        });
    }

    fn handle_response(&mut self, now: Instant, msg: &Message<'_>, raw: &[u8]) {
        let Some(o) = &self.outstanding else {
            return;
        };
        if msg.header.message_id != o.message_id {
            return;
        }
        if !matches!(
            self.reassembly.open(&self.sk_in, msg, raw),
            Ok(Opened::Complete { .. })
        ) {
            return;
        }
        self.outstanding = None;
        self.next_our_id = self.next_our_id.wrapping_add(1);
        self.last_rx = now;
    }

    /// Advances timers: DPD, retransmissions of our requests, the IKE_AUTH deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if matches!(self.state, State::AwaitAuth | State::AwaitDecision)
            && now >= self.created + self.cfg.auth_timeout
        {
            self.close("IKE_AUTH did not complete in time".into());
            return;
        }
        if let Some(o) = &mut self.outstanding {
            if now >= o.next_send {
                if o.tries >= 5 {
                    self.close("peer stopped answering (dead peer detection)".into());
                    return;
                }
                o.tries += 1;
                o.next_send = now + Duration::from_secs(1 << o.tries.min(5));
                for d in o.datagrams.clone() {
                    self.transmits.push_back(Transmit {
                        to: self.peer,
                        nat_t: self.peer_nat_t,
                        data: d,
                    });
                }
            }
            return;
        }
        if self.state == State::Established && now >= self.last_rx + self.cfg.dpd_interval {
            self.send_request(now, &[]);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<IkeEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::AwaitAuth | State::AwaitDecision => Some(self.created + self.cfg.auth_timeout),
            State::Established => Some(match &self.outstanding {
                Some(o) => o.next_send,
                None => self.last_rx + self.cfg.dpd_interval,
            }),
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

fn subject_der(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(c.subject().as_raw().to_vec())
}

fn describe_id(id: &IdPayload<'_>) -> String {
    match id.id_type {
        IdType::IPV4_ADDR => id.ipv4().map_or_else(|| "IPv4 ?".into(), |a| a.to_string()),
        IdType::FQDN | IdType::RFC822_ADDR => id.text().unwrap_or("?").to_owned(),
        IdType::DER_ASN1_DN => {
            use x509_parser::prelude::FromDer;
            x509_parser::x509::X509Name::from_der(id.data)
                .map(|(_, n)| n.to_string())
                .unwrap_or_else(|_| "DN ?".into())
        }
        other => format!("{other:?}"),
    }
}
