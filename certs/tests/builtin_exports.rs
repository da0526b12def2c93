//! The exports for the operating systems' built-in IKEv2 clients, checked by independent
//! tools: the `.mobileconfig` parsed by Python's `plistlib`, the PKCS#12 inside both opened
//! by `openssl pkcs12`, the certificates verified by `openssl verify`.

// Test helpers outside #[test] functions: a panic is the right failure here.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-certs");
const OPENSSL: &str = "/usr/bin/openssl";
const GATEWAY: &str = "vpn.example.com";

/// Python's plistlib, printing the plist as JSON with data, integers and booleans tagged.
const PLIST_TO_JSON: &str = r#"
import base64, json, plistlib, sys
def conv(v):
    if isinstance(v, dict): return {k: conv(x) for k, x in v.items()}
    if isinstance(v, list): return [conv(x) for x in v]
    if isinstance(v, bytes): return {"$data": base64.b64encode(v).decode()}
    if isinstance(v, bool): return {"$bool": v}
    if isinstance(v, int): return {"$int": v}
    return v
with open(sys.argv[1], "rb") as f:
    print(json.dumps(conv(plistlib.load(f, fmt=plistlib.FMT_XML))))
"#;

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    /// A PKI with a CA and the client alice.
    fn new() -> Self {
        let env = Env {
            tmp: tempfile::tempdir().unwrap(),
        };
        env.certs(&["init-ca"]);
        env.certs(&["issue-client", "alice", "-o", "alice.crt"]);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    fn ok(&self, program: &str, args: &[&str]) -> Vec<u8> {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn certs(&self, args: &[&str]) -> Vec<u8> {
        let mut all = vec!["--pki", "pki"];
        all.extend(args);
        self.ok(BIN, &all)
    }

    fn openssl(&self, args: &[&str]) -> String {
        String::from_utf8(self.ok(OPENSSL, args)).unwrap()
    }

    /// Checks `p12` (DER bytes) holds alice's certificate and its key and the CA, opening it
    /// with `password`.
    fn check_pkcs12(&self, p12: &[u8], password: &str) {
        fs::write(self.path("check.p12"), p12).unwrap();
        let passin = format!("pass:{password}");
        let all = self.openssl(&["pkcs12", "-in", "check.p12", "-passin", &passin, "-nodes"]);
        assert!(all.contains("subject=CN = alice"), "{all}");
        assert!(all.contains("subject=CN = Gatehouse Root CA"), "{all}");
        let certs = self.openssl(&[
            "pkcs12",
            "-in",
            "check.p12",
            "-passin",
            &passin,
            "-nokeys",
            "-clcerts",
        ]);
        fs::write(self.path("p12-cert.pem"), certs).unwrap();
        let verified = self.openssl(&["verify", "-CAfile", "pki/ca.crt", "p12-cert.pem"]);
        assert!(verified.contains(": OK"), "{verified}");
        let key = self.openssl(&[
            "pkcs12",
            "-in",
            "check.p12",
            "-passin",
            &passin,
            "-nodes",
            "-nocerts",
        ]);
        fs::write(self.path("p12-key.pem"), key).unwrap();
        assert_eq!(
            self.openssl(&["pkey", "-in", "p12-key.pem", "-pubout"]),
            self.openssl(&["x509", "-in", "alice.crt", "-noout", "-pubkey"])
        );
        let wrong = self.run(
            OPENSSL,
            &[
                "pkcs12",
                "-in",
                "check.p12",
                "-passin",
                "pass:wrong",
                "-nodes",
            ],
        );
        assert!(
            password.is_empty() || !wrong.status.success(),
            "a wrong password opens it"
        );
    }

    fn ca_der(&self) -> Vec<u8> {
        self.ok(OPENSSL, &["x509", "-in", "pki/ca.crt", "-outform", "DER"])
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let mut n = 0u32;
        for (i, &c) in data.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        for i in 0..data.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn data(v: &Value) -> Vec<u8> {
    base64_decode(
        v["$data"]
            .as_str()
            .unwrap_or_else(|| panic!("not data: {v}")),
    )
}

fn string<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn int(v: &Value, key: &str) -> i64 {
    v[key]["$int"]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} is not an integer in {v}"))
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[test]
fn mobileconfig_is_a_profile_apple_devices_import() {
    let env = Env::new();
    env.certs(&[
        "export",
        "alice",
        "--gateway",
        GATEWAY,
        "--format",
        "mobileconfig",
        "--password",
        "s3cret",
        "-o",
        "alice.mobileconfig",
    ]);
    fs::write(env.path("plist2json.py"), PLIST_TO_JSON).unwrap();
    let json = env.ok(python(), &["plist2json.py", "alice.mobileconfig"]);
    let top: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(string(&top, "PayloadType"), "Configuration");
    assert_eq!(int(&top, "PayloadVersion"), 1);
    let payloads = top["PayloadContent"].as_array().unwrap();
    let by_type = |t: &str| {
        let found: Vec<&Value> = payloads.iter().filter(|p| p["PayloadType"] == t).collect();
        assert_eq!(found.len(), 1, "one {t} payload in {top}");
        found[0]
    };
    let vpn = by_type("com.apple.vpn.managed");
    let p12 = by_type("com.apple.security.pkcs12");
    let root = by_type("com.apple.security.root");
    assert_eq!(payloads.len(), 3);

    // Unique UUIDs and identifiers, every payload versioned.
    let mut uuids = HashSet::new();
    let mut ids = HashSet::new();
    for p in payloads.iter().chain([&top]) {
        let u = string(p, "PayloadUUID");
        assert_eq!(u.len(), 36, "{u}");
        assert!(uuids.insert(u.to_owned()), "duplicate UUID {u}");
        assert!(ids.insert(string(p, "PayloadIdentifier").to_owned()));
        assert_eq!(int(p, "PayloadVersion"), 1);
    }
    // A second export gets new UUIDs.
    env.certs(&[
        "export",
        "alice",
        "--gateway",
        GATEWAY,
        "--format",
        "mobileconfig",
        "--password",
        "s3cret",
        "-o",
        "again.mobileconfig",
    ]);
    let again: Value =
        serde_json::from_slice(&env.ok(python(), &["plist2json.py", "again.mobileconfig"]))
            .unwrap();
    assert!(!uuids.contains(string(&again, "PayloadUUID")));

    // The VPN payload.
    assert_eq!(string(vpn, "VPNType"), "IKEv2");
    let ike = &vpn["IKEv2"];
    assert_eq!(string(ike, "RemoteAddress"), GATEWAY);
    assert_eq!(
        string(ike, "RemoteIdentifier"),
        GATEWAY,
        "the gateway's SAN"
    );
    assert_eq!(
        string(ike, "LocalIdentifier"),
        "alice",
        "the gateway matches an FQDN identity against the client's common name"
    );
    assert_eq!(string(ike, "AuthenticationMethod"), "Certificate");
    assert_eq!(string(ike, "CertificateType"), "ECDSA256");
    assert_eq!(
        string(ike, "PayloadCertificateUUID"),
        string(p12, "PayloadUUID")
    );
    assert_eq!(
        string(ike, "ServerCertificateIssuerCommonName"),
        "Gatehouse Root CA"
    );
    assert_eq!(int(ike, "ExtendedAuthEnabled"), 0);
    for sa in [
        "IKESecurityAssociationParameters",
        "ChildSecurityAssociationParameters",
    ] {
        let p = &ike[sa];
        assert_eq!(string(p, "EncryptionAlgorithm"), "AES-256-GCM", "{sa}");
        assert_eq!(string(p, "IntegrityAlgorithm"), "SHA2-256", "{sa}");
        assert_eq!(int(p, "DiffieHellmanGroup"), 19, "{sa}");
        assert_eq!(int(p, "LifeTimeInMinutes"), 1440, "{sa}");
    }
    assert_eq!(int(&vpn["IPv4"], "OverridePrimary"), 1);

    // The PKCS#12 opens with the password and holds alice's certificate and key; the
    // password itself is not in the profile.
    env.check_pkcs12(&data(&p12["PayloadContent"]), "s3cret");
    assert!(p12.get("Password").is_none());
    let text = fs::read_to_string(env.path("alice.mobileconfig")).unwrap();
    assert!(!text.contains("s3cret"));

    // The root is the CA.
    assert_eq!(data(&root["PayloadContent"]), env.ca_der());
}

#[test]
fn mobileconfig_without_a_password_is_refused() {
    let env = Env::new();
    let out = env.run(
        BIN,
        &[
            "--pki",
            "pki",
            "export",
            "alice",
            "--gateway",
            GATEWAY,
            "--format",
            "mobileconfig",
            "-o",
            "alice.mobileconfig",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password"), "{err}");
    assert!(!env.path("alice.mobileconfig").exists());
}

/// The lines of `$var = ( 'a', 'b' ) -join ''` joined.
fn script_base64(script: &str, var: &str) -> Vec<u8> {
    let start = format!("${var} = (");
    let mut lines = script.lines().skip_while(|l| *l != start).skip(1);
    let mut text = String::new();
    for line in lines.by_ref() {
        if line == ") -join ''" {
            return base64_decode(&text);
        }
        text.push_str(line.trim().trim_end_matches(',').trim_matches('\''));
    }
    panic!("no {var} in\n{script}");
}

/// The line calling `cmdlet`, as its parameters (`-Name` -> value, or "" for a switch).
fn cmdlet(script: &str, name: &str) -> Vec<(String, String)> {
    let calls: Vec<&str> = script
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{name} ")))
        .collect();
    assert_eq!(calls.len(), 1, "one {name} call in\n{script}");
    let words: Vec<&str> = calls[0].split_whitespace().skip(1).collect();
    let mut params = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if w == "|" {
            break;
        }
        assert!(w.starts_with('-'), "{name}: stray {w:?} in {}", calls[0]);
        match words.get(i + 1) {
            Some(v) if !v.starts_with('-') && *v != "|" => {
                params.push((w.to_owned(), (*v).to_owned()));
                i += 2;
            }
            _ => {
                params.push((w.to_owned(), String::new()));
                i += 1;
            }
        }
    }
    params
}

fn has(params: &[(String, String)], name: &str, value: &str) -> bool {
    params.iter().any(|(n, v)| n == name && v == value)
}

#[test]
fn windows_script_imports_certificates_and_adds_the_connection() {
    let env = Env::new();
    for password in ["s3cret", ""] {
        let mut args = vec![
            "export",
            "alice",
            "--gateway",
            GATEWAY,
            "--format",
            "windows",
            "-o",
            "alice.ps1",
        ];
        if !password.is_empty() {
            args.extend(["--password", password]);
        }
        env.certs(&args);
        let script = fs::read_to_string(env.path("alice.ps1")).unwrap();
        assert!(script.contains("#Requires -RunAsAdministrator"), "{script}");
        assert!(script.contains("$Gateway = 'vpn.example.com'"), "{script}");
        assert!(script.contains("$Name = 'Gatehouse vpn.example.com'"));

        let ca = cmdlet(&script, "Import-Certificate");
        assert!(
            has(&ca, "-CertStoreLocation", "Cert:\\LocalMachine\\Root"),
            "{ca:?}"
        );
        assert!(has(&ca, "-FilePath", "$CaFile"));
        let pfx = cmdlet(&script, "Import-PfxCertificate");
        assert!(
            has(&pfx, "-CertStoreLocation", "Cert:\\LocalMachine\\My"),
            "{pfx:?}"
        );
        assert!(has(&pfx, "-Password", "$Password"));
        assert!(has(&pfx, "-FilePath", "$PfxFile"));

        let add = cmdlet(&script, "Add-VpnConnection");
        for (n, v) in [
            ("-Name", "$Name"),
            ("-ServerAddress", "$Gateway"),
            ("-TunnelType", "Ikev2"),
            ("-AuthenticationMethod", "MachineCertificate"),
            ("-EncryptionLevel", "Required"),
            ("-AllUserConnection", ""),
        ] {
            assert!(has(&add, n, v), "Add-VpnConnection lacks {n} {v}: {add:?}");
        }
        let ipsec = cmdlet(&script, "Set-VpnConnectionIPsecConfiguration");
        for (n, v) in [
            ("-ConnectionName", "$Name"),
            ("-AuthenticationTransformConstants", "GCMAES256"),
            ("-CipherTransformConstants", "GCMAES256"),
            ("-EncryptionMethod", "AES256"),
            ("-IntegrityCheckMethod", "SHA384"),
            ("-DHGroup", "ECP384"),
            ("-PfsGroup", "None"),
            ("-AllUserConnection", ""),
        ] {
            assert!(
                has(&ipsec, n, v),
                "IPsec configuration lacks {n} {v}: {ipsec:?}"
            );
        }
        // Only known parameters (a typo would make the cmdlet fail on the device).
        for (n, _) in &ipsec {
            assert!(
                [
                    "-ConnectionName",
                    "-AuthenticationTransformConstants",
                    "-CipherTransformConstants",
                    "-EncryptionMethod",
                    "-IntegrityCheckMethod",
                    "-DHGroup",
                    "-PfsGroup",
                    "-AllUserConnection",
                    "-Force",
                ]
                .contains(&n.as_str()),
                "unknown parameter {n}"
            );
        }
        // The password is asked for, never written into the script.
        if password.is_empty() {
            assert!(script.contains("$Password = New-Object System.Security.SecureString"));
        } else {
            assert!(script.contains("$Password = Read-Host -AsSecureString"));
            assert!(!script.contains(password));
        }

        assert_eq!(script_base64(&script, "CaBase64"), env.ca_der());
        env.check_pkcs12(&script_base64(&script, "Pkcs12Base64"), password);
    }
}
