//! One ESP SA table for everything that holds ESP SAs: the gateway (thousands of owners) and
//! the client (one owner). Inbound SAs are found by SPI and remember their owner, so removal
//! by anyone but the owner is a no-op; each owner has a current outbound SA and, after a
//! rekey, the next one, switched make-before-break (RFC 7296 2.8): the new outbound SA is
//! used once the peer shows it has the new SA (traffic arrives on it) or the old one is gone.

use std::hash::Hash;

use crate::idhash::IdMap;

use super::{EspError, EspInbound, EspInboundState, EspOutbound, EspOutboundState, EspPayload};

/// Why a packet did not go through the table.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Shorter than an SPI.
    #[error("packet too short for ESP")]
    Malformed,
    /// No SA with this SPI.
    #[error("no SA for SPI {0:#010x}")]
    UnknownSpi(u32),
    /// The owner has no outbound SA (yet).
    #[error("no outbound SA")]
    NoOutbound,
    /// The SA refused the packet (authentication, replay, padding...).
    #[error(transparent)]
    Esp(#[from] EspError),
}

/// Every ESP SA of one owner, taken out of the table.
pub struct OwnerSas {
    /// Inbound SAs (each knows its SPI).
    pub inbound: Vec<EspInbound>,
    /// The outbound SA in use.
    pub current: Option<EspOutbound>,
    /// After a rekey: the new SA's inbound SPI and its outbound half, used once the peer
    /// shows it has the new SA.
    pub next: Option<(u32, EspOutbound)>,
}

/// A copy of one owner's SAs (see [`EspTable::export_owner`]).
#[derive(Default)]
pub struct OwnerStates {
    /// Inbound SAs.
    pub inbound: Vec<EspInboundState>,
    /// The outbound SA in use.
    pub current: Option<EspOutboundState>,
    /// The next outbound SA after a rekey, with its inbound SPI.
    pub next: Option<(u32, EspOutboundState)>,
}

struct Outbound {
    /// The owner's inbound SPIs (so removing an owner touches only its own SAs).
    spis: Vec<u32>,
    current: Option<EspOutbound>,
    /// (the new SA's inbound SPI, its outbound half)
    next: Option<(u32, EspOutbound)>,
}

/// ESP SAs by SPI (inbound) and by owner (outbound).
pub struct EspTable<O> {
    inbound: IdMap<u32, (O, EspInbound)>,
    outbound: IdMap<O, Outbound>,
}

impl<O> Default for EspTable<O> {
    fn default() -> Self {
        Self {
            inbound: IdMap::default(),
            outbound: IdMap::default(),
        }
    }
}

impl<O: Copy + Eq + Hash + std::fmt::Debug> EspTable<O> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a new CHILD SA of `owner`: inbound under `spi` (false, and nothing changes,
    /// when another owner holds that SPI). With `rekey`, the outbound half waits until the
    /// peer uses the new SA; otherwise it replaces the current one at once.
    pub fn install(
        &mut self,
        owner: O,
        spi: u32,
        inbound: EspInbound,
        outbound: EspOutbound,
        rekey: bool,
    ) -> bool {
        if self.inbound.get(&spi).is_some_and(|(o, _)| *o != owner) {
            return false;
        }
        self.inbound.insert(spi, (owner, inbound));
        let out = self.outbound.entry(owner).or_insert(Outbound {
            spis: Vec::new(),
            current: None,
            next: None,
        });
        if !out.spis.contains(&spi) {
            out.spis.push(spi);
        }
        if rekey && out.current.is_some() {
            out.next = Some((spi, outbound));
        } else {
            out.current = Some(outbound);
            out.next = None;
        }
        true
    }

    /// Removes inbound SA `spi` if `owner` holds it; a waiting outbound SA takes over (the
    /// old SA is gone, so the peer has the new one). True when something was removed.
    pub fn remove(&mut self, owner: O, spi: u32) -> bool {
        if !self.inbound.get(&spi).is_some_and(|(o, _)| *o == owner) {
            return false;
        }
        self.inbound.remove(&spi);
        if let Some(out) = self.outbound.get_mut(&owner) {
            out.spis.retain(|s| *s != spi);
        }
        if let Some(out) = self.outbound.get_mut(&owner)
            && let Some((next_spi, next)) = out.next.take()
        {
            if next_spi == spi {
                // The new SA itself went: keep the current one.
            } else {
                out.current = Some(next);
            }
        }
        true
    }

    /// Removes everything `owner` holds; returns its inbound SPIs.
    pub fn remove_owner(&mut self, owner: O) -> Vec<u32> {
        let spis = self
            .outbound
            .remove(&owner)
            .map(|o| o.spis)
            .unwrap_or_default();
        for s in &spis {
            if self.inbound.get(s).is_some_and(|(o, _)| *o == owner) {
                self.inbound.remove(s);
            }
        }
        spis
    }

    /// The owner of inbound SA `spi`.
    /// Removes and returns every SA of `owner` (a restart handing the tunnel over): its
    /// inbound SAs, its current outbound SA and the next one waiting for make-before-break.
    pub fn take_owner(&mut self, owner: O) -> OwnerSas {
        let out = self.outbound.remove(&owner);
        let mut inbound = Vec::new();
        let (current, next) = match out {
            Some(o) => {
                for s in &o.spis {
                    if self.inbound.get(s).is_some_and(|(w, _)| *w == owner)
                        && let Some((_, sa)) = self.inbound.remove(s)
                    {
                        inbound.push(sa);
                    }
                }
                (o.current, o.next)
            }
            None => (None, None),
        };
        OwnerSas {
            inbound,
            current,
            next,
        }
    }

    /// A copy of every SA of `owner`, leaving them in use (a standby's copy, issue 17): the
    /// states as [`EspInbound::export`] and [`EspOutbound::export`] give them. The caller
    /// must skip the outbound sequence numbers the originals may still send.
    pub fn export_owner(&self, owner: O) -> OwnerStates {
        let Some(o) = self.outbound.get(&owner) else {
            return OwnerStates::default();
        };
        OwnerStates {
            inbound: o
                .spis
                .iter()
                .filter_map(|s| self.inbound.get(s))
                .filter(|(w, _)| *w == owner)
                .map(|(_, sa)| sa.export())
                .collect(),
            current: o.current.as_ref().map(EspOutbound::export),
            next: o.next.as_ref().map(|(spi, sa)| (*spi, sa.export())),
        }
    }

    /// Installs what [`take_owner`](Self::take_owner) returned (in another process) for
    /// `owner`; false (nothing installed) when an inbound SPI belongs to someone else.
    pub fn restore_owner(&mut self, owner: O, sas: OwnerSas) -> bool {
        if sas.inbound.iter().any(|sa| {
            self.inbound
                .get(&sa.spi())
                .is_some_and(|(o, _)| *o != owner)
        }) {
            return false;
        }
        let spis: Vec<u32> = sas.inbound.iter().map(|sa| sa.spi()).collect();
        for sa in sas.inbound {
            self.inbound.insert(sa.spi(), (owner, sa));
        }
        self.outbound.insert(
            owner,
            Outbound {
                spis,
                current: sas.current,
                next: sas.next,
            },
        );
        true
    }

    pub fn owner(&self, spi: u32) -> Option<O> {
        self.inbound.get(&spi).map(|(o, _)| *o)
    }

    /// Decrypts an ESP packet (starting with its SPI) into `out`; returns the owner and the
    /// payload. Traffic on a rekeyed SA switches the owner's outbound SA to the new one.
    pub fn decrypt<'a>(
        &mut self,
        packet: &[u8],
        out: &'a mut [u8],
    ) -> Result<(O, EspPayload<'a>), TableError> {
        let spi = packet
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(TableError::Malformed)?;
        let (owner, sa) = self
            .inbound
            .get_mut(&spi)
            .ok_or(TableError::UnknownSpi(spi))?;
        let owner = *owner;
        let payload = sa.decrypt(packet, out)?;
        if let Some(o) = self.outbound.get_mut(&owner)
            && o.next.as_ref().is_some_and(|(s, _)| *s == spi)
        {
            o.current = o.next.take().map(|(_, sa)| sa);
        }
        Ok((owner, payload))
    }

    /// Encrypts an inner packet for `owner` into `out`; returns the ESP packet's length.
    pub fn encrypt(&mut self, owner: O, inner: &[u8], out: &mut [u8]) -> Result<usize, TableError> {
        let sa = self
            .outbound
            .get_mut(&owner)
            .and_then(|o| o.current.as_mut())
            .ok_or(TableError::NoOutbound)?;
        Ok(sa.encrypt(inner, out)?.len())
    }

    /// Number of inbound SAs.
    pub fn len(&self) -> usize {
        self.inbound.len()
    }

    /// True when there is no inbound SA.
    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::{EspCipher, EspInbound, EspOutbound, EspSa};

    /// A pair of SAs as the two ends see them: (ours, the peer's).
    fn pair(key: u8, our_spi: u32, peer_spi: u32) -> (EspSa, EspSa) {
        let cipher = EspCipher::AesGcm16 { key_bits: 256 };
        let k_in = vec![key; 36];
        let k_out = vec![key.wrapping_add(1); 36];
        let sa = |out_spi, k_out: &[u8], in_spi, k_in: &[u8]| EspSa {
            outbound: EspOutbound::new(out_spi, cipher, k_out).unwrap(),
            inbound: EspInbound::new(in_spi, cipher, k_in).unwrap(),
        };
        let ours = sa(peer_spi, &k_out, our_spi, &k_in);
        let peers = sa(our_spi, &k_in, peer_spi, &k_out);
        (ours, peers)
    }

    const IP: [u8; 20] = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];

    #[test]
    fn removal_is_owner_checked_and_spis_are_not_shared() {
        let mut t: EspTable<u64> = EspTable::new();
        let (a, _) = pair(1, 100, 200);
        let (b, _) = pair(2, 100, 300);
        assert!(t.install(1, 100, a.inbound, a.outbound, false));
        assert!(
            !t.install(2, 100, b.inbound, b.outbound, false),
            "SPI 100 is owner 1's"
        );
        assert!(!t.remove(2, 100), "owner 2 cannot remove owner 1's SA");
        assert_eq!(t.owner(100), Some(1));
        assert!(t.remove(1, 100));
        assert!(t.is_empty());
    }

    #[test]
    fn rekey_switches_outbound_when_the_peer_uses_the_new_sa() {
        let mut t: EspTable<u64> = EspTable::new();
        let (old, mut peer_old) = pair(1, 100, 200);
        let (new, mut peer_new) = pair(5, 101, 201);
        t.install(7, 100, old.inbound, old.outbound, false);
        t.install(7, 101, new.inbound, new.outbound, true);
        let mut buf = vec![0u8; 2048];
        let mut plain = vec![0u8; 2048];
        // Still the old SA outbound: the peer decrypts with its old inbound half.
        let n = t.encrypt(7, &IP, &mut buf).unwrap();
        assert_eq!(
            peer_old
                .inbound
                .decrypt(&buf[..n], &mut plain)
                .unwrap()
                .packet,
            IP
        );
        // The peer sends on the new SA: we switch.
        let sealed = peer_new.outbound.encrypt(&IP, &mut plain).unwrap().to_vec();
        let (owner, p) = t.decrypt(&sealed, &mut buf).unwrap();
        assert_eq!((owner, p.packet), (7, &IP[..]));
        let n = t.encrypt(7, &IP, &mut buf).unwrap();
        assert_eq!(
            peer_new
                .inbound
                .decrypt(&buf[..n], &mut plain)
                .unwrap()
                .packet,
            IP
        );
        assert!(peer_old.inbound.decrypt(&buf[..n], &mut plain).is_err());
        let _ = &mut peer_old;
    }

    #[test]
    fn deleting_the_old_sa_switches_too_and_owners_go_whole() {
        let mut t: EspTable<u64> = EspTable::new();
        let (old, _) = pair(1, 100, 200);
        let (new, mut peer_new) = pair(5, 101, 201);
        t.install(7, 100, old.inbound, old.outbound, false);
        t.install(7, 101, new.inbound, new.outbound, true);
        assert!(t.remove(7, 100));
        let mut buf = vec![0u8; 2048];
        let mut plain = vec![0u8; 2048];
        let n = t.encrypt(7, &IP, &mut buf).unwrap();
        assert_eq!(
            peer_new
                .inbound
                .decrypt(&buf[..n], &mut plain)
                .unwrap()
                .packet,
            IP
        );
        assert_eq!(t.remove_owner(7), vec![101]);
        assert_eq!(t.encrypt(7, &IP, &mut buf), Err(TableError::NoOutbound));
        assert!(matches!(
            t.decrypt(&[0, 0, 0, 101, 0, 0, 0, 1], &mut buf),
            Err(TableError::UnknownSpi(101))
        ));
    }
}
