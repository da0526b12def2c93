//! MOBIKE (RFC 4555) on the gateway: a client that offers MOBIKE_SUPPORTED gets it back, one
//! that does not never does; an UPDATE_SA_ADDRESSES from a new address moves the SA there
//! (answers, DPD) and is answered with NAT detection and the COOKIE2 echo, the way
//! strongSwan 5.9 sends it and checks the answer; a forged or out-of-order one moves nothing.
//!
//! Our initiator does not speak MOBIKE, so these tests play the client's MOBIKE part by
//! hand: the handshake runs between [`IkeInitiator`] and the gateway's [`IkeResponder`]
//! directly (no link), with MOBIKE_SUPPORTED added to the client's IKE_AUTH on the way
//! (the notify is outside what AUTH signs), and the later INFORMATIONAL requests are sealed
//! with the client's keys as strongSwan would send them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pair::{assignment, client_addr, default_configs, gateway_addr};
use crate::entropy::SeededEntropy;
use crate::ikev2::crypto::SkKeys;
use crate::ikev2::crypto::natd::natd_hash;
use crate::ikev2::initiator::{IkeInitiator, InitiatorEvent};
use crate::ikev2::message::{self, Opened, Reassembly};
use crate::ikev2::responder::{IkeEvent, IkeResponder, InitOutcome, Transmit, respond_to_init};
use crate::wire::ikev2::{ExchangeType, Message, NotifyPayload, NotifyType, Payload};

/// Where the client moves to (cellular instead of Wi-Fi), NAT-T port as strongSwan uses it.
fn new_addr() -> SocketAddr {
    "203.0.113.7:4500".parse().unwrap()
}

/// An attacker's address.
fn attacker() -> SocketAddr {
    "198.18.0.66:4500".parse().unwrap()
}

/// A COOKIE2 as strongSwan makes it (16 random bytes).
const COOKIE2: [u8; 16] = *b"cookie2-16-bytes";

/// The client's MOBIKE side, played by hand, and the gateway's SA.
struct Mobile {
    now: Instant,
    gateway: Box<IkeResponder>,
    /// The client's SK keys (initiator to responder) for requests it seals.
    sk_i: SkKeys,
    /// The gateway's SK keys (responder to initiator) for reading its answers.
    sk_r: SkKeys,
    entropy: SeededEntropy,
    /// The gateway's decrypted IKE_AUTH response.
    auth_response: Vec<(NotifyType, Vec<u8>)>,
    /// The next message ID of the client's requests.
    next_id: u32,
}

fn transmits(r: &mut IkeResponder) -> Vec<Transmit> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

/// Notifications (type, data) of a decrypted message's inner payloads.
fn notifies(payloads: &[Payload<'_>]) -> Vec<(NotifyType, Vec<u8>)> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Notify(n) => Some((n.notify_type, n.data.to_vec())),
            _ => None,
        })
        .collect()
}

fn has(n: &[(NotifyType, Vec<u8>)], t: NotifyType) -> bool {
    n.iter().any(|(x, _)| *x == t)
}

fn data(n: &[(NotifyType, Vec<u8>)], t: NotifyType) -> Option<&[u8]> {
    n.iter().find(|(x, _)| *x == t).map(|(_, d)| d.as_slice())
}

impl Mobile {
    /// Connects a client from [`client_addr`] (NAT-T), offering MOBIKE when `offer`.
    fn connect(offer: bool) -> Mobile {
        let (rc, ic) = default_configs();
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut client = IkeInitiator::new(
            Arc::new(ic),
            Box::new(SeededEntropy::new(11)),
            now,
            gateway_addr(),
        );
        let init = client.poll_transmit().expect("IKE_SA_INIT request");
        let InitOutcome::Session(mut gateway) = respond_to_init(
            Arc::new(rc),
            Box::new(SeededEntropy::new(12)),
            now,
            client_addr(init.nat_t),
            init.nat_t,
            &init.data,
            None,
        ) else {
            panic!("IKE_SA_INIT refused");
        };
        for t in transmits(&mut gateway) {
            client.handle_message(now, &t.data);
        }
        let (suite, keys) = gateway.sa_keys_for_fuzzing();
        let sk_i = SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai).unwrap();
        let sk_r = SkKeys::new(suite.cipher, &keys.sk_er, &keys.sk_ar).unwrap();
        let mut m = Mobile {
            now,
            gateway,
            sk_i,
            sk_r,
            entropy: SeededEntropy::new(13),
            auth_response: Vec::new(),
            next_id: 2,
        };

        // The client's IKE_AUTH (maybe in fragments), opened with its keys, MOBIKE_SUPPORTED
        // added when it is to be offered, and sealed again as one message.
        let auth: Vec<Transmit> = std::iter::from_fn(|| client.poll_transmit()).collect();
        assert!(!auth.is_empty(), "no IKE_AUTH request");
        let nat_t = auth[0].nat_t;
        let plain = m.open_all(&auth, true);
        let parsed = message::inner(plain.0, &plain.1).unwrap();
        let mut payloads: Vec<Payload<'_>> = parsed.clone();
        assert!(!has(&notifies(&payloads), NotifyType::MOBIKE_SUPPORTED));
        if offer {
            payloads.push(Payload::Notify(NotifyPayload::new(
                NotifyType::MOBIKE_SUPPORTED,
                &[],
            )));
            // strongSwan adds its address list right after it.
            payloads.push(Payload::Notify(NotifyPayload::new(
                NotifyType::NO_ADDITIONAL_ADDRESSES,
                &[],
            )));
        }
        let (spi_i, spi_r) = m.gateway.spis();
        let header = message::header(spi_i, spi_r, ExchangeType::IKE_AUTH, true, false, 1);
        let sealed = message::seal(&mut m.sk_i, &mut m.entropy, header, &payloads, false, 0);
        for d in &sealed {
            m.gateway.handle_message(now, client_addr(nat_t), nat_t, d);
        }
        let mut accepted = false;
        while let Some(e) = m.gateway.poll_event() {
            if let IkeEvent::Authenticated { .. } = e {
                m.gateway.accept(now, assignment());
                accepted = true;
            }
        }
        assert!(accepted, "the gateway did not authenticate the client");
        let response = transmits(&mut m.gateway);
        let (first, text) = m.open_all(&response, false);
        m.auth_response = notifies(&message::inner(first, &text).unwrap());
        // The client accepts the answer (the notifies it does not know change nothing).
        for t in &response {
            client.handle_message(now, &t.data);
        }
        let connected = std::iter::from_fn(|| client.poll_event())
            .any(|e| matches!(e, InitiatorEvent::Connected { .. }));
        assert!(connected, "the client did not connect");
        m
    }

    /// Opens a (possibly fragmented) message: the client's (`to_gateway`) or the gateway's.
    fn open_all(&self, datagrams: &[Transmit], to_gateway: bool) -> (u8, Vec<u8>) {
        let keys = if to_gateway { &self.sk_i } else { &self.sk_r };
        let mut r = Reassembly::default();
        for t in datagrams {
            let msg = Message::parse(&t.data).unwrap();
            if let Opened::Complete {
                first_inner,
                plaintext,
            } = r.open(keys, &msg, &t.data).unwrap()
            {
                return (first_inner, plaintext);
            }
        }
        panic!("message incomplete");
    }

    /// An INFORMATIONAL request from the client, sealed with its keys, message ID `id`.
    fn request(&mut self, id: u32, payloads: &[Payload<'_>]) -> Vec<u8> {
        let (spi_i, spi_r) = self.gateway.spis();
        let header = message::header(spi_i, spi_r, ExchangeType::INFORMATIONAL, true, false, id);
        let mut d = message::seal(
            &mut self.sk_i,
            &mut self.entropy,
            header,
            payloads,
            false,
            0,
        );
        assert_eq!(d.len(), 1);
        d.remove(0)
    }

    /// What strongSwan sends from its new address `from`: UPDATE_SA_ADDRESSES, COOKIE2 and
    /// both NAT_DETECTION notifies (hashes of its own new address and of the gateway's).
    fn update_request(&mut self, id: u32, from: SocketAddr) -> Vec<u8> {
        let (spi_i, spi_r) = self.gateway.spis();
        let src = natd_hash(spi_i, spi_r, from);
        let dst = natd_hash(
            spi_i,
            spi_r,
            SocketAddr::new(gateway_addr().ip(), from.port()),
        );
        self.request(
            id,
            &[
                Payload::Notify(NotifyPayload::new(NotifyType::UPDATE_SA_ADDRESSES, &[])),
                Payload::Notify(NotifyPayload::new(NotifyType::COOKIE2, &COOKIE2)),
                Payload::Notify(NotifyPayload::new(
                    NotifyType::NAT_DETECTION_SOURCE_IP,
                    &src,
                )),
                Payload::Notify(NotifyPayload::new(
                    NotifyType::NAT_DETECTION_DESTINATION_IP,
                    &dst,
                )),
            ],
        )
    }

    /// Feeds `d` from `from` (NAT-T) and returns what the gateway sent.
    fn deliver(&mut self, from: SocketAddr, d: &[u8]) -> Vec<Transmit> {
        self.gateway.handle_message(self.now, from, true, d);
        transmits(&mut self.gateway)
    }

    /// Sends the next request (`payloads`) from `from`; returns the answer's datagram and
    /// its notifications.
    fn exchange(
        &mut self,
        from: SocketAddr,
        payloads: &[Payload<'_>],
    ) -> (Transmit, Vec<(NotifyType, Vec<u8>)>) {
        let id = self.next_id;
        self.next_id += 1;
        let d = self.request(id, payloads);
        self.answer(from, &d, id)
    }

    fn answer(
        &mut self,
        from: SocketAddr,
        d: &[u8],
        id: u32,
    ) -> (Transmit, Vec<(NotifyType, Vec<u8>)>) {
        let mut out = self.deliver(from, d);
        assert_eq!(out.len(), 1, "one answer expected");
        let t = out.remove(0);
        let h = Message::parse(&t.data).unwrap().header;
        assert!(h.flags.response());
        assert_eq!(h.exchange, ExchangeType::INFORMATIONAL);
        assert_eq!(h.message_id, id);
        let (first, text) = self.open_all(std::slice::from_ref(&t), false);
        let n = notifies(&message::inner(first, &text).unwrap());
        (t, n)
    }
}

#[test]
fn mobike_supported_is_answered_only_when_offered() {
    let without = Mobile::connect(false);
    assert!(!without.gateway.mobike());
    assert!(
        !has(&without.auth_response, NotifyType::MOBIKE_SUPPORTED),
        "the gateway answered MOBIKE_SUPPORTED to a client that did not offer it: {:?}",
        without.auth_response
    );
    let with = Mobile::connect(true);
    assert!(with.gateway.mobike());
    assert_eq!(
        data(&with.auth_response, NotifyType::MOBIKE_SUPPORTED),
        Some(&[][..]),
        "IKE_AUTH response notifies: {:?}",
        with.auth_response
    );
}

#[test]
fn update_sa_addresses_moves_the_sa_and_is_answered_with_nat_detection_and_cookie2() {
    let mut m = Mobile::connect(true);
    assert_eq!(m.gateway.peer(), client_addr(true));
    // strongSwan's path check first: a plain INFORMATIONAL from the new address. It is
    // answered there (like any request, and it is authentic, so the SA follows it).
    let (t, n) = m.exchange(new_addr(), &[]);
    assert_eq!(t.to, new_addr());
    assert!(n.is_empty(), "{n:?}");
    // Then the update itself.
    let id = m.next_id;
    m.next_id += 1;
    let update = m.update_request(id, new_addr());
    let (t, n) = m.answer(new_addr(), &update, id);
    assert_eq!(
        t.to,
        new_addr(),
        "the answer goes where the update came from"
    );
    assert!(t.nat_t, "the answer leaves from port 4500");
    assert_eq!(m.gateway.peer(), new_addr());
    assert_eq!(m.gateway.mobike_updates(), 1);
    // RFC 4555 3.7: COOKIE2 echoed (strongSwan closes the SA otherwise).
    assert_eq!(data(&n, NotifyType::COOKIE2), Some(&COOKIE2[..]), "{n:?}");
    // RFC 4555 3.5: NAT detection in the answer. The destination hash is of the address the
    // update came from: the client sees it is not behind a NAT itself...
    let (spi_i, spi_r) = m.gateway.spis();
    assert_eq!(
        data(&n, NotifyType::NAT_DETECTION_DESTINATION_IP),
        Some(&natd_hash(spi_i, spi_r, new_addr())[..])
    );
    // ... and the source hash matches no address of the gateway, so it keeps ESP in UDP.
    let src = data(&n, NotifyType::NAT_DETECTION_SOURCE_IP).expect("NAT_DETECTION_SOURCE_IP");
    assert_eq!(src.len(), 20);
    for port in [500, 4500] {
        let gw = SocketAddr::new(gateway_addr().ip(), port);
        assert_ne!(src, natd_hash(spi_i, spi_r, gw));
    }
    // A retransmitted update gets the same answer, not a second processing.
    let again = m.deliver(new_addr(), &update);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].data, t.data);
    assert_eq!(m.gateway.mobike_updates(), 1);

    // DPD after the move goes to the new address.
    m.now += Duration::from_secs(31);
    m.gateway.handle_timeout(m.now);
    let dpd = transmits(&mut m.gateway);
    assert_eq!(dpd.len(), 1, "one DPD request");
    assert_eq!(dpd[0].to, new_addr());
    assert!(dpd[0].nat_t);
    let h = Message::parse(&dpd[0].data).unwrap().header;
    assert!(!h.flags.response());
    assert_eq!(h.exchange, ExchangeType::INFORMATIONAL);
    // And its retransmissions too.
    m.now += Duration::from_secs(3);
    m.gateway.handle_timeout(m.now);
    let retransmit = transmits(&mut m.gateway);
    assert!(!retransmit.is_empty());
    assert!(retransmit.iter().all(|t| t.to == new_addr()));
    assert!(!m.gateway.is_closed());
}

#[test]
fn an_update_that_fails_decryption_or_has_the_wrong_message_id_moves_nothing() {
    let mut m = Mobile::connect(true);
    let home = client_addr(true);

    // Tampered: one ciphertext bit flipped (the integrity check fails).
    let mut forged = m.update_request(2, attacker());
    let last = forged.len() - 1;
    forged[last - 20] ^= 1;
    assert!(m.deliver(attacker(), &forged).is_empty());
    assert_eq!(m.gateway.peer(), home);

    // Sealed with the wrong keys (the gateway's own direction).
    let (spi_i, spi_r) = m.gateway.spis();
    let header = message::header(spi_i, spi_r, ExchangeType::INFORMATIONAL, true, false, 2);
    let upd = [Payload::Notify(NotifyPayload::new(
        NotifyType::UPDATE_SA_ADDRESSES,
        &[],
    ))];
    let wrong_keys = message::seal(&mut m.sk_r, &mut m.entropy, header, &upd, false, 0);
    assert!(m.deliver(attacker(), &wrong_keys[0]).is_empty());
    assert_eq!(m.gateway.peer(), home);

    // Authentic but from the future (message ID 3 while 2 is expected): dropped.
    let early = m.update_request(3, attacker());
    assert!(m.deliver(attacker(), &early).is_empty());
    assert_eq!(m.gateway.peer(), home);

    // Authentic but old (message ID 1, IKE_AUTH's): treated as a retransmission of IKE_AUTH,
    // answered from the cache to where it came from, and the SA stays.
    let old = m.update_request(1, attacker());
    let answered = m.deliver(attacker(), &old);
    assert!(answered.iter().all(|t| t.to == attacker()));
    assert_eq!(m.gateway.peer(), home);
    assert_eq!(m.gateway.mobike_updates(), 0);

    // The SA still answers at home, and the real update (ID 2) still works.
    let (t, _) = m.exchange(home, &[]);
    assert_eq!(t.to, home);
    let id = m.next_id;
    m.next_id += 1;
    let update = m.update_request(id, new_addr());
    let (t, n) = m.answer(new_addr(), &update, id);
    assert_eq!(t.to, new_addr());
    assert_eq!(m.gateway.peer(), new_addr());
    assert!(has(&n, NotifyType::COOKIE2));
    // A replay of an already answered update from yet another address moves nothing.
    let replay = m.deliver(attacker(), &update);
    assert_eq!(replay.len(), 1, "answered from the cache");
    assert_eq!(m.gateway.peer(), new_addr());
}

#[test]
fn nat_detection_in_a_dpd_is_answered_and_address_lists_are_accepted() {
    let mut m = Mobile::connect(true);
    let (spi_i, spi_r) = m.gateway.spis();
    let home = client_addr(true);
    // A client behind a NAT puts NAT detection into its DPD requests.
    let src = natd_hash(spi_i, spi_r, "10.0.0.5:4500".parse().unwrap());
    let dst = natd_hash(spi_i, spi_r, SocketAddr::new(gateway_addr().ip(), 4500));
    let (t, n) = m.exchange(
        home,
        &[
            Payload::Notify(NotifyPayload::new(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                &src,
            )),
            Payload::Notify(NotifyPayload::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                &dst,
            )),
        ],
    );
    assert_eq!(t.to, home);
    assert_eq!(
        data(&n, NotifyType::NAT_DETECTION_DESTINATION_IP),
        Some(&natd_hash(spi_i, spi_r, home)[..])
    );
    assert!(has(&n, NotifyType::NAT_DETECTION_SOURCE_IP));
    assert!(!has(&n, NotifyType::COOKIE2));
    assert_eq!(m.gateway.mobike_updates(), 0);
    // An address list update (ADDITIONAL_IP4_ADDRESS, NO_ADDITIONAL_ADDRESSES): an empty
    // answer, nothing moves.
    let (t, n) = m.exchange(
        home,
        &[
            Payload::Notify(NotifyPayload::new(
                NotifyType::ADDITIONAL_IP4_ADDRESS,
                &[192, 0, 2, 77],
            )),
            Payload::Notify(NotifyPayload::new(NotifyType::NO_ADDITIONAL_ADDRESSES, &[])),
        ],
    );
    assert_eq!(t.to, home);
    assert!(n.is_empty(), "{n:?}");
    assert_eq!(m.gateway.peer(), home);
    assert!(!m.gateway.is_closed());
}

#[test]
fn without_mobike_the_notifies_are_not_answered() {
    let mut m = Mobile::connect(false);
    let id = m.next_id;
    m.next_id += 1;
    let update = m.update_request(id, new_addr());
    let (t, n) = m.answer(new_addr(), &update, id);
    // An authentic message still moves the SA (RFC 7296 2.23, as for NAT rebinding), but
    // the MOBIKE notifies get no answer.
    assert_eq!(t.to, new_addr());
    assert!(n.is_empty(), "{n:?}");
    assert_eq!(m.gateway.mobike_updates(), 0);
}
