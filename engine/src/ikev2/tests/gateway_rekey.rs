//! A gateway that rekeys by itself, as strongSwan does (CHILD SAs after 1 h, IKE SAs after
//! 4 h by default): the client answers its CHILD SA rekeys (with and without PFS) and its IKE
//! SA rekeys (becoming the responder of the new IKE SA), and when both ends rekey the same
//! SA at once exactly one new SA remains on both sides and traffic never stops. The gateway
//! side is played by the responder's hidden test hooks.

use std::time::Duration;

use super::pair::{Pair, default_configs};
use super::rekey::{count, ping_for};
use crate::ikev2::initiator::InitiatorEvent;
use crate::ikev2::responder::IkeEvent;
use crate::wire::ikev2::ExchangeType;

fn gateway_child_rekeys(p: &Pair) -> usize {
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

fn client_child_rekeys(p: &Pair) -> usize {
    count(&p.client_events, |e| {
        matches!(e, InitiatorEvent::ChildRekeyed { .. })
    })
}

/// A pair whose lifetimes never fire (every rekey here is started by hand), with the
/// client's and the gateway's entropy seeded by `seed` (their nonces differ per seed).
fn pair(seed: u64) -> Pair {
    let (rc, mut ic) = default_configs();
    ic.ike_lifetime = Duration::ZERO;
    ic.child_lifetime = Duration::ZERO;
    let mut p = Pair::with_seeds(rc, ic, 1000 + seed, 2000 + seed);
    p.connect();
    p
}

/// The tunnel is healthy: up on both ends, one CHILD SA each (the same pair), the same
/// IKE SA, nothing replaced left over.
fn assert_settled(p: &mut Pair) {
    assert!(p.initiator.is_established());
    assert!(p.client_closed().is_none() && p.gateway_closed().is_none());
    assert_eq!(
        p.client_sas.len(),
        1,
        "client SAs: {:x?}",
        spis(&p.client_sas)
    );
    assert_eq!(
        p.gateway_sas.len(),
        1,
        "gateway SAs: {:x?}",
        spis(&p.gateway_sas)
    );
    let gw = p.responder.as_ref().unwrap();
    assert_eq!(gw.spis(), p.initiator.spis());
    assert_eq!(gw.old_spis().count(), 0);
    assert_eq!(p.initiator.old_ike_sas(), 0);
    assert_eq!(p.gateway_routes, vec![p.initiator.spis()]);
    p.ping(b"settled").unwrap();
}

fn spis(sas: &[(u32, crate::esp::EspSa)]) -> Vec<u32> {
    sas.iter().map(|(s, _)| *s).collect()
}

#[test]
fn gateway_child_rekeys_are_answered_with_and_without_pfs() {
    for pfs in [false, true] {
        let mut p = pair(0);
        let old_client = p.client_sas[0].0;
        let old_gateway = p.gateway_sas[0].0;
        let sent_before = p.sent.len();
        let now = p.now;
        assert!(
            p.responder
                .as_mut()
                .unwrap()
                .start_child_rekey_for_tests(now, pfs)
        );
        let failures = ping_for(&mut p, Duration::from_secs(5));
        assert!(failures.is_empty(), "pfs {pfs}: {failures:?}");
        assert_settled(&mut p);
        assert_ne!(p.client_sas[0].0, old_client);
        assert_ne!(p.gateway_sas[0].0, old_gateway);
        // Reported like a rekey of ours: the new SA, then the old one gone.
        let rekeyed = p.client_events.iter().find_map(|e| match e {
            InitiatorEvent::ChildRekeyed {
                old_our_spi,
                our_spi,
                ..
            } => Some((*old_our_spi, *our_spi)),
            _ => None,
        });
        assert_eq!(rekeyed, Some((old_client, p.client_sas[0].0)));
        assert!(p.client_events.iter().any(
            |e| matches!(e, InitiatorEvent::ChildDeleted { our_spi } if *our_spi == old_client)
        ));
        assert_eq!(gateway_child_rekeys(&p), 1);
        // The gateway's requests: the rekey, then the Delete of the old SA; the client sent
        // only answers.
        let sent = &p.sent[sent_before..];
        let requests = |to_gateway: bool| {
            sent.iter()
                .filter(|s| s.to_gateway == to_gateway && !s.header.flags.response())
                .map(|s| s.header.exchange)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            requests(false),
            [ExchangeType::CREATE_CHILD_SA, ExchangeType::INFORMATIONAL]
        );
        assert!(requests(true).is_empty(), "{:?}", requests(true));
        // And the next rekey, ours, replaces the gateway's SA.
        let now = p.now;
        assert!(p.initiator.rekey_child(now));
        let failures = ping_for(&mut p, Duration::from_secs(5));
        assert!(failures.is_empty(), "pfs {pfs}: {failures:?}");
        assert_settled(&mut p);
        assert_eq!(gateway_child_rekeys(&p), 2);
    }
}

#[test]
fn gateway_ike_rekey_makes_the_gateway_initiator_of_the_new_sa() {
    let mut p = pair(0);
    let old = p.initiator.spis();
    let child = (p.client_sas[0].0, p.gateway_sas[0].0);
    let sent_before = p.sent.len();
    let now = p.now;
    assert!(p.responder.as_mut().unwrap().start_ike_rekey_for_tests(now));
    let failures = ping_for(&mut p, Duration::from_secs(5));
    assert!(failures.is_empty(), "{failures:?}");
    assert_settled(&mut p);
    let new = p.initiator.spis();
    assert!(new.0 != old.0 && new.1 != old.1, "{old:x?} -> {new:x?}");
    assert!(!p.initiator.is_ike_initiator());
    // The CHILD SA did not change.
    assert_eq!((p.client_sas[0].0, p.gateway_sas[0].0), child);
    // The gateway deleted the old SA (it started the rekey); the client only answered.
    assert!(
        p.gateway_events
            .iter()
            .any(|e| matches!(e, IkeEvent::OldIkeSaGone { spis } if *spis == old))
    );
    let sent = p.sent[sent_before..].to_vec();
    assert!(
        sent.iter()
            .filter(|s| s.to_gateway)
            .all(|s| s.header.flags.response()),
        "the client sent only answers"
    );

    // On the new SA the gateway is the initiator: its messages carry the initiator flag,
    // ours do not, whoever sends the request. A CHILD rekey of ours (keys from the new
    // SK_d) and the gateway's DPD go through.
    let now = p.now;
    assert!(p.initiator.rekey_child(now));
    let failures = ping_for(&mut p, Duration::from_secs(45));
    assert!(failures.is_empty(), "{failures:?}");
    assert_settled(&mut p);
    assert_eq!(gateway_child_rekeys(&p), 1);
    let on_new: Vec<_> = p.sent[sent_before..]
        .iter()
        .filter(|s| (s.header.initiator_spi, s.header.responder_spi) == new)
        .copied()
        .collect();
    assert!(
        on_new
            .iter()
            .any(|s| s.to_gateway && !s.header.flags.response())
    );
    assert!(
        on_new
            .iter()
            .any(|s| !s.to_gateway && !s.header.flags.response())
    );
    assert!(
        on_new
            .iter()
            .all(|s| s.header.flags.initiator() != s.to_gateway),
        "{on_new:?}"
    );

    // Our own IKE rekey from there makes us the initiator again.
    let now = p.now;
    assert!(p.initiator.rekey_ike(now));
    let failures = ping_for(&mut p, Duration::from_secs(5));
    assert!(failures.is_empty(), "{failures:?}");
    assert_settled(&mut p);
    assert!(p.initiator.is_ike_initiator());
    assert_ne!(p.initiator.spis(), new);

    let now = p.now;
    p.initiator.disconnect(now);
    assert!(
        p.run_until(Duration::from_secs(10), |p| p.initiator.is_closed()
            && p.gateway_closed().is_some())
    );
    assert!(p.gateway_routes.is_empty());
}

#[test]
fn simultaneous_child_rekeys_leave_one_new_sa() {
    let mut outcomes = [0, 0];
    for seed in 0..8 {
        let mut p = pair(seed);
        let old_client = p.client_sas[0].0;
        let now = p.now;
        assert!(p.initiator.rekey_child(now));
        assert!(
            p.responder
                .as_mut()
                .unwrap()
                .start_child_rekey_for_tests(now, seed % 2 == 1)
        );
        let failures = ping_for(&mut p, Duration::from_secs(10));
        assert!(failures.is_empty(), "seed {seed}: {failures:?}");
        assert_settled(&mut p);
        // Both exchanges completed on both sides.
        assert_eq!(gateway_child_rekeys(&p), 2, "seed {seed}");
        assert_ne!(p.client_sas[0].0, old_client);
        // The client reports the gateway's SA at once; its own only if it survives, so the
        // driver's last ChildRekeyed names the SA that stays.
        let last = p.client_events.iter().rev().find_map(|e| match e {
            InitiatorEvent::ChildRekeyed { our_spi, .. } => Some(*our_spi),
            _ => None,
        });
        assert_eq!(last, Some(p.client_sas[0].0), "seed {seed}");
        outcomes[client_child_rekeys(&p) - 1] += 1;
        // No event names an SA the driver never got.
        for e in &p.client_events {
            if let InitiatorEvent::ChildDeleted { our_spi } = e {
                assert!(
                    p.client_events.iter().any(|r| matches!(r,
                        InitiatorEvent::ChildRekeyed { our_spi: s, .. }
                        | InitiatorEvent::Connected { our_spi: s, .. } if s == our_spi)),
                    "seed {seed}: {our_spi:x} deleted, never announced"
                );
            }
        }
        // The survivor rekeys normally afterwards.
        let now = p.now;
        assert!(p.initiator.rekey_child(now), "seed {seed}");
        let failures = ping_for(&mut p, Duration::from_secs(5));
        assert!(failures.is_empty(), "seed {seed}: {failures:?}");
        assert_settled(&mut p);
    }
    // Both ways of resolving it happened: the gateway's SA stayed (1 ChildRekeyed), ours
    // stayed (2).
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

#[test]
fn simultaneous_ike_rekeys_leave_one_new_sa() {
    let mut outcomes = [0, 0];
    for seed in 0..8 {
        let mut p = pair(seed);
        let old = p.initiator.spis();
        let child = (p.client_sas[0].0, p.gateway_sas[0].0);
        let now = p.now;
        assert!(p.initiator.rekey_ike(now));
        assert!(p.responder.as_mut().unwrap().start_ike_rekey_for_tests(now));
        let failures = ping_for(&mut p, Duration::from_secs(10));
        assert!(failures.is_empty(), "seed {seed}: {failures:?}");
        assert_settled(&mut p);
        let new = p.initiator.spis();
        assert!(new.0 != old.0 && new.1 != old.1, "seed {seed}");
        assert_eq!((p.client_sas[0].0, p.gateway_sas[0].0), child);
        outcomes[usize::from(p.initiator.is_ike_initiator())] += 1;
        // The surviving SA carries the next exchanges: a CHILD rekey, then IKE rekeys by
        // the gateway and by us.
        let now = p.now;
        assert!(p.initiator.rekey_child(now), "seed {seed}");
        let failures = ping_for(&mut p, Duration::from_secs(5));
        assert!(failures.is_empty(), "seed {seed}: {failures:?}");
        assert_settled(&mut p);
        assert_eq!(gateway_child_rekeys(&p), 1);
        let now = p.now;
        assert!(p.responder.as_mut().unwrap().start_ike_rekey_for_tests(now));
        p.run_for(Duration::from_secs(2));
        let now = p.now;
        assert!(p.initiator.rekey_ike(now));
        let failures = ping_for(&mut p, Duration::from_secs(5));
        assert!(failures.is_empty(), "seed {seed}: {failures:?}");
        assert_settled(&mut p);
        assert!(p.initiator.is_ike_initiator());
    }
    // Both ways: the gateway's new SA stayed (we are its responder), ours stayed.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

#[test]
fn a_child_rekey_refused_while_the_gateway_rekeys_the_ike_sa_is_retried() {
    let (rc, mut ic) = default_configs();
    ic.ike_lifetime = Duration::ZERO;
    ic.child_lifetime = Duration::from_secs(3600);
    let mut p = Pair::with(rc, ic);
    p.connect();
    let old = p.initiator.spis();
    let now = p.now;
    // Crossing requests: each end is busy with its own and refuses the other's for now
    // (RFC 7296 2.25).
    assert!(p.initiator.rekey_child(now));
    assert!(p.responder.as_mut().unwrap().start_ike_rekey_for_tests(now));
    let failures = ping_for(&mut p, Duration::from_secs(5));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(p.initiator.spis(), old, "both were refused");
    assert_eq!(gateway_child_rekeys(&p), 0);
    // The client tries its CHILD rekey again 30 s later; the gateway's IKE rekey succeeds
    // whenever it retries.
    let failures = ping_for(&mut p, Duration::from_secs(30));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(gateway_child_rekeys(&p), 1);
    assert_eq!(client_child_rekeys(&p), 1);
    assert_settled(&mut p);
    let now = p.now;
    assert!(p.responder.as_mut().unwrap().start_ike_rekey_for_tests(now));
    let failures = ping_for(&mut p, Duration::from_secs(5));
    assert!(failures.is_empty(), "{failures:?}");
    assert_settled(&mut p);
    assert_ne!(p.initiator.spis(), old);
}
