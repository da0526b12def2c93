//! What Gatehouse does with each OpenVPN client directive it does not act on itself.
//!
//! Every directive a stock OpenVPN 2.6 client understands has one of three fates here: it
//! changes nothing for a Gatehouse connection (quiet), it is accepted with a note saying
//! what Gatehouse does instead, or it asks for something Gatehouse cannot do and the import
//! is refused with the reason. A directive in none of these lists (and not handled by the
//! parser) is unknown, which stock OpenVPN refuses as well - unless the file lists it in
//! `ignore-unknown-option` or writes it after `setenv opt`.

/// What to do with a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Nothing changes for a Gatehouse connection.
    Quiet,
    /// Accepted; the note tells the user what Gatehouse does instead.
    Note(&'static str),
    /// Refused at import: the reason, and what to do.
    Refuse(&'static str),
}

/// Directives that change nothing for a Gatehouse connection: they tune what Gatehouse does
/// by itself anyway, only matter for a server, logging or daemon use, or only take effect on
/// Windows (where Gatehouse's own DNS handling applies).
const QUIET: &[&str] = &[
    "client",
    "tls-client",
    "pull",
    "nobind",
    "persist-key",
    "persist-tun",
    "persist-remote-ip",
    "persist-local-ip",
    "resolv-retry",
    "verb",
    "mute",
    "mute-replay-warnings",
    "suppress-timestamps",
    "auth-nocache",
    "explicit-exit-notify",
    "connect-retry",
    "connect-retry-max",
    "connect-timeout",
    "server-poll-timeout",
    "hand-window",
    "tls-timeout",
    "reneg-sec",
    "tran-window",
    "float",
    "tcp-nodelay",
    "sndbuf",
    "rcvbuf",
    "fast-io",
    "txqueuelen",
    "mtu-disc",
    "disable-dco",
    "key-method",
    "topology",
    "remote-random-hostname",
    "allow-pull-fqdn",
    "push-peer-info",
    "tun-ipv6",
    "user",
    "group",
    "daemon",
    "log",
    "log-append",
    "status",
    "status-version",
    "writepid",
    "syslog",
    "machine-readable-output",
    "setenv-safe",
    // Only used by scripts, which are refused anyway.
    "script-security",
    // Gatehouse offers the three TLS 1.3 suites and the ECDHE AES-GCM / ChaCha20 TLS 1.2
    // suites with X25519, P-256 and P-384: the server's restrictions pick among them.
    "tls-cipher",
    "tls-ciphersuites",
    "tls-groups",
    "ecdh-curve",
    "tls-cert-profile",
    // Windows-only (stock OpenVPN on Linux and macOS ignores them too).
    "block-outside-dns",
    "register-dns",
    "ip-win32",
    "route-method",
    "dhcp-renew",
    "dhcp-release",
    "tap-sleep",
    "win-sys",
    "windows-driver",
    "show-net-up",
    "allow-nonadmin",
    // Ask the server to keep a stable address; the gateway decides.
    "route-delay",
    "route-metric",
    // The server's pushed ping settings are what Gatehouse uses.
    "keepalive",
    "ping",
    "ping-restart",
    "ping-timer-rem",
    // Only for a user name and password, which are refused on their own.
    "auth-retry",
];

/// Accepted, with what Gatehouse does instead.
const NOTE: &[(&str, &str)] = &[
    (
        "tun-mtu",
        "tun-mtu is not applied: Gatehouse uses the MTU the gateway pushes (1500 unless it says otherwise)",
    ),
    (
        "mssfix",
        "mssfix is not applied: Gatehouse does not clamp TCP MSS itself",
    ),
    (
        "dhcp-option",
        "dhcp-option in the profile is not applied (stock OpenVPN on Linux ignores it too): Gatehouse applies the DNS servers the gateway pushes",
    ),
    (
        "lport",
        "lport is not applied: Gatehouse connects from a random local port (like nobind)",
    ),
    (
        "bind",
        "bind is not applied: Gatehouse connects from a random local port (like nobind)",
    ),
    (
        "local",
        "local is not applied: Gatehouse connects from the address the host's routes pick",
    ),
    (
        "inactive",
        "inactive is not applied: Gatehouse stays connected until you disconnect",
    ),
    (
        "ping-exit",
        "ping-exit is not applied: Gatehouse reconnects after the gateway's ping-restart instead of exiting",
    ),
];

/// Refused: Gatehouse cannot do what the directive asks, and pretending would mislead.
const REFUSE: &[(&str, &str)] = &[
    (
        "auth-user-pass",
        "the server asks for a user name and password, which Gatehouse does not send (it logs in with the certificate only); ask the administrator for a certificate-only profile",
    ),
    (
        "static-challenge",
        "the server asks for a one-time password, which Gatehouse does not send; ask the administrator for a certificate-only profile",
    ),
    (
        "auth-token",
        "the server uses session tokens with a user name and password, which Gatehouse does not send",
    ),
    ("up", "Gatehouse never runs scripts; remove the line"),
    ("down", "Gatehouse never runs scripts; remove the line"),
    ("route-up", "Gatehouse never runs scripts; remove the line"),
    (
        "route-pre-down",
        "Gatehouse never runs scripts; remove the line",
    ),
    ("ipchange", "Gatehouse never runs scripts; remove the line"),
    (
        "tls-verify",
        "Gatehouse never runs scripts; remove the line",
    ),
    (
        "learn-address",
        "Gatehouse never runs scripts; remove the line",
    ),
    (
        "plugin",
        "Gatehouse does not load OpenVPN plugins; remove the line",
    ),
    (
        "management",
        "Gatehouse has no OpenVPN management interface; remove the line",
    ),
    (
        "management-query-passwords",
        "Gatehouse has no OpenVPN management interface; remove the line",
    ),
    (
        "management-hold",
        "Gatehouse has no OpenVPN management interface; remove the line",
    ),
    (
        "management-external-key",
        "Gatehouse has no OpenVPN management interface; remove the line",
    ),
    (
        "management-external-cert",
        "Gatehouse has no OpenVPN management interface; remove the line",
    ),
    (
        "http-proxy",
        "Gatehouse does not connect through proxies; it needs a direct path to the server",
    ),
    (
        "http-proxy-option",
        "Gatehouse does not connect through proxies; it needs a direct path to the server",
    ),
    (
        "socks-proxy",
        "Gatehouse does not connect through proxies; it needs a direct path to the server",
    ),
    (
        "pkcs11-providers",
        "the key is on a smart card or token (PKCS#11), which Gatehouse cannot use; put the certificate and key inline (<cert>, <key>)",
    ),
    (
        "pkcs11-id",
        "the key is on a smart card or token (PKCS#11), which Gatehouse cannot use; put the certificate and key inline (<cert>, <key>)",
    ),
    (
        "pkcs12",
        "PKCS#12 bundles are not read from .ovpn files; put the certificate and key inline (<cert>, <key>) - `openssl pkcs12 -in FILE.p12 -nodes` prints them",
    ),
    (
        "cryptoapicert",
        "the key is in the Windows certificate store, which Gatehouse cannot use; put the certificate and key inline (<cert>, <key>)",
    ),
    (
        "askpass",
        "the private key is protected by a passphrase, which Gatehouse cannot ask for; decrypt it with `openssl pkey -in KEY.pem -out PLAIN.pem` and put PLAIN.pem in <key>",
    ),
    (
        "secret",
        "static-key mode has no certificates and is removed from OpenVPN 2.7; Gatehouse needs a client certificate - ask for a profile with <ca>, <cert> and <key>",
    ),
    (
        "verify-hash",
        "Gatehouse does not pin CA certificates by hash; the <ca> block is what it checks against",
    ),
    (
        "crl-verify",
        "Gatehouse does not check a CRL for the server's certificate; remove the line (the server enforces revocation of clients)",
    ),
    (
        "ns-cert-type",
        "Netscape certificate types are not checked; use `remote-cert-tls server` instead",
    ),
    (
        "remote-cert-ku",
        "key usage values of the server certificate are not checked as configured; use `remote-cert-tls server` instead",
    ),
    (
        "route-nopull",
        "Gatehouse always applies the routes the server pushes; remove the line",
    ),
    (
        "pull-filter",
        "Gatehouse applies every route and DNS server the server pushes and cannot filter them; remove the line",
    ),
    (
        "route",
        "routes in the profile are not added: Gatehouse routes what the server pushes; ask the administrator to push the route",
    ),
    (
        "route-ipv6",
        "IPv6 routes are not supported: Gatehouse tunnels IPv4; remove the line",
    ),
    (
        "ifconfig",
        "a fixed tunnel address is not supported: the server must assign one (server mode)",
    ),
    (
        "ifconfig-ipv6",
        "IPv6 inside the tunnel is not supported; remove the line",
    ),
    (
        "fragment",
        "Gatehouse does not fragment tunnel packets (both ends must agree on it); remove it here and on the server",
    ),
    (
        "link-mtu",
        "a fixed link MTU is not supported; remove the line",
    ),
    (
        "redirect-private",
        "redirect-private is not supported; use `redirect-gateway def1` or the routes the server pushes",
    ),
    (
        "tls-server",
        "this is a server configuration, not a client profile",
    ),
    (
        "server",
        "this is a server configuration, not a client profile",
    ),
    (
        "mode",
        "this is a server configuration, not a client profile",
    ),
    (
        "providers",
        "OpenSSL providers are not used by Gatehouse; remove the line",
    ),
    (
        "engine",
        "OpenSSL engines are not used by Gatehouse; remove the line",
    ),
    (
        "x509-track",
        "Gatehouse never runs scripts, so there is nothing to export certificate fields to",
    ),
    (
        "tls-export-cert",
        "Gatehouse never runs scripts, so there is nothing to export the certificate to",
    ),
    ("chroot", "Gatehouse does not chroot; remove the line"),
    (
        "replay-window",
        "a custom replay window is not supported; remove the line",
    ),
    (
        "no-replay",
        "turning replay protection off is not supported; remove the line",
    ),
    ("mark", "socket marks are not supported; remove the line"),
    (
        "dev-node",
        "a fixed TUN device node is not supported; remove the line",
    ),
];

/// The fate of directive `name` (lower case, no leading `--`), or `None` if it is unknown.
pub(super) fn fate(name: &str) -> Option<Fate> {
    if QUIET.contains(&name) {
        return Some(Fate::Quiet);
    }
    if let Some((_, note)) = NOTE.iter().find(|(n, _)| *n == name) {
        return Some(Fate::Note(note));
    }
    REFUSE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| Fate::Refuse(why))
}

/// Directives OpenVPN allows inside a `<connection>` block (man page, CONNECTION PROFILES).
pub(super) const CONNECTION_OPTIONS: &[&str] = &[
    "bind",
    "connect-retry",
    "connect-retry-max",
    "connect-timeout",
    "explicit-exit-notify",
    "float",
    "fragment",
    "http-proxy",
    "http-proxy-option",
    "key-direction",
    "link-mtu",
    "local",
    "lport",
    "mssfix",
    "mtu-disc",
    "nobind",
    "port",
    "proto",
    "remote",
    "rport",
    "socks-proxy",
    "tls-auth",
    "tls-crypt",
    "tls-crypt-v2",
    "tun-mtu",
    "tun-mtu-extra",
];
