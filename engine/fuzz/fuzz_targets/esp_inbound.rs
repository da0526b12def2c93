//! Fuzzes ESP decryption for every transform: the first input byte picks the transform, the
//! rest is the packet (its SPI forced to the SA's when the second byte is odd, so the
//! integrity check, not the SPI, is what rejects it). Nothing may panic, and the anti-replay
//! window never advances for a packet that did not verify.
#![no_main]

use gatehouse_engine::esp::{EspCipher, EspInbound};
use gatehouse_engine::ikev2::crypto::Integ;
use libfuzzer_sys::fuzz_target;

const SPI: u32 = 0x0102_0304;

fn cipher(b: u8) -> EspCipher {
    let integ = Integ::ALL[usize::from(b >> 4) % Integ::ALL.len()];
    match b % 5 {
        0 => EspCipher::AesGcm16 { key_bits: 128 },
        1 => EspCipher::AesGcm16 { key_bits: 256 },
        2 => EspCipher::ChaCha20Poly1305,
        3 => EspCipher::AesCbc {
            key_bits: 128,
            integ,
        },
        _ => EspCipher::AesCbc {
            key_bits: 256,
            integ,
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else {
        return;
    };
    let cipher = cipher(*selector);
    let key: Vec<u8> = (0..cipher.key_material_len()).map(|i| i as u8).collect();
    let Ok(mut sa) = EspInbound::new(SPI, cipher, &key) else {
        return;
    };
    let mut packet = rest.to_vec();
    if packet.len() >= 5 && packet[4] & 1 == 1 {
        packet[..4].copy_from_slice(&SPI.to_be_bytes());
    }
    let mut out = vec![0u8; packet.len()];
    if sa.decrypt(&packet, &mut out).is_err() {
        assert_eq!(sa.highest_seq(), 0);
    }
});
