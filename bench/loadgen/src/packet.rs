//! The inner packets the load generator sends through its tunnels: IPv4 ICMP echo requests
//! (the gateway's kernel or a LAN host answers them), and the parser that recognises the
//! replies. No TUN device: the bytes go straight into the client state machines.

use std::net::Ipv4Addr;

/// Smallest packet we build: IPv4 header (20) + ICMP header (8).
pub const MIN_PACKET: usize = 28;
/// Largest packet we build (fits a 1500-byte tunnel MTU with room to spare).
pub const MAX_PACKET: usize = 1400;

const ICMP: u8 = 1;
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;

/// Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an ICMP echo request from `src` to `dst` of `size` bytes in total (clamped to
/// [`MIN_PACKET`]..=[`MAX_PACKET`]) into `out`, replacing its contents.
pub fn echo_request(
    out: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
    size: usize,
) {
    let size = size.clamp(MIN_PACKET, MAX_PACKET);
    out.clear();
    out.resize(size, 0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    out[4..6].copy_from_slice(&seq.to_be_bytes());
    out[8] = 64;
    out[9] = ICMP;
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&out[..20]);
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let icmp = &mut out[20..];
    icmp[0] = ECHO_REQUEST;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in icmp[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// What an inner packet from the gateway is, as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    /// An ICMP echo reply to `dst` with this id.
    EchoReply { dst: Ipv4Addr, id: u16 },
    /// Any other (well-formed enough) IPv4 packet.
    Other,
    /// Not an IPv4 packet, or truncated.
    Malformed,
}

/// Classifies an inner packet; never panics, whatever the bytes.
pub fn classify(packet: &[u8]) -> Inner {
    let Some(&first) = packet.first() else {
        return Inner::Malformed;
    };
    if first >> 4 != 4 {
        return Inner::Malformed;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return Inner::Malformed;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < ihl || total > packet.len() {
        return Inner::Malformed;
    }
    if packet[9] != ICMP {
        return Inner::Other;
    }
    let icmp = &packet[ihl..total];
    if icmp.len() < 8 || icmp[0] != ECHO_REPLY {
        return Inner::Other;
    }
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Inner::EchoReply {
        dst,
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_valid_checksums_and_size() {
        let mut p = Vec::new();
        let (a, b) = (Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 1));
        echo_request(&mut p, a, b, 7, 3, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(checksum(&p[20..]), 0);
        echo_request(&mut p, a, b, 7, 3, 1);
        assert_eq!(p.len(), MIN_PACKET);
        assert_eq!(checksum(&p[20..]), 0);
        echo_request(&mut p, a, b, 7, 3, 99_999);
        assert_eq!(p.len(), MAX_PACKET);
    }

    #[test]
    fn reply_is_recognised() {
        let mut p = Vec::new();
        let (a, b) = (Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 1));
        echo_request(&mut p, b, a, 42, 1, 64);
        assert_eq!(classify(&p), Inner::Other, "a request is not a reply");
        p[20] = ECHO_REPLY;
        assert_eq!(classify(&p), Inner::EchoReply { dst: a, id: 42 });
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(classify(&[]), Inner::Malformed);
        assert_eq!(classify(&[0x60; 40]), Inner::Malformed);
        assert_eq!(classify(&[0x4f; 10]), Inner::Malformed);
        let mut p = vec![0x45; 24];
        p[2] = 0;
        p[3] = 200;
        assert_eq!(classify(&p), Inner::Malformed);
        for len in 0..64 {
            for fill in [0u8, 0x45, 0xff] {
                let _ = classify(&vec![fill; len]);
            }
        }
    }
}
