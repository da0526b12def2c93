//! Exchanges after IKE_AUTH: INFORMATIONAL (DPD, deletes), CREATE_CHILD_SA (CHILD SA
//! rekey; IKE SA rekeys are in `rekey.rs`), and answers to our own requests.

use std::time::Instant;

use super::super::crypto::{ChildSaKeys, DhGroup, DhPrivate};
use super::super::message::Opened;
use super::super::proposal::{choose_esp, esp_sa_payload};
use super::*;
use crate::esp::EspSa;
use crate::wire::ikev2::{
    DeletePayload, ExchangeType, KePayload, Message, NotifyType, Payload, ProtocolId,
};
use crate::wire::ikev2::{Transform, TransformType};

impl IkeResponder {
    pub(super) fn on_informational(&mut self, message_id: u32, payloads: &[Payload<'_>]) {
        let mut reply_spis: Vec<u8> = Vec::new();
        let mut delete_ike = false;
        let mut downs = Vec::new();
        for p in payloads {
            if let Payload::Delete(d) = p {
                if d.protocol_id == ProtocolId::IKE {
                    delete_ike = true;
                } else if d.protocol_id == ProtocolId::ESP {
                    for spi in d.spis_u32() {
                        if let Some(i) = self.children.iter().position(|c| c.peer_spi == spi) {
                            let c = self.children.remove(i);
                            reply_spis.extend_from_slice(&c.our_spi.to_be_bytes());
                            downs.push(c.our_spi);
                        }
                    }
                }
            }
        }
        if delete_ike {
            self.send_response(ExchangeType::INFORMATIONAL, message_id, &[]);
            self.close("client deleted the IKE SA (disconnect)".into());
            return;
        }
        // MOBIKE (UPDATE_SA_ADDRESSES, NAT detection, COOKIE2): `mobike.rs`.
        let mobike = self.on_mobike_informational(payloads);
        let mut out: Vec<Payload<'_>> = mobike.iter().map(|(t, d)| notify(*t, d)).collect();
        if !reply_spis.is_empty() {
            out.insert(0, Payload::Delete(DeletePayload::esp(&reply_spis)));
        }
        self.send_response(ExchangeType::INFORMATIONAL, message_id, &out);
        for our_spi in downs {
            self.events.push_back(IkeEvent::ChildDown { our_spi });
        }
    }

    pub(super) fn on_create_child(
        &mut self,
        now: Instant,
        message_id: u32,
        payloads: &[Payload<'_>],
    ) {
        let mut rekey = None;
        let mut sa = None;
        let mut nonce = None;
        let mut ke = None;
        let mut tsi = None;
        let mut tsr = None;
        for p in payloads {
            match p {
                Payload::Notify(n) if n.notify_type == NotifyType::REKEY_SA => rekey = n.spi_u32(),
                Payload::Sa(s) => sa = Some(s),
                Payload::Nonce(n) => nonce = Some(*n),
                Payload::Ke(k) => ke = Some(k),
                Payload::TsI(t) => tsi = Some(t),
                Payload::TsR(t) => tsr = Some(t),
                _ => {}
            }
        }
        let (Some(sa), Some(ni)) = (sa, nonce) else {
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::INVALID_SYNTAX, &[])],
            );
            return;
        };
        if sa.proposals.iter().any(|p| p.protocol == ProtocolId::IKE) {
            self.on_ike_rekey(now, message_id, sa, ni, ke);
            return;
        }
        if self.own_rekey_in_flight(true) {
            // RFC 7296 2.25.1: not while we rekey the IKE SA (tests only: we never do).
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::TEMPORARY_FAILURE, &[])],
            );
            return;
        }
        let (Some(tsi), Some(tsr)) = (tsi, tsr) else {
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::TS_UNACCEPTABLE, &[])],
            );
            return;
        };
        let old = rekey.and_then(|spi| self.children.iter().position(|c| c.peer_spi == spi));
        let Some(old) = old else {
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::CHILD_SA_NOT_FOUND, &[])],
            );
            return;
        };
        if self.children[old].replaced || self.children[old].superseded.is_some() {
            // Our own rekey of it completed first (our Delete of it is on its way), or the
            // peer rekeyed it already and it only overlaps until it is deleted.
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::TEMPORARY_FAILURE, &[])],
            );
            return;
        }
        if self.children.len() >= MAX_CHILDREN {
            // Rekeying faster than replaced CHILD SAs go away: each one holds keys and a
            // replay window. The IKE SA goes, not the gateway's memory.
            let who = self.client.clone().unwrap_or_else(|| "?".into());
            tracing::warn!(
                client = %who,
                remote = %self.peer,
                children = self.children.len(),
                limit = MAX_CHILDREN,
                "the peer keeps rekeying CHILD SAs faster than the replaced ones go away: deleting its IKE SA"
            );
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::NO_ADDITIONAL_SAS, &[])],
            );
            self.delete(
                now,
                &format!(
                    "too many CHILD SAs (more than {MAX_CHILDREN}): the peer rekeys in a loop"
                ),
            );
            return;
        }
        let Some((number, peer_spi, cipher, dh)) =
            choose_esp(self.policy(), sa, &self.policy().dh_groups)
        else {
            self.send_response(
                ExchangeType::CREATE_CHILD_SA,
                message_id,
                &[notify(NotifyType::NO_PROPOSAL_CHOSEN, &[])],
            );
            return;
        };
        let mut g_ir = None;
        let mut our_public = Vec::new();
        let mut group = 0u16;
        if let Some(g) = dh {
            let Some(ke) = ke.filter(|k| k.dh_group == g.transform_id()) else {
                let b = g.transform_id().to_be_bytes();
                self.send_response(
                    ExchangeType::CREATE_CHILD_SA,
                    message_id,
                    &[notify(NotifyType::INVALID_KE_PAYLOAD, &b)],
                );
                return;
            };
            let generated: Result<(DhPrivate, Vec<u8>), _> =
                DhGroup::generate(g, &mut *self.entropy, &*self.cfg.rng);
            let Ok((private, public)) = generated else {
                return;
            };
            let Ok(secret) = private.shared_secret(ke.data) else {
                self.send_response(
                    ExchangeType::CREATE_CHILD_SA,
                    message_id,
                    &[notify(NotifyType::INVALID_SYNTAX, &[])],
                );
                return;
            };
            g_ir = Some(secret);
            our_public = public;
            group = g.transform_id();
        }
        let mut nr = vec![0u8; 32];
        self.entropy.fill(&mut nr);
        let our_spi = self.new_child_spi();
        let Ok(keys) = ChildSaKeys::derive(
            self.suite.prf,
            &self.keys.sk_d,
            g_ir.as_deref(),
            ni,
            &nr,
            cipher.key_sizes(),
        ) else {
            return;
        };
        let Ok(esp) = EspSa::from_child_keys(cipher, &keys, false, our_spi, peer_spi) else {
            return;
        };
        let spi_bytes = our_spi.to_be_bytes();
        let mut chosen = esp_sa_payload(number, cipher, &spi_bytes);
        if let Some(g) = dh {
            // The chosen proposal names the PFS group we accepted (RFC 7296 3.3).
            for p in &mut chosen.proposals {
                p.transforms
                    .push(Transform::new(TransformType::DH, g.transform_id()));
            }
        }
        let mut out = vec![Payload::Sa(chosen), Payload::Nonce(&nr)];
        if dh.is_some() {
            out.push(Payload::Ke(KePayload {
                dh_group: group,
                data: &our_public,
            }));
        }
        // The selectors narrowed at IKE_AUTH, never the (wider) ones the client proposes
        // again on rekey: a rekey must not turn a split tunnel into a full one.
        let (tsi, tsr) = self.narrowed.clone().unwrap_or((tsi.clone(), tsr.clone()));
        out.push(Payload::TsI(tsi));
        out.push(Payload::TsR(tsr));
        self.send_response(ExchangeType::CREATE_CHILD_SA, message_id, &out);
        let old_our = self.children[old].our_spi;
        // Replaced: it overlaps until the peer deletes it, or CHILD_OVERLAP passes.
        self.children[old].superseded = Some(now);
        self.children.push(Child {
            our_spi,
            peer_spi,
            created: now,
            replaced: false,
            superseded: None,
        });
        self.note_child_collision(old_our, our_spi, ni, &nr);
        self.events.push_back(IkeEvent::ChildUp {
            our_spi,
            peer_spi,
            cipher,
            sa: Box::new(esp),
            rekey_of: Some(old_our),
        });
    }

    pub(super) fn handle_response(&mut self, now: Instant, msg: &Message<'_>, raw: &[u8]) {
        let Some(o) = &self.outstanding else {
            return;
        };
        if msg.header.message_id != o.message_id {
            return;
        }
        let (first_inner, plaintext) = match self.reassembly.open(&self.sk_in, msg, raw) {
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
        let Some(o) = self.outstanding.take() else {
            return;
        };
        self.next_our_id = self.next_our_id.wrapping_add(1);
        self.last_rx = now;
        // Only answers to requests tests made us send need reading.
        let answered = o.message_id;
        if !matches!(o.request, initiated::Request::Informational) {
            let payloads = message::inner(first_inner, &plaintext).unwrap_or_default();
            self.on_own_response(now, o.request, &payloads);
        }
        self.after_own_response(now, answered);
    }

    /// Deletes CHILD SAs the peer replaced by a rekey and did not delete within
    /// [`CHILD_OVERLAP`]: the data path drops them ([`IkeEvent::ChildDown`]) and the peer
    /// is told with a Delete when no request of ours is in flight.
    pub(super) fn expire_superseded_children(&mut self, now: Instant) {
        let mut gone = Vec::new();
        self.children.retain(|c| {
            let due = c.superseded.is_some_and(|t| now >= t + CHILD_OVERLAP);
            if due {
                gone.push(c.our_spi);
            }
            !due
        });
        if gone.is_empty() {
            return;
        }
        for &our_spi in &gone {
            self.events.push_back(IkeEvent::ChildDown { our_spi });
        }
        if self.state == State::Established && self.outstanding.is_none() && self.deleting.is_none()
        {
            let spis: Vec<u8> = gone.iter().flat_map(|s| s.to_be_bytes()).collect();
            self.send_request(now, &[Payload::Delete(DeletePayload::esp(&spis))]);
        }
    }
}
