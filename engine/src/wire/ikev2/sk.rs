//! Framing of the Encrypted payload SK (RFC 7296 section 3.14) and the Encrypted Fragment
//! payload SKF (RFC 7383 section 2.5). The cryptography is elsewhere; this module only
//! finds the boundaries.
//!
//! ```text
//! SK body:   IV | ciphertext of (inner payloads | padding | pad length (1)) | ICV
//! SKF body:  fragment number (2) | total fragments (2) | IV | ciphertext | ICV
//! ```
//!
//! With an AEAD (AES-GCM, ChaCha20-Poly1305; RFC 5282) the associated data is the
//! message from the IKE header up to the end of the SK/SKF payload's fixed header
//! ([`associated_data`]). With a classic cipher the ICV is a MAC over the whole message
//! before the ICV ([`integrity_split`]).
//!
//! To build an encrypted message: emit the inner payloads with
//! [`super::emit_payloads`], [`pad`] them, compute the body length (IV + ciphertext +
//! ICV), write the headers with [`emit_encrypted_header`] (its return value is the AAD
//! range), then append IV, ciphertext and ICV.

use std::ops::Range;

use super::header::{HEADER_LEN, IkeHeader};
use super::{Reader, Result, WireError, payload_type};

/// Size of the SK payload's fixed part (the generic payload header).
pub const SK_HEADER_LEN: usize = 4;
/// Size of the SKF payload's fixed part (generic header, fragment number, total).
pub const SKF_HEADER_LEN: usize = 8;

/// The parts of an SK or SKF body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkParts<'a> {
    /// The initialization vector (8 bytes for GCM/ChaCha20, 16 for AES-CBC).
    pub iv: &'a [u8],
    /// The encrypted inner payloads, padding and pad length; never empty.
    pub ciphertext: &'a [u8],
    /// The integrity checksum / AEAD tag.
    pub icv: &'a [u8],
}

/// Cuts the body of an SK payload (or the part of an SKF body after the fragment
/// numbers, as in [`super::Payload::EncryptedFragment`]) given the negotiated IV and ICV
/// lengths. Fails if the body cannot hold them and at least one byte of ciphertext (the
/// pad length).
pub fn split(body: &[u8], iv_len: usize, icv_len: usize) -> Result<SkParts<'_>> {
    let ct_len = body
        .len()
        .checked_sub(iv_len)
        .and_then(|n| n.checked_sub(icv_len))
        .filter(|&n| n > 0)
        .ok_or(WireError::Invalid(
            "Encrypted payload shorter than IV and ICV",
        ))?;
    let mut r = Reader::new(body);
    Ok(SkParts {
        iv: r.take(iv_len)?,
        ciphertext: r.take(ct_len)?,
        icv: r.rest(),
    })
}

/// The AEAD associated data of a received message: its bytes up to the end of the SK
/// (or SKF, if `fragment`) payload's fixed header, which starts at `encrypted_offset`
/// ([`super::Message::encrypted_offset`]).
pub fn associated_data(message: &[u8], encrypted_offset: usize, fragment: bool) -> Result<&[u8]> {
    let fixed = if fragment {
        SKF_HEADER_LEN
    } else {
        SK_HEADER_LEN
    };
    let end = encrypted_offset
        .checked_add(fixed)
        .ok_or(WireError::Truncated)?;
    message.get(..end).ok_or(WireError::Truncated)
}

/// Splits a received message into the bytes a classic integrity algorithm covers
/// (everything before the ICV) and the ICV (the last `icv_len` bytes).
pub fn integrity_split(message: &[u8], icv_len: usize) -> Result<(&[u8], &[u8])> {
    let at = message
        .len()
        .checked_sub(icv_len)
        .filter(|&n| n > HEADER_LEN)
        .ok_or(WireError::Truncated)?;
    message.split_at_checked(at).ok_or(WireError::Truncated)
}

/// Removes the padding and the pad length byte from decrypted SK contents, leaving the
/// inner payloads for [`super::parse_inner`].
pub fn strip_padding(decrypted: &[u8]) -> Result<&[u8]> {
    let (&pad_len, rest) = decrypted
        .split_last()
        .ok_or(WireError::Invalid("empty Encrypted payload plaintext"))?;
    let keep = rest
        .len()
        .checked_sub(usize::from(pad_len))
        .ok_or(WireError::Invalid("pad length exceeds the plaintext"))?;
    rest.get(..keep).ok_or(WireError::Truncated)
}

/// Appends padding (zero bytes) and the pad length byte to `plaintext` so that its length
/// becomes a multiple of `block_size` (16 for AES-CBC; 1 - no padding bytes - for AEADs
/// and counter modes).
pub fn pad(plaintext: &mut Vec<u8>, block_size: usize) {
    let block = block_size.clamp(1, 256);
    let pad_len = (block - (plaintext.len() + 1) % block) % block;
    plaintext.resize(plaintext.len() + pad_len, 0);
    plaintext.push(u8::try_from(pad_len).unwrap_or(0));
}

/// Appends the IKE header and the SK payload header of a message whose only payload is
/// an SK payload with `body_len` bytes (IV + ciphertext + ICV). The header's
/// `next_payload` and `length` are filled in. Returns the range of `out` that is the AEAD
/// associated data; the caller appends IV, ciphertext and ICV next.
pub fn emit_encrypted_header(
    header: &IkeHeader,
    first_inner: u8,
    body_len: usize,
    out: &mut Vec<u8>,
) -> Range<usize> {
    let start = out.len();
    emit_header(header, payload_type::SK, SK_HEADER_LEN + body_len, out);
    out.push(first_inner);
    out.push(0);
    out.extend_from_slice(&super::len16(SK_HEADER_LEN + body_len).to_be_bytes());
    start..out.len()
}

/// Like [`emit_encrypted_header`] for one SKF fragment: `body_len` counts IV,
/// ciphertext and ICV (not the fragment numbers). `first_inner` must be 0 except in
/// fragment 1.
pub fn emit_fragment_header(
    header: &IkeHeader,
    fragment_number: u16,
    total_fragments: u16,
    first_inner: u8,
    body_len: usize,
    out: &mut Vec<u8>,
) -> Range<usize> {
    let start = out.len();
    emit_header(header, payload_type::SKF, SKF_HEADER_LEN + body_len, out);
    out.push(first_inner);
    out.push(0);
    out.extend_from_slice(&super::len16(SKF_HEADER_LEN + body_len).to_be_bytes());
    out.extend_from_slice(&fragment_number.to_be_bytes());
    out.extend_from_slice(&total_fragments.to_be_bytes());
    start..out.len()
}

fn emit_header(header: &IkeHeader, next_payload: u8, payload_len: usize, out: &mut Vec<u8>) {
    IkeHeader {
        next_payload,
        length: u32::try_from(HEADER_LEN + payload_len).unwrap_or(u32::MAX),
        ..*header
    }
    .emit(out);
}

#[cfg(test)]
mod tests {
    use super::super::{ExchangeType, Flags, IKE_VERSION, Message, Payload, parse_inner};
    use super::*;

    fn header() -> IkeHeader {
        IkeHeader {
            initiator_spi: 0x0102_0304_0506_0708,
            responder_spi: 0x1112_1314_1516_1718,
            next_payload: 0,
            version: IKE_VERSION,
            exchange: ExchangeType::IKE_AUTH,
            flags: Flags::new(true, false),
            message_id: 1,
            length: 0,
        }
    }

    #[test]
    fn encrypted_message_framing() {
        // Inner: one Nonce payload (8 bytes) padded for a 16-byte block cipher.
        let inner = [Payload::Nonce(&[9; 4])];
        let mut plain = Vec::new();
        let first = super::super::emit_payloads(&inner, &mut plain);
        assert_eq!(first, payload_type::NONCE);
        pad(&mut plain, 16);
        assert_eq!(plain.len(), 16);
        assert_eq!(plain[15], 7);
        assert_eq!(strip_padding(&plain).unwrap(), &plain[..8]);

        // "Encrypt" with the identity, IV of 16 and ICV of 12 bytes.
        let body_len = 16 + plain.len() + 12;
        let mut msg = Vec::new();
        let aad = emit_encrypted_header(&header(), first, body_len, &mut msg);
        assert_eq!(aad, 0..32);
        msg.extend([0xaa; 16]);
        msg.extend_from_slice(&plain);
        msg.extend([0xcc; 12]);

        let parsed = Message::parse(&msg).unwrap();
        assert_eq!(parsed.header.length as usize, msg.len());
        assert_eq!(parsed.encrypted_offset(), Some(28));
        let Payload::Encrypted { first_inner, body } = parsed.payloads[0] else {
            panic!("not SK: {:?}", parsed.payloads);
        };
        assert_eq!(first_inner, payload_type::NONCE);
        let parts = split(body, 16, 12).unwrap();
        assert_eq!(parts.iv, &[0xaa; 16]);
        assert_eq!(parts.icv, &[0xcc; 12]);
        let inner_back = parse_inner(first_inner, strip_padding(parts.ciphertext).unwrap());
        assert_eq!(inner_back.unwrap(), inner);

        assert_eq!(associated_data(&msg, 28, false).unwrap(), &msg[..32]);
        let (signed, icv) = integrity_split(&msg, 12).unwrap();
        assert_eq!(signed.len(), msg.len() - 12);
        assert_eq!(icv, &[0xcc; 12]);

        // Message::emit of the parsed message gives the same bytes.
        let mut again = Vec::new();
        parsed.emit(&mut again);
        assert_eq!(again, msg);
    }

    #[test]
    fn fragment_framing() {
        let mut msg = Vec::new();
        let aad = emit_fragment_header(&header(), 2, 3, 0, 8 + 5 + 16, &mut msg);
        assert_eq!(aad, 0..36);
        msg.extend([1; 8 + 5 + 16]);
        let parsed = Message::parse(&msg).unwrap();
        assert_eq!(
            parsed.payloads,
            [Payload::EncryptedFragment {
                fragment_number: 2,
                total_fragments: 3,
                first_inner: 0,
                body: &[1; 29],
            }]
        );
        assert_eq!(parsed.encrypted_offset(), Some(28));
        assert_eq!(associated_data(&msg, 28, true).unwrap().len(), 36);
        let mut again = Vec::new();
        parsed.emit(&mut again);
        assert_eq!(again, msg);
    }

    #[test]
    fn bad_fragment_numbers() {
        for (n, total) in [(0, 1), (3, 2)] {
            let mut msg = Vec::new();
            emit_fragment_header(&header(), n, total, 0, 4, &mut msg);
            msg.extend([0; 4]);
            assert!(matches!(Message::parse(&msg), Err(WireError::Invalid(_))));
        }
    }

    #[test]
    fn split_checks_lengths() {
        assert!(split(&[0; 28], 16, 12).is_err());
        assert!(split(&[0; 10], 16, 12).is_err());
        assert!(split(&[0; 29], usize::MAX, 12).is_err());
        let p = split(&[0; 29], 16, 12).unwrap();
        assert_eq!((p.iv.len(), p.ciphertext.len(), p.icv.len()), (16, 1, 12));
        assert!(associated_data(&[0; 10], 28, false).is_err());
        assert!(associated_data(&[0; 10], usize::MAX, true).is_err());
        assert!(integrity_split(&[0; 30], 16).is_err());
    }

    #[test]
    fn padding() {
        assert!(strip_padding(&[]).is_err());
        assert!(strip_padding(&[1, 2, 5]).is_err());
        assert_eq!(strip_padding(&[7, 0]).unwrap(), &[7]);
        assert_eq!(strip_padding(&[0]).unwrap(), &[] as &[u8]);
        let mut p = vec![1, 2, 3];
        pad(&mut p, 1);
        assert_eq!(p, [1, 2, 3, 0]);
        let mut p = vec![0; 15];
        pad(&mut p, 16);
        assert_eq!(p.len(), 16);
        assert_eq!(p[15], 0);
        let mut p = vec![0; 16];
        pad(&mut p, 16);
        assert_eq!(p.len(), 32);
        assert_eq!(p[31], 15);
    }
}
