//! A profile's secrets travel as one text: the client's private key (PEM), then - when the
//! profile has a control-channel wrapper - the wrapper's key (`-----BEGIN OpenVPN Static key
//! V1-----` or `-----BEGIN OpenVPN tls-crypt-v2 client key-----`). One keyring entry (or key
//! file) holds both, so the wrapper key is kept exactly like the private key, and front ends
//! hand both to the client service in [`ConnectRequest::key_pem`](crate::manager::ConnectRequest)
//! without knowing there are two.

/// Where an OpenVPN key block starts (comment lines before it belong to it).
const OPENVPN_KEY: &str = "-----BEGIN OpenVPN ";

/// The private key and the wrapper key as one text.
pub fn join(key_pem: &str, wrap_key_pem: Option<&str>) -> String {
    let mut text = key_pem.to_string();
    if let Some(wrap) = wrap_key_pem {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        // Comment lines before the block (`# 2048 bit OpenVPN static key`) are dropped, so
        // that `split` finds exactly what `join` was given from its begin line on.
        text.push_str(wrap.find(OPENVPN_KEY).map_or(wrap, |i| &wrap[i..]));
    }
    text
}

/// Splits a text made by [`join`] into the private key and the wrapper key (if any).
pub fn split(text: &str) -> (&str, Option<&str>) {
    match text.find(OPENVPN_KEY) {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_split_round_trip() {
        let key = "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----";
        let wrap =
            "-----BEGIN OpenVPN Static key V1-----\nab\n-----END OpenVPN Static key V1-----\n";
        assert_eq!(split(&join(key, None)), (key, None));
        let both = join(key, Some(wrap));
        let (k, w) = split(&both);
        assert_eq!(k.trim_end(), key);
        assert_eq!(w, Some(wrap));
    }
}
