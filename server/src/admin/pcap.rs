//! The classic pcap file format (what tcpdump writes and tshark/Wireshark read): a global
//! header, then a record header before each packet. Inner packets are raw IP
//! (LINKTYPE_RAW), so no link-layer header is made up.

use std::time::{SystemTime, UNIX_EPOCH};

/// LINKTYPE_RAW: each packet is an IPv4 or IPv6 packet, no link-layer header.
pub const LINKTYPE_RAW: u32 = 101;

/// Longest packet kept whole.
pub const SNAPLEN: u32 = 65535;

/// The 24-byte file header (microsecond timestamps, native byte order as the magic tells).
pub fn file_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&SNAPLEN.to_le_bytes());
    h.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    h
}

/// One record: its 16-byte header and the packet (cut at [`SNAPLEN`]).
pub fn record(at: SystemTime, packet: &[u8]) -> Vec<u8> {
    let t = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let kept = &packet[..packet.len().min(SNAPLEN as usize)];
    let mut r = Vec::with_capacity(16 + kept.len());
    r.extend_from_slice(&(t.as_secs() as u32).to_le_bytes());
    r.extend_from_slice(&t.subsec_micros().to_le_bytes());
    r.extend_from_slice(&(kept.len() as u32).to_le_bytes());
    r.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    r.extend_from_slice(kept);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_laid_out_as_libpcap_reads_them() {
        let h = file_header();
        assert_eq!(h.len(), 24);
        assert_eq!(&h[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(h[20..24].try_into().unwrap()), 101);
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        let r = record(at, &[0x45, 0, 0, 20]);
        assert_eq!(
            u32::from_le_bytes(r[0..4].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(r[8..12].try_into().unwrap()), 4);
        assert_eq!(&r[16..], &[0x45, 0, 0, 20]);
    }
}
