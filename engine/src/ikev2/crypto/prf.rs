//! IKEv2 pseudo-random functions and prf+ (RFC 7296 sections 2.13, 3.3.2).

use ring::hmac;

/// Why prf+ could not produce the requested output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrfError {
    /// prf+ counts its blocks in one octet, so it yields at most 255 PRF outputs.
    #[error("prf+ can produce at most {max} bytes with this PRF, {requested} were requested")]
    OutputTooLong {
        /// Bytes asked for.
        requested: usize,
        /// 255 times the PRF's output size.
        max: usize,
    },
}

/// A negotiated IKEv2 PRF (transform type 2). All are HMACs from ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Prf {
    /// PRF_HMAC_SHA1 (2), RFC 2104.
    HmacSha1,
    /// PRF_HMAC_SHA2_256 (5), RFC 4868.
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (6), RFC 4868.
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (7), RFC 4868.
    HmacSha512,
}

impl Prf {
    /// Every PRF we implement, strongest first (a sensible proposal order).
    pub const ALL: [Prf; 4] = [
        Prf::HmacSha512,
        Prf::HmacSha384,
        Prf::HmacSha256,
        Prf::HmacSha1,
    ];

    /// The IANA transform id (IKEv2 Transform Type 2).
    pub const fn transform_id(self) -> u16 {
        match self {
            Prf::HmacSha1 => 2,
            Prf::HmacSha256 => 5,
            Prf::HmacSha384 => 6,
            Prf::HmacSha512 => 7,
        }
    }

    /// The PRF for an IANA transform id, if we implement it.
    pub fn from_transform_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.transform_id() == id)
    }

    /// Size of one PRF output in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            Prf::HmacSha1 => 20,
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// The PRF's preferred key length: the size of SK_d, SK_pi and SK_pr. For HMAC it is
    /// the output size (RFC 7296 2.13, RFC 4868 2.1.2).
    pub const fn key_len(self) -> usize {
        self.output_len()
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Prf::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Prf::HmacSha256 => hmac::HMAC_SHA256,
            Prf::HmacSha384 => hmac::HMAC_SHA384,
            Prf::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// prf(key, data).
    pub fn prf(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        self.prf_parts(key, &[data])
    }

    /// prf(key, part0 | part1 | ...), without concatenating the parts first.
    pub fn prf_parts(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for part in parts {
            ctx.update(part);
        }
        ctx.sign().as_ref().to_vec()
    }

    /// The largest output prf+ can produce: 255 blocks.
    pub const fn prf_plus_max_len(self) -> usize {
        255 * self.output_len()
    }

    /// prf+(key, seed) truncated to `len` bytes (RFC 7296 2.13):
    /// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
    pub fn prf_plus(self, key: &[u8], seed: &[u8], len: usize) -> Result<Vec<u8>, PrfError> {
        if len > self.prf_plus_max_len() {
            return Err(PrfError::OutputTooLong {
                requested: len,
                max: self.prf_plus_max_len(),
            });
        }
        let key = hmac::Key::new(self.algorithm(), key);
        let mut out = Vec::with_capacity(len);
        let mut previous: Option<hmac::Tag> = None;
        let mut counter = 1u8;
        while out.len() < len {
            let mut ctx = hmac::Context::with_key(&key);
            if let Some(t) = &previous {
                ctx.update(t.as_ref());
            }
            ctx.update(seed);
            ctx.update(&[counter]);
            let t = ctx.sign();
            let take = (len - out.len()).min(t.as_ref().len());
            out.extend_from_slice(&t.as_ref()[..take]);
            previous = Some(t);
            counter = counter.wrapping_add(1);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn ids_round_trip() {
        for p in Prf::ALL {
            assert_eq!(Prf::from_transform_id(p.transform_id()), Some(p));
        }
        assert_eq!(
            Prf::from_transform_id(1),
            None,
            "PRF_HMAC_MD5 is not offered"
        );
    }

    #[test]
    fn hmac_known_answers() {
        // RFC 2202 test case 2 and RFC 4231 test case 2 ("Jefe").
        let data = b"what do ya want for nothing?";
        assert_eq!(
            Prf::HmacSha1.prf(b"Jefe", data),
            unhex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
        assert_eq!(
            Prf::HmacSha256.prf(b"Jefe", data),
            unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            Prf::HmacSha384.prf(b"Jefe", data),
            unhex(
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e
                 8e2240ca5e69e2c78b3239ecfab21649"
            )
        );
        assert_eq!(
            Prf::HmacSha512.prf(b"Jefe", data),
            unhex(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554
                 9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
            )
        );
        assert_eq!(
            Prf::HmacSha256.prf_parts(b"Jefe", &[b"what do ya ", b"", b"want for nothing?"]),
            Prf::HmacSha256.prf(b"Jefe", data)
        );
    }

    #[test]
    fn prf_plus_chains_blocks_as_rfc7296_says() {
        for p in Prf::ALL {
            let key = b"key material";
            let seed = b"Ni | Nr | SPIi | SPIr";
            let t1 = p.prf_parts(key, &[seed, &[1]]);
            let t2 = p.prf_parts(key, &[&t1, seed, &[2]]);
            let t3 = p.prf_parts(key, &[&t2, seed, &[3]]);
            let expected = [t1, t2, t3].concat();
            let len = 2 * p.output_len() + 5;
            assert_eq!(p.prf_plus(key, seed, len).unwrap(), expected[..len]);
            assert_eq!(p.prf_plus(key, seed, 0).unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn prf_plus_limit() {
        let p = Prf::HmacSha256;
        assert_eq!(p.prf_plus(b"k", b"s", 255 * 32).unwrap().len(), 255 * 32);
        assert_eq!(
            p.prf_plus(b"k", b"s", 255 * 32 + 1),
            Err(PrfError::OutputTooLong {
                requested: 255 * 32 + 1,
                max: 255 * 32
            })
        );
    }
}
