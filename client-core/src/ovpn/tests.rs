//! The parser against small texts, and against one fixture per install script or appliance
//! (`tests/fixtures/ovpn/`, made by `make-fixtures.sh` with throwaway keys).

use std::path::Path;

use super::*;
use crate::profile::SUPPORTED_CIPHERS;

const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----";

fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ovpn"))
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(name)).unwrap()
}

/// The static key in the fixtures (tls-auth / tls-crypt).
fn static_key() -> String {
    std::fs::read_to_string(fixture_dir().join("beside/ta.key")).unwrap()
}

fn with_blocks(directives: &str) -> String {
    format!("{directives}\n<ca>\n{CERT}\n</ca>\n<cert>\n{CERT}\n</cert>\n<key>\n{KEY}\n</key>\n")
}

fn parse_ok(directives: &str) -> OvpnProfile {
    parse(&with_blocks(directives), "test.ovpn").unwrap()
}

fn parse_err(text: &str) -> String {
    parse(text, "test.ovpn").unwrap_err().to_string()
}

fn remote(host: &str, port: u16, kind: ProtocolKind) -> Remote {
    Remote {
        host: host.into(),
        port,
        kind,
    }
}

const UDP: ProtocolKind = ProtocolKind::OpenvpnUdp;
const TCP: ProtocolKind = ProtocolKind::OpenvpnTcp;

#[test]
fn stock_export_imports_without_warnings() {
    // What `gatehouse-certs export --format ovpn` writes.
    let p = parse_ok(
        "# comment\nclient\ndev tun\nproto udp\nremote vpn.example.com 1194\nnobind\npersist-key\npersist-tun\nremote-cert-tls server\ndata-ciphers AES-256-GCM:CHACHA20-POLY1305\nverb 3",
    );
    assert_eq!(p.gateway, "vpn.example.com");
    assert_eq!(
        p.protocols,
        [Protocol {
            kind: UDP,
            port: 1194
        }]
    );
    assert_eq!(p.remotes, [remote("vpn.example.com", 1194, UDP)]);
    assert_eq!(p.ciphers, ["AES-256-GCM", "CHACHA20-POLY1305"]);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.ca_pem, format!("{CERT}\n"));
    assert_eq!(p.key_pem, format!("{KEY}\n"));
    assert_eq!(p.control_wrap, None);
}

#[test]
fn every_remote_is_kept_in_order_with_its_proto_and_port() {
    let p = parse_ok(
        "proto tcp\nport 443\nremote gw.example 1194 udp\nremote gw.example\nremote other.example 1195",
    );
    assert_eq!(p.gateway, "gw.example");
    assert_eq!(
        p.remotes,
        [
            remote("gw.example", 1194, UDP),
            remote("gw.example", 443, TCP),
            remote("other.example", 1195, TCP),
        ]
    );
    assert_eq!(
        p.protocols,
        [
            Protocol {
                kind: UDP,
                port: 1194
            },
            Protocol {
                kind: TCP,
                port: 443
            }
        ]
    );
    assert!(!p.remote_random);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn connection_blocks_take_the_defaults_before_them() {
    let p = parse_ok(
        "proto tcp\nremote-random\n<connection>\nremote a.example 1194 udp\n</connection>\nport 8443\n<connection>\nremote b.example\nnobind\n</connection>\n<connection>\nproto udp\nport 53\nremote c.example\n</connection>",
    );
    assert_eq!(
        p.remotes,
        [
            remote("a.example", 1194, UDP),
            remote("b.example", 8443, TCP),
            remote("c.example", 53, UDP),
        ]
    );
    assert!(p.remote_random);

    let err = parse_err(&with_blocks(
        "<connection>\nremote a\nverb 3\n</connection>",
    ));
    assert!(
        err.contains("`verb` is not allowed inside <connection>"),
        "{err}"
    );
    let err = parse_err(&with_blocks(
        "<connection>\nremote a\nhttp-proxy p 8080\n</connection>",
    ));
    assert!(
        err.contains("`http-proxy p 8080`") && err.contains("proxies"),
        "{err}"
    );
    let err = parse_err(&with_blocks("<connection>\nnobind\n</connection>"));
    assert!(err.contains("no `remote`"), "{err}");
}

#[test]
fn what_cannot_be_honoured_is_refused_by_name() {
    for (line, words) in [
        ("auth-user-pass", "user name and password"),
        ("up /etc/openvpn/up.sh", "scripts"),
        ("down /etc/openvpn/down.sh", "scripts"),
        ("route-nopull", "routes the server pushes"),
        ("route 10.0.0.0 255.0.0.0", "routes"),
        ("http-proxy proxy.example 3128", "proxies"),
        ("socks-proxy 127.0.0.1 1080", "proxies"),
        ("pkcs11-id 'x'", "PKCS#11"),
        ("pkcs12 alice.p12", "inline"),
        ("fragment 1300", "fragment"),
        ("tls-version-max 1.1", "TLS 1.2 and 1.3 only"),
        ("compress lz4", "compress stub-v2"),
        ("redirect-gateway def1 ipv6", "IPv6"),
        ("dev tap", "dev tap"),
        ("remote-cert-tls client", "remote-cert-tls server"),
        ("frobnicate 1", "unknown directive `frobnicate`"),
    ] {
        let err = parse_err(&with_blocks(&format!("remote gw\n{line}")));
        let name = line.split_whitespace().next().unwrap();
        assert!(
            err.starts_with("test.ovpn:") && err.contains(name) && err.contains(words),
            "{line}: {err}"
        );
    }
    let err = parse_err(&with_blocks(
        "remote gw\n<auth-user-pass>\nalice\nsecret\n</auth-user-pass>",
    ));
    assert!(
        err.contains("<auth-user-pass>") && err.contains("password"),
        "{err}"
    );
}

#[test]
fn ignore_unknown_option_and_setenv_opt_skip_with_a_word() {
    let p = parse_ok(
        "remote gw\nignore-unknown-option block-outside-dns frobnicate up\nfrobnicate 1\nsetenv opt wibble yes # a comment\nup /bin/true\nsetenv opt block-outside-dns\nblock-outside-dns\nsetenv CLIENT_CERT 0",
    );
    let all = p.warnings.join("\n");
    assert!(
        all.contains(
            "`up /bin/true` is skipped because the file lists it in ignore-unknown-option"
        ),
        "{all}"
    );
    assert!(
        all.contains("skipped, as the file allows: frobnicate, wibble"),
        "{all}"
    );
    assert!(!all.contains("block-outside-dns"), "{all}");

    // FORWARD_COMPATIBLE excuses unknown directives, but not known ones we cannot honour.
    let p = parse_ok("setenv FORWARD_COMPATIBLE 1\nremote gw\nnew-in-2-8 x");
    assert!(
        p.warnings.iter().any(|w| w.contains("new-in-2-8")),
        "{:?}",
        p.warnings
    );
    let err = parse_err(&with_blocks(
        "setenv FORWARD_COMPATIBLE 1\nremote gw\nauth-user-pass",
    ));
    assert!(err.contains("auth-user-pass"), "{err}");
}

#[test]
fn tls_auth_takes_direction_and_digest() {
    let key = static_key();
    let inline = |dirs: &str| {
        parse(
            &with_blocks(&format!("remote gw\n{dirs}\n<tls-auth>\n{key}</tls-auth>")),
            "t.ovpn",
        )
    };
    let p = inline("key-direction 1\nauth SHA256").unwrap();
    let wrap = p.control_wrap.unwrap();
    assert_eq!(wrap.kind, WrapKind::TlsAuth);
    assert_eq!(wrap.direction, Some(1));
    assert_eq!(wrap.digest.as_deref(), Some("SHA256"));
    let wrap_key = p.wrap_key_pem.unwrap();
    assert!(wrap_key.contains("-----BEGIN OpenVPN Static key V1-----"));

    // No key-direction: both directions use one key (OpenVPN's default); no auth: SHA1.
    let wrap = inline("").unwrap().control_wrap.unwrap();
    assert_eq!((wrap.direction, wrap.digest), (None, None));

    let err = inline("auth MD5").unwrap_err().to_string();
    assert!(err.contains("auth MD5") && err.contains("SHA256"), "{err}");
    let err = inline("key-direction 2").unwrap_err().to_string();
    assert!(err.contains("not 0 or 1"), "{err}");

    // `auth` without tls-auth only concerns non-AEAD data ciphers: not a problem.
    assert!(parse_ok("remote gw\nauth MD5").control_wrap.is_none());

    let broken = parse(
        &with_blocks("remote gw\n<tls-auth>\n-----BEGIN OpenVPN Static key V1-----\nabcd\n-----END OpenVPN Static key V1-----\n</tls-auth>"),
        "t.ovpn",
    )
    .unwrap_err()
    .to_string();
    assert!(
        broken.contains("tls-auth key") && broken.contains("bytes"),
        "{broken}"
    );
    let err = parse(
        &with_blocks(&format!(
            "remote gw\n<tls-auth>\n{key}</tls-auth>\n<tls-crypt>\n{key}</tls-crypt>"
        )),
        "t.ovpn",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot be used together"), "{err}");
}

#[test]
fn keys_in_files_are_read_from_beside_the_ovpn_file() {
    let dir = fixture_dir().join("beside");
    let text = std::fs::read_to_string(dir.join("office.ovpn")).unwrap();
    let p = parse_in(&text, "office.ovpn", Some(&dir)).unwrap();
    let wrap = p.control_wrap.clone().unwrap();
    assert_eq!(wrap.kind, WrapKind::TlsAuth);
    assert_eq!(wrap.direction, Some(1));
    assert_eq!(wrap.digest.as_deref(), Some("SHA512"));
    assert!(p.ca_pem.contains("BEGIN CERTIFICATE"));
    assert!(p.key_pem.contains("PRIVATE KEY"));
    assert!(p.redirect_gateway);
    assert_eq!(
        p.remotes,
        [
            remote("203.0.113.5", 1194, UDP),
            remote("203.0.113.6", 1194, UDP)
        ]
    );
    assert!(
        p.warnings.iter().any(|w| w.starts_with("comp-lzo")),
        "{:?}",
        p.warnings
    );

    // Without the folder (a dropped text) the files cannot be read: say so.
    let err = parse(&text, "office.ovpn").unwrap_err().to_string();
    assert!(
        err.contains("`ca ca.crt`") && err.contains("inline"),
        "{err}"
    );
    let err = parse_in(&text, "office.ovpn", Some(Path::new("/nonexistent")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read /nonexistent/ca.crt"), "{err}");
}

#[test]
fn peer_fingerprint_can_replace_the_ca() {
    let fp = "AB:".repeat(31) + "CD";
    let text = format!(
        "remote gw\npeer-fingerprint {fp}\n<peer-fingerprint>\n# server 2\n{}\n</peer-fingerprint>\n<cert>\n{CERT}\n</cert>\n<key>\n{KEY}\n</key>\n",
        "01".repeat(32)
    );
    let p = parse(&text, "fp.ovpn").unwrap();
    assert_eq!(
        p.peer_fingerprints,
        ["ab".repeat(31) + "cd", "01".repeat(32)]
    );
    assert_eq!(p.ca_pem, "");
    let err = parse_err(&with_blocks("remote gw\npeer-fingerprint AB:CD"));
    assert!(err.contains("SHA-256 fingerprint"), "{err}");
}

#[test]
fn tls_versions_narrow_what_is_offered() {
    let p = parse_ok("remote gw\ntls-version-min 1.2");
    assert_eq!((p.tls_version_min, p.tls_version_max), (None, None));
    let p = parse_ok("remote gw\ntls-version-min 1.3");
    assert_eq!(p.tls_version_min.as_deref(), Some("1.3"));
    let p = parse_ok("remote gw\ntls-version-min 1.0 or-highest\ntls-version-max 1.2");
    assert_eq!(
        (p.tls_version_min, p.tls_version_max.as_deref()),
        (None, Some("1.2"))
    );
    let err = parse_err(&with_blocks("remote gw\ntls-version-min 1.4"));
    assert!(err.contains("not a TLS version"), "{err}");
}

#[test]
fn verify_x509_name_types() {
    let check = |line: &str| {
        parse_ok(&format!("remote gw\n{line}"))
            .verify_x509_name
            .unwrap()
    };
    assert_eq!(
        check("verify-x509-name server_abc name"),
        X509NameCheck {
            kind: X509NameKind::Name,
            value: "server_abc".into()
        }
    );
    assert_eq!(
        check("verify-x509-name 'C=NL, CN=vpn'").kind,
        X509NameKind::Subject
    );
    assert_eq!(
        check("verify-x509-name srv- name-prefix").kind,
        X509NameKind::NamePrefix
    );
    let err = parse_err(&with_blocks("remote gw\nverify-x509-name x cn"));
    assert!(err.contains("name-prefix"), "{err}");
}

#[test]
fn compression_settings_a_2_6_server_can_work_with() {
    for ok in [
        "compress stub-v2",
        "allow-compression no",
        "comp-lzo",
        "comp-lzo no",
        "compress lz4-v2",
    ] {
        parse_ok(&format!("remote gw\n{ok}"));
    }
    for refused in [
        "compress",
        "compress stub",
        "compress lzo",
        "compress lz4",
        "compress migrate",
    ] {
        let err = parse_err(&with_blocks(&format!("remote gw\n{refused}")));
        assert!(
            err.contains(refused) && err.contains("byte in front"),
            "{err}"
        );
    }
}

#[test]
fn ciphers_follow_openvpn_2_6_rules() {
    let p = parse_ok("remote gw\ncipher AES-256-CBC");
    assert!(
        p.ciphers.contains(&"AES-256-GCM".to_string()),
        "{:?}",
        p.ciphers
    );
    assert!(p.warnings[0].contains("AES-256-CBC"), "{:?}", p.warnings);

    let p = parse_ok("remote gw\ndata-ciphers chacha20-poly1305:?BF-CBC\ncipher AES-256-GCM");
    assert_eq!(p.ciphers, ["CHACHA20-POLY1305", "AES-256-GCM"]);
    assert!(p.warnings[0].contains("BF-CBC"), "{:?}", p.warnings);

    let err = parse_err(&with_blocks("remote gw\ndata-ciphers AES-128-CBC:BF-CBC"));
    assert!(err.contains("data-ciphers AES-256-GCM"), "{err}");
}

#[test]
fn unusable_files_are_errors_that_say_what_to_do() {
    let err = parse_err(&with_blocks("remote gw\ndev tap"));
    assert!(
        err.contains("test.ovpn:2:") && err.contains("dev tun"),
        "{err}"
    );
    let err = parse_err(&format!("remote gw\n<ca>\n{CERT}\n</ca>\n"));
    assert!(err.contains("no <cert> block"), "{err}");
    let err = parse_err(&with_blocks("client"));
    assert!(err.contains("remote HOST"), "{err}");
    let err = parse_err("remote gw\n<ca>\nnever closed\n");
    assert!(err.contains("</ca>"), "{err}");
    let err = parse_err(&with_blocks("remote gw 99999"));
    assert!(err.contains("port"), "{err}");
    let encrypted = format!(
        "remote gw\n<ca>\n{CERT}\n</ca>\n<cert>\n{CERT}\n</cert>\n<key>\n-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAEC\n-----END ENCRYPTED PRIVATE KEY-----\n</key>\n"
    );
    let err = parse_err(&encrypted);
    assert!(
        err.contains("passphrase") && err.contains("test.ovpn:12:"),
        "{err}"
    );
    let err = parse_err("remote gw\n<ca>\nhello\n</ca>\n<cert>\nx\n</cert>\n<key>\ny\n</key>\n");
    assert!(err.contains("<ca> does not hold PEM"), "{err}");
}

#[test]
fn crlf_and_bom_are_fine() {
    let text = format!(
        "\u{feff}{}",
        with_blocks("remote gw 443 tcp").replace('\n', "\r\n")
    );
    let p = parse(&text, "win.ovpn").unwrap();
    assert_eq!(p.protocols[0].kind, TCP);
    assert!(!p.key_pem.contains('\r'));
}

#[test]
fn quoting_and_comments_follow_openvpn() {
    assert_eq!(
        words(r#"verify-x509-name "a b\"c" name # x"#),
        ["verify-x509-name", "a b\"c", "name"]
    );
    assert_eq!(
        words("setenv opt block-outside-dns ; why"),
        ["setenv", "opt", "block-outside-dns"]
    );
    assert_eq!(
        words("remote 'my host' 1194"),
        ["remote", "my host", "1194"]
    );
}

// One fixture per script or appliance.

#[test]
fn angristan_openvpn_install() {
    for (file, kind) in [
        ("angristan-tls-crypt-v2.ovpn", WrapKind::TlsCryptV2),
        ("angristan-tls-crypt.ovpn", WrapKind::TlsCrypt),
        ("angristan-tls-auth.ovpn", WrapKind::TlsAuth),
    ] {
        let p = parse(&fixture(file), file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(p.remotes, [remote("192.0.2.10", 1194, UDP)], "{file}");
        assert_eq!(p.ciphers, ["AES-256-GCM"], "{file}");
        let wrap = p.control_wrap.unwrap();
        assert_eq!(wrap.kind, kind, "{file}");
        if kind == WrapKind::TlsAuth {
            assert_eq!(wrap.direction, Some(1));
            assert_eq!(wrap.digest.as_deref(), Some("SHA256"));
        }
        assert_eq!(
            p.verify_x509_name,
            Some(X509NameCheck {
                kind: X509NameKind::Name,
                value: "server_Qx7Zk2PdT9wLmA4c".into()
            })
        );
        assert!(p.warnings.is_empty(), "{file}: {:?}", p.warnings);
    }
    // The script's default data cipher is AES-128-GCM: imported if the engine has it, else
    // refused naming it.
    let file = "angristan-default.ovpn";
    match parse(&fixture(file), file) {
        Ok(p) => {
            assert!(
                SUPPORTED_CIPHERS.len() >= 2 && Cipher::from_openvpn_name("AES-128-GCM").is_some()
            );
            assert_eq!(p.ciphers, ["AES-128-GCM"]);
        }
        Err(e) => {
            assert!(Cipher::from_openvpn_name("AES-128-GCM").is_none());
            let e = e.to_string();
            assert!(
                e.contains("none of the data ciphers") && e.contains("data-ciphers"),
                "{e}"
            );
        }
    }
}

#[test]
fn angristan_fingerprint_mode() {
    let p = parse(&fixture("angristan-fingerprint.ovpn"), "fp.ovpn").unwrap();
    assert_eq!(p.ca_pem, "");
    assert_eq!(p.peer_fingerprints.len(), 1);
    assert_eq!(p.peer_fingerprints[0].len(), 64);
    assert_eq!(p.control_wrap.unwrap().kind, WrapKind::TlsCryptV2);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn nyr_openvpn_install() {
    let p = parse(&fixture("nyr.ovpn"), "nyr.ovpn").unwrap();
    assert_eq!(p.remotes, [remote("192.0.2.20", 1194, UDP)]);
    assert_eq!(p.control_wrap.unwrap().kind, WrapKind::TlsCrypt);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn pivpn() {
    let p = parse(&fixture("pivpn-tls-auth.ovpn"), "pivpn.ovpn").unwrap();
    assert_eq!(p.remotes, [remote("vpn.example.org", 1194, UDP)]);
    let wrap = p.control_wrap.unwrap();
    assert_eq!((wrap.kind, wrap.direction), (WrapKind::TlsAuth, Some(1)));
    assert_eq!(wrap.digest.as_deref(), Some("SHA256"));
    // `cipher AES-256-CBC` is only a fallback for servers older than 2.4.
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("AES-256-CBC"));

    let p = parse(&fixture("pivpn-tls-crypt-v2.ovpn"), "pivpn.ovpn").unwrap();
    assert_eq!(p.control_wrap.unwrap().kind, WrapKind::TlsCryptV2);
}

#[test]
fn pfsense_client_export() {
    let p = parse(&fixture("pfsense.ovpn"), "pfsense.ovpn").unwrap();
    assert_eq!(
        p.remotes,
        [
            remote("198.51.100.1", 1194, UDP),
            remote("198.51.100.2", 443, TCP)
        ]
    );
    assert!(p.remote_random);
    let wrap = p.control_wrap.unwrap();
    assert_eq!((wrap.kind, wrap.direction), (WrapKind::TlsAuth, Some(1)));
    assert!(p.verify_x509_name.is_some());
}

#[test]
fn openvpn_access_server() {
    let p = parse(&fixture("access-server-autologin.ovpn"), "as.ovpn").unwrap();
    assert_eq!(
        p.remotes,
        [
            remote("vpn.example.com", 1194, UDP),
            remote("vpn.example.com", 1194, UDP),
            remote("vpn.example.com", 443, TCP),
            remote("vpn.example.com", 1194, UDP),
        ]
    );
    assert_eq!(p.control_wrap.unwrap().kind, WrapKind::TlsCryptV2);
    assert!(
        p.warnings.iter().any(|w| w.starts_with("tun-mtu")),
        "{:?}",
        p.warnings
    );

    let err = parse(&fixture("access-server-userlocked.ovpn"), "as.ovpn")
        .unwrap_err()
        .to_string();
    assert!(err.contains("as.ovpn:20: `auth-user-pass`"), "{err}");
}
