//! TUN in batches (Linux): with virtio-net headers the kernel hands over TCP segments of up to
//! 64 KiB (TSO/GSO) in one read, split here into MTU-sized packets, and coalesces what we
//! write (GRO) so the kernel's stack handles one large packet instead of forty small ones.
//! Without offload (an old kernel) the same calls move one packet per read and write.

use std::io;

use tun_rs::{
    AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN,
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
pub struct TunReader {
    original: Vec<u8>,
    segs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    filled: usize,
}

impl TunReader {
    /// Buffers for packets of up to `mtu` bytes.
    pub fn new(mtu: usize) -> Self {
        let seg = mtu.max(1500) + 64;
        Self {
            original: vec![0; VIRTIO_NET_HDR_LEN + 65535],
            segs: vec![vec![0; seg]; IDEAL_BATCH_SIZE],
            sizes: vec![0; IDEAL_BATCH_SIZE],
            filled: 0,
        }
    }

    /// Waits for and reads the next packet or TSO batch.
    pub async fn recv(&mut self, dev: &AsyncDevice) -> io::Result<()> {
        self.filled = 0;
        self.filled = dev
            .recv_multiple(&mut self.original, &mut self.segs, &mut self.sizes, 0)
            .await?;
        Ok(())
    }

    /// Reads the next packet or TSO batch if one is waiting (WouldBlock if not).
    pub fn try_recv(&mut self, dev: &AsyncDevice) -> io::Result<()> {
        self.filled = 0;
        self.filled =
            dev.try_recv_multiple(&mut self.original, &mut self.segs, &mut self.sizes, 0)?;
        Ok(())
    }

    /// The packets of the last read.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.segs[..self.filled]
            .iter()
            .zip(&self.sizes)
            .map(|(b, &n)| &b[..n.min(b.len())])
    }
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
        if dev
            .send_multiple(&mut self.gro, &mut self.bufs[..n], OFFSET)
            .await
            .is_err()
        {
            // A write error (device going down, a packet the kernel refuses) loses this batch.
            self.dropped += n;
        }
    }

    /// Packets lost to write errors since the last call.
    pub fn take_drops(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }
}
