//! A bad network: loss, reordering and duplication over many seeds. The tunnel still comes
//! up, rekeys and goes down cleanly, and nothing is processed twice.

use std::time::Duration;

use super::pair::Pair;
use crate::ikev2::initiator::InitiatorEvent;
use crate::ikev2::responder::IkeEvent;

#[test]
fn handshake_rekey_and_disconnect_survive_a_bad_link() {
    for seed in 0..40 {
        let mut p = Pair::new();
        p.seed(seed);
        p.link.loss_percent = 15;
        p.link.reorder_percent = 25;
        p.link.dup_percent = 15;
        p.connect();
        let up = p.client_to_gateway(b"hello").unwrap();
        assert_eq!(&up[20..], b"hello", "seed {seed}");
        let now = p.now;
        assert!(p.initiator.rekey_child(now));
        let rekeyed = p.run_until(Duration::from_secs(120), |p| {
            p.client_events
                .iter()
                .any(|e| matches!(e, InitiatorEvent::ChildDeleted { .. }))
        });
        assert!(
            rekeyed,
            "seed {seed}: {:?} {:?}",
            p.client_events, p.gateway_events
        );
        assert_eq!(p.client_sas.len(), 1, "seed {seed}");
        p.gateway_to_client(None, b"after").unwrap();
        p.client_to_gateway(b"after").unwrap();
        // Each exchange happened once on the gateway, duplicates notwithstanding.
        let ups = p
            .gateway_events
            .iter()
            .filter(|e| matches!(e, IkeEvent::ChildUp { .. }))
            .count();
        assert_eq!(ups, 2, "seed {seed}");
        let now = p.now;
        p.initiator.disconnect(now);
        let closed = p.run_until(Duration::from_secs(60), |p| {
            p.initiator.is_closed() && p.gateway_closed().is_some()
        });
        assert!(
            closed,
            "seed {seed}: {:?} {:?}",
            p.client_events, p.gateway_events
        );
        assert!(
            p.client_events
                .iter()
                .all(|e| !matches!(e, InitiatorEvent::AuthFailed(_))),
            "seed {seed}"
        );
    }
}
