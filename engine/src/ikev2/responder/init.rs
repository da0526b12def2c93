//! Answering IKE_SA_INIT: the cheap checks first (parsing, cookies, proposals) on the
//! caller's thread, then the key exchange as an [`InitWork`] that can run on another one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::*;

/// Answers an IKE_SA_INIT request from `peer`. `cookie_secret` is set when the gateway is
/// under half-open load: then a request without the right COOKIE gets one and nothing else.
/// (The gateway uses [`prepare_init`] with rotating secrets.)
pub fn respond_to_init(
    cfg: Arc<ResponderConfig>,
    entropy: Box<dyn Entropy>,
    now: Instant,
    peer: SocketAddr,
    nat_t: bool,
    raw: &[u8],
    cookie_secret: Option<&[u8; 32]>,
) -> InitOutcome {
    prepare(
        cfg,
        entropy,
        now,
        peer,
        nat_t,
        raw,
        cookie_secret.map(Cookies::Fixed),
        false,
        true,
    )
    .finish()
}

/// The cheap half of answering an IKE_SA_INIT request from `peer` as [`respond_to_init`]
/// does, protected by `guard` (cookies from a rotating [`CookieJar`], cheap groups preferred
/// under load): parsing, cookies, the proposal choice. What is left is the key exchange, as
/// an [`InitWork`] that may run on another thread ([`InitStep::finish`] runs it here).
pub fn prepare_init(
    cfg: Arc<ResponderConfig>,
    entropy: Box<dyn Entropy>,
    now: Instant,
    peer: SocketAddr,
    nat_t: bool,
    raw: &[u8],
    guard: InitGuard<'_>,
) -> InitStep {
    let cookies = guard.cookies.map(Cookies::Jar);
    prepare(
        cfg,
        entropy,
        now,
        peer,
        nat_t,
        raw,
        cookies,
        guard.prefer_cheap_groups,
        guard.modp_allowed,
    )
}

/// Where [`prepare_init`] got to.
pub enum InitStep {
    /// Answered already (a cookie, a refusal) or dropped.
    Done(InitOutcome),
    /// An acceptable request: the key exchange is left to do.
    Work(InitWork),
}

impl InitStep {
    /// The outcome, doing the key exchange here if it is left.
    pub fn finish(self) -> InitOutcome {
        match self {
            InitStep::Done(o) => o,
            InitStep::Work(w) => w.run(),
        }
    }
}

/// The costly half of answering an IKE_SA_INIT request (our Diffie-Hellman key pair, the
/// shared secret, the SA's keys and the response): plain computation on owned values, to run
/// on any thread.
pub struct InitWork {
    cfg: Arc<ResponderConfig>,
    entropy: Box<dyn Entropy>,
    now: Instant,
    peer: SocketAddr,
    nat_t: bool,
    raw: Vec<u8>,
    number: u8,
    suite: IkeSuite,
    site: Option<Arc<SitePeer>>,
}

impl std::fmt::Debug for InitWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitWork")
            .field("peer", &self.peer)
            .field("dh", &self.suite.dh)
            .finish_non_exhaustive()
    }
}

enum Cookies<'a> {
    Fixed(&'a [u8; 32]),
    Jar(&'a mut CookieJar),
}

/// Whether `g` costs a modular exponentiation (MODP) rather than an elliptic-curve operation.
fn costly(g: DhGroup) -> bool {
    matches!(g, DhGroup::Modp1024 | DhGroup::Modp2048 | DhGroup::Modp3072)
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    cfg: Arc<ResponderConfig>,
    entropy: Box<dyn Entropy>,
    now: Instant,
    peer: SocketAddr,
    nat_t: bool,
    raw: &[u8],
    cookies: Option<Cookies<'_>>,
    prefer_cheap: bool,
    modp_allowed: bool,
) -> InitStep {
    let msg = match Message::parse(raw) {
        Ok(m) => m,
        Err(e) => {
            return InitStep::Done(InitOutcome::Drop(format!("malformed IKE_SA_INIT: {e}")));
        }
    };
    let h = msg.header;
    if h.exchange != ExchangeType::IKE_SA_INIT
        || h.flags.response()
        || !h.flags.initiator()
        || h.message_id != 0
        || h.responder_spi != 0
    {
        return InitStep::Done(InitOutcome::Drop("not an IKE_SA_INIT request".into()));
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
        return InitStep::Done(InitOutcome::Drop(
            "IKE_SA_INIT lacks SA, KE or Nonce".into(),
        ));
    };
    if !nonce_len_ok(ni) {
        return InitStep::Done(InitOutcome::Drop("nonce length out of range".into()));
    }
    let reply_header = message::header(
        h.initiator_spi,
        0,
        ExchangeType::IKE_SA_INIT,
        false,
        true,
        0,
    );
    let got = msg.notify(NotifyType::COOKIE).map(|n| n.data);
    match cookies {
        None => {}
        Some(Cookies::Fixed(secret)) => {
            let want = cookie_for(secret, ni, peer, h.initiator_spi);
            if got != Some(&want[..]) {
                return InitStep::Done(InitOutcome::Reply(message::plain(
                    reply_header,
                    vec![notify(NotifyType::COOKIE, &want)],
                )));
            }
        }
        Some(Cookies::Jar(jar))
            if !got.is_some_and(|c| jar.check(c, ni, peer, h.initiator_spi)) =>
        {
            let want = jar.issue(ni, peer, h.initiator_spi);
            return InitStep::Done(InitOutcome::Reply(message::plain(
                reply_header,
                vec![notify(NotifyType::COOKIE, &want)],
            )));
        }
        Some(Cookies::Jar(_)) => {}
    }
    let site = cfg
        .sites
        .iter()
        .find(|s| s.remote_addr == peer.ip())
        .cloned();
    let policy = site.as_ref().map_or(&cfg.policy, |s| &s.policy);
    let suite = match choose_ike(policy, sa, ke.dh_group) {
        IkeChoice::Chosen { number, suite } => (number, suite),
        IkeChoice::WrongGroup(g) => {
            let group = g.transform_id().to_be_bytes();
            return InitStep::Done(InitOutcome::Reply(message::plain(
                reply_header,
                vec![notify(NotifyType::INVALID_KE_PAYLOAD, &group)],
            )));
        }
        IkeChoice::NoProposal => {
            let whose = site.as_ref().map_or_else(
                || "remote access".to_owned(),
                |s| format!("connection {}", s.name),
            );
            return InitStep::Done(InitOutcome::Refused {
                reply: message::plain(
                    reply_header,
                    vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, &[])],
                ),
                reason: format!(
                    "no proposal chosen: the peer offered IKE {}; {whose} accepts {}",
                    describe_offer(sa),
                    describe_policy(policy)
                ),
            });
        }
    };
    let (number, suite) = suite;
    if prefer_cheap && costly(suite.dh) {
        // Under load: a MODP exponentiation is what a flood would make us do. Ask for a
        // cheap group the peer offered (strongSwan restarts IKE_SA_INIT with the group an
        // INVALID_KE_PAYLOAD names when its proposals list it).
        let cheap = Policy {
            dh_groups: policy
                .dh_groups
                .iter()
                .copied()
                .filter(|g| !costly(*g))
                .collect(),
            ..policy.clone()
        };
        if let IkeChoice::WrongGroup(g) = choose_ike(&cheap, sa, 0) {
            let group = g.transform_id().to_be_bytes();
            return InitStep::Done(InitOutcome::Reply(message::plain(
                reply_header,
                vec![notify(NotifyType::INVALID_KE_PAYLOAD, &group)],
            )));
        }
        if !modp_allowed {
            return InitStep::Done(InitOutcome::Throttled(format!(
                "the peer offers only MODP groups ({}) and the gateway is under load",
                describe_offer(sa)
            )));
        }
    }
    InitStep::Work(InitWork {
        cfg,
        entropy,
        now,
        peer,
        nat_t,
        raw: raw.to_vec(),
        number,
        suite,
        site,
    })
}

impl InitWork {
    /// The suite chosen (its DH group says what the work costs).
    pub fn suite(&self) -> IkeSuite {
        self.suite
    }

    /// Does the key exchange and makes the SA (or finds the peer's KE value invalid).
    pub fn run(self) -> InitOutcome {
        let InitWork {
            cfg,
            mut entropy,
            now,
            peer,
            nat_t,
            raw,
            number,
            suite,
            site,
        } = self;
        let raw = &raw[..];
        let Ok(msg) = Message::parse(raw) else {
            return InitOutcome::Drop("malformed IKE_SA_INIT".into());
        };
        let h = msg.header;
        let (Some(ke), Some(ni)) = (
            msg.payloads.iter().find_map(|p| match p {
                Payload::Ke(k) => Some(k),
                _ => None,
            }),
            msg.payloads.iter().find_map(|p| match p {
                Payload::Nonce(n) => Some(*n),
                _ => None,
            }),
        ) else {
            return InitOutcome::Drop("IKE_SA_INIT lacks KE or Nonce".into());
        };
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
            id_slack: 0,
            last_response: Some((0, vec![response.clone()])),
            reassembly: Reassembly::default(),
            pending: None,
            checking: None,
            auth_job: None,
            children: Vec::new(),
            next_our_id: 0,
            outstanding: None,
            deleting: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            created: now,
            keys_created: now,
            old_sas: Vec::new(),
            last_rx: now,
            client: None,
            peer_cert: None,
            spis: None,
            narrowed: None,
            ike_initiator: false,
            child_collision: None,
            site,
            site_confirmed: false,
            site_claimed: false,
            mobike: mobike::Mobike::default(),
            psk_throttle: None,
            discards: Discards::default(),
        };
        r.transmits.push_back(Transmit {
            to: peer,
            nat_t,
            data: response,
        });
        InitOutcome::Session(Box::new(r))
    }
}
