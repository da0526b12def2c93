//! Traffic Selector payloads TSi and TSr (RFC 7296 section 3.13).
//!
//! ```text
//! TS body:   number of TSs (1) | reserved (3) | traffic selector...
//! selector:  TS type (1) | IP protocol id (1) | selector length (2)
//!            | start port (2) | end port (2) | starting address | ending address
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Reader, Result, WireError, registry};

registry! {
    /// Traffic selector type (IANA "IKEv2 Traffic Selector Types").
    TsType(u8) {
        /// An inclusive range of IPv4 addresses (selector length 16).
        IPV4_ADDR_RANGE = 7,
        /// An inclusive range of IPv6 addresses (selector length 40).
        IPV6_ADDR_RANGE = 8,
    }
}

/// An inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressRange {
    /// IPv4 addresses `start..=end`.
    V4 {
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
    },
    /// IPv6 addresses `start..=end`.
    V6 {
        /// First address.
        start: Ipv6Addr,
        /// Last address.
        end: Ipv6Addr,
    },
}

/// One traffic selector: protocol, port range and address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol number (6 TCP, 17 UDP, ...); 0 for any.
    pub ip_protocol: u8,
    /// First port (0 for any).
    pub start_port: u16,
    /// Last port (65535 for any).
    pub end_port: u16,
    /// The addresses.
    pub range: AddressRange,
}

impl TrafficSelector {
    /// Every IPv4 address, protocol and port (what strongSwan's road warriors propose:
    /// 0.0.0.0-255.255.255.255).
    pub fn any_v4() -> Self {
        Self::from_net(IpNet::V4(Ipv4Net::default()))
    }

    /// Every IPv6 address, protocol and port.
    pub fn any_v6() -> Self {
        Self::from_net(IpNet::V6(Ipv6Net::default()))
    }

    /// All protocols and ports to and from the addresses of `net`.
    pub fn from_net(net: IpNet) -> Self {
        let range = match net {
            IpNet::V4(n) => AddressRange::V4 {
                start: n.network(),
                end: n.broadcast(),
            },
            IpNet::V6(n) => AddressRange::V6 {
                start: n.network(),
                end: n.broadcast(),
            },
        };
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            range,
        }
    }

    /// The prefix whose addresses are exactly this selector's range, if there is one
    /// (protocol and ports are not considered).
    pub fn to_net(&self) -> Option<IpNet> {
        match self.range {
            AddressRange::V4 { start, end } => {
                let (s, e) = (u32::from(start), u32::from(end));
                let diff = s ^ e;
                let prefix = diff.leading_zeros();
                let contiguous = diff.count_ones() + prefix == 32;
                let aligned = s & diff == 0 && e & diff == diff;
                if !(contiguous && aligned) {
                    return None;
                }
                Ipv4Net::new(start, u8::try_from(prefix).ok()?)
                    .ok()
                    .map(IpNet::V4)
            }
            AddressRange::V6 { start, end } => {
                let (s, e) = (u128::from(start), u128::from(end));
                let diff = s ^ e;
                let prefix = diff.leading_zeros();
                let contiguous = diff.count_ones() + prefix == 128;
                let aligned = s & diff == 0 && e & diff == diff;
                if !(contiguous && aligned) {
                    return None;
                }
                Ipv6Net::new(start, u8::try_from(prefix).ok()?)
                    .ok()
                    .map(IpNet::V6)
            }
        }
    }

    /// Whether `addr` lies in the address range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.range, addr) {
            (AddressRange::V4 { start, end }, IpAddr::V4(a)) => start <= a && a <= end,
            (AddressRange::V6 { start, end }, IpAddr::V6(a)) => start <= a && a <= end,
            _ => false,
        }
    }

    /// The TS type that carries this selector.
    pub fn ts_type(&self) -> TsType {
        match self.range {
            AddressRange::V4 { .. } => TsType::IPV4_ADDR_RANGE,
            AddressRange::V6 { .. } => TsType::IPV6_ADDR_RANGE,
        }
    }

    fn encoded_len(&self) -> usize {
        match self.range {
            AddressRange::V4 { .. } => 16,
            AddressRange::V6 { .. } => 40,
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self> {
        let ts_type = r.u8()?;
        let ip_protocol = r.u8()?;
        let len = r.u16()?;
        let want = match TsType(ts_type) {
            TsType::IPV4_ADDR_RANGE => 16,
            TsType::IPV6_ADDR_RANGE => 40,
            _ => return Err(WireError::UnsupportedTrafficSelector(ts_type)),
        };
        if len != want {
            return Err(WireError::Invalid("traffic selector length"));
        }
        let start_port = r.u16()?;
        let end_port = r.u16()?;
        let range = if want == 16 {
            AddressRange::V4 {
                start: Ipv4Addr::from(r.array::<4>()?),
                end: Ipv4Addr::from(r.array::<4>()?),
            }
        } else {
            AddressRange::V6 {
                start: Ipv6Addr::from(r.array::<16>()?),
                end: Ipv6Addr::from(r.array::<16>()?),
            }
        };
        Ok(Self {
            ip_protocol,
            start_port,
            end_port,
            range,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.ts_type().0);
        out.push(self.ip_protocol);
        out.extend_from_slice(&super::len16(self.encoded_len()).to_be_bytes());
        out.extend_from_slice(&self.start_port.to_be_bytes());
        out.extend_from_slice(&self.end_port.to_be_bytes());
        match self.range {
            AddressRange::V4 { start, end } => {
                out.extend_from_slice(&start.octets());
                out.extend_from_slice(&end.octets());
            }
            AddressRange::V6 { start, end } => {
                out.extend_from_slice(&start.octets());
                out.extend_from_slice(&end.octets());
            }
        }
    }
}

/// A Traffic Selector payload (TSi or TSr; the [`super::Payload`] variant says which).
/// At most 255 selectors (the count is one byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsPayload {
    /// The selectors; the first may be the exact packet that triggered the request.
    pub selectors: Vec<TrafficSelector>,
}

impl TsPayload {
    /// A payload with these selectors.
    pub fn new(selectors: Vec<TrafficSelector>) -> Self {
        Self { selectors }
    }

    /// Parses the payload body (after the generic header). The count must match the
    /// selectors present exactly.
    pub fn parse_body(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let count = r.u8()?;
        r.skip(3)?;
        let mut selectors = Vec::with_capacity(usize::from(count).min(body.len() / 16));
        for _ in 0..count {
            selectors.push(TrafficSelector::parse(&mut r)?);
        }
        r.finish()?;
        Ok(Self::new(selectors))
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        4 + self
            .selectors
            .iter()
            .map(TrafficSelector::encoded_len)
            .sum::<usize>()
    }

    /// Appends the body. Only the first 255 selectors fit the count byte; a caller
    /// giving more is told by the peer's INVALID_SYNTAX.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(u8::try_from(self.selectors.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&[0, 0, 0]);
        for ts in self.selectors.iter().take(usize::from(u8::MAX)) {
            ts.emit(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> TsPayload {
        let ts = TsPayload::parse_body(bytes).unwrap();
        let mut out = Vec::new();
        ts.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), ts.body_len());
        ts
    }

    #[test]
    fn strongswan_road_warrior_ipv4_any() {
        #[rustfmt::skip]
        let bytes = [
            1, 0, 0, 0, // one TS
            7, 0, 0, 16, 0, 0, 0xff, 0xff, // IPv4 range, any protocol, 16 bytes, ports 0-65535
            0, 0, 0, 0, 255, 255, 255, 255,
        ];
        let ts = round_trip(&bytes);
        assert_eq!(ts.selectors, vec![TrafficSelector::any_v4()]);
        assert_eq!(ts.selectors[0].to_net(), Some("0.0.0.0/0".parse().unwrap()));
        assert!(ts.selectors[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!ts.selectors[0].contains("::1".parse().unwrap()));
    }

    #[test]
    fn narrowed_v4_and_v6_selectors() {
        let mut bytes = vec![2, 0, 0, 0];
        bytes.extend([
            7, 17, 0, 16, 0x01, 0xf4, 0x11, 0x94, 10, 0, 0, 0, 10, 0, 0, 255,
        ]);
        bytes.extend([8, 0, 0, 40, 0, 0, 0xff, 0xff]);
        let start: Ipv6Addr = "fd00::".parse().unwrap();
        let end: Ipv6Addr = "fd00::ffff:ffff:ffff:ffff".parse().unwrap();
        bytes.extend(start.octets());
        bytes.extend(end.octets());
        let ts = round_trip(&bytes);
        let v4 = ts.selectors[0];
        assert_eq!(
            (v4.ip_protocol, v4.start_port, v4.end_port),
            (17, 500, 4500)
        );
        assert_eq!(v4.to_net(), Some("10.0.0.0/24".parse().unwrap()));
        assert_eq!(ts.selectors[1].to_net(), Some("fd00::/64".parse().unwrap()));
        assert_eq!(
            ts.selectors[1],
            TrafficSelector::from_net("fd00::/64".parse().unwrap())
        );
    }

    #[test]
    fn ranges_that_are_not_prefixes() {
        let ts = |s: &str, e: &str| TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            range: AddressRange::V4 {
                start: s.parse().unwrap(),
                end: e.parse().unwrap(),
            },
        };
        assert_eq!(
            ts("10.0.0.1", "10.0.0.1").to_net(),
            Some("10.0.0.1/32".parse().unwrap())
        );
        assert_eq!(ts("10.0.0.1", "10.0.0.2").to_net(), None);
        assert_eq!(ts("10.0.0.0", "10.0.0.2").to_net(), None);
        assert_eq!(ts("10.0.0.2", "10.0.0.1").to_net(), None);
        assert_eq!(ts("10.0.1.0", "10.0.2.255").to_net(), None);
    }

    #[test]
    fn rejects_malformed() {
        // Count 2, one present.
        let one = [
            2, 0, 0, 0, 7, 0, 0, 16, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 1, 1, 1, 1,
        ];
        assert_eq!(TsPayload::parse_body(&one), Err(WireError::Truncated));
        // Count 0, one present.
        let mut extra = one;
        extra[0] = 0;
        assert_eq!(TsPayload::parse_body(&extra), Err(WireError::TrailingBytes));
        // Wrong selector length.
        let mut bad_len = one;
        bad_len[0] = 1;
        bad_len[7] = 20;
        assert!(matches!(
            TsPayload::parse_body(&bad_len),
            Err(WireError::Invalid(_))
        ));
        // Fibre Channel selectors (RFC 4595) are not supported: TS_UNACCEPTABLE.
        let mut fc = one;
        fc[0] = 1;
        fc[4] = 9;
        let err = TsPayload::parse_body(&fc).unwrap_err();
        assert_eq!(err, WireError::UnsupportedTrafficSelector(9));
        assert_eq!(err.notify_type(), super::super::NotifyType::TS_UNACCEPTABLE);
    }
}
