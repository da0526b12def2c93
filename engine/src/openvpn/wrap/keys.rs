//! The key files of OpenVPN's control-channel wrappers: the static key of `tls-auth` /
//! `tls-crypt` (`openvpn --genkey secret`) and the tls-crypt-v2 server and client keys
//! (`openvpn --genkey tls-crypt-v2-server|tls-crypt-v2-client`).
//!
//! Layouts follow OpenVPN 2.6 (`crypto.c`, `tls_crypt.c`): a static key is two `struct key`
//! of 64 cipher bytes then 64 HMAC bytes each (256 bytes, written as hex); a tls-crypt-v2
//! server key is one such `struct key` (128 bytes, base64 PEM); a client key is the client's
//! own 256-byte static key `Kc` followed by `WKc`, the copy of `Kc` the server can open:
//! `WKc = tag (32) | AES-256-CTR(Kc | metadata) | u16 length of WKc`.

use std::fmt;

use super::WrapKeyError;
use super::crypto::{aes256_ctr, hmac_sha256};

/// Bytes of an OpenVPN static key (`struct key2`: two keys of 64 cipher + 64 HMAC bytes).
pub const STATIC_KEY_LEN: usize = 256;
/// Bytes of a tls-crypt-v2 server key (one `struct key`).
pub const V2_SERVER_KEY_LEN: usize = 128;
/// Longest wrapped client key OpenVPN accepts.
pub const V2_MAX_WKC_LEN: usize = 1024;
/// The HMAC-SHA256 tag that opens a wrapped client key.
const V2_TAG_LEN: usize = 32;
/// Most metadata bytes a wrapped client key can carry (type byte included).
pub const V2_MAX_METADATA_LEN: usize = V2_MAX_WKC_LEN - (STATIC_KEY_LEN + V2_TAG_LEN + 2);

/// Metadata type of user-supplied metadata (`--genkey tls-crypt-v2-client FILE B64`).
pub const V2_METADATA_USER: u8 = 0x00;
/// Metadata type of a 64-bit UNIX timestamp (what `--genkey` writes without metadata).
pub const V2_METADATA_TIMESTAMP: u8 = 0x01;

const STATIC_HEAD: &str = "-----BEGIN OpenVPN Static key V1-----";
const STATIC_FOOT: &str = "-----END OpenVPN Static key V1-----";
const V2_CLIENT_LABEL: &str = "OpenVPN tls-crypt-v2 client key";
const V2_SERVER_LABEL: &str = "OpenVPN tls-crypt-v2 server key";

/// An OpenVPN static key ("-----BEGIN OpenVPN Static key V1-----", 256 bytes of hex), as
/// used by `tls-auth` and `tls-crypt`.
#[derive(Clone)]
pub struct StaticKey {
    bytes: Box<[u8; STATIC_KEY_LEN]>,
}

impl StaticKey {
    /// Parses the text of a static key file (or an inline `<tls-auth>` / `<tls-crypt>`
    /// block). Comment lines before the header are ignored, as OpenVPN does.
    pub fn from_pem(text: &str) -> Result<StaticKey, WrapKeyError> {
        let start = text.find(STATIC_HEAD).ok_or(WrapKeyError::MissingHeader {
            expected: STATIC_HEAD,
        })?;
        let body = &text[start + STATIC_HEAD.len()..];
        let end = body.find(STATIC_FOOT).ok_or(WrapKeyError::MissingFooter {
            expected: STATIC_FOOT,
        })?;
        let mut bytes = Box::new([0u8; STATIC_KEY_LEN]);
        let mut count = 0usize;
        let mut high: Option<u8> = None;
        for (line_no, line) in body[..end].lines().enumerate() {
            for c in line.chars() {
                if c.is_whitespace() {
                    continue;
                }
                let Some(v) = c.to_digit(16) else {
                    return Err(WrapKeyError::BadHex {
                        line: line_no + 2,
                        found: c,
                    });
                };
                let v = v as u8;
                match high.take() {
                    None => high = Some(v),
                    Some(h) => {
                        if count == STATIC_KEY_LEN {
                            return Err(WrapKeyError::WrongLength {
                                what: "static key",
                                expected: STATIC_KEY_LEN,
                                found: count + 1,
                            });
                        }
                        bytes[count] = (h << 4) | v;
                        count += 1;
                    }
                }
            }
        }
        if count != STATIC_KEY_LEN || high.is_some() {
            return Err(WrapKeyError::WrongLength {
                what: "static key",
                expected: STATIC_KEY_LEN,
                found: count,
            });
        }
        Ok(StaticKey { bytes })
    }

    /// A key from its 256 raw bytes (e.g. fresh random bytes for a new key file).
    pub fn from_bytes(bytes: [u8; STATIC_KEY_LEN]) -> StaticKey {
        StaticKey {
            bytes: Box::new(bytes),
        }
    }

    /// The key file text, as `openvpn --genkey secret` writes it.
    pub fn to_pem(&self) -> String {
        let mut s = String::from("#\n# 2048 bit OpenVPN static key\n#\n");
        s.push_str(STATIC_HEAD);
        s.push('\n');
        for line in self.bytes.chunks(16) {
            for b in line {
                s.push_str(&format!("{b:02x}"));
            }
            s.push('\n');
        }
        s.push_str(STATIC_FOOT);
        s.push('\n');
        s
    }

    /// The raw 256 bytes.
    pub(crate) fn bytes(&self) -> &[u8; STATIC_KEY_LEN] {
        &self.bytes
    }

    /// Key number `index` (0 or 1): its cipher half and its HMAC half.
    pub(crate) fn key(&self, index: usize) -> (&[u8], &[u8]) {
        let k = &self.bytes[index * 128..index * 128 + 128];
        (&k[..64], &k[64..])
    }
}

impl Drop for StaticKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes[..]);
    }
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticKey(..)")
    }
}

/// A tls-crypt-v2 client key ("-----BEGIN OpenVPN tls-crypt-v2 client key-----"): the
/// client's static key `Kc` and the wrapped copy `WKc` it sends to the server.
#[derive(Clone)]
pub struct TlsCryptV2ClientKey {
    kc: StaticKey,
    wkc: Vec<u8>,
}

impl TlsCryptV2ClientKey {
    /// Parses a client key file (or an inline `<tls-crypt-v2>` block).
    pub fn from_pem(text: &str) -> Result<TlsCryptV2ClientKey, WrapKeyError> {
        let raw = decode_pem(text, V2_CLIENT_LABEL)?;
        Self::from_bytes(&raw)
    }

    fn from_bytes(raw: &[u8]) -> Result<TlsCryptV2ClientKey, WrapKeyError> {
        let too_short = WrapKeyError::WrongLength {
            what: "tls-crypt-v2 client key",
            expected: STATIC_KEY_LEN + V2_TAG_LEN + 2,
            found: raw.len(),
        };
        let (kc, wkc) = raw.split_at_checked(STATIC_KEY_LEN).ok_or(too_short)?;
        check_wkc_shape(wkc)?;
        let mut bytes = [0u8; STATIC_KEY_LEN];
        bytes.copy_from_slice(kc);
        let kc = StaticKey::from_bytes(bytes);
        wipe(&mut bytes);
        Ok(TlsCryptV2ClientKey {
            kc,
            wkc: wkc.to_vec(),
        })
    }

    /// Makes a new client key: wraps `kc` with `server` and the given metadata (first byte
    /// the type: [`V2_METADATA_USER`] or [`V2_METADATA_TIMESTAMP`]).
    pub fn wrap_new(
        server: &TlsCryptV2ServerKey,
        kc: StaticKey,
        metadata: &[u8],
    ) -> Result<TlsCryptV2ClientKey, WrapKeyError> {
        if metadata.is_empty() || metadata.len() > V2_MAX_METADATA_LEN {
            return Err(WrapKeyError::WrongLength {
                what: "tls-crypt-v2 metadata",
                expected: V2_MAX_METADATA_LEN,
                found: metadata.len(),
            });
        }
        let total = V2_TAG_LEN + STATIC_KEY_LEN + metadata.len() + 2;
        let net_len = (total as u16).to_be_bytes();
        let mut plain = Vec::with_capacity(STATIC_KEY_LEN + metadata.len());
        plain.extend_from_slice(kc.bytes());
        plain.extend_from_slice(metadata);
        let tag = hmac_sha256(server.hmac_key(), &[&net_len, &plain]);
        aes256_ctr(server.cipher_key(), &tag, &mut plain);
        let mut wkc = Vec::with_capacity(total);
        wkc.extend_from_slice(&tag);
        wkc.extend_from_slice(&plain);
        wkc.extend_from_slice(&net_len);
        Ok(TlsCryptV2ClientKey { kc, wkc })
    }

    /// The key file text, as `openvpn --genkey tls-crypt-v2-client` writes it.
    pub fn to_pem(&self) -> String {
        let mut raw = Vec::with_capacity(STATIC_KEY_LEN + self.wkc.len());
        raw.extend_from_slice(self.kc.bytes());
        raw.extend_from_slice(&self.wkc);
        let text = encode_pem(V2_CLIENT_LABEL, &raw);
        wipe(&mut raw);
        text
    }

    /// The client's own static key `Kc`.
    pub(crate) fn kc(&self) -> &StaticKey {
        &self.kc
    }

    /// The wrapped key the client appends to its first packets.
    pub fn wkc(&self) -> &[u8] {
        &self.wkc
    }
}

impl fmt::Debug for TlsCryptV2ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsCryptV2ClientKey(wkc {} bytes)", self.wkc.len())
    }
}

/// A tls-crypt-v2 server key ("-----BEGIN OpenVPN tls-crypt-v2 server key-----"): opens
/// the wrapped client keys clients send, and wraps new ones.
#[derive(Clone)]
pub struct TlsCryptV2ServerKey {
    bytes: Box<[u8; V2_SERVER_KEY_LEN]>,
}

impl TlsCryptV2ServerKey {
    /// Parses a server key file.
    pub fn from_pem(text: &str) -> Result<TlsCryptV2ServerKey, WrapKeyError> {
        let mut raw = decode_pem(text, V2_SERVER_LABEL)?;
        if raw.len() != V2_SERVER_KEY_LEN {
            let found = raw.len();
            wipe(&mut raw);
            return Err(WrapKeyError::WrongLength {
                what: "tls-crypt-v2 server key",
                expected: V2_SERVER_KEY_LEN,
                found,
            });
        }
        let mut bytes = Box::new([0u8; V2_SERVER_KEY_LEN]);
        bytes.copy_from_slice(&raw);
        wipe(&mut raw);
        Ok(TlsCryptV2ServerKey { bytes })
    }

    /// A key from 128 raw bytes (fresh random bytes for a new key).
    pub fn from_bytes(bytes: [u8; V2_SERVER_KEY_LEN]) -> TlsCryptV2ServerKey {
        TlsCryptV2ServerKey {
            bytes: Box::new(bytes),
        }
    }

    /// The key file text, as `openvpn --genkey tls-crypt-v2-server` writes it.
    pub fn to_pem(&self) -> String {
        encode_pem(V2_SERVER_LABEL, &self.bytes[..])
    }

    fn cipher_key(&self) -> &[u8] {
        &self.bytes[..32]
    }

    fn hmac_key(&self) -> &[u8] {
        &self.bytes[64..96]
    }

    /// Opens a wrapped client key: authenticates it and returns `Kc` and the metadata.
    pub fn unwrap_client_key(&self, wkc: &[u8]) -> Result<(StaticKey, Vec<u8>), WrapKeyError> {
        check_wkc_shape(wkc)?;
        let (tag, rest) = wkc.split_at(V2_TAG_LEN);
        let (cipher, net_len) = rest.split_at(rest.len() - 2);
        let mut plain = cipher.to_vec();
        aes256_ctr(self.cipher_key(), tag, &mut plain);
        let check = hmac_sha256(self.hmac_key(), &[net_len, &plain]);
        if !ring_eq(&check, tag) {
            wipe(&mut plain);
            return Err(WrapKeyError::WrongServerKey);
        }
        if plain.len() < STATIC_KEY_LEN {
            wipe(&mut plain);
            return Err(WrapKeyError::WrapsNoKey);
        }
        let mut kc = [0u8; STATIC_KEY_LEN];
        kc.copy_from_slice(&plain[..STATIC_KEY_LEN]);
        let metadata = plain[STATIC_KEY_LEN..].to_vec();
        wipe(&mut plain);
        let key = StaticKey::from_bytes(kc);
        wipe(&mut kc);
        Ok((key, metadata))
    }
}

impl Drop for TlsCryptV2ServerKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes[..]);
    }
}

impl fmt::Debug for TlsCryptV2ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsCryptV2ServerKey(..)")
    }
}

/// `WKc` = tag | ciphertext | u16 length (of all of `WKc`), at most 1024 bytes.
fn check_wkc_shape(wkc: &[u8]) -> Result<(), WrapKeyError> {
    if wkc.len() < V2_TAG_LEN + 2 || wkc.len() > V2_MAX_WKC_LEN {
        return Err(WrapKeyError::WrongLength {
            what: "wrapped tls-crypt-v2 client key",
            expected: V2_MAX_WKC_LEN,
            found: wkc.len(),
        });
    }
    let n = usize::from(u16::from_be_bytes([wkc[wkc.len() - 2], wkc[wkc.len() - 1]]));
    if n != wkc.len() {
        return Err(WrapKeyError::WkcLength {
            declared: n,
            found: wkc.len(),
        });
    }
    Ok(())
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    super::crypto::tags_equal(a, b)
}

fn decode_pem(text: &str, label: &'static str) -> Result<Vec<u8>, WrapKeyError> {
    let head = format!("-----BEGIN {label}-----");
    let foot = format!("-----END {label}-----");
    let start = text
        .find(&head)
        .ok_or(WrapKeyError::MissingHeader { expected: label })?;
    let body = &text[start + head.len()..];
    let end = body
        .find(&foot)
        .ok_or(WrapKeyError::MissingFooter { expected: label })?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64_decode(&b64).ok_or(WrapKeyError::Base64 { what: label })
}

fn encode_pem(label: &str, raw: &[u8]) -> String {
    let b64 = base64_encode(raw);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, quad) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let mut n = 0u32;
        let mut pad = 0;
        for (j, &c) in quad.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if last && j >= 2 => {
                    pad += 1;
                    0
                }
                _ => return None,
            };
            if pad > 0 && c != b'=' {
                return None;
            }
            n = (n << 6) | u32::from(v);
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

/// Overwrites key bytes before their memory is freed.
pub(crate) fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}
