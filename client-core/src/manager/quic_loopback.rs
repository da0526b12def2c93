//! The QUIC client against an in-process quinn server that speaks docs/quic.md: the
//! handshake with our certificate and ALPN, the control stream and its capsules, datagrams
//! both ways, and the refusals (revoked at the handshake, revoked later, no answer at all).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_certs::{CaOptions, Pki, Reason, Validity};
use gatehouse_engine::openvpn::tls::{certs_from_pem, key_from_pem};
use gatehouse_engine::wire::capsule::{AssignedAddress, Capsule, DnsConfig, IpRange};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, TransportConfig, VarInt};
use rustls::pki_types::CertificateRevocationListDer;

use super::*;
use crate::manager::ConnectRequest;
use crate::profile::{KeyLocation, PROFILE_VERSION, Protocol, StoredProfile};

/// A CA with a gateway certificate for 127.0.0.1 and a client certificate for alice.
struct Fixture {
    _dir: tempfile::TempDir,
    pki: Pki,
    server_pem: (String, String),
    request: ConnectRequest,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut pki = Pki::init(dir.path().join("pki"), &CaOptions::default()).unwrap();
    let server = pki
        .issue_server("gw", &["127.0.0.1".into()], &Validity::default())
        .unwrap();
    let alice = pki
        .issue_client("alice", &Validity::default(), None)
        .unwrap();
    let request = ConnectRequest {
        profile: StoredProfile {
            version: PROFILE_VERSION,
            name: "alice".into(),
            gateway: "127.0.0.1".into(),
            key_location: KeyLocation::Keyring,
            source: Source::Gatehouse,
            ciphers: vec![],
            ca_pem: pki.ca_cert_pem().to_owned(),
            cert_pem: alice.cert_pem.clone(),
            redirect_gateway: false,
            remote_random: false,
            protocols: vec![Protocol {
                kind: ProtocolKind::Quic,
                port: 443,
            }],
            remotes: vec![],
            control_wrap: None,
            verify_x509_name: None,
            peer_fingerprints: vec![],
            tls_version_min: None,
            tls_version_max: None,
            client_routing: Default::default(),
            routing: Default::default(),
            extra_routes: Vec::new(),
            auto_connect: Default::default(),
            trusted_networks: Vec::new(),
        },
        key_pem: alice.key_pem.clone().unwrap(),
        protocol: Some(ProtocolKind::Quic),
        kill_switch: false,
        allow_lan: false,
    };
    Fixture {
        _dir: dir,
        server_pem: (server.cert_pem.clone(), server.key_pem.clone().unwrap()),
        pki,
        request,
    }
}

/// A gateway endpoint on 127.0.0.1 that requires client certificates from the fixture's CA
/// (and checks `crl`, if given).
fn gateway(f: &Fixture, crl: Option<String>) -> Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from_pem(f.pki.ca_cert_pem().as_bytes()).unwrap() {
        roots.add(c).unwrap();
    }
    let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if let Some(crl) = crl {
        let der = pem::parse_many(crl.as_bytes())
            .unwrap()
            .into_iter()
            .map(|p| CertificateRevocationListDer::from(p.into_contents()))
            .collect::<Vec<_>>();
        verifier = verifier.with_crls(der);
    }
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier.build().unwrap())
        .with_single_cert(
            certs_from_pem(f.server_pem.0.as_bytes()).unwrap(),
            key_from_pem(f.server_pem.1.as_bytes()).unwrap(),
        )
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    let mut transport = TransportConfig::default();
    transport.datagram_receive_buffer_size(Some(1 << 20));
    cfg.transport_config(Arc::new(transport));
    Endpoint::server(cfg, (Ipv4Addr::LOCALHOST, 0).into()).unwrap()
}

fn configuration() -> Vec<u8> {
    let mut out = Vec::new();
    for c in [
        Capsule::AddressAssign(vec![AssignedAddress {
            request_id: 0,
            address: IpAddr::V4(Ipv4Addr::new(10, 218, 0, 6)),
            prefix_len: 32,
        }]),
        Capsule::RouteAdvertisement(vec![IpRange {
            start: IpAddr::V4(Ipv4Addr::new(192, 168, 218, 0)),
            end: IpAddr::V4(Ipv4Addr::new(192, 168, 218, 255)),
            protocol: 0,
        }]),
        Capsule::DnsConfig(DnsConfig {
            servers: vec![Ipv4Addr::new(10, 218, 0, 1)],
            search: vec![],
        }),
        Capsule::TunnelMtu(1280),
        Capsule::Ready,
    ] {
        c.encode(&mut out);
    }
    out
}

async fn dial(f: &Fixture, to: SocketAddr, refusal: &Refusal) -> Result<QuicLink, End> {
    let cfg = quic_config(tls_config(&f.request, refusal).unwrap()).unwrap();
    QuicLink::connect(cfg, to, "127.0.0.1", Duration::from_secs(5), refusal).await
}

#[tokio::test]
async fn configuration_then_datagrams_then_a_revocation_close() {
    let f = fixture();
    let server = gateway(&f, None);
    let addr = server.local_addr().unwrap();
    let gw = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        assert_eq!(
            conn.handshake_data()
                .unwrap()
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .unwrap()
                .protocol,
            Some(ALPN.to_vec())
        );
        // The client's control stream reaches us because it opens it with HELLO.
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let hello = Capsule::Hello.to_bytes();
        let mut opening = vec![0u8; hello.len()];
        recv.read_exact(&mut opening).await.unwrap();
        assert_eq!(opening, hello);
        // Delivered in two pieces: the client waits for the rest.
        let cfg = configuration();
        send.write_all(&cfg[..7]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        send.write_all(&cfg[7..]).await.unwrap();
        // Echo one datagram with a marker, then a burst of ten, then refuse the client as a
        // revocation would.
        let d = conn.read_datagram().await.unwrap();
        let mut echo = d.to_vec();
        echo.push(0xee);
        conn.send_datagram(echo.into()).unwrap();
        let _ = conn.read_datagram().await.unwrap();
        for i in 0..10u8 {
            conn.send_datagram(vec![0x45, i].into()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        conn.close(
            VarInt::from_u32(close::REVOKED),
            b"certificate of alice was revoked",
        );
        server.wait_idle().await;
    });

    let refusal = Refusal::default();
    let mut link = dial(&f, addr, &refusal).await.unwrap();
    let cfg = link.next_config(&refusal).await.unwrap();
    assert_eq!(cfg.address, Some(Ipv4Addr::new(10, 218, 0, 6)));
    assert_eq!(cfg.routes, vec!["192.168.218.0/24".parse().unwrap()]);
    assert_eq!(cfg.dns, vec![IpAddr::V4(Ipv4Addr::new(10, 218, 0, 1))]);
    assert_eq!(cfg.mtu, 1280);

    let packet = vec![0x45u8; 100];
    link.conn.send_datagram(packet.clone().into()).unwrap();
    let echo = link.conn.read_datagram().await.unwrap();
    assert_eq!(&echo[..100], &packet[..]);
    assert_eq!(echo[100], 0xee);

    // The burst: the first one awaited, the rest already waiting.
    link.conn.send_datagram(vec![0x45].into()).unwrap();
    let first = link.conn.read_datagram().await.unwrap();
    assert_eq!(&first[..], [0x45, 0]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut rest = Vec::new();
    while let Some(d) = waiting_datagram(&link.conn) {
        rest.push(d.unwrap()[1]);
    }
    assert_eq!(rest, (1..10).collect::<Vec<u8>>());

    let err = link.conn.read_datagram().await.unwrap_err();
    match explain(&err, &refusal) {
        End::Fatal(r) => assert!(r.contains("revoked"), "{r}"),
        other => panic!("a revocation must be final: {other:?}"),
    }
    gw.await.unwrap();
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_at_the_handshake_for_good() {
    let mut f = fixture();
    f.pki.revoke("alice", Reason::KeyCompromise).unwrap();
    let crl = f.pki.write_crl().unwrap();
    let server = gateway(&f, Some(crl));
    let addr = server.local_addr().unwrap();
    let gw = tokio::spawn(async move {
        // The TLS handshake fails on the gateway's side.
        if let Some(incoming) = server.accept().await {
            assert!(incoming.await.is_err());
        }
        server.wait_idle().await;
    });
    let refusal = Refusal::default();
    // TLS 1.3: the client may finish its half before the gateway refuses it.
    let end = match dial(&f, addr, &refusal).await {
        Err(end) => end,
        Ok(mut link) => link.next_config(&refusal).await.unwrap_err(),
    };
    match end {
        End::Fatal(r) => assert!(r.contains("certificate revoked"), "{r}"),
        other => panic!("a revoked certificate must be final: {other:?}"),
    }
    gw.await.unwrap();
}

#[tokio::test]
async fn a_silent_gateway_fails_the_handshake_quickly() {
    let f = fixture();
    // A socket that reads nothing: UDP dropped on the way.
    let sink = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let refusal = Refusal::default();
    let cfg = quic_config(tls_config(&f.request, &refusal).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let end = QuicLink::connect(
        cfg,
        sink.local_addr().unwrap(),
        "127.0.0.1",
        Duration::from_millis(400),
        &refusal,
    )
    .await
    .err()
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    match end {
        End::Lost(r) => assert!(r.contains("no QUIC answer"), "{r}"),
        other => panic!("{other:?}"),
    }
}
