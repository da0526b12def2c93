//! One ESP security association per direction.
//!
//! AEAD transforms (AES-GCM-16, RFC 4106; ChaCha20-Poly1305, RFC 7634):
//!
//! ```text
//! SPI (4) | Sequence Number (4) | IV (8) | ciphertext | ICV (16)
//! plaintext = inner packet | padding 1, 2, 3, ... | pad length (1) | next header (1)
//! nonce = salt (4) | IV (8)        AAD = SPI | Sequence Number (no ESN)
//! ```
//!
//! The AEAD IV is the 64-bit sequence number: unique per key, which is all RFC 4106 section
//! 3.1 and RFC 7634 section 2 ask for, and it costs no randomness.
//!
//! AES-CBC with an HMAC (RFC 3602, 2404, 4868), what the operating systems' built-in IKEv2
//! clients propose by default, is laid out and keyed as `esp/cbc.rs` describes.

use ring::aead;

use super::cbc::{BLOCK, CbcHmac};
use super::export::KeyMaterial;
use crate::ikev2::crypto::{ChildSaKeys, Integ, KeySizes};
use crate::openvpn::replay::{ReplayError, ReplayWindow};

/// Next Header value for an inner IPv4 packet (IP-in-IP).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next Header value for an inner IPv6 packet.
pub const NEXT_HEADER_IPV6: u8 = 41;
/// Next Header value of a dummy (traffic flow confidentiality) packet, to be dropped.
pub const NEXT_HEADER_NO_NEXT: u8 = 59;

const HEADER_LEN: usize = 8;
const AEAD_IV_LEN: usize = 8;
const AEAD_ICV_LEN: usize = 16;
const SALT_LEN: usize = 4;
/// The AEAD ciphertext (payload, padding, pad length, next header) is 4-byte aligned.
const AEAD_ALIGN: usize = 4;

/// Why an ESP packet could not be built or accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EspError {
    /// Key material of the wrong length (a bug in key derivation).
    #[error("wrong ESP key length: expected {expected} bytes, got {got}")]
    BadKeyLength {
        /// What the cipher needs.
        expected: usize,
        /// What was passed.
        got: usize,
    },
    /// The negotiated AES key size is not 128 or 256 bits.
    #[error("unsupported ESP key size {0} bits")]
    UnsupportedKeySize(u16),
    /// The inner packet is neither IPv4 nor IPv6.
    #[error("inner packet is not IPv4 or IPv6")]
    NotIp,
    /// The output buffer is too small; `needed` bytes are required.
    #[error("output buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Required size.
        needed: usize,
    },
    /// 2^32 - 1 packets were sent: the CHILD SA must be rekeyed before sending more.
    #[error("ESP sequence numbers exhausted; rekey the CHILD SA")]
    SequenceExhausted,
    /// The packet is too short (or, for CBC, not a whole number of blocks) to be ESP for
    /// this cipher.
    #[error("ESP packet too short or misaligned ({0} bytes)")]
    Truncated(usize),
    /// The packet is for another SA.
    #[error("ESP packet for SPI {got:#010x}, this SA is {expected:#010x}")]
    WrongSpi {
        /// This SA's SPI.
        expected: u32,
        /// The packet's SPI.
        got: u32,
    },
    /// The ICV did not verify: forged, corrupted or keyed differently.
    #[error("ESP packet failed its integrity check")]
    IntegrityCheckFailed,
    /// Replayed or too old for the anti-replay window.
    #[error("ESP packet rejected by anti-replay: {0}")]
    Replay(#[from] ReplayError),
    /// Padding or pad length is inconsistent (after a valid ICV: a broken peer).
    #[error("ESP packet has invalid padding")]
    BadPadding,
    /// The cipher refused (should not happen with valid keys).
    #[error("ESP encryption failed")]
    Crypto,
    /// An exported SA state that no SA can have (see [`super::export`]).
    #[error("invalid exported ESP SA state: {0}")]
    InvalidState(&'static str),
}

/// An ESP transform: an AEAD, or AES-CBC with an integrity algorithm (IKEv2 transform
/// types 1 and 3 in an ESP proposal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EspCipher {
    /// ENCR_AES_GCM_16 (20), 128- or 256-bit key, RFC 4106.
    AesGcm16 {
        /// 128 or 256.
        key_bits: u16,
    },
    /// ENCR_CHACHA20_POLY1305 (28), RFC 7634.
    ChaCha20Poly1305,
    /// ENCR_AES_CBC (12), 128- or 256-bit key, RFC 3602, with an HMAC (RFC 2404 / 4868).
    AesCbc {
        /// 128 or 256.
        key_bits: u16,
        /// The integrity algorithm.
        integ: Integ,
    },
}

impl EspCipher {
    /// The IANA encryption transform id.
    pub const fn transform_id(self) -> u16 {
        match self {
            EspCipher::AesCbc { .. } => 12,
            EspCipher::AesGcm16 { .. } => 20,
            EspCipher::ChaCha20Poly1305 => 28,
        }
    }

    /// Whether this is an AEAD (no integrity transform).
    pub const fn is_aead(self) -> bool {
        !matches!(self, EspCipher::AesCbc { .. })
    }

    /// Key material per direction, as [`ChildSaKeys::derive`] takes it: AEADs a key and a
    /// 4-byte salt and no integrity key; AES-CBC a key and the HMAC's key.
    pub const fn key_sizes(self) -> KeySizes {
        match self {
            EspCipher::AesGcm16 { key_bits } => KeySizes {
                encr: key_bits as usize / 8 + SALT_LEN,
                integ: 0,
            },
            EspCipher::ChaCha20Poly1305 => KeySizes {
                encr: 32 + SALT_LEN,
                integ: 0,
            },
            EspCipher::AesCbc { key_bits, integ } => KeySizes {
                encr: key_bits as usize / 8,
                integ: integ.key_len(),
            },
        }
    }

    /// Bytes of key material [`EspOutbound::new`] and [`EspInbound::new`] take: the
    /// encryption key (with the salt for AEADs) followed by the integrity key, if any.
    pub const fn key_material_len(self) -> usize {
        let s = self.key_sizes();
        s.encr + s.integ
    }

    /// Bytes ESP adds around an inner packet of `inner_len` bytes (header, IV, padding,
    /// trailer, ICV), not counting the UDP header.
    pub const fn overhead(self, inner_len: usize) -> usize {
        self.encrypted_len(inner_len) - inner_len
    }

    /// Total ESP packet length for an inner packet of `inner_len` bytes.
    const fn encrypted_len(self, inner_len: usize) -> usize {
        match self {
            EspCipher::AesCbc { integ, .. } => {
                HEADER_LEN + BLOCK + (inner_len + 2).div_ceil(BLOCK) * BLOCK + integ.icv_len()
            }
            _ => {
                HEADER_LEN
                    + AEAD_IV_LEN
                    + (inner_len + 2).div_ceil(AEAD_ALIGN) * AEAD_ALIGN
                    + AEAD_ICV_LEN
            }
        }
    }

    pub(super) fn keys(self, material: &[u8]) -> Result<Keys, EspError> {
        if let EspCipher::AesGcm16 { key_bits } | EspCipher::AesCbc { key_bits, .. } = self
            && key_bits != 128
            && key_bits != 256
        {
            return Err(EspError::UnsupportedKeySize(key_bits));
        }
        let expected = self.key_material_len();
        if material.len() != expected {
            return Err(EspError::BadKeyLength {
                expected,
                got: material.len(),
            });
        }
        let alg = match self {
            EspCipher::AesCbc { integ, .. } => {
                let (encr, integ_key) = material.split_at(self.key_sizes().encr);
                return CbcHmac::new(encr, integ, integ_key)
                    .map(|c| Keys::Cbc(Box::new(c)))
                    .ok_or(EspError::Crypto);
            }
            EspCipher::AesGcm16 { key_bits: 128 } => &aead::AES_128_GCM,
            EspCipher::AesGcm16 { .. } => &aead::AES_256_GCM,
            EspCipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        let (key, salt) = material.split_at(expected - SALT_LEN);
        let key = aead::UnboundKey::new(alg, key).map_err(|_| EspError::Crypto)?;
        let mut s = [0u8; SALT_LEN];
        s.copy_from_slice(salt);
        Ok(Keys::Aead {
            key: Box::new(aead::LessSafeKey::new(key)),
            salt: s,
        })
    }
}

/// One direction's keys.
pub(super) enum Keys {
    Aead {
        key: Box<aead::LessSafeKey>,
        salt: [u8; SALT_LEN],
    },
    Cbc(Box<CbcHmac>),
}

fn nonce(salt: &[u8; SALT_LEN], iv: [u8; AEAD_IV_LEN]) -> aead::Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[..SALT_LEN].copy_from_slice(salt);
    n[SALT_LEN..].copy_from_slice(&iv);
    aead::Nonce::assume_unique_for_key(n)
}

/// Writes the inner packet, the default padding (RFC 4303 2.4: 1, 2, 3, ...), the pad length
/// and the next header into `plain`, whose length is already the padded length.
fn fill_plaintext(plain: &mut [u8], inner: &[u8], next_header: u8) {
    let pad_len = plain.len() - inner.len() - 2;
    plain[..inner.len()].copy_from_slice(inner);
    for (i, b) in plain[inner.len()..inner.len() + pad_len]
        .iter_mut()
        .enumerate()
    {
        *b = i as u8 + 1;
    }
    plain[inner.len() + pad_len] = pad_len as u8;
    plain[inner.len() + pad_len + 1] = next_header;
}

/// The sending half of a CHILD SA.
///
/// A plain value: `Send + Sync`, movable to a worker thread, and exportable
/// ([`EspOutbound::into_state`]) and restorable ([`EspOutbound::restore`]) as
/// [`super::export`] describes.
pub struct EspOutbound {
    pub(super) spi: u32,
    pub(super) cipher: EspCipher,
    pub(super) keys: Keys,
    /// A copy of the key material `keys` was built from, for export (wiped on drop).
    pub(super) material: KeyMaterial,
    /// Sequence number of the next packet; starts at 1 (RFC 4303 3.3.3).
    pub(super) next_seq: u64,
}

impl std::fmt::Debug for EspOutbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspOutbound")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl EspOutbound {
    /// An outbound SA with the peer's `spi` and `key`: the encryption key (followed by the
    /// salt for AEADs), then the integrity key for AES-CBC
    /// ([`EspCipher::key_material_len`] bytes).
    pub fn new(spi: u32, cipher: EspCipher, key: &[u8]) -> Result<Self, EspError> {
        Ok(Self {
            spi,
            cipher,
            keys: cipher.keys(key)?,
            material: KeyMaterial::new(key),
            next_seq: 1,
        })
    }

    /// The SPI written into every packet (chosen by the peer).
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The cipher.
    pub fn cipher(&self) -> EspCipher {
        self.cipher
    }

    /// Packets sent so far. Drivers rekey well before this nears `u32::MAX`.
    pub fn packets_sent(&self) -> u64 {
        self.next_seq - 1
    }

    /// Size of the ESP packet for an inner packet of `inner_len` bytes.
    pub fn encrypted_len(&self, inner_len: usize) -> usize {
        self.cipher.encrypted_len(inner_len)
    }

    /// Encrypts an inner IPv4/IPv6 packet into `out` and returns the ESP packet (a prefix of
    /// `out`). The Next Header is taken from the IP version.
    pub fn encrypt<'a>(&mut self, inner: &[u8], out: &'a mut [u8]) -> Result<&'a [u8], EspError> {
        let next_header = match inner.first().map(|b| b >> 4) {
            Some(4) => NEXT_HEADER_IPV4,
            Some(6) => NEXT_HEADER_IPV6,
            _ => return Err(EspError::NotIp),
        };
        self.encrypt_with_next_header(inner, next_header, out)
    }

    /// [`EspOutbound::encrypt`] with an explicit Next Header (e.g. 59 for a dummy packet).
    pub fn encrypt_with_next_header<'a>(
        &mut self,
        inner: &[u8],
        next_header: u8,
        out: &'a mut [u8],
    ) -> Result<&'a [u8], EspError> {
        let total = self.encrypted_len(inner.len());
        if out.len() < total {
            return Err(EspError::BufferTooSmall { needed: total });
        }
        let seq = u32::try_from(self.next_seq).map_err(|_| EspError::SequenceExhausted)?;
        let out = &mut out[..total];
        out[..4].copy_from_slice(&self.spi.to_be_bytes());
        out[4..HEADER_LEN].copy_from_slice(&seq.to_be_bytes());
        match &self.keys {
            Keys::Aead { key, salt } => {
                let iv = self.next_seq.to_be_bytes();
                let (header, rest) = out.split_at_mut(HEADER_LEN);
                let (iv_out, rest) = rest.split_at_mut(AEAD_IV_LEN);
                iv_out.copy_from_slice(&iv);
                let (plain, icv) = rest.split_at_mut(rest.len() - AEAD_ICV_LEN);
                fill_plaintext(plain, inner, next_header);
                let tag = key
                    .seal_in_place_separate_tag(nonce(salt, iv), aead::Aad::from(&*header), plain)
                    .map_err(|_| EspError::Crypto)?;
                icv.copy_from_slice(tag.as_ref());
            }
            Keys::Cbc(c) => {
                let iv = c.iv(self.spi, self.next_seq);
                let (signed, icv) = out.split_at_mut(total - c.icv_len());
                let (_, rest) = signed.split_at_mut(HEADER_LEN);
                let (iv_out, plain) = rest.split_at_mut(BLOCK);
                iv_out.copy_from_slice(&iv);
                fill_plaintext(plain, inner, next_header);
                c.encrypt(&iv, plain);
                c.sign(signed, icv);
            }
        }
        self.next_seq += 1;
        Ok(out)
    }
}

/// A decrypted ESP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspPayload<'a> {
    /// The Next Header field: 4 (IPv4), 41 (IPv6), or 59 for a dummy packet to drop.
    pub next_header: u8,
    /// The inner packet.
    pub packet: &'a [u8],
    /// The packet's sequence number.
    pub seq: u32,
}

/// The receiving half of a CHILD SA, with its anti-replay window.
///
/// A plain value: `Send + Sync`, movable to a worker thread, and exportable
/// ([`EspInbound::export`]) and restorable ([`EspInbound::restore`]) as [`super::export`]
/// describes.
pub struct EspInbound {
    pub(super) spi: u32,
    pub(super) cipher: EspCipher,
    pub(super) keys: Keys,
    /// A copy of the key material `keys` was built from, for export (wiped on drop).
    pub(super) material: KeyMaterial,
    pub(super) replay: ReplayWindow,
}

impl std::fmt::Debug for EspInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspInbound")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("highest_seq", &self.replay.highest())
            .finish_non_exhaustive()
    }
}

impl EspInbound {
    /// An inbound SA with our own `spi` and `key`, laid out as for [`EspOutbound::new`].
    pub fn new(spi: u32, cipher: EspCipher, key: &[u8]) -> Result<Self, EspError> {
        Ok(Self {
            spi,
            cipher,
            keys: cipher.keys(key)?,
            material: KeyMaterial::new(key),
            replay: ReplayWindow::new(),
        })
    }

    /// The SPI this SA receives on (chosen by us).
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The cipher.
    pub fn cipher(&self) -> EspCipher {
        self.cipher
    }

    /// The highest sequence number accepted so far.
    pub fn highest_seq(&self) -> u32 {
        self.replay.highest()
    }

    /// The SPI of an ESP packet, to find its SA; None if too short.
    pub fn packet_spi(packet: &[u8]) -> Option<u32> {
        Some(u32::from_be_bytes(packet.get(..4)?.try_into().ok()?))
    }

    /// Verifies, replay-checks and decrypts `packet` into `out` (which needs
    /// `packet.len()` bytes at most). The replay window advances only for packets whose ICV
    /// verified.
    pub fn decrypt<'a>(
        &mut self,
        packet: &[u8],
        out: &'a mut [u8],
    ) -> Result<EspPayload<'a>, EspError> {
        let (iv_len, icv_len, block) = match &self.keys {
            Keys::Aead { .. } => (AEAD_IV_LEN, AEAD_ICV_LEN, 1),
            Keys::Cbc(c) => (BLOCK, c.icv_len(), BLOCK),
        };
        let Some(ct_len) = packet
            .len()
            .checked_sub(HEADER_LEN + iv_len + icv_len)
            .filter(|&n| n >= 2 && n.is_multiple_of(block))
        else {
            return Err(EspError::Truncated(packet.len()));
        };
        let (header, rest) = packet.split_at(HEADER_LEN);
        let (spi, seq) = header.split_at(4);
        let spi = u32::from_be_bytes([spi[0], spi[1], spi[2], spi[3]]);
        if spi != self.spi {
            return Err(EspError::WrongSpi {
                expected: self.spi,
                got: spi,
            });
        }
        let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
        // Cheap rejection before spending a MAC or an AEAD open on a replay.
        self.replay.check(seq)?;
        let (iv, sealed) = rest.split_at(iv_len);
        let plain = match &self.keys {
            Keys::Aead { key, salt } => {
                let Some(out) = out.get_mut(..sealed.len()) else {
                    return Err(EspError::BufferTooSmall {
                        needed: sealed.len(),
                    });
                };
                out.copy_from_slice(sealed);
                let mut iv_bytes = [0u8; AEAD_IV_LEN];
                iv_bytes.copy_from_slice(iv);
                &*key
                    .open_in_place(nonce(salt, iv_bytes), aead::Aad::from(header), out)
                    .map_err(|_| EspError::IntegrityCheckFailed)?
            }
            Keys::Cbc(c) => {
                let (signed, icv) = packet.split_at(packet.len() - icv_len);
                if !c.verify(signed, icv) {
                    return Err(EspError::IntegrityCheckFailed);
                }
                let Some(out) = out.get_mut(..ct_len) else {
                    return Err(EspError::BufferTooSmall { needed: ct_len });
                };
                out.copy_from_slice(&sealed[..ct_len]);
                c.decrypt(iv, out);
                &*out
            }
        };
        self.replay.check_and_update(seq)?;
        let [body @ .., pad_len, next_header] = plain else {
            return Err(EspError::BadPadding);
        };
        let (pad_len, next_header) = (usize::from(*pad_len), *next_header);
        let Some(inner_len) = body.len().checked_sub(pad_len) else {
            return Err(EspError::BadPadding);
        };
        let padding_ok = body[inner_len..]
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i + 1);
        if !padding_ok {
            return Err(EspError::BadPadding);
        }
        Ok(EspPayload {
            next_header,
            packet: &plain[..inner_len],
            seq,
        })
    }
}

/// Both directions of a CHILD SA.
#[derive(Debug)]
pub struct EspSa {
    /// Packets we send, under the peer's SPI.
    pub outbound: EspOutbound,
    /// Packets we receive, under our SPI.
    pub inbound: EspInbound,
}

impl EspSa {
    /// Builds both directions from CHILD SA keys. `we_initiated` is whether we were the
    /// initiator of the exchange that created the CHILD SA (initiator-to-responder keys are
    /// then our outbound keys); `our_spi` is the SPI we chose (inbound), `peer_spi` the
    /// peer's (outbound).
    pub fn from_child_keys(
        cipher: EspCipher,
        keys: &ChildSaKeys,
        we_initiated: bool,
        our_spi: u32,
        peer_spi: u32,
    ) -> Result<Self, EspError> {
        let initiator = [&keys.encr_i[..], &keys.integ_i].concat();
        let responder = [&keys.encr_r[..], &keys.integ_r].concat();
        let (out_key, in_key) = if we_initiated {
            (&initiator, &responder)
        } else {
            (&responder, &initiator)
        };
        Ok(Self {
            outbound: EspOutbound::new(peer_spi, cipher, out_key)?,
            inbound: EspInbound::new(our_spi, cipher, in_key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ikev2::crypto::Prf;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const CIPHERS: [EspCipher; 11] = [
        EspCipher::AesGcm16 { key_bits: 128 },
        EspCipher::AesGcm16 { key_bits: 256 },
        EspCipher::ChaCha20Poly1305,
        EspCipher::AesCbc {
            key_bits: 128,
            integ: Integ::HmacSha1_96,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha1_96,
        },
        EspCipher::AesCbc {
            key_bits: 128,
            integ: Integ::HmacSha256_128,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha256_128,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha384_192,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha512_256,
        },
        EspCipher::AesCbc {
            key_bits: 128,
            integ: Integ::HmacSha512_256,
        },
        EspCipher::AesCbc {
            key_bits: 128,
            integ: Integ::HmacSha384_192,
        },
    ];

    const CBC_SHA1: EspCipher = EspCipher::AesCbc {
        key_bits: 256,
        integ: Integ::HmacSha1_96,
    };

    fn pair(cipher: EspCipher) -> (EspOutbound, EspInbound) {
        let key: Vec<u8> = (0..cipher.key_material_len())
            .map(|i| (i as u8).wrapping_mul(7))
            .collect();
        (
            EspOutbound::new(0xc0ffee01, cipher, &key).unwrap(),
            EspInbound::new(0xc0ffee01, cipher, &key).unwrap(),
        )
    }

    fn ipv4(len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len).map(|i| i as u8).collect();
        p[0] = 0x45;
        p
    }

    #[test]
    fn round_trip_every_cipher_and_length() {
        for cipher in CIPHERS {
            let (mut tx, mut rx) = pair(cipher);
            let mut buf = [0u8; 2048];
            let mut plain = [0u8; 2048];
            for len in [1usize, 2, 3, 4, 5, 20, 40, 1399, 1400] {
                let inner = ipv4(len);
                let packet = tx.encrypt(&inner, &mut buf).unwrap().to_vec();
                assert_eq!(packet.len(), tx.encrypted_len(len));
                assert_eq!(packet.len() - len, cipher.overhead(len));
                let (iv, icv, align) = match cipher {
                    EspCipher::AesCbc { integ, .. } => (16, integ.icv_len(), 16),
                    _ => (8, 16, 4),
                };
                assert_eq!((packet.len() - 8 - iv - icv) % align, 0, "aligned");
                let got = rx.decrypt(&packet, &mut plain).unwrap();
                assert_eq!(got.packet, &inner[..], "{cipher:?} {len}");
                assert_eq!(got.next_header, NEXT_HEADER_IPV4);
            }
            let mut v6 = ipv4(60);
            v6[0] = 0x60;
            let packet = tx.encrypt(&v6, &mut buf).unwrap().to_vec();
            let got = rx.decrypt(&packet, &mut plain).unwrap();
            assert_eq!((got.next_header, got.packet), (NEXT_HEADER_IPV6, &v6[..]));
            assert_eq!(tx.encrypt(&[0x10, 0, 0], &mut buf), Err(EspError::NotIp));
        }
    }

    #[test]
    fn tampering_is_rejected_and_does_not_advance_the_window() {
        for cipher in [EspCipher::AesGcm16 { key_bits: 256 }, CBC_SHA1] {
            let (mut tx, mut rx) = pair(cipher);
            let mut buf = [0u8; 256];
            let mut plain = [0u8; 256];
            let packet = tx.encrypt(&ipv4(40), &mut buf).unwrap().to_vec();
            for i in 0..packet.len() {
                let mut bad = packet.clone();
                bad[i] ^= 0x40;
                let err = rx.decrypt(&bad, &mut plain).unwrap_err();
                match i {
                    0..=3 => assert!(matches!(err, EspError::WrongSpi { .. })),
                    _ => assert_eq!(err, EspError::IntegrityCheckFailed, "{cipher:?} byte {i}"),
                }
            }
            assert_eq!(rx.highest_seq(), 0);
            rx.decrypt(&packet, &mut plain).unwrap();
            for len in 0..packet.len() {
                assert!(rx.decrypt(&packet[..len], &mut plain).is_err());
            }
        }
    }

    #[test]
    fn replays_are_rejected_and_reordering_accepted() {
        for cipher in [EspCipher::ChaCha20Poly1305, CBC_SHA1] {
            replays_are_rejected_for(cipher);
        }
    }

    fn replays_are_rejected_for(cipher: EspCipher) {
        let (mut tx, mut rx) = pair(cipher);
        let mut buf = [0u8; 256];
        let mut plain = [0u8; 256];
        let packets: Vec<Vec<u8>> = (0..300)
            .map(|_| tx.encrypt(&ipv4(30), &mut buf).unwrap().to_vec())
            .collect();
        rx.decrypt(&packets[299], &mut plain).unwrap();
        rx.decrypt(&packets[100], &mut plain).unwrap();
        assert_eq!(
            rx.decrypt(&packets[100], &mut plain),
            Err(EspError::Replay(ReplayError::Replayed(101)))
        );
        assert_eq!(
            rx.decrypt(&packets[0], &mut plain),
            Err(EspError::Replay(ReplayError::TooOld(1)))
        );
        assert_eq!(rx.highest_seq(), 300);
    }

    #[test]
    fn sequence_numbers_start_at_one_and_exhaust() {
        let (mut tx, _) = pair(EspCipher::AesGcm16 { key_bits: 128 });
        let mut buf = [0u8; 128];
        let p = tx.encrypt(&ipv4(20), &mut buf).unwrap();
        assert_eq!(p[4..8], [0, 0, 0, 1]);
        assert_eq!(p[8..16], [0, 0, 0, 0, 0, 0, 0, 1], "IV = sequence number");
        tx.next_seq = u64::from(u32::MAX);
        tx.encrypt(&ipv4(20), &mut buf).unwrap();
        assert_eq!(
            tx.encrypt(&ipv4(20), &mut buf),
            Err(EspError::SequenceExhausted)
        );
        assert_eq!(
            tx.encrypt(&ipv4(20), &mut [0u8; 20]),
            Err(EspError::BufferTooSmall { needed: 56 })
        );
    }

    #[test]
    fn known_answer_against_ring() {
        // The packet RFC 4106 / RFC 4303 describe, assembled by hand with ring.
        let key = [0x5au8; 16];
        let salt = [0xde, 0xad, 0xbe, 0xef];
        let material = [&key[..], &salt].concat();
        let mut tx = EspOutbound::new(
            0x0102_0304,
            EspCipher::AesGcm16 { key_bits: 128 },
            &material,
        )
        .unwrap();
        let inner = ipv4(21);
        let mut buf = [0u8; 128];
        let ours = tx.encrypt(&inner, &mut buf).unwrap();

        let header = [1, 2, 3, 4, 0, 0, 0, 1];
        let iv = [0, 0, 0, 0, 0, 0, 0, 1];
        // 21 + 2 = 23 bytes round up to 24: padding 1, pad length 1, next header 4.
        let mut body = [&inner[..], &[1, 1, 4]].concat();
        let ring_key =
            aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &key).unwrap());
        ring_key
            .seal_in_place_append_tag(
                aead::Nonce::try_assume_unique_for_key(&[&salt[..], &iv].concat()).unwrap(),
                aead::Aad::from(&header),
                &mut body,
            )
            .unwrap();
        assert_eq!(ours, [&header[..], &iv, &body].concat());
    }

    #[test]
    fn draft_mcgrew_gcm_test_case_3() {
        // draft-mcgrew-gcm-test-01 test case 3: AES-256, SPI 0x4a2cbfe3, sequence 2.
        let material =
            unhex("abbccddef00112233445566778899aababbccddef00112233445566778899aab 11223344");
        let mut rx = EspInbound::new(
            0x4a2c_bfe3,
            EspCipher::AesGcm16 { key_bits: 256 },
            &material,
        )
        .unwrap();
        let packet = unhex(
            "4a2cbfe3 00000002 0102030405060708
             ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763
             748a637985771d347f0545659f14e99def842d8eb335f4eecfdbf831824b4c49
             15956c96",
        );
        let inner = unhex(
            "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000
             7002400020bf0000020405b401010402",
        );
        let mut out = [0u8; 128];
        let got = rx.decrypt(&packet, &mut out).unwrap();
        assert_eq!(got.packet, &inner[..]);
        assert_eq!(
            got.next_header, 1,
            "the draft's packet claims next header 1"
        );
        assert_eq!(got.seq, 2);
    }

    #[test]
    fn bad_padding_after_valid_icv_is_rejected() {
        let key = [7u8; 36];
        let mut rx = EspInbound::new(9, EspCipher::ChaCha20Poly1305, &key).unwrap();
        let Ok(Keys::Aead {
            key: ring_key,
            salt,
        }) = EspCipher::ChaCha20Poly1305.keys(&key)
        else {
            panic!("an AEAD");
        };
        let header = [0, 0, 0, 9, 0, 0, 0, 1];
        let iv = [0u8; 8];
        for body in [vec![0x45, 9, 9, 2, 4], vec![0x45, 2, 1, 2, 4], vec![9, 4]] {
            let mut sealed = body.clone();
            let tag = ring_key
                .seal_in_place_separate_tag(nonce(&salt, iv), aead::Aad::from(&header), &mut sealed)
                .unwrap();
            let packet = [&header[..], &iv, &sealed, tag.as_ref()].concat();
            let mut out = [0u8; 64];
            assert_eq!(
                rx.decrypt(&packet, &mut out),
                Err(EspError::BadPadding),
                "{body:?}"
            );
            rx = EspInbound::new(9, EspCipher::ChaCha20Poly1305, &key).unwrap();
        }
    }

    #[test]
    fn cbc_known_answers_cross_checked_with_openssl() {
        // Built with `openssl enc -aes-{128,256}-{ecb,cbc} -nopad` (the IV is
        // AES-ECB(SPI | 0 | sequence number)) and Python's hmac module.
        let inner = ipv4(21);
        for (cipher, material, expected) in [
            (
                EspCipher::AesCbc {
                    key_bits: 128,
                    integ: Integ::HmacSha1_96,
                },
                [vec![0x5a; 16], vec![0x11; 20]].concat(),
                "01020304 00000001 c22c81033b18d179034132e9a54369f9
                 23c16df14349595b42d1b3c22cc63fcdc1deafea151a137d664382c0a952007e
                 3bda5fe60f7f1b5ec408edee",
            ),
            (
                EspCipher::AesCbc {
                    key_bits: 256,
                    integ: Integ::HmacSha256_128,
                },
                (0u8..32).chain(100..132).collect(),
                "01020304 00000001 05489fc153793f91713ba94b29f0d4b9
                 4bec043bdb7402c2a38b2edc40be088ed5c2c32d0cf5c2ebdead26a9d84268ce
                 0fe873928c0232da71feb89f195ec392",
            ),
        ] {
            let mut tx = EspOutbound::new(0x0102_0304, cipher, &material).unwrap();
            let mut buf = [0u8; 128];
            assert_eq!(tx.encrypt(&inner, &mut buf).unwrap(), unhex(expected));
            let mut rx = EspInbound::new(0x0102_0304, cipher, &material).unwrap();
            let mut out = [0u8; 128];
            let got = rx.decrypt(&unhex(expected), &mut out).unwrap();
            assert_eq!((got.packet, got.next_header, got.seq), (&inner[..], 4, 1));
        }
    }

    #[test]
    fn random_packets_are_errors_never_panics() {
        let mut rng = crate::entropy::SeededEntropy::new(7);
        use crate::entropy::Entropy;
        for cipher in CIPHERS {
            let (_, mut rx) = pair(cipher);
            let mut out = [0u8; 600];
            for _ in 0..500 {
                let len = (rng.next_u64() % 600) as usize;
                let mut packet = vec![0u8; len];
                rng.fill(&mut packet);
                if len >= 4 {
                    packet[..4].copy_from_slice(&0xc0ffee01u32.to_be_bytes());
                }
                assert!(rx.decrypt(&packet, &mut out).is_err(), "{cipher:?} {len}");
            }
            assert_eq!(rx.highest_seq(), 0);
        }
    }

    #[test]
    fn cbc_ivs_are_not_repeated_or_counters() {
        let (mut tx, _) = pair(CBC_SHA1);
        let mut buf = [0u8; 128];
        let a = tx.encrypt(&ipv4(20), &mut buf).unwrap()[8..24].to_vec();
        let b = tx.encrypt(&ipv4(20), &mut buf).unwrap()[8..24].to_vec();
        assert_ne!(a, b);
        assert_ne!(a[8..], [0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn sa_pair_from_child_keys() {
        for cipher in [EspCipher::AesGcm16 { key_bits: 128 }, CBC_SHA1] {
            sa_pair_from_child_keys_for(cipher);
        }
    }

    fn sa_pair_from_child_keys_for(cipher: EspCipher) {
        let keys = ChildSaKeys::derive(
            Prf::HmacSha256,
            &[1; 32],
            None,
            &[2; 16],
            &[3; 16],
            cipher.key_sizes(),
        )
        .unwrap();
        let mut initiator = EspSa::from_child_keys(cipher, &keys, true, 0x1111, 0x2222).unwrap();
        let mut responder = EspSa::from_child_keys(cipher, &keys, false, 0x2222, 0x1111).unwrap();
        let mut buf = [0u8; 256];
        let mut plain = [0u8; 256];
        let p = initiator
            .outbound
            .encrypt(&ipv4(50), &mut buf)
            .unwrap()
            .to_vec();
        assert_eq!(EspInbound::packet_spi(&p), Some(0x2222));
        assert_eq!(
            responder.inbound.decrypt(&p, &mut plain).unwrap().packet,
            &ipv4(50)[..]
        );
        let p = responder
            .outbound
            .encrypt(&ipv4(60), &mut buf)
            .unwrap()
            .to_vec();
        assert_eq!(
            initiator.inbound.decrypt(&p, &mut plain).unwrap().packet,
            &ipv4(60)[..]
        );
        assert!(format!("{initiator:?}").contains("0x00002222"));
    }

    #[test]
    fn bad_keys() {
        assert_eq!(
            EspOutbound::new(1, EspCipher::AesGcm16 { key_bits: 192 }, &[0; 28]).err(),
            Some(EspError::UnsupportedKeySize(192))
        );
        assert_eq!(
            EspInbound::new(1, EspCipher::ChaCha20Poly1305, &[0; 32]).err(),
            Some(EspError::BadKeyLength {
                expected: 36,
                got: 32
            })
        );
        assert_eq!(
            EspInbound::new(1, CBC_SHA1, &[0; 32]).err(),
            Some(EspError::BadKeyLength {
                expected: 52,
                got: 32
            })
        );
        assert_eq!(
            EspInbound::new(
                1,
                EspCipher::AesCbc {
                    key_bits: 192,
                    integ: Integ::HmacSha1_96
                },
                &[0; 44]
            )
            .err(),
            Some(EspError::UnsupportedKeySize(192))
        );
    }
}
