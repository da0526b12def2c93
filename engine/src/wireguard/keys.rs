//! WireGuard keys as `wg genkey` and `wg pubkey` write them: base64 of 32 bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::x25519;

/// Why a key does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("not base64 (a WireGuard key is 44 characters as `wg genkey` writes it)")]
    NotBase64,
    /// Base64, but not 32 bytes.
    #[error("{0} bytes long; a WireGuard key is 32 bytes (44 base64 characters)")]
    Length(usize),
}

fn decode(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// A private key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WgKey([u8; 32]);

impl WgKey {
    /// A key from 32 random bytes, clamped as `wg genkey` clamps them.
    pub fn from_random(mut bytes: [u8; 32]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        WgKey(bytes)
    }

    /// Parses `wg genkey` output.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(WgKey)
    }

    /// As `wg genkey` writes it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The matching public key (`wg pubkey`).
    pub fn public_key(&self) -> WgPublicKey {
        WgPublicKey(x25519::PublicKey::from(&self.secret()).to_bytes())
    }

    /// The key for boringtun.
    pub fn secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }
}

impl fmt::Debug for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WgKey(<redacted>)")
    }
}

/// A public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WgPublicKey(pub [u8; 32]);

impl WgPublicKey {
    /// Parses `wg pubkey` output.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(WgPublicKey)
    }

    /// The key for boringtun.
    pub fn key(&self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl fmt::Display for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_like_wg() {
        // `echo yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk= | wg pubkey` (the wg(8) example).
        let k = WgKey::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
        assert_eq!(
            k.public_key().to_string(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
        assert_eq!(
            k.to_base64(),
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
        );
        assert_eq!(format!("{k:?}"), "WgKey(<redacted>)");
        assert_eq!(WgKey::from_base64("abc"), Err(KeyError::NotBase64));
        assert_eq!(WgPublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
        let r = WgKey::from_random([0xff; 32]);
        assert_eq!(r.0[0] & 7, 0);
        assert_eq!(r.0[31] & 0xc0, 0x40);
    }
}
