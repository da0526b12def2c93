//! Connection IDs that name their worker: 8 bytes, the first the index of the worker that
//! holds the connection, the other 7 from a keyed PRF (HMAC-SHA256 of a counter under a key
//! drawn from the core's entropy), so they carry nothing an observer could link.
//!
//! A client that moves may reach another worker (the kernel steers by source address); a
//! short-header packet names its connection by our ID alone, so [`worker_of_datagram`]
//! tells that worker where to hand it.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use ring::hmac;

/// Length of the gateway's connection IDs.
pub const CID_LEN: usize = 8;

/// The connection-ID generator of one worker's endpoint.
pub struct ShardCids {
    worker: u8,
    key: hmac::Key,
    counter: u64,
}

impl ShardCids {
    /// IDs for worker `worker` (at most 255 workers), unpredictable under `secret`.
    pub fn new(worker: u8, secret: &[u8; 32]) -> Self {
        Self {
            worker,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            counter: 0,
        }
    }
}

impl ConnectionIdGenerator for ShardCids {
    fn generate_cid(&mut self) -> ConnectionId {
        self.counter += 1;
        let tag = hmac::sign(&self.key, &self.counter.to_be_bytes());
        let mut id = [0u8; CID_LEN];
        id[0] = self.worker;
        id[1..].copy_from_slice(&tag.as_ref()[..CID_LEN - 1]);
        ConnectionId::new(&id)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if cid.len() == CID_LEN && cid.first() == Some(&self.worker) {
            Ok(())
        } else {
            Err(InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The worker a QUIC datagram's connection belongs to, read from the destination
/// connection ID of a short-header packet; `None` for long-header packets (Initial,
/// Handshake: they are handled where they land) and for IDs naming no worker of `workers`.
pub fn worker_of_datagram(bytes: &[u8], workers: usize) -> Option<usize> {
    let first = *bytes.first()?;
    // Short header: form bit 0 (RFC 9000 17.3). The fixed bit is not checked: peers may
    // grease it (RFC 9287), and quinn does.
    if first & 0x80 != 0 || bytes.len() < 1 + CID_LEN {
        return None;
    }
    let w = usize::from(*bytes.get(1)?);
    (w < workers).then_some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_worker_and_differ() {
        let mut g = ShardCids::new(3, &[7; 32]);
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_eq!(a[0], 3);
        assert_ne!(a, b);
        assert!(g.validate(&a).is_ok());
        assert!(ShardCids::new(2, &[7; 32]).validate(&a).is_err());
        // Another secret, other IDs.
        let c = ShardCids::new(3, &[8; 32]).generate_cid();
        assert_ne!(a, c);
    }

    #[test]
    fn short_headers_name_a_worker_long_headers_do_not() {
        let mut short = vec![0x40, 1, 9, 9, 9, 9, 9, 9, 9];
        short.extend_from_slice(&[0; 20]);
        assert_eq!(worker_of_datagram(&short, 2), Some(1));
        assert_eq!(worker_of_datagram(&short, 1), None);
        // A greased fixed bit (RFC 9287) is still a short header.
        short[0] = 0x00;
        assert_eq!(worker_of_datagram(&short, 2), Some(1));
        let mut long = short.clone();
        long[0] = 0xc0;
        assert_eq!(worker_of_datagram(&long, 2), None);
        long[0] = 0x80;
        assert_eq!(worker_of_datagram(&long, 2), None);
        assert_eq!(worker_of_datagram(&[0x40, 1], 2), None);
        assert_eq!(worker_of_datagram(&[], 2), None);
    }
}
