//! The packet tap behind `gatehoused ctl capture`: the workers offer every inner packet
//! they write to or read from TUN; while nobody captures, that costs one atomic load per
//! packet. A capture names the prefixes it wants (a client's virtual address, a site's
//! address space; none: everything) and receives copies through a bounded queue: a reader
//! that falls behind loses packets (counted), it never slows the data plane.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use ipnet::Ipv4Net;
use tokio::sync::mpsc;

/// Packets a capture may have queued before more are lost.
const QUEUE: usize = 4096;

/// One captured packet.
pub struct Captured {
    /// When the worker saw it.
    pub at: SystemTime,
    /// The inner IP packet.
    pub packet: Vec<u8>,
}

struct Sink {
    id: u64,
    filter: Vec<Ipv4Net>,
    tx: mpsc::Sender<Captured>,
}

/// The gateway's tap (one, shared by the workers).
#[derive(Default)]
pub struct CaptureTap {
    active: AtomicUsize,
    next: AtomicU64,
    lost: AtomicU64,
    sinks: Mutex<Vec<Sink>>,
}

/// A running capture; dropping it ends the capture.
pub struct Capture {
    tap: std::sync::Arc<CaptureTap>,
    id: u64,
    /// The captured packets, until the capture ends.
    pub rx: mpsc::Receiver<Captured>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let mut sinks = self.tap.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks.retain(|s| s.id != self.id);
        self.tap.active.store(sinks.len(), Ordering::Relaxed);
    }
}

/// The IPv4 source and destination of `packet`, if it is one.
fn endpoints(packet: &[u8]) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let a =
        |i: usize| std::net::Ipv4Addr::new(packet[i], packet[i + 1], packet[i + 2], packet[i + 3]);
    Some((a(12), a(16)))
}

impl CaptureTap {
    /// Starts a capture of the packets from or to `filter` (empty: every packet).
    pub fn start(self: &std::sync::Arc<Self>, filter: Vec<Ipv4Net>) -> Capture {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks.push(Sink { id, filter, tx });
        self.active.store(sinks.len(), Ordering::Relaxed);
        Capture {
            tap: self.clone(),
            id,
            rx,
        }
    }

    /// Whether any capture runs (the workers' per-packet check).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Packets lost because a capture's reader fell behind.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Hands a copy of `packet` to every capture that wants it.
    pub fn offer(&self, packet: &[u8]) {
        if !self.is_on() {
            return;
        }
        let ends = endpoints(packet);
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = None;
        for s in sinks.iter() {
            let wanted = s.filter.is_empty()
                || ends.is_some_and(|(src, dst)| {
                    s.filter
                        .iter()
                        .any(|n| n.contains(&src) || n.contains(&dst))
                });
            if !wanted {
                continue;
            }
            let c = Captured {
                at: *at.get_or_insert_with(SystemTime::now),
                packet: packet.to_vec(),
            };
            if s.tx.try_send(c).is_err() {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn a_capture_gets_the_packets_of_its_prefixes_and_ends_when_dropped() {
        let tap = std::sync::Arc::new(CaptureTap::default());
        assert!(!tap.is_on());
        tap.offer(&ipv4([10, 0, 0, 1], [10, 0, 0, 2]));
        let mut one = tap.start(vec!["172.16.201.2/32".parse().unwrap()]);
        let mut all = tap.start(Vec::new());
        assert!(tap.is_on());
        tap.offer(&ipv4([10, 1, 0, 1], [172, 16, 201, 2]));
        tap.offer(&ipv4([10, 1, 0, 1], [172, 16, 201, 3]));
        tap.offer(&[0x60, 0, 0]);
        assert_eq!(one.rx.try_recv().unwrap().packet[19], 2);
        assert!(one.rx.try_recv().is_err());
        for _ in 0..3 {
            all.rx.try_recv().unwrap();
        }
        drop(one);
        drop(all);
        assert!(!tap.is_on());
    }
}
