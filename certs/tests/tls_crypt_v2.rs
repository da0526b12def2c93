//! `gatehouse-certs tls-crypt-v2-server` and the per-client tls-crypt-v2 keys in exports,
//! checked against the stock tool: the stock `openvpn` reads our server key to wrap a client
//! key of its own, and our exported client key opens with our server key.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gatehouse_certs::Profile;
use gatehouse_certs::tls_crypt::{read_server_key, serial_of_metadata};
use gatehouse_engine::openvpn::wrap::TlsCryptV2ClientKey;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-certs");

fn run(pki: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--pki")
        .arg(pki)
        .args(args)
        .output()
        .unwrap()
}

fn ok(pki: &Path, args: &[&str]) -> String {
    let out = run(pki, args);
    assert!(
        out.status.success(),
        "gatehouse-certs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn block(text: &str, tag: &str) -> Option<String> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = text.find(&format!("</{tag}>"))?;
    Some(text[start..end].trim().to_string())
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    ok(&pki, &["init-ca"]);
    ok(&pki, &["issue-client", "alice"]);
    (tmp, pki)
}

fn export(pki: &Path, dir: &Path, format: &str) -> String {
    let out = dir.join(format!("alice.{format}"));
    ok(
        pki,
        &[
            "export",
            "alice",
            "--gateway",
            "vpn.example.com",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(mode(&out), 0o600, "exports hold keys");
    fs::read_to_string(out).unwrap()
}

#[test]
fn without_a_server_key_exports_have_no_tls_crypt_v2() {
    let (tmp, pki) = setup();
    assert!(block(&export(&pki, tmp.path(), "ovpn"), "tls-crypt-v2").is_none());
    let profile = Profile::from_toml(&export(&pki, tmp.path(), "gatehouse")).unwrap();
    assert_eq!(profile.tls_crypt_v2, None);
    assert!(!pki.join("private/tls-crypt-v2").exists());
}

#[test]
fn server_key_is_made_once_and_every_client_gets_its_own_key() {
    let (tmp, pki) = setup();
    let said = ok(&pki, &["tls-crypt-v2-server"]);
    assert!(said.contains("created"), "{said}");
    let key_path = pki.join("tls-crypt-v2-server.key");
    assert_eq!(mode(&key_path), 0o600);
    let first = fs::read_to_string(&key_path).unwrap();
    assert!(first.starts_with("-----BEGIN OpenVPN tls-crypt-v2 server key-----"));
    let said = ok(&pki, &["tls-crypt-v2-server"]);
    assert!(said.contains("already exists"), "{said}");
    assert_eq!(
        fs::read_to_string(&key_path).unwrap(),
        first,
        "never overwritten"
    );

    let ovpn = export(&pki, tmp.path(), "ovpn");
    let pem = block(&ovpn, "tls-crypt-v2").expect("<tls-crypt-v2> in the .ovpn");
    let client = TlsCryptV2ClientKey::from_pem(&pem).unwrap();
    let server = read_server_key(&pki).unwrap().unwrap();
    let (_, metadata) = server.unwrap_client_key(client.wkc()).unwrap();
    let serial = serial_of_metadata(&metadata).expect("metadata names the certificate");
    let listed = ok(&pki, &["list", "--json"]);
    assert!(listed.contains(serial), "serial {serial} not in {listed}");
    let stored = pki.join(format!("private/tls-crypt-v2/{serial}.key"));
    assert_eq!(mode(&stored), 0o600);
    // The Gatehouse profile carries the same key; a second export does not change it.
    let profile = Profile::from_toml(&export(&pki, tmp.path(), "gatehouse")).unwrap();
    assert_eq!(
        profile.tls_crypt_v2.as_deref().map(str::trim),
        Some(pem.as_str())
    );
    assert_eq!(
        block(&export(&pki, tmp.path(), "ovpn"), "tls-crypt-v2"),
        Some(pem.clone())
    );
    // Another client gets another key.
    ok(&pki, &["issue-client", "bob"]);
    let bob = tmp.path().join("bob.ovpn");
    ok(
        &pki,
        &[
            "export",
            "bob",
            "--gateway",
            "vpn.example.com",
            "--format",
            "ovpn",
            "-o",
            bob.to_str().unwrap(),
        ],
    );
    assert_ne!(
        block(&fs::read_to_string(bob).unwrap(), "tls-crypt-v2"),
        Some(pem)
    );
}

/// The stock tool takes our server key (it wraps a client key with it), and our server key
/// opens that stock client key: same format both ways.
#[test]
fn stock_openvpn_uses_our_server_key() {
    if Command::new("openvpn").arg("--version").output().is_err() {
        panic!("this test needs the stock `openvpn` (Debian package openvpn)");
    }
    let (tmp, pki) = setup();
    ok(&pki, &["tls-crypt-v2-server"]);
    let client = tmp.path().join("stock-client.key");
    let out = Command::new("openvpn")
        .args(["--tls-crypt-v2"])
        .arg(pki.join("tls-crypt-v2-server.key"))
        .args(["--genkey", "tls-crypt-v2-client"])
        .arg(&client)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = TlsCryptV2ClientKey::from_pem(&fs::read_to_string(client).unwrap()).unwrap();
    let server = read_server_key(&pki).unwrap().unwrap();
    let (_, metadata) = server.unwrap_client_key(key.wkc()).unwrap();
    assert_eq!(
        metadata[0], 1,
        "the stock tool writes a timestamp by default"
    );
}

#[test]
fn a_damaged_server_key_is_named() {
    let (_tmp, pki) = setup();
    ok(&pki, &["tls-crypt-v2-server"]);
    fs::write(pki.join("tls-crypt-v2-server.key"), "-----BEGIN OpenVPN tls-crypt-v2 server key-----\nAAAA\n-----END OpenVPN tls-crypt-v2 server key-----\n").unwrap();
    let out = run(
        &pki,
        &[
            "export",
            "alice",
            "--gateway",
            "vpn.example.com",
            "--format",
            "ovpn",
            "-o",
            "/dev/null",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls-crypt-v2-server.key"), "{err}");
}
