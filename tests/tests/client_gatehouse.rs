//! Gatehouse's own client, `gatehouse`, against Gatehouse's gateway, `gatehoused`, in
//! namespaces: the client service runs in the remote-client namespace, the front-end commands
//! (`connect`, `status --json`, `disconnect`) talk to it over its socket, and the tunnel
//! reaches the host on the LAN behind the gateway.
//!
//! Every test builds its own topology (tag `c*`, subnet index 40..=49), gateway data directory,
//! certificate and client home in its own temporary folder, so the tests run in parallel with
//! each other and with the other suites. The client only ever edits a scratch resolv.conf in
//! that folder (`GATEHOUSE_RESOLV_CONF`, set by the harness for every command), never the
//! host's.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::client::{
    CliOutput, ClientHome, ClientService, ClientStatus, DEFAULT_TUN, LISTENING, Watched,
    link_exists, routes,
};
use gatehouse_tests::gatehoused::{CONNECTED, Gatehoused, GatewayDir, REFUSED, toml_str, tun_ipv4};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::{GatewayTopology, Ipv4Cidr, Netns, require_commands, require_root};
use tempfile::TempDir;

/// What the scratch resolv.conf holds before the client touches it.
const RESOLV_BEFORE: &str = "# scratch resolv.conf of a gatehouse end-to-end test\n\
                             nameserver 192.0.2.53\n\
                             search example.invalid\n\
                             options edns0 timeout:1\n";
/// How long `gatehouse connect` may run (it gives up by itself after 60 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the gateway gets to log `client connected` once the client says it is connected.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The client's name in every test.
const NAME: &str = "alice";

/// One test's world: namespaces, a temporary folder, a gateway data directory and a client
/// home in it, with `alice` issued and imported.
struct Setup {
    // Dropped in this order: the namespaces (and whatever still runs in them), then files.
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    client: ClientHome,
    dir: TempDir,
}

impl Setup {
    /// Topology `tag`/`subnet_index` with one client; `gatehoused init` for it (TUN
    /// `ghd<subnet_index>`, DNS 10.251.X.53 pushed); `alice` issued and imported into a
    /// client home whose scratch resolv.conf holds [`RESOLV_BEFORE`].
    fn new(tag: &str, subnet_index: u8) -> Result<Setup> {
        require_root();
        require_commands(&["ip", "ping", "kill"]);
        let dir = tempfile::tempdir()?;
        let topo = GatewayTopology::new(tag, subnet_index, 1)?;
        let gw_dir = GatewayDir::for_topology(
            &dir.path().join("gateway"),
            &topo,
            &format!("ghd{subnet_index}"),
        )?;
        let dns = Ipv4Addr::new(10, 251, subnet_index, 53);
        gw_dir.set("dns", &format!("[{}]", toml_str(&dns.to_string())))?;
        gw_dir.issue_client(NAME, &[])?;
        let client = ClientHome::new(&dir.path().join("client"), RESOLV_BEFORE)?;
        client.import_profile(&gw_dir, NAME, topo.client(0).gateway_addr)?;
        Ok(Setup {
            topo,
            gw_dir,
            client,
            dir,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The client namespace.
    fn ns(&self) -> &Netns {
        &self.topo.client(0).ns
    }

    /// The DNS server the gateway pushes.
    fn dns(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.topo.subnet_index, 53)
    }

    /// `gatehoused run` in the gateway namespace, up to `gateway ready`.
    fn start_gateway(&self, log: &str) -> Result<Gatehoused> {
        Gatehoused::start(&self.topo.gateway, &self.gw_dir, &self.path(log))
    }

    /// `gatehouse service` in the client namespace, up to `client service listening`.
    fn start_service(&self, log: &str) -> Result<ClientService> {
        ClientService::start(self.ns(), &self.client, &self.path(log))
    }

    /// `gatehouse connect alice EXTRA...` in the client namespace.
    fn connect(&self, extra: &[&str]) -> Result<CliOutput> {
        let mut args = vec!["connect", NAME];
        args.extend_from_slice(extra);
        let out = match self.client.run(Some(self.ns()), &args, CONNECT_TIMEOUT) {
            Ok(out) => out,
            Err(e) => {
                // A connect that never finished: what the gateway and the service saw.
                for name in ["gatehoused.log", "service.log"] {
                    let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                    eprintln!("--- {name} (last 60 lines):\n{tail}");
                }
                return Err(e);
            }
        };
        eprintln!("{out}");
        Ok(out)
    }

    fn status(&self) -> Result<ClientStatus> {
        self.client.status(self.ns())
    }

    /// The client's scratch resolv.conf as text.
    fn resolv_conf(&self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.client.resolv_conf_bytes()?).into_owned())
    }

    /// Checks a `connected` status over `protocol`: the address is in the pool, not the
    /// gateway's, and is the one on the client's TUN device; the gateway logged the same
    /// address for alice. Returns the address.
    fn check_connected(
        &self,
        st: &ClientStatus,
        protocol: &str,
        gw: &Gatehoused,
        svc: Option<&ClientService>,
    ) -> Result<Ipv4Addr> {
        let ctx = || logs(gw, svc);
        ensure!(
            st.state() == "connected",
            "expected state connected: {}\n{}",
            st.json,
            ctx()
        );
        ensure!(
            st.protocol() == Some(protocol),
            "expected protocol {protocol}: {}",
            st.json
        );
        ensure!(
            st.str("profile") == Some(NAME),
            "expected profile {NAME}: {}",
            st.json
        );
        let addr = st
            .address()
            .with_context(|| format!("status has no address: {}", st.json))?;
        let pool = self.topo.vpn_pool;
        ensure!(
            Ipv4Cidr::new(addr, pool.prefix).network() == pool.network(),
            "client address {addr} is outside the pool {pool}: {}",
            st.json
        );
        ensure!(
            addr != Ipv4Addr::from(u32::from(pool.network().addr) + 1),
            "client got {addr}, the gateway's own address in the pool"
        );
        let tun = tun_ipv4(self.ns(), DEFAULT_TUN)?;
        ensure!(
            tun.addr == addr,
            "status says address {addr} but {DEFAULT_TUN} has {tun}"
        );
        let gateway = format!("{}:", self.topo.client(0).gateway_addr);
        ensure!(
            st.str("gateway").is_some_and(|g| g.starts_with(&gateway)),
            "expected gateway {gateway}PORT: {}",
            st.json
        );
        let transport = protocol.trim_start_matches("openvpn-");
        // The newest connection of this client over this transport (an earlier session over
        // another transport may be in the log too).
        let event = gw
            .wait_event(
                CONNECTED,
                |e| e.field("client") == Some(NAME) && e.field("transport") == Some(transport),
                EVENT_TIMEOUT,
            )
            .with_context(ctx)?;
        eprintln!("{}", event.line);
        ensure!(
            event.address() == Some(addr),
            "gatehoused logged address {:?}, the client has {addr}: {}",
            event.field("address"),
            event.line
        );
        ensure!(
            event.field("transport") == Some(transport),
            "gatehoused logged transport {:?}, expected {transport}: {}",
            event.field("transport"),
            event.line
        );
        Ok(addr)
    }

    /// Pings the LAN host through the tunnel.
    fn ping_lan(&self, ctx: impl Fn() -> String) -> Result<()> {
        wait_ping(self.ns(), self.topo.lan_host, Duration::from_secs(10)).with_context(ctx)
    }

    /// The client left nothing behind: no TUN device, no route to the LAN, resolv.conf
    /// byte-identical to `before`, no journal.
    fn check_clean(&self, before: &[u8]) -> Result<()> {
        ensure!(
            !link_exists(self.ns(), DEFAULT_TUN)?,
            "{DEFAULT_TUN} still exists in {}",
            self.ns().name()
        );
        let routes = routes(self.ns())?;
        let lan = self.topo.lan_net.network().to_string();
        ensure!(
            !routes.contains(&lan),
            "a route to {lan} is left in {}:\n{routes}",
            self.ns().name()
        );
        let after = self.client.resolv_conf_bytes()?;
        ensure!(
            after == before,
            "resolv.conf not restored:\nbefore: {:?}\nafter:  {:?}",
            String::from_utf8_lossy(before),
            String::from_utf8_lossy(&after)
        );
        let journal = self.client.journal();
        ensure!(
            !journal.exists(),
            "the journal {} is still there: {}",
            journal.display(),
            std::fs::read_to_string(&journal).unwrap_or_default()
        );
        Ok(())
    }

    /// The scratch resolv.conf names the pushed DNS server.
    fn check_tunnel_dns(&self) -> Result<()> {
        let text = self.resolv_conf()?;
        let want = format!("nameserver {}", self.dns());
        ensure!(
            text.lines().any(|l| l.trim() == want),
            "resolv.conf has no {want:?} while connected:\n{text}"
        );
        Ok(())
    }
}

/// The gateway's and the client service's logs, for the context of a failure.
fn logs(gw: &Gatehoused, svc: Option<&ClientService>) -> String {
    let mut s = format!("gatehoused log:\n{}", gw.log_tail(25));
    if let Some(svc) = svc {
        s.push_str(&format!(
            "\nclient service log {}:\n{}",
            svc.proc().log_path().display(),
            svc.log_tail(40)
        ));
    }
    s
}

#[test]
fn gatehouse_connects_over_udp_and_disconnect_cleans_up() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("cu", 40)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let svc = s.start_service("service.log")?;
    let ctx = || logs(&gw, Some(&svc));
    let before = s.client.resolv_conf_bytes()?;
    ensure!(before == RESOLV_BEFORE.as_bytes(), "scratch resolv.conf");

    let out = s.connect(&["--protocol", "openvpn-udp"])?;
    ensure!(out.success(), "{out}\n{}", ctx());
    ensure!(
        out.stdout.contains("Connected"),
        "`gatehouse connect` exited 0 without saying Connected:\n{out}"
    );
    let st = s.status()?;
    s.check_connected(&st, "openvpn-udp", &gw, Some(&svc))?;
    s.ping_lan(ctx)?;
    s.check_tunnel_dns()?;

    // Counters are published once a second.
    thread::sleep(Duration::from_millis(1500));
    let st = s.status()?;
    for c in ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"] {
        ensure!(
            st.counter(c) > 0,
            "counter {c} is 0 after a ping: {}",
            st.json
        );
    }
    eprintln!("status after ping: {}", st.json);

    let out = s.client.run_ok(Some(s.ns()), &["disconnect"])?;
    eprintln!("{out}");
    let st = s.status()?;
    ensure!(
        st.state() == "disconnected",
        "after `gatehouse disconnect`: {}\n{}",
        st.json,
        ctx()
    );
    s.check_clean(&before).with_context(ctx)?;
    ensure!(svc.proc().is_running(), "the service died:\n{}", ctx());
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn gatehouse_connects_over_tcp() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("ct", 41)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let svc = s.start_service("service.log")?;
    let ctx = || logs(&gw, Some(&svc));
    let before = s.client.resolv_conf_bytes()?;

    let out = s.connect(&["--protocol", "openvpn-tcp"])?;
    ensure!(out.success(), "{out}\n{}", ctx());
    let st = s.status()?;
    s.check_connected(&st, "openvpn-tcp", &gw, Some(&svc))?;
    ensure!(
        st.str("gateway").is_some_and(|g| g.ends_with(":443")),
        "TCP goes to port 443: {}",
        st.json
    );
    s.ping_lan(ctx)?;
    s.check_tunnel_dns()?;

    s.client.run_ok(Some(s.ns()), &["disconnect"])?;
    ensure!(s.status()?.state() == "disconnected", "{}", ctx());
    s.check_clean(&before).with_context(ctx)?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn falls_back_to_tcp_when_udp_is_blocked() -> Result<()> {
    let started = Instant::now();
    let mut s = Setup::new("cf", 42)?;
    s.gw_dir.set("openvpn.udp_port", "0")?;
    s.client.set_env("GATEHOUSE_CONNECT_TIMEOUT", "3");
    let gw = s.start_gateway("gatehoused.log")?;
    let svc = s.start_service("service.log")?;
    let ctx = || logs(&gw, Some(&svc));

    let out = s.connect(&[])?;
    ensure!(out.success(), "{out}\n{}", ctx());
    ensure!(
        out.stdout.contains("openvpn-udp"),
        "expected UDP to be tried first:\n{out}"
    );
    let st = s.status()?;
    s.check_connected(&st, "openvpn-tcp", &gw, Some(&svc))?;
    // UDP gets 3 s; more than ~15 s would mean the timeout was not honoured.
    ensure!(
        out.elapsed < Duration::from_secs(15),
        "falling back took {:.1} s with GATEHOUSE_CONNECT_TIMEOUT=3",
        out.elapsed.as_secs_f64()
    );
    s.ping_lan(ctx)?;
    eprintln!(
        "connected over TCP {:.1} s after `connect`; done in {:.1} s",
        out.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn reconnects_after_gateway_restart() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("cr", 43)?;
    s.gw_dir.set("openvpn.ping", &toml_str("2s"))?;
    s.gw_dir.set("openvpn.ping_restart", &toml_str("6s"))?;
    let gw = s.start_gateway("gatehoused-1.log")?;
    let svc = s.start_service("service.log")?;

    let out = s.connect(&[])?;
    ensure!(out.success(), "{out}\n{}", logs(&gw, Some(&svc)));
    let st = s.status()?;
    let first = s.check_connected(&st, "openvpn-udp", &gw, Some(&svc))?;
    s.ping_lan(|| logs(&gw, Some(&svc)))?;

    // No goodbye: the client must notice by itself (ping-restart 6 s, pushed).
    gw.kill_hard()?;
    let killed = Instant::now();
    let (st, seen) = s.client.wait_status(
        s.ns(),
        Duration::from_secs(20),
        |st| st.state() == "reconnecting",
        || svc.log_tail(30),
    )?;
    eprintln!(
        "{:.1} s after the kill: {} (states seen: {seen:?})",
        killed.elapsed().as_secs_f64(),
        st.json
    );

    let gw = s
        .start_gateway("gatehoused-2.log")
        .context("gatehoused did not start again on the same data directory")?;
    let restarted = Instant::now();
    let (st, seen) = s.client.wait_status(
        s.ns(),
        Duration::from_secs(40),
        |st| st.state() == "connected",
        || logs(&gw, Some(&svc)),
    )?;
    eprintln!(
        "connected again {:.1} s after the restart ({:.1} s after the kill); states seen: {seen:?}",
        restarted.elapsed().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    let proto = st.protocol().unwrap_or_default().to_string();
    let again = s.check_connected(&st, &proto, &gw, Some(&svc))?;
    if again != first {
        eprintln!("note: the address changed across the restart: {first} -> {again}");
    }
    s.ping_lan(|| logs(&gw, Some(&svc)))?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn revoked_certificate_is_an_error_not_a_loop() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("cv", 44)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let svc = s.start_service("service.log")?;
    s.gw_dir.revoke(NAME)?;
    // The gateway polls crl.pem every ~2 s.
    thread::sleep(Duration::from_secs(3));

    // `gatehouse connect` itself gives up only after 60 s; a refusal must end it long before.
    let connect = Watched::spawn(
        s.client.command(Some(s.ns()), ["connect", NAME]),
        &s.path("connect.log"),
    )?;
    let ended = connect.wait_exit(Duration::from_secs(20));
    let printed = connect.log();
    let status = s.status()?;
    let refused = gw.events(REFUSED);
    eprintln!(
        "`gatehouse connect {NAME}` printed:\n{printed}\ngatehoused refusals: {:#?}\nstatus: {}",
        refused.iter().map(|e| e.line.as_str()).collect::<Vec<_>>(),
        status.json
    );
    ensure!(
        !refused.is_empty(),
        "the gateway logged no refusal:\n{}",
        logs(&gw, Some(&svc))
    );
    let exit = match ended {
        Ok(exit) => exit,
        Err(_) => {
            // Watch the loop a little longer to report what it does.
            thread::sleep(Duration::from_secs(3));
            let later = s.status()?;
            bail!(
                "`gatehouse connect` with a revoked certificate was still running after 20 s \
                 (the gateway refused it {} time(s) so far); status then: {}\n3 s later: {}\n\
                 it printed:\n{printed}\n{}",
                gw.events(REFUSED).len(),
                status.json,
                later.json,
                logs(&gw, Some(&svc))
            );
        }
    };
    ensure!(
        exit.code() == Some(1),
        "`gatehouse connect` with a revoked certificate should exit 1 with the reason, not \
         {exit}; status: {}\n{printed}\n{}",
        status.json,
        logs(&gw, Some(&svc))
    );
    let message = printed.to_lowercase();
    ensure!(
        [
            "refuse",
            "revoked",
            "authentication",
            "rejected",
            "certificate"
        ]
        .iter()
        .any(|w| message.contains(w)),
        "the error does not say the gateway refused the certificate:\n{printed}"
    );
    ensure!(
        message.contains("administrator") || message.contains("new profile"),
        "the error does not tell the user what to do:\n{printed}"
    );
    ensure!(
        status.state() == "error",
        "after a refusal the state should be error (not a reconnect loop): {}",
        status.json
    );
    // Still an error a few seconds later: no retrying behind the user's back.
    thread::sleep(Duration::from_secs(3));
    let later = s.status()?;
    ensure!(
        later.state() == "error",
        "the client went on after the refusal: {}\n{}",
        later.json,
        logs(&gw, Some(&svc))
    );
    ensure!(
        !link_exists(s.ns(), DEFAULT_TUN)?,
        "a TUN device exists after a refusal"
    );
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn crash_leftovers_are_undone_on_next_start() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("cc", 45)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let svc = s.start_service("service-1.log")?;
    let before = s.client.resolv_conf_bytes()?;

    let out = s.connect(&["--protocol", "openvpn-udp"])?;
    ensure!(out.success(), "{out}\n{}", logs(&gw, Some(&svc)));
    let st = s.status()?;
    s.check_connected(&st, "openvpn-udp", &gw, Some(&svc))?;
    s.check_tunnel_dns()?;
    ensure!(
        s.client.journal().exists(),
        "connected with DNS pushed, but no journal at {}",
        s.client.journal().display()
    );

    svc.kill_hard()?;
    // A crash leaves the tunnel's DNS behind, and the journal that says how to undo it.
    s.check_tunnel_dns()
        .context("after kill -9 of the service")?;
    let journal = std::fs::read_to_string(s.client.journal())
        .context("the journal is gone after kill -9, so the next start cannot undo anything")?;
    eprintln!("journal left by the killed service:\n{journal}");
    drop(svc);

    let svc = s.start_service("service-2.log")?;
    let listening = Instant::now();
    let deadline = listening + Duration::from_secs(2);
    loop {
        let restored = s.client.resolv_conf_bytes()? == before;
        let journal_gone = !s.client.journal().exists();
        if restored && journal_gone {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "2 s after {LISTENING:?}: resolv.conf restored: {restored}, journal gone: \
             {journal_gone}; resolv.conf now:\n{}\nservice log:\n{}",
            s.resolv_conf()?,
            svc.log_tail(30)
        );
        thread::sleep(Duration::from_millis(100));
    }
    s.check_clean(&before)?;
    ensure!(
        s.status()?.state() == "disconnected",
        "a fresh service should be disconnected"
    );
    let log = svc.log();
    ensure!(
        log.contains("undid a change left by a previous run"),
        "the restarted service did not say what it undid:\n{log}"
    );
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn foreground_connect_and_ctrl_c() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("cg", 46)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let before = s.client.resolv_conf_bytes()?;

    let mut cmd = s
        .client
        .command(Some(s.ns()), ["connect", NAME, "--foreground"]);
    cmd.env("GATEHOUSE_LOG", "debug");
    let fg = Watched::spawn(cmd, &s.path("foreground.log"))?;
    let ctx = || {
        format!(
            "{}\nforeground log {}:\n{}",
            logs(&gw, None),
            fg.log_path().display(),
            fg.log()
        )
    };
    fg.wait_for_log("Connected: ", Duration::from_secs(30))
        .with_context(|| logs(&gw, None))?;
    ensure!(
        link_exists(s.ns(), DEFAULT_TUN)?,
        "connected but no {DEFAULT_TUN}\n{}",
        ctx()
    );
    let event = gw.wait_connected(NAME, EVENT_TIMEOUT).with_context(ctx)?;
    let tun = tun_ipv4(s.ns(), DEFAULT_TUN)?;
    ensure!(
        event.address() == Some(tun.addr),
        "gatehoused logged {:?}, {DEFAULT_TUN} has {tun}",
        event.field("address")
    );
    s.ping_lan(ctx)?;
    s.check_tunnel_dns()?;

    fg.signal("INT");
    let status = fg.wait_exit(Duration::from_secs(10))?;
    eprintln!("foreground log:\n{}", fg.log());
    ensure!(
        status.success(),
        "`gatehouse connect --foreground` exited with {status} after SIGINT\n{}",
        ctx()
    );
    s.check_clean(&before).with_context(ctx)?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn status_without_service_says_how_to_start_it() -> Result<()> {
    // No namespace, no root: this only fails to reach a socket in a temporary folder.
    let dir = tempfile::tempdir()?;
    let client = ClientHome::new(dir.path(), RESOLV_BEFORE)?;
    ensure!(!client.socket().exists(), "no socket expected");
    let out = client.run(None, &["status"], Duration::from_secs(20))?;
    eprintln!("{out}");
    ensure!(out.code() == Some(1), "expected exit 1:\n{out}");
    ensure!(
        out.stderr.contains("gatehouse service"),
        "stderr does not say how to start the service:\n{out}"
    );
    ensure!(
        out.stderr.contains(&client.socket().display().to_string()),
        "stderr does not name the socket it tried:\n{out}"
    );
    let out = client.run(None, &["status", "--json"], Duration::from_secs(20))?;
    ensure!(
        out.code() == Some(1) && out.stderr.contains("gatehouse service"),
        "`status --json` without a service:\n{out}"
    );
    Ok(())
}

#[test]
fn switching_protocol_waits_for_the_new_connection() -> Result<()> {
    // `gatehouse connect` while connected replaces the connection; it must report (and exit
    // on) the new one, not a status update of the old one that is still being torn down.
    let started = Instant::now();
    let s = Setup::new("cs", 47)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let svc = s.start_service("service.log")?;
    let out = s.connect(&["--protocol", "openvpn-udp"])?;
    ensure!(out.success(), "{out}\n{}", logs(&gw, Some(&svc)));
    s.ping_lan(|| logs(&gw, Some(&svc)))?;

    // Traffic through the old tunnel, so its counters (and so its status) keep changing.
    let _pinger = s.ns().spawn(
        "ping",
        [
            "-n",
            "-q",
            "-i",
            "0.2",
            "-w",
            "20",
            &s.topo.lan_host.to_string(),
        ],
        &s.path("ping.log"),
    )?;
    thread::sleep(Duration::from_millis(1500));
    let out = s.connect(&["--protocol", "openvpn-tcp"])?;
    ensure!(out.success(), "{out}\n{}", logs(&gw, Some(&svc)));
    let last = out.stdout.lines().last().unwrap_or_default().to_string();
    let st = s.status()?;
    ensure!(
        last.contains("over openvpn-tcp")
            && st.state() == "connected"
            && st.protocol() == Some("openvpn-tcp"),
        "`gatehouse connect --protocol openvpn-tcp` exited 0 saying {last:?}, status right \
         after: {}\n{out}\n{}",
        st.json,
        logs(&gw, Some(&svc))
    );
    s.check_connected(&st, "openvpn-tcp", &gw, Some(&svc))?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
