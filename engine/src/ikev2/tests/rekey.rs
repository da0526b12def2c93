//! Rekeying over time: IKE SA rekeys (by hand and by lifetime) and CHILD SA rekeys keep the
//! tunnel carrying traffic without a lost packet, move both sides to new SPIs with message
//! IDs from 0, and leave no old SA behind; a gateway that wants another DH group gets it; a
//! client that never rekeys is cut off at the gateway's hard lifetime.

use std::sync::Arc;
use std::time::Duration;

use super::pair::{Pair, default_configs, pki, responder_config};
use crate::ikev2::crypto::DhGroup;
use crate::ikev2::initiator::InitiatorEvent;
use crate::ikev2::responder::IkeEvent;
use crate::wire::ikev2::ExchangeType;

/// Runs `d` of virtual time, pinging both ways every 100 ms; returns the failed pings.
pub(super) fn ping_for(p: &mut Pair, d: Duration) -> Vec<String> {
    let mut failures = Vec::new();
    let steps = d.as_millis() / 100;
    for i in 0..steps {
        p.run_for(Duration::from_millis(100));
        if let Err(e) = p.ping(format!("ping {i}").as_bytes()) {
            failures.push(format!("{:?}: {e}", p.now));
        }
    }
    failures
}

pub(super) fn count<T>(events: &[T], f: impl Fn(&T) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

fn ike_rekeys(p: &Pair) -> usize {
    count(&p.gateway_events, |e| {
        matches!(e, IkeEvent::IkeRekeyed { .. })
    })
}

fn child_rekeys(p: &Pair) -> usize {
    count(&p.gateway_events, |e| {
        matches!(
            e,
            IkeEvent::ChildUp {
                rekey_of: Some(_),
                ..
            }
        )
    })
}

/// Lifetimes for the long-running tests.
fn short_lifetimes(ike: Duration, child: Duration) -> Pair {
    let (rc, mut ic) = default_configs();
    ic.ike_lifetime = ike;
    ic.child_lifetime = child;
    Pair::with(rc, ic)
}

#[test]
fn ike_rekey_by_hand_moves_to_new_spis_and_deletes_the_old_sa() {
    let mut p = Pair::new();
    p.connect();
    let old = p.initiator.spis();
    let gateway = p.responder.as_ref().unwrap();
    assert_eq!(gateway.spis(), old);
    let child = (p.client_sas[0].0, p.gateway_sas[0].0);
    let sent_before = p.sent.len();
    let now = p.now;
    assert!(p.initiator.rekey_ike(now));
    assert!(!p.initiator.rekey_ike(now), "one IKE rekey at a time");
    let failures = ping_for(&mut p, Duration::from_secs(5));
    assert!(failures.is_empty(), "{failures:?}");

    let new = p.initiator.spis();
    let gateway = p.responder.as_ref().unwrap();
    assert_eq!(gateway.spis(), new);
    assert!(new.0 != old.0 && new.1 != old.1, "{old:x?} -> {new:x?}");
    assert_eq!(
        gateway.old_spis().count(),
        0,
        "old SA deleted on the gateway"
    );
    assert_eq!(p.gateway_routes, vec![new]);
    assert!(
        p.gateway_events.iter().any(
            |e| matches!(e, IkeEvent::IkeRekeyed { old: o, new: n } if *o == old && *n == new)
        )
    );
    assert!(
        p.gateway_events
            .iter()
            .any(|e| matches!(e, IkeEvent::OldIkeSaGone { spis } if *spis == old))
    );
    // The CHILD SA did not change.
    assert_eq!((p.client_sas[0].0, p.gateway_sas[0].0), child);
    assert_eq!((p.client_sas.len(), p.gateway_sas.len()), (1, 1));

    // On the wire: the rekey and the Delete went on the old SPIs; the Delete was answered.
    let sent = p.sent[sent_before..].to_vec();
    let on = |spis: (u64, u64), to_gateway: bool, exchange: ExchangeType, response: bool| {
        sent.iter()
            .filter(|s| {
                (s.header.initiator_spi, s.header.responder_spi) == spis
                    && s.to_gateway == to_gateway
                    && s.header.exchange == exchange
                    && s.header.flags.response() == response
            })
            .map(|s| s.header.message_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(on(old, true, ExchangeType::CREATE_CHILD_SA, false), [2]);
    assert_eq!(on(old, false, ExchangeType::CREATE_CHILD_SA, true), [2]);
    assert_eq!(on(old, true, ExchangeType::INFORMATIONAL, false), [3]);
    assert_eq!(on(old, false, ExchangeType::INFORMATIONAL, true), [3]);

    // The new SA works both ways with message IDs from 0: a CHILD rekey (keys from the new
    // SK_d on both sides) and the gateway's DPD.
    let now = p.now;
    assert!(p.initiator.rekey_child(now));
    let failures = ping_for(&mut p, Duration::from_secs(45));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(child_rekeys(&p), 1);
    assert_eq!(p.client_sas.len(), 1);
    assert_ne!(p.client_sas[0].0, child.0);
    let sent = p.sent[sent_before..].to_vec();
    let first_request = |to_gateway: bool| {
        sent.iter()
            .find(|s| {
                (s.header.initiator_spi, s.header.responder_spi) == new
                    && s.to_gateway == to_gateway
                    && !s.header.flags.response()
            })
            .map(|s| (s.header.exchange, s.header.message_id))
    };
    assert_eq!(
        first_request(true),
        Some((ExchangeType::CREATE_CHILD_SA, 0))
    );
    assert_eq!(first_request(false), Some((ExchangeType::INFORMATIONAL, 0)));
    assert!(p.initiator.is_established());
    assert!(p.gateway_closed().is_none() && p.client_closed().is_none());

    // The tunnel still ends cleanly, on the new SA.
    let now = p.now;
    p.initiator.disconnect(now);
    assert!(
        p.run_until(Duration::from_secs(10), |p| p.initiator.is_closed()
            && p.gateway_closed().is_some())
    );
    assert!(p.gateway_routes.is_empty());
}

#[test]
fn ike_lifetime_rekeys_on_its_own() {
    let mut p = short_lifetimes(Duration::from_secs(60), Duration::ZERO);
    p.connect();
    let first = p.initiator.spis();
    let failures = ping_for(&mut p, Duration::from_secs(130));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(ike_rekeys(&p), 2);
    assert_eq!(
        count(&p.gateway_events, |e| matches!(
            e,
            IkeEvent::OldIkeSaGone { .. }
        )),
        2
    );
    assert_eq!(child_rekeys(&p), 0, "no CHILD lifetime");
    assert_ne!(p.initiator.spis(), first);
    assert_eq!(p.gateway_routes, vec![p.initiator.spis()]);
    assert!(p.initiator.is_established());
}

#[test]
fn ten_minutes_of_ike_and_child_rekeys_lose_no_packet() {
    let mut p = short_lifetimes(Duration::from_secs(60), Duration::from_secs(30));
    p.connect();
    let failures = ping_for(&mut p, Duration::from_secs(600));
    assert!(failures.is_empty(), "{} lost: {failures:?}", failures.len());
    let (ike, child) = (ike_rekeys(&p), child_rekeys(&p));
    assert!((9..=10).contains(&ike), "{ike} IKE rekeys");
    assert!((18..=20).contains(&child), "{child} CHILD rekeys");
    assert!(p.initiator.is_established());
    assert!(p.gateway_closed().is_none() && p.client_closed().is_none());
    // Nothing piles up: old IKE SAs and CHILD SAs were deleted as they were replaced.
    assert!(p.gateway_routes.len() <= 2, "{:x?}", p.gateway_routes);
    assert!(p.client_sas.len() <= 2 && p.gateway_sas.len() <= 2);
}

#[test]
fn rekeys_survive_a_lossy_link() {
    for seed in 0..6 {
        let mut p = short_lifetimes(Duration::from_secs(60), Duration::from_secs(30));
        p.seed(seed);
        p.link.loss_percent = 10;
        p.link.reorder_percent = 20;
        p.link.dup_percent = 10;
        p.connect();
        let failures = ping_for(&mut p, Duration::from_secs(600));
        // Loss hits IKE only (the pings go straight to the SAs): the data path never lacks
        // the SA it needs, whatever IKE message was lost.
        assert!(failures.is_empty(), "seed {seed}: {failures:?}");
        assert!(
            p.initiator.is_established() && p.gateway_closed().is_none(),
            "seed {seed}: {:?} {:?}",
            p.client_closed(),
            p.gateway_closed()
        );
        assert!(ike_rekeys(&p) >= 8, "seed {seed}: {}", ike_rekeys(&p));
        assert!(child_rekeys(&p) >= 16, "seed {seed}: {}", child_rekeys(&p));
        assert!(p.gateway_routes.len() <= 2, "seed {seed}");
        // Both ends agree on the SA in use (once a rekey in flight completed).
        let agree = p.run_until(Duration::from_secs(35), |p| {
            p.responder.as_ref().unwrap().spis() == p.initiator.spis()
        });
        assert!(agree, "seed {seed}");
    }
}

#[test]
fn ike_rekey_with_another_group_is_retried() {
    let mut p = Pair::new();
    p.connect();
    assert_eq!(p.initiator.suite().unwrap().dh, DhGroup::Curve25519);
    // The gateway was reconfigured: x25519 is no longer acceptable.
    let pki = pki();
    let mut rc = responder_config(&pki.ca, vec![], &pki.gateway);
    rc.policy.dh_groups = vec![DhGroup::Ecp256];
    p.responder.as_mut().unwrap().set_config(Arc::new(rc));
    let old = p.initiator.spis();
    let sent_before = p.sent.len();
    let now = p.now;
    assert!(p.initiator.rekey_ike(now));
    let failures = ping_for(&mut p, Duration::from_secs(5));
    assert!(failures.is_empty(), "{failures:?}");
    assert_ne!(p.initiator.spis(), old);
    assert_eq!(p.initiator.spis(), p.responder.as_ref().unwrap().spis());
    assert_eq!(p.initiator.suite().unwrap().dh, DhGroup::Ecp256);
    assert_eq!(p.responder.as_ref().unwrap().suite().dh, DhGroup::Ecp256);
    // Two requests: x25519 (INVALID_KE_PAYLOAD), then P-256.
    let rekey_requests = p.sent[sent_before..]
        .iter()
        .filter(|s| {
            s.to_gateway
                && s.header.exchange == ExchangeType::CREATE_CHILD_SA
                && !s.header.flags.response()
        })
        .count();
    assert_eq!(rekey_requests, 2);
    assert_eq!(ike_rekeys(&p), 1);
    // The new SA carries a CHILD rekey.
    let now = p.now;
    assert!(p.initiator.rekey_child(now));
    let failures = ping_for(&mut p, Duration::from_secs(5));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(child_rekeys(&p), 1);
}

#[test]
fn gateway_cuts_off_a_client_that_never_rekeys() {
    let (mut rc, mut ic) = default_configs();
    rc.hard_lifetime = Duration::from_secs(120);
    ic.ike_lifetime = Duration::ZERO;
    ic.child_lifetime = Duration::ZERO;
    let mut p = Pair::with(rc, ic);
    p.connect();
    let start = p.now;
    assert!(p.run_until(Duration::from_secs(300), |p| p.initiator.is_closed()));
    let took = p.now - start;
    assert!(
        (Duration::from_secs(119)..=Duration::from_secs(122)).contains(&took),
        "{took:?}"
    );
    let gw = p.gateway_closed().unwrap();
    assert!(gw.contains("hard lifetime"), "{gw}");
    assert!(p.client_closed().unwrap().contains("gateway ended"));
}

#[test]
fn a_client_that_rekeys_outlives_the_hard_lifetime() {
    let (mut rc, mut ic) = default_configs();
    rc.hard_lifetime = Duration::from_secs(90);
    ic.ike_lifetime = Duration::from_secs(60);
    ic.child_lifetime = Duration::from_secs(45);
    let mut p = Pair::with(rc, ic);
    p.connect();
    let failures = ping_for(&mut p, Duration::from_secs(300));
    assert!(failures.is_empty(), "{failures:?}");
    assert!(p.initiator.is_established() && p.gateway_closed().is_none());
    assert!(
        p.client_events
            .iter()
            .all(|e| !matches!(e, InitiatorEvent::Closed(_)))
    );
}
