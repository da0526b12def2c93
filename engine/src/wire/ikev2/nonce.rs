//! Nonce payload (RFC 7296 section 3.9): the body is the nonce itself, carried as
//! [`super::Payload::Nonce`].

/// Shortest nonce RFC 7296 allows (and at least half the PRF key size).
pub const NONCE_MIN_LEN: usize = 16;
/// Longest nonce RFC 7296 allows.
pub const NONCE_MAX_LEN: usize = 256;

/// Whether a nonce has a length RFC 7296 allows. The codec keeps nonces of any length so
/// that the state machine decides how to answer; it should reject the others.
pub fn nonce_len_ok(nonce: &[u8]) -> bool {
    (NONCE_MIN_LEN..=NONCE_MAX_LEN).contains(&nonce.len())
}

#[cfg(test)]
mod tests {
    use super::super::{Payload, parse_inner, payload_type};
    use super::*;

    #[test]
    fn nonce_payload_bytes() {
        let mut bytes = vec![0, 0, 0, 36];
        bytes.extend([0x5a; 32]);
        let payloads = parse_inner(payload_type::NONCE, &bytes).unwrap();
        assert_eq!(payloads, vec![Payload::Nonce(&[0x5a; 32])]);
        let Payload::Nonce(n) = payloads[0] else {
            unreachable!()
        };
        assert!(nonce_len_ok(n));
        assert!(!nonce_len_ok(&[0; 15]));
        assert!(nonce_len_ok(&[0; 256]));
        assert!(!nonce_len_ok(&[0; 257]));
    }
}
