//! The reference model: what the gateway must do with every inner packet the simulation
//! makes, and which tunnels must exist. The core never sees it; the simulation checks every
//! packet the core hands out (to TUN, or encrypted towards a client) and every event against
//! it.
//!
//! Inner packets are minimal IPv4 packets (protocol 253) whose payload starts with
//! [`MAGIC`] and a unique tag, so any packet that comes out anywhere names its entry here.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::gateway::TunnelId;

/// Marks a simulation packet's payload.
pub(super) const MAGIC: &[u8; 4] = b"SIM!";

/// Where an inner packet must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// From client `src` to a LAN host behind the gateway: out of `handle_datagram` (TUN).
    Lan,
    /// From a client to client `dst`: TUN, then `handle_tun_packet` sends it to `dst` only.
    Peer(usize),
    /// From a client with another client's source address: dropped as spoofed.
    Spoofed,
    /// From a LAN host to client `dst` (`handle_tun_packet`).
    Down(usize),
}

/// One inner packet the simulation made.
#[derive(Debug, Clone)]
pub(super) struct Expect {
    /// The sending client (None: a LAN host).
    pub src: Option<usize>,
    pub kind: Kind,
    pub bytes: Vec<u8>,
    /// Times it came out of TUN.
    pub tun: u32,
    /// Times a client received it.
    pub rx: u32,
}

/// A tunnel as the model sees it.
#[derive(Debug, Clone)]
pub(super) struct ModelTunnel {
    pub client: usize,
    pub name: String,
    pub address: Ipv4Addr,
    /// Disconnected (or replaced, waiting for its Disconnected).
    pub live: bool,
    pub replaced: bool,
    pub disconnect_reason: Option<String>,
}

#[derive(Default)]
pub(super) struct Model {
    pub packets: HashMap<u64, Expect>,
    next_tag: u64,
    /// Ciphertext of every tagged datagram a client sent -> (tag, deliveries to the core).
    pub cipher: HashMap<Vec<u8>, (u64, u32)>,
    /// Tunnels reported connected.
    pub tunnels: HashMap<TunnelId, ModelTunnel>,
    /// Drops the core must have counted, by what the model knows.
    pub expect_spoofed: u64,
    pub expect_replayed: u64,
    /// Legitimate packets the core dropped (allowed only while tunnels come and go).
    pub legit_dropped: u64,
}

impl Model {
    /// A fresh tag.
    pub fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Live (connected, not replaced) tunnels.
    pub fn live(&self) -> impl Iterator<Item = (&TunnelId, &ModelTunnel)> {
        self.tunnels.iter().filter(|(_, t)| t.live && !t.replaced)
    }

    /// Counts of inner packets by where they ended: (sent, reached TUN, reached a client).
    pub fn totals(&self, kind: impl Fn(Kind) -> bool) -> (usize, usize, usize) {
        let mut s = (0, 0, 0);
        for e in self.packets.values().filter(|e| kind(e.kind)) {
            s.0 += 1;
            s.1 += usize::from(e.tun > 0);
            s.2 += usize::from(e.rx > 0);
        }
        s
    }
}

/// The tag of a simulation packet (None for anything else).
pub(super) fn tag_of(p: &[u8]) -> Option<u64> {
    let body = p.get(20..)?;
    if body.get(..4)? != MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(body.get(4..12)?.try_into().ok()?))
}

/// A minimal valid IPv4 packet (protocol 253, correct checksum) carrying `tag` and `pad`
/// bytes of filler.
pub(super) fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, tag: u64, pad: usize) -> Vec<u8> {
    let total = 20 + 12 + pad;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(tag as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum = 0u32;
    for w in p[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..24].copy_from_slice(MAGIC);
    p[24..32].copy_from_slice(&tag.to_be_bytes());
    for (i, b) in p[32..].iter_mut().enumerate() {
        *b = (tag as u8).wrapping_add(i as u8);
    }
    p
}
