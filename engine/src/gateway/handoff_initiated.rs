//! Taking over a site SA this gateway started (`initiate = true`), exported by the previous
//! process or copied from the active gateway of a pair: the initiator's counterpart of
//! `import_ike` in `handoff.rs`. The SA carries on as the connection's active SA with the
//! same SPIs, keys and message IDs; the peer sees no new IKE_SA_INIT. An attempt of our own
//! to start the same connection that has not come up yet (a standby initiates its
//! connections too) is dropped: the copy replaces it.

use std::time::Instant;

use tracing::info;

use super::handoff::{ClaimedEsp, IkeHandoff};
use super::sites::initiator_config;
use super::tunnel::{IkeSa, IkeTunnel, Tunnel};
use super::{GatewayCore, Protocol, TunnelId};
use crate::esp::EspOutbound;
use crate::esp::table::OwnerSas;
use crate::ikev2::initiator::{IkeInitiator, InitiatorHandoff};
use crate::openvpn::server::back;

impl GatewayCore {
    pub(super) fn import_initiated(
        &mut self,
        now: Instant,
        i: IkeHandoff<InitiatorHandoff>,
    ) -> Result<(), String> {
        let rc = self
            .cfg
            .ikev2
            .clone()
            .ok_or("IKEv2 is not configured any more")?;
        let idx = self
            .sites
            .iter()
            .position(|c| c.cfg.peer.name == i.sa.site && !c.retired)
            .ok_or_else(|| format!("no site connection named {:?} here", i.sa.site))?;
        let spis = (i.sa.spi_i, i.sa.spi_r);
        if self.by_spis.contains_key(&spis)
            || self.by_local_spi.contains_key(&spis.0)
            || self.by_local_spi.contains_key(&spis.1)
        {
            return Err("its IKE SPIs are in use".into());
        }
        let ClaimedEsp {
            inbound,
            current,
            next,
            our_spis,
        } = self.claim_esp(i.esp_in, i.esp_out, i.esp_next)?;
        let table = self.shard.spis().clone();
        let release = |table: &crate::esp::SpiTable| {
            for &s in &our_spis {
                table.release(s);
            }
        };
        let ic = initiator_config(&rc, &self.sites[idx].cfg);
        let mut sa = match IkeInitiator::from_handoff(ic, (self.entropy)(), now, i.sa) {
            Ok(sa) => sa,
            Err(e) => {
                release(&table);
                return Err(e);
            }
        };
        sa.set_spi_table(table.clone());
        let id = self.new_tunnel_id();
        let cipher = current.as_ref().map(EspOutbound::cipher);
        if !self.esp.restore_owner(
            id,
            OwnerSas {
                inbound,
                current,
                next,
            },
        ) {
            release(&table);
            return Err("an ESP SPI is in use".into());
        }
        // Our own attempts at this connection that are not up: the copy replaces them.
        let pending: Vec<TunnelId> = self.sites[idx]
            .sas
            .iter()
            .copied()
            .filter(|o| {
                self.ike(*o)
                    .is_some_and(|e| e.established.is_none() && matches!(e.sa, IkeSa::Initiator(_)))
            })
            .collect();
        for o in pending {
            if let Some(e) = self.ike_mut(o) {
                e.sa.delete(now, "replaced by the SA taken over");
            }
            self.dirty.push(o);
        }
        let name = i.common.client.clone();
        let remote = sa.gateway();
        info!(connection = %name, remote = %remote, role = "initiator", "site SA taken over from the previous process");
        let mut t = IkeTunnel::new(IkeSa::Initiator(Box::new(sa)), Some(idx), Some(name));
        t.our_spis = our_spis;
        t.connected = true;
        t.established = Some(back(now, i.common.connected_ms_ago));
        (t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets) = i.counters;
        t.common = i.common.into_common(now);
        self.register_ike_spi(spis.0);
        self.register_ike_spi(spis.1);
        self.tunnels.insert(id, Tunnel::Ike(Box::new(t)));
        self.dirty.push(id);
        self.sites[idx].sas.push(id);
        let Some(cipher) = cipher else {
            return Ok(());
        };
        // Routes the connection's prefixes to it and marks the connection up; the SA keeps
        // the times it came with, and no handshake is counted.
        let kept = self.ike(id).map(|e| {
            (
                e.established,
                e.common.connected_at,
                e.common.last_handshake,
            )
        });
        self.site_sa_up(now, id, cipher);
        let c = self.counters.handshakes_ok.get_mut(Protocol::Site);
        *c = c.saturating_sub(1);
        if let (Some((established, connected, handshake)), Some(e)) = (kept, self.ike_mut(id)) {
            e.established = established;
            e.common.connected_at = connected;
            e.common.last_handshake = handshake;
        }
        Ok(())
    }
}
