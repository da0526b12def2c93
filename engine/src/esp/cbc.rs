//! AES-CBC (RFC 3602) with a truncated HMAC (RFC 2404 for SHA-1, RFC 4868 for SHA-2) for
//! ESP: encrypt-then-MAC, the ICV covering `SPI | Sequence Number | IV | ciphertext`
//! (RFC 4303 section 3.3.4).
//!
//! ```text
//! SPI (4) | Sequence Number (4) | IV (16) | ciphertext (n * 16) | ICV (12, 16, 24 or 32)
//! plaintext = inner packet | padding 1, 2, 3, ... | pad length (1) | next header (1)
//! ```
//!
//! IVs must be unpredictable (RFC 3602 section 2.3). Each IV is the encryption, under the
//! SA's own AES key, of a block no other packet of the SA uses (`SPI | 0 | sequence
//! number`): the "forward cipher function applied to a nonce" of NIST SP 800-38A
//! appendix C. It needs no randomness per packet, so the data path stays free of a
//! generator and the SA can move between threads as it is.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use ring::hmac;

use crate::ikev2::crypto::Integ;
use crate::ikev2::crypto::sk::ct_eq;

/// The AES block, and so the IV, length.
pub(crate) const BLOCK: usize = 16;

#[derive(Clone)]
enum Aes {
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
}

impl Aes {
    fn encrypt(&self, block: &mut [u8; BLOCK]) {
        let b = block.into();
        match self {
            Aes::Aes128(c) => c.encrypt_block(b),
            Aes::Aes256(c) => c.encrypt_block(b),
        }
    }

    fn decrypt(&self, block: &mut [u8; BLOCK]) {
        let b = block.into();
        match self {
            Aes::Aes128(c) => c.decrypt_block(b),
            Aes::Aes256(c) => c.decrypt_block(b),
        }
    }
}

/// One direction's AES-CBC + HMAC keys.
pub(crate) struct CbcHmac {
    aes: Aes,
    integ: Integ,
    mac: hmac::Key,
}

impl CbcHmac {
    /// `encr` is the 16- or 32-byte AES key, `integ_key` the HMAC key.
    pub(crate) fn new(encr: &[u8], integ: Integ, integ_key: &[u8]) -> Option<Self> {
        let aes = match encr.len() {
            16 => Aes::Aes128(Box::new(aes::Aes128::new_from_slice(encr).ok()?)),
            32 => Aes::Aes256(Box::new(aes::Aes256::new_from_slice(encr).ok()?)),
            _ => return None,
        };
        if integ_key.len() != integ.key_len() {
            return None;
        }
        Some(Self {
            aes,
            integ,
            mac: integ.key(integ_key),
        })
    }

    /// The ICV length.
    pub(crate) fn icv_len(&self) -> usize {
        self.integ.icv_len()
    }

    /// The IV for sequence number `seq` of the SA `spi` (see the module documentation).
    pub(crate) fn iv(&self, spi: u32, seq: u64) -> [u8; BLOCK] {
        let mut iv = [0u8; BLOCK];
        iv[..4].copy_from_slice(&spi.to_be_bytes());
        iv[8..].copy_from_slice(&seq.to_be_bytes());
        self.aes.encrypt(&mut iv);
        iv
    }

    /// Encrypts `buf` (a whole number of blocks) in place, chained from `iv`.
    pub(crate) fn encrypt(&self, iv: &[u8; BLOCK], buf: &mut [u8]) {
        let mut prev = *iv;
        for chunk in buf.chunks_exact_mut(BLOCK) {
            let mut block = [0u8; BLOCK];
            for (b, (c, p)) in block.iter_mut().zip(chunk.iter().zip(prev)) {
                *b = c ^ p;
            }
            self.aes.encrypt(&mut block);
            chunk.copy_from_slice(&block);
            prev = block;
        }
    }

    /// Decrypts `buf` (a whole number of blocks) in place, chained from `iv`.
    pub(crate) fn decrypt(&self, iv: &[u8], buf: &mut [u8]) {
        let mut prev = [0u8; BLOCK];
        prev.copy_from_slice(&iv[..BLOCK]);
        for chunk in buf.chunks_exact_mut(BLOCK) {
            let mut block = [0u8; BLOCK];
            block.copy_from_slice(chunk);
            let cipher_block = block;
            self.aes.decrypt(&mut block);
            for (c, (b, p)) in chunk.iter_mut().zip(block.iter().zip(prev)) {
                *c = b ^ p;
            }
            prev = cipher_block;
        }
    }

    /// Writes the ICV of `authenticated` (header, IV and ciphertext) into `icv`.
    pub(crate) fn sign(&self, authenticated: &[u8], icv: &mut [u8]) {
        let tag = self.integ.icv(&self.mac, &[authenticated]);
        icv.copy_from_slice(&tag.as_ref()[..self.integ.icv_len()]);
    }

    /// Whether `icv` is the ICV of `authenticated`, compared in constant time.
    pub(crate) fn verify(&self, authenticated: &[u8], icv: &[u8]) -> bool {
        let tag = self.integ.icv(&self.mac, &[authenticated]);
        ct_eq(&tag.as_ref()[..self.integ.icv_len()], icv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc3602_case_2_and_4() {
        // RFC 3602 section 4, cases 2 (two blocks) and 4 (four blocks), AES-128-CBC.
        for (key, iv, plain, cipher) in [
            (
                "c286696d887c9aa0611bbb3e2025a45a",
                "562e17996d093d28ddb3ba695a2e6f58",
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
            ),
            (
                "56e47a38c5598974bc46903dba290349",
                "8ce82eefbea0da3c44699ed7db51b7d9",
                "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\
                 c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
                "c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e\
                 35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55",
            ),
        ] {
            let c = CbcHmac::new(&unhex(key), Integ::HmacSha1_96, &[0; 20]).unwrap();
            let mut buf = unhex(plain);
            let iv: [u8; 16] = unhex(iv).try_into().unwrap();
            c.encrypt(&iv, &mut buf);
            assert_eq!(buf, unhex(cipher));
            c.decrypt(&iv, &mut buf);
            assert_eq!(buf, unhex(plain));
        }
    }

    #[test]
    fn aes256_cbc_matches_nist_sp800_38a() {
        // NIST SP 800-38A F.2.5, CBC-AES256.Encrypt, first two blocks.
        let key = unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        let iv: [u8; 16] = unhex("000102030405060708090a0b0c0d0e0f")
            .try_into()
            .unwrap();
        let mut buf = unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let c = CbcHmac::new(&key, Integ::HmacSha256_128, &[0; 32]).unwrap();
        c.encrypt(&iv, &mut buf);
        assert_eq!(
            buf,
            unhex("f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d")
        );
    }

    #[test]
    fn ivs_differ_per_packet_and_per_sa() {
        let c = CbcHmac::new(&[7; 16], Integ::HmacSha1_96, &[1; 20]).unwrap();
        let a = c.iv(1, 1);
        assert_ne!(a, c.iv(1, 2));
        assert_ne!(a, c.iv(2, 1));
        assert_ne!(a[8..], 1u64.to_be_bytes(), "not the bare counter");
    }

    #[test]
    fn bad_key_lengths_are_refused() {
        assert!(CbcHmac::new(&[0; 24], Integ::HmacSha1_96, &[0; 20]).is_none());
        assert!(CbcHmac::new(&[0; 16], Integ::HmacSha1_96, &[0; 32]).is_none());
    }
}
