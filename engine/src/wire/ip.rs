//! Minimal checked view of an IP packet header: version, source and destination.
//!
//! The gateway only needs addresses to route and to enforce anti-spoofing; the kernel on
//! either end does the rest.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A malformed IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    /// The buffer is shorter than the header it claims.
    #[error("truncated IP packet")]
    Truncated,
    /// The version nibble is neither 4 nor 6.
    #[error("unknown IP version {0}")]
    UnknownVersion(u8),
}

/// Header fields of an IP packet that routing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpHeader {
    /// IPv4 source and destination.
    V4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
    },
    /// IPv6 source, destination and next header.
    V6 {
        /// Source address.
        src: Ipv6Addr,
        /// Destination address.
        dst: Ipv6Addr,
        /// Next-header field (58 = ICMPv6).
        next_header: u8,
    },
}

impl IpHeader {
    /// Parses the addresses of an IPv4 or IPv6 packet.
    pub fn parse(packet: &[u8]) -> Result<Self, IpError> {
        let first = *packet.first().ok_or(IpError::Truncated)?;
        match first >> 4 {
            4 => {
                let ihl = usize::from(first & 0x0f) * 4;
                if ihl < 20 || packet.len() < ihl {
                    return Err(IpError::Truncated);
                }
                let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                Ok(IpHeader::V4 { src, dst })
            }
            6 => {
                if packet.len() < 40 {
                    return Err(IpError::Truncated);
                }
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s.copy_from_slice(&packet[8..24]);
                d.copy_from_slice(&packet[24..40]);
                Ok(IpHeader::V6 {
                    src: Ipv6Addr::from(s),
                    dst: Ipv6Addr::from(d),
                    next_header: packet[6],
                })
            }
            v => Err(IpError::UnknownVersion(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_addresses() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[10, 0, 0, 2]);
        p[16..20].copy_from_slice(&[192, 168, 1, 9]);
        assert_eq!(
            IpHeader::parse(&p).unwrap(),
            IpHeader::V4 {
                src: Ipv4Addr::new(10, 0, 0, 2),
                dst: Ipv4Addr::new(192, 168, 1, 9)
            }
        );
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert_eq!(IpHeader::parse(&[]), Err(IpError::Truncated));
        assert_eq!(IpHeader::parse(&[0x45, 0, 0]), Err(IpError::Truncated));
        assert_eq!(IpHeader::parse(&[0x46; 20]), Err(IpError::Truncated));
        assert_eq!(
            IpHeader::parse(&[0x20; 40]),
            Err(IpError::UnknownVersion(2))
        );
        assert_eq!(IpHeader::parse(&[0x60; 39]), Err(IpError::Truncated));
    }

    #[test]
    fn parses_ipv6_router_solicitation_header() {
        let mut p = [0u8; 48];
        p[0] = 0x60;
        p[6] = 58;
        p[24] = 0xff;
        p[25] = 0x02;
        p[39] = 2;
        match IpHeader::parse(&p).unwrap() {
            IpHeader::V6 {
                dst, next_header, ..
            } => {
                assert_eq!(next_header, 58);
                assert_eq!(dst, "ff02::2".parse::<Ipv6Addr>().unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
}
