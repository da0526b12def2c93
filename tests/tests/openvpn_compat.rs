//! `gatehoused` accepts what a stock OpenVPN 2.6 server accepts with its defaults: the stock
//! 2.6 client limited to TLS 1.2, with each cipher of the stock default `data-ciphers` alone,
//! and with every compression setting (`comp-lzo`, `compress ...`) connects and pings the LAN
//! behind the gateway; the gateway's log names the TLS version and ciphers it negotiated.
//! With `openvpn.tls_version_min = "1.3"` a TLS-1.2-only client is refused and the log says
//! why. And the other way round: our client reaches a stock server limited to TLS 1.2 that
//! offers only AES-128-GCM.
//!
//! Several clients share one gateway (one namespace each, subnet indexes 100..=103) to keep
//! the file fast.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::client::{ClientHome, ClientService};
use gatehouse_tests::gatehoused::{
    CONNECTED, Gatehoused, LogEvent, REFUSED, spawn_stock_client, times_up, toml_str,
    wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openssl_pki::OpensslPki;
use gatehouse_tests::openvpn::{Proto, ServerConfig, UP_TIMEOUT, start_server};
use gatehouse_tests::{GatewaySetup, GatewayTopology, Proc, require_commands, require_root};

/// What the engine logs once TLS and key-method 2 are done (tls, tls_cipher, data_cipher,
/// keys, compress).
const CONTROL_UP: &str = "OpenVPN control channel up";
/// Debug line with the client's options string and peer-info.
const KEY_METHOD: &str = "key-method 2 from client";
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One test's world (namespaces, gateway data directory, scratch folder) and this
/// file's helpers on it.
struct Setup(GatewaySetup);

impl std::ops::Deref for Setup {
    type Target = GatewaySetup;

    fn deref(&self) -> &GatewaySetup {
        &self.0
    }
}

impl Setup {
    fn new(tag: &str, subnet_index: u8, n_clients: usize) -> Result<Setup> {
        let commands = &["ip", "openvpn", "ping"];
        GatewaySetup::new(tag, subnet_index, n_clients, commands).map(Setup)
    }

    /// Issues `name`, exports its stock profile for client `i` and starts the stock client
    /// with `extra` options (they come after the profile, so they override it; `{dir}` in
    /// them is the test's folder).
    fn stock_client(&self, i: usize, name: &str, extra: &[&str]) -> Result<Proc> {
        let dir = self.dir.path().display().to_string();
        let extra: Vec<String> = extra.iter().map(|a| a.replace("{dir}", &dir)).collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let gateway = self.topo.client(i).gateway_addr;
        let profile =
            self.gw_dir
                .client_profile(name, gateway, &self.path(&format!("{name}.ovpn")))?;
        let log = self.path(&format!("openvpn-{name}.log"));
        spawn_stock_client(
            &self.topo.client(i).ns,
            &profile,
            &format!("tun-{name}"),
            &extra,
            &log,
        )
    }
}

fn logs(gw: &Gatehoused, client: &Proc) -> String {
    format!(
        "gatehoused log:\n{}\nclient log {}:\n{}",
        gw.log_tail(30),
        client.log_path().display(),
        client.log_tail(30)
    )
}

fn event_for(gw: &Gatehoused, message: &str, client: &str) -> Option<LogEvent> {
    gw.events(message)
        .into_iter()
        .find(|e| e.field("client") == Some(client))
}

/// One stock client and what the gateway must log for it.
struct Case {
    name: &'static str,
    extra: &'static [&'static str],
    tls: &'static str,
    data_cipher: &'static str,
}

/// Starts every case's client at once (client `i` in namespace `i`), waits for each tunnel,
/// checks the gateway's log lines against the case, and pings the LAN host through each
/// tunnel, also with `big` bytes of zeros (what a compressor would shrink).
fn run_cases(s: &Setup, gw: &Gatehoused, cases: &[Case], big: Option<u16>) -> Result<()> {
    let clients: Vec<Proc> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| s.stock_client(i, c.name, c.extra))
        .collect::<Result<_>>()?;
    for (i, (case, client)) in cases.iter().zip(&clients).enumerate() {
        let what = format!("client {} ({})", case.name, case.extra.join(" "));
        wait_client_up(client, gw, 1, UP_TIMEOUT).with_context(|| what.clone())?;
        let connected = gw
            .wait_connected(case.name, EVENT_TIMEOUT)
            .with_context(|| format!("{what}\n{}", logs(gw, client)))?;
        let up = event_for(gw, CONTROL_UP, case.name)
            .with_context(|| format!("no `{CONTROL_UP}` for {what}\n{}", logs(gw, client)))?;
        eprintln!("{}\n{}", up.line, connected.line);
        if let Some(km) = event_for(gw, KEY_METHOD, case.name) {
            eprintln!("{}", km.line);
        }
        ensure!(
            up.field("tls") == Some(case.tls),
            "{what}: expected tls={}: {}",
            case.tls,
            up.line
        );
        ensure!(
            up.field("data_cipher") == Some(case.data_cipher)
                && connected.field("cipher") == Some(case.data_cipher),
            "{what}: expected data cipher {}: {}\n{}",
            case.data_cipher,
            up.line,
            connected.line
        );
        ensure!(
            connected.field("keys") == Some("tls-ekm"),
            "{what}: a 2.6 client gets tls-ekm keys over any TLS version, as from a stock server: {}",
            connected.line
        );
        let ns = &s.topo.client(i).ns;
        wait_ping(ns, s.topo.lan_host, Duration::from_secs(10))
            .with_context(|| format!("{what}: no ping through the tunnel\n{}", logs(gw, client)))?;
        if let Some(size) = big {
            let lan_host = s.topo.lan_host.to_string();
            let size = size.to_string();
            ns.exec_ok(
                "ping",
                [
                    "-c", "3", "-i", "0.2", "-W", "2", "-s", &size, "-p", "00", &lan_host,
                ],
            )
            .with_context(|| {
                format!(
                    "{what}: compressible {size}-byte pings did not get through\n{}",
                    logs(gw, client)
                )
            })?;
        }
    }
    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(30));
    Ok(())
}

#[test]
fn tls_1_2_client_and_each_stock_default_data_cipher() -> Result<()> {
    let s = Setup::new("oc1", 100, 9)?;
    std::fs::write(s.path("userpass.txt"), "alice\nsecret\n")?;
    let gw = s.start_gateway_debug("gatehoused.log")?;
    let cases = [
        Case {
            name: "tls12",
            extra: &["--tls-version-max", "1.2"],
            tls: "TLSv1.2",
            data_cipher: "AES-256-GCM",
        },
        Case {
            name: "aes256",
            extra: &["--data-ciphers", "AES-256-GCM"],
            tls: "TLSv1.3",
            data_cipher: "AES-256-GCM",
        },
        Case {
            name: "aes128",
            extra: &["--data-ciphers", "AES-128-GCM"],
            tls: "TLSv1.3",
            data_cipher: "AES-128-GCM",
        },
        Case {
            name: "chacha",
            extra: &[
                "--data-ciphers",
                "CHACHA20-POLY1305",
                "--tls-version-max",
                "1.2",
                "--tls-cipher",
                "ECDHE-ECDSA-CHACHA20-POLY1305",
            ],
            tls: "TLSv1.2",
            data_cipher: "CHACHA20-POLY1305",
        },
        // Profiles that pin TLS suites: each must be one the gateway has.
        Case {
            name: "aes128tls",
            extra: &[
                "--tls-version-max",
                "1.2",
                "--tls-cipher",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
            ],
            tls: "TLSv1.2",
            data_cipher: "AES-256-GCM",
        },
        Case {
            name: "tls13suite",
            extra: &["--tls-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
            tls: "TLSv1.3",
            data_cipher: "AES-256-GCM",
        },
        // A profile with auth-user-pass: a stock server without a verify script ignores the
        // username and password, and so does the gateway.
        Case {
            name: "userpass",
            extra: &["--auth-user-pass", "{dir}/userpass.txt"],
            tls: "TLSv1.3",
            data_cipher: "AES-256-GCM",
        },
        // Lines old profiles carry: a CBC `cipher` (ignored by 2.6 for negotiation), the
        // pre-2.5 name of data-ciphers, a non-default auth digest.
        Case {
            name: "oldprofile",
            extra: &[
                "--cipher",
                "AES-256-CBC",
                "--auth",
                "SHA256",
                "--ncp-ciphers",
                "AES-128-GCM:AES-256-GCM",
            ],
            tls: "TLSv1.3",
            data_cipher: "AES-256-GCM",
        },
        // A 2.6 client told to behave like 2.4.0 (compression and cipher defaults of 2.4).
        Case {
            name: "compat24",
            extra: &["--compat-mode", "2.4.0"],
            tls: "TLSv1.3",
            data_cipher: "AES-256-GCM",
        },
    ];
    run_cases(&s, &gw, &cases, None)?;
    for (name, suite) in [
        ("chacha", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
        ("aes128tls", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        ("tls13suite", "TLS13_CHACHA20_POLY1305_SHA256"),
    ] {
        let up = event_for(&gw, CONTROL_UP, name).context("control line")?;
        ensure!(
            up.field("tls_cipher") == Some(suite),
            "client {name} pinned {suite}: {}",
            up.line
        );
    }
    let tls12 = event_for(&gw, CONTROL_UP, "tls12").context("tls12 line")?;
    ensure!(
        tls12
            .field("tls_cipher")
            .is_some_and(|c| c.starts_with("TLS_ECDHE_") && c.contains("_GCM_")),
        "a TLS 1.2 OpenSSL 3 client should get an ECDHE + AES-GCM suite: {}",
        tls12.line
    );
    Ok(())
}

#[test]
fn every_compression_setting_connects_and_nothing_is_compressed() -> Result<()> {
    const ALL: &[&[&str]] = &[
        &["--comp-lzo"],
        &["--comp-lzo", "no"],
        &["--compress"],
        &["--compress", "stub-v2"],
        &["--compress", "lz4"],
        &["--compress", "lz4-v2"],
        &["--compress", "lzo"],
        // These two would really compress what they send: they must be told stub-v2 too.
        &["--compress", "lz4-v2", "--allow-compression", "yes"],
        &["--comp-lzo", "yes", "--allow-compression", "yes"],
    ];
    const NAMES: [&str; 9] = [
        "lzo", "lzono", "stub", "stubv2", "lz4", "lz4v2", "clzo", "lz4yes", "lzoyes",
    ];
    let s = Setup::new("oc2", 101, ALL.len())?;
    let gw = s.start_gateway_debug("gatehoused.log")?;
    let cases: Vec<Case> = NAMES
        .iter()
        .zip(ALL)
        .map(|(name, extra)| Case {
            name,
            extra,
            tls: "TLSv1.3",
            data_cipher: "AES-256-GCM",
        })
        .collect();
    run_cases(&s, &gw, &cases, Some(1200))?;
    for name in NAMES {
        let up = event_for(&gw, CONTROL_UP, name).context("control line")?;
        ensure!(
            up.field("compress") == Some("stub-v2"),
            "client {name} announced compression and must be pushed `compress stub-v2`: {}",
            up.line
        );
    }
    Ok(())
}

#[test]
fn tls_1_3_minimum_refuses_a_tls_1_2_only_client() -> Result<()> {
    let s = Setup::new("oc3", 102, 2)?;
    s.gw_dir.set("openvpn.tls_version_min", &toml_str("1.3"))?;
    let gw = s.start_gateway_debug("gatehoused.log")?;
    let old = s.stock_client(0, "old", &["--tls-version-max", "1.2"])?;
    let from = s.topo.client(0).addr;
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        if times_up(&old) > 0 || gw.events(CONNECTED).iter().any(|e| e.remote_is(from)) {
            bail!("a TLS-1.2-only client got connected\n{}", logs(&gw, &old));
        }
        if let Some(e) = gw.events(REFUSED).into_iter().find(|e| e.remote_is(from)) {
            break e;
        }
        if Instant::now() >= deadline {
            bail!(
                "gatehoused logged no `client refused` for the TLS 1.2 client\n{}",
                logs(&gw, &old)
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{}", refusal.line);
    let reason = refusal.field("reason").unwrap_or_default();
    ensure!(
        reason.contains("TLS 1.2") && reason.contains("tls_version_min = \"1.2\""),
        "the refusal should say the client is limited to TLS 1.2 and what to set: {}",
        refusal.line
    );
    // A client that can do TLS 1.3 still connects.
    let new = s.stock_client(1, "new", &[])?;
    wait_client_up(&new, &gw, 1, UP_TIMEOUT)?;
    let up = gw
        .wait_event(
            CONTROL_UP,
            |e| e.field("client") == Some("new"),
            EVENT_TIMEOUT,
        )
        .with_context(|| logs(&gw, &new))?;
    ensure!(up.field("tls") == Some("TLSv1.3"), "{}", up.line);
    wait_ping(
        &s.topo.client(1).ns,
        s.topo.lan_host,
        Duration::from_secs(10),
    )
    .with_context(|| logs(&gw, &new))?;
    ensure!(times_up(&old) == 0, "the TLS 1.2 client came up after all");
    Ok(())
}

#[test]
fn our_client_reaches_a_stock_server_limited_to_tls_1_2_with_aes_128_gcm() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping", "openvpn", "openssl"]);
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("oc4", 103, 1)?;
    let pki = OpensslPki::create(&dir.path().join("pki"), &[])?;
    let mut config = ServerConfig::new(Proto::Udp, 1194, pki.server.clone(), topo.vpn_pool);
    config.push_routes.push(topo.lan_net);
    config.data_ciphers = "AES-128-GCM".into();
    config.extra = vec!["tls-version-min 1.2".into(), "tls-version-max 1.2".into()];
    let server = start_server(&topo.gateway, dir.path(), &config)?;

    let read = |p: &std::path::Path| std::fs::read_to_string(p);
    let ovpn = dir.path().join("legacy.ovpn");
    std::fs::write(
        &ovpn,
        format!(
            "client\ndev tun\nproto udp\nremote {} 1194\nnobind\nremote-cert-tls server\n\
             verify-x509-name server name\ndata-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n\
             verb 3\n<ca>\n{}</ca>\n<cert>\n{}</cert>\n<key>\n{}</key>\n",
            topo.client(0).gateway_addr,
            read(&pki.client.ca)?,
            read(&pki.client.cert)?,
            read(&pki.client.key)?,
        ),
    )?;
    let home = ClientHome::new(&dir.path().join("client"), "nameserver 192.0.2.53\n")?;
    home.run_ok(None, &["import", &ovpn.display().to_string()])?;
    let ns = &topo.client(0).ns;
    let svc = ClientService::start(ns, &home, &dir.path().join("service.log"))?;
    let out = home
        .run(Some(ns), &["connect", "legacy"], Duration::from_secs(30))
        .with_context(|| {
            format!(
                "server:\n{}\nclient service:\n{}",
                server.log_tail(30),
                svc.log_tail(30)
            )
        })?;
    let ctx = || {
        format!(
            "{out}\nserver:\n{}\nclient service:\n{}",
            server.log_tail(30),
            svc.log_tail(30)
        )
    };
    ensure!(out.success(), "{}", ctx());
    wait_ping(ns, topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    let log = server.log_contents();
    let tls = log
        .lines()
        .find(|l| l.contains("Control Channel:"))
        .unwrap_or_default()
        .to_owned();
    ensure!(tls.contains("TLSv1.2"), "server log: {tls:?}\n{}", ctx());
    ensure!(
        log.contains(",cipher AES-128-GCM,"),
        "the stock server did not push AES-128-GCM\n{}",
        ctx()
    );
    eprintln!("{tls}");
    home.run_ok(Some(ns), &["disconnect"])?;
    Ok(())
}
