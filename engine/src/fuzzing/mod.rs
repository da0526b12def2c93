//! Fuzzing entry points: one function per parser or state machine, each fed arbitrary bytes
//! and required never to panic. The cargo-fuzz targets in `fuzz/` call these, and
//! `tests/fuzz_corpus.rs` replays the committed corpus through them on stable, so a crash
//! found once stays fixed.
//!
//! Not an API: hidden from the docs and free to change with the targets.
//!
//! State-machine targets read their input as records ([`Records`]): an operation byte, a
//! big-endian u16 length and that many bytes. The operations deliver a datagram, advance the
//! virtual clock, or let an honest peer move its traffic, so the fuzzer can reach every phase
//! (handshake, established, rekey, closing) and inject there. Entropy is seeded and the clock
//! starts at a fixed origin; only rustls' and ring's own key generation is not seeded.

mod gateway;
mod ikev2;
mod openvpn;
pub mod seeds;

use std::sync::OnceLock;
use std::time::Instant;

use crate::esp::{EspCipher, EspInbound};
use crate::ikev2::crypto::sk::Integ;
use crate::wire;

pub use gateway::gateway_core;
pub use ikev2::{ikev2_initiator, ikev2_responder};
pub use openvpn::{openvpn_client, openvpn_server, server_wrap};

/// The virtual clock's origin: one instant per process, so a replay is deterministic.
pub(crate) fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    // The engine never reads the clock for protocol decisions; this is only the zero of the
    // fuzzers' virtual clock (an `Instant` cannot be made any other way).
    #[allow(clippy::disallowed_methods)]
    *ORIGIN.get_or_init(Instant::now)
}

/// A fuzz input read as records: operation byte, big-endian u16 length, body (cut short at
/// the end of the input).
pub struct Records<'a>(&'a [u8]);

impl<'a> Records<'a> {
    /// Records of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    /// Encodes one record (for seed corpora).
    pub fn encode(op: u8, body: &[u8], out: &mut Vec<u8>) {
        let len = body.len().min(usize::from(u16::MAX));
        out.push(op);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&body[..len]);
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&op, rest) = self.0.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (0, &[][..]),
        };
        let (body, rest) = rest.split_at(len.min(rest.len()));
        self.0 = rest;
        Some((op, body))
    }
}

/// The OpenVPN packet codec: parse, re-emit control packets, and the TCP deframer.
pub fn wire_openvpn(data: &[u8]) {
    use wire::openvpn::{Packet, TcpDeframer};
    if let Ok(Packet::Control(c)) = Packet::parse(data) {
        let mut out = Vec::new();
        c.emit(&mut out);
        assert_eq!(
            out.len(),
            c.encoded_len(),
            "encoded_len disagrees with emit"
        );
        let Ok(Packet::Control(again)) = Packet::parse(&out) else {
            panic!("an emitted control packet does not parse");
        };
        assert_eq!(again.session_id, c.session_id);
        assert_eq!(again.payload, c.payload);
    }
    let mut deframer = TcpDeframer::new();
    let mut popped = 0;
    for chunk in data.chunks(7) {
        deframer.push(chunk);
        while let Ok(Some(frame)) = deframer.pop() {
            popped += 2 + frame.len();
            let _ = Packet::parse(frame);
        }
    }
    // The gateway's TCP reader finds whole frames without the deframer: both must agree.
    let (complete, broken) = wire::openvpn::tcp_complete_frames(data);
    assert_eq!(
        complete, popped,
        "tcp_complete_frames disagrees with the deframer"
    );
    assert_eq!(
        broken,
        deframer.pop().is_err(),
        "the two disagree on a corrupt stream"
    );
}

/// The IKEv2 message codec: header, payload chain, re-emission, the non-ESP marker and the
/// inner (decrypted) payload chain.
pub fn wire_ikev2(data: &[u8]) {
    use wire::ikev2::{Message, parse_inner, sk, strip_non_esp_marker};
    let _ = strip_non_esp_marker(data);
    if let Ok(msg) = Message::parse(data) {
        let mut out = Vec::new();
        msg.emit(&mut out);
        assert_eq!(
            out.len(),
            msg.encoded_len(),
            "encoded_len disagrees with emit"
        );
        let _ = msg.encrypted_offset();
        let _ = msg.notifies().count();
        if let Some(offset) = msg.encrypted_offset() {
            let _ = sk::associated_data(data, offset, false);
            let _ = sk::associated_data(data, offset, true);
        }
    }
    let _ = sk::integrity_split(data, 16);
    let _ = sk::strip_padding(data);
    if let Some((&first, rest)) = data.split_first() {
        let _ = parse_inner(first, rest);
        let _ = sk::split(rest, 16, 16);
    }
}

/// The QUIC control stream's capsule decoder (docs/quic.md): the first byte sets the size of
/// the pieces the rest arrives in. However the stream is cut, the decoder must return the same
/// capsules and fail at the same point; every capsule it returns must encode back to bytes
/// that decode to the same capsule.
pub fn capsule(data: &[u8]) {
    use wire::capsule::{Capsule, CapsuleDecoder};
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let drain = |d: &mut CapsuleDecoder, out: &mut Vec<Capsule>| -> bool {
        loop {
            match d.pop() {
                Ok(Some(c)) => out.push(c),
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    let mut whole = CapsuleDecoder::new();
    whole.push(stream);
    let mut at_once = Vec::new();
    let whole_ok = drain(&mut whole, &mut at_once);
    let mut pieces = CapsuleDecoder::new();
    let mut in_pieces = Vec::new();
    let mut pieces_ok = true;
    for chunk in stream.chunks(usize::from(piece).max(1)) {
        pieces.push(chunk);
        if !drain(&mut pieces, &mut in_pieces) {
            pieces_ok = false;
            break;
        }
    }
    assert_eq!(
        at_once, in_pieces,
        "capsules depend on how the stream is cut"
    );
    assert_eq!(
        whole_ok, pieces_ok,
        "an error depends on how the stream is cut"
    );
    for c in &at_once {
        let mut again = CapsuleDecoder::new();
        again.push(&c.to_bytes());
        assert_eq!(
            again.pop(),
            Ok(Some(c.clone())),
            "{c:?} does not round-trip"
        );
        assert_eq!(again.buffered(), 0);
    }
}

/// Split DNS names (engine/src/wire/dns.rs): the question name of a query the client's
/// forwarder receives from any local program, and the pushed domains it routes by. Whatever
/// the bytes, no panic, and the results keep their promises: a question name is at most 253
/// bytes of lower-case printable ASCII; a normalized domain normalizes to itself and contains
/// itself; a name is within a domain only if it ends with it.
pub fn dns(data: &[u8]) {
    use wire::dns::{MAX_NAME_LEN, is_within, message_id, normalize_domain, query_name};
    let _ = message_id(data);
    if let Ok(name) = query_name(data) {
        assert!(name.len() <= MAX_NAME_LEN, "{name:?} is too long");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
            "{name:?} is not lower-case printable ASCII"
        );
    }
    // The same bytes as a pushed domain and a name, split at the first NUL.
    let text = String::from_utf8_lossy(data);
    let (domain, name) = text.split_once('\0').unwrap_or((&text, ""));
    if let Some(d) = normalize_domain(domain) {
        assert_eq!(
            normalize_domain(&d).as_deref(),
            Some(d.as_str()),
            "not idempotent"
        );
        assert!(is_within(&d, &d));
        if is_within(name, &d) {
            assert!(name.ends_with(d.as_str()), "{name:?} within {d:?}");
        }
    }
}

/// ESP decryption with each cipher family: the first byte picks the SA, the rest is the
/// packet.
pub fn esp(data: &[u8]) {
    let Some((&pick, packet)) = data.split_first() else {
        return;
    };
    let cipher = esp_cipher(pick);
    let key = seeds::esp_key(cipher);
    let Ok(mut sa) = EspInbound::new(seeds::ESP_SPI, cipher, &key) else {
        return;
    };
    let _ = EspInbound::packet_spi(packet);
    let mut out = vec![0u8; packet.len()];
    // The same packet twice: the second must be refused by the replay window, not panic.
    let _ = sa.decrypt(packet, &mut out);
    let _ = sa.decrypt(packet, &mut out);
    let _ = wire::ip::IpHeader::parse(packet);
}

/// The ESP cipher the first byte of an [`esp`] input picks.
pub fn esp_cipher(pick: u8) -> EspCipher {
    match pick % 4 {
        0 => EspCipher::AesGcm16 { key_bits: 256 },
        1 => EspCipher::ChaCha20Poly1305,
        2 => EspCipher::AesCbc {
            key_bits: 128,
            integ: Integ::HmacSha256_128,
        },
        _ => EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha1_96,
        },
    }
}
