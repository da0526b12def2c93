//! Diffie-Hellman for the KE payload (RFC 7296 2.14, RFC 3526, RFC 5903, RFC 8031).
//!
//! Elliptic-curve groups and x25519 come from ring; the MODP groups, which ring lacks, are
//! done with `crypto-bigint`'s constant-time Montgomery exponentiation.
//!
//! Randomness: ring's `SecureRandom` trait is sealed in ring 0.17, so our
//! [`Entropy`] cannot stand in for it. Ring-backed groups therefore
//! take a `&dyn ring::rand::SecureRandom` (drivers pass `SystemRandom`, tests may pass
//! `SystemRandom` or ring's fixed test generators); MODP exponents are drawn from our
//! `Entropy`, like every other random value in the engine.

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U384, U1024, U2048, U3072, Uint};
use ring::agreement;
use ring::rand::SecureRandom;

use crate::entropy::Entropy;

/// Why a key exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// The peer's KE data has the wrong length for the group.
    #[error("the peer's {group:?} public value is {got} bytes, expected {expected}")]
    BadPublicLength {
        /// The negotiated group.
        group: DhGroup,
        /// What the peer sent.
        got: usize,
        /// What the group requires.
        expected: usize,
    },
    /// The peer's public value is not a valid group element (off the curve, out of range,
    /// or a degenerate value that would give a predictable secret).
    #[error("the peer's {0:?} public value is invalid")]
    InvalidPublic(DhGroup),
    /// The random number generator failed; try again.
    #[error("random number generator failed while generating a {0:?} key")]
    Rng(DhGroup),
}

/// A Diffie-Hellman group (IKEv2 transform type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DhGroup {
    /// 1024-bit MODP group (2), RFC 2409 section 6.2. Weak (about 80-bit strength): only for
    /// Windows' built-in client, whose default offers nothing else.
    Modp1024,
    /// 2048-bit MODP group (14), RFC 3526.
    Modp2048,
    /// 3072-bit MODP group (15), RFC 3526.
    Modp3072,
    /// 256-bit random ECP group, NIST P-256 (19), RFC 5903.
    Ecp256,
    /// 384-bit random ECP group, NIST P-384 (20), RFC 5903.
    Ecp384,
    /// Curve25519 (31), RFC 8031.
    Curve25519,
}

impl DhGroup {
    /// Every group we implement, in the order we prefer them.
    pub const ALL: [DhGroup; 6] = [
        DhGroup::Curve25519,
        DhGroup::Ecp256,
        DhGroup::Ecp384,
        DhGroup::Modp3072,
        DhGroup::Modp2048,
        DhGroup::Modp1024,
    ];

    /// The IANA transform id (IKEv2 Transform Type 4).
    pub const fn transform_id(self) -> u16 {
        match self {
            DhGroup::Modp1024 => 2,
            DhGroup::Modp2048 => 14,
            DhGroup::Modp3072 => 15,
            DhGroup::Ecp256 => 19,
            DhGroup::Ecp384 => 20,
            DhGroup::Curve25519 => 31,
        }
    }

    /// The group for an IANA transform id, if we implement it.
    pub fn from_transform_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.transform_id() == id)
    }

    /// Length of the public value in the KE payload.
    pub const fn public_len(self) -> usize {
        match self {
            DhGroup::Modp1024 => 128,
            DhGroup::Modp2048 => 256,
            DhGroup::Modp3072 => 384,
            DhGroup::Ecp256 => 64,
            DhGroup::Ecp384 => 96,
            DhGroup::Curve25519 => 32,
        }
    }

    /// Length of the shared secret g^ir.
    pub const fn shared_secret_len(self) -> usize {
        match self {
            DhGroup::Modp1024 => 128,
            DhGroup::Modp2048 => 256,
            DhGroup::Modp3072 => 384,
            DhGroup::Ecp256 => 32,
            DhGroup::Ecp384 => 48,
            DhGroup::Curve25519 => 32,
        }
    }

    fn ring_algorithm(self) -> Option<&'static agreement::Algorithm> {
        match self {
            DhGroup::Ecp256 => Some(&agreement::ECDH_P256),
            DhGroup::Ecp384 => Some(&agreement::ECDH_P384),
            DhGroup::Curve25519 => Some(&agreement::X25519),
            DhGroup::Modp1024 | DhGroup::Modp2048 | DhGroup::Modp3072 => None,
        }
    }

    /// A fresh private key and the public value to put in the KE payload.
    ///
    /// MODP exponents come from `entropy`; the ring-backed groups use `rng` (see the module
    /// documentation for why there are two sources).
    pub fn generate(
        self,
        entropy: &mut dyn Entropy,
        rng: &dyn SecureRandom,
    ) -> Result<(DhPrivate, Vec<u8>), DhError> {
        let Some(alg) = self.ring_algorithm() else {
            let mut exponent = [0u8; MODP_EXPONENT_BYTES];
            entropy.fill(&mut exponent);
            // A fixed top bit keeps the exponent's length, and so the timing, constant.
            exponent[0] |= 0x80;
            let public = match self {
                DhGroup::Modp1024 => modp_public::<{ U1024::LIMBS }>(P2, &exponent),
                DhGroup::Modp2048 => modp_public::<{ U2048::LIMBS }>(P14, &exponent),
                _ => modp_public::<{ U3072::LIMBS }>(P15, &exponent),
            };
            let private = DhPrivate {
                group: self,
                key: PrivateKey::Modp(exponent),
            };
            return Ok((private, public));
        };
        let key =
            agreement::EphemeralPrivateKey::generate(alg, rng).map_err(|_| DhError::Rng(self))?;
        let public = key.compute_public_key().map_err(|_| DhError::Rng(self))?;
        let public = match self {
            // SEC1 uncompressed point 0x04 | x | y; IKEv2 sends x | y (RFC 5903 section 7).
            DhGroup::Ecp256 | DhGroup::Ecp384 => public.as_ref().get(1..),
            _ => Some(public.as_ref()),
        }
        .ok_or(DhError::Rng(self))?
        .to_vec();
        let private = DhPrivate {
            group: self,
            key: PrivateKey::Ring(key),
        };
        Ok((private, public))
    }
}

/// Our half of a key exchange. Used once: computing the shared secret consumes it.
pub struct DhPrivate {
    group: DhGroup,
    key: PrivateKey,
}

enum PrivateKey {
    Modp([u8; MODP_EXPONENT_BYTES]),
    Ring(agreement::EphemeralPrivateKey),
}

impl std::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhPrivate")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl DhPrivate {
    /// The group this key belongs to.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// g^ir from the peer's KE data, in the form RFC 7296 2.14 feeds to the PRF: MODP
    /// secrets padded to the modulus length, ECP secrets the x coordinate only (RFC 5903),
    /// x25519 the 32-byte output (RFC 8031).
    pub fn shared_secret(self, peer_public: &[u8]) -> Result<Vec<u8>, DhError> {
        let group = self.group;
        if peer_public.len() != group.public_len() {
            return Err(DhError::BadPublicLength {
                group,
                got: peer_public.len(),
                expected: group.public_len(),
            });
        }
        match self.key {
            PrivateKey::Modp(exponent) => match group {
                DhGroup::Modp1024 => modp_shared::<{ U1024::LIMBS }>(P2, &exponent, peer_public),
                DhGroup::Modp2048 => modp_shared::<{ U2048::LIMBS }>(P14, &exponent, peer_public),
                _ => modp_shared::<{ U3072::LIMBS }>(P15, &exponent, peer_public),
            }
            .ok_or(DhError::InvalidPublic(group)),
            PrivateKey::Ring(key) => {
                let mut point = [0u8; 1 + 96];
                let peer = match group {
                    DhGroup::Ecp256 | DhGroup::Ecp384 => {
                        point[0] = 0x04;
                        point[1..=peer_public.len()].copy_from_slice(peer_public);
                        &point[..=peer_public.len()]
                    }
                    _ => peer_public,
                };
                let alg = key.algorithm();
                let peer = agreement::UnparsedPublicKey::new(alg, peer);
                let secret = agreement::agree_ephemeral(key, &peer, |s| s.to_vec())
                    .map_err(|_| DhError::InvalidPublic(group))?;
                // RFC 8031 section 2.3: reject the all-zero output of a low-order point.
                if secret.iter().all(|&b| b == 0) {
                    return Err(DhError::InvalidPublic(group));
                }
                Ok(secret)
            }
        }
    }
}

/// Private MODP exponents are 384 bits: more than twice the ~128-bit strength of group 15
/// (RFC 3526 section 8), and cheap next to a full-size exponent.
const MODP_EXPONENT_BYTES: usize = 48;

/// RFC 2409 section 6.2: the 1024-bit MODP prime (Oakley group 2), generator 2.
const P2: Odd<U1024> = Odd::<U1024>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
));

/// RFC 3526 section 3: the 2048-bit MODP prime, generator 2.
const P14: Odd<U2048> = Odd::<U2048>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
));

/// RFC 3526 section 4: the 3072-bit MODP prime, generator 2.
const P15: Odd<U3072> = Odd::<U3072>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
));

/// base^exponent mod p, constant time in the base and the exponent.
fn modp_pow<const L: usize>(
    p: Odd<Uint<L>>,
    base: &Uint<L>,
    exponent: &[u8; MODP_EXPONENT_BYTES],
) -> Uint<L> {
    let params = FixedMontyParams::new(p);
    let exponent = U384::from_be_slice(exponent);
    FixedMontyForm::new(base, &params)
        .pow_bounded_exp(&exponent, U384::BITS)
        .retrieve()
}

fn modp_public<const L: usize>(p: Odd<Uint<L>>, exponent: &[u8; MODP_EXPONENT_BYTES]) -> Vec<u8> {
    let y = modp_pow(p, &Uint::<L>::from_u8(2), exponent);
    y.to_be_bytes().as_ref().to_vec()
}

/// peer^exponent mod p after checking 1 < peer < p - 1 (RFC 7296 section 5.2 and NIST
/// SP 800-56A: 0, 1 and p - 1 would give a secret an attacker can predict).
fn modp_shared<const L: usize>(
    p: Odd<Uint<L>>,
    exponent: &[u8; MODP_EXPONENT_BYTES],
    peer_public: &[u8],
) -> Option<Vec<u8>> {
    if peer_public.len() != Uint::<L>::BYTES {
        return None;
    }
    let y = Uint::<L>::from_be_slice(peer_public);
    let p_minus_1 = p.as_ref().wrapping_sub(&Uint::ONE);
    if y <= Uint::ONE || y >= p_minus_1 {
        return None;
    }
    let z = modp_pow(p, &y, exponent);
    if z == Uint::ONE {
        return None;
    }
    Some(z.to_be_bytes().as_ref().to_vec())
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

    /// ring's test generator hands a fixed private key to `EphemeralPrivateKey::generate`.
    #[allow(deprecated)]
    fn generate_fixed(group: DhGroup, private: &[u8]) -> (DhPrivate, Vec<u8>) {
        let rng = ring::test::rand::FixedSliceRandom { bytes: private };
        group
            .generate(&mut SeededEntropy::new(0), &rng)
            .expect("fixed key is valid")
    }

    #[test]
    fn ids_round_trip() {
        for g in DhGroup::ALL {
            assert_eq!(DhGroup::from_transform_id(g.transform_id()), Some(g));
        }
        assert_eq!(DhGroup::from_transform_id(2), Some(DhGroup::Modp1024));
        assert_eq!(DhGroup::from_transform_id(5), None, "MODP-1536 is not");
    }

    #[test]
    fn rfc5903_ecp256() {
        // RFC 5903 section 8.1.
        let i = unhex("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433");
        let gi = unhex(
            "DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180
             5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3",
        );
        let r = unhex("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53");
        let gr = unhex(
            "D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63
             56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB",
        );
        let gir = unhex("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE");
        let (pi, public_i) = generate_fixed(DhGroup::Ecp256, &i);
        let (pr, public_r) = generate_fixed(DhGroup::Ecp256, &r);
        assert_eq!(public_i, gi);
        assert_eq!(public_r, gr);
        assert_eq!(pi.shared_secret(&gr).unwrap(), gir);
        assert_eq!(pr.shared_secret(&gi).unwrap(), gir);
    }

    #[test]
    fn rfc5903_ecp384() {
        // RFC 5903 section 8.2.
        let i = unhex(
            "099F3C70 34D4A2C6 99884D73 A375A67F 7624EF7C 6B3C0F16 0647B674 14DCE655
             E35B5380 41E649EE 3FAEF896 783AB194",
        );
        let gi = unhex(
            "667842D7 D180AC2C DE6F74F3 7551F557 55C7645C 20EF73E3 1634FE72 B4C55EE6
             DE3AC808 ACB4BDB4 C88732AE E95F41AA 9482ED1F C0EEB9CA FC498462 5CCFC23F
             65032149 E0E144AD A0241815 35A0F38E EB9FCFF3 C2C947DA E69B4C63 4573A81C",
        );
        let r = unhex(
            "41CB0779 B4BDB85D 47846725 FBEC3C94 30FAB46C C8DC5060 855CC9BD A0AA2942
             E0308312 916B8ED2 960E4BD5 5A7448FC",
        );
        let gr = unhex(
            "E558DBEF 53EECDE3 D3FCCFC1 AEA08A89 A987475D 12FD950D 83CFA417 32BC509D
             0D1AC43A 0336DEF9 6FDA41D0 774A3571 DCFBEC7A ACF31964 72169E83 8430367F
             66EEBE3C 6E70C416 DD5F0C68 759DD1FF F83FA401 42209DFF 5EAAD96D B9E6386C",
        );
        let gir = unhex(
            "11187331 C279962D 93D60424 3FD592CB 9D0A926F 422E4718 7521287E 7156C5C4
             D6031355 69B9E9D0 9CF5D4A2 70F59746",
        );
        let (pi, public_i) = generate_fixed(DhGroup::Ecp384, &i);
        let (pr, public_r) = generate_fixed(DhGroup::Ecp384, &r);
        assert_eq!(public_i, gi);
        assert_eq!(public_r, gr);
        assert_eq!(pi.shared_secret(&gr).unwrap(), gir);
        assert_eq!(pr.shared_secret(&gi).unwrap(), gir);
    }

    #[test]
    fn rfc7748_x25519() {
        // RFC 7748 section 6.1.
        let a = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let a_pub = unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let b = unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let b_pub = unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let k = unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        let (pa, public_a) = generate_fixed(DhGroup::Curve25519, &a);
        let (pb, public_b) = generate_fixed(DhGroup::Curve25519, &b);
        assert_eq!(public_a, a_pub);
        assert_eq!(public_b, b_pub);
        assert_eq!(pa.shared_secret(&b_pub).unwrap(), k);
        assert_eq!(pb.shared_secret(&a_pub).unwrap(), k);
    }

    #[test]
    fn x25519_rejects_low_order_points() {
        let a = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        for bad in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let (pa, _) = generate_fixed(DhGroup::Curve25519, &a);
            assert_eq!(
                pa.shared_secret(&bad),
                Err(DhError::InvalidPublic(DhGroup::Curve25519))
            );
        }
    }

    #[test]
    fn ecp_rejects_points_off_the_curve_and_bad_lengths() {
        let i = unhex("C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433");
        let (p, mut public) = generate_fixed(DhGroup::Ecp256, &i);
        public[63] ^= 1;
        assert_eq!(
            p.shared_secret(&public),
            Err(DhError::InvalidPublic(DhGroup::Ecp256))
        );
        let (p, public) = generate_fixed(DhGroup::Ecp256, &i);
        assert_eq!(
            p.shared_secret(&public[..63]),
            Err(DhError::BadPublicLength {
                group: DhGroup::Ecp256,
                got: 63,
                expected: 64
            })
        );
    }

    #[test]
    fn modp_round_trip_between_two_parties() {
        #[allow(deprecated)]
        let unused = ring::test::rand::FixedByteRandom { byte: 0 };
        for group in [DhGroup::Modp1024, DhGroup::Modp2048, DhGroup::Modp3072] {
            let (a, a_pub) = group.generate(&mut SeededEntropy::new(1), &unused).unwrap();
            let (b, b_pub) = group.generate(&mut SeededEntropy::new(2), &unused).unwrap();
            assert_eq!(a_pub.len(), group.public_len());
            assert_ne!(a_pub, b_pub);
            let s1 = a.shared_secret(&b_pub).unwrap();
            let s2 = b.shared_secret(&a_pub).unwrap();
            assert_eq!(s1, s2);
            assert_eq!(s1.len(), group.shared_secret_len());
            // Deterministic given the entropy.
            let (_, again) = group.generate(&mut SeededEntropy::new(1), &unused).unwrap();
            assert_eq!(a_pub, again);
        }
    }

    #[test]
    fn modp_matches_an_independent_computation() {
        // SHA-256 of 2^(2^383 + 5) mod p, computed with Python's pow(2, x, p).
        let mut x = [0u8; MODP_EXPONENT_BYTES];
        x[0] = 0x80;
        x[MODP_EXPONENT_BYTES - 1] = 5;
        let sha = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA256, b)
                .as_ref()
                .to_vec()
        };
        assert_eq!(
            sha(&modp_public::<{ U1024::LIMBS }>(P2, &x)),
            unhex("c169ffc17f974c280e4407103064316d7b2457f5f9e6bd5fbfd4700055e53eb0")
        );
        assert_eq!(
            sha(&modp_public::<{ U2048::LIMBS }>(P14, &x)),
            unhex("9824761398a29c1be555d6311ebc7c485037bb73810a24176971a3c74356ec6a")
        );
        assert_eq!(
            sha(&modp_public::<{ U3072::LIMBS }>(P15, &x)),
            unhex("baf9955c7dfd9ce67886b5bdb77ab9e03cb0696461d57246dda9764b7ba63e69")
        );
    }

    #[test]
    fn modp_rejects_degenerate_public_values() {
        #[allow(deprecated)]
        let unused = ring::test::rand::FixedByteRandom { byte: 0 };
        let p = P14.as_ref().to_be_bytes().as_ref().to_vec();
        let mut p_minus_1 = p.clone();
        p_minus_1[255] -= 1;
        let mut one = vec![0u8; 256];
        one[255] = 1;
        for bad in [vec![0u8; 256], one, p_minus_1, p, vec![0xff; 256]] {
            let (a, _) = DhGroup::Modp2048
                .generate(&mut SeededEntropy::new(3), &unused)
                .unwrap();
            assert_eq!(
                a.shared_secret(&bad),
                Err(DhError::InvalidPublic(DhGroup::Modp2048))
            );
        }
        let (a, _) = DhGroup::Modp2048
            .generate(&mut SeededEntropy::new(3), &unused)
            .unwrap();
        assert!(matches!(
            a.shared_secret(&[2; 255]),
            Err(DhError::BadPublicLength { .. })
        ));
    }
}
