//! After the handshake: liveness checks, CHILD SA rekeying and the two ways a tunnel ends.

use std::time::Duration;

use super::pair::Pair;
use crate::ikev2::initiator::InitiatorEvent;
use crate::ikev2::responder::IkeEvent;

#[test]
fn dpd_keeps_an_idle_tunnel_up() {
    let mut p = Pair::new();
    p.connect();
    let before = p.stats.clone();
    p.run_for(Duration::from_secs(600));
    assert!(p.initiator.is_established());
    assert!(!p.responder.as_ref().unwrap().is_closed());
    assert!(p.client_closed().is_none() && p.gateway_closed().is_none());
    // Checks went both ways (each side's DPD plus the answer), about one per 30 s.
    let exchanged = p.stats.to_gateway - before.to_gateway;
    assert!((15..=60).contains(&exchanged), "{exchanged}");
    let up = p.client_to_gateway(b"still there").unwrap();
    assert_eq!(&up[20..], b"still there");
}

#[test]
fn dpd_detects_a_dead_gateway() {
    let mut p = Pair::new();
    p.connect();
    let start = p.now;
    p.link.block_to_client = true;
    p.link.block_to_gateway = true;
    assert!(p.run_until(Duration::from_secs(300), |p| p.initiator.is_closed()));
    let reason = p.client_closed().unwrap();
    assert!(reason.contains("stopped answering"), "{reason}");
    // 30 s of silence, then 31 s of retransmissions.
    let took = p.now - start;
    assert!(took <= Duration::from_secs(62), "{took:?}");
    assert!(
        !p.client_events
            .iter()
            .any(|e| matches!(e, InitiatorEvent::AuthFailed(_)))
    );
}

#[test]
fn gateway_activity_postpones_dpd() {
    let mut p = Pair::new();
    p.connect();
    let before = p.stats.to_gateway;
    for _ in 0..5 {
        p.run_for(Duration::from_secs(20));
        let now = p.now;
        p.initiator.note_activity(now);
        let gw = p.responder.as_mut().unwrap();
        gw.note_activity(now, super::pair::client_addr(true));
    }
    assert_eq!(p.stats.to_gateway, before, "no DPD while ESP flows");
}

#[test]
fn child_rekey_keeps_data_flowing() {
    let mut p = Pair::new();
    p.connect();
    let old_gw_spi = p.gateway_sas[0].0;
    let old_client_spi = p.client_sas[0].0;
    p.client_to_gateway(b"before").unwrap();
    let now = p.now;
    assert!(p.initiator.rekey_child(now));
    assert!(!p.initiator.rekey_child(now), "one rekey at a time");
    assert!(p.run_until(Duration::from_secs(10), |p| p.client_sas.len() == 2));
    let Some(InitiatorEvent::ChildRekeyed { old_our_spi, .. }) = p
        .client_events
        .iter()
        .find(|e| matches!(e, InitiatorEvent::ChildRekeyed { .. }))
    else {
        unreachable!()
    };
    assert_eq!(*old_our_spi, old_client_spi);
    // The gateway may still send on the old SA until the delete: it still decrypts.
    let late = p.gateway_to_client(Some(old_gw_spi), b"late").unwrap();
    assert_eq!(&late[20..], b"late");
    // The client sends on the new SA at once.
    let up = p.client_to_gateway(b"new").unwrap();
    assert_eq!(&up[20..], b"new");
    assert!(
        p.run_until(Duration::from_secs(10), |p| p.client_sas.len() == 1
            && p.gateway_sas.len() == 1)
    );
    assert_ne!(p.client_sas[0].0, old_client_spi);
    assert!(p.gateway_events.iter().any(|e| matches!(
        e,
        IkeEvent::ChildDown { our_spi } if *our_spi == old_gw_spi
    )));
    assert!(p.client_events.iter().any(|e| matches!(
        e,
        InitiatorEvent::ChildDeleted { our_spi } if *our_spi == old_client_spi
    )));
    let down = p.gateway_to_client(None, b"after").unwrap();
    assert_eq!(&down[20..], b"after");
    let up = p.client_to_gateway(b"after").unwrap();
    assert_eq!(&up[20..], b"after");
    // A second rekey works as well.
    let now = p.now;
    assert!(p.initiator.rekey_child(now));
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.client_events
            .iter()
            .filter(|e| matches!(e, InitiatorEvent::ChildDeleted { .. }))
            .count()
            == 2
    }));
    assert_eq!(p.client_sas.len(), 1);
    p.client_to_gateway(b"third").unwrap();
    p.gateway_to_client(None, b"third").unwrap();
}

#[test]
fn client_disconnect_closes_both_sides() {
    let mut p = Pair::new();
    p.connect();
    let now = p.now;
    p.initiator.disconnect(now);
    assert!(p.run_until(Duration::from_secs(10), |p| p.initiator.is_closed()));
    assert_eq!(p.client_closed(), Some("disconnected"));
    let gw = p.gateway_closed().unwrap();
    assert!(gw.contains("disconnect"), "{gw}");
    assert_eq!(p.initiator.poll_timeout(), None);
}

#[test]
fn disconnect_without_answer_gives_up_quickly() {
    let mut p = Pair::new();
    p.connect();
    p.link.block_to_gateway = true;
    let start = p.now;
    p.initiator.disconnect(start);
    assert!(p.run_until(Duration::from_secs(60), |p| p.initiator.is_closed()));
    assert!(p.now - start <= Duration::from_secs(8));
}

#[test]
fn gateway_delete_closes_the_client() {
    let mut p = Pair::new();
    p.connect();
    let now = p.now;
    p.responder
        .as_mut()
        .unwrap()
        .delete(now, "operator kicked alice");
    assert!(p.run_until(Duration::from_secs(10), |p| p.initiator.is_closed()));
    let reason = p.client_closed().unwrap();
    assert!(reason.contains("gateway ended"), "{reason}");
}

#[test]
fn silent_gateway_during_handshake() {
    let mut p = Pair::new();
    p.link.block_to_client = true;
    assert!(p.run_until(Duration::from_secs(60), |p| p.initiator.is_closed()));
    let reason = p.client_closed().unwrap();
    assert!(reason.contains("did not answer IKE_SA_INIT"), "{reason}");
    assert_eq!(p.stats.to_gateway, 5, "1 + 4 retransmissions");
}
