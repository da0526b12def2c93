//! Configuration payload (RFC 7296 section 3.15): virtual addresses and DNS servers for
//! road warriors.
//!
//! ```text
//! CP body:    CFG type (1) | reserved (3) | attribute...
//! attribute:  R (1 bit) attribute type (15 bits) | length (2) | value
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Reader, Result, WireError, registry};

/// Most attributes we accept in one CP payload (a reply with many split-tunnel subnets is
/// the largest).
pub const MAX_CFG_ATTRIBUTES: usize = 128;

registry! {
    /// Configuration payload type.
    CfgType(u8) {
        /// The initiator asks for configuration (attributes usually empty).
        CFG_REQUEST = 1,
        /// The responder's answer to a request.
        CFG_REPLY = 2,
        /// Pushes configuration.
        CFG_SET = 3,
        /// Acknowledges a CFG_SET.
        CFG_ACK = 4,
    }
}

registry! {
    /// Configuration attribute type (IANA "IKEv2 Configuration Payload Attribute Types").
    CfgAttrType(u16) {
        /// Virtual IPv4 address (0 or 4 bytes).
        INTERNAL_IP4_ADDRESS = 1,
        /// Netmask of the virtual IPv4 address (0 or 4 bytes).
        INTERNAL_IP4_NETMASK = 2,
        /// IPv4 DNS server (0 or 4 bytes).
        INTERNAL_IP4_DNS = 3,
        /// IPv4 NetBIOS name server (0 or 4 bytes).
        INTERNAL_IP4_NBNS = 4,
        /// IPv4 DHCP server (0 or 4 bytes).
        INTERNAL_IP4_DHCP = 6,
        /// Application version string.
        APPLICATION_VERSION = 7,
        /// Virtual IPv6 address and prefix length (0 or 17 bytes).
        INTERNAL_IP6_ADDRESS = 8,
        /// IPv6 DNS server (0 or 16 bytes).
        INTERNAL_IP6_DNS = 10,
        /// IPv6 DHCP server (0 or 16 bytes).
        INTERNAL_IP6_DHCP = 12,
        /// A protected IPv4 subnet: address and netmask (0 or 8 bytes).
        INTERNAL_IP4_SUBNET = 13,
        /// The attribute types the sender supports.
        SUPPORTED_ATTRIBUTES = 14,
        /// A protected IPv6 subnet: address and prefix length (0 or 17 bytes).
        INTERNAL_IP6_SUBNET = 15,
        /// IPv6 link interface id (RFC 5739).
        INTERNAL_IP6_LINK = 17,
        /// IPv6 prefix (RFC 5739).
        INTERNAL_IP6_PREFIX = 18,
        /// DNS domain for split DNS (RFC 8598).
        INTERNAL_DNS_DOMAIN = 25,
        /// DNSSEC trust anchor (RFC 8598).
        INTERNAL_DNSSEC_TA = 26,
    }
}

/// One configuration attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CfgAttribute<'a> {
    /// The attribute type (15 bits; the reserved high bit is dropped).
    pub attr_type: CfgAttrType,
    /// The value; empty in a request for "any".
    pub value: &'a [u8],
}

impl<'a> CfgAttribute<'a> {
    /// An attribute with an empty value (what a CFG_REQUEST carries).
    pub fn request(attr_type: CfgAttrType) -> Self {
        Self {
            attr_type,
            value: &[],
        }
    }

    /// The value as one IPv4 address (4 bytes).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        <[u8; 4]>::try_from(self.value).ok().map(Ipv4Addr::from)
    }

    /// The value as an IPv4 address and netmask (8 bytes, INTERNAL_IP4_SUBNET).
    pub fn ipv4_subnet(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let v: [u8; 8] = self.value.try_into().ok()?;
        let (addr, mask) = v.split_at(4);
        Some((
            Ipv4Addr::from(<[u8; 4]>::try_from(addr).ok()?),
            Ipv4Addr::from(<[u8; 4]>::try_from(mask).ok()?),
        ))
    }

    /// The value as a split-DNS domain (INTERNAL_DNS_DOMAIN, RFC 8598: presentation form),
    /// normalized; None when it is not a domain name.
    pub fn dns_domain(&self) -> Option<String> {
        std::str::from_utf8(self.value)
            .ok()
            .and_then(crate::wire::dns::normalize_domain)
    }

    /// The value as one IPv6 address (16 bytes).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        <[u8; 16]>::try_from(self.value).ok().map(Ipv6Addr::from)
    }

    /// The value as an IPv6 address and prefix length (17 bytes, INTERNAL_IP6_ADDRESS and
    /// INTERNAL_IP6_SUBNET).
    pub fn ipv6_prefix(&self) -> Option<(Ipv6Addr, u8)> {
        let v: [u8; 17] = self.value.try_into().ok()?;
        let (addr, len) = v.split_at(16);
        Some((
            Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?),
            *len.first()?,
        ))
    }
}

/// A Configuration payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpPayload<'a> {
    /// Request, reply, set or ack.
    pub cfg_type: CfgType,
    /// The attributes in wire order.
    pub attributes: Vec<CfgAttribute<'a>>,
}

impl<'a> CpPayload<'a> {
    /// Parses the payload body (after the generic header).
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let cfg_type = CfgType(r.u8()?);
        r.skip(3)?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            if attributes.len() >= MAX_CFG_ATTRIBUTES {
                return Err(WireError::TooMany {
                    what: "configuration attributes",
                    limit: MAX_CFG_ATTRIBUTES,
                });
            }
            let attr_type = CfgAttrType(r.u16()? & 0x7fff);
            let len = r.u16()?;
            let value = r.take(usize::from(len))?;
            attributes.push(CfgAttribute { attr_type, value });
        }
        Ok(Self {
            cfg_type,
            attributes,
        })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        4 + self
            .attributes
            .iter()
            .map(|a| 4 + a.value.len())
            .sum::<usize>()
    }

    /// Appends the body.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(self.cfg_type.0);
        out.extend_from_slice(&[0, 0, 0]);
        for a in &self.attributes {
            out.extend_from_slice(&(a.attr_type.0 & 0x7fff).to_be_bytes());
            out.extend_from_slice(&super::len16(a.value.len()).to_be_bytes());
            out.extend_from_slice(a.value);
        }
    }

    /// The attributes of one type, in order.
    pub fn attributes_of(&self, attr_type: CfgAttrType) -> impl Iterator<Item = &CfgAttribute<'a>> {
        self.attributes
            .iter()
            .filter(move |a| a.attr_type == attr_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> CpPayload<'_> {
        let cp = CpPayload::parse_body(bytes).unwrap();
        let mut out = Vec::new();
        cp.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), cp.body_len());
        cp
    }

    #[test]
    fn split_dns_domain_rfc_8598() {
        // CFG_REPLY with INTERNAL_DNS_DOMAIN (25) "Corp.Example." and a bad one.
        let bytes = b"\x02\x00\x00\x00\x00\x19\x00\x0dCorp.Example.\x00\x19\x00\x03a b";
        let cp = round_trip(bytes);
        let domains: Vec<_> = cp
            .attributes_of(CfgAttrType::INTERNAL_DNS_DOMAIN)
            .map(CfgAttribute::dns_domain)
            .collect();
        assert_eq!(domains, [Some("corp.example".to_owned()), None]);
        let mut out = Vec::new();
        CpPayload {
            cfg_type: CfgType::CFG_REPLY,
            attributes: vec![CfgAttribute {
                attr_type: CfgAttrType::INTERNAL_DNS_DOMAIN,
                value: b"corp.example",
            }],
        }
        .emit_body(&mut out);
        assert_eq!(out, b"\x02\x00\x00\x00\x00\x19\x00\x0ccorp.example");
    }

    #[test]
    fn strongswan_cfg_request() {
        // charon-cmd: CP(CFG_REQUEST) with INTERNAL_IP4_ADDRESS and INTERNAL_IP4_DNS, empty.
        let cp = round_trip(&[1, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0]);
        assert_eq!(cp.cfg_type, CfgType::CFG_REQUEST);
        assert_eq!(
            cp.attributes,
            [
                CfgAttribute::request(CfgAttrType::INTERNAL_IP4_ADDRESS),
                CfgAttribute::request(CfgAttrType::INTERNAL_IP4_DNS)
            ]
        );
        assert_eq!(cp.attributes[0].ipv4(), None);
    }

    #[test]
    fn cfg_reply_with_address_dns_subnet_and_ipv6() {
        let mut bytes = vec![2, 0, 0, 0];
        bytes.extend([0, 1, 0, 4, 10, 8, 0, 2]);
        bytes.extend([0, 3, 0, 4, 10, 8, 0, 1]);
        bytes.extend([0, 3, 0, 4, 1, 1, 1, 1]);
        bytes.extend([0, 13, 0, 8, 192, 168, 0, 0, 255, 255, 0, 0]);
        bytes.extend([0, 8, 0, 17]);
        bytes.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        bytes.push(64);
        let cp = round_trip(&bytes);
        assert_eq!(cp.cfg_type, CfgType::CFG_REPLY);
        assert_eq!(cp.attributes[0].ipv4(), Some(Ipv4Addr::new(10, 8, 0, 2)));
        let dns: Vec<_> = cp
            .attributes_of(CfgAttrType::INTERNAL_IP4_DNS)
            .filter_map(CfgAttribute::ipv4)
            .collect();
        assert_eq!(dns, [Ipv4Addr::new(10, 8, 0, 1), Ipv4Addr::new(1, 1, 1, 1)]);
        assert_eq!(
            cp.attributes[3].ipv4_subnet(),
            Some((Ipv4Addr::new(192, 168, 0, 0), Ipv4Addr::new(255, 255, 0, 0)))
        );
        assert_eq!(
            cp.attributes[4].ipv6_prefix(),
            Some(("fd00::2".parse().unwrap(), 64))
        );
        assert_eq!(cp.attributes[4].ipv6(), None);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(CpPayload::parse_body(&[1, 0, 0]), Err(WireError::Truncated));
        assert_eq!(
            CpPayload::parse_body(&[1, 0, 0, 0, 0, 1, 0, 4, 10]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            CpPayload::parse_body(&[1, 0, 0, 0, 0, 1, 0]),
            Err(WireError::Truncated)
        );
        let mut many = vec![1, 0, 0, 0];
        for _ in 0..=MAX_CFG_ATTRIBUTES {
            many.extend([0, 3, 0, 0]);
        }
        assert!(matches!(
            CpPayload::parse_body(&many),
            Err(WireError::TooMany { .. })
        ));
    }
}
