//! Checking control-channel keys at import, with the engine's own parsers (so a key that
//! imports is a key the connection can use).

use gatehouse_engine::openvpn::wrap::{StaticKey, TlsAuthDigest, TlsCryptV2ClientKey};

use crate::profile::WrapKind;

/// Checks the key text of a `kind` wrapper; the error says what is wrong with it.
pub(super) fn check(kind: WrapKind, text: &str) -> Result<(), String> {
    let result = match kind {
        WrapKind::TlsAuth | WrapKind::TlsCrypt => StaticKey::from_pem(text).map(drop),
        WrapKind::TlsCryptV2 => TlsCryptV2ClientKey::from_pem(text).map(drop),
    };
    result.map_err(|e| {
        let hint = match kind {
            WrapKind::TlsCryptV2 => {
                " (a tls-crypt-v2 client key starts with -----BEGIN OpenVPN tls-crypt-v2 client key-----)"
            }
            _ => " (a static key starts with -----BEGIN OpenVPN Static key V1-----)",
        };
        format!("the {} key: {e}{hint}", kind.as_str())
    })
}

/// The canonical OpenVPN name of a tls-auth digest, if Gatehouse supports it.
pub(super) fn tls_auth_digest(name: &str) -> Option<String> {
    TlsAuthDigest::from_openvpn_name(name).map(|d| d.openvpn_name().to_string())
}
