//! Data channel key material.
//!
//! Both ends derive a 256-byte key block, OpenVPN's `struct key2`: two 128-byte `struct key`
//! halves, client-to-server first, each a 64-byte cipher slot followed by a 64-byte HMAC
//! slot. With an AEAD cipher the key is the start of the cipher slot and the 8-byte
//! implicit IV the start of the HMAC slot:
//!
//! ```text
//! 0..32    c->s AEAD key      64..72   c->s implicit IV
//! 128..160 s->c AEAD key      192..200 s->c implicit IV
//! ```
//!
//! The block comes from the TLS exporter ([`EKM_LABEL`], no context, [`KEY_BLOCK_LEN`]
//! bytes) when the peers negotiated `tls-ekm`, and otherwise from the key-method-2 PRF
//! ([`prf_key_block`]) over the random material both sides sent.

use std::fmt;

use md5::{Digest, Md5};
use ring::hmac;

/// TLS keying-material exporter label for data channel keys (`tls-ekm`).
pub const EKM_LABEL: &str = "EXPORTER-OpenVPN-datakeys";

/// Length of the key block (OpenVPN's `struct key2`).
pub const KEY_BLOCK_LEN: usize = 256;

/// Length of the pre-master secret a client sends in its key-method-2 message.
pub const PRE_MASTER_LEN: usize = 48;

/// Length of each random a peer sends in its key-method-2 message.
pub const RANDOM_LEN: usize = 32;

const SLOT: usize = 64;
const C2S_CIPHER: usize = 0;
const C2S_HMAC: usize = SLOT;
const S2C_CIPHER: usize = 2 * SLOT;
const S2C_HMAC: usize = 3 * SLOT;

/// Which end of the tunnel we are; decides which half of the key block we send with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The client: encrypts with the client-to-server keys.
    Client,
    /// The server: encrypts with the server-to-client keys.
    Server,
}

/// One end's data channel keys for an AEAD cipher.
///
/// `Debug` does not print key bytes, and the bytes are overwritten with zeros on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKeys {
    /// AEAD key for packets we send.
    pub encrypt_key: [u8; 32],
    /// Implicit IV (the last 8 nonce bytes) for packets we send.
    pub encrypt_iv: [u8; 8],
    /// AEAD key for packets we receive.
    pub decrypt_key: [u8; 32],
    /// Implicit IV for packets we receive.
    pub decrypt_iv: [u8; 8],
}

impl DataKeys {
    /// Picks this end's keys out of a key block (from the TLS exporter or
    /// [`prf_key_block`]).
    pub fn from_key_block(block: &[u8; KEY_BLOCK_LEN], role: Role) -> Self {
        let key = |at: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&block[at..at + 32]);
            k
        };
        let iv = |at: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&block[at..at + 8]);
            v
        };
        let (out_cipher, out_hmac, in_cipher, in_hmac) = match role {
            Role::Client => (C2S_CIPHER, C2S_HMAC, S2C_CIPHER, S2C_HMAC),
            Role::Server => (S2C_CIPHER, S2C_HMAC, C2S_CIPHER, C2S_HMAC),
        };
        Self {
            encrypt_key: key(out_cipher),
            encrypt_iv: iv(out_hmac),
            decrypt_key: key(in_cipher),
            decrypt_iv: iv(in_hmac),
        }
    }
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys").finish_non_exhaustive()
    }
}

impl Drop for DataKeys {
    fn drop(&mut self) {
        self.encrypt_key.fill(0);
        self.encrypt_iv.fill(0);
        self.decrypt_key.fill(0);
        self.decrypt_iv.fill(0);
        // Keep the stores from being optimised away as dead.
        std::hint::black_box(&mut *self);
    }
}

/// The TLS 1.0 PRF (RFC 2246 section 5): `P_MD5(S1, label + seed) XOR P_SHA1(S2, label +
/// seed)`, where S1 and S2 are the first and second halves of `secret` (sharing the middle
/// byte when its length is odd). Fills `out`.
pub fn tls1_prf(secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    let half = secret.len().div_ceil(2);
    let s1 = &secret[..half];
    let s2 = &secret[secret.len() - half..];
    out.fill(0);
    p_hash::<HmacMd5>(s1, label, seed, out);
    p_hash::<HmacSha1>(s2, label, seed, out);
}

/// Derives the key block the classic way (key method 2 without `tls-ekm`), as OpenVPN's
/// `generate_key_expansion_openvpn_prf` does:
///
/// ```text
/// master    = PRF(pre_master, "OpenVPN master secret", c.random1 | s.random1)        48 B
/// key block = PRF(master, "OpenVPN key expansion",
///                 c.random2 | s.random2 | client session id | server session id)  256 B
/// ```
///
/// The session ids are the 8 bytes each side puts on the wire (big-endian here, as
/// [`crate::wire::openvpn::ControlPacket::session_id`] reads them); the client's id comes
/// first on both ends.
pub fn prf_key_block(
    pre_master: &[u8; PRE_MASTER_LEN],
    client_random1: &[u8; RANDOM_LEN],
    client_random2: &[u8; RANDOM_LEN],
    server_random1: &[u8; RANDOM_LEN],
    server_random2: &[u8; RANDOM_LEN],
    client_session_id: u64,
    server_session_id: u64,
) -> [u8; KEY_BLOCK_LEN] {
    let mut seed = [0u8; 2 * RANDOM_LEN + 16];
    seed[..RANDOM_LEN].copy_from_slice(client_random1);
    seed[RANDOM_LEN..2 * RANDOM_LEN].copy_from_slice(server_random1);
    let mut master = [0u8; 48];
    tls1_prf(
        pre_master,
        b"OpenVPN master secret",
        &seed[..2 * RANDOM_LEN],
        &mut master,
    );

    seed[..RANDOM_LEN].copy_from_slice(client_random2);
    seed[RANDOM_LEN..2 * RANDOM_LEN].copy_from_slice(server_random2);
    seed[2 * RANDOM_LEN..2 * RANDOM_LEN + 8].copy_from_slice(&client_session_id.to_be_bytes());
    seed[2 * RANDOM_LEN + 8..].copy_from_slice(&server_session_id.to_be_bytes());
    let mut block = [0u8; KEY_BLOCK_LEN];
    tls1_prf(&master, b"OpenVPN key expansion", &seed, &mut block);
    master.fill(0);
    std::hint::black_box(&mut master);
    block
}

/// An HMAC that `p_hash` can drive: keyed once, then cloned per output block.
trait Mac: Clone {
    const LEN: usize;
    fn new(key: &[u8]) -> Self;
    fn update(&mut self, data: &[u8]);
    /// Writes the tag into `out[..LEN]`.
    fn finish(self, out: &mut [u8; 20]);
}

/// `P_hash(secret, label + seed)` XORed into `out`.
fn p_hash<M: Mac>(secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    let keyed = M::new(secret);
    // A(1) = HMAC(secret, label + seed); A(i) = HMAC(secret, A(i-1)).
    let mut a = [0u8; 20];
    let mut m = keyed.clone();
    m.update(label);
    m.update(seed);
    m.finish(&mut a);
    for chunk in out.chunks_mut(M::LEN) {
        let mut block = [0u8; 20];
        let mut m = keyed.clone();
        m.update(&a[..M::LEN]);
        m.update(label);
        m.update(seed);
        m.finish(&mut block);
        for (o, b) in chunk.iter_mut().zip(block) {
            *o ^= b;
        }
        let mut m = keyed.clone();
        m.update(&a[..M::LEN]);
        m.finish(&mut a);
    }
}

#[derive(Clone)]
struct HmacSha1(hmac::Context);

impl Mac for HmacSha1 {
    const LEN: usize = 20;

    fn new(key: &[u8]) -> Self {
        Self(hmac::Context::with_key(&hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            key,
        )))
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish(self, out: &mut [u8; 20]) {
        out.copy_from_slice(self.0.sign().as_ref());
    }
}

/// HMAC-MD5 (RFC 2104) over RustCrypto's MD5; ring has no MD5.
#[derive(Clone)]
struct HmacMd5 {
    inner: Md5,
    outer: Md5,
}

impl Mac for HmacMd5 {
    const LEN: usize = 16;

    fn new(key: &[u8]) -> Self {
        const BLOCK: usize = 64;
        let mut k = [0u8; BLOCK];
        if key.len() > BLOCK {
            k[..16].copy_from_slice(&Md5::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut ipad = [0x36u8; BLOCK];
        let mut opad = [0x5cu8; BLOCK];
        for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(k) {
            *i ^= k;
            *o ^= k;
        }
        let mut inner = Md5::new();
        inner.update(ipad);
        let mut outer = Md5::new();
        outer.update(opad);
        Self { inner, outer }
    }

    fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    fn finish(self, out: &mut [u8; 20]) {
        let mut outer = self.outer;
        outer.update(self.inner.finalize());
        out[..16].copy_from_slice(&outer.finalize());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_md5_matches_rfc2202() {
        // RFC 2202 test cases 1, 2 and 6 (key longer than a block).
        let cases: [(Vec<u8>, &[u8], &str); 3] = [
            (
                vec![0x0b; 16],
                b"Hi There",
                "9294727a3638bb1c13f48ef8158bfc9d",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?",
                "750c783e6ab0b503eaa86e310a5db738",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
            ),
        ];
        for (key, data, want) in cases {
            let mut m = HmacMd5::new(&key);
            m.update(data);
            let mut out = [0u8; 20];
            m.finish(&mut out);
            assert_eq!(out[..16], hex(want)[..]);
        }
    }

    #[test]
    fn tls1_prf_matches_openvpn_unit_test_vector() {
        // The vector from OpenVPN's tests/unit_tests/openvpn/test_crypto.c
        // (crypto_test_tls_prf): empty label, the seed and secret below, 32 bytes out.
        let secret = b"Lorem ipsum dolor sit amet, consectetur adipisici elit, sed eiusmod \
                       tempor incidunt ut labore et dolore magna aliqua.";
        let seed = b"Quis aute iure reprehenderit in voluptate velit esse cillum dolore";
        let mut out = [0u8; 32];
        tls1_prf(secret, b"", seed, &mut out);
        assert_eq!(
            out[..],
            hex("d98c8518c85e946927916acfc2d592fbb1567e4b4b1459e6a904ac2ddab72d67")[..]
        );
        // Splitting label and seed differently must not matter.
        let mut split = [0u8; 32];
        tls1_prf(secret, &seed[..10], &seed[10..], &mut split);
        assert_eq!(out, split);
    }

    #[test]
    fn tls1_prf_matches_openssl_kdf() {
        // Computed with `openssl kdf -keylen 100 -kdfopt digest:MD5-SHA1
        //   -kdfopt hexsecret:000102..2e (47 bytes, odd) -kdfopt seed:"test labelseed" TLS1-PRF`.
        let secret: Vec<u8> = (0u8..47).collect();
        let mut out = [0u8; 100];
        tls1_prf(&secret, b"test label", b"seed", &mut out);
        assert_eq!(out[..], hex(OPENSSL_ODD_SECRET_100)[..]);
    }

    #[test]
    fn tls1_prf_is_p_md5_xor_p_sha1_over_split_secret() {
        // Independent computation of the structure with ring's HMAC-SHA1 and a one-shot
        // HMAC-MD5, written out block by block as in RFC 2246.
        fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = HmacMd5::new(key);
            for p in parts {
                m.update(p);
            }
            let mut out = [0u8; 20];
            m.finish(&mut out);
            out[..16].to_vec()
        }
        fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
            hmac::sign(&k, &parts.concat()).as_ref().to_vec()
        }
        fn p(f: fn(&[u8], &[&[u8]]) -> Vec<u8>, key: &[u8], seed: &[u8], n: usize) -> Vec<u8> {
            let mut out = Vec::new();
            let mut a = f(key, &[seed]);
            while out.len() < n {
                out.extend(f(key, &[&a, seed]));
                a = f(key, &[&a]);
            }
            out.truncate(n);
            out
        }
        for secret_len in [0usize, 1, 2, 47, 48, 100] {
            let secret: Vec<u8> = (0..secret_len).map(|i| (i * 7 + 3) as u8).collect();
            let half = secret_len.div_ceil(2);
            let seed = [b"label".as_slice(), b"some seed bytes"].concat();
            let md5 = p(hmac_md5, &secret[..half], &seed, 150);
            let sha = p(hmac_sha1, &secret[secret_len - half..], &seed, 150);
            let want: Vec<u8> = md5.iter().zip(&sha).map(|(a, b)| a ^ b).collect();
            let mut got = vec![0u8; 150];
            tls1_prf(&secret, b"label", b"some seed bytes", &mut got);
            assert_eq!(got, want, "secret length {secret_len}");
        }
    }

    #[test]
    fn prf_key_block_matches_openssl_two_step_derivation() {
        // Expected bytes computed outside Rust with `openssl kdf ... TLS1-PRF`, first for the
        // master secret and then for the key block, with the seeds laid out as in OpenVPN's
        // generate_key_expansion_openvpn_prf().
        let pre_master: [u8; 48] = std::array::from_fn(|i| i as u8);
        let c1: [u8; 32] = std::array::from_fn(|i| 0x40 + i as u8);
        let c2: [u8; 32] = std::array::from_fn(|i| 0x60 + i as u8);
        let s1: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let s2: [u8; 32] = std::array::from_fn(|i| 0xa0 + i as u8);
        let block = prf_key_block(
            &pre_master,
            &c1,
            &c2,
            &s1,
            &s2,
            0x1122_3344_5566_7788,
            0x99aa_bbcc_ddee_ff00,
        );
        assert_eq!(block[..], hex(OPENSSL_KEY_BLOCK)[..]);
    }

    #[test]
    fn key_block_slots_by_role() {
        let block: [u8; 256] = std::array::from_fn(|i| i as u8);
        let client = DataKeys::from_key_block(&block, Role::Client);
        let server = DataKeys::from_key_block(&block, Role::Server);
        assert_eq!(client.encrypt_key[..], block[0..32]);
        assert_eq!(client.encrypt_iv[..], block[64..72]);
        assert_eq!(client.decrypt_key[..], block[128..160]);
        assert_eq!(client.decrypt_iv[..], block[192..200]);
        assert_eq!(server.encrypt_key, client.decrypt_key);
        assert_eq!(server.encrypt_iv, client.decrypt_iv);
        assert_eq!(server.decrypt_key, client.encrypt_key);
        assert_eq!(server.decrypt_iv, client.encrypt_iv);
    }

    #[test]
    fn debug_hides_key_bytes() {
        let block = [0xabu8; 256];
        let keys = DataKeys::from_key_block(&block, Role::Client);
        let shown = format!("{keys:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    const OPENSSL_ODD_SECRET_100: &str = "9de5aa39160d78658347a52910d3869649f7a3f0c14c72802a3f524e88b290c2 \
        230e2bbbf75a50c8bf0c8f65d542649aaae4e7f9b371e66dec2b18d40f17d612 \
        3b0532be672c76d3b7405eb92f6e90acd289e2367d221ee51a6b773f15411a84 \
        9feac20f";
    const OPENSSL_KEY_BLOCK: &str = "24766993f2a9d4e45492eab90fc1b657b19d22e92ad99489e0a2283f4e8097a6 \
        6b6163131fffa670031ab4c126d714e6dead65e1dd2ba0f4e7d473ee7147ace5 \
        09043a95dfa03b309380ca96c12c4b0b59b3c316533a2ce0e6e762480526b52e \
        636df8b5f631972777f3efab666ac163f138cca1d8f3e59c9d0fd2d5910653bc \
        02213445f36084b2dbad98b4d729c4bc5c6f37e725842ffc49c9cb504c5c1610 \
        1564aa93619b1d899aff073c71fa5e344429b1ae2bde8801ea8a00817cae9ae9 \
        9ef9edd5280451ec9fa4805c04b10331a184c07d194cb126a2e9dd2852ea293e \
        e9759785e19ef3bb0c70170191418d056665e8d96cfa18a8b3de1370e2d0e36f";
}
