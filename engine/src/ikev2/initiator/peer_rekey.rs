//! Rekeys the gateway starts (RFC 7296 1.3.2, 1.3.3, 2.18): a CREATE_CHILD_SA request on the
//! current IKE SA that rekeys the CHILD SA or the IKE SA. When ours of the same SA is in
//! flight (RFC 7296 2.8.1, 2.8.2) we answer as usual and let the lowest nonce decide once our
//! answer arrives (`on_rekey_response`, `on_ike_rekey_response`); other clashes get
//! TEMPORARY_FAILURE (RFC 7296 2.25), which the gateway retries.

use std::time::Instant;

use super::*;
use crate::ikev2::proposal::{esp_sa_payload, ike_sa_payload};
use crate::wire::ikev2::{SaPayload, Transform, TransformType};

impl IkeInitiator {
    /// A CREATE_CHILD_SA request from the gateway (already counted and authenticated).
    pub(super) fn on_peer_create_child(
        &mut self,
        now: Instant,
        message_id: u32,
        payloads: &[Payload<'_>],
    ) {
        let mut rekey = None;
        let mut sa = None;
        let mut nonce = None;
        let mut ke = None;
        let mut ts = (None, None);
        for p in payloads {
            match p {
                Payload::Notify(n)
                    if n.notify_type == NotifyType::REKEY_SA
                        && n.protocol_id == ProtocolId::ESP =>
                {
                    rekey = n.spi_u32()
                }
                Payload::Sa(s) => sa = Some(s),
                Payload::Nonce(n) => nonce = Some(*n),
                Payload::Ke(k) => ke = Some(k),
                Payload::TsI(t) => ts.0 = Some(t),
                Payload::TsR(t) => ts.1 = Some(t),
                _ => {}
            }
        }
        let (Some(sa), Some(ni)) = (sa, nonce) else {
            self.refuse_create_child(message_id, NotifyType::INVALID_SYNTAX, &[]);
            return;
        };
        if !nonce_len_ok(ni) {
            self.refuse_create_child(message_id, NotifyType::INVALID_SYNTAX, &[]);
            return;
        }
        if self.closing {
            // RFC 7296 2.25: we are deleting the IKE SA.
            self.refuse_create_child(message_id, NotifyType::TEMPORARY_FAILURE, &[]);
            return;
        }
        if sa.proposals.iter().any(|p| p.protocol == ProtocolId::IKE) {
            self.on_peer_ike_rekey(now, message_id, sa, ni, ke);
            return;
        }
        // The REKEY_SA notify names the SA as its sender knows it: the gateway's inbound SPI.
        let Some(old_peer_spi) = rekey else {
            // An additional CHILD SA: we want one tunnel, and the gateway keeps what it has.
            self.refuse_create_child(message_id, NotifyType::NO_ADDITIONAL_SAS, &[]);
            return;
        };
        let ike_rekey_busy = self.peer_ike_rekey.is_some()
            || matches!(
                self.outstanding,
                Some(Outstanding {
                    request: Request::RekeyIke { .. },
                    ..
                })
            );
        if ike_rekey_busy {
            // RFC 7296 2.25.1: not while the IKE SA is being rekeyed.
            self.refuse_create_child(message_id, NotifyType::TEMPORARY_FAILURE, &[]);
            return;
        }
        let Some(old) = self
            .children
            .iter()
            .position(|c| c.peer_spi == old_peer_spi)
        else {
            self.refuse_create_child(message_id, NotifyType::CHILD_SA_NOT_FOUND, &[]);
            return;
        };
        if self.children[old].replaced {
            // Already replaced (our rekey of it completed first, or it lost a collision) and
            // about to be deleted (RFC 7296 2.25.1).
            self.refuse_create_child(message_id, NotifyType::TEMPORARY_FAILURE, &[]);
            return;
        }
        if ts.0.is_none() || ts.1.is_none() {
            self.refuse_create_child(message_id, NotifyType::TS_UNACCEPTABLE, &[]);
            return;
        }
        if self.children.len() >= crate::ikev2::responder::MAX_CHILDREN {
            // The peer rekeys without deleting what it replaced: bounded, the SA goes.
            tracing::warn!(
                remote = %self.gateway,
                children = self.children.len(),
                limit = crate::ikev2::responder::MAX_CHILDREN,
                "the peer keeps rekeying CHILD SAs without deleting the replaced ones: deleting the IKE SA"
            );
            self.refuse_create_child(message_id, NotifyType::NO_ADDITIONAL_SAS, &[]);
            self.disconnect(now);
            return;
        }
        let allow_dh = self.cfg.policy.dh_groups.clone();
        let Some((number, peer_spi, cipher, group)) = choose_esp(&self.cfg.policy, sa, &allow_dh)
        else {
            self.refuse_create_child(message_id, NotifyType::NO_PROPOSAL_CHOSEN, &[]);
            return;
        };
        // Perfect forward secrecy when the gateway asks for it: a fresh DH exchange.
        let mut g_ir = None;
        let mut ke_reply = None;
        if let Some(g) = group {
            let Some(ke) = ke.filter(|k| k.dh_group == g.transform_id()) else {
                let want = g.transform_id().to_be_bytes();
                self.refuse_create_child(message_id, NotifyType::INVALID_KE_PAYLOAD, &want);
                return;
            };
            let Ok((private, public)) = g.generate(&mut *self.entropy, &*self.cfg.rng) else {
                self.refuse_create_child(message_id, NotifyType::TEMPORARY_FAILURE, &[]);
                return;
            };
            let Ok(secret) = private.shared_secret(ke.data) else {
                self.refuse_create_child(message_id, NotifyType::INVALID_SYNTAX, &[]);
                return;
            };
            g_ir = Some(secret);
            ke_reply = Some((g.transform_id(), public));
        }
        let Some(keys) = &self.sa else {
            return;
        };
        let our_spi = crate::esp::spis::claim_or_draw(self.spis.as_deref(), &mut *self.entropy);
        let mut nr = vec![0u8; 32];
        self.entropy.fill(&mut nr);
        // We are the responder of this exchange: its "initiator" keys are the gateway's.
        let esp = ChildSaKeys::derive(
            keys.suite.prf,
            &keys.keys.sk_d,
            g_ir.as_deref(),
            ni,
            &nr,
            cipher.key_sizes(),
        )
        .ok()
        .and_then(|k| EspSa::from_child_keys(cipher, &k, false, our_spi, peer_spi).ok());
        let Some(esp) = esp else {
            self.refuse_create_child(message_id, NotifyType::NO_PROPOSAL_CHOSEN, &[]);
            return;
        };
        let spi_bytes = our_spi.to_be_bytes();
        let mut chosen = esp_sa_payload(number, cipher, &spi_bytes);
        if let Some((group, _)) = &ke_reply {
            // The chosen proposal names the group we accepted (RFC 7296 3.3).
            for p in &mut chosen.proposals {
                p.transforms.push(Transform::new(TransformType::DH, *group));
            }
        }
        let mut reply = vec![Payload::Sa(chosen), Payload::Nonce(&nr)];
        if let Some((group, public)) = &ke_reply {
            reply.push(Payload::Ke(KePayload {
                dh_group: *group,
                data: public,
            }));
        }
        // The selectors narrowed at IKE_AUTH, from the gateway's side (it initiates this
        // exchange): a rekey keeps exactly what the tunnel had.
        reply.push(Payload::TsI(TsPayload::new(self.child_ts.1.clone())));
        reply.push(Payload::TsR(TsPayload::new(self.child_ts.0.clone())));
        self.send_response(ExchangeType::CREATE_CHILD_SA, message_id, &reply);

        let old_our_spi = self.children[old].our_spi;
        self.children[old].replaced = true;
        self.children[old].expires = Some(now + crate::ikev2::responder::CHILD_OVERLAP);
        self.children.push(Child {
            our_spi,
            peer_spi,
            replaced: false,
            announced: true,
            expires: None,
        });
        self.events.push_back(InitiatorEvent::ChildRekeyed {
            old_our_spi,
            our_spi,
            peer_spi,
            cipher,
            sa: Box::new(esp),
        });
        // A rekey of ours still waiting for the window would rekey the replaced SA.
        self.queue.retain(|q| *q != Queued::RekeyChild);
        self.child_rekey_at = deadline(now, self.cfg.child_lifetime);
        let ours_in_flight = matches!(
            &self.outstanding,
            Some(Outstanding {
                request: Request::RekeyChild { old_our_spi: o, .. },
                ..
            }) if *o == old_our_spi
        );
        if ours_in_flight {
            self.child_collision = Some(ChildCollision {
                old_our_spi,
                our_spi,
                ni: ni.to_vec(),
                nr,
            });
        }
        tracing::debug!(
            old_our_spi,
            our_spi,
            ours_in_flight,
            "gateway rekeyed the CHILD SA"
        );
    }

    /// The gateway rekeys the IKE SA: it becomes the initiator of the new SA (its SPI is
    /// SPIi, its nonce Ni), and we its responder.
    fn on_peer_ike_rekey(
        &mut self,
        now: Instant,
        message_id: u32,
        sa: &SaPayload<'_>,
        ni: &[u8],
        ke: Option<&KePayload<'_>>,
    ) {
        let ours_in_flight = match &self.outstanding {
            Some(Outstanding {
                request: Request::RekeyIke { .. },
                ..
            }) => true,
            // A CHILD SA half made, or our Delete of the IKE SA: not now (RFC 7296 2.25).
            Some(Outstanding {
                request: Request::RekeyChild { .. } | Request::DeleteIke,
                ..
            }) => {
                self.refuse_create_child(message_id, NotifyType::TEMPORARY_FAILURE, &[]);
                return;
            }
            _ => false,
        };
        if self.peer_ike_rekey.is_some() {
            self.refuse_create_child(message_id, NotifyType::TEMPORARY_FAILURE, &[]);
            return;
        }
        let Some(ke) = ke else {
            self.refuse_create_child(message_id, NotifyType::INVALID_SYNTAX, &[]);
            return;
        };
        let (number, suite) = match choose_ike(&self.cfg.policy, sa, ke.dh_group) {
            IkeChoice::Chosen { number, suite } => (number, suite),
            IkeChoice::WrongGroup(g) => {
                let want = g.transform_id().to_be_bytes();
                self.refuse_create_child(message_id, NotifyType::INVALID_KE_PAYLOAD, &want);
                return;
            }
            IkeChoice::NoProposal => {
                self.refuse_create_child(message_id, NotifyType::NO_PROPOSAL_CHOSEN, &[]);
                return;
            }
        };
        let new_spi_i = sa
            .proposals
            .iter()
            .find(|p| p.number == number && p.protocol == ProtocolId::IKE)
            .and_then(|p| <[u8; 8]>::try_from(p.spi).ok())
            .map(u64::from_be_bytes)
            .filter(|s| *s != 0);
        let Some(new_spi_i) = new_spi_i else {
            self.refuse_create_child(message_id, NotifyType::INVALID_SYNTAX, &[]);
            return;
        };
        let Ok((dh, public)) = suite.dh.generate(&mut *self.entropy, &*self.cfg.rng) else {
            self.refuse_create_child(message_id, NotifyType::TEMPORARY_FAILURE, &[]);
            return;
        };
        let Ok(g_ir) = dh.shared_secret(ke.data) else {
            self.refuse_create_child(message_id, NotifyType::INVALID_SYNTAX, &[]);
            return;
        };
        let mut new_spi_r = 0;
        while new_spi_r == 0 || new_spi_r == self.spi_i || new_spi_r == self.spi_r {
            new_spi_r = self.entropy.next_u64();
        }
        let mut nr = vec![0u8; 32];
        self.entropy.fill(&mut nr);
        let Some(cur) = &self.sa else {
            return;
        };
        // RFC 7296 2.18: Ni and SPIi are the gateway's, it started the exchange; the keys
        // for messages from the new SA's initiator are the ones we receive with.
        let keys = cur
            .keys
            .rekeyed(
                cur.suite.prf,
                suite.prf,
                suite.cipher.key_sizes(),
                ni,
                &nr,
                &g_ir,
                new_spi_i,
                new_spi_r,
            )
            .ok()
            .and_then(|keys| {
                let sk_in = SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai).ok()?;
                let sk_out = SkKeys::new(suite.cipher, &keys.sk_er, &keys.sk_ar).ok()?;
                Some((keys, sk_in, sk_out))
            });
        let Some((keys, sk_in, sk_out)) = keys else {
            self.refuse_create_child(message_id, NotifyType::NO_PROPOSAL_CHOSEN, &[]);
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
        let theirs = NewIke {
            spi_i: new_spi_i,
            spi_r: new_spi_r,
            initiator: false,
            sa: SaKeys {
                suite,
                keys,
                sk_in,
                sk_out,
            },
            ni: ni.to_vec(),
            nr,
        };
        if ours_in_flight {
            // RFC 7296 2.8.2: both exchanges complete; decided when our answer arrives.
            tracing::debug!("simultaneous IKE rekey: waiting for the answer to ours");
            self.peer_ike_rekey = Some(theirs);
            return;
        }
        // A request of ours in flight on the old SA is abandoned there: a DPD needs no
        // redoing, a CHILD SA Delete is sent again on the new SA.
        if let Some(Outstanding {
            request: Request::DeleteChild { our_spi },
            ..
        }) = self.outstanding.take()
        {
            self.queue.push_front(Queued::DeleteChild(our_spi));
        }
        self.queue.retain(|q| *q != Queued::RekeyIke);
        self.rekey_group = None;
        self.rekey_restarts = 0;
        // The gateway deletes the old SA: it started the rekey.
        self.switch_ike(now, theirs, false);
        self.ike_rekey_at = deadline(now, self.cfg.ike_lifetime);
    }

    /// Answers a CREATE_CHILD_SA request with one error notify.
    fn refuse_create_child(&mut self, message_id: u32, t: NotifyType, data: &[u8]) {
        tracing::debug!(notify = ?t, "refusing the gateway's CREATE_CHILD_SA");
        self.send_response(
            ExchangeType::CREATE_CHILD_SA,
            message_id,
            &[notify(t, data)],
        );
    }
}
