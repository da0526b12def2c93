//! Exporting and restoring one key id's data channel ([`DataChannel`]): for a multi-core
//! data plane (move it to a worker), handing a session to a standby, or a restart without
//! drops.
//!
//! The state is the cipher, the key id, the peer id, both directions' keys and implicit IVs
//! ([`DataKeys`]: wiped on drop, never printed), the send counter (the last packet id used)
//! and the receive replay window.
//!
//! # Never reuse a packet id
//!
//! The AEAD nonce is the packet id followed by the implicit IV, so two channels sealing
//! with the same keys from the same packet id reuse a nonce, which breaks AES-GCM and
//! ChaCha20-Poly1305 outright. A channel must be *moved*, never copied:
//!
//! - [`DataChannel::into_state`] consumes the channel: nothing can seal with it afterwards.
//! - [`DataChannel::export`] takes a snapshot and leaves the channel usable. The exporter
//!   must stop sealing with the original before the state is restored anywhere, or the
//!   restored channel must first skip every packet id the original may have used since
//!   the snapshot ([`DataChannelState::skip`]).
//!
//! Packets the original opened after a snapshot are not in the snapshot's replay window
//! and would be accepted once more by the restored channel.

use std::fmt;

use super::data::{Cipher, DataChannel, DataError};
use super::keys::DataKeys;
use super::replay::ReplayWindow;

/// An exported [`DataChannel`]. See the [module documentation](self) before restoring one:
/// the channel it came from must not seal again.
pub struct DataChannelState {
    /// The cipher.
    pub cipher: Cipher,
    /// The key id (0..=7) the channel belongs to.
    pub key_id: u8,
    /// The peer id written into outgoing `P_DATA_V2` packets (24 bits).
    pub peer_id: u32,
    /// This end's keys and implicit IVs (wiped on drop; `Debug` shows none of them).
    pub keys: Box<DataKeys>,
    /// Packets sealed so far (= the last packet id used; the next one is this plus one).
    pub packets_sent: u32,
    /// The receive anti-replay window.
    pub replay: ReplayWindow,
}

impl DataChannelState {
    /// Skips `n` packet ids (saturating: a channel at `u32::MAX` is exhausted and refuses to
    /// seal), so that a restored channel cannot repeat any of the next `n` the exporter may
    /// still have used after a [`DataChannel::export`] snapshot. The peer accepts the gap.
    pub fn skip(&mut self, n: u32) {
        self.packets_sent = self.packets_sent.saturating_add(n);
    }
}

impl fmt::Debug for DataChannelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataChannelState")
            .field("cipher", &self.cipher)
            .field("key_id", &self.key_id)
            .field("peer_id", &self.peer_id)
            .field("keys", &format_args!("<redacted>"))
            .field("packets_sent", &self.packets_sent)
            .field("replay_highest", &self.replay.highest())
            .finish()
    }
}

impl DataChannel {
    /// Consumes the channel and returns its state: the safe way to move it elsewhere,
    /// since nothing can seal with it afterwards.
    pub fn into_state(self) -> DataChannelState {
        DataChannelState {
            cipher: self.cipher,
            key_id: self.key_id,
            peer_id: self.peer_id,
            keys: self.keys,
            packets_sent: self.sent,
            replay: self.replay,
        }
    }

    /// A snapshot of the channel's state, leaving the channel usable. The caller must stop
    /// sealing with `self` before the state is restored, or
    /// [`skip`](DataChannelState::skip) what `self` may seal meanwhile: a packet id sealed
    /// twice with one key reuses a nonce. Prefer [`into_state`](Self::into_state).
    pub fn export(&self) -> DataChannelState {
        DataChannelState {
            cipher: self.cipher,
            key_id: self.key_id,
            peer_id: self.peer_id,
            keys: self.keys.clone(),
            packets_sent: self.sent,
            replay: self.replay.clone(),
        }
    }

    /// Rebuilds a channel from an exported state: it seals from packet id
    /// `packets_sent + 1` on and keeps the replay window. Fails as [`DataChannel::new`]
    /// does for a key id or peer id out of range.
    pub fn restore(state: DataChannelState) -> Result<Self, DataError> {
        let mut channel =
            Self::with_boxed_keys(state.cipher, state.keys, state.key_id, state.peer_id)?;
        channel.sent = state.packets_sent;
        channel.replay = state.replay;
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openvpn::keys::{KEY_BLOCK_LEN, Role};
    use crate::openvpn::replay::ReplayError;

    fn block() -> [u8; KEY_BLOCK_LEN] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(3))
    }

    fn pair(cipher: Cipher) -> (DataChannel, DataChannel) {
        let b = block();
        (
            DataChannel::new(cipher, &DataKeys::from_key_block(&b, Role::Client), 2, 77).unwrap(),
            DataChannel::new(cipher, &DataKeys::from_key_block(&b, Role::Server), 2, 77).unwrap(),
        )
    }

    fn msg(n: u32) -> Vec<u8> {
        let mut p: Vec<u8> = (0..20 + n % 40).map(|i| (i as u8) ^ (n as u8)).collect();
        p[0] = 0x45;
        p
    }

    fn seal(ch: &mut DataChannel, n: u32) -> Vec<u8> {
        let mut out = Vec::new();
        ch.encrypt(&msg(n), &mut out).unwrap();
        out
    }

    fn open(ch: &mut DataChannel, packet: &[u8]) -> Result<Vec<u8>, DataError> {
        let mut out = Vec::new();
        ch.decrypt(packet, &mut out).map(<[u8]>::to_vec)
    }

    fn packet_id(packet: &[u8]) -> u32 {
        u32::from_be_bytes(packet[4..8].try_into().unwrap())
    }

    fn assert_send<T: Send + 'static>() {}
    fn assert_sync<T: Sync>() {}

    #[test]
    fn data_channel_and_its_state_are_send_and_sync() {
        assert_send::<DataChannel>();
        assert_send::<DataChannelState>();
        assert_sync::<DataChannel>();
        assert_sync::<DataChannelState>();
    }

    #[test]
    fn both_directions_continue_across_export_and_restore() {
        for cipher in Cipher::ALL {
            let (mut client, mut server) = pair(cipher);
            let mut to_server: Vec<Vec<u8>> = (0..30).map(|n| seal(&mut client, n)).collect();
            let mut to_client: Vec<Vec<u8>> = Vec::new();
            for (n, p) in to_server.iter().enumerate() {
                assert_eq!(open(&mut server, p), Ok(msg(n as u32)));
                to_client.push(seal(&mut server, 100 + n as u32));
            }
            // Both ends move: the server to a worker thread, the client by a plain
            // export/restore of its state.
            let server_state = server.into_state();
            assert_eq!(server_state.packets_sent, 30);
            let client_state = client.into_state();
            let mut client = DataChannel::restore(client_state).unwrap();
            let worker = std::thread::spawn(move || {
                let mut server = DataChannel::restore(server_state).unwrap();
                let more: Vec<Vec<u8>> = (30..60).map(|n| seal(&mut server, 100 + n)).collect();
                (server, more)
            });
            to_server.extend((30..60).map(|n| seal(&mut client, n)));
            let (mut server, more) = worker.join().unwrap();
            to_client.extend(more);
            for (n, p) in to_client.iter().enumerate() {
                assert_eq!(packet_id(p), n as u32 + 1, "{cipher:?}");
                assert_eq!(open(&mut client, p), Ok(msg(100 + n as u32)), "{cipher:?}");
            }
            for (n, p) in to_server.iter().enumerate().skip(30) {
                assert_eq!(packet_id(p), n as u32 + 1, "{cipher:?}");
                assert_eq!(open(&mut server, p), Ok(msg(n as u32)), "{cipher:?}");
            }
            assert_eq!((server.key_id(), server.peer_id()), (2, 77));
        }
    }

    #[test]
    fn replays_are_rejected_after_restore_and_unseen_ids_accepted() {
        for cipher in Cipher::ALL {
            let (mut client, mut server) = pair(cipher);
            let wire: Vec<Vec<u8>> = (0..300).map(|n| seal(&mut client, n)).collect();
            // Before the export the server saw 0..200 except 150 (still in flight).
            for (n, p) in wire.iter().enumerate().take(200).filter(|(n, _)| *n != 150) {
                assert_eq!(open(&mut server, p), Ok(msg(n as u32)));
            }
            let mut server = DataChannel::restore(server.into_state()).unwrap();
            for (n, p) in wire.iter().enumerate().take(200).filter(|(n, _)| *n != 150) {
                assert_eq!(
                    open(&mut server, p),
                    Err(DataError::Replay(ReplayError::Replayed(n as u32 + 1))),
                    "{cipher:?} replay of {n}"
                );
            }
            assert_eq!(open(&mut server, &wire[150]), Ok(msg(150)));
            assert!(open(&mut server, &wire[150]).is_err());
            for (n, p) in wire.iter().enumerate().skip(200) {
                assert_eq!(open(&mut server, p), Ok(msg(n as u32)));
            }
            assert_eq!(server.replay_window().highest(), 300);
        }
    }

    #[test]
    fn a_snapshot_with_a_skip_never_reuses_a_packet_id() {
        let (mut client, mut server) = pair(Cipher::Aes256Gcm);
        seal(&mut client, 0);
        let mut state = client.export();
        let late: Vec<Vec<u8>> = (1..20).map(|n| seal(&mut client, n)).collect();
        state.skip(1000);
        let mut standby = DataChannel::restore(state).unwrap();
        let p = seal(&mut standby, 7);
        assert_eq!(packet_id(&p), 1002);
        assert!(late.iter().all(|q| packet_id(q) < 1002));
        assert_eq!(open(&mut server, &late[0]), Ok(msg(1)));
        assert_eq!(open(&mut server, &p), Ok(msg(7)));

        let mut state = standby.into_state();
        state.skip(u32::MAX);
        let mut exhausted = DataChannel::restore(state).unwrap();
        assert_eq!(
            exhausted.encrypt(b"x", &mut Vec::new()),
            Err(DataError::KeyExhausted)
        );
    }

    #[test]
    fn a_snapshot_equals_the_consumed_state() {
        let (mut client, _) = pair(Cipher::ChaCha20Poly1305);
        seal(&mut client, 0);
        let mut a = DataChannel::restore(client.export()).unwrap();
        let mut b = DataChannel::restore(client.into_state()).unwrap();
        assert_eq!(seal(&mut a, 1), seal(&mut b, 1));
    }

    #[test]
    fn out_of_range_ids_are_refused() {
        let (client, _) = pair(Cipher::Aes128Gcm);
        let state = client.into_state();
        let bad_key = DataChannelState {
            key_id: 8,
            keys: state.keys.clone(),
            replay: state.replay.clone(),
            ..state
        };
        assert_eq!(
            DataChannel::restore(bad_key).err(),
            Some(DataError::InvalidKeyId(8))
        );
        let bad_peer = DataChannelState {
            peer_id: 1 << 24,
            ..state
        };
        assert_eq!(
            DataChannel::restore(bad_peer).err(),
            Some(DataError::InvalidPeerId(1 << 24))
        );
    }

    #[test]
    fn keys_are_not_printed() {
        let (client, _) = pair(Cipher::Aes256Gcm);
        let state = client.export();
        let shown = format!("{state:?} {state:#?} {client:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let k = &state.keys.encrypt_key;
        let window = format!("{:?}", &k[..4]);
        assert!(!shown.contains(window.trim_matches(['[', ']'])), "{shown}");
        assert_eq!(
            *state.keys,
            DataKeys::from_key_block(&block(), Role::Client)
        );
    }
}
