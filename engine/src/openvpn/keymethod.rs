//! The key-method 2 message exchanged over TLS right after the handshake, and the peer-info
//! block a client sends inside it.
//!
//! Layout (from OpenVPN's ssl.c `key_method_2_write`): `u32 0 | u8 2 | key source | options |
//! username | password | [peer-info]`, where every string is a u16 length that counts a
//! trailing NUL (length 0 = absent). The client's key source is pre-master (48) | random1 (32)
//! | random2 (32); the server's is random1 | random2.

/// A malformed key-method message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyMethodError {
    /// The message ended before a field it announced.
    #[error("key-method message truncated")]
    Truncated,
    /// The peer asked for a key method other than 2.
    #[error("unsupported key method {0} (only key-method 2 exists since OpenVPN 2.5)")]
    UnsupportedMethod(u8),
    /// A string field is not UTF-8 or lacks its NUL terminator.
    #[error("malformed string in key-method message")]
    BadString,
}

/// Random material a client contributes (used only by the classic PRF key derivation).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKeySource {
    /// 48-byte pre-master secret.
    pub pre_master: [u8; 48],
    /// First random (master secret seed).
    pub random1: [u8; 32],
    /// Second random (key expansion seed).
    pub random2: [u8; 32],
}

/// Random material a server contributes.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKeySource {
    /// First random (master secret seed).
    pub random1: [u8; 32],
    /// Second random (key expansion seed).
    pub random2: [u8; 32],
}

impl std::fmt::Debug for ClientKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeySource(..)")
    }
}
impl std::fmt::Debug for ServerKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeySource(..)")
    }
}

/// A parsed key-method 2 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMethod2<K> {
    /// The sender's key source material.
    pub key_source: K,
    /// The options-consistency string (informational since OpenVPN 2.6).
    pub options: String,
    /// Username, if the peer sent one.
    pub username: Option<String>,
    /// Password, if the peer sent one.
    pub password: Option<String>,
    /// Raw peer-info block (`KEY=value` lines), if present.
    pub peer_info: Option<String>,
}

fn put_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(&0u16.to_be_bytes()),
        Some(s) => {
            let len = u16::try_from(s.len() + 1).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&s.as_bytes()[..usize::from(len) - 1]);
            out.push(0);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KeyMethodError> {
        if self.0.len() < n {
            return Err(KeyMethodError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], KeyMethodError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn string(&mut self) -> Result<Option<String>, KeyMethodError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes(self.array::<2>()?));
        if len == 0 {
            return Ok(None);
        }
        let raw = self.take(len)?;
        let Some((0, body)) = raw.split_last() else {
            return Err(KeyMethodError::BadString);
        };
        // OpenVPN stops at the first NUL; be as lenient.
        let body = body.split(|b| *b == 0).next().unwrap_or(body);
        String::from_utf8(body.to_vec())
            .map(Some)
            .map_err(|_| KeyMethodError::BadString)
    }
}

fn header(r: &mut Reader<'_>) -> Result<(), KeyMethodError> {
    r.take(4)?;
    let method = r.array::<1>()?[0];
    if method & 0x0f != 2 {
        return Err(KeyMethodError::UnsupportedMethod(method));
    }
    Ok(())
}

impl KeyMethod2<ClientKeySource> {
    /// Parses a client's key-method 2 message (as the server receives it); also returns how
    /// many bytes it took.
    pub fn parse_client(msg: &[u8]) -> Result<(Self, usize), KeyMethodError> {
        let mut r = Reader(msg);
        header(&mut r)?;
        let key_source = ClientKeySource {
            pre_master: r.array()?,
            random1: r.array()?,
            random2: r.array()?,
        };
        let m = Self {
            key_source,
            options: r.string()?.ok_or(KeyMethodError::Truncated)?,
            username: r.string()?,
            password: r.string()?,
            peer_info: r.string()?,
        };
        Ok((m, msg.len() - r.0.len()))
    }

    /// Encodes the message as a client sends it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, 0, 0, 2]);
        out.extend_from_slice(&self.key_source.pre_master);
        out.extend_from_slice(&self.key_source.random1);
        out.extend_from_slice(&self.key_source.random2);
        self.encode_strings(out);
    }
}

impl KeyMethod2<ServerKeySource> {
    /// Parses a server's key-method 2 message (as the client receives it); also returns how
    /// many bytes it took. Servers send no peer-info, so parsing stops after the password and
    /// whatever follows (PUSH_REPLY...) stays for the caller.
    pub fn parse_server(msg: &[u8]) -> Result<(Self, usize), KeyMethodError> {
        let mut r = Reader(msg);
        header(&mut r)?;
        let key_source = ServerKeySource {
            random1: r.array()?,
            random2: r.array()?,
        };
        if r.0.len() < 2 {
            return Err(KeyMethodError::Truncated);
        }
        let options = r.string()?.ok_or(KeyMethodError::Truncated)?;
        if r.0.len() < 4 {
            return Err(KeyMethodError::Truncated);
        }
        let m = Self {
            key_source,
            options,
            username: r.string()?,
            password: r.string()?,
            peer_info: None,
        };
        Ok((m, msg.len() - r.0.len()))
    }

    /// Encodes the message as a server sends it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, 0, 0, 2]);
        out.extend_from_slice(&self.key_source.random1);
        out.extend_from_slice(&self.key_source.random2);
        self.encode_strings(out);
    }
}

impl<K> KeyMethod2<K> {
    fn encode_strings(&self, out: &mut Vec<u8>) {
        put_string(out, Some(&self.options));
        put_string(out, self.username.as_deref());
        put_string(out, self.password.as_deref());
        if let Some(info) = &self.peer_info {
            put_string(out, Some(info));
        }
    }
}

/// `IV_PROTO` bit: the peer can derive data keys from the TLS exporter (tls-ekm).
pub const IV_PROTO_TLS_KEY_EXPORT: u32 = 1 << 3;
/// `IV_PROTO` bit: the peer understands P_DATA_V2.
pub const IV_PROTO_DATA_V2: u32 = 1 << 1;
/// `IV_PROTO` bit: the peer asks for PUSH_REPLY without waiting for PUSH_REQUEST.
pub const IV_PROTO_REQUEST_PUSH: u32 = 1 << 2;
/// `IV_PROTO` bit: the peer sends/understands EXIT over the control channel.
pub const IV_PROTO_CC_EXIT_NOTIFY: u32 = 1 << 7;

/// What a client tells about itself in its peer-info block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// `IV_VER`: the client's version string.
    pub version: Option<String>,
    /// `IV_PLAT`: the client's platform.
    pub platform: Option<String>,
    /// `IV_PROTO` feature bits.
    pub proto: u32,
    /// `IV_CIPHERS`: the data ciphers the client accepts, in its order.
    pub ciphers: Vec<String>,
    /// Whether the block had an `IV_CIPHERS` line at all (2.4.10+, 2.5, 2.6). Without it the
    /// cipher list comes from `IV_NCP` and the options string.
    pub announces_ciphers: bool,
    /// `IV_NCP`: 2 or more means the client can switch to AES-256-GCM even without IV_CIPHERS.
    pub ncp: u32,
    /// `IV_MTU`: the largest tun-mtu the client accepts by push (2.6); its presence is what
    /// tells a server that `tun-mtu` may be pushed.
    pub mtu: Option<u32>,
    /// The client understands `compress stub-v2` (`IV_COMP_STUBv2=1`).
    pub comp_stub_v2: bool,
    /// `IV_GUI_VER`, `IV_SSO`... anything else, kept for logging.
    pub other: Vec<(String, String)>,
}

impl PeerInfo {
    /// Parses a peer-info block of `KEY=value` lines; unknown and malformed lines are kept or
    /// skipped, never an error.
    pub fn parse(text: &str) -> Self {
        let mut info = PeerInfo::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "IV_VER" => info.version = Some(value.to_owned()),
                "IV_PLAT" => info.platform = Some(value.to_owned()),
                "IV_PROTO" => info.proto = value.trim().parse().unwrap_or(0),
                "IV_NCP" => info.ncp = value.trim().parse().unwrap_or(0),
                "IV_MTU" => info.mtu = value.trim().parse().ok(),
                "IV_CIPHERS" => {
                    info.announces_ciphers = true;
                    info.ciphers = value
                        .split(':')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "IV_COMP_STUBv2" => info.comp_stub_v2 = value == "1",
                _ => info.other.push((key.to_owned(), value.to_owned())),
            }
        }
        info
    }

    /// True when the client can take data keys from the TLS exporter.
    pub fn supports_tls_ekm(&self) -> bool {
        self.proto & IV_PROTO_TLS_KEY_EXPORT != 0
    }

    /// True when the client understands `protocol-flags` and the EXIT control message (2.6).
    pub fn supports_cc_exit(&self) -> bool {
        self.proto & IV_PROTO_CC_EXIT_NOTIFY != 0
    }

    /// True when the client takes a pushed `cipher` (ssl_ncp.c `tls_peer_supports_ncp`:
    /// `IV_NCP` >= 2 or an `IV_CIPHERS` line). A stock server pushes no `cipher` otherwise.
    pub fn supports_ncp(&self) -> bool {
        self.ncp >= 2 || self.announces_ciphers
    }

    /// The data ciphers the client can switch to (ssl_ncp.c `tls_peer_ncp_list`):
    /// `IV_CIPHERS`, else `AES-256-GCM:AES-128-GCM` for `IV_NCP=2` (OpenVPN 2.4.0-2.4.9),
    /// else none.
    pub fn ncp_ciphers(&self) -> Vec<&str> {
        if self.announces_ciphers {
            self.ciphers.iter().map(String::as_str).collect()
        } else if self.ncp >= 2 {
            vec!["AES-256-GCM", "AES-128-GCM"]
        } else {
            Vec::new()
        }
    }
}

/// The value of `cipher` in a key-method options string (`...,cipher AES-256-CBC,...`), as
/// OpenVPN's `options_string_extract_option` reads it.
pub fn options_cipher(options: &str) -> Option<&str> {
    options
        .split(',')
        .find_map(|o| o.strip_prefix("cipher "))
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// True when the options string says the client has a compression context (any of
/// `comp-lzo`, `compress ...`; OpenVPN writes `,comp-lzo` for all of them).
pub fn options_use_compression(options: &str) -> bool {
    options
        .split(',')
        .any(|o| o == "comp-lzo" || o.starts_with("compress"))
}

/// The data cipher a stock OpenVPN 2.6 server would push (ssl_ncp.c `ncp_get_best_cipher`):
/// the first of `ours` that is in the client's NCP list, or, for a client without
/// `IV_CIPHERS`, the cipher named in its options string ("poor man's NCP"). `None` means no
/// shared cipher: a stock server answers AUTH_FAILED ("Data channel cipher negotiation failed
/// (no shared cipher)"), since its `data-ciphers-fallback` is unset by default.
pub fn choose_cipher(
    ours: &[super::data::Cipher],
    info: &PeerInfo,
    options: &str,
) -> Option<super::data::Cipher> {
    let theirs = info.ncp_ciphers();
    let occ = if info.announces_ciphers {
        None
    } else {
        options_cipher(options)
    };
    ours.iter().copied().find(|c| {
        let name = c.openvpn_name();
        theirs.iter().any(|t| t.eq_ignore_ascii_case(name))
            || occ.is_some_and(|o| o.eq_ignore_ascii_case(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_message_round_trip_matches_openvpn_layout() {
        let msg = KeyMethod2 {
            key_source: ClientKeySource {
                pre_master: [1; 48],
                random1: [2; 32],
                random2: [3; 32],
            },
            options: "V4,dev-type tun".into(),
            username: None,
            password: None,
            peer_info: Some("IV_VER=2.6.14\nIV_PROTO=990\n".into()),
        };
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(&out[..5], &[0, 0, 0, 0, 2]);
        assert_eq!(out.len(), 5 + 112 + 2 + 16 + 2 + 2 + 2 + 28);
        // options string: length counts the NUL
        assert_eq!(&out[117..119], &[0, 16]);
        assert_eq!(KeyMethod2::parse_client(&out).unwrap(), (msg, out.len()));
    }

    #[test]
    fn server_message_without_peer_info() {
        let msg = KeyMethod2 {
            key_source: ServerKeySource {
                random1: [7; 32],
                random2: [8; 32],
            },
            options: "V4,tls-server".into(),
            username: None,
            password: None,
            peer_info: None,
        };
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(out.len(), 5 + 64 + 2 + 14 + 4);
        out.extend_from_slice(b"PUSH_REPLY\0");
        assert_eq!(
            KeyMethod2::parse_server(&out).unwrap(),
            (msg, out.len() - 11)
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            KeyMethod2::parse_client(&[0, 0, 0, 0, 1]),
            Err(KeyMethodError::UnsupportedMethod(1))
        );
        assert_eq!(
            KeyMethod2::parse_client(&[0, 0, 0, 0, 2, 1, 2]),
            Err(KeyMethodError::Truncated)
        );
        let mut m = vec![0, 0, 0, 0, 2];
        m.extend_from_slice(&[0; 112]);
        m.extend_from_slice(&[0, 3, b'a', b'b', b'c']); // no NUL
        assert_eq!(KeyMethod2::parse_client(&m), Err(KeyMethodError::BadString));
        m.truncate(117);
        m.extend_from_slice(&[0, 200, b'a']);
        assert_eq!(KeyMethod2::parse_client(&m), Err(KeyMethodError::Truncated));
    }

    #[test]
    fn peer_info_of_openvpn_2_6() {
        let info = PeerInfo::parse(
            "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\n\
             IV_CIPHERS=AES-256-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\n\
             IV_COMP_STUB=1\nIV_COMP_STUBv2=1\ngarbage\n",
        );
        assert_eq!(info.version.as_deref(), Some("2.6.14"));
        assert_eq!(info.proto, 990);
        assert!(info.supports_tls_ekm());
        assert!(info.comp_stub_v2);
        assert_eq!(info.ciphers, ["AES-256-GCM", "CHACHA20-POLY1305"]);
        assert!(!PeerInfo::parse("IV_PROTO=2").supports_tls_ekm());
    }
}
