//! Hostile or broken input never panics the client and never tears down its tunnel: garbage,
//! truncated messages, encrypted payloads that fail their integrity check, and spoofed
//! IKE_SA_INIT errors are dropped.

use std::time::Duration;

use super::pair::Pair;
use crate::entropy::{Entropy, SeededEntropy};
use crate::ikev2::message;
use crate::wire::ikev2::{ExchangeType, NotifyPayload, NotifyType, Payload};

#[test]
fn spoofed_init_errors_for_another_spi_are_ignored() {
    let mut p = Pair::new();
    let (spi_i, _) = p.initiator.spis();
    let forged = message::plain(
        message::header(spi_i ^ 1, 0, ExchangeType::IKE_SA_INIT, false, true, 0),
        vec![Payload::Notify(NotifyPayload::new(
            NotifyType::NO_PROPOSAL_CHOSEN,
            &[],
        ))],
    );
    let now = p.now;
    p.initiator.handle_message(now, &forged);
    p.connect();
}

#[test]
fn garbage_and_tampered_messages_change_nothing() {
    let mut p = Pair::new();
    p.connect();
    let (spi_i, spi_r) = p.initiator.spis();
    let mut rng = SeededEntropy::new(5);
    let now = p.now;
    for len in [0usize, 1, 27, 28, 29, 60, 200, 1500] {
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk);
        p.initiator.handle_message(now, &junk);
        // The right SPIs and a plausible header, then junk.
        if len >= 28 {
            junk[..8].copy_from_slice(&spi_i.to_be_bytes());
            junk[8..16].copy_from_slice(&spi_r.to_be_bytes());
            junk[17] = 0x20;
            junk[24..28].copy_from_slice(&(len as u32).to_be_bytes());
            for exchange in [34u8, 35, 36, 37] {
                for flags in [0x00u8, 0x20] {
                    junk[18] = exchange;
                    junk[19] = flags;
                    junk[16] = 46;
                    p.initiator.handle_message(now, &junk);
                }
            }
        }
    }
    assert!(p.initiator.poll_event().is_none());
    assert!(p.initiator.is_established());
    // The junk did not disturb message IDs or windows: after a stretch in which the gateway's
    // datagrams are lost, both sides' DPDs recover through retransmission.
    p.link.block_to_client = true;
    p.run_for(Duration::from_secs(31));
    p.link.block_to_client = false;
    p.run_for(Duration::from_secs(120));
    assert!(p.initiator.is_established(), "{:?}", p.client_events);
    assert!(p.gateway_closed().is_none());
}
