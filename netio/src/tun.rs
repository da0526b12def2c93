//! TUN in batches (Linux): with virtio-net headers the kernel hands over TCP segments of up to
//! 64 KiB (TSO/GSO) in one read, split here into MTU-sized packets, and coalesces what we
//! write (GRO) so the kernel's stack handles one large packet instead of forty small ones.
//! Without offload (an old kernel) the same calls move one packet per read and write.

use std::io;

use tun_rs::{
    AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split,
};

/// Builds the device with offload, or without it when the kernel refuses. Returns whether
/// offload is on.
pub fn build(make: impl Fn() -> DeviceBuilder) -> io::Result<(AsyncDevice, bool)> {
    let (d, offload) = build_sync(make)?;
    Ok((AsyncDevice::new(d)?, offload))
}

/// [`build`], as a blocking device: each worker turns its queue
/// ([`SyncDevice::try_clone`] of a multi-queue device) into an [`AsyncDevice`] on its own
/// runtime with [`AsyncDevice::new`].
pub fn build_sync(make: impl Fn() -> DeviceBuilder) -> io::Result<(SyncDevice, bool)> {
    match make().offload(true).build_sync() {
        Ok(d) => Ok((d, true)),
        Err(_) => make().build_sync().map(|d| (d, false)),
    }
}

/// Where a packet starts in a write buffer: room for the virtio-net header.
const OFFSET: usize = VIRTIO_NET_HDR_LEN;

/// Packets read from TUN in one go.
///
/// With offload on, a read brings a virtio-net header and either one packet, used where it
/// lies (the usual case below line rate: no copy), or a TSO/GSO batch split into MTU-sized
/// packets. tun-rs's `recv_multiple` would copy even a lone packet and check each of its 128
/// output buffers on every read: a few hundred instructions per packet at low load.
pub struct TunReader {
    original: Vec<u8>,
    segs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    filled: usize,
    /// The last read was one packet: `original[VIRTIO_NET_HDR_LEN..single]`.
    single: Option<usize>,
}

/// virtio_net.h: not a GSO frame; the checksum is to be filled in (CHECKSUM_PARTIAL).
const GSO_NONE: u8 = 0;
const F_NEEDS_CSUM: u8 = 1;

impl TunReader {
    /// Buffers for packets of up to `mtu` bytes.
    pub fn new(mtu: usize) -> Self {
        let seg = mtu.max(1500) + 64;
        Self {
            original: vec![0; VIRTIO_NET_HDR_LEN + 65535],
            segs: vec![vec![0; seg]; IDEAL_BATCH_SIZE],
            sizes: vec![0; IDEAL_BATCH_SIZE],
            filled: 0,
            single: None,
        }
    }

    /// Waits for and reads the next packet or TSO batch.
    pub async fn recv(&mut self, dev: &AsyncDevice) -> io::Result<()> {
        self.filled = 0;
        self.single = None;
        if dev.tcp_gso() {
            let len = dev.recv(&mut self.original).await?;
            self.split(len)
        } else {
            self.filled = dev
                .recv_multiple(&mut self.original, &mut self.segs, &mut self.sizes, 0)
                .await?;
            Ok(())
        }
    }

    /// Reads the next packet or TSO batch if one is waiting (WouldBlock if not).
    pub fn try_recv(&mut self, dev: &AsyncDevice) -> io::Result<()> {
        self.filled = 0;
        self.single = None;
        if dev.tcp_gso() {
            let len = dev.try_recv(&mut self.original)?;
            self.split(len)
        } else {
            self.filled =
                dev.try_recv_multiple(&mut self.original, &mut self.segs, &mut self.sizes, 0)?;
            Ok(())
        }
    }

    /// Takes apart what one offload read put in `original[..len]`: the header, then one packet
    /// (its checksum completed if the kernel left that to us) or a GSO batch to split.
    fn split(&mut self, len: usize) -> io::Result<()> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if len <= VIRTIO_NET_HDR_LEN || len > self.original.len() {
            return Err(bad("TUN read shorter than its virtio-net header"));
        }
        let (head, packet) = self.original[..len].split_at_mut(VIRTIO_NET_HDR_LEN);
        let mut hdr = VirtioNetHdr::decode(head)?;
        if hdr.gso_type == GSO_NONE {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(packet, hdr.csum_start.into(), hdr.csum_offset.into())
                    .ok_or_else(|| bad("checksum position outside the packet"))?;
            }
            self.single = Some(len);
            self.filled = 1;
            return Ok(());
        }
        // The kernel's hdr_len may cover a whole forwarded packet: take the transport header's
        // own length instead (UDP: 8 bytes; TCP: its data offset).
        let start = usize::from(hdr.csum_start);
        let transport = if hdr.gso_type == VIRTIO_NET_HDR_GSO_UDP_L4 {
            8
        } else {
            let off = packet
                .get(start + 12)
                .ok_or_else(|| bad("GSO packet too short"))?;
            usize::from(off >> 4) * 4
        };
        hdr.hdr_len = u16::try_from(start + transport).map_err(|_| bad("GSO header too long"))?;
        let is_v6 = packet.first().is_some_and(|b| b >> 4 == 6);
        // gso_split checks the rest (types, offsets, lengths) and the room in `segs`.
        self.filled = gso_split(packet, hdr, &mut self.segs, &mut self.sizes, 0, is_v6)?;
        Ok(())
    }

    /// The packets of the last read.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let single = self
            .single
            .map(|len| &self.original[VIRTIO_NET_HDR_LEN..len]);
        let segs = if single.is_some() { 0 } else { self.filled };
        single.into_iter().chain(
            self.segs[..segs]
                .iter()
                .zip(&self.sizes)
                .map(|(b, &n)| &b[..n.min(b.len())]),
        )
    }
}

/// Fills in a checksum the kernel left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the one's
/// complement sum from `start` to the end, seeded with what the field holds (the
/// pseudo-header sum), goes into the field at `start + offset`. None: out of bounds.
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Option<()> {
    let at = start.checked_add(offset)?;
    let field = packet.get_mut(at..at.checked_add(2)?)?;
    let seed = u16::from_be_bytes([field[0], field[1]]);
    field.fill(0);
    // tun-rs's one's complement sum (folded, not inverted), the one its own split uses.
    let sum = tun_rs::checksum(packet.get(start..)?, u64::from(seed));
    // As the kernel's skb_checksum_help: a sum of 0 goes out as 0xffff (for UDP, 0 is "none").
    let folded = match !sum {
        0 => 0xffff,
        c => c,
    };
    packet[at..at + 2].copy_from_slice(&folded.to_be_bytes());
    Some(())
}

/// Packets waiting to be written to TUN, coalesced on [`flush`](Self::flush).
pub struct TunWriter {
    bufs: Vec<Vec<u8>>,
    filled: usize,
    gro: GROTable,
    dropped: usize,
}

impl Default for TunWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl TunWriter {
    /// Room for [`IDEAL_BATCH_SIZE`] packets.
    pub fn new() -> Self {
        Self {
            // Coalescing appends to a buffer: give each room for a 64 KiB packet up front.
            bufs: (0..IDEAL_BATCH_SIZE)
                .map(|_| Vec::with_capacity(OFFSET + 65535))
                .collect(),
            filled: 0,
            gro: GROTable::new(),
            dropped: 0,
        }
    }

    /// True when the next [`push`](Self::push) needs a [`flush`](Self::flush) first.
    pub fn is_full(&self) -> bool {
        self.filled == self.bufs.len()
    }

    /// Number of packets waiting.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Queues one IP packet. Returns false (and queues nothing) when full.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let Some(b) = self.bufs.get_mut(self.filled) else {
            return false;
        };
        b.clear();
        b.resize(OFFSET, 0);
        b.extend_from_slice(packet);
        self.filled += 1;
        true
    }

    /// Writes what is queued (coalescing TCP and UDP flows when offload is on).
    pub async fn flush(&mut self, dev: &AsyncDevice) {
        if self.filled == 0 {
            return;
        }
        let n = self.filled;
        self.filled = 0;
        let sent = if n == 1 {
            // One packet (the usual case below line rate) has nothing to coalesce with: it
            // goes out as it is, behind the zeroed header `push` left (no GSO, checksum
            // complete), without a pass through the GRO tables.
            let skip = if dev.tcp_gso() { 0 } else { OFFSET };
            dev.send(&self.bufs[0][skip..]).await.map(drop)
        } else {
            dev.send_multiple(&mut self.gro, &mut self.bufs[..n], OFFSET)
                .await
                .map(drop)
        };
        if sent.is_err() {
            // A write error (device going down, a packet the kernel refuses) loses this batch.
            self.dropped += n;
        }
    }

    /// Packets lost to write errors since the last call.
    pub fn take_drops(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tun_rs::VIRTIO_NET_HDR_GSO_TCPV4;

    /// One's complement sum of 16-bit words, folded (not inverted).
    fn sum(data: &[u8], mut acc: u32) -> u16 {
        for w in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// An IPv4 header (checksum filled) for `proto` with `body` bytes after it.
    fn ipv4(proto: u8, body: usize) -> Vec<u8> {
        let total = (20 + body) as u16;
        let mut h = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        let c = !sum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// The pseudo-header sum of an IPv4 packet for a transport segment of `len` bytes.
    fn pseudo(ip: &[u8], len: usize) -> u16 {
        let mut p = ip[12..20].to_vec();
        p.extend_from_slice(&[0, ip[9]]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        sum(&p, 0)
    }

    /// A reader whose last read brought `hdr` and `packet`.
    fn read(hdr: VirtioNetHdr, packet: &[u8]) -> (TunReader, io::Result<()>) {
        let mut r = TunReader::new(1500);
        hdr.encode(&mut r.original).unwrap();
        r.original[VIRTIO_NET_HDR_LEN..][..packet.len()].copy_from_slice(packet);
        let res = r.split(VIRTIO_NET_HDR_LEN + packet.len());
        (r, res)
    }

    #[test]
    fn a_lone_packet_is_used_where_it_lies() {
        let mut p = ipv4(1, 64);
        p.extend((0..64).map(|i| i as u8));
        let (r, res) = read(VirtioNetHdr::default(), &p);
        res.unwrap();
        let got: Vec<&[u8]> = r.iter().collect();
        assert_eq!(got, vec![&p[..]]);
        assert_eq!(
            got[0].as_ptr(),
            r.original[VIRTIO_NET_HDR_LEN..].as_ptr(),
            "not copied"
        );
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        // UDP, 9 bytes of payload (an odd length), checksum field seeded as the kernel does.
        let mut p = ipv4(17, 17);
        let mut udp = vec![0x30, 0x39, 0x00, 0x35, 0, 17, 0, 0];
        udp.extend_from_slice(b"odd bytes");
        udp[6..8].copy_from_slice(&pseudo(&p, 17).to_be_bytes());
        p.extend_from_slice(&udp);
        let hdr = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 6,
            ..Default::default()
        };
        let (r, res) = read(hdr, &p);
        res.unwrap();
        let out: Vec<&[u8]> = r.iter().collect();
        assert_eq!(out.len(), 1);
        let seg = &out[0][20..];
        // A receiver's check: pseudo-header + segment (checksum included) sums to 0xffff.
        assert_eq!(sum(seg, u32::from(pseudo(out[0], 17))), 0xffff);
        assert_ne!(&seg[6..8], &[0, 0]);
    }

    #[test]
    fn a_tso_batch_is_split_into_packets() {
        // TCP with three 100-byte segments' worth of payload; hdr_len as on the forward path
        // (the whole packet), which the split must not trust.
        let payload = 300;
        let mut p = ipv4(6, 20 + payload);
        let mut tcp = vec![0u8; 20];
        tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18;
        tcp[16..18].copy_from_slice(&pseudo(&p, 20 + payload).to_be_bytes());
        p.extend_from_slice(&tcp);
        p.extend((0..payload).map(|i| i as u8));
        let hdr = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: p.len() as u16,
            gso_size: 100,
            csum_start: 20,
            csum_offset: 16,
        };
        let (r, res) = read(hdr, &p);
        res.unwrap();
        let out: Vec<&[u8]> = r.iter().collect();
        assert_eq!(out.len(), 3);
        for (i, seg) in out.iter().enumerate() {
            assert_eq!(seg.len(), 140);
            assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), 140, "IP total length");
            assert_eq!(sum(&seg[..20], 0), 0xffff, "IP header checksum");
            let seq = u32::from_be_bytes([seg[24], seg[25], seg[26], seg[27]]);
            assert_eq!(seq, 1000 + 100 * i as u32);
            assert_eq!(
                sum(&seg[20..], u32::from(pseudo(seg, 120))),
                0xffff,
                "TCP checksum"
            );
        }
    }

    #[test]
    fn malformed_reads_are_refused_without_panic() {
        let mut r = TunReader::new(1500);
        assert!(r.split(VIRTIO_NET_HDR_LEN).is_err(), "header only");
        assert!(r.split(0).is_err());
        assert!(r.split(usize::MAX).is_err());
        let p = ipv4(6, 10);
        let out_of_bounds = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60,
            csum_offset: 16,
            ..Default::default()
        };
        assert!(read(out_of_bounds, &p).1.is_err());
        let unknown_gso = VirtioNetHdr {
            gso_type: 0x55,
            gso_size: 100,
            csum_start: 20,
            csum_offset: 16,
            ..Default::default()
        };
        assert!(read(unknown_gso, &p).1.is_err());
        let short_tcp = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            gso_size: 100,
            csum_start: 20,
            csum_offset: 16,
            ..Default::default()
        };
        assert!(read(short_tcp, &p).1.is_err());
        // Arbitrary headers and bodies: an error or packets within the read, never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            let hdr = VirtioNetHdr {
                flags: b[0] & 3,
                gso_type: [0, 1, 4, 5, 0x81, b[1]][usize::from(b[1]) % 6],
                hdr_len: u16::from(b[2]),
                gso_size: u16::from(b[3]) % 200,
                csum_start: u16::from(b[4]) % 80,
                csum_offset: [6, 16, u16::from(b[5])][usize::from(b[5]) % 3],
            };
            let mut p = if b[6] & 1 == 0 {
                ipv4(6, 400)
            } else {
                ipv4(17, 400)
            };
            p.resize(20 + usize::from(b[7]) * 2, b[7]);
            if let (r, Ok(())) = read(hdr, &p) {
                for seg in r.iter() {
                    assert!(seg.len() <= 1564);
                }
            }
        }
    }
}
