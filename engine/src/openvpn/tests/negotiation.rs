//! What the gateway makes of a client's options and peer-info: data cipher choice (or
//! AUTH_FAILED when there is none, as a stock server answers), key derivation and `compress stub-v2` for comp-lzo clients.

use std::time::Duration;

use super::pair::{Pair, default_configs, ip_packet, tag_of};
use crate::openvpn::client::ClientEvent;
use crate::openvpn::data::Cipher;
use crate::openvpn::server::{CloseReason, ServerEvent};

/// OpenVPN 2.6.14's peer-info (see the interop notes).
const PEER_INFO_2_6: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\n\
    IV_CIPHERS=AES-256-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\nIV_COMP_STUB=1\n\
    IV_COMP_STUBv2=1\n";
const OPTIONS: &str = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client";

fn pair_announcing(options: &str, peer_info: &str) -> Pair {
    let mut p = Pair::new(true);
    p.client.key_method_override = Some((options.to_owned(), peer_info.to_owned()));
    p
}

/// Runs until both ends closed; checks the client saw AUTH_FAILED and the gateway refused it
/// without ever asking the driver. Returns (client's AUTH_FAILED text, gateway's reason).
fn auth_failed(mut p: Pair) -> (String, String) {
    assert!(
        p.run_until(Duration::from_secs(10), |p| p.client.is_closed()
            && p.server.as_ref().is_some_and(|s| s.is_closed())),
        "{:?} {:?}",
        p.server_events,
        p.client_events
    );
    let client_reason = match p.client_events.as_slice() {
        [ClientEvent::AuthFailed(r), ClientEvent::Closed(c)] => {
            assert!(c.contains(r.as_str()), "{c}");
            r.clone()
        }
        other => panic!("{other:?}"),
    };
    let server_reason = match p.server_events.as_slice() {
        [
            ServerEvent::Refused {
                client: Some(name),
                reason,
            },
            ServerEvent::Closed(CloseReason::Refused(_)),
        ] => {
            assert_eq!(name, "alice");
            reason.clone()
        }
        other => panic!("{other:?}"),
    };
    (client_reason, server_reason)
}

#[test]
fn client_without_any_cipher_gets_auth_failed() {
    let (sc, mut cc) = default_configs(true);
    cc.ciphers.clear();
    let (client, server) = auth_failed(Pair::with(sc, cc));
    assert!(client.contains("data-ciphers AES-256-GCM"), "{client}");
    assert!(server.contains("no shared cipher"), "{server}");
    assert!(server.contains("client offers none"), "{server}");
}

#[test]
fn client_offering_only_unsupported_ciphers_gets_auth_failed() {
    let p = pair_announcing(
        OPTIONS,
        "IV_VER=2.5.0\nIV_CIPHERS=BF-CBC:AES-128-CBC\nIV_PROTO=30\n",
    );
    let (client, server) = auth_failed(p);
    assert!(client.contains("no shared cipher"), "{client}");
    assert!(
        server.contains("client offers BF-CBC:AES-128-CBC"),
        "{server}"
    );
}

#[test]
fn openvpn_2_4_client_with_ncp_gets_aes_gcm_and_prf_keys() {
    let mut p = pair_announcing(
        OPTIONS,
        "IV_VER=2.4.12\nIV_PLAT=linux\nIV_NCP=2\nIV_PROTO=2\n",
    );
    p.connect();
    let reply = p.client.push_reply().unwrap();
    assert_eq!(reply.cipher, Cipher::Aes256Gcm);
    assert!(!reply.tls_ekm, "2.4 cannot do tls-ekm");
    p.ping_through();
    p.run_for(Duration::from_millis(50));
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));
}

#[test]
fn chacha_only_client_gets_chacha() {
    let (sc, mut cc) = default_configs(true);
    cc.ciphers = vec![Cipher::ChaCha20Poly1305];
    let mut p = Pair::with(sc, cc);
    p.connect();
    assert_eq!(
        p.client.push_reply().unwrap().cipher,
        Cipher::ChaCha20Poly1305
    );
    p.ping_through();
    p.run_for(Duration::from_millis(50));
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));
}

#[test]
fn comp_lzo_client_gets_compress_stub_v2_and_data_flows() {
    let mut p = pair_announcing(&format!("{OPTIONS},comp-lzo"), PEER_INFO_2_6);
    p.connect();
    let reply = p.client.push_reply().unwrap();
    assert!(reply.compress_stub_v2);
    assert!(p.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Established {
            cipher: Cipher::Aes256Gcm,
            tls_ekm: true
        }
    )));
    for tag in 0..5 {
        p.send_up(tag);
        p.send_down(tag);
    }
    // A stub-v2 peer escapes a payload that would start with 0x50 as 0x50 0x00 | payload;
    // the gateway must strip the escape.
    let mut escaped = vec![0x50, 0x00];
    escaped.extend_from_slice(&ip_packet([172, 16, 201, 2], [10, 1, 0, 10], 99));
    let mut buf = Vec::new();
    p.client.encrypt(p.now, &escaped, &mut buf).unwrap();
    p.transmit(true, buf);
    p.run_for(Duration::from_millis(50));
    let up: Vec<u32> = p.server_rx.iter().map(|d| tag_of(d)).collect();
    let down: Vec<u32> = p.client_rx.iter().map(|d| tag_of(d)).collect();
    assert_eq!(up, [0, 1, 2, 3, 4, 99]);
    assert_eq!(down, [0, 1, 2, 3, 4]);
    assert!(p.server_rx.iter().all(|d| d[0] == 0x45));
}

#[test]
fn client_without_comp_lzo_gets_no_compress() {
    let mut p = pair_announcing(OPTIONS, PEER_INFO_2_6);
    p.connect();
    assert!(!p.client.push_reply().unwrap().compress_stub_v2);
    assert!(p.client.push_reply().unwrap().tls_ekm);
}
