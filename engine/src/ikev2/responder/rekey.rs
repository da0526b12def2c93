//! IKE SA rekeying (RFC 7296 1.3.2, 2.18): the client's CREATE_CHILD_SA with an IKE
//! proposal replaces the IKE SA by a new one under new SPIs; the replaced SA keeps answering
//! on its old SPIs until the client deletes it.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::message::Opened;
use super::*;
use crate::wire::ikev2::{
    ExchangeType, KePayload, Message, NotifyType, Payload, ProtocolId, SaPayload,
};

impl IkeResponder {
    /// Answers `[SA(IKE, SPIi'), Ni, KEi]` with `[SA(IKE, SPIr'), Nr, KEr]` on the current
    /// SA, then continues under the new SPI pair and keys with message IDs from 0.
    pub(super) fn on_ike_rekey(
        &mut self,
        now: Instant,
        message_id: u32,
        sa: &SaPayload<'_>,
        ni: &[u8],
        ke: Option<&KePayload<'_>>,
    ) {
        let reply = |me: &mut Self, t: NotifyType, data: &[u8]| {
            me.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(t, data)],
            );
        };
        if self.own_rekey_in_flight(false) {
            // A CHILD SA of ours half made (tests only: we never rekey).
            reply(self, NotifyType::TEMPORARY_FAILURE, &[]);
            return;
        }
        let Some(ke) = ke else {
            reply(self, NotifyType::INVALID_SYNTAX, &[]);
            return;
        };
        if !nonce_len_ok(ni) {
            reply(self, NotifyType::INVALID_SYNTAX, &[]);
            return;
        }
        // Same policy as IKE_SA_INIT; the KE group must be one we would choose.
        let (number, suite) = match choose_ike(self.policy(), sa, ke.dh_group) {
            IkeChoice::Chosen { number, suite } => (number, suite),
            IkeChoice::WrongGroup(g) => {
                reply(
                    self,
                    NotifyType::INVALID_KE_PAYLOAD,
                    &g.transform_id().to_be_bytes(),
                );
                return;
            }
            IkeChoice::NoProposal => {
                reply(self, NotifyType::NO_PROPOSAL_CHOSEN, &[]);
                return;
            }
        };
        let new_spi_i = sa
            .proposals
            .iter()
            .find(|p| p.number == number && p.protocol == ProtocolId::IKE)
            .and_then(|p| <[u8; 8]>::try_from(p.spi).ok())
            .map(u64::from_be_bytes);
        let Some(new_spi_i) = new_spi_i.filter(|s| *s != 0) else {
            reply(self, NotifyType::INVALID_SYNTAX, &[]);
            return;
        };
        let Ok((dh, public)) = suite.dh.generate(&mut *self.entropy, &*self.cfg.rng) else {
            reply(self, NotifyType::TEMPORARY_FAILURE, &[]);
            return;
        };
        let Ok(g_ir) = dh.shared_secret(ke.data) else {
            reply(self, NotifyType::INVALID_SYNTAX, &[]);
            return;
        };
        let mut new_spi_r = 0;
        while new_spi_r == 0 || new_spi_r == self.spi_r {
            new_spi_r = self.entropy.next_u64();
        }
        let mut nr = vec![0u8; 32];
        self.entropy.fill(&mut nr);
        let keys = self.keys.rekeyed(
            self.suite.prf,
            suite.prf,
            suite.cipher.key_sizes(),
            ni,
            &nr,
            &g_ir,
            new_spi_i,
            new_spi_r,
        );
        let Ok(keys) = keys else {
            reply(self, NotifyType::NO_PROPOSAL_CHOSEN, &[]);
            return;
        };
        let (Ok(sk_in), Ok(sk_out)) = (
            SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai),
            SkKeys::new(suite.cipher, &keys.sk_er, &keys.sk_ar),
        ) else {
            reply(self, NotifyType::NO_PROPOSAL_CHOSEN, &[]);
            return;
        };
        let spi_bytes = new_spi_r.to_be_bytes();
        self.send_response(
            ExchangeType::CREATE_CHILD_SA,
            message_id,
            &[
                Payload::Sa(ike_sa_payload(number, suite, &spi_bytes)),
                Payload::Nonce(&nr),
                Payload::Ke(KePayload {
                    dh_group: suite.dh.transform_id(),
                    data: &public,
                }),
            ],
        );

        // The answer went out under the old SA; it stays to answer a retransmission of the
        // request and the client's Delete. An IKE rekey of ours in flight (tests only) is
        // finished there: the lowest nonce then decides which new SA stays (RFC 7296 2.8.2).
        let old_spis = (self.spi_i, self.spi_r);
        let own = self.overtaken_ike_rekey((ni.to_vec(), nr.clone()), (new_spi_i, new_spi_r));
        self.switch_to(
            now,
            initiated::NewSa {
                spi_i: new_spi_i,
                spi_r: new_spi_r,
                initiator: false,
                suite,
                keys,
                sk_in,
                sk_out,
            },
            false,
        );
        if let Some(o) = self
            .old_sas
            .iter_mut()
            .find(|o| (o.spi_i, o.spi_r) == old_spis)
        {
            o.own_rekey = own;
        }
    }

    /// A message on a replaced IKE SA: retransmissions get the cached answer, the Delete of
    /// that SA ends it, anything else gets an empty (INFORMATIONAL) or refusing answer.
    pub(super) fn handle_old_message(
        &mut self,
        now: Instant,
        index: usize,
        msg: &Message<'_>,
        raw: &[u8],
        from: SocketAddr,
        nat_t: bool,
    ) {
        let h = msg.header;
        if h.flags.initiator() == self.old_sas[index].initiator {
            return;
        }
        if h.flags.response() {
            self.on_old_response(now, index, msg, raw);
            return;
        }
        let old = &mut self.old_sas[index];
        if h.message_id.wrapping_add(1) == old.next_peer_id {
            let resend = match msg.payloads.last() {
                Some(Payload::EncryptedFragment {
                    fragment_number,
                    total_fragments,
                    ..
                }) => fragment_number == total_fragments,
                _ => true,
            };
            if let Some((id, d)) = &old.last_response
                && *id == h.message_id
                && resend
            {
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
        if h.message_id != old.next_peer_id {
            return;
        }
        let (first_inner, plaintext) = match old.reassembly.open(&old.sk_in, msg, raw) {
            Ok(Opened::Complete {
                first_inner,
                plaintext,
            }) => (first_inner, plaintext),
            Ok(Opened::Partial) => return,
            Err(e) => {
                self.count_open_error(&e);
                return;
            }
        };
        let old = &mut self.old_sas[index];
        old.next_peer_id = h.message_id.wrapping_add(1);
        self.last_rx = now;
        let (reply, delete): (Vec<Payload<'_>>, bool) =
            match message::inner(first_inner, &plaintext) {
                Err(_) => (vec![notify(NotifyType::INVALID_SYNTAX, &[])], false),
                Ok(payloads) => match h.exchange {
                    ExchangeType::INFORMATIONAL => {
                        let delete = payloads.iter().any(
                            |p| matches!(p, Payload::Delete(d) if d.protocol_id == ProtocolId::IKE),
                        );
                        (Vec::new(), delete)
                    }
                    // Everything else belongs on the new SA.
                    ExchangeType::CREATE_CHILD_SA => {
                        (vec![notify(NotifyType::TEMPORARY_FAILURE, &[])], false)
                    }
                    _ => (vec![notify(NotifyType::INVALID_SYNTAX, &[])], false),
                },
            };
        let header = message::header(
            old.spi_i,
            old.spi_r,
            h.exchange,
            old.initiator,
            true,
            h.message_id,
        );
        let datagrams = message::seal(
            &mut old.sk_out,
            &mut *self.entropy,
            header,
            &reply,
            self.peer_fragments,
            self.cfg.fragment_size,
        );
        for d in &datagrams {
            self.transmits.push_back(Transmit {
                to: from,
                nat_t,
                data: d.clone(),
            });
        }
        old.last_response = Some((h.message_id, datagrams));
        if delete {
            let gone = self.old_sas.remove(index);
            self.events.push_back(IkeEvent::OldIkeSaGone {
                spis: (gone.spi_i, gone.spi_r),
            });
        }
    }

    /// Forgets replaced IKE SAs the client never deleted.
    pub(super) fn expire_old_sas(&mut self, now: Instant) {
        while let Some(i) = self.old_sas.iter().position(|o| now >= o.expires) {
            let gone = self.old_sas.remove(i);
            self.events.push_back(IkeEvent::OldIkeSaGone {
                spis: (gone.spi_i, gone.spi_r),
            });
        }
    }
}
