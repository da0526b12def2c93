//! Reading stock OpenVPN `.ovpn` client files.
//!
//! We take the common subset - `remote`, `proto`, `port`, `data-ciphers` / `cipher`,
//! `remote-cert-tls` and inline `<ca>`, `<cert>`, `<key>` - and account for everything else:
//! a directive is either harmless here and accepted quietly, or changes security or routing
//! in a way we do not implement and is named in a warning, or makes the file unusable and
//! is an error that says how to fix the file. Nothing is dropped without a word.

use crate::error::{ProfileError, Result};
use crate::profile::{Protocol, ProtocolKind, SUPPORTED_CIPHERS};

/// What an `.ovpn` file holds that a Gatehouse connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvpnProfile {
    /// The gateway: host of the first `remote`.
    pub gateway: String,
    /// One entry per distinct (proto, port) of the `remote` lines for that host, in order.
    pub protocols: Vec<Protocol>,
    /// Data ciphers to offer (supported ones only, upper case, in the file's order).
    pub ciphers: Vec<String>,
    /// `<ca>` PEM.
    pub ca_pem: String,
    /// `<cert>` PEM.
    pub cert_pem: String,
    /// `<key>` PEM (unencrypted PKCS#8, SEC1 or PKCS#1).
    pub key_pem: String,
    /// One line per thing in the file that Gatehouse does not do, for the user to read.
    pub warnings: Vec<String>,
}

const DEFAULT_PORT: u16 = 1194;

/// Directives that do nothing that matters for a Gatehouse connection (or that we always do
/// anyway), accepted without a word.
const QUIET: &[&str] = &[
    "client",
    "nobind",
    "persist-key",
    "persist-tun",
    "verb",
    "mute",
    "resolv-retry",
    "mute-replay-warnings",
    "tls-client",
    "pull",
    "auth-nocache",
    "key-direction",
    "explicit-exit-notify",
    "connect-retry",
    "connect-retry-max",
    "connect-timeout",
    "server-poll-timeout",
    "hand-window",
    "suppress-timestamps",
    // Gatehouse always speaks TLS 1.3, which satisfies any minimum.
    "tls-version-min",
    // The HMAC digest of non-AEAD ciphers and tls-auth; we use neither.
    "auth",
    "setenv",
    "ignore-unknown-option",
];

/// Directives that change security or routing in a way Gatehouse does not implement, with
/// what that means for the user.
const WARN: &[(&str, &str)] = &[
    (
        "tls-auth",
        "control-channel key (tls-auth) is not supported: a gateway that requires it will not answer",
    ),
    (
        "tls-crypt",
        "control-channel key (tls-crypt) is not supported: a gateway that requires it will not answer",
    ),
    (
        "tls-crypt-v2",
        "control-channel key (tls-crypt-v2) is not supported: a gateway that requires it will not answer",
    ),
    (
        "auth-user-pass",
        "auth-user-pass is ignored: Gatehouse logs in with the certificate only, never with a user name and password",
    ),
    (
        "comp-lzo",
        "comp-lzo is ignored: compression is not supported (it leaks data, VORACLE); the gateway must not require it",
    ),
    (
        "compress",
        "compress is ignored: compression is not supported (it leaks data, VORACLE); the gateway must not require it",
    ),
    (
        "route-nopull",
        "route-nopull is ignored: Gatehouse always applies the routes and DNS servers the gateway pushes",
    ),
    (
        "redirect-gateway",
        "redirect-gateway is ignored: whether all traffic goes through the VPN is decided by the routes the gateway pushes",
    ),
    (
        "route",
        "route is ignored: local routes are not added, only the routes the gateway pushes",
    ),
    (
        "route-ipv6",
        "route-ipv6 is ignored: local routes are not added, only the routes the gateway pushes",
    ),
    (
        "dhcp-option",
        "dhcp-option is ignored: only the DNS settings the gateway pushes are applied",
    ),
    (
        "pull-filter",
        "pull-filter is ignored: every option the gateway pushes is applied",
    ),
    (
        "block-outside-dns",
        "block-outside-dns is ignored: DNS queries outside the tunnel are not blocked",
    ),
    (
        "verify-x509-name",
        "verify-x509-name is ignored: the gateway certificate is checked against the <ca> and the host name in `remote`",
    ),
    (
        "remote-cert-eku",
        "remote-cert-eku is ignored: the gateway certificate must carry serverAuth, nothing else is checked",
    ),
    (
        "remote-cert-ku",
        "remote-cert-ku is ignored: key usage of the gateway certificate is not checked as configured",
    ),
    (
        "ns-cert-type",
        "ns-cert-type is ignored: the gateway certificate must carry serverAuth instead",
    ),
    (
        "crl-verify",
        "crl-verify is ignored: the client does not check a CRL (the gateway enforces revocation)",
    ),
    (
        "tls-cipher",
        "tls-cipher is ignored: Gatehouse uses TLS 1.3 with its own cipher suites",
    ),
    (
        "tls-ciphersuites",
        "tls-ciphersuites is ignored: Gatehouse uses TLS 1.3 with its own cipher suites",
    ),
    (
        "tls-groups",
        "tls-groups is ignored: Gatehouse picks the TLS key exchange groups itself",
    ),
    (
        "http-proxy",
        "http-proxy is ignored: proxies are not supported, Gatehouse connects to the gateway directly",
    ),
    (
        "socks-proxy",
        "socks-proxy is ignored: proxies are not supported, Gatehouse connects to the gateway directly",
    ),
    (
        "script-security",
        "script-security is ignored: Gatehouse never runs scripts",
    ),
    ("up", "up script is ignored: Gatehouse never runs scripts"),
    (
        "down",
        "down script is ignored: Gatehouse never runs scripts",
    ),
    (
        "route-up",
        "route-up script is ignored: Gatehouse never runs scripts",
    ),
    (
        "route-pre-down",
        "route-pre-down script is ignored: Gatehouse never runs scripts",
    ),
    (
        "ipchange",
        "ipchange script is ignored: Gatehouse never runs scripts",
    ),
    (
        "tls-verify",
        "tls-verify script is ignored: Gatehouse never runs scripts",
    ),
];

/// Directives naming where the key or certificates are instead of carrying them.
const KEY_ELSEWHERE: &[&str] = &["pkcs12", "cryptoapicert", "pkcs11-providers", "pkcs11-id"];

/// Parses an `.ovpn` file's text. `source_name` (a file name) is only used in messages.
pub fn parse(text: &str, source_name: &str) -> Result<OvpnProfile> {
    let err = |line: Option<usize>, reason: String| ProfileError::InvalidOvpn {
        source_name: source_name.to_string(),
        line,
        reason,
    };

    let mut remotes: Vec<(usize, String, Option<u16>, Option<ProtocolKind>)> = Vec::new();
    let mut default_proto = ProtocolKind::OpenvpnUdp;
    let mut default_port = DEFAULT_PORT;
    let mut data_ciphers: Option<Vec<String>> = None;
    let mut fallback_cipher: Option<String> = None;
    let (mut ca, mut cert, mut key) = (None, None, None);
    let mut warnings: Vec<String> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();

    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    while let Some((line_no, line)) = lines.next() {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // Inline block: <tag> ... </tag>.
        if let Some(tag) = line.strip_prefix('<').and_then(|l| l.strip_suffix('>')) {
            if tag.starts_with('/') {
                return Err(err(
                    Some(line_no),
                    format!("{line} closes a block that was never opened"),
                ));
            }
            let tag = tag.to_ascii_lowercase();
            let close = format!("</{tag}>");
            let mut body = String::new();
            let mut closed = false;
            for (_, l) in lines.by_ref() {
                if l.eq_ignore_ascii_case(&close) {
                    closed = true;
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            if !closed {
                return Err(err(
                    Some(line_no),
                    format!("<{tag}> is never closed; add {close} after its content"),
                ));
            }
            match tag.as_str() {
                "ca" => ca = Some((line_no, body)),
                "cert" => cert = Some((line_no, body)),
                "key" => key = Some((line_no, body)),
                "tls-auth" | "tls-crypt" | "tls-crypt-v2" | "auth-user-pass" => {
                    if let Some((_, w)) = WARN.iter().find(|(n, _)| *n == tag) {
                        push_once((*w).to_string(), &mut warnings);
                    }
                }
                "connection" => push_once(
                    "<connection> blocks are ignored: only the top-level `remote` lines are used"
                        .to_string(),
                    &mut warnings,
                ),
                other => ignored.push(format!("<{other}>")),
            }
            continue;
        }

        let mut words = line
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\''));
        let Some(first) = words.next() else { continue };
        let name = first.trim_start_matches("--").to_ascii_lowercase();
        let args: Vec<&str> = words.collect();
        let arg = |i: usize| args.get(i).copied();

        match name.as_str() {
            "remote" => {
                let Some(host) = arg(0) else {
                    return Err(err(
                        Some(line_no),
                        "`remote` needs a host: `remote HOST [PORT] [udp|tcp]`".into(),
                    ));
                };
                let port = arg(1).map(|p| parse_port(p, line_no, &err)).transpose()?;
                let proto = arg(2).map(|p| parse_proto(p, line_no, &err)).transpose()?;
                remotes.push((line_no, host.to_string(), port, proto));
            }
            "proto" => {
                let p = arg(0).unwrap_or_default();
                default_proto = parse_proto(p, line_no, &err)?;
            }
            "port" | "rport" => {
                let p = arg(0).unwrap_or_default();
                default_port = parse_port(p, line_no, &err)?;
            }
            "dev" | "dev-type" => {
                let dev = arg(0).unwrap_or_default().to_ascii_lowercase();
                if !dev.starts_with("tun") {
                    return Err(err(
                        Some(line_no),
                        format!(
                            "`{line}`: Gatehouse carries IP packets (dev tun), not Ethernet frames (dev tap); ask the gateway's administrator for a tun profile"
                        ),
                    ));
                }
            }
            "data-ciphers" | "ncp-ciphers" => {
                let list = arg(0).unwrap_or_default();
                data_ciphers = Some(
                    list.split(':')
                        .filter(|c| !c.is_empty())
                        .map(|c| c.to_ascii_uppercase())
                        .collect(),
                );
            }
            "cipher" | "data-ciphers-fallback" => {
                fallback_cipher = arg(0).map(|c| c.to_ascii_uppercase());
            }
            "remote-cert-tls" => {
                if !arg(0).is_some_and(|a| a.eq_ignore_ascii_case("server")) {
                    push_once(
                        format!(
                            "`{line}` is ignored: the gateway certificate must carry serverAuth (remote-cert-tls server)"
                        ),
                        &mut warnings,
                    );
                }
            }
            "ca" | "cert" | "key" => {
                let file = arg(0).unwrap_or_default();
                if !file.eq_ignore_ascii_case("[inline]") {
                    return Err(err(
                        Some(line_no),
                        format!(
                            "`{name} {file}` refers to a separate file; Gatehouse needs it inline: replace the line with <{name}>, the PEM text of {file}, and </{name}> - or import a Gatehouse profile (`gatehouse-certs export --format gatehouse`)"
                        ),
                    ));
                }
            }
            "secret" => {
                return Err(err(
                    Some(line_no),
                    "static-key mode (`secret`) is not supported; Gatehouse needs a client certificate - ask for a profile with <ca>, <cert> and <key>".into(),
                ));
            }
            n if KEY_ELSEWHERE.contains(&n) => {
                return Err(err(
                    Some(line_no),
                    format!(
                        "`{n}` keeps the certificate or key outside this file; Gatehouse needs them inline: put the PEM texts between <cert></cert> and <key></key> - or import a Gatehouse profile (`gatehouse-certs export --format gatehouse`)"
                    ),
                ));
            }
            n if QUIET.contains(&n) => {}
            n => match WARN.iter().find(|(w, _)| *w == n) {
                Some((_, w)) => push_once((*w).to_string(), &mut warnings),
                None => {
                    if !ignored.iter().any(|i| *i == n) {
                        ignored.push(n.to_string());
                    }
                }
            },
        }
    }

    if !ignored.is_empty() {
        warnings.push(format!(
            "these directives are not supported and are ignored: {}",
            ignored.join(", ")
        ));
    }

    let Some((_, gateway, _, _)) = remotes.first().cloned() else {
        return Err(err(
            None,
            "no `remote HOST [PORT]` line naming the gateway; add one".into(),
        ));
    };
    let mut protocols: Vec<Protocol> = Vec::new();
    for (line_no, host, port, proto) in &remotes {
        if !host.eq_ignore_ascii_case(&gateway) {
            warnings.push(format!(
                "line {line_no}: remote {host} is ignored: a profile has one gateway, {gateway}"
            ));
            continue;
        }
        let p = Protocol {
            kind: proto.unwrap_or(default_proto),
            port: port.unwrap_or(default_port),
        };
        if !protocols.contains(&p) {
            protocols.push(p);
        }
    }

    let ciphers = pick_ciphers(data_ciphers, fallback_cipher, &mut warnings)
        .map_err(|reason| err(None, reason))?;

    let block = |b: Option<(usize, String)>, tag: &str| {
        b.ok_or_else(|| {
            err(
                None,
                format!(
                    "no inline <{tag}> block; paste the PEM text between <{tag}> and </{tag}> - or import a Gatehouse profile (`gatehouse-certs export --format gatehouse`)"
                ),
            )
        })
    };
    let (ca_line, ca_pem) = block(ca, "ca")?;
    let (cert_line, cert_pem) = block(cert, "cert")?;
    let (key_line, key_pem) = block(key, "key")?;
    check_certificates(&ca_pem, "ca").map_err(|r| err(Some(ca_line), r))?;
    check_certificates(&cert_pem, "cert").map_err(|r| err(Some(cert_line), r))?;
    check_key(&key_pem).map_err(|r| err(Some(key_line), r))?;

    Ok(OvpnProfile {
        gateway,
        protocols,
        ciphers,
        ca_pem,
        cert_pem,
        key_pem,
        warnings,
    })
}

/// Adds `w` unless it is there already (a directive repeated is one warning).
fn push_once(w: String, warnings: &mut Vec<String>) {
    if !warnings.contains(&w) {
        warnings.push(w);
    }
}

fn parse_port(
    text: &str,
    line_no: usize,
    err: &impl Fn(Option<usize>, String) -> ProfileError,
) -> Result<u16> {
    match text.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(err(
            Some(line_no),
            format!("{text:?} is not a port number (1-65535)"),
        )),
    }
}

fn parse_proto(
    text: &str,
    line_no: usize,
    err: &impl Fn(Option<usize>, String) -> ProfileError,
) -> Result<ProtocolKind> {
    match text.to_ascii_lowercase().as_str() {
        "udp" | "udp4" | "udp6" => Ok(ProtocolKind::OpenvpnUdp),
        "tcp" | "tcp4" | "tcp6" | "tcp-client" | "tcp4-client" | "tcp6-client" => {
            Ok(ProtocolKind::OpenvpnTcp)
        }
        _ => Err(err(
            Some(line_no),
            format!("protocol {text:?} is not one a client can use; use udp or tcp"),
        )),
    }
}

/// Works out the ciphers to offer like OpenVPN 2.6 does: `data-ciphers` if given (else its
/// default list), plus `cipher` / `data-ciphers-fallback` - limited to what we implement.
fn pick_ciphers(
    data_ciphers: Option<Vec<String>>,
    fallback: Option<String>,
    warnings: &mut Vec<String>,
) -> std::result::Result<Vec<String>, String> {
    let supported = |c: &str| SUPPORTED_CIPHERS.contains(&c);
    let given = data_ciphers.is_some();
    let wanted = data_ciphers.unwrap_or_else(|| SUPPORTED_CIPHERS.map(String::from).to_vec());
    let (mut ciphers, unsupported): (Vec<String>, Vec<String>) =
        wanted.into_iter().partition(|c| supported(c));
    if !unsupported.is_empty() {
        warnings.push(format!(
            "data cipher(s) {} are not supported and are not offered (Gatehouse supports {})",
            unsupported.join(", "),
            SUPPORTED_CIPHERS.join(", ")
        ));
    }
    if let Some(fallback) = fallback {
        if supported(&fallback) {
            if !ciphers.contains(&fallback) {
                ciphers.push(fallback);
            }
        } else if fallback != "NONE" || !given {
            warnings.push(format!(
                "cipher {fallback} is not supported; Gatehouse offers {} instead, which the gateway must accept",
                if ciphers.is_empty() {
                    SUPPORTED_CIPHERS.join(", ")
                } else {
                    ciphers.join(", ")
                }
            ));
        }
    }
    if ciphers.is_empty() {
        return Err(format!(
            "none of the data ciphers in this file is supported; Gatehouse offers {} - if the gateway accepts one, add `data-ciphers {}`",
            SUPPORTED_CIPHERS.join(", "),
            SUPPORTED_CIPHERS.join(":")
        ));
    }
    Ok(ciphers)
}

/// `text` must be one or more PEM certificates.
pub(crate) fn check_certificates(text: &str, tag: &str) -> std::result::Result<(), String> {
    match pem::parse_many(text) {
        Ok(all) if !all.is_empty() && all.iter().all(|p| p.tag() == "CERTIFICATE") => Ok(()),
        _ => Err(format!(
            "<{tag}> does not hold PEM certificates (-----BEGIN CERTIFICATE-----)"
        )),
    }
}

/// `text` must be one unencrypted PEM private key.
pub(crate) fn check_key(text: &str) -> std::result::Result<(), String> {
    let encrypted = || {
        "the <key> is protected by a passphrase, which Gatehouse cannot ask for; decrypt it with `openssl pkey -in KEY.pem -out PLAIN.pem`, paste PLAIN.pem into <key> and import again"
            .to_string()
    };
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(encrypted());
    }
    match pem::parse(text) {
        Ok(p)
            if matches!(
                p.tag(),
                "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY"
            ) =>
        {
            Ok(())
        }
        Ok(p) if p.tag() == "ENCRYPTED PRIVATE KEY" => Err(encrypted()),
        _ => Err("<key> does not hold a PEM private key (-----BEGIN PRIVATE KEY-----)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----";

    fn with_blocks(directives: &str) -> String {
        format!(
            "{directives}\n<ca>\n{CERT}\n</ca>\n<cert>\n{CERT}\n</cert>\n<key>\n{KEY}\n</key>\n"
        )
    }

    fn parse_ok(directives: &str) -> OvpnProfile {
        parse(&with_blocks(directives), "test.ovpn").unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, "test.ovpn").unwrap_err().to_string()
    }

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
                kind: ProtocolKind::OpenvpnUdp,
                port: 1194
            }]
        );
        assert_eq!(p.ciphers, ["AES-256-GCM", "CHACHA20-POLY1305"]);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.ca_pem, format!("{CERT}\n"));
        assert_eq!(p.key_pem, format!("{KEY}\n"));
    }

    #[test]
    fn remotes_protos_and_ports_become_protocols() {
        let p = parse_ok(
            "proto tcp\nport 443\nremote gw.example 1194 udp\nremote gw.example\nremote GW.example 443 tcp-client\nremote other.example 1194",
        );
        assert_eq!(p.gateway, "gw.example");
        assert_eq!(
            p.protocols,
            [
                Protocol {
                    kind: ProtocolKind::OpenvpnUdp,
                    port: 1194
                },
                Protocol {
                    kind: ProtocolKind::OpenvpnTcp,
                    port: 443
                },
            ]
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("other.example") && w.contains("line 6")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn security_and_routing_directives_are_warned_about_by_name() {
        let p = parse_ok(
            "client\nremote gw 1194\ntls-auth ta.key 1\ntls-crypt tc.key\nauth-user-pass\ncomp-lzo\nroute-nopull\nredirect-gateway def1\nup /etc/openvpn/up.sh\ndown /etc/openvpn/down.sh\nscript-security 2\nmute-replay-warnings\nresolv-retry infinite\nfragment 1300\nmssfix 1200\nfragment 1300",
        );
        for name in [
            "tls-auth",
            "tls-crypt",
            "auth-user-pass",
            "comp-lzo",
            "route-nopull",
            "redirect-gateway",
            "up script",
            "down script",
            "script-security",
        ] {
            assert!(
                p.warnings.iter().any(|w| w.starts_with(name)
                    || w.starts_with(&format!("control-channel key ({name})"))),
                "no warning for {name}: {:#?}",
                p.warnings
            );
        }
        let other = p.warnings.last().unwrap();
        assert_eq!(
            other,
            "these directives are not supported and are ignored: fragment, mssfix"
        );
        // Harmless ones are quiet.
        assert!(!p.warnings.iter().any(|w| w.contains("resolv-retry")));
    }

    #[test]
    fn inline_tls_auth_block_is_warned_about() {
        let text = with_blocks(
            "remote gw\n<tls-auth>\n-----BEGIN OpenVPN Static key V1-----\nab\n-----END OpenVPN Static key V1-----\n</tls-auth>",
        );
        let p = parse(&text, "x.ovpn").unwrap();
        assert!(
            p.warnings.iter().any(|w| w.contains("tls-auth")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn ciphers_follow_openvpn_2_6_rules() {
        let p = parse_ok("remote gw\ncipher AES-256-CBC");
        assert_eq!(p.ciphers, SUPPORTED_CIPHERS);
        assert!(p.warnings[0].contains("AES-256-CBC"), "{:?}", p.warnings);

        let p =
            parse_ok("remote gw\ndata-ciphers chacha20-poly1305:AES-128-GCM\ncipher AES-256-GCM");
        assert_eq!(p.ciphers, ["CHACHA20-POLY1305", "AES-256-GCM"]);
        assert!(p.warnings[0].contains("AES-128-GCM"), "{:?}", p.warnings);

        let err = parse(
            &with_blocks("remote gw\ndata-ciphers AES-128-CBC:BF-CBC"),
            "x.ovpn",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("data-ciphers AES-256-GCM:CHACHA20-POLY1305"),
            "{err}"
        );
    }

    #[test]
    fn unusable_files_are_errors_that_say_what_to_do() {
        let err = parse_err(&with_blocks("remote gw\ndev tap"));
        assert!(
            err.contains("test.ovpn:2:") && err.contains("dev tun"),
            "{err}"
        );

        let err = parse_err("remote gw\nca ca.crt\ncert alice.crt\nkey alice.key\n");
        assert!(
            err.contains("test.ovpn:2:") && err.contains("<ca>") && err.contains("ca.crt"),
            "{err}"
        );

        let err = parse_err(&format!("remote gw\n<ca>\n{CERT}\n</ca>\n"));
        assert!(err.contains("no inline <cert> block"), "{err}");

        let err = parse_err(&with_blocks("client"));
        assert!(err.contains("remote HOST"), "{err}");

        let err = parse_err("remote gw\n<ca>\nnever closed\n");
        assert!(err.contains("</ca>"), "{err}");

        let err = parse_err(&with_blocks("remote gw 99999"));
        assert!(err.contains("port"), "{err}");

        let err = parse_err(&with_blocks("remote gw\npkcs12 alice.p12"));
        assert!(err.contains("inline"), "{err}");

        let encrypted = format!(
            "remote gw\n<ca>\n{CERT}\n</ca>\n<cert>\n{CERT}\n</cert>\n<key>\n-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAEC\n-----END ENCRYPTED PRIVATE KEY-----\n</key>\n"
        );
        let err = parse_err(&encrypted);
        assert!(
            err.contains("passphrase") && err.contains("test.ovpn:12:"),
            "{err}"
        );

        let not_pem = "remote gw\n<ca>\nhello\n</ca>\n<cert>\nx\n</cert>\n<key>\ny\n</key>\n";
        let err = parse_err(not_pem);
        assert!(err.contains("<ca> does not hold PEM"), "{err}");
    }

    #[test]
    fn crlf_and_bom_are_fine() {
        let text = format!(
            "\u{feff}{}",
            with_blocks("remote gw 443 tcp").replace('\n', "\r\n")
        );
        let p = parse(&text, "win.ovpn").unwrap();
        assert_eq!(p.protocols[0].kind, ProtocolKind::OpenvpnTcp);
        assert!(!p.key_pem.contains('\r'));
    }
}
