//! One site-to-site peer per tokio task: the engine's `IkeInitiator` in site mode (PSK, our
//! source address as our identity, no virtual address), on its own UDP socket bound to the
//! site's source address, ESP in UDP 4500. It rekeys its CHILD SA and its IKE SA at the
//! lifetimes given (`--site-child-lifetime`, `--site-ike-lifetime`) and counts the rekeys.
//! Echo requests come from the first host of the site's address space. The driver is the
//! IKEv2 client session's (session.rs) with the site's identity and counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_engine::esp::EspTable;
use gatehouse_engine::ikev2::crypto::SigningKey;
use gatehouse_engine::ikev2::initiator::{
    DEFAULT_CHILD_LIFETIME, DEFAULT_IKE_LIFETIME, IkeInitiator, InitiatorConfig, InitiatorEvent,
};
use gatehouse_engine::ikev2::peer_cert::PeerTrust;
use gatehouse_engine::ikev2::proposal::Policy;
use gatehouse_engine::ikev2::site::{SiteAuth, SitePeer};
use ipnet::Ipv4Net;
use tokio::net::UdpSocket;
use tokio::sync::OwnedSemaphorePermit;

use crate::session::{
    Ctx, Life, OsEntropy, Phase, Proto, SCRATCH, SessionEnd, Traffic, count_tx, recv_ike_burst,
    send,
};
use crate::site_layout::{SiteArgs, SiteSpec};

/// What one site saw.
#[derive(Debug, Default)]
pub struct SiteStats {
    /// Its first CHILD SA came up.
    pub up: AtomicBool,
    /// Up and not closed when the hold ended.
    pub held: AtomicBool,
    /// Echo requests sent during the hold.
    pub sent: AtomicU64,
    /// Echo replies to them.
    pub replies: AtomicU64,
    /// CHILD SA rekeys completed (ours; the gateway leaves rekeys of our SAs to us).
    pub child_rekeys: AtomicU64,
    /// IKE SA rekeys completed (the SA continued under new SPIs).
    pub ike_rekeys: AtomicU64,
}

/// Settings and counters of the sites (one [`SiteStats`] per site index).
pub struct SiteCtx {
    pub args: SiteArgs,
    /// Unused with PSK authentication, but the initiator's configuration has a key.
    pub key: Arc<SigningKey>,
    pub stats: Vec<SiteStats>,
}

impl SiteCtx {
    pub fn new(args: SiteArgs, rng: &ring::rand::SystemRandom) -> anyhow::Result<Self> {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
            .map_err(|_| anyhow::anyhow!("generating a placeholder key failed"))?;
        let key = SigningKey::from_pkcs8(pkcs8.as_ref(), rng)
            .map_err(|e| anyhow::anyhow!("placeholder key: {e}"))?;
        let stats = (0..args.sites).map(|_| SiteStats::default()).collect();
        Ok(SiteCtx {
            args,
            key: Arc::new(key),
            stats,
        })
    }
}

fn any() -> Ipv4Net {
    Ipv4Net::default()
}

fn site_config(ctx: &Ctx, sc: &SiteCtx, spec: &SiteSpec) -> Arc<InitiatorConfig> {
    // Route-based: 0.0.0.0/0 both ways; policy-based: our prefix <-> the gateway's.
    let (local_ts, remote_ts): (Vec<Ipv4Net>, Vec<Ipv4Net>) =
        if sc.args.site_gateway_space.is_empty() {
            (vec![any()], vec![any()])
        } else {
            (vec![spec.space], sc.args.site_gateway_space.clone())
        };
    let (local_ts, remote_ts) = (
        local_ts.into_iter().map(ipnet::IpNet::V4).collect(),
        remote_ts.into_iter().map(ipnet::IpNet::V4).collect(),
    );
    let (child, ike) = sc.args.lifetimes(spec.index);
    let or = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
    Arc::new(InitiatorConfig {
        policy: Policy::default(),
        trust: PeerTrust {
            roots: Vec::new(),
            crls: Vec::new(),
        },
        time: Arc::new(rustls::time_provider::DefaultTimeProvider),
        cert_chain: Vec::new(),
        key: sc.key.clone(),
        rng: ctx.rng.clone(),
        remote_id: None,
        dpd_interval: ctx.ike_dpd,
        fragment_size: 1280,
        ike_lifetime: or(ike, DEFAULT_IKE_LIFETIME),
        child_lifetime: or(child, DEFAULT_CHILD_LIFETIME),
        request_ipv6: false,
        site: Some(Arc::new(SitePeer {
            name: spec.name.clone(),
            remote_addr: ctx.ike_addr.ip(),
            remote_id: ctx.gateway_id.clone(),
            local_id: spec.source.to_string(),
            auth: SiteAuth::Psk(spec.psk().to_vec()),
            local_ts,
            remote_ts,
            policy: Policy::default(),
            any_remote_addr: false,
        })),
    })
}

/// Runs one site (IKE SA + one CHILD SA, rekeyed at its lifetimes) to the end.
pub async fn site(spec: Arc<SiteSpec>, ctx: Arc<Ctx>, permit: OwnedSemaphorePermit) -> SessionEnd {
    let mut life = Life::new(Proto::Site, permit);
    let Some(sc) = ctx.site.as_ref() else {
        return life.ended(&ctx, "no site settings".into());
    };
    let Some(stats) = sc.stats.get(spec.index) else {
        return life.ended(&ctx, "site index out of range".into());
    };
    let cfg = site_config(&ctx, sc, &spec);
    let sock = match UdpSocket::bind(SocketAddr::new(spec.source.into(), 0)).await {
        Ok(s) => s,
        Err(e) => {
            return life.ended(
                &ctx,
                format!(
                    "UDP socket on {} (is the address on an interface?): {e}",
                    spec.source
                ),
            );
        }
    };
    if let Err(e) = sock.writable().await {
        return life.ended(&ctx, format!("UDP socket: {e}"));
    }
    let gw = ctx.ike_addr;
    let natt = SocketAddr::new(gw.ip(), 4500);
    let mut ike = IkeInitiator::new(
        cfg,
        Box::new(OsEntropy(ctx.rng.clone())),
        Instant::now(),
        gw,
    );
    let mut esp: EspTable<()> = EspTable::new();
    let mut phase_rx = ctx.phase.clone();
    let mut phase = *phase_rx.borrow_and_update();
    let mut traffic = Traffic::new(spec.index);
    // The IKE SA's SPIs once up: a change is an IKE rekey.
    let mut ike_spis: Option<(u64, u64)> = None;
    loop {
        let now = Instant::now();
        SCRATCH.with_borrow_mut(|s| {
            while let Some(t) = ike.poll_transmit() {
                s.out.clear();
                if t.nat_t {
                    s.out.extend_from_slice(&[0, 0, 0, 0]);
                }
                s.out.extend_from_slice(&t.data);
                send(&sock, &s.out, t.to, &ctx.counters);
            }
        });
        while let Some(ev) = ike.poll_event() {
            match ev {
                InitiatorEvent::Connected { our_spi, sa, .. } => {
                    let sa = *sa;
                    esp.install((), our_spi, sa.inbound, sa.outbound, false);
                    traffic.src = spec.host();
                    traffic.dst = ctx.target;
                    ike_spis = Some(ike.spis());
                    stats.up.store(true, Ordering::Relaxed);
                    life.connected(&ctx, now);
                    if phase == Phase::Hold {
                        traffic.start(&ctx);
                    }
                }
                InitiatorEvent::ChildRekeyed { our_spi, sa, .. } => {
                    let sa = *sa;
                    esp.install((), our_spi, sa.inbound, sa.outbound, false);
                    stats.child_rekeys.fetch_add(1, Ordering::Relaxed);
                }
                InitiatorEvent::ChildDeleted { our_spi } => {
                    esp.remove((), our_spi);
                }
                InitiatorEvent::AuthFailed(reason) => {
                    return life.ended(&ctx, format!("refused by the gateway: {reason}"));
                }
                InitiatorEvent::Closed(reason) => {
                    return life.ended(&ctx, reason);
                }
            }
        }
        if let Some(spis) = &mut ike_spis
            && ike.is_established()
            && *spis != ike.spis()
        {
            *spis = ike.spis();
            stats.ike_rekeys.fetch_add(1, Ordering::Relaxed);
        }
        if ike.is_closed() {
            return life.ended(&ctx, "IKE SA closed".into());
        }
        if life.handshake_overdue(&ctx, now) {
            return life.ended(&ctx, "handshake timed out".into());
        }
        if life.stop_deadline.is_some_and(|t| now >= t) {
            return life.ended(&ctx, "did not close in time".into());
        }
        let deadline = ike
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(5));
        tokio::select! {
            r = sock.readable() => {
                if let Err(e) = r {
                    return life.ended(&ctx, format!("socket: {e}"));
                }
                let holding = phase == Phase::Hold;
                let replies = recv_ike_burst(&sock, gw, &mut ike, &mut esp, &ctx, holding, &traffic, &mut life);
                stats.replies.fetch_add(replies, Ordering::Relaxed);
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                ike.handle_timeout(Instant::now());
            }
            _ = traffic.next(), if phase == Phase::Hold => {
                SCRATCH.with_borrow_mut(|s| {
                    if !traffic.build(&mut s.inner, ctx.packet_size) {
                        return;
                    }
                    s.out.resize(s.inner.len() + 128, 0);
                    if let Ok(len) = esp.encrypt((), &s.inner, &mut s.out) {
                        count_tx(&ctx, s.inner.len());
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                        send(&sock, &s.out[..len], natt, &ctx.counters);
                    }
                });
            }
            r = phase_rx.changed(), if phase != Phase::Stop => {
                phase = if r.is_ok() { *phase_rx.borrow_and_update() } else { Phase::Stop };
                let now = Instant::now();
                match phase {
                    Phase::Hold if life.up => traffic.start(&ctx),
                    Phase::Stop => {
                        if !life.stop(&ctx, now) {
                            return life.ended(&ctx, "not connected when the run stopped".into());
                        }
                        stats.held.store(true, Ordering::Relaxed);
                        ike.disconnect(now);
                    }
                    _ => {}
                }
            }
        }
    }
}
