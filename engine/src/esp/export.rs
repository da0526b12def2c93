//! Exporting and restoring one direction of an ESP SA: for a multi-core data plane (move
//! the SA to a worker), handing it to a standby, or a restart without drops.
//!
//! [`EspOutbound`] and [`EspInbound`] are plain values (`Send + Sync`, no references, no
//! I/O). Their state is the SPI, the cipher, the raw key material (the SA keeps a copy of
//! it, since ring's keys cannot give their bytes back) and the position in the sequence
//! number space: the next sequence number to send, or the anti-replay window.
//!
//! # Never reuse a sequence number
//!
//! The AEAD nonce and the CBC IV are derived from the sequence number, so two SAs sending
//! with the same key from the same sequence number break confidentiality (AES-GCM and
//! ChaCha20-Poly1305 lose their integrity too). An exported outbound SA must therefore be
//! *moved*, never copied:
//!
//! - [`EspOutbound::into_state`] consumes the SA: nothing can send from it afterwards.
//!   Use it whenever the SA leaves this place for good.
//! - [`EspOutbound::export`] takes a snapshot and leaves the SA usable. The exporter must
//!   stop sending from the original before the state is restored anywhere, or the restored
//!   SA must first skip every sequence number the original may have used since the
//!   snapshot ([`EspOutboundState::skip`], e.g. with a bound on packets per checkpoint
//!   interval).
//!
//! On the inbound side a stale snapshot is harmless for confidentiality, but packets the
//! original accepted after the snapshot would be accepted once more by the restored SA:
//! export it after the original stops receiving ([`EspInbound::into_state`]) when replays
//! matter.
//!
//! # Key bytes
//!
//! Key material lives in [`KeyMaterial`]: one heap allocation that is never moved or
//! reallocated, overwritten with zeros when dropped, and printed by `Debug` as
//! `<redacted>`. The state structs' `Debug` never shows keys either.

use std::fmt;

use super::sa::{EspCipher, EspError, EspInbound, EspOutbound};
use crate::openvpn::replay::ReplayWindow;

/// The first sequence number an outbound SA sends (RFC 4303 3.3.3).
const FIRST_SEQ: u64 = 1;
/// `next_seq` of an outbound SA that has sent sequence number 2^32 - 1 (exhausted).
const EXHAUSTED_SEQ: u64 = u32::MAX as u64 + 1;

/// Secret key bytes: wiped on drop, redacted in `Debug`.
///
/// The bytes sit in one heap allocation of exactly their length, so moving a
/// `KeyMaterial` (or the SA or state holding it) leaves no copy behind.
#[derive(Clone)]
pub struct KeyMaterial(Box<[u8]>);

impl KeyMaterial {
    /// A copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        Self(Box::from(bytes))
    }

    /// The key bytes (for serialising an exported state; handle with care).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of key bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no key bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn wipe(&mut self) {
        self.0.fill(0);
        // Keep the stores from being optimised away as dead.
        std::hint::black_box(&mut self.0);
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An exported [`EspOutbound`]. See the [module documentation](self) before restoring one:
/// the SA it came from must not send again.
pub struct EspOutboundState {
    /// The SPI written into every packet (the peer's).
    pub spi: u32,
    /// The cipher.
    pub cipher: EspCipher,
    /// [`EspCipher::key_material_len`] bytes: the encryption key (with the salt for AEADs),
    /// then the integrity key for AES-CBC.
    pub key: KeyMaterial,
    /// Sequence number of the next packet: 1 for a fresh SA, 2^32 once exhausted.
    pub next_seq: u64,
}

impl EspOutboundState {
    /// Skips `n` sequence numbers (saturating at exhaustion), so that a restored SA cannot
    /// repeat any of the next `n` the exporter may still have sent after an
    /// [`EspOutbound::export`] snapshot. The peer accepts the gap: its window only moves
    /// forward.
    pub fn skip(&mut self, n: u64) {
        self.next_seq = self.next_seq.saturating_add(n).min(EXHAUSTED_SEQ);
    }
}

impl fmt::Debug for EspOutboundState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspOutboundState")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("key", &format_args!("<redacted>"))
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

/// An exported [`EspInbound`]: keys and anti-replay window.
pub struct EspInboundState {
    /// The SPI this SA receives on (ours).
    pub spi: u32,
    /// The cipher.
    pub cipher: EspCipher,
    /// Key material, laid out as for [`EspOutboundState::key`].
    pub key: KeyMaterial,
    /// The anti-replay window (highest accepted sequence number and bitmap).
    pub replay: ReplayWindow,
}

impl fmt::Debug for EspInboundState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspInboundState")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("key", &format_args!("<redacted>"))
            .field("highest_seq", &self.replay.highest())
            .finish()
    }
}

impl EspOutbound {
    /// Consumes the SA and returns its state: the safe way to move it elsewhere, since
    /// nothing can send from it afterwards.
    pub fn into_state(self) -> EspOutboundState {
        EspOutboundState {
            spi: self.spi,
            cipher: self.cipher,
            key: self.material,
            next_seq: self.next_seq,
        }
    }

    /// A snapshot of the SA's state, leaving the SA usable. The caller must stop sending
    /// from `self` before the state is restored, or [`skip`](EspOutboundState::skip)
    /// what `self` may send meanwhile: a sequence number sent twice with one key reuses a
    /// nonce. Prefer [`into_state`](Self::into_state).
    pub fn export(&self) -> EspOutboundState {
        EspOutboundState {
            spi: self.spi,
            cipher: self.cipher,
            key: self.material.clone(),
            next_seq: self.next_seq,
        }
    }

    /// Rebuilds an SA from an exported state; it continues at `state.next_seq`.
    pub fn restore(state: EspOutboundState) -> Result<Self, EspError> {
        if !(FIRST_SEQ..=EXHAUSTED_SEQ).contains(&state.next_seq) {
            return Err(EspError::InvalidState(
                "next sequence number outside 1..=2^32",
            ));
        }
        Ok(Self {
            spi: state.spi,
            cipher: state.cipher,
            keys: state.cipher.keys(state.key.as_bytes())?,
            material: state.key,
            next_seq: state.next_seq,
        })
    }
}

impl EspInbound {
    /// Consumes the SA and returns its state (nothing can accept a packet from it
    /// afterwards, so the restored window is exact).
    pub fn into_state(self) -> EspInboundState {
        EspInboundState {
            spi: self.spi,
            cipher: self.cipher,
            key: self.material,
            replay: self.replay,
        }
    }

    /// A snapshot of the SA's state, leaving the SA usable. Packets the original accepts
    /// after the snapshot are not in the exported window.
    pub fn export(&self) -> EspInboundState {
        EspInboundState {
            spi: self.spi,
            cipher: self.cipher,
            key: self.material.clone(),
            replay: self.replay.clone(),
        }
    }

    /// Rebuilds an SA from an exported state, with its anti-replay window.
    pub fn restore(state: EspInboundState) -> Result<Self, EspError> {
        Ok(Self {
            spi: state.spi,
            cipher: state.cipher,
            keys: state.cipher.keys(state.key.as_bytes())?,
            material: state.key,
            replay: state.replay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::sa::EspSa;
    use crate::ikev2::crypto::Integ;
    use crate::openvpn::replay::ReplayError;

    const CIPHERS: [EspCipher; 6] = [
        EspCipher::AesGcm16 { key_bits: 128 },
        EspCipher::AesGcm16 { key_bits: 256 },
        EspCipher::ChaCha20Poly1305,
        EspCipher::AesCbc {
            key_bits: 128,
            integ: Integ::HmacSha1_96,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha256_128,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha512_256,
        },
    ];

    const SPI: u32 = 0x5eed_0001;

    fn key(cipher: EspCipher) -> Vec<u8> {
        (0..cipher.key_material_len())
            .map(|i| (i as u8).wrapping_mul(13).wrapping_add(0xa1))
            .collect()
    }

    fn pair(cipher: EspCipher) -> (EspOutbound, EspInbound) {
        let k = key(cipher);
        (
            EspOutbound::new(SPI, cipher, &k).unwrap(),
            EspInbound::new(SPI, cipher, &k).unwrap(),
        )
    }

    fn ipv4(n: u32) -> Vec<u8> {
        let mut p: Vec<u8> = (0..40 + n % 50).map(|i| (i as u8) ^ (n as u8)).collect();
        p[0] = 0x45;
        p
    }

    fn seal(tx: &mut EspOutbound, n: u32) -> Vec<u8> {
        let mut buf = [0u8; 256];
        tx.encrypt(&ipv4(n), &mut buf).unwrap().to_vec()
    }

    fn open(rx: &mut EspInbound, packet: &[u8]) -> Result<(u32, Vec<u8>), EspError> {
        let mut out = [0u8; 256];
        rx.decrypt(packet, &mut out)
            .map(|p| (p.seq, p.packet.to_vec()))
    }

    fn assert_send<T: Send + 'static>() {}
    fn assert_sync<T: Sync>() {}

    #[test]
    fn data_path_values_are_send_and_sync() {
        assert_send::<EspOutbound>();
        assert_send::<EspInbound>();
        assert_send::<EspSa>();
        assert_send::<EspOutboundState>();
        assert_send::<EspInboundState>();
        assert_send::<KeyMaterial>();
        assert_sync::<EspOutbound>();
        assert_sync::<EspInbound>();
        assert_sync::<EspOutboundState>();
        assert_sync::<EspInboundState>();
    }

    #[test]
    fn outbound_restored_after_n_packets_continues_where_it_stopped() {
        for cipher in CIPHERS {
            let (mut tx, mut rx) = pair(cipher);
            let mut wire: Vec<Vec<u8>> = (0..40).map(|n| seal(&mut tx, n)).collect();
            let state = tx.into_state();
            assert_eq!(state.next_seq, 41);
            // The restored SA runs on another thread, as a data-plane worker would.
            let more = std::thread::spawn(move || {
                let mut tx = EspOutbound::restore(state).unwrap();
                assert_eq!(tx.packets_sent(), 40);
                (40..80).map(|n| seal(&mut tx, n)).collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            wire.extend(more);
            for (n, packet) in wire.iter().enumerate() {
                let n = n as u32;
                assert_eq!(
                    open(&mut rx, packet),
                    Ok((n + 1, ipv4(n))),
                    "{cipher:?} packet {n}"
                );
            }
        }
    }

    #[test]
    fn a_snapshot_equals_the_consumed_state() {
        for cipher in CIPHERS {
            let (mut tx, _) = pair(cipher);
            seal(&mut tx, 0);
            let snapshot = tx.export();
            let mut a = EspOutbound::restore(snapshot).unwrap();
            let mut b = EspOutbound::restore(tx.into_state()).unwrap();
            assert_eq!(seal(&mut a, 1), seal(&mut b, 1), "{cipher:?}");
        }
    }

    #[test]
    fn skipping_sequence_numbers_after_a_snapshot_avoids_reuse() {
        for cipher in [EspCipher::AesGcm16 { key_bits: 256 }, CIPHERS[4]] {
            let (mut tx, mut rx) = pair(cipher);
            let mut state = tx.export();
            // The original keeps sending after the snapshot (fewer than 100 packets).
            let late: Vec<Vec<u8>> = (0..30).map(|n| seal(&mut tx, n)).collect();
            state.skip(100);
            let mut standby = EspOutbound::restore(state).unwrap();
            let p = seal(&mut standby, 7);
            assert_eq!(EspInbound::packet_spi(&p), Some(SPI));
            assert_eq!(p[4..8], 101u32.to_be_bytes());
            for q in &late {
                assert_ne!(q[4..8], p[4..8]);
            }
            assert_eq!(open(&mut rx, &late[0]).unwrap().0, 1);
            assert_eq!(open(&mut rx, &p), Ok((101, ipv4(7))));
        }
        let (tx, _) = pair(CIPHERS[0]);
        let mut state = tx.into_state();
        state.skip(u64::MAX);
        let mut tx = EspOutbound::restore(state).unwrap();
        let mut buf = [0u8; 256];
        assert_eq!(
            tx.encrypt(&ipv4(0), &mut buf),
            Err(EspError::SequenceExhausted)
        );
    }

    #[test]
    fn restored_inbound_rejects_old_replays_and_accepts_new_packets() {
        for cipher in CIPHERS {
            let (mut tx, mut rx) = pair(cipher);
            let wire: Vec<Vec<u8>> = (0..400).map(|n| seal(&mut tx, n)).collect();
            // Received before the export: 0..300 except 250 and 260 (reordered, still
            // in flight), with 299 first.
            open(&mut rx, &wire[299]).unwrap();
            for n in (0..299).filter(|&n| n != 250 && n != 260) {
                let r = open(&mut rx, &wire[n]);
                if n + 256 <= 299 {
                    assert_eq!(r, Err(EspError::Replay(ReplayError::TooOld(n as u32 + 1))));
                } else {
                    r.unwrap();
                }
            }
            let state = rx.into_state();
            assert_eq!(state.replay.highest(), 300);
            let mut rx = std::thread::spawn(move || EspInbound::restore(state).unwrap())
                .join()
                .unwrap();
            for n in (44..300).filter(|&n| n != 250 && n != 260) {
                assert_eq!(
                    open(&mut rx, &wire[n]),
                    Err(EspError::Replay(ReplayError::Replayed(n as u32 + 1))),
                    "{cipher:?} replay of {n}"
                );
            }
            assert_eq!(
                open(&mut rx, &wire[0]),
                Err(EspError::Replay(ReplayError::TooOld(1)))
            );
            // Still in the window and never seen: accepted once.
            assert_eq!(open(&mut rx, &wire[260]), Ok((261, ipv4(260))));
            assert!(open(&mut rx, &wire[260]).is_err());
            for (n, packet) in (300u32..).zip(&wire[300..]) {
                assert_eq!(open(&mut rx, packet), Ok((n + 1, ipv4(n))));
            }
            assert_eq!(rx.highest_seq(), 400);
        }
    }

    #[test]
    fn inbound_snapshot_keeps_the_original_usable() {
        let (mut tx, mut rx) = pair(CIPHERS[3]);
        let p1 = seal(&mut tx, 1);
        let p2 = seal(&mut tx, 2);
        open(&mut rx, &p1).unwrap();
        let state = rx.export();
        open(&mut rx, &p2).unwrap();
        let mut restored = EspInbound::restore(state).unwrap();
        assert!(open(&mut restored, &p1).is_err());
        assert_eq!(open(&mut restored, &p2), Ok((2, ipv4(2))));
    }

    #[test]
    fn a_whole_child_sa_moves_both_halves() {
        let cipher = EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha384_192,
        };
        let k = key(cipher);
        let mut a = EspSa {
            outbound: EspOutbound::new(2, cipher, &k).unwrap(),
            inbound: EspInbound::new(1, cipher, &k).unwrap(),
        };
        let mut b = EspSa {
            outbound: EspOutbound::new(1, cipher, &k).unwrap(),
            inbound: EspInbound::new(2, cipher, &k).unwrap(),
        };
        let p = seal(&mut a.outbound, 1);
        open(&mut b.inbound, &p).unwrap();
        let (out, inb) = (a.outbound.into_state(), a.inbound.into_state());
        let mut a = EspSa {
            outbound: EspOutbound::restore(out).unwrap(),
            inbound: EspInbound::restore(inb).unwrap(),
        };
        let q = seal(&mut a.outbound, 2);
        assert_eq!(open(&mut b.inbound, &q), Ok((2, ipv4(2))));
        let r = seal(&mut b.outbound, 3);
        assert_eq!(open(&mut a.inbound, &r), Ok((1, ipv4(3))));
        assert!(open(&mut b.inbound, &p).is_err());
    }

    #[test]
    fn impossible_states_are_refused() {
        let cipher = CIPHERS[2];
        let (tx, rx) = pair(cipher);
        let base = tx.into_state();
        for next_seq in [0, EXHAUSTED_SEQ + 1, u64::MAX] {
            let state = EspOutboundState {
                next_seq,
                key: base.key.clone(),
                ..base
            };
            assert!(matches!(
                EspOutbound::restore(state),
                Err(EspError::InvalidState(_))
            ));
        }
        let short = EspOutboundState {
            key: KeyMaterial::new(&base.key.as_bytes()[1..]),
            ..base
        };
        assert_eq!(
            EspOutbound::restore(short).err(),
            Some(EspError::BadKeyLength {
                expected: 36,
                got: 35
            })
        );
        let state = EspInboundState {
            cipher: EspCipher::AesGcm16 { key_bits: 192 },
            ..rx.into_state()
        };
        assert_eq!(
            EspInbound::restore(state).err(),
            Some(EspError::UnsupportedKeySize(192))
        );
    }

    #[test]
    fn keys_are_not_printed_and_are_wiped() {
        let cipher = CIPHERS[1];
        let k = key(cipher);
        let (tx, rx) = pair(cipher);
        let shown = format!(
            "{:?} {:?} {:?} {:?} {:#?}",
            tx.export(),
            rx.export(),
            tx,
            rx,
            tx.export()
        );
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("0x5eed0001"), "{shown}");
        for window in [
            format!("{:?}", &k[..4]),
            format!("{:02x}{:02x}", k[0], k[1]),
        ] {
            let window = window.trim_matches(['[', ']']).to_string();
            assert!(!shown.contains(&window), "{shown}");
        }
        let mut m = tx.into_state().key;
        assert_eq!(m.as_bytes(), &k[..]);
        m.wipe();
        assert!(m.as_bytes().iter().all(|&b| b == 0));
        assert_eq!(m.len(), k.len());
    }
}
