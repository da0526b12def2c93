//! IKE SA rekeying (RFC 7296 1.3.2, 2.18) from the client's side: the CREATE_CHILD_SA
//! exchange, the switch to the new SA, and the Delete of the old one on its old SPIs.

use std::time::{Duration, Instant};

use super::*;

impl IkeInitiator {
    /// Sends `[SA(IKE, our new SPI), Ni, KEi]` on the current IKE SA, with the current
    /// suite's group (or the one the gateway asked for).
    pub(super) fn send_ike_rekey(&mut self, now: Instant) {
        let Some(sa) = &self.sa else {
            return;
        };
        let group = self.rekey_group.unwrap_or(sa.suite.dh);
        let (dh, public) = match group.generate(&mut *self.entropy, &*self.cfg.rng) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "key generation for the IKE rekey failed");
                self.ike_rekey_at = deadline(now, REKEY_RETRY.min(self.cfg.ike_lifetime));
                return;
            }
        };
        let mut spi_i = 0;
        while spi_i == 0 || spi_i == self.spi_i {
            spi_i = self.entropy.next_u64();
        }
        let mut ni = vec![0u8; 32];
        self.entropy.fill(&mut ni);
        let spi_bytes = spi_i.to_be_bytes();
        let payloads = [
            Payload::Sa(ike_offer(&self.cfg.policy, &spi_bytes)),
            Payload::Nonce(&ni),
            Payload::Ke(KePayload {
                dh_group: group.transform_id(),
                data: &public,
            }),
        ];
        let request = Request::RekeyIke {
            spi_i,
            ni: ni.clone(),
            dh,
        };
        self.send_request(now, ExchangeType::CREATE_CHILD_SA, request, &payloads);
    }

    /// The gateway's answer to our IKE rekey: switch to the new SA and delete the old one,
    /// or retry (another group, later). When the gateway rekeyed the IKE SA at the same
    /// time (we answered it meanwhile), the lowest nonce decides which new SA stays.
    pub(super) fn on_ike_rekey_response(
        &mut self,
        now: Instant,
        new_spi_i: u64,
        ni: &[u8],
        dh: DhPrivate,
        payloads: &[Payload<'_>],
    ) {
        let lifetime = self.cfg.ike_lifetime;
        let theirs = self.peer_ike_rekey.take();
        let mut sa = None;
        let mut nr = None;
        let mut ke = None;
        for p in payloads {
            match p {
                Payload::Notify(n) if n.notify_type.is_error() && theirs.is_some() => {
                    // The gateway's own rekey replaced the SA: take its new one.
                    tracing::debug!(
                        notify = ?n.notify_type,
                        "gateway refused our IKE rekey; it rekeyed the SA itself"
                    );
                    self.rekey_restarts = 0;
                    self.rekey_group = None;
                    if let Some(theirs) = theirs {
                        self.switch_ike(now, theirs, false);
                    }
                    self.ike_rekey_at = deadline(now, lifetime);
                    return;
                }
                Payload::Notify(n) if n.notify_type == NotifyType::INVALID_KE_PAYLOAD => {
                    let wanted = n
                        .invalid_ke_group()
                        .and_then(DhGroup::from_transform_id)
                        .filter(|g| *g != dh.group() && self.cfg.policy.dh_groups.contains(g));
                    match wanted {
                        Some(g) if self.rekey_restarts < MAX_REKEY_RESTARTS => {
                            self.rekey_restarts += 1;
                            self.rekey_group = Some(g);
                            self.queue.push_front(Queued::RekeyIke);
                        }
                        _ => {
                            tracing::warn!(
                                group = ?n.invalid_ke_group(),
                                "gateway wants a DH group for the IKE rekey we cannot use"
                            );
                            self.rekey_restarts = 0;
                            self.ike_rekey_at = deadline(now, lifetime);
                        }
                    }
                    return;
                }
                Payload::Notify(n) if n.notify_type.is_error() => {
                    // The current IKE SA keeps working; TEMPORARY_FAILURE (the gateway is
                    // busy with another exchange) is retried soon.
                    tracing::warn!(notify = ?n.notify_type, "gateway refused to rekey the IKE SA");
                    self.rekey_restarts = 0;
                    self.ike_rekey_at = retry_deadline(now, lifetime, n.notify_type);
                    return;
                }
                Payload::Sa(s) => sa = Some(s),
                Payload::Nonce(n) => nr = Some(*n),
                Payload::Ke(k) => ke = Some(k),
                _ => {}
            }
        }
        self.rekey_restarts = 0;
        let (Some(sa), Some(nr), Some(ke)) = (sa, nr, ke) else {
            self.fail_established(
                now,
                "gateway's answer to the IKE rekey lacks SA, Nonce or KE".into(),
            );
            return;
        };
        let new_spi_r = match sa.proposals.as_slice() {
            [p] if p.protocol == ProtocolId::IKE => <[u8; 8]>::try_from(p.spi)
                .ok()
                .map(u64::from_be_bytes)
                .filter(|s| *s != 0),
            _ => None,
        };
        let suite = match choose_ike(&self.cfg.policy, sa, ke.dh_group) {
            IkeChoice::Chosen { suite, .. }
                if suite.dh == dh.group() && ke.dh_group == dh.group().transform_id() =>
            {
                Some(suite)
            }
            _ => None,
        };
        let (Some(new_spi_r), Some(suite)) = (new_spi_r, suite) else {
            self.fail_established(
                now,
                "gateway chose an IKE rekey proposal we did not offer".into(),
            );
            return;
        };
        if !nonce_len_ok(nr) {
            self.fail_established(now, "gateway's IKE rekey nonce has a bad length".into());
            return;
        }
        let Some(old) = &self.sa else {
            return;
        };
        let keys = dh
            .shared_secret(ke.data)
            .ok()
            .and_then(|g_ir| {
                old.keys
                    .rekeyed(
                        old.suite.prf,
                        suite.prf,
                        suite.cipher.key_sizes(),
                        ni,
                        nr,
                        &g_ir,
                        new_spi_i,
                        new_spi_r,
                    )
                    .ok()
            })
            .and_then(|keys| {
                let sk_in = SkKeys::new(suite.cipher, &keys.sk_er, &keys.sk_ar).ok()?;
                let sk_out = SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai).ok()?;
                Some((keys, sk_in, sk_out))
            });
        let Some((keys, sk_in, sk_out)) = keys else {
            self.fail_established(now, "key derivation for the rekeyed IKE SA failed".into());
            return;
        };
        let ours = NewIke {
            spi_i: new_spi_i,
            spi_r: new_spi_r,
            initiator: true,
            sa: SaKeys {
                suite,
                keys,
                sk_in,
                sk_out,
            },
            ni: ni.to_vec(),
            nr: nr.to_vec(),
        };
        self.rekey_group = None;
        self.ike_rekey_at = deadline(now, lifetime);
        match theirs {
            Some(theirs) if ours_is_redundant([&ours.ni, &ours.nr], [&theirs.ni, &theirs.nr]) => {
                // Ours holds the lowest nonce: the gateway's SA stays and the gateway deletes
                // the old one; we delete ours, never used.
                tracing::debug!("simultaneous IKE rekey: ours is redundant");
                self.switch_ike(now, theirs, false);
                self.park_ike(now, ours, true);
            }
            Some(theirs) => {
                // The gateway's holds it: it deletes that one, we the old SA.
                tracing::debug!("simultaneous IKE rekey: ours survives");
                self.switch_ike(now, ours, true);
                self.park_ike(now, theirs, false);
            }
            None => self.switch_ike(now, ours, true),
        }
    }

    /// Makes `new` the current IKE SA (message IDs from 0; the CHILD SAs move along) and keeps
    /// the replaced one answering on its SPIs, deleting it when `delete_old` (we started the
    /// rekey that replaced it) or waiting for the gateway's Delete.
    pub(super) fn switch_ike(&mut self, now: Instant, new: NewIke, delete_old: bool) {
        let Some(old) = self.sa.replace(new.sa) else {
            return;
        };
        let (old_spi_i, old_spi_r) = (self.spi_i, self.spi_r);
        let mut retired = OldIke {
            spi_i: old_spi_i,
            spi_r: old_spi_r,
            initiator: self.ike_initiator,
            sk_in: old.sk_in,
            sk_out: old.sk_out,
            next_peer_id: self.next_peer_id,
            last_response: self.last_response.take(),
            request_reassembly: std::mem::take(&mut self.request_reassembly),
            response_reassembly: std::mem::take(&mut self.response_reassembly),
            delete_id: self.next_our_id,
            delete: Vec::new(),
            next_send: now + OLD_SA_WAIT,
            sends: 0,
        };
        if delete_old {
            self.send_old_delete(now, &mut retired);
        }
        self.old_sas.push(retired);
        self.spi_i = new.spi_i;
        self.spi_r = new.spi_r;
        self.ike_initiator = new.initiator;
        self.next_our_id = 0;
        self.next_peer_id = 0;
        self.id_slack = 0;
        tracing::debug!(
            old = format_args!("{old_spi_i:016x}_{old_spi_r:016x}"),
            new = format_args!("{:016x}_{:016x}", new.spi_i, new.spi_r),
            initiator = new.initiator,
            "IKE SA rekeyed"
        );
    }

    /// Keeps a redundant IKE SA from a rekey collision until it is deleted: by us
    /// (`delete`), or by the gateway, which created it.
    pub(super) fn park_ike(&mut self, now: Instant, sa: NewIke, delete: bool) {
        let mut parked = OldIke {
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            initiator: sa.initiator,
            sk_in: sa.sa.sk_in,
            sk_out: sa.sa.sk_out,
            next_peer_id: 0,
            last_response: None,
            request_reassembly: Reassembly::default(),
            response_reassembly: Reassembly::default(),
            delete_id: 0,
            delete: Vec::new(),
            next_send: now + OLD_SA_WAIT,
            sends: 0,
        };
        if delete {
            self.send_old_delete(now, &mut parked);
        }
        self.old_sas.push(parked);
    }

    /// Sends the Delete of `old` on its own SPIs, with its own keys and message ID.
    fn send_old_delete(&mut self, now: Instant, old: &mut OldIke) {
        let header = message::header(
            old.spi_i,
            old.spi_r,
            ExchangeType::INFORMATIONAL,
            old.initiator,
            false,
            old.delete_id,
        );
        old.delete = message::seal(
            &mut old.sk_out,
            &mut *self.entropy,
            header,
            &[Payload::Delete(DeletePayload::ike())],
            false,
            self.cfg.fragment_size,
        );
        for d in &old.delete {
            self.transmits.push_back(Transmit {
                to: self.gateway,
                nat_t: self.nat_t,
                data: d.clone(),
            });
        }
        old.next_send = now + Duration::from_secs(1);
        old.sends = 1;
    }

    /// A message on a replaced IKE SA: the answer to our Delete of it, or a request from the
    /// gateway (answered; a Delete of that SA ends it too).
    pub(super) fn on_old_message(
        &mut self,
        now: Instant,
        index: usize,
        msg: &Message<'_>,
        raw: &[u8],
    ) {
        let h = msg.header;
        let old = &mut self.old_sas[index];
        if h.flags.initiator() == old.initiator {
            return;
        }
        if h.flags.response() {
            if !old.delete.is_empty()
                && h.message_id == old.delete_id
                && matches!(
                    old.response_reassembly.open(&old.sk_in, msg, raw),
                    Ok(Opened::Complete { .. })
                )
            {
                self.last_rx = now;
                self.old_sas.remove(index);
            }
            return;
        }
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
                        to: self.gateway,
                        nat_t: self.nat_t,
                        data: x,
                    });
                }
            }
            return;
        }
        if h.message_id != old.next_peer_id {
            return;
        }
        let (first_inner, plaintext) = match old.request_reassembly.open(&old.sk_in, msg, raw) {
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
        let (notify_type, deleted, children) = match message::inner(first_inner, &plaintext) {
            Err(_) => (Some(NotifyType::INVALID_SYNTAX), false, Vec::new()),
            Ok(payloads) => match h.exchange {
                ExchangeType::INFORMATIONAL => {
                    let deleted = payloads.iter().any(
                        |p| matches!(p, Payload::Delete(d) if d.protocol_id == ProtocolId::IKE),
                    );
                    // CHILD SA deletes are answered as usual (RFC 7296 2.25.2); they belong to
                    // the session, not to one IKE SA.
                    (None, deleted, self.delete_children(&payloads))
                }
                // Everything else belongs on the current SA.
                ExchangeType::CREATE_CHILD_SA => {
                    (Some(NotifyType::TEMPORARY_FAILURE), false, Vec::new())
                }
                _ => (Some(NotifyType::INVALID_SYNTAX), false, Vec::new()),
            },
        };
        let mut reply = Vec::new();
        if let Some(t) = notify_type {
            reply.push(notify(t, &[]));
        }
        if !children.is_empty() {
            reply.push(Payload::Delete(DeletePayload::esp(&children)));
        }
        let old = &mut self.old_sas[index];
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
                to: self.gateway,
                nat_t: self.nat_t,
                data: d.clone(),
            });
        }
        old.last_response = Some((h.message_id, datagrams));
        if deleted {
            self.old_sas.remove(index);
        }
    }

    /// Retransmits the Deletes of replaced IKE SAs; one the gateway never confirms is
    /// forgotten after a few tries (it does not affect the current SA), and so is one the
    /// gateway should delete but does not.
    pub(super) fn old_sa_timeouts(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.old_sas.len() {
            let o = &mut self.old_sas[i];
            if now < o.next_send {
                i += 1;
                continue;
            }
            if o.delete.is_empty() || o.sends >= MAX_DELETE_SENDS {
                self.old_sas.remove(i);
                continue;
            }
            o.next_send = now + Duration::from_secs(1 << o.sends);
            o.sends += 1;
            for d in o.delete.clone() {
                self.transmits.push_back(Transmit {
                    to: self.gateway,
                    nat_t: self.nat_t,
                    data: d,
                });
            }
            i += 1;
        }
    }
}
