//! RFC 9297 capsules on the QUIC control stream (docs/quic.md).
//!
//! A capsule is `type (varint) | length (varint) | value`, with QUIC variable-length
//! integers (RFC 9000 section 16). The client opens the stream with HELLO (QUIC opens a
//! stream only with its first bytes); the gateway sends ADDRESS_ASSIGN, ROUTE_ADVERTISEMENT,
//! DNS_CONFIG and TUNNEL_MTU and ends every configuration with READY; both ends skip
//! capsule types they do not know. [`CapsuleDecoder`] takes the stream's bytes as they
//! arrive, waits for partial capsules and refuses a length over [`MAX_CAPSULE_LEN`] before
//! buffering it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// HELLO (Gatehouse): the client's first bytes on the control stream, empty.
pub const HELLO: u64 = 0x4748_0000;
/// ADDRESS_ASSIGN (RFC 9484 section 4.7.1).
pub const ADDRESS_ASSIGN: u64 = 0x01;
/// ROUTE_ADVERTISEMENT (RFC 9484 section 4.7.3).
pub const ROUTE_ADVERTISEMENT: u64 = 0x03;
/// DNS_CONFIG (Gatehouse): DNS servers and search domains.
pub const DNS_CONFIG: u64 = 0x4748_0001;
/// TUNNEL_MTU (Gatehouse): the MTU the tunnel carries.
pub const TUNNEL_MTU: u64 = 0x4748_0002;
/// READY (Gatehouse): the configuration is complete.
pub const READY: u64 = 0x4748_0003;

/// Largest capsule value accepted. Real configurations are a few hundred bytes; this leaves
/// room for thousands of routes while keeping a hostile peer from making us buffer more.
pub const MAX_CAPSULE_LEN: u64 = 64 * 1024;

/// Largest value a QUIC varint holds (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// A malformed capsule or capsule stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapsuleError {
    /// A capsule value ends before the fields it must hold.
    #[error("truncated capsule value")]
    Truncated,
    /// A capsule value has bytes after its last field.
    #[error("trailing bytes in capsule value")]
    TrailingBytes,
    /// The length field exceeds [`MAX_CAPSULE_LEN`].
    #[error("capsule of {0} bytes exceeds the limit of {MAX_CAPSULE_LEN}")]
    TooLong(u64),
    /// An IP version other than 4 or 6.
    #[error("unknown IP version {0}")]
    IpVersion(u8),
    /// A prefix length longer than the address.
    #[error("prefix length {0} too long for the address")]
    PrefixLength(u8),
    /// A route range whose ends differ in version or whose start is above its end.
    #[error("invalid route range")]
    RouteRange,
    /// A search domain that is empty or not printable ASCII.
    #[error("invalid DNS search domain")]
    SearchDomain,
    /// An earlier error left the stream out of sync; the control stream must be closed.
    #[error("capsule stream broken by an earlier error")]
    Broken,
}

/// One assigned address of an ADDRESS_ASSIGN capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedAddress {
    /// Request ID (0: not in answer to a request).
    pub request_id: u64,
    /// The address.
    pub address: IpAddr,
    /// Prefix length (32 for a single IPv4 address).
    pub prefix_len: u8,
}

/// One range of a ROUTE_ADVERTISEMENT capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    /// First address of the range.
    pub start: IpAddr,
    /// Last address of the range (same version as `start`, not below it).
    pub end: IpAddr,
    /// IP protocol the range covers (0: all).
    pub protocol: u8,
}

/// The DNS_CONFIG capsule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// DNS servers (at most 255).
    pub servers: Vec<Ipv4Addr>,
    /// Search domains, printable ASCII, each 1 to 255 bytes (at most 255 of them).
    pub search: Vec<String>,
}

/// A capsule this crate understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capsule {
    /// HELLO: the client opened the control stream.
    Hello,
    /// ADDRESS_ASSIGN: the addresses the client uses inside the tunnel.
    AddressAssign(Vec<AssignedAddress>),
    /// ROUTE_ADVERTISEMENT: the ranges reachable through the tunnel.
    RouteAdvertisement(Vec<IpRange>),
    /// DNS_CONFIG: DNS servers and search domains.
    DnsConfig(DnsConfig),
    /// TUNNEL_MTU: the MTU of the tunnel interface.
    TunnelMtu(u16),
    /// READY: the configuration sent so far is complete.
    Ready,
}

impl Capsule {
    /// The capsule type.
    pub fn capsule_type(&self) -> u64 {
        match self {
            Capsule::Hello => HELLO,
            Capsule::AddressAssign(_) => ADDRESS_ASSIGN,
            Capsule::RouteAdvertisement(_) => ROUTE_ADVERTISEMENT,
            Capsule::DnsConfig(_) => DNS_CONFIG,
            Capsule::TunnelMtu(_) => TUNNEL_MTU,
            Capsule::Ready => READY,
        }
    }

    /// Parses the value of a capsule of type `capsule_type`; `Ok(None)` for a type this
    /// crate does not know (the caller skips it).
    pub fn parse(capsule_type: u64, value: &[u8]) -> Result<Option<Self>, CapsuleError> {
        let mut r = Reader { bytes: value };
        let capsule = match capsule_type {
            ADDRESS_ASSIGN => {
                let mut list = Vec::new();
                while !r.is_empty() {
                    let request_id = r.varint()?;
                    let address = r.ip()?;
                    let prefix_len = r.u8()?;
                    if prefix_len > max_prefix(address) {
                        return Err(CapsuleError::PrefixLength(prefix_len));
                    }
                    list.push(AssignedAddress {
                        request_id,
                        address,
                        prefix_len,
                    });
                }
                Capsule::AddressAssign(list)
            }
            ROUTE_ADVERTISEMENT => {
                let mut list = Vec::new();
                while !r.is_empty() {
                    let start = r.ip()?;
                    let end = r.ip_of(start.is_ipv4())?;
                    if start > end {
                        return Err(CapsuleError::RouteRange);
                    }
                    let protocol = r.u8()?;
                    list.push(IpRange {
                        start,
                        end,
                        protocol,
                    });
                }
                Capsule::RouteAdvertisement(list)
            }
            DNS_CONFIG => {
                let count = r.u8()?;
                let mut servers = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    servers.push(r.ipv4()?);
                }
                let mut search = Vec::new();
                while !r.is_empty() {
                    let len = r.u8()?;
                    let bytes = r.take(usize::from(len))?;
                    if bytes.is_empty() || !bytes.iter().all(|b| b.is_ascii_graphic()) {
                        return Err(CapsuleError::SearchDomain);
                    }
                    search.push(bytes.iter().map(|&b| char::from(b)).collect());
                }
                Capsule::DnsConfig(DnsConfig { servers, search })
            }
            TUNNEL_MTU => {
                let [hi, lo] = *r.take(2)? else {
                    return Err(CapsuleError::Truncated);
                };
                Capsule::TunnelMtu(u16::from_be_bytes([hi, lo]))
            }
            READY => Capsule::Ready,
            HELLO => Capsule::Hello,
            _ => return Ok(None),
        };
        if !r.is_empty() {
            return Err(CapsuleError::TrailingBytes);
        }
        Ok(Some(capsule))
    }

    /// Appends the capsule (type, length, value) to `out`.
    ///
    /// Lists longer than the format holds (over 255 DNS servers or search domains) are cut
    /// at 255; search domains longer than 255 bytes and route ranges whose ends differ in
    /// IP version are left out; request IDs above
    /// [`VARINT_MAX`] are sent as `VARINT_MAX`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut value = Vec::new();
        match self {
            Capsule::AddressAssign(list) => {
                for a in list {
                    put_varint(a.request_id, &mut value);
                    put_ip(a.address, &mut value);
                    value.push(a.prefix_len);
                }
            }
            Capsule::RouteAdvertisement(list) => {
                // A range whose ends differ in version has no encoding; it is left out.
                let valid = list.iter().filter(|r| r.start.is_ipv4() == r.end.is_ipv4());
                for range in valid {
                    put_ip(range.start, &mut value);
                    put_bare_ip(range.end, &mut value);
                    value.push(range.protocol);
                }
            }
            Capsule::DnsConfig(dns) => {
                let servers = &dns.servers[..dns.servers.len().min(255)];
                value.push(servers.len() as u8);
                for s in servers {
                    value.extend_from_slice(&s.octets());
                }
                let fitting = dns
                    .search
                    .iter()
                    .filter(|d| (1..=255).contains(&d.len()))
                    .take(255);
                for domain in fitting {
                    value.push(domain.len() as u8);
                    value.extend_from_slice(domain.as_bytes());
                }
            }
            Capsule::TunnelMtu(mtu) => value.extend_from_slice(&mtu.to_be_bytes()),
            Capsule::Ready | Capsule::Hello => {}
        }
        put_varint(self.capsule_type(), out);
        put_varint(value.len() as u64, out);
        out.extend_from_slice(&value);
    }

    /// The capsule encoded into a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends `v` as a QUIC varint in its shortest form (values above [`VARINT_MAX`] are
/// written as `VARINT_MAX`).
pub fn put_varint(v: u64, out: &mut Vec<u8>) {
    let v = v.min(VARINT_MAX);
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Reads a QUIC varint from the front of `bytes`: the value and its length in bytes, or
/// `None` if `bytes` ends inside it.
pub fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let raw = bytes.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for &b in &raw[1..] {
        v = (v << 8) | u64::from(b);
    }
    Some((v, len))
}

/// Splits the control stream into capsules.
///
/// Feed it what the stream returned with [`push`](Self::push), then call
/// [`pop`](Self::pop) until it returns `Ok(None)`. It buffers at most one incomplete
/// capsule (bounded by [`MAX_CAPSULE_LEN`]) plus what was pushed and not yet popped.
/// Capsules of unknown types are skipped and counted. After an error `pop` returns
/// [`CapsuleError::Broken`]; the stream should be closed.
#[derive(Debug, Default, Clone)]
pub struct CapsuleDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    broken: bool,
    skipped: u64,
}

impl CapsuleDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete capsule, `Ok(None)` if more bytes are needed, or an error if the
    /// stream is corrupt.
    pub fn pop(&mut self) -> Result<Option<Capsule>, CapsuleError> {
        if self.broken {
            return Err(CapsuleError::Broken);
        }
        loop {
            let pending = &self.buf[self.start..];
            let Some((capsule_type, type_len)) = get_varint(pending) else {
                return Ok(None);
            };
            let Some((len, len_len)) = get_varint(&pending[type_len..]) else {
                return Ok(None);
            };
            if len > MAX_CAPSULE_LEN {
                self.broken = true;
                return Err(CapsuleError::TooLong(len));
            }
            let header = type_len + len_len;
            // Bounded by MAX_CAPSULE_LEN above, so the cast cannot truncate.
            let end = header + len as usize;
            let Some(value) = pending.get(header..end) else {
                return Ok(None);
            };
            let parsed = Capsule::parse(capsule_type, value);
            self.start += end;
            match parsed {
                Ok(Some(capsule)) => return Ok(Some(capsule)),
                Ok(None) => self.skipped += 1,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
    }

    /// Number of buffered bytes not yet returned by [`pop`](Self::pop).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Number of capsules of unknown types skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// An IP version byte and the address.
fn put_ip(addr: IpAddr, out: &mut Vec<u8>) {
    out.push(if addr.is_ipv4() { 4 } else { 6 });
    put_bare_ip(addr, out);
}

fn put_bare_ip(addr: IpAddr, out: &mut Vec<u8>) {
    match addr {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// Bounds-checked cursor over a capsule value.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CapsuleError> {
        if self.bytes.len() < n {
            return Err(CapsuleError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CapsuleError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, CapsuleError> {
        let (v, len) = get_varint(self.bytes).ok_or(CapsuleError::Truncated)?;
        self.bytes = &self.bytes[len..];
        Ok(v)
    }

    fn ipv4(&mut self) -> Result<Ipv4Addr, CapsuleError> {
        let b: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| CapsuleError::Truncated)?;
        Ok(Ipv4Addr::from(b))
    }

    fn ipv6(&mut self) -> Result<Ipv6Addr, CapsuleError> {
        let b: [u8; 16] = self
            .take(16)?
            .try_into()
            .map_err(|_| CapsuleError::Truncated)?;
        Ok(Ipv6Addr::from(b))
    }

    /// An IP version byte and the address that follows.
    fn ip(&mut self) -> Result<IpAddr, CapsuleError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(self.ipv4()?)),
            6 => Ok(IpAddr::V6(self.ipv6()?)),
            v => Err(CapsuleError::IpVersion(v)),
        }
    }

    /// A bare address of the given version (the end of a route range).
    fn ip_of(&mut self, v4: bool) -> Result<IpAddr, CapsuleError> {
        Ok(if v4 {
            IpAddr::V4(self.ipv4()?)
        } else {
            IpAddr::V6(self.ipv6()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Vec<Capsule> {
        vec![
            Capsule::Hello,
            Capsule::AddressAssign(vec![AssignedAddress {
                request_id: 0,
                address: IpAddr::V4(Ipv4Addr::new(10, 8, 0, 6)),
                prefix_len: 32,
            }]),
            Capsule::RouteAdvertisement(vec![
                IpRange {
                    start: IpAddr::V4(Ipv4Addr::new(192, 168, 10, 0)),
                    end: IpAddr::V4(Ipv4Addr::new(192, 168, 10, 255)),
                    protocol: 0,
                },
                IpRange {
                    start: IpAddr::V6("fd00::".parse().unwrap()),
                    end: IpAddr::V6("fd00::ffff".parse().unwrap()),
                    protocol: 17,
                },
            ]),
            Capsule::DnsConfig(DnsConfig {
                servers: vec![Ipv4Addr::new(10, 8, 0, 1), Ipv4Addr::new(9, 9, 9, 9)],
                search: vec!["corp.example".into(), "lab".into()],
            }),
            Capsule::TunnelMtu(1280),
            Capsule::Ready,
        ]
    }

    fn decode_all(d: &mut CapsuleDecoder) -> Result<Vec<Capsule>, CapsuleError> {
        let mut out = Vec::new();
        while let Some(c) = d.pop()? {
            out.push(c);
        }
        Ok(out)
    }

    #[test]
    fn varints_round_trip_in_shortest_form() {
        for (v, len) in [
            (0, 1),
            (63, 1),
            (64, 2),
            (16383, 2),
            (16384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            (VARINT_MAX, 8),
        ] {
            let mut out = Vec::new();
            put_varint(v, &mut out);
            assert_eq!(out.len(), len, "{v}");
            assert_eq!(get_varint(&out), Some((v, len)));
            assert_eq!(get_varint(&out[..len - 1]), None);
        }
        // RFC 9000 appendix A.1 examples.
        assert_eq!(
            get_varint(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            Some((151_288_809_941_952_652, 8))
        );
        assert_eq!(
            get_varint(&[0x9d, 0x7f, 0x3e, 0x7d]),
            Some((494_878_333, 4))
        );
        assert_eq!(get_varint(&[0x7b, 0xbd]), Some((15_293, 2)));
    }

    #[test]
    fn ready_and_mtu_byte_layout() {
        assert_eq!(
            Capsule::Hello.to_bytes(),
            [0xc0, 0, 0, 0, 0x47, 0x48, 0, 0, 0]
        );
        assert_eq!(
            Capsule::parse(HELLO, &[1]),
            Err(CapsuleError::TrailingBytes)
        );
        assert_eq!(
            Capsule::Ready.to_bytes(),
            [0xc0, 0, 0, 0, 0x47, 0x48, 0, 0x03, 0]
        );
        assert_eq!(
            Capsule::TunnelMtu(1280).to_bytes(),
            [0xc0, 0, 0, 0, 0x47, 0x48, 0, 0x02, 2, 0x05, 0x00]
        );
        let assign = Capsule::AddressAssign(vec![AssignedAddress {
            request_id: 0,
            address: IpAddr::V4(Ipv4Addr::new(10, 8, 0, 6)),
            prefix_len: 32,
        }]);
        assert_eq!(assign.to_bytes(), [1, 7, 0, 4, 10, 8, 0, 6, 32]);
    }

    #[test]
    fn configuration_round_trips_whole_and_byte_by_byte() {
        let mut bytes = Vec::new();
        for c in config() {
            c.encode(&mut bytes);
        }
        let mut whole = CapsuleDecoder::new();
        whole.push(&bytes);
        assert_eq!(decode_all(&mut whole).unwrap(), config());
        assert_eq!(whole.buffered(), 0);

        let mut trickle = CapsuleDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            trickle.push(std::slice::from_ref(b));
            got.extend(decode_all(&mut trickle).unwrap());
        }
        assert_eq!(got, config());
    }

    #[test]
    fn partial_capsule_waits_for_the_rest() {
        let bytes = Capsule::TunnelMtu(1400).to_bytes();
        let mut d = CapsuleDecoder::new();
        d.push(&bytes[..bytes.len() - 1]);
        assert_eq!(d.pop(), Ok(None));
        assert_eq!(d.buffered(), bytes.len() - 1);
        d.push(&bytes[bytes.len() - 1..]);
        assert_eq!(d.pop(), Ok(Some(Capsule::TunnelMtu(1400))));
        assert_eq!(d.pop(), Ok(None));
    }

    #[test]
    fn oversize_length_is_refused_before_the_value_arrives() {
        let mut header = Vec::new();
        put_varint(ROUTE_ADVERTISEMENT, &mut header);
        put_varint(MAX_CAPSULE_LEN + 1, &mut header);
        let mut d = CapsuleDecoder::new();
        d.push(&header);
        assert_eq!(d.pop(), Err(CapsuleError::TooLong(MAX_CAPSULE_LEN + 1)));
        assert_eq!(d.pop(), Err(CapsuleError::Broken));
        // The largest length a varint holds is refused the same way.
        let mut d = CapsuleDecoder::new();
        d.push(&[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.pop(), Err(CapsuleError::TooLong(VARINT_MAX)));
    }

    #[test]
    fn unknown_types_are_skipped() {
        let mut bytes = Vec::new();
        put_varint(0x2a, &mut bytes);
        put_varint(3, &mut bytes);
        bytes.extend_from_slice(b"xyz");
        put_varint(0x4748_00ff, &mut bytes);
        put_varint(0, &mut bytes);
        Capsule::Ready.encode(&mut bytes);
        let mut d = CapsuleDecoder::new();
        d.push(&bytes);
        assert_eq!(d.pop(), Ok(Some(Capsule::Ready)));
        assert_eq!(d.skipped(), 2);
        assert_eq!(d.pop(), Ok(None));
    }

    #[test]
    fn truncated_and_padded_values_are_errors() {
        assert_eq!(
            Capsule::parse(ADDRESS_ASSIGN, &[0, 4, 10, 8, 0]),
            Err(CapsuleError::Truncated)
        );
        assert_eq!(
            Capsule::parse(TUNNEL_MTU, &[5]),
            Err(CapsuleError::Truncated)
        );
        assert_eq!(
            Capsule::parse(TUNNEL_MTU, &[5, 0, 0]),
            Err(CapsuleError::TrailingBytes)
        );
        assert_eq!(
            Capsule::parse(READY, &[0]),
            Err(CapsuleError::TrailingBytes)
        );
        assert_eq!(
            Capsule::parse(DNS_CONFIG, &[2, 1, 1, 1, 1]),
            Err(CapsuleError::Truncated)
        );
        assert_eq!(
            Capsule::parse(DNS_CONFIG, &[0, 5, b'a']),
            Err(CapsuleError::Truncated)
        );
        // A truncated value inside the stream breaks the decoder for good.
        let mut d = CapsuleDecoder::new();
        d.push(&[0x01, 0x02, 0x00, 0x04]);
        assert_eq!(d.pop(), Err(CapsuleError::Truncated));
        assert_eq!(d.pop(), Err(CapsuleError::Broken));
    }

    #[test]
    fn invalid_fields_are_errors() {
        assert_eq!(
            Capsule::parse(ADDRESS_ASSIGN, &[0, 5, 1, 2, 3, 4, 32]),
            Err(CapsuleError::IpVersion(5))
        );
        assert_eq!(
            Capsule::parse(ADDRESS_ASSIGN, &[0, 4, 1, 2, 3, 4, 33]),
            Err(CapsuleError::PrefixLength(33))
        );
        assert_eq!(
            Capsule::parse(ROUTE_ADVERTISEMENT, &[4, 10, 0, 0, 9, 10, 0, 0, 1, 0]),
            Err(CapsuleError::RouteRange)
        );
        assert_eq!(
            Capsule::parse(DNS_CONFIG, &[0, 3, b'a', b' ', b'b']),
            Err(CapsuleError::SearchDomain)
        );
        assert_eq!(
            Capsule::parse(DNS_CONFIG, &[0, 0]),
            Err(CapsuleError::SearchDomain)
        );
    }

    #[test]
    fn full_tunnel_route_and_empty_dns() {
        let full = Capsule::RouteAdvertisement(vec![IpRange {
            start: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            end: IpAddr::V4(Ipv4Addr::BROADCAST),
            protocol: 0,
        }]);
        let bytes = full.to_bytes();
        assert_eq!(bytes, [3, 10, 4, 0, 0, 0, 0, 255, 255, 255, 255, 0]);
        let empty = Capsule::DnsConfig(DnsConfig::default());
        for c in [full, empty] {
            let mut d = CapsuleDecoder::new();
            d.push(&c.to_bytes());
            assert_eq!(d.pop(), Ok(Some(c)));
        }
    }
}
