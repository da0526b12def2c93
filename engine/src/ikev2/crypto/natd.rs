//! NAT detection hashes (RFC 7296 section 2.23).
//!
//! NAT_DETECTION_SOURCE_IP / NAT_DETECTION_DESTINATION_IP carry
//! SHA-1(SPIi | SPIr | IP address | port). In IKE_SA_INIT requests SPIr is zero.
//!
//! A mismatch on the source hash tells the peer that we are behind a NAT, so both sides
//! float to UDP 4500 and encapsulate ESP in UDP (RFC 3948). strongSwan's kernel-libipsec
//! sends a deliberately wrong source hash ([`fake_source_hash`]) to force exactly that; the
//! gateway can do the same and never has to handle raw ESP (IP protocol 50).

use std::net::{IpAddr, SocketAddr};

use ring::digest;

use crate::entropy::Entropy;

/// Length of a NAT detection hash (SHA-1).
pub const NATD_HASH_LEN: usize = 20;

/// SHA-1(SPIi | SPIr | IP | port), the address in network order (4 or 16 bytes) and the
/// port as two big-endian bytes.
pub fn natd_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> [u8; NATD_HASH_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => ctx.update(&ip.octets()),
        IpAddr::V6(ip) => ctx.update(&ip.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    let mut out = [0u8; NATD_HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Whether the peer's hash matches the address and port we see: false means there is a NAT
/// (or the peer pretends there is) on that side and UDP encapsulation is to be used.
pub fn natd_matches(received: &[u8], spi_i: u64, spi_r: u64, addr: SocketAddr) -> bool {
    received == natd_hash(spi_i, spi_r, addr)
}

/// A NAT_DETECTION_SOURCE_IP value that matches no address: random bytes, so the peer
/// concludes we are behind a NAT and both ends use ESP-in-UDP on port 4500.
pub fn fake_source_hash(entropy: &mut dyn Entropy) -> [u8; NATD_HASH_LEN] {
    let mut out = [0u8; NATD_HASH_LEN];
    entropy.fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    #[test]
    fn hash_covers_spis_address_and_port() {
        let addr: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let mut input = Vec::new();
        input.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
        input.extend_from_slice(&[0u8; 8]);
        input.extend_from_slice(&[192, 0, 2, 1, 0x01, 0xf4]);
        let expected = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
        let h = natd_hash(0x0123_4567_89ab_cdef, 0, addr);
        assert_eq!(h[..], *expected.as_ref());
        assert!(natd_matches(&h, 0x0123_4567_89ab_cdef, 0, addr));
        assert!(!natd_matches(
            &h,
            0x0123_4567_89ab_cdef,
            0,
            "192.0.2.1:4500".parse().unwrap()
        ));
        assert!(!natd_matches(&h[..19], 0x0123_4567_89ab_cdef, 0, addr));
    }

    #[test]
    fn sha1_known_answer_and_ipv6() {
        // FIPS 180 "abc" through the same digest, then an IPv6 hash of the right length.
        let abc = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b"abc");
        assert_eq!(abc.as_ref()[..4], [0xa9, 0x99, 0x3e, 0x36]);
        let v6: SocketAddr = "[2001:db8::1]:4500".parse().unwrap();
        assert_ne!(natd_hash(1, 2, v6), natd_hash(2, 1, v6));
    }

    #[test]
    fn fake_hash_does_not_match() {
        let addr: SocketAddr = "198.51.100.7:4500".parse().unwrap();
        let fake = fake_source_hash(&mut SeededEntropy::new(1));
        assert!(!natd_matches(&fake, 1, 2, addr));
    }
}
