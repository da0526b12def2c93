//! Memory per IKE SA is bounded (issue 14): a client that rekeys the same CHILD SA over and
//! over, or rekeys in a tight loop without deleting what it replaced, gets no more than
//! [`MAX_CHILDREN`] CHILD SAs; a replaced one goes after [`CHILD_OVERLAP`] even when the client
//! never deletes it; past the limit its IKE SA is deleted. Messages failing their integrity
//! check are counted.

use std::time::Duration;

use super::pair::{Pair, client_addr};
use crate::entropy::SeededEntropy;
use crate::ikev2::crypto::SkKeys;
use crate::ikev2::initiator::InitiatorEvent;
use crate::ikev2::message;
use crate::ikev2::proposal::{Policy, esp_offer};
use crate::ikev2::responder::{CHILD_OVERLAP, IkeEvent, IkeResponder, MAX_CHILDREN};
use crate::wire::ikev2::{
    ExchangeType, Message, NotifyPayload, NotifyType, Payload, ProtocolId, TrafficSelector,
    TsPayload,
};

/// A client that speaks on the pair's IKE SA with its own requests (from message ID 2), or
/// (`gateway`) a gateway speaking to the pair's client (from message ID 0).
struct Crafter {
    spis: (u64, u64),
    sk_in: SkKeys,
    sk_out: SkKeys,
    next_id: u32,
    rng: SeededEntropy,
    gateway: bool,
}

impl Crafter {
    fn new(r: &IkeResponder) -> Self {
        Self::with_role(r, false)
    }

    fn with_role(r: &IkeResponder, gateway: bool) -> Self {
        let (suite, keys) = r.sa_keys_for_fuzzing();
        let i = SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai).expect("keys");
        let o = SkKeys::new(suite.cipher, &keys.sk_er, &keys.sk_ar).expect("keys");
        let (sk_out, sk_in) = if gateway { (o, i) } else { (i, o) };
        Crafter {
            spis: r.spis(),
            sk_out,
            sk_in,
            next_id: if gateway { 0 } else { 2 },
            rng: SeededEntropy::new(77),
            gateway,
        }
    }

    /// Our answer (no payloads) to the other side's request `d`.
    fn answer(&mut self, d: &[u8]) -> Vec<u8> {
        let h = Message::parse(d).expect("parses").header;
        let reply = message::header(
            self.spis.0,
            self.spis.1,
            h.exchange,
            !self.gateway,
            true,
            h.message_id,
        );
        message::seal(&mut self.sk_out, &mut self.rng, reply, &[], false, 4096).remove(0)
    }

    /// CREATE_CHILD_SA rekeying the client's inbound SA `old` to a new inbound SA `new`.
    fn rekey(&mut self, old: u32, new: u32) -> Vec<u8> {
        let old_b = old.to_be_bytes();
        let new_b = new.to_be_bytes();
        let ni = [new as u8; 32];
        let payloads = vec![
            Payload::Notify(NotifyPayload {
                protocol_id: ProtocolId::ESP,
                spi: &old_b,
                notify_type: NotifyType::REKEY_SA,
                data: &[],
            }),
            Payload::Sa(esp_offer(&Policy::default(), &new_b)),
            Payload::Nonce(&ni),
            Payload::TsI(TsPayload::new(vec![TrafficSelector::any_v4()])),
            Payload::TsR(TsPayload::new(vec![TrafficSelector::any_v4()])),
        ];
        self.request(ExchangeType::CREATE_CHILD_SA, &payloads)
    }

    fn request(&mut self, exchange: ExchangeType, payloads: &[Payload<'_>]) -> Vec<u8> {
        let h = message::header(
            self.spis.0,
            self.spis.1,
            exchange,
            !self.gateway,
            false,
            self.next_id,
        );
        self.next_id += 1;
        let mut d = message::seal(&mut self.sk_out, &mut self.rng, h, payloads, false, 4096);
        d.remove(0)
    }

    /// The notify types in the gateway's answer (or its request) `d`.
    fn notifies(&self, d: &[u8]) -> Vec<NotifyType> {
        let msg = Message::parse(d).expect("parses");
        let mut r = message::Reassembly::default();
        let Ok(message::Opened::Complete {
            first_inner,
            plaintext,
        }) = r.open(&self.sk_in, &msg, d)
        else {
            panic!("the gateway's message does not open");
        };
        message::inner(first_inner, &plaintext)
            .expect("inner")
            .iter()
            .filter_map(|p| match p {
                Payload::Notify(n) => Some(n.notify_type),
                _ => None,
            })
            .collect()
    }
}

/// A connected pair, its responder taken out to be driven by hand.
fn connected() -> (Pair, Box<IkeResponder>, u32) {
    let mut p = Pair::new();
    p.connect();
    let client_spi = p.client_sas[0].0;
    let mut r = p.responder.take().expect("responder");
    while r.poll_event().is_some() {}
    while r.poll_transmit().is_some() {}
    (p, r, client_spi)
}

fn events(r: &mut IkeResponder) -> Vec<IkeEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

fn answers(r: &mut IkeResponder) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| r.poll_transmit())
        .map(|t| t.data)
        .collect()
}

#[test]
fn rekeying_the_same_child_sa_again_and_again_makes_one_new_one() {
    let (p, mut r, client_spi) = connected();
    let mut c = Crafter::new(&r);
    let from = client_addr(true);
    let mut ups = 0;
    for i in 0..50u32 {
        let m = c.rekey(client_spi, 0x7000_0000 + i);
        r.handle_message(p.now, from, true, &m);
        ups += events(&mut r)
            .iter()
            .filter(|e| matches!(e, IkeEvent::ChildUp { .. }))
            .count();
        let a = answers(&mut r);
        assert_eq!(a.len(), 1, "request {i} unanswered");
        if i > 0 {
            assert_eq!(c.notifies(&a[0]), [NotifyType::TEMPORARY_FAILURE]);
        }
    }
    assert_eq!(ups, 1, "a replaced CHILD SA was rekeyed again");
    assert_eq!(r.child_count(), 2, "the new one and the one it replaced");
    // The client never deletes the replaced SA: it goes after the overlap, and the client is
    // told.
    let later = p.now + CHILD_OVERLAP;
    assert!(r.poll_timeout().is_some_and(|t| t <= later));
    r.handle_timeout(later);
    assert_eq!(r.child_count(), 1);
    let down: Vec<IkeEvent> = events(&mut r);
    assert!(
        matches!(down.as_slice(), [IkeEvent::ChildDown { .. }]),
        "{down:?}"
    );
    let delete = answers(&mut r);
    assert_eq!(delete.len(), 1, "no Delete sent for the expired SA");
    assert!(!r.is_closed());
}

#[test]
fn a_rekey_loop_without_deletes_is_cut_off_at_the_limit() {
    let (p, mut r, client_spi) = connected();
    let mut c = Crafter::new(&r);
    let from = client_addr(true);
    let mut old = client_spi;
    let mut closed = None;
    let mut made = 0;
    for i in 0..100u32 {
        let new = 0x7100_0000 + i;
        let m = c.rekey(old, new);
        r.handle_message(p.now + Duration::from_millis(u64::from(i)), from, true, &m);
        for e in events(&mut r) {
            match e {
                IkeEvent::ChildUp { .. } => made += 1,
                IkeEvent::Closed(reason) => closed = Some(reason),
                _ => {}
            }
        }
        answers(&mut r);
        assert!(r.child_count() <= MAX_CHILDREN);
        if closed.is_some() {
            break;
        }
        old = new;
    }
    let reason = closed.expect("the IKE SA of a client rekeying in a loop was not deleted");
    assert!(reason.contains("too many CHILD SAs"), "{reason}");
    assert_eq!(made, MAX_CHILDREN - 1);
}

#[test]
fn rekeys_slower_than_the_overlap_go_on_forever() {
    let (p, mut r, client_spi) = connected();
    let mut c = Crafter::new(&r);
    let from = client_addr(true);
    let mut old = client_spi;
    let mut now = p.now;
    for i in 0..40u32 {
        let new = 0x7200_0000 + i;
        let m = c.rekey(old, new);
        r.handle_message(now, from, true, &m);
        assert!(
            events(&mut r)
                .iter()
                .any(|e| matches!(e, IkeEvent::ChildUp { .. })),
            "rekey {i} refused"
        );
        answers(&mut r);
        now += CHILD_OVERLAP + Duration::from_secs(1);
        r.handle_timeout(now);
        // Our Delete of the replaced SA: the client answers it.
        for d in answers(&mut r) {
            let a = c.answer(&d);
            r.handle_message(now, from, true, &a);
        }
        events(&mut r);
        assert_eq!(r.child_count(), 1, "after rekey {i}");
        old = new;
    }
    assert!(!r.is_closed());
}

#[test]
fn messages_failing_the_integrity_check_are_counted() {
    let (p, mut r, client_spi) = connected();
    let mut c = Crafter::new(&r);
    let mut m = c.rekey(client_spi, 0x7300_0001);
    let last = m.len() - 1;
    m[last] ^= 1;
    r.handle_message(p.now, client_addr(true), true, &m);
    assert!(answers(&mut r).is_empty());
    assert_eq!(r.take_discards().integrity, 1);
    assert_eq!(r.take_discards().integrity, 0, "taken");
    assert_eq!(r.child_count(), 1);
}

/// The client side (a site SA we started, rekeyed by the other gateway) is bounded the same
/// way: a CHILD SA the peer replaced and did not delete goes after the overlap, and a peer
/// rekeying in a loop gets the IKE SA deleted.
#[test]
fn our_side_deletes_what_the_peer_replaced_and_did_not_delete() {
    let (mut p, r, _) = connected();
    let mut g = Crafter::with_role(&r, true);
    let gateway_spi = p.gateway_sas[0].0;
    let now = p.now;
    let m = g.rekey(gateway_spi, 0x7400_0001);
    p.initiator.handle_message(now, &m);
    let out: Vec<Vec<u8>> = std::iter::from_fn(|| p.initiator.poll_transmit())
        .map(|t| t.data)
        .collect();
    assert_eq!(out.len(), 1, "the rekey was not answered");
    assert!(
        g.notifies(&out[0]).is_empty(),
        "refused: {:?}",
        g.notifies(&out[0])
    );
    let rekeyed: Vec<_> = std::iter::from_fn(|| p.initiator.poll_event()).collect();
    assert!(
        rekeyed
            .iter()
            .any(|e| matches!(e, InitiatorEvent::ChildRekeyed { .. })),
        "{rekeyed:?}"
    );
    // The peer never deletes the replaced SA: we do, after the overlap.
    let later = now + CHILD_OVERLAP;
    assert!(p.initiator.poll_timeout().is_some_and(|t| t <= later));
    p.initiator.handle_timeout(later);
    let delete = p
        .initiator
        .poll_transmit()
        .expect("no Delete for the replaced SA");
    let a = g.answer(&delete.data);
    p.initiator.handle_message(later, &a);
    let gone: Vec<_> = std::iter::from_fn(|| p.initiator.poll_event()).collect();
    assert!(
        gone.iter()
            .any(|e| matches!(e, InitiatorEvent::ChildDeleted { .. })),
        "{gone:?}"
    );
    assert!(p.initiator.is_established());
}

#[test]
fn our_side_ends_a_peers_rekey_loop() {
    let (mut p, r, _) = connected();
    let mut g = Crafter::with_role(&r, true);
    let mut old = p.gateway_sas[0].0;
    let now = p.now;
    let mut refused = None;
    for i in 0..100u32 {
        let new = 0x7500_0000 + i;
        let m = g.rekey(old, new);
        p.initiator.handle_message(now, &m);
        let out: Vec<Vec<u8>> = std::iter::from_fn(|| p.initiator.poll_transmit())
            .map(|t| t.data)
            .collect();
        assert!(!out.is_empty(), "rekey {i} unanswered");
        if g.notifies(&out[0]).contains(&NotifyType::NO_ADDITIONAL_SAS) {
            // Refused, and our Delete of the IKE SA follows.
            assert!(out.len() >= 2, "no Delete after the refusal");
            refused = Some(i as usize);
            break;
        }
        old = new;
    }
    assert_eq!(refused, Some(MAX_CHILDREN - 1), "a peer rekeying in a loop");
}
