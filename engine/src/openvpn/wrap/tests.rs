//! Key files made by the stock tool (`openvpn --genkey`, OpenVPN 2.6.14) and wrap/unwrap
//! round trips.

use super::*;

const STATIC: &str = include_str!("testdata/static.key");
const V2_SERVER: &str = include_str!("testdata/v2-server.key");
const V2_CLIENT: &str = include_str!("testdata/v2-client.key");
/// Made with metadata `aGVsbG8=` (base64 of "hello").
const V2_CLIENT_META: &str = include_str!("testdata/v2-client-meta.key");

#[test]
fn stock_static_key_parses_and_prints_back() {
    let k = StaticKey::from_pem(STATIC).expect("stock key");
    let again = StaticKey::from_pem(&k.to_pem()).expect("our output");
    assert_eq!(k.bytes(), again.bytes());
    assert!(!format!("{k:?}").contains(&format!("{:02x}", k.bytes()[0]).repeat(2)));
}

#[test]
fn stock_v2_client_key_opens_with_its_server_key() {
    let server = TlsCryptV2ServerKey::from_pem(V2_SERVER).expect("server key");
    let client = TlsCryptV2ClientKey::from_pem(V2_CLIENT).expect("client key");
    let (kc, meta) = server.unwrap_client_key(client.wkc()).expect("opens");
    assert_eq!(kc.bytes(), client.kc().bytes());
    assert_eq!(meta.len(), 9, "type byte + 64-bit timestamp");
    assert_eq!(meta[0], V2_METADATA_TIMESTAMP);
    let client = TlsCryptV2ClientKey::from_pem(V2_CLIENT_META).expect("client key");
    let (_, meta) = server.unwrap_client_key(client.wkc()).expect("opens");
    assert_eq!(meta, b"\x00hello");
}
