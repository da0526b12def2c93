//! Certificate refusals, as the operator reads them in the gateway's log (and as the user
//! of `gatehouse connect` reads them on the client side).

use std::time::Duration;

use rcgen::{ExtendedKeyUsagePurpose, SerialNumber, date_time_ymd};

use super::pair::{Ca, Chain, Pair, client_cfg, gateway_config, pki};
use crate::openvpn::client::{ClientConfig, ClientEvent};
use crate::openvpn::server::{CloseReason, ServerEvent};

/// Runs a handshake with `client` (trusting the default CA) against a gateway with `crls`;
/// returns the Refused event's client name and reason.
fn refused_by_gateway(
    client: &Chain,
    crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
) -> (Option<String>, String, Pair) {
    refused_by(client, crls, false)
}

/// [`refused_by_gateway`], the gateway's handshakes run as jobs on another thread or not.
fn refused_by(
    client: &Chain,
    crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
    offload: bool,
) -> (Option<String>, String, Pair) {
    let pki = pki();
    let mut sc = gateway_config(&pki.ca.cert, crls, &pki.server);
    sc.offload_handshakes = offload;
    let cc = client_cfg(&pki.ca.cert, client, "vpn.test");
    let mut p = Pair::with(sc, cc);
    let done = p.run_until(Duration::from_secs(10), |p| {
        p.server.as_ref().is_some_and(|s| s.is_closed()) && p.client.is_closed()
    });
    assert!(done, "{:?} {:?}", p.server_events, p.client_events);
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Authenticated { .. })),
        "{:?}",
        p.server_events
    );
    let Some((client, reason)) = p.server_events.iter().find_map(|e| match e {
        ServerEvent::Refused { client, reason } => Some((client.clone(), reason.clone())),
        _ => None,
    }) else {
        panic!("no Refused event: {:?}", p.server_events);
    };
    assert!(
        matches!(p.server_events.last(), Some(ServerEvent::Closed(CloseReason::Refused(r))) if r.contains(&reason)),
        "{:?}",
        p.server_events
    );
    // The client learns it was refused and closes rather than waiting for a timeout.
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Closed(_))),
        "{:?}",
        p.client_events
    );
    (client, reason, p)
}

#[test]
fn revoked_client_certificate_is_refused() {
    let bob = pki()
        .ca
        .leaf("bob", ExtendedKeyUsagePurpose::ClientAuth, None, |p| {
            p.serial_number = Some(SerialNumber::from(4242u64))
        });
    let crl = pki().ca.crl(&[17, 4242]);
    let (client, reason, _) = refused_by_gateway(&bob, vec![crl]);
    assert_eq!(client.as_deref(), Some("bob"));
    assert!(reason.contains("revoked"), "{reason}");
}

#[test]
fn refusals_name_the_client_when_handshakes_run_on_another_thread() {
    let bob = pki()
        .ca
        .leaf("bob", ExtendedKeyUsagePurpose::ClientAuth, None, |p| {
            p.serial_number = Some(SerialNumber::from(4242u64))
        });
    let crl = pki().ca.crl(&[4242]);
    let (client, reason, _) = refused_by(&bob, vec![crl], true);
    assert_eq!(client.as_deref(), Some("bob"));
    assert!(reason.contains("revoked"), "{reason}");
    let mallory = Ca::new("Other CA").client("mallory");
    let (client, reason, _) = refused_by(&mallory, vec![], true);
    assert_eq!(client.as_deref(), Some("mallory"));
    assert!(reason.contains("unknown issuer"), "{reason}");
}

#[test]
fn offloaded_handshakes_connect_and_renegotiate() {
    let pki = pki();
    let mut sc = gateway_config(&pki.ca.cert, vec![], &pki.server);
    sc.offload_handshakes = true;
    let cc = client_cfg(&pki.ca.cert, &pki.client, "vpn.test");
    let mut p = Pair::with(sc, cc);
    p.connect();
    p.ping_through();
    let now = p.now;
    p.server().renegotiate(now);
    p.run_for(Duration::from_secs(5));
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Rekeyed { .. })),
        "{:?}",
        p.client_events
    );
    p.ping_through();
}

#[test]
fn unrevoked_client_passes_a_crl() {
    let pki = pki();
    let crl = pki.ca.crl(&[17, 4242]);
    let sc = gateway_config(&pki.ca.cert, vec![crl], &pki.server);
    let cc = client_cfg(&pki.ca.cert, &pki.client, "vpn.test");
    Pair::with(sc, cc).connect();
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let other = Ca::new("Other CA");
    let mallory = other.client("mallory");
    let (client, reason, _) = refused_by_gateway(&mallory, vec![]);
    assert_eq!(client.as_deref(), Some("mallory"));
    assert!(reason.contains("unknown issuer"), "{reason}");
}

#[test]
fn expired_client_certificate_is_refused() {
    let carol = pki()
        .ca
        .leaf("carol", ExtendedKeyUsagePurpose::ClientAuth, None, |p| {
            p.not_before = date_time_ymd(2025, 1, 1);
            p.not_after = date_time_ymd(2026, 1, 1);
        });
    let (client, reason, _) = refused_by_gateway(&carol, vec![]);
    assert_eq!(client.as_deref(), Some("carol"));
    assert!(reason.contains("expired"), "{reason}");
}

#[test]
fn client_certificate_without_client_auth_is_refused() {
    let dave = pki()
        .ca
        .leaf("dave", ExtendedKeyUsagePurpose::ServerAuth, None, |_| {});
    let (client, reason, _) = refused_by_gateway(&dave, vec![]);
    assert_eq!(client.as_deref(), Some("dave"));
    assert!(reason.contains("extended key usage"), "{reason}");
}

/// The client's view of a gateway it must not trust; returns its Closed reason.
fn refused_by_client(gateway: &Chain, trusted_ca: &Ca) -> String {
    let pki = pki();
    let sc = gateway_config(&pki.ca.cert, vec![], gateway);
    let cc = client_cfg(&trusted_ca.cert, &pki.client, "vpn.test");
    let mut p = Pair::with(sc, cc);
    assert!(
        p.run_until(Duration::from_secs(10), |p| p.client.is_closed()),
        "{:?}",
        p.client_events
    );
    assert!(p.client.push_reply().is_none());
    assert!(
        !p.server_events.iter().any(|e| matches!(
            e,
            ServerEvent::Authenticated { .. } | ServerEvent::Established { .. }
        )),
        "{:?}",
        p.server_events
    );
    match p.client_events.as_slice() {
        [ClientEvent::Closed(reason)] => reason.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_refuses_gateway_certificate_for_another_name() {
    let pki = pki();
    let wrong = pki.ca.gateway("other.test");
    let reason = refused_by_client(&wrong, &pki.ca);
    assert!(reason.contains("gateway"), "{reason}");
    assert!(reason.contains("does not name this host"), "{reason}");
}

#[test]
fn client_refuses_gateway_from_another_ca() {
    let other = Ca::new("Other CA");
    let rogue = other.gateway("vpn.test");
    let reason = refused_by_client(&rogue, &pki().ca);
    assert!(reason.contains("unknown issuer"), "{reason}");
}

#[test]
fn renegotiation_with_another_clients_certificate_is_refused() {
    let pki = pki();
    let mut p = Pair::new(true);
    p.connect();
    let bob = pki.ca.client("bob");
    p.client.replace_config(std::sync::Arc::new(client_cfg(
        &pki.ca.cert,
        &bob,
        "vpn.test",
    )));
    p.client.renegotiate(p.now);
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.server.as_ref().is_some_and(|s| s.is_closed())
    }));
    match p.server_events.last() {
        Some(ServerEvent::Closed(CloseReason::Refused(r))) => {
            assert!(r.contains("from alice to bob"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Rekeyed { .. })),
        "{:?}",
        p.server_events
    );
}

#[test]
fn renegotiation_with_a_renewed_certificate_of_the_same_client_is_fine() {
    let pki = pki();
    let mut p = Pair::new(true);
    p.connect();
    let alice_renewed = pki.ca.client("alice");
    p.client.replace_config(std::sync::Arc::new(client_cfg(
        &pki.ca.cert,
        &alice_renewed,
        "vpn.test",
    )));
    p.client.renegotiate(p.now);
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Rekeyed { key_id: 1 }))
    }));
    p.ping_through();
    p.run_for(Duration::from_millis(50));
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));
}

/// A client presenting `chain` with `key` (PKCS#8), which need not match the certificate:
/// the gateway must refuse the certificate before it checks any signature by the key.
fn matrix_client(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: &[u8],
) -> ClientConfig {
    use std::sync::Arc;

    use rustls::client::ResolvesClientCert;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::sign::CertifiedKey;

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesClientCert for Fixed {
        fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki().ca.cert.clone()).unwrap();
    let verifier: Arc<dyn ServerCertVerifier> =
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_details(provider, super::pair::wall_clock())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, signer)))));
    tls.enable_sni = false;
    ClientConfig::new(
        Arc::new(tls),
        ServerName::try_from("vpn.test".to_owned()).unwrap(),
    )
}

/// The bad-certificate matrix (issue 14) against the OpenVPN gateway session: every bad kind
/// of client certificate is refused with a precise reason (the `client refused ... reason=` of
/// the gateway's log), before the client gets anything; a chain through an intermediate CA is
/// accepted.
#[test]
fn bad_certificate_matrix() {
    use crate::cert_matrix::{cases, crl};
    let pki = pki();
    let mut failures = vec![];
    for c in cases(&pki.ca.issuer) {
        let mut crls = vec![crl(&pki.ca.issuer).into()];
        crls.extend(c.extra_crls.iter().map(|d| d.clone().into()));
        let sc = gateway_config(&pki.ca.cert, crls, &pki.server);
        let mut p = Pair::with(sc, matrix_client(c.chain.clone(), &c.key));
        let done = p.run_until(Duration::from_secs(10), |p| {
            p.server.as_ref().is_some_and(|s| s.is_closed())
                || p.server_events
                    .iter()
                    .any(|e| matches!(e, ServerEvent::Authenticated { .. }))
        });
        assert!(done, "{}: {:?}", c.name, p.server_events);
        let authenticated = p
            .server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Authenticated { .. }));
        let refusal = p.server_events.iter().find_map(|e| match e {
            ServerEvent::Refused { client, reason } => Some((client.clone(), reason.clone())),
            _ => None,
        });
        match (c.refused, refusal) {
            (None, None) if authenticated => {}
            (None, other) => failures.push(format!("{}: not accepted: {other:?}", c.name)),
            (Some(words), Some((client, reason))) => {
                assert!(!authenticated, "{}", c.name);
                if client.as_deref() != Some(c.name) {
                    failures.push(format!("{}: refusal names {client:?}", c.name));
                }
                for w in words {
                    if !reason.contains(w) {
                        failures.push(format!("{}: {reason:?} lacks {w:?}", c.name));
                    }
                }
            }
            (Some(_), None) => {
                failures.push(format!("{}: not refused: {:?}", c.name, p.server_events))
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
