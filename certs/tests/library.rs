//! The library API as the gateway uses it.

use std::fs;

use gatehouse_certs::{CaOptions, Format, Kind, Pki, PkiError, Profile, Reason, Status, Validity};
use time::OffsetDateTime;

#[test]
fn pki_is_send_so_a_gateway_can_share_it_behind_a_mutex() {
    fn assert_send<T: Send>() {}
    assert_send::<Pki>();
}

#[test]
fn the_gateway_bootstraps_and_finds_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/pki");
    let mut pki = Pki::init(&dir, &CaOptions::default()).unwrap();
    assert!(pki.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        pem::parse(pki.ca_cert_pem()).unwrap().contents(),
        pki.ca_cert_der()
    );
    assert_eq!(pki.crl_path(), dir.join("crl.pem"));

    let issued = pki
        .issue_server(
            "gw",
            &["vpn.example.com".into(), "192.0.2.1".into()],
            &Validity::default(),
        )
        .unwrap();
    assert_eq!(issued.record.kind, Kind::Server);
    let (crt, key) = pki.server_cert_paths("gw");
    assert_eq!(fs::read_to_string(&crt).unwrap(), issued.cert_pem);
    assert_eq!(
        fs::read_to_string(&key).unwrap(),
        issued.key_pem.clone().unwrap()
    );

    // Re-open: same CA, same registry.
    drop(pki);
    let mut pki = Pki::open(&dir).unwrap();
    let alice = pki
        .issue_client("alice", &Validity::days(30), None)
        .unwrap();
    let list = pki.list().unwrap();
    assert_eq!(list.len(), 2);
    let now = OffsetDateTime::now_utc();
    assert!(list.iter().all(|r| r.status(now) == Status::Valid));

    let profile = pki
        .export("alice", "vpn.example.com", Format::Gatehouse, None)
        .unwrap();
    let profile = Profile::from_toml(std::str::from_utf8(&profile).unwrap()).unwrap();
    assert_eq!(profile.cert, alice.cert_pem);
    assert_eq!(profile.ca, pki.ca_cert_pem());

    let revoked = pki.revoke("alice", Reason::Superseded).unwrap();
    assert_eq!(revoked.serial, alice.record.serial);
    assert_eq!(revoked.reason, Some(Reason::Superseded));
    assert!(matches!(
        pki.revoke(&alice.record.serial, Reason::Unspecified),
        Err(PkiError::AlreadyRevoked { .. })
    ));
    let before = fs::read_to_string(pki.crl_path()).unwrap();
    let fresh = pki.write_crl().unwrap();
    assert_ne!(fresh, before, "a new CRL gets a new number");
    assert_eq!(fs::read_to_string(pki.crl_path()).unwrap(), fresh);
}

#[test]
fn a_revocation_whose_crl_cannot_be_written_is_not_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pki = Pki::init(tmp.path(), &CaOptions::default()).unwrap();
    pki.issue_client("bob", &Validity::default(), None).unwrap();
    // Make the CRL impossible to replace: a non-empty folder where crl.pem should be.
    let crl = pki.crl_path();
    fs::remove_file(&crl).unwrap();
    fs::create_dir(&crl).unwrap();
    fs::write(crl.join("x"), b"x").unwrap();

    assert!(pki.revoke("bob", Reason::KeyCompromise).is_err());
    let bob = pki.list().unwrap().pop().unwrap();
    assert_eq!(bob.status(OffsetDateTime::now_utc()), Status::Valid);
    assert!(bob.revoked_at.is_none());

    // Once the CRL can be written again, the revocation goes through.
    fs::remove_dir_all(&crl).unwrap();
    pki.revoke("bob", Reason::KeyCompromise).unwrap();
    assert!(crl.is_file());
}

#[test]
fn errors_tell_the_user_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Pki::open(tmp.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("init-ca"), "{err}");
    let mut pki = Pki::init(tmp.path(), &CaOptions::default()).unwrap();
    let err = pki
        .issue_server("gw", &[], &Validity::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--san"), "{err}");
    let err = pki
        .export("ghost", "gw.example", Format::Ovpn, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("list"), "{err}");
    let err = Pki::init(tmp.path(), &CaOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("refusing to overwrite"), "{err}");
}

#[test]
fn a_profile_offers_quic_first_when_the_gateway_beside_the_pki_serves_it() {
    use gatehouse_certs::profile::ProtocolKind;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let mut pki = Pki::init(&dir, &CaOptions::default()).unwrap();
    pki.issue_client("carol", &Validity::days(30), None)
        .unwrap();
    let export = |pki: &Pki| {
        let bytes = pki
            .export("carol", "vpn.example.com", Format::Gatehouse, None)
            .unwrap();
        Profile::from_toml(std::str::from_utf8(&bytes).unwrap()).unwrap()
    };
    let kinds = |p: &Profile| {
        p.protocols
            .iter()
            .map(|e| (e.kind, e.port))
            .collect::<Vec<_>>()
    };
    let plain = vec![
        (ProtocolKind::OpenvpnUdp, 1194),
        (ProtocolKind::OpenvpnTcp, 443),
        (ProtocolKind::Ikev2, 500),
    ];
    // No gateway.toml: the defaults.
    assert_eq!(kinds(&export(&pki)), plain);
    // QUIC off (what `gatehoused init` writes): the same.
    let toml = tmp.path().join("gateway.toml");
    fs::write(
        &toml,
        "public_addr = \"vpn.example.com\"\n[quic]\nenabled = false\nport = 443\n",
    )
    .unwrap();
    assert_eq!(kinds(&export(&pki)), plain);
    // QUIC on: first choice, the others after it.
    fs::write(
        &toml,
        "public_addr = \"vpn.example.com\"\n[quic]\nenabled = true\nport = 8443\n",
    )
    .unwrap();
    let mut want = vec![(ProtocolKind::Quic, 8443)];
    want.extend(plain);
    assert_eq!(kinds(&export(&pki)), want);
}
