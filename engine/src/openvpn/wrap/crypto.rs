//! The primitives of the wrappers: HMAC from ring, AES-256-CTR from RustCrypto (ring has
//! no raw CTR mode).

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};

use super::TlsAuthDigest;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac(ring::hmac::HMAC_SHA256, key, parts).as_ref());
    out
}

/// HMAC with the tls-auth digest over the concatenation of `parts`.
pub(crate) fn hmac_digest(digest: TlsAuthDigest, key: &[u8], parts: &[&[u8]]) -> ring::hmac::Tag {
    let alg = match digest {
        TlsAuthDigest::Sha1 => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        TlsAuthDigest::Sha256 => ring::hmac::HMAC_SHA256,
        TlsAuthDigest::Sha384 => ring::hmac::HMAC_SHA384,
        TlsAuthDigest::Sha512 => ring::hmac::HMAC_SHA512,
    };
    hmac(alg, key, parts)
}

fn hmac(alg: ring::hmac::Algorithm, key: &[u8], parts: &[&[u8]]) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(alg, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

/// AES-256-CTR in place; the IV is the first 16 bytes of `iv` (OpenVPN uses the 128 most
/// significant bits of the HMAC tag), the whole block is a big-endian counter as in OpenSSL.
pub(crate) fn aes256_ctr(key: &[u8], iv: &[u8], data: &mut [u8]) {
    // Both slices have fixed lengths from our own key layouts; a mismatch is a bug.
    let Ok(mut c) = Aes256Ctr::new_from_slices(&key[..32], &iv[..16]) else {
        unreachable!("AES-256-CTR key and IV have fixed lengths");
    };
    c.apply_keystream(data);
}

/// Compares two tags without stopping at the first difference.
pub(crate) fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
