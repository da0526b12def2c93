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
    /// or retry (another group, later).
    pub(super) fn on_ike_rekey_response(
        &mut self,
        now: Instant,
        new_spi_i: u64,
        ni: &[u8],
        dh: DhPrivate,
        payloads: &[Payload<'_>],
    ) {
        let lifetime = self.cfg.ike_lifetime;
        let mut sa = None;
        let mut nr = None;
        let mut ke = None;
        for p in payloads {
            match p {
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
                    // The current IKE SA keeps working.
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
        let Some(old) = self.sa.replace(SaKeys {
            suite,
            keys,
            sk_in,
            sk_out,
        }) else {
            return;
        };
        // Delete the old SA on its own SPIs, with its own message IDs and keys.
        let (old_spi_i, old_spi_r) = (self.spi_i, self.spi_r);
        let delete_id = self.next_our_id;
        let mut old_sk_out = old.sk_out;
        let header = message::header(
            old_spi_i,
            old_spi_r,
            ExchangeType::INFORMATIONAL,
            true,
            false,
            delete_id,
        );
        let delete = message::seal(
            &mut old_sk_out,
            &mut *self.entropy,
            header,
            &[Payload::Delete(DeletePayload::ike())],
            false,
            self.cfg.fragment_size,
        );
        for d in &delete {
            self.transmits.push_back(Transmit {
                to: self.gateway,
                nat_t: self.nat_t,
                data: d.clone(),
            });
        }
        self.old_sas.push(OldIke {
            spi_i: old_spi_i,
            spi_r: old_spi_r,
            sk_in: old.sk_in,
            sk_out: old_sk_out,
            next_peer_id: self.next_peer_id,
            last_response: self.last_response.take(),
            request_reassembly: std::mem::take(&mut self.request_reassembly),
            response_reassembly: std::mem::take(&mut self.response_reassembly),
            delete_id,
            delete,
            next_send: now + Duration::from_secs(1),
            sends: 1,
        });
        self.spi_i = new_spi_i;
        self.spi_r = new_spi_r;
        self.next_our_id = 0;
        self.next_peer_id = 0;
        self.rekey_group = None;
        self.ike_rekey_at = deadline(now, lifetime);
        tracing::debug!(
            old = format_args!("{old_spi_i:016x}_{old_spi_r:016x}"),
            new = format_args!("{new_spi_i:016x}_{new_spi_r:016x}"),
            "IKE SA rekeyed"
        );
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
        if h.flags.response() {
            if h.message_id == old.delete_id
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
            Ok(Opened::Partial) | Err(_) => return,
        };
        old.next_peer_id = h.message_id.wrapping_add(1);
        self.last_rx = now;
        let (reply, deleted): (Vec<Payload<'_>>, bool) =
            match message::inner(first_inner, &plaintext) {
                Err(_) => (vec![notify(NotifyType::INVALID_SYNTAX, &[])], false),
                Ok(payloads) => match h.exchange {
                    ExchangeType::INFORMATIONAL => {
                        let deleted = payloads.iter().any(
                            |p| matches!(p, Payload::Delete(d) if d.protocol_id == ProtocolId::IKE),
                        );
                        (Vec::new(), deleted)
                    }
                    ExchangeType::CREATE_CHILD_SA => {
                        (vec![notify(NotifyType::TEMPORARY_FAILURE, &[])], false)
                    }
                    _ => (vec![notify(NotifyType::INVALID_SYNTAX, &[])], false),
                },
            };
        let header = message::header(old.spi_i, old.spi_r, h.exchange, true, true, h.message_id);
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
    /// forgotten after a few tries (it does not affect the current SA).
    pub(super) fn old_sa_timeouts(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.old_sas.len() {
            let o = &mut self.old_sas[i];
            if now < o.next_send {
                i += 1;
                continue;
            }
            if o.sends >= MAX_DELETE_SENDS {
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
