//! End-to-end tests of the `gatehouse-certs` binary, checked by an independent
//! implementation: the `openssl` command-line tool.

// Test helpers outside #[test] functions: a panic is the right failure here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gatehouse_certs::Profile;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-certs");
const OPENSSL: &str = "/usr/bin/openssl";

/// A temporary working folder with a PKI folder `pki` inside (not created yet).
struct Env {
    tmp: tempfile::TempDir,
    pki: PathBuf,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        Env { tmp, pki }
    }

    /// A fresh folder with a CA.
    fn with_ca() -> Self {
        let env = Env::new();
        env.ok(&["init-ca"]);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn pki_path(&self, rel: &str) -> PathBuf {
        self.pki.join(rel)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--pki")
            .arg(&self.pki)
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure with a one-line `error: ...` on stderr, leaving the PKI
    /// folder byte-for-byte as it was; returns the message.
    fn fails(&self, args: &[&str]) -> String {
        let before = snapshot(&self.pki);
        let out = self.run(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1,
            "{args:?}: not a one-line error: {stderr:?}"
        );
        assert_eq!(
            before,
            snapshot(&self.pki),
            "{args:?} changed the PKI folder"
        );
        stderr
    }

    fn openssl(&self, args: &[&str]) -> Output {
        Command::new(OPENSSL)
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .unwrap()
    }

    fn openssl_ok(&self, args: &[&str]) -> String {
        let out = self.openssl(args);
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn list(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<Vec<serde_json::Value>>(&self.ok(&["list", "--json"])).unwrap()
    }

    fn record(&self, name: &str) -> serde_json::Value {
        self.list()
            .into_iter()
            .rev()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
    }
}

/// Every file under `dir` with its mode and contents (empty if `dir` does not exist).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = fs::metadata(&path).unwrap();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.insert(path.clone(), (mode, Vec::new()));
                stack.push(path);
            } else {
                out.insert(path.clone(), (mode, fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn init_ca_creates_the_documented_layout() {
    let env = Env::new();
    env.ok(&["init-ca", "--name", "Test Root", "--days", "100"]);
    for f in ["ca.crt", "ca.key", "registry.sqlite", "crl.pem"] {
        assert!(env.pki_path(f).is_file(), "{f} missing");
    }
    assert_eq!(mode(&env.pki_path("ca.key")), 0o600);
    assert_eq!(mode(&env.pki_path("private")), 0o700);
    assert!(env.pki_path("server").is_dir());

    let ca = env.pki_path("ca.crt");
    let text = env.openssl_ok(&[
        "x509",
        "-in",
        s(&ca),
        "-noout",
        "-subject",
        "-ext",
        "basicConstraints,keyUsage",
    ]);
    assert!(text.contains("CN = Test Root"), "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(
        text.contains("Digital Signature, Certificate Sign, CRL Sign"),
        "{text}"
    );
    let key = env.openssl_ok(&["pkey", "-in", s(&env.pki_path("ca.key")), "-noout", "-text"]);
    assert!(key.contains("P-256"), "{key}");
    // The initial CRL is signed by the CA and empty.
    let crl = env.openssl(&[
        "crl",
        "-in",
        s(&env.pki_path("crl.pem")),
        "-CAfile",
        s(&ca),
        "-noout",
        "-text",
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&crl.stdout),
        String::from_utf8_lossy(&crl.stderr)
    );
    assert!(all.contains("verify OK"), "{all}");
    assert!(all.contains("No Revoked Certificates"), "{all}");
}

#[test]
fn init_ca_refuses_to_overwrite() {
    let env = Env::with_ca();
    let err = env.fails(&["init-ca"]);
    assert!(
        err.contains("already holds a certificate authority"),
        "{err}"
    );
}

#[test]
fn server_certificate_chains_and_carries_ekus_and_sans() {
    let env = Env::with_ca();
    let out = env.ok(&[
        "issue-server",
        "--name",
        "gw",
        "--san",
        "vpn.example.com",
        "*.vpn.example.com",
        "192.0.2.10",
        "2001:db8::1",
    ]);
    assert!(out.contains("server/gw.crt"), "{out}");
    let ca = env.pki_path("ca.crt");
    let crt = env.pki_path("server/gw.crt");
    let key = env.pki_path("server/gw.key");
    assert_eq!(mode(&key), 0o600);
    let v = env.openssl_ok(&[
        "verify",
        "-CAfile",
        s(&ca),
        "-purpose",
        "sslserver",
        s(&crt),
    ]);
    assert!(v.contains(": OK"), "{v}");
    let ext = env.openssl_ok(&[
        "x509",
        "-in",
        s(&crt),
        "-noout",
        "-subject",
        "-ext",
        "extendedKeyUsage,keyUsage,subjectAltName",
    ]);
    assert!(ext.contains("CN = gw"), "{ext}");
    assert!(ext.contains("TLS Web Server Authentication"), "{ext}");
    assert!(ext.contains("1.3.6.1.5.5.8.2.2"), "{ext}");
    assert!(ext.contains("Key Usage: critical"), "{ext}");
    assert!(ext.contains("Digital Signature"), "{ext}");
    for san in [
        "DNS:vpn.example.com",
        "DNS:*.vpn.example.com",
        "IP Address:192.0.2.10",
        "IP Address:2001:DB8:0:0:0:0:0:1",
    ] {
        assert!(ext.contains(san), "{san} missing in {ext}");
    }
    // The key in server/ belongs to the certificate.
    let from_cert = env.openssl_ok(&["x509", "-in", s(&crt), "-noout", "-pubkey"]);
    let from_key = env.openssl_ok(&["pkey", "-in", s(&key), "-pubout"]);
    assert_eq!(from_cert, from_key);
    // Default lifetime: 825 days.
    let record = env.record("gw");
    assert_eq!(record["kind"], "server");
    assert_eq!(record["status"], "valid");
    let fmt = time::format_description::well_known::Rfc3339;
    let nb = time::OffsetDateTime::parse(record["not_before"].as_str().unwrap(), &fmt).unwrap();
    let na = time::OffsetDateTime::parse(record["not_after"].as_str().unwrap(), &fmt).unwrap();
    assert_eq!((na - nb).whole_days(), 825);
}

#[test]
fn client_certificate_chains_with_client_auth_and_private_key() {
    let env = Env::with_ca();
    env.ok(&["issue-client", "alice", "-o", "alice.crt"]);
    let ca = env.pki_path("ca.crt");
    let crt = env.path("alice.crt");
    let v = env.openssl_ok(&[
        "verify",
        "-CAfile",
        s(&ca),
        "-purpose",
        "sslclient",
        s(&crt),
    ]);
    assert!(v.contains(": OK"), "{v}");
    let ext = env.openssl_ok(&[
        "x509",
        "-in",
        s(&crt),
        "-noout",
        "-subject",
        "-serial",
        "-fingerprint",
        "-sha256",
        "-ext",
        "extendedKeyUsage,keyUsage",
    ]);
    assert!(ext.contains("CN = alice"), "{ext}");
    assert!(ext.contains("TLS Web Client Authentication"), "{ext}");
    assert!(!ext.contains("Server Authentication"), "{ext}");
    assert!(ext.contains("Digital Signature"), "{ext}");

    // The registry agrees with openssl on serial and thumbprint.
    let record = env.record("alice");
    let serial = record["serial"].as_str().unwrap();
    assert_eq!(serial.len(), 32);
    assert!(
        ext.contains(&format!("serial={}", serial.to_uppercase())),
        "{ext} vs {serial}"
    );
    let sha = record["sha256"].as_str().unwrap().to_uppercase();
    let colon: Vec<String> = sha
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    assert!(ext.contains(&colon.join(":")), "{ext} vs {sha}");

    // Its key sits in private/<serial>.key with mode 0600 and matches.
    let key = env.pki_path(&format!("private/{serial}.key"));
    assert_eq!(mode(&key), 0o600);
    let from_cert = env.openssl_ok(&["x509", "-in", s(&crt), "-noout", "-pubkey"]);
    let from_key = env.openssl_ok(&["pkey", "-in", s(&key), "-pubout"]);
    assert_eq!(from_cert, from_key);
    let record_days = {
        let fmt = time::format_description::well_known::Rfc3339;
        let nb = time::OffsetDateTime::parse(record["not_before"].as_str().unwrap(), &fmt).unwrap();
        let na = time::OffsetDateTime::parse(record["not_after"].as_str().unwrap(), &fmt).unwrap();
        (na - nb).whole_days()
    };
    assert_eq!(record_days, 365);
}

#[test]
fn revoked_certificates_fail_crl_checks_and_others_pass() {
    let env = Env::with_ca();
    env.ok(&["issue-client", "alice", "-o", "alice.crt"]);
    env.ok(&["issue-client", "bob", "-o", "bob.crt"]);
    env.ok(&["issue-client", "carol", "-o", "carol.crt"]);
    let out = env.ok(&["revoke", "alice", "--reason", "key-compromise"]);
    assert!(out.contains("revoked"), "{out}");
    // By serial, in upper case.
    let carol_serial = env.record("carol")["serial"]
        .as_str()
        .unwrap()
        .to_uppercase();
    env.ok(&["revoke", &carol_serial]);

    let ca = env.pki_path("ca.crt");
    let crl = env.pki_path("crl.pem");
    for (name, revoked) in [("alice", true), ("bob", false), ("carol", true)] {
        let crt = env.path(&format!("{name}.crt"));
        let out = env.openssl(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            s(&crl),
            "-CAfile",
            s(&ca),
            s(&crt),
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if revoked {
            assert!(!out.status.success(), "{name}: {text}");
            assert!(text.contains("certificate revoked"), "{name}: {text}");
        } else {
            assert!(out.status.success(), "{name}: {text}");
        }
    }
    let text = env.openssl_ok(&["crl", "-in", s(&crl), "-noout", "-text"]);
    assert!(text.contains("Key Compromise"), "{text}");
    // init wrote CRL 1, then two revocations.
    assert!(text.contains("CRL Number: \n                3"), "{text}");

    let alice = env.record("alice");
    assert_eq!(alice["status"], "revoked");
    assert_eq!(alice["reason"], "key-compromise");
    assert!(alice["revoked_at"].is_string());

    let err = env.fails(&["revoke", "alice"]);
    assert!(err.contains("already revoked on"), "{err}");
    let err = env.fails(&["revoke", &carol_serial.to_lowercase()]);
    assert!(err.contains("already revoked on"), "{err}");

    // The name is free again.
    env.ok(&["issue-client", "alice"]);
    assert_eq!(env.record("alice")["status"], "valid");
}

#[test]
fn crl_command_prints_and_writes_a_fresh_crl() {
    let env = Env::with_ca();
    let pem = env.ok(&["crl"]);
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");
    assert_eq!(fs::read_to_string(env.pki_path("crl.pem")).unwrap(), pem);
    env.ok(&["crl", "-o", "out.crl"]);
    let text = env.openssl_ok(&[
        "crl",
        "-in",
        "out.crl",
        "-CAfile",
        s(&env.pki_path("ca.crt")),
        "-noout",
        "-crlnumber",
    ]);
    assert!(text.contains("crlNumber=0x03"), "{text}");
}

#[test]
fn pkcs12_export_is_readable_by_openssl_with_and_without_password() {
    let env = Env::with_ca();
    env.ok(&["issue-client", "alice", "-o", "alice.crt"]);
    for (file, pass) in [("with.p12", "s3cret"), ("without.p12", "")] {
        let mut args = vec![
            "export",
            "alice",
            "--gateway",
            "vpn.example.com",
            "--format",
            "pkcs12",
            "-o",
            file,
        ];
        if !pass.is_empty() {
            args.extend(["--password", pass]);
        }
        env.ok(&args);
        assert_eq!(mode(&env.path(file)), 0o600);
        let passin = format!("pass:{pass}");
        let text = env.openssl_ok(&["pkcs12", "-in", file, "-passin", &passin, "-nodes"]);
        assert!(text.contains("friendlyName: alice"), "{text}");
        assert!(text.contains("subject=CN = alice"), "{text}");
        assert!(text.contains("subject=CN = Gatehouse Root CA"), "{text}");
        assert!(text.contains("-----BEGIN PRIVATE KEY-----"), "{text}");
        // The key inside is the certificate's key.
        let key = env.openssl_ok(&[
            "pkcs12", "-in", file, "-passin", &passin, "-nodes", "-nocerts",
        ]);
        fs::write(env.path("k.pem"), key).unwrap();
        let from_key = env.openssl_ok(&["pkey", "-in", "k.pem", "-pubout"]);
        let from_cert = env.openssl_ok(&["x509", "-in", "alice.crt", "-noout", "-pubkey"]);
        assert_eq!(from_key, from_cert);
    }
    let wrong = env.openssl(&[
        "pkcs12",
        "-in",
        "with.p12",
        "-passin",
        "pass:wrong",
        "-nodes",
    ]);
    assert!(!wrong.status.success());
}

#[test]
fn gatehouse_and_ovpn_exports_carry_ca_cert_and_key() {
    let env = Env::with_ca();
    env.ok(&["issue-client", "alice", "-o", "alice.crt"]);
    env.ok(&[
        "export",
        "alice",
        "--gateway",
        "vpn.example.com",
        "--format",
        "gatehouse",
        "-o",
        "alice.toml",
    ]);
    env.ok(&[
        "export",
        "alice",
        "--gateway",
        "192.0.2.1",
        "--format",
        "ovpn",
        "-o",
        "alice.ovpn",
    ]);
    assert_eq!(mode(&env.path("alice.toml")), 0o600);
    assert_eq!(mode(&env.path("alice.ovpn")), 0o600);

    let text = fs::read_to_string(env.path("alice.toml")).unwrap();
    let profile = Profile::from_toml(&text).unwrap();
    assert_eq!(profile.format, "gatehouse-profile");
    assert_eq!(profile.version, 1);
    assert_eq!(profile.name, "alice");
    assert_eq!(profile.gateway, "vpn.example.com");
    let kinds: Vec<(String, u16)> = profile
        .protocols
        .iter()
        .map(|p| {
            (
                serde_json::to_value(p.kind)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                p.port,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("openvpn-udp".into(), 1194),
            ("openvpn-tcp".into(), 443),
            ("ikev2".into(), 500)
        ]
    );
    assert_eq!(
        profile.ca,
        fs::read_to_string(env.pki_path("ca.crt")).unwrap()
    );
    assert_eq!(
        profile.cert,
        fs::read_to_string(env.path("alice.crt")).unwrap()
    );
    fs::write(env.path("p.key"), &profile.key).unwrap();
    let from_key = env.openssl_ok(&["pkey", "-in", "p.key", "-pubout"]);
    let from_cert = env.openssl_ok(&["x509", "-in", "alice.crt", "-noout", "-pubkey"]);
    assert_eq!(from_key, from_cert);

    let ovpn = fs::read_to_string(env.path("alice.ovpn")).unwrap();
    for line in [
        "client",
        "dev tun",
        "proto udp",
        "remote 192.0.2.1 1194",
        "remote-cert-tls server",
        "<ca>",
        "<cert>",
        "<key>",
    ] {
        assert!(ovpn.lines().any(|l| l == line), "{line} missing:\n{ovpn}");
    }
    // The inline certificate verifies against the inline CA.
    let between = |tag: &str| {
        let start = ovpn.find(&format!("<{tag}>\n")).unwrap() + tag.len() + 3;
        let end = ovpn.find(&format!("</{tag}>")).unwrap();
        ovpn[start..end].to_string()
    };
    fs::write(env.path("o-ca.pem"), between("ca")).unwrap();
    fs::write(env.path("o-cert.pem"), between("cert")).unwrap();
    fs::write(env.path("o-key.pem"), between("key")).unwrap();
    env.openssl_ok(&["verify", "-CAfile", "o-ca.pem", "o-cert.pem"]);
    env.openssl_ok(&["pkey", "-in", "o-key.pem", "-noout"]);
}

/// `export NAME --gateway GATEWAY --format swanctl -o OUT` as arguments.
fn swanctl_args<'a>(name: &'a str, gateway: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "export",
        name,
        "--gateway",
        gateway,
        "--format",
        "swanctl",
        "-o",
        out,
    ]
}

/// Entries of a folder, as names (for "nothing left behind" checks).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn swanctl_export_is_a_ready_swanctl_folder() {
    let env = Env::with_ca();
    env.ok(&["issue-client", "alice", "-o", "alice.crt"]);
    let out = env.ok(&swanctl_args("alice", "vpn.example.com", "sw"));
    assert!(
        out.contains("swanctl --initiate --child gatehouse"),
        "{out}"
    );

    // Exactly the documented layout; the key and its folder private to the user.
    let dir = env.path("sw");
    let layout: Vec<String> = snapshot(&dir)
        .into_keys()
        .map(|path| {
            path.strip_prefix(&dir)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        layout,
        [
            "private",
            "private/alice.pem",
            "swanctl.conf",
            "x509",
            "x509/alice.pem",
            "x509ca",
            "x509ca/gatehouse-ca.pem",
        ]
    );
    assert_eq!(mode(&dir.join("private")), 0o700);
    assert_eq!(mode(&dir.join("private/alice.pem")), 0o600);
    for public in ["swanctl.conf", "x509/alice.pem", "x509ca/gatehouse-ca.pem"] {
        assert_eq!(mode(&dir.join(public)), 0o644, "{public}");
    }
    // Nothing but the folder itself was left beside it.
    assert!(!names(env.tmp.path()).iter().any(|n| n.contains(".tmp-")));

    // The files are PEM of the right kind and the right material.
    let read = |rel: &str| fs::read_to_string(dir.join(rel)).unwrap();
    for (rel, tag) in [
        ("x509ca/gatehouse-ca.pem", "CERTIFICATE"),
        ("x509/alice.pem", "CERTIFICATE"),
        ("private/alice.pem", "PRIVATE KEY"),
    ] {
        let block = pem::parse(read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(block.tag(), tag, "{rel}");
    }
    assert_eq!(
        read("x509ca/gatehouse-ca.pem"),
        fs::read_to_string(env.pki_path("ca.crt")).unwrap()
    );
    assert_eq!(
        read("x509/alice.pem"),
        fs::read_to_string(env.path("alice.crt")).unwrap()
    );
    let v = env.openssl_ok(&[
        "verify",
        "-CAfile",
        "sw/x509ca/gatehouse-ca.pem",
        "-purpose",
        "sslclient",
        "sw/x509/alice.pem",
    ]);
    assert!(v.contains(": OK"), "{v}");
    let from_cert = env.openssl_ok(&["x509", "-in", "sw/x509/alice.pem", "-noout", "-pubkey"]);
    let from_key = env.openssl_ok(&["pkey", "-in", "sw/private/alice.pem", "-pubout"]);
    assert_eq!(from_cert, from_key);

    // swanctl.conf: a comment header on how to use it, then the one connection.
    let conf = read("swanctl.conf");
    let header: Vec<&str> = conf.lines().take_while(|l| l.starts_with('#')).collect();
    let header = header.join("\n");
    for hint in [
        "SWANCTL_DIR",
        "swanctl --load-all",
        "/etc/swanctl",
        "swanctl --initiate --child gatehouse",
    ] {
        assert!(
            header.contains(hint),
            "{hint} missing in the header:\n{header}"
        );
    }
    let body: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        body,
        [
            "connections {",
            "gatehouse {",
            "version = 2",
            "remote_addrs = vpn.example.com",
            "vips = 0.0.0.0",
            "encap = yes",
            "proposals = aes256gcm16-prfsha256-x25519,aes256gcm16-prfsha384-ecp384,default",
            "dpd_delay = 30s",
            "local {",
            "auth = pubkey",
            "certs = alice.pem",
            "id = \"CN=alice\"",
            "}",
            "remote {",
            "auth = pubkey",
            "id = vpn.example.com",
            "}",
            "children {",
            "gatehouse {",
            "remote_ts = 0.0.0.0/0",
            "esp_proposals = aes256gcm16,chacha20poly1305",
            "start_action = none",
            "dpd_action = restart",
            "}",
            "}",
            "}",
            "}",
        ],
        "{conf}"
    );

    // An existing empty folder is fine too, and an IP address is the gateway's identity.
    fs::create_dir(env.path("empty")).unwrap();
    env.ok(&swanctl_args("alice", "192.0.2.1", "empty"));
    let conf = fs::read_to_string(env.path("empty/swanctl.conf")).unwrap();
    for line in ["remote_addrs = 192.0.2.1", "id = 192.0.2.1"] {
        assert!(
            conf.lines().any(|l| l.trim() == line),
            "{line} missing:\n{conf}"
        );
    }
    assert_eq!(mode(&env.path("empty/private/alice.pem")), 0o600);
    assert_eq!(mode(&env.path("empty/private")), 0o700);
}

#[test]
fn swanctl_export_refuses_what_it_would_overwrite_and_writes_nothing() {
    let env = Env::with_ca();
    env.ok(&["issue-client", "alice"]);
    fs::create_dir(env.path("full")).unwrap();
    fs::write(env.path("full/swanctl.conf"), "mine").unwrap();
    fs::write(env.path("file"), "mine").unwrap();
    let before = names(env.tmp.path());
    let full = snapshot(&env.path("full"));

    let err = env.fails(&swanctl_args("alice", "vpn.example.com", "full"));
    assert!(
        err.contains("cannot export into full: it exists and is not empty"),
        "{err}"
    );
    let err = env.fails(&swanctl_args("alice", "vpn.example.com", "file"));
    assert!(err.contains("not a folder"), "{err}");
    let err = env.fails(&swanctl_args("alice", "vpn.example.com", "no/such/dir"));
    assert!(err.contains("parent folder does not exist"), "{err}");
    let err = env.fails(&swanctl_args("alice", "bad host", "new"));
    assert!(err.contains("invalid subject alternative name"), "{err}");
    let err = env.fails(&swanctl_args("nobody", "vpn.example.com", "new"));
    assert!(err.contains("nobody"), "{err}");

    // A certificate issued from a CSR has no key here to put in private/.
    let csr = openssl_csr(
        &env,
        "dev",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    env.ok(&["issue-client", "device", "--csr", s(&csr)]);
    let before_csr = names(env.tmp.path());
    let err = env.fails(&swanctl_args("device", "vpn.example.com", "new"));
    assert!(err.contains("stays on the device"), "{err}");

    assert_eq!(snapshot(&env.path("full")), full);
    assert_eq!(fs::read_to_string(env.path("file")).unwrap(), "mine");
    assert!(!env.path("new").exists());
    assert_eq!(names(env.tmp.path()), before_csr);
    assert!(before.iter().all(|n| before_csr.contains(n)));
}

/// Makes a CSR with openssl; returns its path. `newkey` as for `openssl req -newkey`.
fn openssl_csr(env: &Env, stem: &str, newkey: &[&str]) -> PathBuf {
    let csr = env.path(&format!("{stem}.csr"));
    let key = env.path(&format!("{stem}.key"));
    let mut args = vec!["req", "-new"];
    args.extend_from_slice(newkey);
    args.extend([
        "-nodes",
        "-keyout",
        s(&key),
        "-out",
        s(&csr),
        "-subj",
        "/CN=ignored-subject/O=Device",
    ]);
    env.openssl_ok(&args);
    csr
}

#[test]
fn csr_flow_signs_rsa_and_ecdsa_requests() {
    let env = Env::with_ca();
    let ca = env.pki_path("ca.crt");
    let cases: [(&str, Vec<&str>); 3] = [
        ("rsa", vec!["-newkey", "rsa:2048"]),
        (
            "p256",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
        (
            "p384",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        ),
    ];
    for (stem, newkey) in cases {
        let csr = openssl_csr(&env, stem, &newkey);
        let name = format!("device-{stem}");
        let crt = env.path(&format!("{name}.crt"));
        let keys_before = fs::read_dir(env.pki_path("private")).unwrap().count();
        env.ok(&["issue-client", &name, "--csr", s(&csr), "-o", s(&crt)]);
        assert_eq!(
            fs::read_dir(env.pki_path("private")).unwrap().count(),
            keys_before,
            "no key may be stored for a CSR"
        );
        let v = env.openssl_ok(&[
            "verify",
            "-CAfile",
            s(&ca),
            "-purpose",
            "sslclient",
            s(&crt),
        ]);
        assert!(v.contains(": OK"), "{v}");
        let subject = env.openssl_ok(&["x509", "-in", s(&crt), "-noout", "-subject"]);
        assert_eq!(subject.trim(), format!("subject=CN = {name}"));
        let from_cert = env.openssl_ok(&["x509", "-in", s(&crt), "-noout", "-pubkey"]);
        let from_csr = env.openssl_ok(&["req", "-in", s(&csr), "-noout", "-pubkey"]);
        assert_eq!(from_cert, from_csr);

        let err = env.fails(&[
            "export",
            &name,
            "--gateway",
            "gw.example",
            "--format",
            "ovpn",
            "-o",
            "x.ovpn",
        ]);
        assert!(err.contains("stays on the device"), "{err}");
        assert!(!env.path("x.ovpn").exists());
    }

    // DER input works too.
    let csr = openssl_csr(
        &env,
        "der",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    env.openssl_ok(&[
        "req",
        "-in",
        s(&csr),
        "-outform",
        "DER",
        "-out",
        "der.csr.der",
    ]);
    env.ok(&[
        "issue-client",
        "device-der",
        "--csr",
        "der.csr.der",
        "-o",
        "der.crt",
    ]);
    env.openssl_ok(&["verify", "-CAfile", s(&ca), "der.crt"]);
}

#[test]
fn tampered_or_weak_csrs_are_rejected() {
    let env = Env::with_ca();
    let csr = openssl_csr(&env, "t", &["-newkey", "rsa:2048"]);
    env.openssl_ok(&["req", "-in", s(&csr), "-outform", "DER", "-out", "t.der"]);
    let mut der = fs::read(env.path("t.der")).unwrap();
    // Change one byte of the subject (CN "ignored-subject" -> "ignored-subjecu"): the
    // structure still parses, the signature no longer matches.
    let pos = der
        .windows(15)
        .position(|w| w == b"ignored-subject")
        .unwrap();
    der[pos + 14] = b'u';
    fs::write(env.path("tampered.der"), &der).unwrap();
    let err = env.fails(&["issue-client", "mallory", "--csr", "tampered.der"]);
    assert!(err.contains("signature does not verify"), "{err}");

    // Same through PEM.
    env.openssl_ok(&[
        "req",
        "-inform",
        "DER",
        "-in",
        "tampered.der",
        "-out",
        "tampered.pem",
    ]);
    let err = env.fails(&["issue-client", "mallory", "--csr", "tampered.pem"]);
    assert!(err.contains("signature does not verify"), "{err}");

    let weak = openssl_csr(&env, "weak", &["-newkey", "rsa:1024"]);
    let err = env.fails(&["issue-client", "weak", "--csr", s(&weak)]);
    assert!(err.contains("RSA key of 1024 bits"), "{err}");

    fs::write(env.path("junk.csr"), b"not a csr").unwrap();
    let err = env.fails(&["issue-client", "junk", "--csr", "junk.csr"]);
    assert!(
        err.contains("cannot read the certificate signing request"),
        "{err}"
    );
    assert!(env.list().is_empty());
}

#[test]
fn duplicate_names_are_refused_while_valid() {
    let env = Env::with_ca();
    env.ok(&["issue-client", "alice"]);
    let serial = env.record("alice")["serial"].as_str().unwrap().to_string();
    let err = env.fails(&["issue-client", "alice"]);
    assert!(
        err.contains(&format!(
            "a valid certificate named alice already exists (serial {serial}); revoke it first with `gatehouse-certs --pki {} revoke alice`",
            env.pki.display()
        )),
        "{err}"
    );
    env.ok(&["issue-server", "--name", "gw", "--san", "gw.example"]);
    let err = env.fails(&["issue-server", "--name", "gw", "--san", "gw.example"]);
    assert!(err.contains("already exists"), "{err}");
    // Names are unique across kinds: `revoke NAME` must be unambiguous.
    let err = env.fails(&["issue-client", "gw"]);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn not_after_in_the_past_makes_an_expired_certificate() {
    let env = Env::with_ca();
    env.ok(&[
        "issue-client",
        "old",
        "--not-before",
        "2020-01-01T00:00:00Z",
        "--not-after",
        "2021-01-01T00:00:00Z",
        "-o",
        "old.crt",
    ]);
    let record = env.record("old");
    assert_eq!(record["status"], "expired");
    assert_eq!(record["not_before"], "2020-01-01T00:00:00Z");
    assert_eq!(record["not_after"], "2021-01-01T00:00:00Z");
    let out = env.openssl(&["verify", "-CAfile", s(&env.pki_path("ca.crt")), "old.crt"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("certificate has expired")
            || String::from_utf8_lossy(&out.stderr).contains("certificate has expired")
    );
    let err = env.fails(&[
        "export",
        "old",
        "--gateway",
        "gw.example",
        "--format",
        "ovpn",
        "-o",
        "o.ovpn",
    ]);
    assert!(err.contains("expired on 2021-01-01T00:00:00Z"), "{err}");
    // An expired certificate does not hold its name.
    env.ok(&["issue-client", "old"]);
    assert_eq!(env.record("old")["status"], "valid");
    // The human table shows both.
    let table = env.ok(&["list"]);
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(
        table.contains("expired") && table.contains("valid"),
        "{table}"
    );

    env.ok(&[
        "issue-server",
        "--name",
        "oldgw",
        "--san",
        "10.0.0.1",
        "--not-before",
        "2020-01-01T00:00:00Z",
        "--not-after",
        "2020-06-01T00:00:00Z",
    ]);
    assert_eq!(env.record("oldgw")["status"], "expired");
}

#[test]
fn bad_input_gives_one_line_errors_and_changes_nothing() {
    let env = Env::with_ca();
    env.ok(&["issue-client", "alice"]);
    env.ok(&["issue-server", "--name", "gw", "--san", "gw.example"]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["revoke", "nobody"],
            "no certificate named or with serial \"nobody\"",
        ),
        (
            vec![
                "export",
                "nobody",
                "--gateway",
                "gw.example",
                "--format",
                "ovpn",
                "-o",
                "x",
            ],
            "nobody",
        ),
        (
            vec![
                "export",
                "gw",
                "--gateway",
                "gw.example",
                "--format",
                "ovpn",
                "-o",
                "x",
            ],
            "gateway certificate",
        ),
        (
            vec![
                "export",
                "alice",
                "--gateway",
                "gw.example",
                "--format",
                "zip",
                "-o",
                "x",
            ],
            "unknown export format",
        ),
        (
            vec![
                "export",
                "alice",
                "--gateway",
                "bad host\nremote evil",
                "--format",
                "ovpn",
                "-o",
                "x",
            ],
            "invalid subject alternative name",
        ),
        (
            vec![
                "issue-server",
                "--name",
                "gw2",
                "--san",
                "ok.example",
                "bad_host!",
            ],
            "\"bad_host!\"",
        ),
        (
            vec!["issue-server", "--name", "../evil", "--san", "ok.example"],
            "invalid certificate name",
        ),
        (vec!["issue-client", "a/b"], "invalid certificate name"),
        (
            vec!["issue-client", "bob", "--days", "0"],
            "--days must be at least 1",
        ),
        (
            vec!["issue-client", "bob", "--not-after", "yesterday"],
            "--not-after",
        ),
        (
            vec![
                "issue-client",
                "bob",
                "--not-before",
                "2030-01-01T00:00:00Z",
                "--not-after",
                "2029-01-01T00:00:00Z",
            ],
            "must be later",
        ),
        (
            vec!["issue-client", "bob", "--csr", "missing.csr"],
            "missing.csr",
        ),
        (
            vec!["revoke", "alice", "--reason", "stolen"],
            "unknown revocation reason",
        ),
        (vec!["init-ca"], "already holds"),
    ];
    for (args, expected) in cases {
        let err = env.fails(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(!env.path("x").exists());
}

#[test]
fn commands_on_a_folder_that_is_not_a_pki_explain_how_to_make_one() {
    // Missing folder: nothing gets created.
    let env = Env::new();
    for args in [
        vec!["list"],
        vec!["issue-client", "alice"],
        vec!["issue-server", "--name", "gw", "--san", "gw.example"],
        vec!["revoke", "alice"],
        vec!["crl"],
        vec![
            "export",
            "alice",
            "--gateway",
            "gw",
            "--format",
            "ovpn",
            "-o",
            "x",
        ],
    ] {
        let err = env.fails(&args);
        assert!(
            err.contains(&format!(
                "{} is not a Gatehouse PKI folder; create one with `gatehouse-certs --pki {} init-ca`",
                env.pki.display(),
                env.pki.display()
            )),
            "{err}"
        );
        assert!(!env.pki.exists());
    }
    // A folder of something else.
    fs::create_dir(&env.pki).unwrap();
    fs::write(env.pki.join("notes.txt"), "hello").unwrap();
    let err = env.fails(&["list"]);
    assert!(err.contains("is not a Gatehouse PKI folder"), "{err}");
    // A half-made PKI (crash during init: no ca.crt) is not a PKI either, and init can
    // finish the job.
    let full = Env::with_ca();
    fs::remove_file(full.pki_path("ca.crt")).unwrap();
    let err = full.fails(&["list"]);
    assert!(err.contains("is not a Gatehouse PKI folder"), "{err}");
    full.ok(&["init-ca"]);
    full.ok(&["list"]);
    // But a folder whose ca.crt was lost after certificates were issued is not re-initialised
    // over its registry.
    full.ok(&["issue-client", "alice"]);
    fs::remove_file(full.pki_path("ca.crt")).unwrap();
    let err = full.fails(&["init-ca"]);
    assert!(err.contains("restore ca.crt from a backup"), "{err}");
}
