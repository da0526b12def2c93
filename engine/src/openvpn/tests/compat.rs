//! What a stock OpenVPN 2.6 server accepts, the gateway accepts: TLS 1.2 as well as 1.3,
//! every cipher of its default `data-ciphers`, the key-method-2 messages OpenVPN 2.4, 2.5 and
//! 2.6 clients build, and their compression settings (answered with `compress stub-v2`, never
//! real compression).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::pair::{Pair, client_cfg, pki, tag_of, wall_clock};
use crate::openvpn::DataPathError;
use crate::openvpn::client::ClientConfig;
use crate::openvpn::data::Cipher;
use crate::openvpn::keymethod::{ClientKeySource, KeyMethod2, PeerInfo, choose_cipher};
use crate::openvpn::server::{CloseReason, ServerConfig, ServerEvent};
use crate::openvpn::tls::{TlsVersionMin, server_config_min_version};

/// A client limited to TLS 1.2 (OpenVPN's `tls-version-max 1.2`) offering `ciphers`.
fn tls12_client(ciphers: Vec<Cipher>) -> ClientConfig {
    let pki = pki();
    let mut base = client_cfg(&pki.ca.cert, &pki.client, "vpn.test");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        r.add(pki.ca.cert.clone()).unwrap();
        Arc::new(r)
    };
    let mut config = rustls::ClientConfig::builder_with_details(provider, wall_clock())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![pki.client.0.clone()], pki.client.1.clone_key())
        .unwrap();
    config.enable_sni = false;
    base.tls = Arc::new(config);
    base.server_name = ServerName::try_from("vpn.test").unwrap();
    base.ciphers = ciphers;
    base
}

fn gateway(min: TlsVersionMin) -> ServerConfig {
    let pki = pki();
    let tls = server_config_min_version(
        Arc::new(rustls::crypto::ring::default_provider()),
        wall_clock(),
        std::slice::from_ref(&pki.ca.cert),
        vec![],
        vec![pki.server.0.clone()],
        pki.server.1.clone_key(),
        min,
    )
    .unwrap();
    ServerConfig::new(tls)
}

fn exchange_both_ways(p: &mut Pair, n: u32) {
    for tag in 0..n {
        p.send_up(tag);
        p.send_down(tag);
    }
    p.run_for(Duration::from_millis(50));
    let up: Vec<u32> = p.server_rx.iter().map(|d| tag_of(d)).collect();
    let down: Vec<u32> = p.client_rx.iter().map(|d| tag_of(d)).collect();
    let want: Vec<u32> = (0..n).collect();
    assert_eq!((up, down), (want.clone(), want));
}

fn established(p: &Pair) -> (Cipher, bool) {
    p.server_events
        .iter()
        .find_map(|e| match e {
            ServerEvent::Established { cipher, tls_ekm } => Some((*cipher, *tls_ekm)),
            _ => None,
        })
        .expect("no Established event")
}

#[test]
fn default_gateway_offers_the_stock_default_data_ciphers() {
    let (sc, _) = super::pair::default_configs(true);
    assert_eq!(
        sc.ciphers,
        [
            Cipher::Aes256Gcm,
            Cipher::Aes128Gcm,
            Cipher::ChaCha20Poly1305
        ]
    );
}

#[test]
fn tls_1_2_client_connects_with_each_cipher_and_data_flows_both_ways() {
    for tls_ekm in [true, false] {
        for cipher in Cipher::ALL {
            let mut sc = gateway(TlsVersionMin::Tls12);
            sc.tls_ekm = tls_ekm;
            let mut p = Pair::with(sc, tls12_client(vec![cipher]));
            p.connect();
            let (version, suite) = p.server().tls_session().unwrap();
            assert_eq!(version, "TLSv1.2", "{suite}");
            assert!(suite.starts_with("TLS_ECDHE_ECDSA_WITH_"), "{suite}");
            assert_eq!(established(&p), (cipher, tls_ekm));
            assert_eq!(p.client.push_reply().unwrap().cipher, cipher);
            exchange_both_ways(&mut p, 20);
        }
    }
}

#[test]
fn our_client_reaches_a_server_limited_to_tls_1_2() {
    // A stock server with `tls-version-max 1.2`: our client must fall back to TLS 1.2.
    let pki = pki();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let tls = rustls::ServerConfig::builder_with_details(provider, wall_clock())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .unwrap();
    let mut p = Pair::with(
        ServerConfig::new(Arc::new(tls)),
        client_cfg(&pki.ca.cert, &pki.client, "vpn.test"),
    );
    p.connect();
    assert_eq!(p.server().tls_session().unwrap().0, "TLSv1.2");
    assert_eq!(established(&p), (Cipher::Aes256Gcm, true));
    exchange_both_ways(&mut p, 10);
}

#[test]
fn tls_1_3_is_still_preferred_by_default() {
    let mut p = Pair::with(gateway(TlsVersionMin::Tls12), {
        let pki = pki();
        client_cfg(&pki.ca.cert, &pki.client, "vpn.test")
    });
    p.connect();
    let (version, suite) = p.server().tls_session().unwrap();
    assert_eq!(
        (version, suite.as_str()),
        ("TLSv1.3", "TLS13_AES_256_GCM_SHA384")
    );
}

#[test]
fn tls_1_3_minimum_refuses_a_tls_1_2_client_and_says_why() {
    let mut p = Pair::with(
        gateway(TlsVersionMin::Tls13),
        tls12_client(vec![Cipher::Aes256Gcm]),
    );
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.server.as_ref().is_some_and(|s| s.is_closed())
    }));
    let refused = p
        .server_events
        .iter()
        .find_map(|e| match e {
            ServerEvent::Refused { client, reason } => Some((client.clone(), reason.clone())),
            _ => None,
        })
        .expect("no Refused event");
    assert_eq!(refused.0, None);
    assert!(refused.1.contains("tls_version_min"), "{}", refused.1);
    assert!(refused.1.contains("TLS 1.2"), "{}", refused.1);
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Closed(CloseReason::Refused(_))))
    );
    assert!(!p.client.is_connected());
}

#[test]
fn each_stock_default_cipher_alone_over_tls_1_3() {
    for cipher in Cipher::ALL {
        let (sc, mut cc) = super::pair::default_configs(true);
        cc.ciphers = vec![cipher];
        let mut p = Pair::with(sc, cc);
        p.connect();
        assert_eq!(established(&p), (cipher, true));
        exchange_both_ways(&mut p, 10);
    }
}

// Key-method 2 as each OpenVPN version writes it (ssl.c `key_method_2_write` and
// `push_peer_info`, options.c `options_string`, comp.c `comp_generate_peer_info_string`),
// for a Linux build with LZO and LZ4 and the profile named in each constant.

/// 2.4.7 (no IV_CIPHERS before 2.4.10), profile `cipher AES-256-CBC` + `comp-lzo`.
const OPTIONS_2_4: &str = "V4,dev-type tun,link-mtu 1558,tun-mtu 1500,proto UDPv4,comp-lzo,cipher AES-256-CBC,auth SHA1,keysize 256,key-method 2,tls-client";
const PEER_INFO_2_4: &str = "IV_VER=2.4.7\nIV_PLAT=linux\nIV_PROTO=2\nIV_NCP=2\nIV_LZ4=1\n\
    IV_LZ4v2=1\nIV_LZO=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\nIV_TCPNL=1\n";
/// 2.4.7 with `ncp-disable` and `cipher AES-128-GCM`: only its options string names a cipher.
const OPTIONS_2_4_NCP_DISABLED: &str = "V4,dev-type tun,link-mtu 1550,tun-mtu 1500,proto UDPv4,cipher AES-128-GCM,auth [null-digest],keysize 128,key-method 2,tls-client";
const PEER_INFO_2_4_NCP_DISABLED: &str = "IV_VER=2.4.7\nIV_PLAT=linux\nIV_PROTO=2\nIV_LZ4=1\n\
    IV_LZ4v2=1\nIV_LZO=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\nIV_TCPNL=1\n";
/// 2.4.12: IV_CIPHERS with the --cipher appended.
const PEER_INFO_2_4_12: &str = "IV_VER=2.4.12\nIV_PLAT=linux\nIV_PROTO=2\nIV_NCP=2\n\
    IV_CIPHERS=AES-256-GCM:AES-128-GCM:AES-256-CBC\nIV_LZ4=1\nIV_LZ4v2=1\nIV_LZO=1\n\
    IV_COMP_STUB=1\nIV_COMP_STUBv2=1\nIV_TCPNL=1\n";
/// 2.5.11, profile `cipher AES-256-CBC` (not in its data-ciphers, so not announced).
const OPTIONS_2_5: &str = "V4,dev-type tun,link-mtu 1557,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 256,key-method 2,tls-client";
const PEER_INFO_2_5: &str = "IV_VER=2.5.11\nIV_PLAT=linux\nIV_PROTO=6\nIV_NCP=2\n\
    IV_CIPHERS=AES-256-GCM:AES-128-GCM\nIV_LZ4=1\nIV_LZ4v2=1\nIV_LZO=1\nIV_COMP_STUB=1\n\
    IV_COMP_STUBv2=1\nIV_TCPNL=1\n";
/// 2.6.14 with default data-ciphers, as its server log prints it here.
const OPTIONS_2_6: &str = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client";
const PEER_INFO_2_6: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n\
    IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\n\
    IV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";
/// 2.6.14 with `comp-lzo` (measured against gatehoused: `,comp-lzo` and one more byte of
/// link-mtu; `compress lz4`, `compress lzo` and `compress` write the same string,
/// `compress stub-v2` and `compress lz4-v2` keep link-mtu 1541).
const OPTIONS_2_6_COMP_LZO: &str = "V4,dev-type tun,link-mtu 1542,tun-mtu 1500,proto UDPv4,comp-lzo,auth SHA1,keysize 128,key-method 2,tls-client";
/// 2.6.14 with `comp-lzo` (measured: it then announces real compressors).
const PEER_INFO_2_6_COMP: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\n\
    IV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZ4=1\n\
    IV_LZ4v2=1\nIV_LZO=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";

/// The whole client key-method-2 message, byte by byte: u32 0, u8 2, 112 bytes of key
/// source, options, empty username and password (u16 0 each), peer-info; strings are a u16
/// length counting the trailing NUL.
fn wire_message(options: &str, peer_info: &str) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 0, 2];
    m.extend((0..112).map(|i| i as u8));
    for s in [options, peer_info] {
        m.extend_from_slice(&u16::try_from(s.len() + 1).unwrap().to_be_bytes());
        m.extend_from_slice(s.as_bytes());
        m.push(0);
        if s == options {
            m.extend_from_slice(&[0, 0, 0, 0]);
        }
    }
    m
}

#[test]
fn byte_exact_messages_of_2_4_2_5_2_6_parse() {
    for (options, info) in [
        (OPTIONS_2_4, PEER_INFO_2_4),
        (OPTIONS_2_4_NCP_DISABLED, PEER_INFO_2_4_NCP_DISABLED),
        (OPTIONS_2_4, PEER_INFO_2_4_12),
        (OPTIONS_2_5, PEER_INFO_2_5),
        (OPTIONS_2_6, PEER_INFO_2_6),
        (OPTIONS_2_6_COMP_LZO, PEER_INFO_2_6_COMP),
    ] {
        let wire = wire_message(options, info);
        let (msg, used) = KeyMethod2::<ClientKeySource>::parse_client(&wire).unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(msg.options, options);
        assert_eq!((msg.username, msg.password), (None, None));
        assert_eq!(msg.peer_info.as_deref(), Some(info));
        assert_eq!(msg.key_source.random2[31], 111);
    }
}

#[test]
fn cipher_choice_matches_a_stock_server_for_each_version() {
    let ours = Cipher::ALL;
    let pick = |options: &str, info: &str| choose_cipher(&ours, &PeerInfo::parse(info), options);
    // IV_NCP=2 without IV_CIPHERS means AES-256-GCM:AES-128-GCM.
    assert_eq!(pick(OPTIONS_2_4, PEER_INFO_2_4), Some(Cipher::Aes256Gcm));
    assert_eq!(
        choose_cipher(
            &[Cipher::ChaCha20Poly1305, Cipher::Aes128Gcm],
            &PeerInfo::parse(PEER_INFO_2_4),
            OPTIONS_2_4
        ),
        Some(Cipher::Aes128Gcm)
    );
    // No NCP at all: the cipher in the options string ("poor man's NCP").
    assert_eq!(
        pick(OPTIONS_2_4_NCP_DISABLED, PEER_INFO_2_4_NCP_DISABLED),
        Some(Cipher::Aes128Gcm)
    );
    assert_eq!(pick(OPTIONS_2_5, PEER_INFO_2_5), Some(Cipher::Aes256Gcm));
    assert_eq!(
        pick(OPTIONS_2_6, "IV_CIPHERS=CHACHA20-POLY1305:AES-128-GCM\n"),
        Some(Cipher::Aes128Gcm)
    );
    // With IV_CIPHERS the options-string cipher does not count (a stock server ignores it).
    assert_eq!(
        pick(
            "V4,cipher AES-256-GCM,key-method 2",
            "IV_CIPHERS=AES-256-CBC\nIV_PROTO=6\n"
        ),
        None
    );
    // A CBC-only client without NCP: no shared cipher, as on a stock server.
    assert_eq!(pick(OPTIONS_2_4, "IV_VER=2.3.18\nIV_PROTO=2\n"), None);
}

fn pair_as(options: &str, peer_info: &str) -> Pair {
    let mut p = Pair::new(true);
    p.client.key_method_override = Some((options.to_owned(), peer_info.to_owned()));
    p
}

#[test]
fn openvpn_2_4_client_with_comp_lzo_connects_with_prf_keys_and_stub_v2() {
    let mut p = pair_as(OPTIONS_2_4, PEER_INFO_2_4);
    p.connect();
    assert_eq!(established(&p), (Cipher::Aes256Gcm, false));
    let push = p.server().push_reply().unwrap().to_owned();
    // What a 2.4 client understands: cipher (IV_NCP=2), compress stub-v2; no
    // protocol-flags (no cc-exit), no tun-mtu (no IV_MTU).
    assert!(push.contains(",compress stub-v2,"), "{push}");
    assert!(push.ends_with(",peer-id 7,cipher AES-256-GCM"), "{push}");
    assert!(p.client.push_reply().unwrap().compress_stub_v2);
    exchange_both_ways(&mut p, 10);
}

#[test]
fn openvpn_2_4_12_and_2_5_clients_connect() {
    for (options, info) in [
        (OPTIONS_2_4, PEER_INFO_2_4_12),
        (OPTIONS_2_5, PEER_INFO_2_5),
    ] {
        let mut p = pair_as(options, info);
        p.connect();
        assert_eq!(established(&p), (Cipher::Aes256Gcm, false), "{info}");
        let push = p.server().push_reply().unwrap().to_owned();
        assert!(push.ends_with(",cipher AES-256-GCM"), "{push}");
        assert!(
            !push.contains("protocol-flags") && !push.contains("tun-mtu"),
            "{push}"
        );
        exchange_both_ways(&mut p, 10);
    }
}

#[test]
fn openvpn_2_4_client_without_ncp_gets_its_own_cipher_unpushed() {
    let mut p = pair_as(OPTIONS_2_4_NCP_DISABLED, PEER_INFO_2_4_NCP_DISABLED);
    // The client uses the cipher it announced; the gateway must not push one.
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.server.as_ref().is_some_and(|s| s.is_established())
    }));
    assert_eq!(established(&p), (Cipher::Aes128Gcm, false));
    let push = p.server().push_reply().unwrap().to_owned();
    assert!(!push.contains("cipher"), "{push}");
    assert!(push.ends_with(",peer-id 7"), "{push}");
}

#[test]
fn openvpn_2_6_client_gets_everything_it_announces() {
    let mut p = pair_as(OPTIONS_2_6, PEER_INFO_2_6);
    p.connect();
    assert_eq!(established(&p), (Cipher::Aes256Gcm, true));
    let push = p.server().push_reply().unwrap().to_owned();
    assert!(
        push.ends_with(",peer-id 7,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,tun-mtu 1500"),
        "{push}"
    );
    assert!(!push.contains("compress"), "{push}");
    exchange_both_ways(&mut p, 5);
}

#[test]
fn every_compression_setting_gets_stub_v2_and_a_compressed_packet_is_dropped() {
    // 2.6 writes `,comp-lzo` for comp-lzo [yes|no|adaptive] and every `compress` variant.
    let stub_v2 = OPTIONS_2_6.replace(",auth", ",comp-lzo,auth");
    for (options, info) in [
        (OPTIONS_2_6_COMP_LZO, PEER_INFO_2_6),
        (OPTIONS_2_6_COMP_LZO, PEER_INFO_2_6_COMP),
        (stub_v2.as_str(), PEER_INFO_2_6),
    ] {
        let mut p = pair_as(options, info);
        p.connect();
        let push = p.server().push_reply().unwrap().to_owned();
        assert!(push.contains(",compress stub-v2,"), "{push}");
        exchange_both_ways(&mut p, 5);

        // A packet that claims LZ4 compression (0x50 0x01) is dropped, never decompressed.
        let mut compressed = vec![0x50, 0x01];
        compressed.extend_from_slice(&[0x45; 40]);
        let mut wire = Vec::new();
        p.client.encrypt(p.now, &compressed, &mut wire).unwrap();
        let mut out = Vec::new();
        let now = p.now;
        let key_id = wire[0] & 7;
        assert!(matches!(
            p.server().handle_data(now, &wire, key_id, &mut out),
            Err(DataPathError::Compressed(1))
        ));
        // The gateway escapes a payload starting with 0x50 as stub-v2 requires.
        let mut odd = vec![0x50];
        odd.extend_from_slice(&[0u8; 59]);
        p.server().encrypt(now, &odd, &mut wire).unwrap();
        let mut plain = Vec::new();
        let got = p.client.handle_data(now, &wire, key_id, &mut plain);
        assert!(got.is_ok(), "{got:?}");
    }
}

#[test]
fn tls_1_2_sessions_renegotiate_without_losing_data() {
    for tls_ekm in [true, false] {
        let mut sc = gateway(TlsVersionMin::Tls12);
        sc.tls_ekm = tls_ekm;
        sc.reneg_interval = Some(Duration::from_secs(20));
        let mut p = Pair::with(sc, tls12_client(vec![Cipher::Aes128Gcm]));
        p.connect();
        let mut sent = 0u32;
        let end = p.now + Duration::from_secs(70);
        while p.now < end {
            p.send_up(sent);
            p.send_down(sent);
            sent += 1;
            p.run_for(Duration::from_millis(200));
        }
        p.run_for(Duration::from_secs(1));
        let rekeys = p
            .server_events
            .iter()
            .filter(|e| matches!(e, ServerEvent::Rekeyed { .. }))
            .count();
        assert!(rekeys >= 3, "{:?}", p.server_events);
        let up: Vec<u32> = p.server_rx.iter().map(|d| tag_of(d)).collect();
        let down: Vec<u32> = p.client_rx.iter().map(|d| tag_of(d)).collect();
        assert!(up.iter().copied().eq(0..sent), "up: {up:?}");
        assert!(down.iter().copied().eq(0..sent), "down: {down:?}");
        assert_eq!(p.server().tls_session().unwrap().0, "TLSv1.2");
    }
}
