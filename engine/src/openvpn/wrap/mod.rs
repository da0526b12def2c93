//! OpenVPN's control-channel wrappers: `tls-auth`, `tls-crypt` and `tls-crypt-v2`.
//!
//! Every control packet (resets, acks, TLS records) is wrapped on send and unwrapped before
//! the reliability and TLS layers see it; a packet that fails is dropped and counted, never
//! answered. Wire formats follow OpenVPN 2.6 (`ssl_pkt.c`, `tls_crypt.c`):
//!
//! - tls-auth: `opcode | session id | HMAC | packet id (4) | time (4) | acks... | payload`,
//!   the HMAC (SHA1/256/384/512 by `auth`) covering `packet id | time | opcode | session id |
//!   acks... | payload`; keys by `key-direction`.
//! - tls-crypt: `opcode | session id | packet id (4) | time (4) | tag (32) | AES-256-CTR(acks...
//!   | payload)` with tag = HMAC-SHA256 over everything before it plus the plaintext, and the
//!   tag's first 16 bytes as the CTR IV. The server sends with key 0, the client with key 1.
//! - tls-crypt-v2: tls-crypt with a per-client key `Kc`; the client appends `WKc` (its key,
//!   wrapped by the server key) to P_CONTROL_HARD_RESET_CLIENT_V3 and, when the server asks
//!   for it in its reset (early negotiation), to its first P_CONTROL_WKC_V1.
//!
//! Time is the caller's: the 4-byte time field of the packet id is a UNIX time the driver
//! passes in (constant for a session, as OpenVPN sends it).
//!
//! Inputs and outputs: a session owns a [`Wrapper`]; [`Wrapper::wrap`] turns an emitted
//! control packet into wire bytes, [`Wrapper::unwrap`] turns wire bytes back into a plain
//! control packet (P_CONTROL_WKC_V1 comes out as P_CONTROL_V1). The gateway authenticates
//! the first packet of a new session with [`ServerWrap::authenticate_first`] before it
//! creates any state.

pub(crate) mod crypto;
pub(crate) mod early_neg;
mod first_replay;
mod keys;
mod packet_id;
mod state;
#[cfg(test)]
pub(crate) mod tests;

pub use first_replay::FirstPacketReplays;
pub use keys::{
    STATIC_KEY_LEN, StaticKey, TlsCryptV2ClientKey, TlsCryptV2ServerKey, V2_MAX_METADATA_LEN,
    V2_METADATA_TIMESTAMP, V2_METADATA_USER, V2_SERVER_KEY_LEN,
};
pub use state::{FirstPacket, WRAP_PACKET_ID_SKIP, Wrapper, WrapperHandoff};

/// `key-direction` / the direction argument of `tls-auth`: 0 = Normal, 1 = Inverse;
/// `None` where it is used as `Option` = bidirectional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDirection {
    /// Direction 0 (what servers usually use): send with key 0, receive with key 1.
    Normal,
    /// Direction 1 (what clients usually use): send with key 1, receive with key 0.
    Inverse,
}

impl KeyDirection {
    /// Parses the argument of `key-direction` or the second argument of `tls-auth`.
    pub fn from_openvpn_arg(arg: &str) -> Option<KeyDirection> {
        match arg.trim() {
            "0" | "normal" => Some(KeyDirection::Normal),
            "1" | "inverse" => Some(KeyDirection::Inverse),
            _ => None,
        }
    }

    /// Indices of the keys to (send with, receive with).
    pub(crate) fn indices(direction: Option<KeyDirection>) -> (usize, usize) {
        match direction {
            None => (0, 0),
            Some(KeyDirection::Normal) => (0, 1),
            Some(KeyDirection::Inverse) => (1, 0),
        }
    }
}

/// The HMAC digest of tls-auth (from the `auth` directive; OpenVPN's default SHA1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum TlsAuthDigest {
    /// SHA1 (OpenVPN's default).
    #[default]
    Sha1,
    /// SHA256.
    Sha256,
    /// SHA384.
    Sha384,
    /// SHA512.
    Sha512,
}

impl TlsAuthDigest {
    /// Maps an `auth` argument (`SHA1`, `SHA256`, `sha-256`...) to a digest.
    pub fn from_openvpn_name(name: &str) -> Option<TlsAuthDigest> {
        let n: String = name
            .trim()
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        match n.as_str() {
            "SHA1" => Some(TlsAuthDigest::Sha1),
            "SHA256" => Some(TlsAuthDigest::Sha256),
            "SHA384" => Some(TlsAuthDigest::Sha384),
            "SHA512" => Some(TlsAuthDigest::Sha512),
            _ => None,
        }
    }

    /// Bytes of the HMAC (and of the HMAC key OpenVPN takes from the static key).
    pub fn tag_len(self) -> usize {
        match self {
            TlsAuthDigest::Sha1 => 20,
            TlsAuthDigest::Sha256 => 32,
            TlsAuthDigest::Sha384 => 48,
            TlsAuthDigest::Sha512 => 64,
        }
    }

    /// The name OpenVPN uses in `auth`.
    pub fn openvpn_name(self) -> &'static str {
        match self {
            TlsAuthDigest::Sha1 => "SHA1",
            TlsAuthDigest::Sha256 => "SHA256",
            TlsAuthDigest::Sha384 => "SHA384",
            TlsAuthDigest::Sha512 => "SHA512",
        }
    }
}

/// How our client wraps its control channel.
#[derive(Debug, Clone, Default)]
pub enum ClientWrap {
    /// No wrapper (OpenVPN's default).
    #[default]
    None,
    /// `tls-auth` (HMAC only).
    TlsAuth {
        /// The shared static key.
        key: StaticKey,
        /// `key-direction` (clients normally 1 = Inverse); `None` = bidirectional.
        direction: Option<KeyDirection>,
        /// The `auth` digest.
        digest: TlsAuthDigest,
    },
    /// `tls-crypt` with a shared static key.
    TlsCrypt {
        /// The shared static key.
        key: StaticKey,
    },
    /// `tls-crypt-v2` with this client's own key.
    TlsCryptV2 {
        /// The client key (`Kc` and `WKc`).
        key: TlsCryptV2ClientKey,
    },
}

/// How the gateway expects clients to wrap their control channel.
#[derive(Debug, Clone, Default)]
pub enum ServerWrap {
    /// No wrapper: clients must not wrap (OpenVPN's default).
    #[default]
    None,
    /// `tls-auth` with a shared static key.
    TlsAuth {
        /// The shared static key.
        key: StaticKey,
        /// `key-direction` (servers normally 0 = Normal); `None` = bidirectional.
        direction: Option<KeyDirection>,
        /// The `auth` digest.
        digest: TlsAuthDigest,
    },
    /// `tls-crypt` with a shared static key.
    TlsCrypt {
        /// The shared static key.
        key: StaticKey,
    },
    /// `tls-crypt-v2`: every client brings its own key, wrapped with this server key.
    TlsCryptV2 {
        /// The server key.
        key: TlsCryptV2ServerKey,
    },
}

impl ServerWrap {
    /// "none", "tls-auth", "tls-crypt" or "tls-crypt-v2", for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ServerWrap::None => "none",
            ServerWrap::TlsAuth { .. } => "tls-auth",
            ServerWrap::TlsCrypt { .. } => "tls-crypt",
            ServerWrap::TlsCryptV2 { .. } => "tls-crypt-v2",
        }
    }
}

/// A wrapper key text that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapKeyError {
    /// The begin line is missing.
    #[error(
        "no \"{expected}\" line: this is not the right kind of key (make one with `openvpn --genkey`)"
    )]
    MissingHeader {
        /// What was looked for.
        expected: &'static str,
    },
    /// The end line is missing.
    #[error("no end line for \"{expected}\": the key text is cut short; copy the whole block")]
    MissingFooter {
        /// What was looked for.
        expected: &'static str,
    },
    /// A static key line holds something other than hex digits.
    #[error("static key line {line} holds {found:?}, not a hex digit; the key file is damaged")]
    BadHex {
        /// Line number inside the block.
        line: usize,
        /// The offending character.
        found: char,
    },
    /// A key has the wrong number of bytes.
    #[error(
        "{what} has {found} bytes where {expected} are expected; the key is damaged or of another kind"
    )]
    WrongLength {
        /// Which key.
        what: &'static str,
        /// Bytes expected (or the maximum).
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// Base64 in a tls-crypt-v2 key does not decode.
    #[error("{what} is not valid base64; the key file is damaged")]
    Base64 {
        /// Which key.
        what: &'static str,
    },
    /// The length at the end of a wrapped client key disagrees with its size.
    #[error(
        "the wrapped tls-crypt-v2 client key says it has {declared} bytes but has {found}; the key is damaged"
    )]
    WkcLength {
        /// Length written in the key.
        declared: usize,
        /// Its actual length.
        found: usize,
    },
    /// A wrapped client key did not authenticate with the server key.
    #[error(
        "the tls-crypt-v2 client key was not made with this gateway's server key; issue the client a new profile"
    )]
    WrongServerKey,
    /// A wrapped client key opened but holds no key.
    #[error("the wrapped tls-crypt-v2 client key holds no key")]
    WrapsNoKey,
}

/// Why an incoming control packet was dropped by the wrapper.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    /// Too short or not a control packet.
    #[error("malformed control packet")]
    Malformed,
    /// A control opcode the wrapper does not accept here (e.g. a v2 reset without tls-crypt-v2).
    #[error("unexpected opcode {0} for this control-channel wrapper")]
    UnexpectedOpcode(u8),
    /// The HMAC / tag did not verify (wrong key, tampered, or not wrapped at all).
    #[error("control packet failed authentication")]
    BadAuth,
    /// A packet id seen before, or from an older time.
    #[error("replayed control packet")]
    Replay,
    /// A tls-crypt-v2 client key did not open.
    #[error("tls-crypt-v2 client key refused: {0}")]
    ClientKey(#[from] WrapKeyError),
}
