//! The data path shared by both ends of a session: pick the key to encrypt with, open a
//! received data packet with the key its header names.

use std::ops::Range;

use super::data::{DataError, PING_PAYLOAD};
use super::key_state::KeyState;

/// Result of feeding a data packet.
#[derive(Debug, PartialEq, Eq)]
pub enum DataOutcome {
    /// An IP packet for the TUN device, at `out[range]`.
    Packet(std::ops::Range<usize>),
    /// A keepalive ping (nothing to forward).
    Keepalive,
}

/// Failure to accept a data packet (the driver counts these by kind and drops the packet).
#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    /// No key state with this key id has data keys.
    #[error("no data key for key id {0}")]
    UnknownKey(u8),
    /// The data channel refused it (tag, replay...).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The tunnel is not up.
    #[error("tunnel not established")]
    NotEstablished,
    /// The peer sent a compressed packet (`compress stub-v2` framing with an algorithm byte);
    /// we never decompress (compression leaks plaintext, VORACLE).
    #[error(
        "peer sent a compressed data packet (algorithm byte {0}); compression is not supported"
    )]
    Compressed(u8),
}

pub(crate) fn tx_key(keys: &mut [KeyState]) -> Option<&mut KeyState> {
    let newest = |acked: bool| {
        keys.iter()
            .enumerate()
            .filter(|(_, k)| k.data.is_some() && (!acked || k.send_idle()))
            .max_by_key(|(_, k)| k.active_since)
            .map(|(i, _)| i)
    };
    let idx = newest(true).or_else(|| newest(false))?;
    keys.get_mut(idx)
}

/// Decrypts `packet` with the key state named by `key_id`; strips the `compress stub-v2`
/// escape when that framing is on.
pub(crate) fn open_data(
    keys: &mut [KeyState],
    key_id: u8,
    packet: &[u8],
    out: &mut Vec<u8>,
    compress: bool,
) -> Result<DataOutcome, DataPathError> {
    let key = keys
        .iter_mut()
        .find(|k| k.key_id == key_id && k.data.is_some())
        .ok_or(DataPathError::UnknownKey(key_id))?;
    let Some(dc) = key.data.as_mut() else {
        return Err(DataPathError::UnknownKey(key_id));
    };
    let len = dc.decrypt(packet, out)?.len();
    let mut start = 0;
    // stub-v2 (comp.c `compv2_escape_data_ifneeded`): 0x50 0x00 escapes an uncompressed
    // payload that starts with 0x50; 0x50 with any other byte is a compressed packet.
    if compress && out.first() == Some(&0x50) {
        match out.get(1) {
            Some(0) => start = 2,
            Some(alg) => return Err(DataPathError::Compressed(*alg)),
            None => start = len,
        }
    }
    let plain: Range<usize> = start..len;
    if out[plain.clone()] == PING_PAYLOAD {
        return Ok(DataOutcome::Keepalive);
    }
    Ok(DataOutcome::Packet(plain))
}
