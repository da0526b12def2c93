//! Building and opening protected IKE messages: the SK payload around inner payloads,
//! RFC 7383 fragments both ways.

use super::crypto::SkKeys;
use crate::entropy::Entropy;
use crate::wire::ikev2::sk::{associated_data, emit_encrypted_header, emit_fragment_header};
use crate::wire::ikev2::{ExchangeType, Flags, IKE_VERSION, IkeHeader, Message, Payload};
use crate::wire::ikev2::{emit_payloads, parse_inner};

/// Largest reassembled message we accept (fragments times size).
const MAX_REASSEMBLED: usize = 64 * 1024;
/// Most fragments of one message.
const MAX_FRAGMENTS: u16 = 64;

/// A header for a message of this SA.
pub fn header(
    spi_i: u64,
    spi_r: u64,
    exchange: ExchangeType,
    initiator: bool,
    response: bool,
    message_id: u32,
) -> IkeHeader {
    IkeHeader {
        initiator_spi: spi_i,
        responder_spi: spi_r,
        next_payload: 0,
        version: IKE_VERSION,
        exchange,
        flags: Flags::new(initiator, response),
        message_id,
        length: 0,
    }
}

/// An unprotected message (IKE_SA_INIT and its error replies).
pub fn plain(header: IkeHeader, payloads: Vec<Payload<'_>>) -> Vec<u8> {
    let mut out = Vec::new();
    Message { header, payloads }.emit(&mut out);
    out
}

/// Seals `payloads` into one SK message, or into RFC 7383 fragments of at most
/// `fragment_size` bytes when `fragment` is allowed and the message would be larger.
pub fn seal(
    keys: &mut SkKeys,
    entropy: &mut dyn Entropy,
    header: IkeHeader,
    payloads: &[Payload<'_>],
    fragment: bool,
    fragment_size: usize,
) -> Vec<Vec<u8>> {
    let mut plaintext = Vec::new();
    let first = emit_payloads(payloads, &mut plaintext);
    let whole = 28 + 4 + keys.sealed_len(plaintext.len());
    if !fragment || whole <= fragment_size || plaintext.is_empty() {
        let mut out = Vec::with_capacity(whole);
        let aad = emit_encrypted_header(&header, first, keys.sealed_len(plaintext.len()), &mut out);
        let aad = out[aad].to_vec();
        if keys.seal(entropy, &aad, &plaintext, &mut out).is_err() {
            return Vec::new();
        }
        return vec![out];
    }
    // Room for plaintext per fragment: size minus headers minus IV/ICV/padding overhead.
    let overhead = keys.sealed_len(0);
    let room = fragment_size.saturating_sub(28 + 8 + overhead + 16).max(64);
    let chunks: Vec<&[u8]> = plaintext.chunks(room).collect();
    let total = u16::try_from(chunks.len()).unwrap_or(u16::MAX);
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let n = u16::try_from(i + 1).unwrap_or(u16::MAX);
        let mut d = Vec::new();
        let aad = emit_fragment_header(
            &header,
            n,
            total,
            if n == 1 { first } else { 0 },
            keys.sealed_len(chunk.len()),
            &mut d,
        );
        let aad = d[aad].to_vec();
        if keys.seal(entropy, &aad, chunk, &mut d).is_err() {
            return Vec::new();
        }
        out.push(d);
    }
    out
}

/// Why a protected message could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// No SK or SKF payload.
    #[error("message is not encrypted")]
    NotEncrypted,
    /// Integrity check failed or bad padding.
    #[error("integrity check failed")]
    Integrity,
    /// Inner payloads malformed.
    #[error("malformed inner payloads: {0}")]
    Malformed(String),
    /// A fragment that does not fit the message being reassembled.
    #[error("bad fragment")]
    BadFragment,
}

/// Collects SKF fragments of one message.
#[derive(Debug, Default)]
pub struct Reassembly {
    message_id: Option<u32>,
    first_inner: u8,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

/// The result of feeding a protected message.
#[derive(Debug)]
pub enum Opened {
    /// The decrypted inner payload bytes and the first payload type.
    Complete {
        /// First inner payload type.
        first_inner: u8,
        /// Decrypted inner payloads.
        plaintext: Vec<u8>,
    },
    /// A fragment was stored; more are needed.
    Partial,
}

impl Reassembly {
    /// Opens a parsed message (`raw` = its bytes): an SK payload directly, an SKF fragment
    /// into the reassembly.
    pub fn open(
        &mut self,
        keys: &SkKeys,
        msg: &Message<'_>,
        raw: &[u8],
    ) -> Result<Opened, OpenError> {
        let offset = msg.encrypted_offset().ok_or(OpenError::NotEncrypted)?;
        match msg.payloads.last() {
            Some(Payload::Encrypted { first_inner, body }) => {
                let aad = associated_data(raw, offset, false).map_err(|_| OpenError::Integrity)?;
                let plaintext = keys.open(aad, body).map_err(|_| OpenError::Integrity)?;
                Ok(Opened::Complete {
                    first_inner: *first_inner,
                    plaintext,
                })
            }
            Some(Payload::EncryptedFragment {
                fragment_number,
                total_fragments,
                first_inner,
                body,
            }) => {
                let (n, total) = (*fragment_number, *total_fragments);
                if n == 0 || total == 0 || n > total || total > MAX_FRAGMENTS {
                    return Err(OpenError::BadFragment);
                }
                let aad = associated_data(raw, offset, true).map_err(|_| OpenError::Integrity)?;
                let plaintext = keys.open(aad, body).map_err(|_| OpenError::Integrity)?;
                let id = msg.header.message_id;
                if self.message_id != Some(id) || self.parts.len() != usize::from(total) {
                    *self = Reassembly {
                        message_id: Some(id),
                        first_inner: 0,
                        parts: vec![None; usize::from(total)],
                        bytes: 0,
                    };
                }
                if n == 1 {
                    self.first_inner = *first_inner;
                }
                let slot = usize::from(n - 1);
                if self.parts[slot].is_none() {
                    self.bytes += plaintext.len();
                    if self.bytes > MAX_REASSEMBLED {
                        *self = Reassembly::default();
                        return Err(OpenError::BadFragment);
                    }
                    self.parts[slot] = Some(plaintext);
                }
                if self.parts.iter().all(Option::is_some) {
                    let first_inner = self.first_inner;
                    let plaintext = self.parts.drain(..).flatten().flatten().collect();
                    *self = Reassembly::default();
                    Ok(Opened::Complete {
                        first_inner,
                        plaintext,
                    })
                } else {
                    Ok(Opened::Partial)
                }
            }
            _ => Err(OpenError::NotEncrypted),
        }
    }
}

/// Parses decrypted inner payloads.
pub fn inner<'a>(first_inner: u8, plaintext: &'a [u8]) -> Result<Vec<Payload<'a>>, OpenError> {
    parse_inner(first_inner, plaintext).map_err(|e| OpenError::Malformed(e.to_string()))
}
