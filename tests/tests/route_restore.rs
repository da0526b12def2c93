//! The client service leaves the host's own routes alone: a route that existed before
//! `gatehouse` connected is there again, identical, after it disconnects (issue 14).
//!
//! The gateway pushes three prefixes: the LAN behind it, `10.207.1.0/24` and `10.207.2.0/24`.
//! Before connecting, the client host already routes, over its underlay, exactly
//! `10.207.1.0/24` (metric 20), the covering `10.207.0.0/16`, a default route, and two
//! unrelated prefixes (one a blackhole). The designed behaviour (client-core
//! `platform/linux.rs`, like OpenVPN's): a pushed prefix the host already routes exactly is
//! not routed into the tunnel (the host's route is kept, with a warning in the service log);
//! a pushed prefix inside a wider host route gets its own, more specific, route into the
//! tunnel; everything else the host had stays as it was. On disconnect (OpenVPN over UDP,
//! then IKEv2) and on the next start after the service was killed with SIGKILL, `ip -4 route
//! show table all` and `ip -4 rule show` are byte-identical to what they were before the
//! connection. While connected, traffic to 10.207.2.10 and to the LAN goes through the TUN
//! device (its packet counter says so) and traffic to 10.207.1.10 keeps to the underlay.
//!
//! Topology: tag `rr`, subnet index 207 (10.250.207.0/24 underlay, 10.251.207.0/24 LAN,
//! 10.8.207.0/24 pool) plus 10.207.0.0/16 behind the gateway.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::client::{CliOutput, ClientHome, ClientService, DEFAULT_TUN, link_exists};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, toml_str};
use gatehouse_tests::net::{ping, wait_ping};
use gatehouse_tests::{GatewayTopology, Netns, require_commands, require_root};
use tempfile::TempDir;

const NAME: &str = "alice";
const SUBNET: u8 = 207;
/// Pushed, and routed by the host exactly (over the underlay) before the client connects.
const EXACT: &str = "10.207.1.0/24";
/// A host in [`EXACT`], behind the gateway.
const EXACT_HOST: Ipv4Addr = Ipv4Addr::new(10, 207, 1, 10);
/// Pushed; the host routes the covering [`COVERING`] before the client connects.
const COVERED: &str = "10.207.2.0/24";
/// A host in [`COVERED`], behind the gateway.
const COVERED_HOST: Ipv4Addr = Ipv4Addr::new(10, 207, 2, 10);
const COVERING: &str = "10.207.0.0/16";
/// How long `gatehouse connect` may run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);
/// The warning client-core logs for a pushed prefix the host already routes.
const KEPT_WARNING: &str = "the host already routes this prefix";

struct World {
    // Dropped in this order: the namespaces (and whatever still runs in them), then files.
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    client: ClientHome,
    dir: TempDir,
}

impl World {
    fn new() -> Result<World> {
        require_root();
        require_commands(&["ip", "ping", "kill", "cat"]);
        let dir = tempfile::tempdir()?;
        let topo = GatewayTopology::new("rr", SUBNET, 1)?;
        let gw_dir =
            GatewayDir::for_topology(&dir.path().join("gateway"), &topo, &format!("ghd{SUBNET}"))?;
        let space = [
            topo.lan_net.network().to_string(),
            EXACT.into(),
            COVERED.into(),
        ];
        let space: Vec<String> = space.iter().map(|s| toml_str(s)).collect();
        gw_dir.set("address_space", &format!("[{}]", space.join(", ")))?;
        gw_dir.issue_client(NAME, &[])?;
        let client = ClientHome::new(
            &dir.path().join("client"),
            "# scratch resolv.conf of route_restore\nnameserver 192.0.2.53\n",
        )?;
        client.import_profile(&gw_dir, NAME, topo.client(0).gateway_addr)?;

        // The hosts of 10.207.0.0/16 live on the LAN host; the gateway routes to them.
        for host in [EXACT_HOST, COVERED_HOST] {
            topo.lan
                .exec_ok("ip", ["addr", "add", &format!("{host}/32"), "dev", "gw0"])?;
        }
        let lan_host = topo.lan_host.to_string();
        topo.gateway
            .exec_ok("ip", ["route", "add", COVERING, "via", &lan_host])?;

        // The client host's own routes, all over its underlay.
        let ns = &topo.client(0).ns;
        let up = topo.client(0).gateway_addr.to_string();
        let own = topo.client(0).addr.to_string();
        let routes: [&[&str]; 5] = [
            &[
                "default", "via", &up, "dev", "up0", "proto", "static", "metric", "600",
            ],
            &[
                EXACT, "via", &up, "dev", "up0", "proto", "static", "metric", "20",
            ],
            &[COVERING, "via", &up, "dev", "up0", "proto", "boot"],
            &["198.51.100.0/24", "via", &up, "dev", "up0", "src", &own],
            &["blackhole", "203.0.113.0/24"],
        ];
        for r in routes {
            let mut args = vec!["-4", "route", "add"];
            args.extend_from_slice(r);
            ns.exec_ok("ip", &args)?;
        }
        // The underlay reaches every host behind the gateway before any tunnel exists.
        for host in [EXACT_HOST, COVERED_HOST, topo.lan_host] {
            wait_ping(ns, host, Duration::from_secs(5))
                .with_context(|| format!("{host} over the underlay"))?;
        }
        Ok(World {
            topo,
            gw_dir,
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

    fn ip(&self, args: &[&str]) -> Result<String> {
        self.ns().exec_ok("ip", args)
    }

    /// Every IPv4 route of every table and the policy rules: what must come back exactly.
    fn snapshot(&self) -> Result<String> {
        Ok(format!(
            "{}--- rules\n{}",
            self.ip(&["-4", "route", "show", "table", "all"])?,
            self.ip(&["-4", "rule", "show"])?
        ))
    }

    /// `ip -4 route show exact PREFIX` (main table).
    fn exact(&self, prefix: &str) -> Result<String> {
        self.ip(&["-4", "route", "show", "exact", prefix])
    }

    /// `ip -4 route get ADDR`, first line.
    fn route_get(&self, addr: Ipv4Addr) -> Result<String> {
        let out = self.ip(&["-4", "route", "get", &addr.to_string()])?;
        Ok(out.lines().next().unwrap_or_default().trim().to_string())
    }

    /// Packets the kernel handed to the client's TUN device (into the tunnel).
    fn tun_tx_packets(&self) -> Result<u64> {
        let path = format!("/sys/class/net/{DEFAULT_TUN}/statistics/tx_packets");
        let text = self.ns().exec_ok("cat", [path.as_str()])?;
        text.trim()
            .parse()
            .with_context(|| format!("{path}: {text:?}"))
    }

    /// `gatehouse connect alice --protocol PROTOCOL`, which must say Connected.
    fn connect(&self, protocol: &str, ctx: &dyn Fn() -> String) -> Result<()> {
        let out: CliOutput = self.client.run(
            Some(self.ns()),
            &["connect", NAME, "--protocol", protocol],
            CONNECT_TIMEOUT,
        )?;
        eprintln!("{out}");
        ensure!(
            out.success() && out.stdout.contains("Connected"),
            "connect over {protocol}: {out}\n{}",
            ctx()
        );
        Ok(())
    }

    /// While connected: the host's own routes are all still there, unchanged; the pushed
    /// prefix the host routed exactly keeps the host's route; the covered one and the LAN go
    /// into the tunnel, and the traffic follows.
    fn check_connected(
        &self,
        before_main: &str,
        svc: &ClientService,
        ctx: &dyn Fn() -> String,
    ) -> Result<()> {
        let main = self.ip(&["-4", "route", "show"])?;
        eprintln!("main table while connected:\n{main}");
        for line in before_main.lines() {
            ensure!(
                main.lines().any(|l| l == line),
                "the host's route {line:?} is gone or changed while connected:\n{main}\n{}",
                ctx()
            );
        }
        // The exact prefix: still (only) the host's route; the covering /16 too.
        ensure!(
            self.exact(EXACT)?.lines().count() == 1 && !self.exact(EXACT)?.contains(DEFAULT_TUN),
            "{EXACT} while connected: {:?}",
            self.exact(EXACT)?
        );
        ensure!(
            !self.exact(COVERING)?.contains(DEFAULT_TUN),
            "{COVERING} moved into the tunnel"
        );
        // The covered prefix and the LAN: routes of their own into the tunnel.
        let lan = self.topo.lan_net.network().to_string();
        for prefix in [COVERED, lan.as_str()] {
            let r = self.exact(prefix)?;
            ensure!(
                r.contains(&format!("dev {DEFAULT_TUN}")),
                "no route for {prefix} into {DEFAULT_TUN}: {r:?}\n{main}"
            );
        }
        let get = self.route_get(EXACT_HOST)?;
        ensure!(
            get.contains("dev up0")
                && get.contains(&format!("via {}", self.topo.client(0).gateway_addr)),
            "{EXACT_HOST} should stay on the underlay: {get}"
        );
        for host in [COVERED_HOST, self.topo.lan_host] {
            let get = self.route_get(host)?;
            ensure!(
                get.contains(&format!("dev {DEFAULT_TUN}")),
                "{host} should go into the tunnel: {get}"
            );
        }

        // Traffic: through the TUN device for the covered prefix and the LAN, not for the
        // exact one.
        for host in [COVERED_HOST, self.topo.lan_host] {
            let tx = self.tun_tx_packets()?;
            ensure!(
                ping(self.ns(), host, 3, Duration::from_secs(10)),
                "no reply from {host} through the tunnel\n{}",
                ctx()
            );
            let sent = self.tun_tx_packets()? - tx;
            ensure!(
                sent >= 3,
                "3 pings to {host} but {sent} packets into {DEFAULT_TUN}"
            );
        }
        let tx = self.tun_tx_packets()?;
        ensure!(
            ping(self.ns(), EXACT_HOST, 3, Duration::from_secs(10)),
            "no reply from {EXACT_HOST} over the underlay\n{}",
            ctx()
        );
        let sent = self.tun_tx_packets()? - tx;
        ensure!(
            sent == 0,
            "pings to {EXACT_HOST} put {sent} packets into the tunnel"
        );

        let log = svc.log();
        ensure!(
            log.lines()
                .any(|l| l.contains(KEPT_WARNING) && l.contains(EXACT)),
            "the service did not say it kept the host's route to {EXACT}:\n{}",
            svc.log_tail(30)
        );
        Ok(())
    }

    /// After the tunnel is gone: no TUN device, no journal, and every route and rule exactly
    /// as before.
    fn check_restored(&self, before: &str, when: &str) -> Result<()> {
        ensure!(
            !link_exists(self.ns(), DEFAULT_TUN)?,
            "{DEFAULT_TUN} still exists {when}"
        );
        let after = self.snapshot()?;
        ensure!(
            after == before,
            "routes/rules not restored {when}:\n--- before\n{before}--- after\n{after}"
        );
        ensure!(
            !self.client.journal().exists(),
            "the network journal is still there {when}"
        );
        Ok(())
    }
}

fn logs(gw: &Gatehoused, svc: &ClientService) -> String {
    format!(
        "gatehoused log:\n{}\nclient service log:\n{}",
        gw.log_tail(20),
        svc.log_tail(40)
    )
}

#[test]
fn routes_the_host_had_before_connecting_are_there_again_after() -> Result<()> {
    let started = Instant::now();
    let w = World::new()?;
    let before = w.snapshot()?;
    let before_main = w.ip(&["-4", "route", "show"])?;
    eprintln!("before:\n{before}");
    let gw = Gatehoused::start(&w.topo.gateway, &w.gw_dir, &w.path("gatehoused.log"))?;

    // Disconnect, over OpenVPN (pushed `route`s) and IKEv2 (narrowed traffic selectors).
    let svc = ClientService::start(w.ns(), &w.client, &w.path("service-1.log"))?;
    for protocol in ["openvpn-udp", "ikev2"] {
        let ctx = || logs(&gw, &svc);
        w.connect(protocol, &ctx)?;
        w.check_connected(&before_main, &svc, &ctx)
            .with_context(|| format!("connected over {protocol}"))?;
        let out = w.client.run_ok(Some(w.ns()), &["disconnect"])?;
        eprintln!("{out}");
        w.check_restored(&before, &format!("after disconnecting {protocol}"))
            .with_context(ctx)?;
        eprintln!(
            "{protocol}: restored ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }

    // A service killed while connected: the next start undoes what its journal holds.
    let ctx = || logs(&gw, &svc);
    w.connect("openvpn-udp", &ctx)?;
    w.check_connected(&before_main, &svc, &ctx)?;
    svc.kill_hard()?;
    drop(svc);
    let svc = ClientService::start(w.ns(), &w.client, &w.path("service-2.log"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.client.journal().exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    w.check_restored(&before, "after a SIGKILL and the next start")
        .with_context(|| logs(&gw, &svc))?;
    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(30));
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    drop(svc);
    drop(gw);
    drop(w);
    Ok(())
}
