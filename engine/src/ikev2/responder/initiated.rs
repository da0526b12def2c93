//! Rekeys the gateway starts, as a strongSwan gateway does after its own lifetimes. Ours
//! never does: only tests call the hidden hooks below, to exercise the client against a
//! gateway that rekeys (alone, or at the same moment as the client, RFC 7296 2.8.1 and
//! 2.8.2). Kept small: our Deletes are sent once, and a replaced IKE SA expires as usual.

use std::time::Instant;

use super::super::collision::ours_is_redundant;
use super::super::crypto::{ChildSaKeys, DhPrivate};
use super::super::message::Opened;
use super::super::proposal::{choose_esp, esp_offer, ike_offer};
use super::*;
use crate::esp::EspSa;
use crate::wire::ikev2::{
    DeletePayload, ExchangeType, KePayload, Message, NotifyPayload, NotifyType, Payload,
    ProtocolId, Transform, TransformType, TsPayload,
};

/// The exchange an outstanding request of ours belongs to.
pub(super) enum Request {
    /// DPD or a Delete of the IKE SA: the answer needs no reading.
    Informational,
    RekeyChild {
        old_our_spi: u32,
        our_spi: u32,
        ni: Vec<u8>,
        dh: Option<DhPrivate>,
    },
    DeleteChild {
        our_spi: u32,
    },
    RekeyIke {
        /// Our SPI of the new IKE SA (we are its initiator).
        spi_i: u64,
        ni: Vec<u8>,
        dh: DhPrivate,
    },
}

/// A client CHILD rekey we answered while ours of the same SA was in flight.
pub(super) struct ChildCollision {
    old_our_spi: u32,
    /// Our inbound SPI of the SA the client's exchange created.
    our_spi: u32,
    ni: Vec<u8>,
    nr: Vec<u8>,
}

/// An IKE rekey of ours that the client's own rekey of the same SA overtook: we moved to the
/// client's new SA, and our answer arrives on the old one.
pub(super) struct OwnIkeRekey {
    message_id: u32,
    spi_i: u64,
    ni: Vec<u8>,
    dh: DhPrivate,
    /// The SA both rekeyed: its PRF and SK_d derive our new SA.
    old_prf: super::super::crypto::prf::Prf,
    old_sk_d: Vec<u8>,
    /// The client's exchange: its nonces and the SPIs of the SA it made.
    peer_nonces: (Vec<u8>, Vec<u8>),
    peer_spis: (u64, u64),
}

/// A new IKE SA from a rekey exchange.
pub(super) struct NewSa {
    pub(super) spi_i: u64,
    pub(super) spi_r: u64,
    pub(super) initiator: bool,
    pub(super) suite: IkeSuite,
    pub(super) keys: IkeSaKeys,
    pub(super) sk_in: SkKeys,
    pub(super) sk_out: SkKeys,
}

impl IkeResponder {
    /// Test hook (a gateway that rekeys by itself): rekeys the newest CHILD SA with
    /// CREATE_CHILD_SA, with a fresh DH exchange (PFS, the IKE SA's group) when `pfs`, then
    /// deletes the old one. False when the SA is not up or a request of ours is in flight.
    #[doc(hidden)]
    pub fn start_child_rekey_for_tests(&mut self, now: Instant, pfs: bool) -> bool {
        if self.state != State::Established || self.outstanding.is_some() {
            return false;
        }
        let Some((tsi, tsr)) = self.narrowed.clone() else {
            return false;
        };
        let Some(old) = self.children.iter().rev().find(|c| !c.replaced) else {
            return false;
        };
        let old_our_spi = old.our_spi;
        let our_spi = self.new_child_spi();
        let mut ni = vec![0u8; 32];
        self.entropy.fill(&mut ni);
        let mut dh = None;
        let mut public = Vec::new();
        if pfs {
            let Ok((private, p)) = self.suite.dh.generate(&mut *self.entropy, &*self.cfg.rng)
            else {
                return false;
            };
            dh = Some(private);
            public = p;
        }
        let spi_bytes = our_spi.to_be_bytes();
        let old_bytes = old_our_spi.to_be_bytes();
        let mut offer = esp_offer(self.policy(), &spi_bytes);
        let group = self.suite.dh.transform_id();
        if pfs {
            for p in &mut offer.proposals {
                p.transforms.push(Transform::new(TransformType::DH, group));
            }
        }
        let mut payloads = vec![
            Payload::Notify(NotifyPayload {
                protocol_id: ProtocolId::ESP,
                spi: &old_bytes,
                notify_type: NotifyType::REKEY_SA,
                data: &[],
            }),
            Payload::Sa(offer),
            Payload::Nonce(&ni),
        ];
        if pfs {
            payloads.push(Payload::Ke(KePayload {
                dh_group: group,
                data: &public,
            }));
        }
        // We initiate: our side (the client's TSr at IKE_AUTH) is TSi now.
        payloads.push(Payload::TsI(TsPayload::new(tsr.selectors.clone())));
        payloads.push(Payload::TsR(TsPayload::new(tsi.selectors.clone())));
        let request = Request::RekeyChild {
            old_our_spi,
            our_spi,
            ni: ni.clone(),
            dh,
        };
        self.send_request_for(now, ExchangeType::CREATE_CHILD_SA, request, &payloads);
        true
    }

    /// Test hook (a gateway that rekeys by itself): rekeys the IKE SA with CREATE_CHILD_SA;
    /// we become the initiator of the new SA, then delete the old one. False when the SA is
    /// not up or a request of ours is in flight.
    #[doc(hidden)]
    pub fn start_ike_rekey_for_tests(&mut self, now: Instant) -> bool {
        if self.state != State::Established || self.outstanding.is_some() {
            return false;
        }
        let Ok((dh, public)) = self.suite.dh.generate(&mut *self.entropy, &*self.cfg.rng) else {
            return false;
        };
        let mut spi_i = 0;
        while spi_i == 0 || spi_i == self.spi_i || spi_i == self.spi_r {
            spi_i = self.entropy.next_u64();
        }
        let mut ni = vec![0u8; 32];
        self.entropy.fill(&mut ni);
        let spi_bytes = spi_i.to_be_bytes();
        let payloads = [
            Payload::Sa(ike_offer(self.policy(), &spi_bytes)),
            Payload::Nonce(&ni),
            Payload::Ke(KePayload {
                dh_group: self.suite.dh.transform_id(),
                data: &public,
            }),
        ];
        let request = Request::RekeyIke {
            spi_i,
            ni: ni.clone(),
            dh,
        };
        self.send_request_for(now, ExchangeType::CREATE_CHILD_SA, request, &payloads);
        true
    }

    /// Whether an IKE rekey (`ike`) or a CHILD rekey of ours is in flight (tests only).
    pub(super) fn own_rekey_in_flight(&self, ike: bool) -> bool {
        match self.outstanding.as_ref().map(|o| &o.request) {
            Some(Request::RekeyIke { .. }) => ike,
            Some(Request::RekeyChild { .. }) => !ike,
            _ => false,
        }
    }

    /// The client rekeyed the CHILD SA `old_our_spi` (we made `our_spi` with nonces `ni`,
    /// `nr`): remember it when ours of the same SA is in flight.
    pub(super) fn note_child_collision(
        &mut self,
        old_our_spi: u32,
        our_spi: u32,
        ni: &[u8],
        nr: &[u8],
    ) {
        let ours = matches!(
            self.outstanding.as_ref().map(|o| &o.request),
            Some(Request::RekeyChild { old_our_spi: o, .. }) if *o == old_our_spi
        );
        if ours {
            self.child_collision = Some(ChildCollision {
                old_our_spi,
                our_spi,
                ni: ni.to_vec(),
                nr: nr.to_vec(),
            });
        }
    }

    /// Before the client's IKE rekey replaces the SA: an IKE rekey of ours in flight on it,
    /// to finish on the old SA (the client's exchange made `peer_spis` with `peer_nonces`).
    pub(super) fn overtaken_ike_rekey(
        &mut self,
        peer_nonces: (Vec<u8>, Vec<u8>),
        peer_spis: (u64, u64),
    ) -> Option<OwnIkeRekey> {
        let o = self.outstanding.take()?;
        let Request::RekeyIke { spi_i, ni, dh } = o.request else {
            return None;
        };
        Some(OwnIkeRekey {
            message_id: o.message_id,
            spi_i,
            ni,
            dh,
            old_prf: self.suite.prf,
            old_sk_d: self.keys.sk_d.clone(),
            peer_nonces,
            peer_spis,
        })
    }

    /// The client's answer to one of our requests on the current SA.
    pub(super) fn on_own_response(
        &mut self,
        now: Instant,
        request: Request,
        payloads: &[Payload<'_>],
    ) {
        match request {
            Request::Informational => {}
            Request::RekeyChild {
                old_our_spi,
                our_spi,
                ni,
                dh,
            } => self.on_own_child_rekey(now, old_our_spi, our_spi, &ni, dh, payloads),
            Request::DeleteChild { our_spi } => {
                if let Some(i) = self.children.iter().position(|c| c.our_spi == our_spi) {
                    self.children.remove(i);
                    self.events.push_back(IkeEvent::ChildDown { our_spi });
                }
            }
            Request::RekeyIke { spi_i, ni, dh } => {
                let (prf, sk_d) = (self.suite.prf, self.keys.sk_d.clone());
                if let Some(new) = self.own_ike_rekey_result(prf, &sk_d, spi_i, &ni, dh, payloads) {
                    self.switch_to(now, new, true);
                }
            }
        }
    }

    fn on_own_child_rekey(
        &mut self,
        now: Instant,
        old_our_spi: u32,
        our_spi: u32,
        ni: &[u8],
        dh: Option<DhPrivate>,
        payloads: &[Payload<'_>],
    ) {
        let collision = self
            .child_collision
            .take_if(|c| c.old_our_spi == old_our_spi);
        let mut sa = None;
        let mut nr = None;
        let mut ke = None;
        for p in payloads {
            match p {
                Payload::Notify(n) if n.notify_type.is_error() => return,
                Payload::Sa(s) => sa = Some(s),
                Payload::Nonce(n) => nr = Some(*n),
                Payload::Ke(k) => ke = Some(k),
                _ => {}
            }
        }
        let (Some(sa), Some(nr)) = (sa, nr) else {
            return;
        };
        let groups: Vec<_> = dh.iter().map(|d| d.group()).collect();
        let Some((_, peer_spi, cipher, group)) = choose_esp(self.policy(), sa, &groups) else {
            return;
        };
        if group != groups.first().copied() {
            return;
        }
        let g_ir = match (dh, ke) {
            (Some(dh), Some(ke)) if ke.dh_group == dh.group().transform_id() => {
                match dh.shared_secret(ke.data) {
                    Ok(s) => Some(s),
                    Err(_) => return,
                }
            }
            (None, _) => None,
            _ => return,
        };
        let esp = ChildSaKeys::derive(
            self.suite.prf,
            &self.keys.sk_d,
            g_ir.as_deref(),
            ni,
            nr,
            cipher.key_sizes(),
        )
        .ok()
        .and_then(|k| EspSa::from_child_keys(cipher, &k, true, our_spi, peer_spi).ok());
        let Some(esp) = esp else {
            return;
        };
        self.children.push(Child {
            our_spi,
            peer_spi,
            created: now,
            replaced: false,
            superseded: None,
        });
        self.events.push_back(IkeEvent::ChildUp {
            our_spi,
            peer_spi,
            cipher,
            sa: Box::new(esp),
            rekey_of: Some(old_our_spi),
        });
        // RFC 7296 2.8.1: the exchange with the lowest nonce made the redundant SA; its
        // initiator deletes it, the other one's initiator deletes the old SA.
        let delete = match collision {
            Some(c) if ours_is_redundant([ni, nr], [&c.ni, &c.nr]) => our_spi,
            Some(c) => {
                self.mark_replaced(c.our_spi);
                old_our_spi
            }
            None => old_our_spi,
        };
        self.mark_replaced(delete);
        let spi = delete.to_be_bytes();
        self.send_request_for(
            now,
            ExchangeType::INFORMATIONAL,
            Request::DeleteChild { our_spi: delete },
            &[Payload::Delete(DeletePayload::esp(&spi))],
        );
    }

    fn mark_replaced(&mut self, our_spi: u32) {
        if let Some(c) = self.children.iter_mut().find(|c| c.our_spi == our_spi) {
            c.replaced = true;
        }
    }

    /// The new SA from the client's answer to our IKE rekey of the SA with `old_prf` and
    /// `old_sk_d`, or None when it refused or answered nonsense.
    fn own_ike_rekey_result(
        &mut self,
        old_prf: super::super::crypto::prf::Prf,
        old_sk_d: &[u8],
        spi_i: u64,
        ni: &[u8],
        dh: DhPrivate,
        payloads: &[Payload<'_>],
    ) -> Option<NewSa> {
        let mut sa = None;
        let mut nr = None;
        let mut ke = None;
        for p in payloads {
            match p {
                Payload::Notify(n) if n.notify_type.is_error() => return None,
                Payload::Sa(s) => sa = Some(s),
                Payload::Nonce(n) => nr = Some(*n),
                Payload::Ke(k) => ke = Some(k),
                _ => {}
            }
        }
        let (sa, nr, ke) = (sa?, nr?, ke?);
        let spi_r = match sa.proposals.as_slice() {
            [p] if p.protocol == ProtocolId::IKE => <[u8; 8]>::try_from(p.spi)
                .ok()
                .map(u64::from_be_bytes)
                .filter(|s| *s != 0)?,
            _ => return None,
        };
        let IkeChoice::Chosen { suite, .. } = choose_ike(self.policy(), sa, ke.dh_group) else {
            return None;
        };
        if suite.dh != dh.group() || !nonce_len_ok(nr) {
            return None;
        }
        let g_ir = dh.shared_secret(ke.data).ok()?;
        let seed = super::super::crypto::keymat::rekey_skeyseed(old_prf, old_sk_d, &g_ir, ni, nr);
        let keys = IkeSaKeys::derive(
            suite.prf,
            suite.cipher.key_sizes(),
            &seed,
            ni,
            nr,
            spi_i,
            spi_r,
        )
        .ok()?;
        // We started it: we are the new SA's initiator.
        let sk_in = SkKeys::new(suite.cipher, &keys.sk_er, &keys.sk_ar).ok()?;
        let sk_out = SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai).ok()?;
        Some(NewSa {
            spi_i,
            spi_r,
            initiator: true,
            suite,
            keys,
            sk_in,
            sk_out,
        })
    }

    /// Makes `new` the current IKE SA; the replaced one answers on its SPIs until it is
    /// deleted (by us when `delete_old`: we started the rekey) or expires.
    pub(super) fn switch_to(&mut self, now: Instant, new: NewSa, delete_old: bool) {
        let mut old = OldSa {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: self.ike_initiator,
            sk_in: std::mem::replace(&mut self.sk_in, new.sk_in),
            sk_out: std::mem::replace(&mut self.sk_out, new.sk_out),
            next_peer_id: self.next_peer_id,
            last_response: self.last_response.take(),
            reassembly: std::mem::take(&mut self.reassembly),
            expires: now + OLD_SA_RETENTION,
            delete_id: None,
            own_rekey: None,
            response_reassembly: Reassembly::default(),
        };
        if delete_old {
            let id = self.next_our_id;
            old.delete_id = Some(id);
            self.send_old_delete(&mut old, id);
        }
        let old_spis = (old.spi_i, old.spi_r);
        if self.old_sas.len() >= MAX_OLD_SAS {
            let gone = self.old_sas.remove(0);
            self.events.push_back(IkeEvent::OldIkeSaGone {
                spis: (gone.spi_i, gone.spi_r),
            });
        }
        self.old_sas.push(old);
        self.spi_i = new.spi_i;
        self.spi_r = new.spi_r;
        self.ike_initiator = new.initiator;
        self.suite = new.suite;
        self.keys = new.keys;
        self.next_peer_id = 0;
        self.id_slack = 0;
        self.next_our_id = 0;
        // A request of ours in flight on the old SA is abandoned; the new SA starts afresh.
        self.outstanding = None;
        self.keys_created = now;
        self.last_rx = now;
        self.events.push_back(IkeEvent::IkeRekeyed {
            old: old_spis,
            new: (new.spi_i, new.spi_r),
        });
    }

    /// Sends a Delete of the IKE SA `old` on its own SPIs and keys (once).
    fn send_old_delete(&mut self, old: &mut OldSa, message_id: u32) {
        let header = message::header(
            old.spi_i,
            old.spi_r,
            ExchangeType::INFORMATIONAL,
            old.initiator,
            false,
            message_id,
        );
        let datagrams = message::seal(
            &mut old.sk_out,
            &mut *self.entropy,
            header,
            &[Payload::Delete(DeletePayload::ike())],
            false,
            self.cfg.fragment_size,
        );
        for d in datagrams {
            self.transmits.push_back(Transmit {
                to: self.peer,
                nat_t: self.peer_nat_t,
                data: d,
            });
        }
    }

    /// A response on a replaced IKE SA: to our Delete of it, or to an IKE rekey of ours that
    /// the client's overtook.
    pub(super) fn on_old_response(
        &mut self,
        now: Instant,
        index: usize,
        msg: &Message<'_>,
        raw: &[u8],
    ) {
        let id = msg.header.message_id;
        let old = &mut self.old_sas[index];
        let rekey = old.own_rekey.as_ref().is_some_and(|r| r.message_id == id);
        if old.delete_id != Some(id) && !rekey {
            return;
        }
        let Ok(Opened::Complete {
            first_inner,
            plaintext,
        }) = old.response_reassembly.open(&old.sk_in, msg, raw)
        else {
            return;
        };
        self.last_rx = now;
        if !rekey {
            let gone = self.old_sas.remove(index);
            self.events.push_back(IkeEvent::OldIkeSaGone {
                spis: (gone.spi_i, gone.spi_r),
            });
            return;
        }
        let Some(own) = self.old_sas[index].own_rekey.take() else {
            return;
        };
        let old_spis = (self.old_sas[index].spi_i, self.old_sas[index].spi_r);
        let payloads = message::inner(first_inner, &plaintext).unwrap_or_default();
        let Some(ours) = self.own_ike_rekey_result(
            own.old_prf,
            &own.old_sk_d,
            own.spi_i,
            &own.ni,
            own.dh,
            &payloads,
        ) else {
            // Refused (the client's rekey replaced the SA first): the client's SA stays.
            return;
        };
        let our_nonces = [own.ni.as_slice(), own_nr(&payloads)];
        let theirs = [own.peer_nonces.0.as_slice(), own.peer_nonces.1.as_slice()];
        if ours_is_redundant(our_nonces, theirs) || self.spis() != own.peer_spis {
            // Ours is redundant (or the client moved on): delete it; the client deletes the
            // old SA. Nothing routes our SA to us, so the Delete is sent once, unanswered.
            let mut parked = OldSa {
                spi_i: ours.spi_i,
                spi_r: ours.spi_r,
                initiator: true,
                sk_in: ours.sk_in,
                sk_out: ours.sk_out,
                next_peer_id: 0,
                last_response: None,
                reassembly: Reassembly::default(),
                expires: now,
                delete_id: Some(0),
                own_rekey: None,
                response_reassembly: Reassembly::default(),
            };
            self.send_old_delete(&mut parked, 0);
            return;
        }
        // Ours survives: the client deletes its SA (now replaced), we the one both rekeyed.
        self.switch_to(now, ours, false);
        if let Some(old) = self
            .old_sas
            .iter()
            .position(|o| (o.spi_i, o.spi_r) == old_spis)
        {
            let mut o = self.old_sas.remove(old);
            let id = own.message_id.wrapping_add(1);
            o.delete_id = Some(id);
            self.send_old_delete(&mut o, id);
            self.old_sas.insert(old, o);
        }
    }
}

/// The client's nonce in its answer to our rekey.
fn own_nr<'a>(payloads: &[Payload<'a>]) -> &'a [u8] {
    payloads
        .iter()
        .find_map(|p| match p {
            Payload::Nonce(n) => Some(*n),
            _ => None,
        })
        .unwrap_or_default()
}
