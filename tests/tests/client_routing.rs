//! The user's routing choice and auto-connect, end to end: Gatehouse's gateway (split
//! tunnel: it pushes only its LAN) and the `gatehouse` client service in namespaces (tag
//! `rc`, subnet index 233).
//!
//! - A user full tunnel on that split gateway: an address outside the gateway's address
//!   space (one on the gateway namespace's loopback) is routed into the tunnel and answers
//!   through it, the gateway itself stays on the underlay, IPv6 (the tunnel has none) is
//!   unreachable rather than leaked; a user extra route is installed; all of it gone after
//!   disconnecting. A gateway with `client_routing = "fixed"` makes the client refuse the
//!   choice, naming the setting.
//! - Auto-connect: the client's default route is its network (next hop + MAC). On an
//!   untrusted network the service connects by itself; after a manual disconnect it does not
//!   until the network changes; on a trusted network it does not; untrusting it again does.
//!   A changed default route in the client namespace is the network change.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::client::{ClientHome, ClientService, ClientStatus, DEFAULT_TUN};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, toml_str};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::{GatewayTopology, Netns, require_commands, require_root};
use tempfile::TempDir;

const TAG: &str = "rc";
const SUBNET: u8 = 233;
const NAME: &str = "alice";
/// An address outside the gateway's address space (its LAN, 10.251.233.0/24), on the
/// gateway namespace's loopback: only a full tunnel takes it through the gateway.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 252, SUBNET, 1);
/// The user's extra route (nothing is sent to it).
const EXTRA: &str = "10.253.233.0/24";
/// The second network's next hop (an address the test adds to the gateway's link).
const OTHER_HOP: Ipv4Addr = Ipv4Addr::new(10, 250, SUBNET, 9);
const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    client: ClientHome,
    dir: TempDir,
}

impl Setup {
    fn ns(&self) -> &Netns {
        &self.topo.client(0).ns
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn gatehouse(&self, args: &[&str]) -> Result<String> {
        let out = self.client.run_ok(Some(self.ns()), args)?;
        eprintln!("{out}");
        Ok(out.stdout)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        self.ns().exec_ok("ip", args)
    }

    fn wait_state(&self, state: &str, svc: &ClientService) -> Result<ClientStatus> {
        let (st, _) = self.client.wait_status(
            self.ns(),
            WAIT,
            |s| s.state() == state,
            || svc.log_tail(40),
        )?;
        Ok(st)
    }

    /// The state stays `state` for `how_long` (the service had every chance to connect).
    fn stays(&self, state: &str, how_long: Duration, svc: &ClientService) -> Result<()> {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            let st = self.client.status(self.ns())?;
            ensure!(
                st.state() == state,
                "expected to stay {state}, got {}\n{}",
                st.json,
                svc.log_tail(40)
            );
            thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn set_default_route(&self, via: Ipv4Addr) -> Result<()> {
        self.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &via.to_string(),
            "dev",
            "up0",
        ])
        .map(drop)
    }
}

#[test]
fn user_full_tunnel_extra_routes_and_auto_connect_on_untrusted_networks() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new(TAG, SUBNET, 1)?;
    let gw_dir =
        GatewayDir::for_topology(&dir.path().join("gateway"), &topo, &format!("ghd{SUBNET}"))?;
    gw_dir.issue_client(NAME, &[])?;
    let client = ClientHome::new(&dir.path().join("client"), "nameserver 192.0.2.53\n")?;
    client.import_profile(&gw_dir, NAME, topo.client(0).gateway_addr)?;
    let s = Setup {
        topo,
        gw_dir,
        client,
        dir,
    };
    s.topo
        .gateway
        .exec_ok("ip", ["addr", "add", &format!("{OUTSIDE}/32"), "dev", "lo"])?;
    let gw = Gatehoused::start(&s.topo.gateway, &s.gw_dir, &s.path("gatehoused.log"))?;
    let svc = ClientService::start(s.ns(), &s.client, &s.path("service.log"))?;
    let ctx = || format!("{}\n{}", gw.log_tail(30), svc.log_tail(40));

    // --- A user full tunnel and an extra route on a split-tunnel gateway.
    let shown = s.gatehouse(&[
        "profile",
        "set",
        NAME,
        "--routing",
        "full",
        "--route",
        EXTRA,
    ])?;
    ensure!(shown.contains("routing full +1 route"), "{shown}");
    let shown = s.gatehouse(&["profile", "show", NAME])?;
    ensure!(
        shown.contains("routing:          full (the user may choose)")
            && shown.contains(&format!("extra routes:     {EXTRA}")),
        "{shown}"
    );
    s.gatehouse(&["connect", NAME])?;
    let st = s.wait_state("connected", &svc)?;
    let addr = st.address().context("no address")?;
    let get = s.ip(&["-4", "route", "get", &OUTSIDE.to_string()])?;
    ensure!(
        get.contains(&format!("dev {DEFAULT_TUN}")),
        "{OUTSIDE} is not routed into the tunnel: {get}"
    );
    // It answers through the gateway (the gateway routes it back into the tunnel).
    wait_ping(s.ns(), OUTSIDE, Duration::from_secs(10)).with_context(ctx)?;
    let get = s.ip(&[
        "-4",
        "route",
        "get",
        &s.topo.client(0).gateway_addr.to_string(),
    ])?;
    ensure!(
        get.contains("dev up0"),
        "the gateway itself must stay outside the tunnel: {get}"
    );
    let extra = s.ip(&["-4", "route", "show", EXTRA])?;
    ensure!(
        extra.contains(&format!("dev {DEFAULT_TUN}")),
        "extra route {EXTRA} not installed: {extra}"
    );
    // The tunnel has no IPv6: IPv6 is unreachable, not sent around it.
    let v6 = s.ip(&["-6", "route", "show"])?;
    ensure!(
        v6.contains("unreachable ::/1") && v6.contains("unreachable 8000::/1"),
        "IPv6 not blocked in a full tunnel without IPv6: {v6}"
    );
    eprintln!("full tunnel as {addr}: {OUTSIDE} through the tunnel, {EXTRA} routed, IPv6 blocked");
    s.gatehouse(&["disconnect"])?;
    s.wait_state("disconnected", &svc)?;
    let after = format!(
        "{}{}",
        s.ip(&["-4", "route", "show"])?,
        s.ip(&["-6", "route", "show"])?
    );
    ensure!(
        !after.contains(EXTRA) && !after.contains("0.0.0.0/1") && !after.contains("unreachable"),
        "routes left after disconnecting: {after}"
    );

    // --- A gateway that fixes the routes: the choice is refused, naming the setting.
    s.gw_dir.set("client_routing", &toml_str("fixed"))?;
    s.gw_dir.issue_client("bob", &[])?;
    s.client
        .import_profile(&s.gw_dir, "bob", s.topo.client(0).gateway_addr)?;
    let refused = s.client.run(
        Some(s.ns()),
        &["profile", "set", "bob", "--routing", "split"],
        WAIT,
    )?;
    ensure!(
        !refused.success() && refused.stderr.contains("client_routing = \"fixed\""),
        "{refused}"
    );

    // --- Auto-connect. Network A: default via the gateway's link address.
    s.gatehouse(&[
        "profile",
        "set",
        NAME,
        "--routing",
        "gateway",
        "--clear-routes",
    ])?;
    s.topo.gateway.exec_ok(
        "ip",
        ["addr", "add", &format!("{OTHER_HOP}/30"), "dev", "cl0"],
    )?;
    s.ip(&["addr", "add", "10.250.233.10/30", "dev", "up0"])?;
    let hop_a = s.topo.client(0).gateway_addr;
    s.set_default_route(hop_a)?;
    // Untrusted: turning auto-connect on connects at once.
    s.gatehouse(&["profile", "set", NAME, "--auto-connect", "untrusted"])?;
    s.wait_state("connected", &svc)?;
    // The user disconnects: not again on this network.
    s.gatehouse(&["disconnect"])?;
    s.wait_state("disconnected", &svc)?;
    let trusted = s.gatehouse(&["network", "trust"])?;
    ensure!(trusted.contains(&format!("gateway {hop_a}")), "{trusted}");
    s.stays("disconnected", Duration::from_secs(2), &svc)?;
    // Network B (another next hop): untrusted, connects by itself.
    s.set_default_route(OTHER_HOP)?;
    s.wait_state("connected", &svc)?;
    s.gatehouse(&["disconnect"])?;
    s.wait_state("disconnected", &svc)?;
    // Back on A, which is trusted: no auto-connect.
    s.set_default_route(hop_a)?;
    s.stays("disconnected", Duration::from_secs(3), &svc)?;
    let listed = s.gatehouse(&["network", "list"])?;
    ensure!(listed.contains("(trusts this network)"), "{listed}");
    // Not trusted any more: it connects - so it was the trust that held it back.
    s.gatehouse(&["network", "untrust"])?;
    s.wait_state("connected", &svc)?;
    s.gatehouse(&["disconnect"])?;
    s.wait_state("disconnected", &svc)?;
    let log = svc.log();
    ensure!(
        log.matches("auto-connect: this network is not trusted")
            .count()
            >= 3,
        "{log}"
    );
    eprintln!("took {:?}", started.elapsed());
    Ok(())
}
