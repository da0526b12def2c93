//! TCP MSS clamping, as OpenVPN's `mssfix` does: the MSS option of a TCP SYN (or SYN-ACK)
//! in an IPv4 or IPv6 packet is lowered so that a full-size segment, once encapsulated,
//! still fits the path. The TCP checksum is updated incrementally (RFC 1624), so the rest
//! of the packet is never read.
//!
//! The limit callers give is for IPv4; an IPv6 SYN gets 20 bytes less (its header is 20
//! bytes longer). Anything that is not a TCP SYN with a well-formed option list is left
//! alone: other protocols, IPv6 packets with extension headers, segments without SYN,
//! non-first fragments (they carry no TCP header), truncated or malformed headers and
//! options. First fragments (offset 0, more-fragments set) are clamped, as OpenVPN does:
//! the checksum update is a difference, it does not need the other fragments.

use std::ops::Range;

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: u8 = 4;
/// At most 40 bytes of options, so at most 10 MSS options (4 bytes each).
const MAX_MSS_OPTIONS: usize = 10;

/// The MSS options of a TCP SYN: where the TCP header starts and where each MSS value is.
struct MssOptions {
    tcp: usize,
    /// Carried in IPv6 (the limit is 20 bytes lower).
    v6: bool,
    at: [usize; MAX_MSS_OPTIONS],
    n: usize,
}

impl MssOptions {
    fn values(&self) -> &[usize] {
        &self.at[..self.n]
    }

    /// The limit for this packet, given the one for IPv4.
    fn limit(&self, max_mss_v4: u16) -> u16 {
        if self.v6 {
            max_mss_v4.saturating_sub(20)
        } else {
            max_mss_v4
        }
    }
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(p.get(at..at + 2)?.try_into().ok()?))
}

/// The TCP header offset and the option bytes of an IPv6 TCP SYN without extension
/// headers, if `p` is one.
fn syn_options_v6(p: &[u8]) -> Option<(usize, Range<usize>)> {
    let total = 40 + usize::from(be16(p, 4)?);
    if total > p.len() || *p.get(6)? != TCP {
        return None;
    }
    tcp_syn_options(p, 40, total)
}

/// The options of the TCP SYN at `tcp` in a packet of `total` bytes.
fn tcp_syn_options(p: &[u8], tcp: usize, total: usize) -> Option<(usize, Range<usize>)> {
    let doff = usize::from(*p.get(tcp + 12)? >> 4) * 4;
    if doff < 20 || tcp + doff > total {
        return None;
    }
    if *p.get(tcp + 13)? & SYN == 0 {
        return None;
    }
    Some((tcp, tcp + 20..tcp + doff))
}

/// The TCP header offset and the option bytes of an IPv4 TCP SYN, if `p` is one.
fn syn_options(p: &[u8]) -> Option<(usize, Range<usize>)> {
    let first = *p.first()?;
    if first >> 4 == 6 {
        return syn_options_v6(p);
    }
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(be16(p, 2)?);
    if ihl < 20 || total < ihl || total > p.len() || *p.get(9)? != TCP {
        return None;
    }
    // Fragment offset (13 bits): a non-first fragment has no TCP header.
    if be16(p, 6)? & 0x1fff != 0 {
        return None;
    }
    tcp_syn_options(p, ihl, total)
}

/// Finds every MSS option of a TCP SYN. None if `p` is not one, or its option list is
/// malformed (a length running past the header, a length below 2).
fn find(p: &[u8]) -> Option<MssOptions> {
    let (tcp, opts) = syn_options(p)?;
    let mut found = MssOptions {
        tcp,
        v6: p.first().is_some_and(|b| b >> 4 == 6),
        at: [0; MAX_MSS_OPTIONS],
        n: 0,
    };
    let mut i = opts.start;
    while i < opts.end {
        match *p.get(i)? {
            OPT_EOL => break,
            OPT_NOP => i += 1,
            kind => {
                let len = usize::from(*p.get(i + 1).filter(|_| i + 1 < opts.end)?);
                if len < 2 || i + len > opts.end {
                    return None;
                }
                if kind == OPT_MSS && len == usize::from(OPT_MSS_LEN) && found.n < MAX_MSS_OPTIONS {
                    found.at[found.n] = i + 2;
                    found.n += 1;
                }
                i += len;
            }
        }
    }
    Some(found)
}

/// Whether [`clamp_mss`] would change `packet`: a TCP SYN with an MSS option above
/// `max_mss` (for IPv4; 20 less for IPv6). Reads only; lets a caller holding a borrowed
/// packet copy just those.
pub fn mss_above(packet: &[u8], max_mss: u16) -> bool {
    find(packet).is_some_and(|f| {
        let max = f.limit(max_mss);
        f.values()
            .iter()
            .any(|&at| be16(packet, at).is_some_and(|v| v > max))
    })
}

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) to `max_mss` (for IPv4; 20 less for
/// IPv6) when it is larger, updating the TCP checksum incrementally. Returns whether the
/// packet changed. Never panics; anything else (see the module documentation) is left
/// untouched.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> bool {
    let Some(found) = find(packet) else {
        return false;
    };
    let max_mss = found.limit(max_mss);
    let mut changed = false;
    for &at in found.values() {
        let Some(old) = be16(packet, at).filter(|v| *v > max_mss) else {
            continue;
        };
        let Some(check) = be16(packet, found.tcp + 16) else {
            return changed;
        };
        // The checksum sums 16-bit words aligned to the TCP header (the pseudo header is
        // 12 bytes); a value at an odd offset straddles two words, which in one's
        // complement arithmetic is the byte-swapped value.
        let (o, n) = if (at - found.tcp) % 2 == 0 {
            (old, max_mss)
        } else {
            (old.swap_bytes(), max_mss.swap_bytes())
        };
        let check = adjust_checksum(check, o, n);
        packet[at..at + 2].copy_from_slice(&max_mss.to_be_bytes());
        packet[found.tcp + 16..found.tcp + 18].copy_from_slice(&check.to_be_bytes());
        changed = true;
    }
    changed
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn adjust_checksum(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Helpers for tests here and in the gateway's simulation tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::Ipv4Addr;

    pub(crate) fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    pub(crate) fn sum16(bytes: &[u8]) -> u32 {
        bytes
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum()
    }

    /// The TCP checksum of an IPv4 TCP packet computed from scratch (its checksum field
    /// taken as zero).
    pub(crate) fn tcp_checksum(p: &[u8]) -> u16 {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let seg = &p[ihl..total];
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&p[12..20]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&(seg.len() as u16).to_be_bytes());
        let stored = u32::from(u16::from_be_bytes([seg[16], seg[17]]));
        // The sum with the field zeroed: take its contribution out.
        !fold(sum16(&pseudo) + sum16(seg) - stored)
    }

    /// Whether the stored TCP checksum of `p` is right.
    pub(crate) fn tcp_checksum_ok(p: &[u8]) -> bool {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let stored = u16::from_be_bytes([p[ihl + 16], p[ihl + 17]]);
        let want = tcp_checksum(p);
        // 0x0000 and 0xffff are the same number in one's complement.
        stored == want || matches!((stored, want), (0, 0xffff) | (0xffff, 0))
    }

    /// The MSS value of `p`'s first MSS option (found by a plain walk).
    pub(crate) fn mss_of(p: &[u8]) -> Option<u16> {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let doff = usize::from(p[ihl + 12] >> 4) * 4;
        let opts = &p[ihl + 20..ihl + doff];
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => return None,
                1 => i += 1,
                2 => return Some(u16::from_be_bytes([opts[i + 2], opts[i + 3]])),
                _ => i += usize::from(opts[i + 1].max(2)),
            }
        }
        None
    }

    /// An IPv4 TCP segment with `flags`, TCP options `opts` (padded to 4 bytes with EOL),
    /// IP options `ip_opts` (a multiple of 4), `payload`, and correct checksums.
    pub(crate) fn tcp_packet(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        flags: u8,
        ip_opts: &[u8],
        opts: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        assert_eq!(ip_opts.len() % 4, 0);
        let ihl = 20 + ip_opts.len();
        let doff = 20 + opts.len().div_ceil(4) * 4;
        let total = ihl + doff + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x40 | (ihl / 4) as u8;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..ihl].copy_from_slice(ip_opts);
        let ip_check = !fold(sum16(&p[..ihl]));
        p[10..12].copy_from_slice(&ip_check.to_be_bytes());
        let t = ihl;
        p[t..t + 2].copy_from_slice(&40_000u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&443u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        p[t + 12] = ((doff / 4) as u8) << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&64_240u16.to_be_bytes());
        p[t + 20..t + 20 + opts.len()].copy_from_slice(opts);
        p[t + doff..].copy_from_slice(payload);
        let c = tcp_checksum(&p);
        p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// Linux's SYN options: MSS, SACK permitted, timestamps, NOP, window scale.
    pub(crate) fn linux_syn_options(mss: u16) -> Vec<u8> {
        let mut o = vec![2, 4];
        o.extend_from_slice(&mss.to_be_bytes());
        o.extend_from_slice(&[4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7]);
        o
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::testing::*;
    use super::*;

    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;

    /// The TCP checksum of an IPv6 packet (no extension headers) from scratch.
    fn tcp6_checksum(p: &[u8]) -> u16 {
        let seg = &p[40..];
        let mut pseudo = Vec::from(&p[8..40]);
        pseudo.extend_from_slice(&(seg.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        let stored = u32::from(u16::from_be_bytes([seg[16], seg[17]]));
        !fold(sum16(&pseudo) + sum16(seg) - stored)
    }

    /// An IPv6 TCP segment with `flags` and Linux's SYN options with `mss`.
    fn tcp6_packet(flags: u8, mss: u16) -> Vec<u8> {
        let v4 = tcp_packet(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            flags,
            &[],
            &linux_syn_options(mss),
            &[],
        );
        let seg = &v4[20..];
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        p.extend_from_slice(&[6, 64]);
        p.extend_from_slice(
            &"fd00:6a7e:1::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        p.extend_from_slice(&"fd00:1::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(seg);
        let c = tcp6_checksum(&p);
        p[56..58].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn ipv6_syns_are_clamped_20_bytes_lower() {
        for flags in [SYN, SYN_ACK] {
            let mut p = tcp6_packet(flags, 1440);
            assert!(mss_above(&p, 1400));
            assert!(clamp_mss(&mut p, 1400));
            assert_eq!(u16::from_be_bytes([p[62], p[63]]), 1380);
            assert_eq!(u16::from_be_bytes([p[56], p[57]]), tcp6_checksum(&p));
            // Already small enough for IPv6 (1380), though above the IPv4 limit minus 20.
            assert!(!mss_above(&p, 1400));
            assert!(!clamp_mss(&mut p, 1400));
        }
        // Not a SYN, an extension header, or truncated: untouched.
        let mut ack = tcp6_packet(ACK, 1440);
        assert!(!clamp_mss(&mut ack, 1400));
        let mut ext = tcp6_packet(SYN, 1440);
        ext[6] = 0; // hop-by-hop options first
        assert!(!clamp_mss(&mut ext, 1400));
        let p = tcp6_packet(SYN, 1440);
        for n in 0..p.len() {
            let mut cut = p[..n].to_vec();
            assert!(!clamp_mss(&mut cut, 1400), "{n} bytes");
        }
    }

    fn a() -> Ipv4Addr {
        Ipv4Addr::new(172, 16, 200, 2)
    }
    fn b() -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, 7)
    }

    fn syn(opts: &[u8]) -> Vec<u8> {
        tcp_packet(a(), b(), SYN, &[], opts, &[])
    }

    /// Clamps a copy of `p`; checks that only the MSS value and the TCP checksum changed
    /// and that the checksum is right.
    fn clamped(p: &[u8], max: u16) -> (bool, Vec<u8>) {
        assert!(tcp_checksum_ok(p), "test packet");
        let mut q = p.to_vec();
        let above = mss_above(p, max);
        let changed = clamp_mss(&mut q, max);
        assert_eq!(above, changed);
        assert!(tcp_checksum_ok(&q), "checksum after clamping: {q:02x?}");
        let diffs = p.iter().zip(&q).filter(|(x, y)| x != y).count();
        assert!(diffs <= 4, "{diffs} bytes changed");
        (changed, q)
    }

    #[test]
    fn syn_with_mss_1460_is_clamped() {
        let p = syn(&linux_syn_options(1460));
        let (changed, q) = clamped(&p, 1400);
        assert!(changed);
        assert_eq!(mss_of(&q), Some(1400));
        // The checksum is the one computed from scratch, exactly.
        assert_eq!(u16::from_be_bytes([q[36], q[37]]), tcp_checksum(&q));
        // Clamping again changes nothing.
        let (again, r) = clamped(&q, 1400);
        assert!(!again);
        assert_eq!(q, r);
    }

    #[test]
    fn syn_ack_and_payload_are_clamped() {
        let p = tcp_packet(
            b(),
            a(),
            SYN_ACK,
            &[],
            &linux_syn_options(1460),
            b"fast open",
        );
        let (changed, q) = clamped(&p, 1386);
        assert!(changed);
        assert_eq!(mss_of(&q), Some(1386));
        assert_eq!(&q[q.len() - 9..], b"fast open");
    }

    #[test]
    fn many_values_keep_a_correct_checksum() {
        for mss in [1401u16, 1460, 8960, 65_535, 0x5050, 0xff00] {
            for max in [0u16, 1, 536, 1380, 1400, 0x00ff, 0xff00] {
                let p = syn(&linux_syn_options(mss));
                let (changed, q) = clamped(&p, max);
                assert_eq!(changed, mss > max);
                assert_eq!(mss_of(&q), Some(mss.min(max)));
            }
        }
    }

    #[test]
    fn smaller_or_equal_mss_is_untouched() {
        for mss in [536, 1360, 1400] {
            let p = syn(&linux_syn_options(mss));
            let (changed, q) = clamped(&p, 1400);
            assert!(!changed);
            assert_eq!(p, q);
        }
    }

    #[test]
    fn syn_without_mss_is_untouched() {
        for opts in [
            vec![],
            vec![1, 1, 1, 1],
            vec![4, 2, 1, 1, 1, 3, 3, 7],
            vec![8, 10, 0, 0, 0, 1, 0, 0, 0, 0],
        ] {
            let p = syn(&opts);
            let (changed, q) = clamped(&p, 1400);
            assert!(!changed);
            assert_eq!(p, q);
        }
    }

    #[test]
    fn options_before_mss() {
        // NOPs, timestamps, window scale, SACK permitted first: the MSS at even and odd
        // offsets from the TCP header.
        let cases: [&[u8]; 5] = [
            &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 2, 4, 0x05, 0xb4],
            &[1, 2, 4, 0x05, 0xb4],
            &[1, 3, 3, 7, 2, 4, 0x05, 0xb4],
            &[3, 3, 7, 2, 4, 0x05, 0xb4, 4, 2],
            &[4, 2, 1, 2, 4, 0x05, 0xb4, 1, 3, 3, 7, 1],
        ];
        for opts in cases {
            let p = syn(opts);
            let (changed, q) = clamped(&p, 1400);
            assert!(changed, "{opts:?}");
            assert_eq!(mss_of(&q), Some(1400), "{opts:?}");
        }
    }

    #[test]
    fn every_mss_option_is_clamped() {
        let p = syn(&[2, 4, 0x05, 0xb4, 1, 2, 4, 0x23, 0x28]);
        let mut q = p.clone();
        assert!(mss_above(&p, 1400));
        assert!(clamp_mss(&mut q, 1400));
        assert!(tcp_checksum_ok(&q));
        assert_eq!(&q[40..44], &[2, 4, 0x05, 0x78]);
        assert_eq!(&q[45..49], &[2, 4, 0x05, 0x78]);
    }

    #[test]
    fn options_after_eol_are_not_read() {
        let p = syn(&[0, 0, 0, 0, 2, 4, 0x05, 0xb4]);
        let (changed, q) = clamped(&p, 1400);
        assert!(!changed);
        assert_eq!(p, q);
    }

    #[test]
    fn malformed_or_truncated_options_are_untouched() {
        for opts in [
            // A length past the header.
            vec![8, 12, 0, 0, 0, 1, 0, 0, 0, 0, 2, 4, 0x05, 0xb4],
            // Length 0 and 1 (would loop forever if trusted).
            vec![5, 0, 2, 4, 0x05, 0xb4],
            vec![5, 1, 2, 4, 0x05, 0xb4],
            // MSS cut by the end of the header (data offset says 24 bytes).
            vec![1, 1, 2, 4],
            // A kind without a length byte at the end.
            vec![2, 4, 0x05, 0xb4, 1, 1, 1, 8],
            // MSS with a wrong length.
            vec![2, 6, 0x05, 0xb4, 0, 0],
        ] {
            let p = syn(&opts);
            let (changed, q) = clamped(&p, 1400);
            assert!(!changed, "{opts:?}");
            assert_eq!(p, q, "{opts:?}");
        }
    }

    #[test]
    fn truncated_packets_are_untouched() {
        let p = syn(&linux_syn_options(1460));
        for len in 0..p.len() {
            let mut q = p[..len].to_vec();
            assert!(!mss_above(&q, 1400), "{len}");
            assert!(!clamp_mss(&mut q, 1400), "{len}");
            assert_eq!(q, p[..len]);
        }
        // The IP total length says less than the TCP header holds.
        let mut q = p.clone();
        q[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert!(!clamp_mss(&mut q, 1400));
        // Or more than the buffer holds.
        let mut q = p.clone();
        q[2..4].copy_from_slice(&(p.len() as u16 + 1).to_be_bytes());
        assert!(!clamp_mss(&mut q, 1400));
        // Trailing bytes past the total length (link padding) are fine.
        let mut q = p.clone();
        q.extend_from_slice(&[0; 6]);
        assert!(clamp_mss(&mut q, 1400));
        assert!(tcp_checksum_ok(&q));
    }

    #[test]
    fn ip_options_are_skipped() {
        // Router alert (4 bytes) and a NOP-padded record route (8 bytes): IHL 6 and 8.
        for ip_opts in [&[0x94, 4, 0, 0][..], &[1, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0, 0]] {
            let p = tcp_packet(a(), b(), SYN, ip_opts, &linux_syn_options(1460), &[]);
            assert_eq!(usize::from(p[0] & 0x0f) * 4, 20 + ip_opts.len());
            let (changed, q) = clamped(&p, 1400);
            assert!(changed);
            assert_eq!(mss_of(&q), Some(1400));
            assert_eq!(q[..20 + ip_opts.len()], p[..20 + ip_opts.len()]);
        }
    }

    #[test]
    fn non_syn_non_tcp_non_ipv4_are_untouched() {
        let opts = linux_syn_options(1460);
        let mut cases = vec![
            tcp_packet(a(), b(), ACK, &[], &opts, &[]),
            tcp_packet(a(), b(), 0x11, &[], &opts, &[]), // FIN-ACK
        ];
        let mut udp = syn(&opts);
        udp[9] = 17;
        cases.push(udp);
        let mut v6 = syn(&opts);
        v6[0] = 0x65;
        cases.push(v6);
        let mut bad_ihl = syn(&opts);
        bad_ihl[0] = 0x44;
        cases.push(bad_ihl);
        let mut bad_doff = syn(&opts);
        bad_doff[32] = 0x40;
        cases.push(bad_doff);
        for p in cases {
            let mut q = p.clone();
            assert!(!mss_above(&p, 1400));
            assert!(!clamp_mss(&mut q, 1400));
            assert_eq!(p, q);
        }
    }

    #[test]
    fn fragments() {
        let p = syn(&linux_syn_options(1460));
        // A non-first fragment: its "TCP header" is payload bytes.
        for off in [1u16, 185, 0x1fff] {
            let mut q = p.clone();
            q[6..8].copy_from_slice(&(0x2000 | off).to_be_bytes());
            let before = q.clone();
            assert!(!mss_above(&q, 1400));
            assert!(!clamp_mss(&mut q, 1400));
            assert_eq!(q, before);
        }
        // A first fragment (offset 0, more fragments) carries the whole header: clamped,
        // and the incremental update holds for the whole segment's checksum.
        let mut q = p.clone();
        q[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        assert!(clamp_mss(&mut q, 1400));
        assert_eq!(mss_of(&q), Some(1400));
        assert!(tcp_checksum_ok(&q));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(1624);
        let base = syn(&linux_syn_options(1460));
        for round in 0..50_000 {
            let mut p = if round % 2 == 0 {
                // Pure noise, sometimes shaped like IPv4 TCP.
                let len = rng.random_range(0..120);
                let mut p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if len > 20 && rng.random_bool(0.5) {
                    p[0] = 0x45;
                    p[9] = 6;
                    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                    p[6] = 0;
                }
                p
            } else {
                // A valid SYN with a few bytes mutated and maybe cut.
                let mut p = base.clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..p.len());
                    p[i] = rng.random();
                }
                p.truncate(rng.random_range(0..=p.len()));
                p
            };
            let max = rng.random();
            let above = mss_above(&p, max);
            let before = p.clone();
            let changed = clamp_mss(&mut p, max);
            assert_eq!(above, changed);
            if !changed {
                assert_eq!(p, before);
            }
        }
    }
}
