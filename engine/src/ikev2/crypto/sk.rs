//! Protection of the Encrypted and Authenticated (SK) payload: RFC 7296 section 3.14 for
//! AES-CBC + HMAC, RFC 5282 for AES-GCM, RFC 7634 for ChaCha20-Poly1305.
//!
//! The protected body is `IV | ciphertext | ICV`, where the plaintext is the inner payloads
//! followed by padding and a one-byte pad length. The caller passes `aad`: every byte of the
//! message before the body, that is the IKE header and all payload headers up to and
//! including the SK (or SKF, RFC 7383) payload header, with their final lengths already
//! filled in ([`SkKeys::sealed_len`] says how long the body will be). AEADs authenticate
//! `aad` as associated data; CBC's HMAC covers `aad | IV | ciphertext`.

use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit,
};
use ring::{aead, hmac};

use super::keymat::KeySizes;
use crate::entropy::Entropy;

/// Why an SK payload could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkError {
    /// The negotiated cipher has a key size we do not implement.
    #[error("unsupported key size {0} bits for this cipher")]
    UnsupportedKeySize(u16),
    /// Key material of the wrong length was supplied (a bug in key derivation).
    #[error("wrong key length: expected {expected} bytes, got {got}")]
    BadKeyLength {
        /// What the cipher needs.
        expected: usize,
        /// What was passed.
        got: usize,
    },
    /// The explicit IV has the wrong length.
    #[error("wrong IV length: expected {expected} bytes, got {got}")]
    BadIvLength {
        /// What the cipher needs.
        expected: usize,
        /// What was passed.
        got: usize,
    },
    /// The SK payload body is too short or not a whole number of cipher blocks.
    #[error("encrypted payload is malformed ({0} bytes)")]
    Malformed(usize),
    /// The integrity check failed: the message was forged, corrupted or keyed differently.
    #[error("encrypted payload failed its integrity check")]
    IntegrityCheckFailed,
    /// The pad length byte points outside the plaintext.
    #[error("encrypted payload has an invalid pad length")]
    BadPadding,
    /// 2^64 messages were sealed with this key; rekey the IKE SA.
    #[error("IV counter exhausted; the IKE SA must be rekeyed")]
    IvExhausted,
    /// The underlying cipher refused (should not happen with valid keys).
    #[error("encryption failed")]
    Crypto,
}

/// An integrity algorithm for CBC suites (IKEv2 transform type 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Integ {
    /// AUTH_HMAC_SHA1_96 (2), RFC 2404.
    HmacSha1_96,
    /// AUTH_HMAC_SHA2_256_128 (12), RFC 4868.
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192 (13), RFC 4868.
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256 (14), RFC 4868.
    HmacSha512_256,
}

impl Integ {
    /// Every integrity algorithm we implement, strongest first.
    pub const ALL: [Integ; 4] = [
        Integ::HmacSha512_256,
        Integ::HmacSha384_192,
        Integ::HmacSha256_128,
        Integ::HmacSha1_96,
    ];

    /// The IANA transform id (IKEv2 Transform Type 3).
    pub const fn transform_id(self) -> u16 {
        match self {
            Integ::HmacSha1_96 => 2,
            Integ::HmacSha256_128 => 12,
            Integ::HmacSha384_192 => 13,
            Integ::HmacSha512_256 => 14,
        }
    }

    /// The algorithm for an IANA transform id, if we implement it.
    pub fn from_transform_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.transform_id() == id)
    }

    /// Key length in bytes (the hash output size).
    pub const fn key_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 20,
            Integ::HmacSha256_128 => 32,
            Integ::HmacSha384_192 => 48,
            Integ::HmacSha512_256 => 64,
        }
    }

    /// Length of the truncated ICV.
    pub const fn icv_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 12,
            Integ::HmacSha256_128 => 16,
            Integ::HmacSha384_192 => 24,
            Integ::HmacSha512_256 => 32,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Integ::HmacSha1_96 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Integ::HmacSha256_128 => hmac::HMAC_SHA256,
            Integ::HmacSha384_192 => hmac::HMAC_SHA384,
            Integ::HmacSha512_256 => hmac::HMAC_SHA512,
        }
    }

    /// The truncated HMAC over the concatenation of `parts`.
    pub(crate) fn icv(self, key: &hmac::Key, parts: &[&[u8]]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        for part in parts {
            ctx.update(part);
        }
        ctx.sign()
    }

    pub(crate) fn key(self, key: &[u8]) -> hmac::Key {
        hmac::Key::new(self.algorithm(), key)
    }
}

/// An encryption algorithm for the SK payload (IKEv2 transform type 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum IkeCipher {
    /// ENCR_AES_GCM_16 (20) with a 128- or 256-bit key (RFC 5282).
    AesGcm16 {
        /// 128 or 256.
        key_bits: u16,
    },
    /// ENCR_CHACHA20_POLY1305 (28), RFC 7634.
    ChaCha20Poly1305,
    /// ENCR_AES_CBC (12) with a 128- or 256-bit key and an HMAC (RFC 3602, RFC 7296).
    AesCbc {
        /// 128 or 256.
        key_bits: u16,
        /// The negotiated integrity algorithm.
        integ: Integ,
    },
}

impl IkeCipher {
    /// The IANA encryption transform id (the key length goes in a Key Length attribute).
    pub const fn transform_id(self) -> u16 {
        match self {
            IkeCipher::AesCbc { .. } => 12,
            IkeCipher::AesGcm16 { .. } => 20,
            IkeCipher::ChaCha20Poly1305 => 28,
        }
    }

    /// Whether this is an AEAD (no separate integrity transform).
    pub const fn is_aead(self) -> bool {
        !matches!(self, IkeCipher::AesCbc { .. })
    }

    /// Key material per direction, as [`IkeSaKeys`](super::IkeSaKeys) and
    /// [`ChildSaKeys`](super::ChildSaKeys) derive it.
    pub const fn key_sizes(self) -> KeySizes {
        match self {
            IkeCipher::AesGcm16 { key_bits } => KeySizes {
                encr: key_bits as usize / 8 + SALT_LEN,
                integ: 0,
            },
            IkeCipher::ChaCha20Poly1305 => KeySizes {
                encr: 32 + SALT_LEN,
                integ: 0,
            },
            IkeCipher::AesCbc { key_bits, integ } => KeySizes {
                encr: key_bits as usize / 8,
                integ: integ.key_len(),
            },
        }
    }

    /// Length of the IV at the start of the body.
    pub const fn iv_len(self) -> usize {
        if self.is_aead() {
            AEAD_IV_LEN
        } else {
            CBC_BLOCK
        }
    }

    /// Length of the ICV at the end of the body.
    pub const fn icv_len(self) -> usize {
        match self {
            IkeCipher::AesCbc { integ, .. } => integ.icv_len(),
            _ => AEAD_TAG_LEN,
        }
    }

    /// Plaintext (payloads + padding + pad length) must be a multiple of this.
    const fn block_len(self) -> usize {
        if self.is_aead() { 1 } else { CBC_BLOCK }
    }
}

const SALT_LEN: usize = 4;
const AEAD_IV_LEN: usize = 8;
const AEAD_TAG_LEN: usize = 16;
const CBC_BLOCK: usize = 16;

/// One direction's SK payload keys (SK_ei/SK_ai or SK_er/SK_ar).
pub struct SkKeys {
    cipher: IkeCipher,
    inner: Inner,
    /// Next explicit IV for AEADs: a per-key counter, so IVs never repeat under one key.
    next_iv: u64,
}

enum Inner {
    Aead {
        key: Box<aead::LessSafeKey>,
        salt: [u8; SALT_LEN],
    },
    Cbc {
        key: CbcKey,
        integ: Integ,
        mac: hmac::Key,
    },
}

#[derive(Clone)]
enum CbcKey {
    Aes128([u8; 16]),
    Aes256([u8; 32]),
}

impl std::fmt::Debug for SkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkKeys")
            .field("cipher", &self.cipher)
            .field("next_iv", &self.next_iv)
            .finish_non_exhaustive()
    }
}

impl SkKeys {
    /// Keys for one direction: `encr_key` is SK_e (with the salt last for AEADs), `integ_key`
    /// SK_a (empty for AEADs).
    pub fn new(cipher: IkeCipher, encr_key: &[u8], integ_key: &[u8]) -> Result<Self, SkError> {
        let sizes = cipher.key_sizes();
        for (expected, got) in [(sizes.encr, encr_key.len()), (sizes.integ, integ_key.len())] {
            if expected != got {
                return Err(SkError::BadKeyLength { expected, got });
            }
        }
        let inner = match cipher {
            IkeCipher::AesGcm16 { key_bits } | IkeCipher::AesCbc { key_bits, .. }
                if key_bits != 128 && key_bits != 256 =>
            {
                return Err(SkError::UnsupportedKeySize(key_bits));
            }
            IkeCipher::AesGcm16 { .. } | IkeCipher::ChaCha20Poly1305 => {
                let alg = match cipher {
                    IkeCipher::AesGcm16 { key_bits: 128 } => &aead::AES_128_GCM,
                    IkeCipher::AesGcm16 { .. } => &aead::AES_256_GCM,
                    _ => &aead::CHACHA20_POLY1305,
                };
                let (key, salt) = encr_key.split_at(encr_key.len() - SALT_LEN);
                let key = aead::UnboundKey::new(alg, key).map_err(|_| SkError::Crypto)?;
                let mut s = [0u8; SALT_LEN];
                s.copy_from_slice(salt);
                Inner::Aead {
                    key: Box::new(aead::LessSafeKey::new(key)),
                    salt: s,
                }
            }
            IkeCipher::AesCbc { integ, .. } => {
                let key = if let Ok(k) = <[u8; 16]>::try_from(encr_key) {
                    CbcKey::Aes128(k)
                } else {
                    CbcKey::Aes256(<[u8; 32]>::try_from(encr_key).map_err(|_| SkError::Crypto)?)
                };
                Inner::Cbc {
                    key,
                    integ,
                    mac: integ.key(integ_key),
                }
            }
        };
        Ok(Self {
            cipher,
            inner,
            next_iv: 0,
        })
    }

    /// The next AEAD IV (a counter; CBC IVs are random): exported with the SA when a
    /// restart hands it over.
    pub fn next_iv(&self) -> u64 {
        self.next_iv
    }

    /// Continues the IV counter at `next` (an SA handed over by another process, its
    /// counter already jumped past anything the other may have used).
    pub fn set_next_iv(&mut self, next: u64) {
        self.next_iv = next;
    }

    /// The cipher these keys are for.
    pub fn cipher(&self) -> IkeCipher {
        self.cipher
    }

    /// Length of the SK payload body (IV, ciphertext with padding, ICV) for `plaintext_len`
    /// bytes of inner payloads. The SK payload's length field is this plus 4.
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        let c = self.cipher;
        self.cipher.iv_len() + padded_len(c, plaintext_len) + c.icv_len()
    }

    /// Encrypts and authenticates `plaintext` (the inner payloads) and appends
    /// `IV | ciphertext | ICV` to `out`.
    ///
    /// AEAD IVs are a per-key counter; CBC IVs are 16 bytes from `entropy` (CBC needs
    /// unpredictable IVs).
    pub fn seal(
        &mut self,
        entropy: &mut dyn Entropy,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SkError> {
        let mut iv = [0u8; CBC_BLOCK];
        let iv = &mut iv[..self.cipher.iv_len()];
        if self.cipher.is_aead() {
            iv.copy_from_slice(&self.next_iv.to_be_bytes());
            self.next_iv = self.next_iv.checked_add(1).ok_or(SkError::IvExhausted)?;
        } else {
            entropy.fill(iv);
        }
        self.seal_with_iv(iv, aad, plaintext, out)
    }

    /// [`SkKeys::seal`] with an explicit IV. The caller must never reuse an IV with an AEAD
    /// key; this exists for known-answer tests and for callers with their own IV scheme.
    pub fn seal_with_iv(
        &self,
        iv: &[u8],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SkError> {
        let c = self.cipher;
        if iv.len() != c.iv_len() {
            return Err(SkError::BadIvLength {
                expected: c.iv_len(),
                got: iv.len(),
            });
        }
        let start = out.len();
        out.extend_from_slice(iv);
        let body = out.len();
        let padded = padded_len(c, plaintext.len());
        let pad = padded - plaintext.len() - 1;
        out.extend_from_slice(plaintext);
        out.resize(body + padded - 1, 0);
        out.push(pad as u8);
        match &self.inner {
            Inner::Aead { key, salt } => {
                let nonce = nonce(salt, iv);
                let tag = key
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), &mut out[body..])
                    .map_err(|_| SkError::Crypto)?;
                out.extend_from_slice(tag.as_ref());
            }
            Inner::Cbc { key, integ, mac } => {
                cbc_encrypt(key, iv, &mut out[body..])?;
                let icv = integ.icv(mac, &[aad, &out[start..]]);
                out.extend_from_slice(&icv.as_ref()[..integ.icv_len()]);
            }
        }
        Ok(())
    }

    /// Verifies and decrypts an SK payload body (`IV | ciphertext | ICV`) and returns the
    /// inner payloads with the padding removed. `aad` is everything before the body, as for
    /// [`SkKeys::seal`].
    pub fn open(&self, aad: &[u8], body: &[u8]) -> Result<Vec<u8>, SkError> {
        let c = self.cipher;
        let (iv_len, icv_len) = (c.iv_len(), c.icv_len());
        let Some(ct_len) = body.len().checked_sub(iv_len + icv_len).filter(|&n| n > 0) else {
            return Err(SkError::Malformed(body.len()));
        };
        if ct_len % c.block_len() != 0 {
            return Err(SkError::Malformed(body.len()));
        }
        let (iv, rest) = body.split_at(iv_len);
        let (ct, icv) = rest.split_at(ct_len);
        let mut plain = ct.to_vec();
        match &self.inner {
            Inner::Aead { key, salt } => {
                plain.extend_from_slice(icv);
                let n = key
                    .open_in_place(nonce(salt, iv), aead::Aad::from(aad), &mut plain)
                    .map_err(|_| SkError::IntegrityCheckFailed)?
                    .len();
                plain.truncate(n);
            }
            Inner::Cbc { key, integ, mac } => {
                let expected = integ.icv(mac, &[aad, iv, ct]);
                if !ct_eq(&expected.as_ref()[..integ.icv_len()], icv) {
                    return Err(SkError::IntegrityCheckFailed);
                }
                cbc_decrypt(key, iv, &mut plain)?;
            }
        }
        let Some((&pad, _)) = plain.split_last() else {
            return Err(SkError::BadPadding);
        };
        let Some(inner_len) = plain.len().checked_sub(1 + usize::from(pad)) else {
            return Err(SkError::BadPadding);
        };
        plain.truncate(inner_len);
        Ok(plain)
    }
}

/// Payloads + padding + pad length, rounded up to the cipher's block.
fn padded_len(cipher: IkeCipher, plaintext_len: usize) -> usize {
    let block = cipher.block_len();
    (plaintext_len + 1).div_ceil(block) * block
}

fn nonce(salt: &[u8; SALT_LEN], iv: &[u8]) -> aead::Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[..SALT_LEN].copy_from_slice(salt);
    n[SALT_LEN..].copy_from_slice(iv);
    aead::Nonce::assume_unique_for_key(n)
}

/// Compares in time independent of where the inputs differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

fn cbc_encrypt(key: &CbcKey, iv: &[u8], buf: &mut [u8]) -> Result<(), SkError> {
    match key {
        CbcKey::Aes128(k) => cbc_enc::<aes::Aes128>(k, iv, buf),
        CbcKey::Aes256(k) => cbc_enc::<aes::Aes256>(k, iv, buf),
    }
}

fn cbc_decrypt(key: &CbcKey, iv: &[u8], buf: &mut [u8]) -> Result<(), SkError> {
    match key {
        CbcKey::Aes128(k) => cbc_dec::<aes::Aes128>(k, iv, buf),
        CbcKey::Aes256(k) => cbc_dec::<aes::Aes256>(k, iv, buf),
    }
}

fn cbc_enc<C: BlockCipherEncrypt + KeyInit>(
    key: &[u8],
    iv: &[u8],
    buf: &mut [u8],
) -> Result<(), SkError> {
    let mut enc = cbc::Encryptor::<C>::new_from_slices(key, iv).map_err(|_| SkError::Crypto)?;
    for chunk in buf.chunks_exact_mut(CBC_BLOCK) {
        let block = chunk.try_into().map_err(|_| SkError::Crypto)?;
        enc.encrypt_block(block);
    }
    Ok(())
}

fn cbc_dec<C: BlockCipherDecrypt + KeyInit>(
    key: &[u8],
    iv: &[u8],
    buf: &mut [u8],
) -> Result<(), SkError> {
    let mut dec = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|_| SkError::Crypto)?;
    for chunk in buf.chunks_exact_mut(CBC_BLOCK) {
        let block = chunk.try_into().map_err(|_| SkError::Crypto)?;
        dec.decrypt_block(block);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn all_ciphers() -> Vec<IkeCipher> {
        let mut v = vec![
            IkeCipher::AesGcm16 { key_bits: 128 },
            IkeCipher::AesGcm16 { key_bits: 256 },
            IkeCipher::ChaCha20Poly1305,
        ];
        for key_bits in [128, 256] {
            for integ in Integ::ALL {
                v.push(IkeCipher::AesCbc { key_bits, integ });
            }
        }
        v
    }

    fn keys(cipher: IkeCipher, seed: u8) -> SkKeys {
        let s = cipher.key_sizes();
        let e: Vec<u8> = (0..s.encr).map(|i| i as u8 ^ seed).collect();
        let a: Vec<u8> = (0..s.integ)
            .map(|i| (i as u8).wrapping_mul(3) ^ seed)
            .collect();
        SkKeys::new(cipher, &e, &a).unwrap()
    }

    const AAD: &[u8] = b"IKE header (28 bytes).......SK h";

    #[test]
    fn round_trip_every_cipher_and_length() {
        let mut rng = SeededEntropy::new(5);
        for cipher in all_ciphers() {
            let mut tx = keys(cipher, 1);
            let rx = keys(cipher, 1);
            for len in [0usize, 1, 14, 15, 16, 17, 100, 1000] {
                let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut out = b"prefix".to_vec();
                tx.seal(&mut rng, AAD, &plain, &mut out).unwrap();
                assert_eq!(out.len() - 6, tx.sealed_len(len), "{cipher:?} {len}");
                assert_eq!(rx.open(AAD, &out[6..]).unwrap(), plain, "{cipher:?} {len}");
            }
        }
    }

    #[test]
    fn any_tampering_is_rejected() {
        let mut rng = SeededEntropy::new(6);
        for cipher in all_ciphers() {
            let mut tx = keys(cipher, 1);
            let rx = keys(cipher, 1);
            let mut body = Vec::new();
            tx.seal(&mut rng, AAD, b"payloads", &mut body).unwrap();
            for i in 0..body.len() {
                let mut bad = body.clone();
                bad[i] ^= 0x01;
                assert_eq!(
                    rx.open(AAD, &bad),
                    Err(SkError::IntegrityCheckFailed),
                    "{cipher:?} byte {i}"
                );
            }
            let mut aad = AAD.to_vec();
            aad[3] ^= 0x80;
            assert_eq!(rx.open(&aad, &body), Err(SkError::IntegrityCheckFailed));
            assert_eq!(
                keys(cipher, 2).open(AAD, &body),
                Err(SkError::IntegrityCheckFailed)
            );
            for len in 0..body.len() {
                assert!(rx.open(AAD, &body[..len]).is_err(), "{cipher:?} {len}");
            }
        }
    }

    #[test]
    fn aead_ivs_are_a_counter() {
        let mut rng = SeededEntropy::new(0);
        let mut tx = keys(IkeCipher::AesGcm16 { key_bits: 256 }, 0);
        let mut a = Vec::new();
        let mut b = Vec::new();
        tx.seal(&mut rng, AAD, b"x", &mut a).unwrap();
        tx.seal(&mut rng, AAD, b"x", &mut b).unwrap();
        assert_eq!(a[..8], [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b[..8], [0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn gcm_layout_matches_ring_directly() {
        // nonce = salt | IV, AAD = header bytes, plaintext = payloads | pad length 0.
        let key = [0x11u8; 16];
        let salt = [0xA0, 0xA1, 0xA2, 0xA3];
        let iv = [1, 2, 3, 4, 5, 6, 7, 8];
        let sk = SkKeys::new(
            IkeCipher::AesGcm16 { key_bits: 128 },
            &[&key[..], &salt].concat(),
            &[],
        )
        .unwrap();
        let mut out = Vec::new();
        sk.seal_with_iv(&iv, AAD, b"inner", &mut out).unwrap();

        let ring_key =
            aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &key).unwrap());
        let mut expected = b"inner\x00".to_vec();
        let nonce = [&salt[..], &iv].concat();
        ring_key
            .seal_in_place_append_tag(
                aead::Nonce::try_assume_unique_for_key(&nonce).unwrap(),
                aead::Aad::from(AAD),
                &mut expected,
            )
            .unwrap();
        assert_eq!(out, [&iv[..], &expected].concat());
    }

    #[test]
    fn cbc_known_answer() {
        // RFC 3602 case 2 (AES-128-CBC, 32 bytes) as the ciphertext of 31 payload bytes
        // whose last plaintext byte (0x1f) doubles as the pad length... which is invalid
        // here, so instead check the first block of RFC 3602 case 2 directly.
        let key = unhex("c286696d887c9aa0611bbb3e2025a45a");
        let iv = unhex("562e17996d093d28ddb3ba695a2e6f58");
        let plain = unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let expected = unhex("d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1");
        let mut buf = plain.clone();
        cbc_encrypt(
            &CbcKey::Aes128(key.clone().try_into().unwrap()),
            &iv,
            &mut buf,
        )
        .unwrap();
        assert_eq!(buf, expected);
        cbc_decrypt(&CbcKey::Aes128(key.try_into().unwrap()), &iv, &mut buf).unwrap();
        assert_eq!(buf, plain);
    }

    #[test]
    fn cbc_body_layout_and_hmac_coverage() {
        let enc = [0x22u8; 16];
        let mac = [0x33u8; 32];
        let integ = Integ::HmacSha256_128;
        let sk = SkKeys::new(
            IkeCipher::AesCbc {
                key_bits: 128,
                integ,
            },
            &enc,
            &mac,
        )
        .unwrap();
        let iv = [9u8; 16];
        let mut out = Vec::new();
        sk.seal_with_iv(&iv, AAD, &[0xEE; 20], &mut out).unwrap();
        // 20 payload bytes + 11 padding + 1 pad length = 32.
        assert_eq!(out.len(), 16 + 32 + 16);
        let mut plain = out[16..48].to_vec();
        cbc_decrypt(&CbcKey::Aes128(enc), &iv, &mut plain).unwrap();
        assert_eq!(plain[..20], [0xEE; 20]);
        assert_eq!(plain[31], 11);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &mac),
            &[AAD, &out[..48]].concat(),
        );
        assert_eq!(out[48..], tag.as_ref()[..16]);
    }

    #[test]
    fn bad_pad_length_is_rejected_after_authentication() {
        let sk = keys(IkeCipher::ChaCha20Poly1305, 7);
        // Seal a plaintext whose last byte claims more padding than there is.
        let mut out = Vec::new();
        let Inner::Aead { key, salt } = &sk.inner else {
            unreachable!()
        };
        let iv = [0u8; 8];
        let mut ct = vec![1, 2, 200];
        let tag = key
            .seal_in_place_separate_tag(nonce(salt, &iv), aead::Aad::from(AAD), &mut ct)
            .unwrap();
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        out.extend_from_slice(tag.as_ref());
        assert_eq!(sk.open(AAD, &out), Err(SkError::BadPadding));
    }

    #[test]
    fn rejects_bad_key_material() {
        assert_eq!(
            SkKeys::new(IkeCipher::AesGcm16 { key_bits: 192 }, &[0; 28], &[]).err(),
            Some(SkError::UnsupportedKeySize(192))
        );
        assert_eq!(
            SkKeys::new(IkeCipher::ChaCha20Poly1305, &[0; 32], &[]).err(),
            Some(SkError::BadKeyLength {
                expected: 36,
                got: 32
            })
        );
        let cbc = IkeCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha1_96,
        };
        assert_eq!(
            cbc.key_sizes(),
            KeySizes {
                encr: 32,
                integ: 20
            }
        );
        assert!(SkKeys::new(cbc, &[0; 32], &[0; 19]).is_err());
    }
}
