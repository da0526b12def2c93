//! Gatehouse's client against the OpenVPN servers people already run: a stock `openvpn` 2.6
//! server set up the way install scripts set it up (tls-auth with key-direction, tls-crypt,
//! tls-crypt-v2; keys from `openvpn --genkey`; a server certificate that names no address), a
//! `.ovpn` written the way those scripts write it, imported with `gatehouse import` and
//! connected through the client service. And full tunnel (`redirect-gateway def1`) through
//! gatehoused and through a stock server: everything goes through the tunnel while connected,
//! and afterwards the client namespace's routes, rules and DNS are byte-identical to before.
//!
//! Tag prefix `fi`, subnet indexes 130..=139. The client edits only a scratch resolv.conf in
//! the test's folder (`GATEHOUSE_RESOLV_CONF`, set by the harness).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::client::{ClientHome, ClientService, DEFAULT_TUN, Watched, link_exists};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, export_ovpn, toml_str};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openssl_pki::OpensslPki;
use gatehouse_tests::openvpn::{
    Proto, ServerConfig, UP, UP_TIMEOUT, genkey_secret, genkey_tls_crypt_v2_client,
    genkey_tls_crypt_v2_server, spawn_openvpn, start_server,
};
use gatehouse_tests::proc::Proc;
use gatehouse_tests::{GatewayTopology, Netns, require_commands, require_root};
use tempfile::TempDir;

const RESOLV_BEFORE: &str = "# scratch resolv.conf of a gatehouse end-to-end test\n\
                             nameserver 192.0.2.53\n\
                             search example.invalid\n";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);
const NAME: &str = "office";

/// One test's namespaces, folder, throwaway PKI (made with openssl, CN=server, no SAN) and
/// client home.
struct World {
    topo: GatewayTopology,
    pki: OpensslPki,
    client: ClientHome,
    dir: TempDir,
}

impl World {
    fn new(tag: &str, subnet_index: u8) -> Result<World> {
        require_root();
        require_commands(&["ip", "ping", "kill", "openvpn", "openssl"]);
        let dir = tempfile::tempdir()?;
        let topo = GatewayTopology::new(tag, subnet_index, 1)?;
        // Like easy-rsa's server certificates in the install scripts: its name is not the
        // address the client dials, so only an OpenVPN-style check accepts it.
        let pki = OpensslPki::create(&dir.path().join("pki"), &[])?;
        let client = ClientHome::new(&dir.path().join("client"), RESOLV_BEFORE)?;
        Ok(World {
            topo,
            pki,
            client,
            dir,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ns(&self) -> &Netns {
        &self.topo.client(0).ns
    }

    fn gateway_addr(&self) -> Ipv4Addr {
        self.topo.client(0).gateway_addr
    }

    fn dns(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.topo.subnet_index, 53)
    }

    /// A stock server on UDP 1194 in the gateway namespace, pushing the LAN (or, `full`,
    /// `redirect-gateway def1`) and a DNS server, with `extra` lines.
    fn stock_server(&self, extra: &[String], full: bool) -> Result<Proc> {
        self.stock_server_on(Proto::Udp, 1194, extra, full)
    }

    fn stock_server_on(
        &self,
        proto: Proto,
        port: u16,
        extra: &[String],
        full: bool,
    ) -> Result<Proc> {
        let mut config =
            ServerConfig::new(proto, port, self.pki.server.clone(), self.topo.vpn_pool);
        if full {
            config
                .extra
                .push("push \"redirect-gateway def1 bypass-dhcp\"".into());
        } else {
            config.push_routes.push(self.topo.lan_net);
        }
        config
            .extra
            .push(format!("push \"dhcp-option DNS {}\"", self.dns()));
        config.extra.extend_from_slice(extra);
        start_server(&self.topo.gateway, self.dir.path(), &config)
    }

    /// Writes `NAME.ovpn`: `directives`, then the inline certificates and key as the scripts
    /// append them, then `tail` (a key block).
    fn write_ovpn(&self, directives: &str, tail: &str) -> Result<PathBuf> {
        self.write_ovpn_as(NAME, directives, tail)
    }

    /// Like [`World::write_ovpn`], as `name.ovpn` (imported as profile `name`).
    fn write_ovpn_as(&self, name: &str, directives: &str, tail: &str) -> Result<PathBuf> {
        let read = |p: &Path| fs::read_to_string(p).with_context(|| format!("{}", p.display()));
        let text = format!(
            "{directives}\n<ca>\n{}</ca>\n<cert>\n{}</cert>\n<key>\n{}</key>\n{tail}",
            read(&self.pki.client.ca)?,
            read(&self.pki.client.cert)?,
            read(&self.pki.client.key)?,
        );
        let path = self.path(&format!("{name}.ovpn"));
        fs::write(&path, text)?;
        Ok(path)
    }

    fn import(&self, ovpn: &Path) -> Result<String> {
        let out = self
            .client
            .run_ok(None, &["import", &ovpn.display().to_string()])?;
        eprintln!("{out}");
        Ok(out.stdout)
    }

    fn service(&self, log: &str) -> Result<ClientService> {
        ClientService::start(self.ns(), &self.client, &self.path(log))
    }

    /// `gatehouse connect NAME`; fails with the logs unless it connects.
    fn connect(&self, svc: &ClientService, server_log: impl Fn() -> String) -> Result<()> {
        let out = self
            .client
            .run(Some(self.ns()), &["connect", NAME], CONNECT_TIMEOUT)?;
        eprintln!("{out}");
        ensure!(
            out.success(),
            "{out}\nserver:\n{}\nclient service:\n{}",
            server_log(),
            svc.log_tail(40)
        );
        let st = self.client.status(self.ns())?;
        ensure!(st.state() == "connected", "{}", st.json);
        Ok(())
    }

    /// What must be exactly as before after a full-tunnel connection: routes (all tables),
    /// rules, DNS.
    fn host_state(&self) -> Result<String> {
        let ns = self.ns();
        // A new veth's IPv6 link-local address gets its local route only once duplicate
        // address detection is done (~2 s); that is the kernel, not the client.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ns
            .exec_ok("ip", ["-6", "addr", "show", "tentative"])?
            .trim()
            .is_empty()
        {
            ensure!(
                Instant::now() < deadline,
                "IPv6 addresses stay tentative in {}",
                ns.name()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut s = String::new();
        for args in [
            &["-4", "route", "show", "table", "all"][..],
            &["-6", "route", "show", "table", "all"][..],
            &["-4", "rule", "show"][..],
            &["-6", "rule", "show"][..],
        ] {
            s.push_str(&format!(
                "$ ip {}\n{}",
                args.join(" "),
                ns.exec_ok("ip", args)?
            ));
        }
        s.push_str(&format!(
            "$ cat resolv.conf\n{}",
            String::from_utf8_lossy(&self.client.resolv_conf_bytes()?)
        ));
        Ok(s)
    }

    /// Gives the client namespace a default route via the gateway's underlay address, like a
    /// host's router: what full tunnel must override and then give back.
    fn add_default_route(&self) -> Result<()> {
        let gw = self.gateway_addr().to_string();
        self.ns()
            .exec_ok("ip", ["-4", "route", "add", "default", "via", &gw])?;
        Ok(())
    }

    /// While connected with full tunnel: the LAN host is reached through the TUN device (the
    /// tunnel's counters grow with a ping), the gateway itself still over the underlay, and
    /// the DNS server pushed is in place.
    fn check_full_tunnel(&self, ctx: impl Fn() -> String) -> Result<()> {
        let ns = self.ns();
        let lan = self.topo.lan_host.to_string();
        let via_lan = ns.exec_ok("ip", ["-4", "route", "get", &lan])?;
        ensure!(
            via_lan.contains(&format!("dev {DEFAULT_TUN}")),
            "{lan} is not routed into the tunnel: {via_lan}\n{}",
            ns.exec_ok("ip", ["-4", "route"])?
        );
        let gw = self.gateway_addr().to_string();
        let via_gw = ns.exec_ok("ip", ["-4", "route", "get", &gw])?;
        ensure!(
            via_gw.contains("dev up0"),
            "the gateway {gw} is no longer reached over the underlay: {via_gw}"
        );
        let routes = ns.exec_ok("ip", ["-4", "route"])?;
        for net in ["0.0.0.0/1", "128.0.0.0/1"] {
            ensure!(
                routes.contains(&format!("{net} dev {DEFAULT_TUN}")),
                "no {net} into the tunnel:\n{routes}"
            );
        }
        // The kernel's count of packets routed into the TUN device (which the client reads
        // and sends encrypted to the server).
        let tun_tx = || -> Result<u64> {
            let path = format!("/sys/class/net/{DEFAULT_TUN}/statistics/tx_packets");
            let text = ns.exec_ok("cat", [path.as_str()])?;
            text.trim()
                .parse()
                .with_context(|| format!("{path}: {text:?}"))
        };
        let before = tun_tx()?;
        wait_ping(ns, self.topo.lan_host, Duration::from_secs(10)).with_context(&ctx)?;
        let after = tun_tx()?;
        ensure!(
            after > before,
            "the ping to {lan} did not go into the tunnel ({DEFAULT_TUN} tx_packets {before} -> {after})"
        );
        let resolv = String::from_utf8_lossy(&self.client.resolv_conf_bytes()?).into_owned();
        ensure!(
            resolv.contains(&format!("nameserver {}", self.dns())),
            "the pushed DNS server is not in place:\n{resolv}"
        );
        Ok(())
    }

    fn check_restored(&self, before: &str, when: &str) -> Result<()> {
        ensure!(
            !link_exists(self.ns(), DEFAULT_TUN)?,
            "{DEFAULT_TUN} still exists {when}"
        );
        let after = self.host_state()?;
        ensure!(
            after == before,
            "the client namespace is not as before {when}:\n--- before\n{before}--- after\n{after}"
        );
        Ok(())
    }
}

fn read(p: &Path) -> Result<String> {
    fs::read_to_string(p).with_context(|| p.display().to_string())
}

/// Connects through the service to `server`, pings the LAN host, disconnects, and checks the
/// routes and DNS are back.
fn connect_and_ping(w: &World, server: &Proc) -> Result<()> {
    let svc = w.service("service.log")?;
    let before = w.host_state()?;
    w.connect(&svc, || server.log_tail(30))?;
    wait_ping(w.ns(), w.topo.lan_host, Duration::from_secs(10))
        .with_context(|| format!("{}\n{}", server.log_tail(30), svc.log_tail(30)))?;
    w.client.run_ok(Some(w.ns()), &["disconnect"])?;
    w.check_restored(&before, "after disconnect")
}

#[test]
fn stock_server_with_tls_auth_and_key_direction() -> Result<()> {
    let started = Instant::now();
    let w = World::new("fia", 130)?;
    let ta = w.path("ta.key");
    genkey_secret(&ta)?;
    let server = w.stock_server(
        &[format!("tls-auth {} 0", ta.display()), "auth SHA256".into()],
        false,
    )?;
    // PiVPN's Default.txt + makeOVPN.sh.
    let ovpn = w.write_ovpn(
        &format!(
            "client\ndev tun\nproto udp\nremote {} 1194\nresolv-retry infinite\nnobind\nkey-direction 1\nremote-cert-tls server\ntls-version-min 1.2\nverify-x509-name server name\ncipher AES-256-CBC\nauth SHA256\nauth-nocache\nverb 3",
            w.gateway_addr()
        ),
        &format!("<tls-auth>\n{}</tls-auth>\n", read(&ta)?),
    )?;
    let printed = w.import(&ovpn)?;
    ensure!(
        printed.contains("tls-auth, key-direction 1, auth SHA256"),
        "{printed}"
    );
    connect_and_ping(&w, &server)?;

    // The same server under a name the profile does not expect: an error that says why (not
    // a retry loop: retrying cannot change the server's certificate).
    let text = read(&ovpn)?.replace(
        "verify-x509-name server name",
        "verify-x509-name server_other name",
    );
    let wrong = w.path("wrongname.ovpn");
    fs::write(&wrong, text)?;
    w.import(&wrong)?;
    let svc = w.service("service-2.log")?;
    let _connect = Watched::spawn(
        w.client.command(Some(w.ns()), ["connect", "wrongname"]),
        &w.path("connect-wrongname.log"),
    )?;
    let (st, _) = w.client.wait_status(
        w.ns(),
        Duration::from_secs(20),
        |st| st.state() == "error" && st.reason().is_some_and(|r| r.contains("verify-x509-name")),
        || svc.log_tail(20),
    )?;
    eprintln!("wrong server name: {}", st.json);
    ensure!(
        !link_exists(w.ns(), DEFAULT_TUN)?,
        "a tunnel came up with a server of the wrong name"
    );
    w.client.run_ok(Some(w.ns()), &["disconnect"])?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn stock_server_with_tls_crypt() -> Result<()> {
    let started = Instant::now();
    let w = World::new("fib", 131)?;
    let tc = w.path("tc.key");
    genkey_secret(&tc)?;
    let server = w.stock_server(
        &[format!("tls-crypt {}", tc.display()), "auth SHA512".into()],
        false,
    )?;
    // Nyr's client-common.txt + easy-rsa's inline file.
    let ovpn = w.write_ovpn(
        &format!(
            "client\ndev tun\nproto udp\nremote {gw} 1195\nremote {gw} 1194\nresolv-retry infinite\nnobind\npersist-key\npersist-tun\nremote-cert-tls server\nauth SHA512\nignore-unknown-option block-outside-dns\nverb 3",
            gw = w.gateway_addr()
        ),
        &format!("<tls-crypt>\n{}</tls-crypt>\n", read(&tc)?),
    )?;
    // Nobody answers on 1195: the first remote fails after the connect timeout, the second
    // one works.
    let mut w = w;
    w.client.set_env("GATEHOUSE_CONNECT_TIMEOUT", "3");
    w.import(&ovpn)?;
    connect_and_ping(&w, &server)?;
    let log = fs::read_to_string(w.path("service.log"))?;
    let first = log.find(&format!("connecting to {}:1195", w.gateway_addr()));
    let second = log.find(&format!("connected to {}:1194", w.gateway_addr()));
    ensure!(
        matches!((first, second), (Some(a), Some(b)) if a < b),
        "the remotes were not tried in order (1195, then 1194):\n{log}"
    );
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn stock_server_with_tls_crypt_v2() -> Result<()> {
    let started = Instant::now();
    let w = World::new("fic", 132)?;
    let server_key = w.path("tc-v2-server.key");
    let client_key = w.path("tc-v2-client.key");
    genkey_tls_crypt_v2_server(&server_key)?;
    genkey_tls_crypt_v2_client(&server_key, &client_key)?;
    let server = w.stock_server(&[format!("tls-crypt-v2 {}", server_key.display())], false)?;
    // angristan's client-template.txt with its default tls-crypt-v2.
    let ovpn = w.write_ovpn(
        &format!(
            "client\nproto udp\nexplicit-exit-notify\nremote {} 1194\ndev tun\nresolv-retry infinite\nnobind\npersist-key\npersist-tun\nremote-cert-tls server\nverify-x509-name server name\nauth SHA256\nauth-nocache\ncipher AES-256-GCM\nignore-unknown-option data-ciphers\ndata-ciphers AES-256-GCM\nncp-ciphers AES-256-GCM\ntls-client\ntls-version-min 1.2\ntls-cipher TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256\ntls-ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256\nignore-unknown-option block-outside-dns\nsetenv opt block-outside-dns # Prevent Windows 10 DNS leak\nverb 3",
            w.gateway_addr()
        ),
        &format!("<tls-crypt-v2>\n{}</tls-crypt-v2>\n", read(&client_key)?),
    )?;
    w.import(&ovpn)?;
    connect_and_ping(&w, &server)?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn connection_blocks_fail_over_to_a_stock_server_over_tcp() -> Result<()> {
    // pfSense/OPNsense client export style: <connection> blocks (UDP first, then TCP 443),
    // tls-auth with key-direction 1 and `auth SHA256`. Only TCP 443 answers.
    let started = Instant::now();
    let mut w = World::new("fih", 137)?;
    w.client.set_env("GATEHOUSE_CONNECT_TIMEOUT", "3");
    let ta = w.path("ta.key");
    genkey_secret(&ta)?;
    let server = w.stock_server_on(
        Proto::Tcp,
        443,
        &[format!("tls-auth {} 0", ta.display()), "auth SHA256".into()],
        false,
    )?;
    let ovpn = w.write_ovpn(
        &format!(
            "dev tun\npersist-tun\npersist-key\ndata-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\ndata-ciphers-fallback AES-256-CBC\nauth SHA256\ntls-client\nclient\nresolv-retry infinite\n<connection>\nremote {gw} 1194 udp4\n</connection>\n<connection>\nremote {gw} 443 tcp4\n</connection>\nsetenv opt block-outside-dns\nnobind\nverify-x509-name \"server\" name\nremote-cert-tls server\nexplicit-exit-notify",
            gw = w.gateway_addr()
        ),
        &format!("key-direction 1\n<tls-auth>\n{}</tls-auth>\n", read(&ta)?),
    )?;
    let printed = w.import(&ovpn)?;
    ensure!(
        printed.contains(&format!(
            "servers, tried in this order: {gw}:1194 (openvpn-udp), {gw}:443 (openvpn-tcp)",
            gw = w.gateway_addr()
        )),
        "{printed}"
    );
    connect_and_ping(&w, &server)?;
    let st_log = fs::read_to_string(w.path("service.log"))?;
    ensure!(
        st_log.contains(&format!(
            "connected to {}:443 over openvpn-tcp",
            w.gateway_addr()
        )),
        "not connected over the second <connection>:\n{st_log}"
    );
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn stock_server_in_fingerprint_mode() -> Result<()> {
    // angristan's `--auth-mode fingerprint`: self-signed certificates on both ends, each end
    // pins the other's SHA-256 fingerprint (`peer-fingerprint`), no CA anywhere.
    let started = Instant::now();
    let w = World::new("fig", 136)?;
    let dir = w.path("selfsigned");
    fs::create_dir_all(&dir)?;
    let (server_crt, server_key, server_fp) = self_signed(&dir, "server", "serverAuth")?;
    let (client_crt, client_key, client_fp) = self_signed(&dir, "client", "clientAuth")?;
    let tc = w.path("tc.key");
    genkey_secret(&tc)?;
    let mut config = ServerConfig::new(
        Proto::Udp,
        1194,
        gatehouse_tests::openvpn::CertFiles {
            ca: PathBuf::from("NO-CA"),
            cert: server_crt,
            key: server_key,
        },
        w.topo.vpn_pool,
    );
    config.push_routes.push(w.topo.lan_net);
    config.extra.push(format!("tls-crypt {}", tc.display()));
    config.extra.push(format!(
        "<peer-fingerprint>\n{client_fp}\n</peer-fingerprint>"
    ));
    let conf = w.path("server-fp.conf");
    fs::write(&conf, config.render().replace("ca NO-CA\n", ""))?;
    let server = spawn_openvpn(&w.topo.gateway, &conf, &[], &w.path("server-fp.log"))?;
    server.wait_for_log(UP, UP_TIMEOUT)?;

    let ovpn = w.path(&format!("{NAME}.ovpn"));
    fs::write(
        &ovpn,
        format!(
            "client\nproto udp\nexplicit-exit-notify\nremote {} 1194\ndev tun\nresolv-retry infinite\nnobind\npersist-key\npersist-tun\nauth SHA256\nauth-nocache\ncipher AES-256-GCM\nignore-unknown-option data-ciphers\ndata-ciphers AES-256-GCM\nncp-ciphers AES-256-GCM\ntls-client\ntls-version-min 1.2\nignore-unknown-option block-outside-dns\nsetenv opt block-outside-dns\nverb 3\npeer-fingerprint {server_fp}\n<cert>\n{}</cert>\n<key>\n{}</key>\n<tls-crypt>\n{}</tls-crypt>\n",
            w.gateway_addr(),
            read(&client_crt)?,
            read(&client_key)?,
            read(&tc)?
        ),
    )?;
    w.import(&ovpn)?;
    connect_and_ping(&w, &server)?;

    // Pinned to another certificate (the client's own): an error that says why.
    let wrong = w.path("pinned-elsewhere.ovpn");
    fs::write(&wrong, read(&ovpn)?.replace(&server_fp, &client_fp))?;
    w.import(&wrong)?;
    let svc = w.service("service-2.log")?;
    let _connect = Watched::spawn(
        w.client
            .command(Some(w.ns()), ["connect", "pinned-elsewhere"]),
        &w.path("connect-pinned.log"),
    )?;
    let (st, _) = w.client.wait_status(
        w.ns(),
        Duration::from_secs(20),
        |st| st.state() == "error" && st.reason().is_some_and(|r| r.contains("peer-fingerprint")),
        || svc.log_tail(20),
    )?;
    eprintln!("wrong fingerprint: {}", st.json);
    ensure!(
        !link_exists(w.ns(), DEFAULT_TUN)?,
        "a tunnel came up with a server that is not the pinned one"
    );
    w.client.run_ok(Some(w.ns()), &["disconnect"])?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A self-signed P-256 certificate `NAME.crt` (+ `NAME.key`) with extended key usage `eku`,
/// and its SHA-256 fingerprint as OpenSSL prints it (`AB:CD:...`).
fn self_signed(dir: &Path, name: &str, eku: &str) -> Result<(PathBuf, PathBuf, String)> {
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let run = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("openssl").args(args).output()?;
        ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &crt.display().to_string(),
        "-subj",
        &format!("/CN={name}"),
        "-days",
        "2",
        "-addext",
        &format!("extendedKeyUsage={eku}"),
        "-addext",
        "keyUsage=critical,digitalSignature,keyAgreement",
    ])?;
    let fp = run(&[
        "x509",
        "-in",
        &crt.display().to_string(),
        "-noout",
        "-fingerprint",
        "-sha256",
    ])?;
    let fp = fp
        .trim()
        .split_once('=')
        .map(|(_, f)| f.to_string())
        .with_context(|| format!("openssl printed no fingerprint: {fp:?}"))?;
    Ok((crt, key, fp))
}

#[test]
fn old_comp_lzo_profile_against_a_server_that_migrated() -> Result<()> {
    // Older install scripts put `comp-lzo` in both configs. Measured here: a 2.6 server that
    // still says `comp-lzo` expects an LZO framing byte in every packet ("Bad LZO
    // decompression header byte: 69" for ours), so the import warns that the server must say
    // `compress migrate` - with which a client that announces no compression gets none.
    let started = Instant::now();
    let w = World::new("fif", 135)?;
    let server = w.stock_server(&["compress migrate".into()], false)?;
    let ovpn = w.write_ovpn(
        &format!(
            "client\ndev tun\nproto udp\nremote {} 1194\nnobind\nremote-cert-tls server\ncomp-lzo\nverb 3",
            w.gateway_addr()
        ),
        "",
    )?;
    let out = w
        .client
        .run_ok(None, &["import", &ovpn.display().to_string()])?;
    ensure!(
        out.stderr.contains("warning: comp-lzo") && out.stderr.contains("compress migrate"),
        "{out}"
    );
    connect_and_ping(&w, &server)?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn full_tunnel_through_a_stock_server_and_back() -> Result<()> {
    let started = Instant::now();
    let w = World::new("fid", 133)?;
    let tc = w.path("tc.key");
    genkey_secret(&tc)?;
    let server = w.stock_server(&[format!("tls-crypt {}", tc.display())], true)?;
    let ovpn = w.write_ovpn(
        &format!(
            "client\ndev tun\nproto udp\nremote {} 1194\nnobind\nremote-cert-tls server\nverb 3",
            w.gateway_addr()
        ),
        &format!("<tls-crypt>\n{}</tls-crypt>\n", read(&tc)?),
    )?;
    w.import(&ovpn)?;
    w.add_default_route()?;
    let before = w.host_state()?;
    eprintln!("before:\n{before}");

    // Through the service, then `gatehouse disconnect`.
    let svc = w.service("service.log")?;
    w.connect(&svc, || server.log_tail(30))?;
    w.check_full_tunnel(|| format!("{}\n{}", server.log_tail(30), svc.log_tail(30)))?;
    w.client.run_ok(Some(w.ns()), &["disconnect"])?;
    w.check_restored(&before, "after `gatehouse disconnect`")?;
    drop(svc);

    // In the foreground, then Ctrl-C.
    let mut cmd = w
        .client
        .command(Some(w.ns()), ["connect", NAME, "--foreground"]);
    cmd.env("GATEHOUSE_LOG", "debug");
    let fg = Watched::spawn(cmd, &w.path("foreground.log"))?;
    fg.wait_for_log("Connected: ", Duration::from_secs(30))
        .with_context(|| server.log_tail(30))?;
    w.check_full_tunnel(|| format!("{}\n{}", server.log_tail(30), fg.log()))?;
    fg.signal("INT");
    let status = fg.wait_exit(Duration::from_secs(10))?;
    ensure!(
        status.success(),
        "foreground connect after SIGINT: {status}\n{}",
        fg.log()
    );
    w.check_restored(&before, "after Ctrl-C")?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn full_tunnel_through_gatehoused_and_back_even_after_a_crash() -> Result<()> {
    let started = Instant::now();
    let w = World::new("fie", 134)?;
    let gw_dir = GatewayDir::for_topology(&w.path("gateway"), &w.topo, "ghd134")?;
    gw_dir.set("full_tunnel", "true")?;
    gw_dir.set("dns", &format!("[{}]", toml_str(&w.dns().to_string())))?;
    gw_dir.issue_client(NAME, &[])?;
    w.client.import_profile(&gw_dir, NAME, w.gateway_addr())?;
    let gw = Gatehoused::start(&w.topo.gateway, &gw_dir, &w.path("gatehoused.log"))?;
    w.add_default_route()?;
    let before = w.host_state()?;

    let svc = w.service("service-1.log")?;
    w.connect(&svc, || gw.log_tail(30))?;
    w.check_full_tunnel(|| format!("{}\n{}", gw.log_tail(30), svc.log_tail(30)))?;
    w.client.run_ok(Some(w.ns()), &["disconnect"])?;
    w.check_restored(&before, "after `gatehouse disconnect`")?;

    // Connected again, then the service dies without undoing anything; the next start does.
    w.connect(&svc, || gw.log_tail(30))?;
    w.check_full_tunnel(|| format!("{}\n{}", gw.log_tail(30), svc.log_tail(30)))?;
    svc.kill_hard()?;
    drop(svc);
    ensure!(
        w.host_state()? != before,
        "kill -9 left nothing to undo; the crash case was not exercised"
    );
    let svc = w.service("service-2.log")?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while w.host_state()? != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    w.check_restored(&before, "after kill -9 and the next start")
        .with_context(|| svc.log_tail(20))?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn our_profiles_with_tls_crypt_v2_connect_to_gatehoused() -> Result<()> {
    // gatehoused with `tls_crypt_v2 = "on"`: both exports gatehouse-certs writes for a client
    // - the Gatehouse profile and the stock .ovpn - carry the client's own tls-crypt-v2 key,
    // and our client connects with either.
    let started = Instant::now();
    let w = World::new("fij", 138)?;
    let gw_dir = GatewayDir::for_topology(&w.path("gateway"), &w.topo, "ghd138")?;
    gw_dir.set("openvpn.tls_crypt_v2", &toml_str("on"))?;
    let gw = Gatehoused::start(&w.topo.gateway, &gw_dir, &w.path("gatehoused.log"))?;
    gw_dir.issue_client(NAME, &[])?;
    w.client.import_profile(&gw_dir, NAME, w.gateway_addr())?;
    let ovpn = export_ovpn(
        &gw_dir.pki(),
        NAME,
        w.gateway_addr(),
        &w.path("exported.ovpn"),
    )?;
    let printed = w.import(&ovpn)?;
    ensure!(
        printed.contains("control channel: tls-crypt-v2"),
        "{printed}"
    );
    let profiles = w.client.run_ok(None, &["profiles"])?.stdout;
    eprintln!("{profiles}");

    let svc = w.service("service.log")?;
    for profile in [NAME, "exported"] {
        let out = w
            .client
            .run(Some(w.ns()), &["connect", profile], CONNECT_TIMEOUT)?;
        ensure!(
            out.success(),
            "{out}\n{}\n{}",
            gw.log_tail(30),
            svc.log_tail(30)
        );
        wait_ping(w.ns(), w.topo.lan_host, Duration::from_secs(10))
            .with_context(|| format!("{}\n{}", gw.log_tail(30), svc.log_tail(30)))?;
        w.client.run_ok(Some(w.ns()), &["disconnect"])?;
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn import_refuses_what_it_cannot_honour_by_name() -> Result<()> {
    // No namespaces: only files in a temporary folder.
    let dir = tempfile::tempdir()?;
    let client = ClientHome::new(&dir.path().join("client"), RESOLV_BEFORE)?;
    let pki = OpensslPki::create(&dir.path().join("pki"), &[])?;
    let creds = format!(
        "<ca>\n{}</ca>\n<cert>\n{}</cert>\n<key>\n{}</key>\n",
        read(&pki.client.ca)?,
        read(&pki.client.cert)?,
        read(&pki.client.key)?
    );
    for (line, why) in [
        ("auth-user-pass", "user name and password"),
        ("up /etc/openvpn/update-resolv-conf", "scripts"),
        ("http-proxy proxy.example 3128", "proxies"),
    ] {
        let file = dir.path().join("refused.ovpn");
        fs::write(
            &file,
            format!("client\ndev tun\nremote 192.0.2.1 1194\n{line}\n{creds}"),
        )?;
        let out = client.run(
            None,
            &["import", &file.display().to_string()],
            Duration::from_secs(20),
        )?;
        eprintln!("{out}");
        ensure!(
            !out.success(),
            "importing a file with `{line}` succeeded:\n{out}"
        );
        ensure!(
            out.stderr.contains(&format!("refused.ovpn:4: `{line}`")) && out.stderr.contains(why),
            "the refusal does not name `{line}` and why:\n{out}"
        );
    }
    // The same line is skipped, with a warning, when the file says it may be.
    let file = dir.path().join("allowed.ovpn");
    fs::write(
        &file,
        format!(
            "client\ndev tun\nremote 192.0.2.1 1194\nignore-unknown-option up\nup /etc/openvpn/update-resolv-conf\n{creds}"
        ),
    )?;
    let out = client.run_ok(None, &["import", &file.display().to_string()])?;
    ensure!(
        out.stderr
            .contains("warning: line 5: `up /etc/openvpn/update-resolv-conf` is skipped"),
        "{out}"
    );
    let out = client.run_ok(None, &["profiles"])?;
    ensure!(
        out.stdout.contains("allowed") && !out.stdout.contains("refused"),
        "{out}"
    );
    Ok(())
}
