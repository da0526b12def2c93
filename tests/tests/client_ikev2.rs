//! IKEv2 end to end, in namespaces: Gatehouse's own client (`gatehouse connect --protocol
//! ikev2`) against Gatehouse's gateway (dual stack: an IPv6 address inside the tunnel too)
//! and against a stock strongSwan responder (IPv4 only), and a
//! strongSwan road warrior that keeps rekeying against Gatehouse's gateway (two minutes in CI,
//! `GATEHOUSE_SOAK_SECS=600` for the ten-minute run by hand).
//!
//! Every test builds its own topology (tag `k*`, subnet index 60..=69), data directory,
//! certificates and client home in its own temporary folder, so the tests run in parallel
//! with each other and with the other suites. Neither the client nor strongSwan ever touches
//! the host's resolv.conf: the client edits a scratch file (`GATEHOUSE_RESOLV_CONF`, set by the
//! harness), strongSwan's resolve plugin writes a file in the test's folder (`strongswan.rs`).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::client::{
    CliOutput, ClientHome, ClientService, ClientStatus, DEFAULT_TUN, link_exists, routes,
};
use gatehouse_tests::gatehoused::{
    CONNECTED, DISCONNECTED, Gatehoused, GatewayDir, certs_cli, toml_str, tun_ipv4,
};
use gatehouse_tests::ipv6::{check_tunnel_ipv6, lan_ipv6_between};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::strongswan::{Charon, RoadWarrior, SwanctlCreds, ping_run, tail};
use gatehouse_tests::{GatewayTopology, Ipv4Cidr, Netns, require_commands, require_root};
use tempfile::TempDir;

/// What the scratch resolv.conf holds before the client touches it.
const RESOLV_BEFORE: &str = "# scratch resolv.conf of a gatehouse IKEv2 end-to-end test\n\
                             nameserver 192.0.2.53\n\
                             search example.invalid\n\
                             options edns0 timeout:1\n";
/// How long `gatehouse connect` may run (it gives up by itself after 60 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the gateway gets to log an event once the client says it happened.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The client's name in every test.
const NAME: &str = "alice";

/// One test's world: namespaces, a temporary folder, a gateway data directory (its PKI is
/// also what a strongSwan responder's certificates come from) and a client home.
struct Setup {
    // Dropped in this order: the namespaces (and whatever still runs in them), then files.
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    client: ClientHome,
    dir: TempDir,
}

impl Setup {
    /// Topology `tag`/`subnet_index` with one client; `gatehoused init` for it (TUN
    /// `ghd<subnet_index>`, DNS 10.251.X.53 pushed); `alice` issued (ECDSA, by
    /// `gatehouse-certs`) and imported into a client home whose scratch resolv.conf holds
    /// [`RESOLV_BEFORE`]. The profile dials the gateway's address on client 0's link.
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

    fn ns(&self) -> &Netns {
        &self.topo.client(0).ns
    }

    /// The gateway's address on the client's link: what the profile dials.
    fn gw_addr(&self) -> Ipv4Addr {
        self.topo.client(0).gateway_addr
    }

    /// The DNS server pushed to the client.
    fn dns(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.topo.subnet_index, 53)
    }

    fn start_gateway(&self, log: &str) -> Result<Gatehoused> {
        Gatehoused::start(&self.topo.gateway, &self.gw_dir, &self.path(log))
    }

    fn start_service(&self, log: &str) -> Result<ClientService> {
        ClientService::start(self.ns(), &self.client, &self.path(log))
    }

    /// `gatehouse connect alice --protocol ikev2` in the client namespace.
    fn connect_ikev2(&self) -> Result<CliOutput> {
        let out = self.client.run(
            Some(self.ns()),
            &["connect", NAME, "--protocol", "ikev2"],
            CONNECT_TIMEOUT,
        )?;
        eprintln!("{out}");
        Ok(out)
    }

    fn status(&self) -> Result<ClientStatus> {
        self.client.status(self.ns())
    }

    fn resolv_conf(&self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.client.resolv_conf_bytes()?).into_owned())
    }

    /// A `connected` status over ikev2 to the profile's gateway, with an address inside
    /// `pool` (not its first address) that is also on the client's TUN device. Returns the
    /// address.
    fn check_connected_ikev2(&self, st: &ClientStatus, pool: Ipv4Cidr) -> Result<Ipv4Addr> {
        ensure!(
            st.state() == "connected",
            "expected state connected: {}",
            st.json
        );
        ensure!(
            st.protocol() == Some("ikev2"),
            "expected protocol ikev2: {}",
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
        ensure!(
            Ipv4Cidr::new(addr, pool.prefix).network() == pool.network(),
            "client address {addr} is outside the pool {pool}: {}",
            st.json
        );
        let gateway = format!("{}:", self.gw_addr());
        ensure!(
            st.str("gateway").is_some_and(|g| g.starts_with(&gateway)),
            "expected gateway {gateway}PORT: {}",
            st.json
        );
        let tun = tun_ipv4(self.ns(), DEFAULT_TUN)?;
        ensure!(
            tun.addr == addr,
            "status says address {addr} but {DEFAULT_TUN} has {tun}"
        );
        Ok(addr)
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

/// The client service's log (and the peer's, given as `peer`), for a failure's context.
fn logs(peer: &str, svc: &ClientService) -> String {
    format!(
        "{peer}\nclient service log {}:\n{}",
        svc.proc().log_path().display(),
        svc.log_tail(40)
    )
}

fn gw_logs(gw: &Gatehoused) -> String {
    format!(
        "gatehoused log {}:\n{}",
        gw.proc().log_path().display(),
        gw.log_tail(30)
    )
}

fn charon_logs(charon: &Charon) -> String {
    format!(
        "strongSwan log {}:\n{}",
        charon.log_path().display(),
        charon.log_tail(40)
    )
}

/// The IPv6 client pool of the `ka` test, and its LAN (the gateway `::1`, the host `::10`).
const KA_POOL_V6: &str = "fd00:6a7e:3c:8::/64";
const KA_LAN_V6: &str = "fd00:6a7e:3c:251::/64";
const KA_GW_LAN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6a7e, 0x3c, 0x251, 0, 0, 0, 1);
const KA_LAN_HOST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6a7e, 0x3c, 0x251, 0, 0, 0, 0x10);

/// Dual stack: the gateway has an IPv6 pool and LAN, so the client asks for and gets an IPv6
/// address inside the IKEv2 tunnel and reaches the LAN host over both families.
#[test]
fn gatehouse_ikev2_to_gatehoused() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("ka", 60)?;
    lan_ipv6_between(
        &s.topo.gateway,
        "lan0",
        KA_GW_LAN_V6,
        &s.topo.lan,
        "gw0",
        KA_LAN_HOST_V6,
    )?;
    s.gw_dir.set("client_pool_v6", &toml_str(KA_POOL_V6))?;
    s.gw_dir
        .set("address_space_v6", &format!("[{}]", toml_str(KA_LAN_V6)))?;
    let gw = s.start_gateway("gatehoused.log")?;
    let svc = s.start_service("service.log")?;
    let ctx = || logs(&gw_logs(&gw), &svc);
    let before = s.client.resolv_conf_bytes()?;

    let out = s.connect_ikev2()?;
    ensure!(out.success(), "{out}\n{}", ctx());
    let st = s.status()?;
    eprintln!("status: {}", st.json);
    let addr = s
        .check_connected_ikev2(&st, s.topo.vpn_pool)
        .with_context(ctx)?;
    ensure!(
        addr != Ipv4Addr::from(u32::from(s.topo.vpn_pool.network().addr) + 1),
        "client got {addr}, the gateway's own address in the pool"
    );
    let event = gw
        .wait_event(
            CONNECTED,
            |e| e.field("client") == Some(NAME) && e.field("transport") == Some("ikev2"),
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
        event.remote_is(s.topo.client(0).addr),
        "gatehoused logged remote {:?}, expected {}:PORT: {}",
        event.field("remote"),
        s.topo.client(0).addr,
        event.line
    );
    wait_ping(s.ns(), s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    s.check_tunnel_dns().with_context(ctx)?;

    // IPv6: an address of the pool on the TUN device, the one the gateway logged, and the
    // LAN host's IPv6 address answers through the tunnel.
    check_tunnel_ipv6(s.ns(), DEFAULT_TUN, KA_POOL_V6, &event, KA_LAN_HOST_V6, ctx)?;

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
    let gone = gw
        .wait_event(
            DISCONNECTED,
            |e| e.field("client") == Some(NAME),
            EVENT_TIMEOUT,
        )
        .with_context(ctx)?;
    eprintln!("{}", gone.line);
    ensure!(svc.proc().is_running(), "the service died:\n{}", ctx());
    ensure!(gw.is_running(), "gatehoused died:\n{}", ctx());
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A stock strongSwan responder (charon-systemd, kernel-libipsec) in the gateway namespace:
/// the gateway certificate from `gatehouse-certs issue-server --name gw --san GW_IP`, the
/// clients' CA trusted, a pool 10.9.X.0/24 with DNS, the LAN as its traffic selector, and
/// otherwise strongSwan's defaults (proposals, fragmentation, ...).
fn strongswan_responder(s: &Setup, pool: Ipv4Cidr) -> Result<Charon> {
    require_commands(&["charon-systemd", "swanctl"]);
    let pki = s.gw_dir.pki();
    let gw_ip = s.gw_addr().to_string();
    let printed = certs_cli(
        &pki,
        &["issue-server", "--name", "gw", "--san", gw_ip.as_str()],
    )?;
    eprintln!("issue-server gw: {}", printed.trim());
    let cert = pki.join("server").join("gw.crt");
    let key = pki.join("server").join("gw.key");
    ensure!(
        cert.exists() && key.exists(),
        "issue-server --name gw wrote no {} / {}: {printed}",
        cert.display(),
        key.display()
    );
    let charon = Charon::start(&s.topo.gateway, &s.path("strongswan-gw"), "")?;
    let cert_name = charon.install_creds(
        "gw",
        &SwanctlCreds {
            ca: s.gw_dir.ca_cert(),
            cert,
            key,
        },
    )?;
    let conf = format!(
        "connections {{
  rw {{
    version = 2
    local_addrs = {gw_ip}
    pools = rw-pool
    local {{
      auth = pubkey
      certs = {cert_name}
      id = {gw_ip}
    }}
    remote {{
      auth = pubkey
      id = %any
    }}
    children {{
      rw {{
        local_ts = {lan}
        dpd_action = clear
      }}
    }}
  }}
}}
pools {{
  rw-pool {{
    addrs = {pool}
    dns = {dns}
  }}
}}
",
        lan = s.topo.lan_net.network(),
        pool = pool.network(),
        dns = s.dns(),
    );
    charon.write_swanctl_conf(&conf)?;
    let loaded = charon.load_all().with_context(|| charon_logs(&charon))?;
    eprintln!("swanctl --load-all:\n{}", loaded.trim_end());
    Ok(charon)
}

#[test]
fn gatehouse_ikev2_to_strongswan_responder() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("kb", 61)?;
    let pool = Ipv4Cidr::new(Ipv4Addr::new(10, 9, 61, 0), 24);
    let charon = strongswan_responder(&s, pool)?;
    let svc = s.start_service("service.log")?;
    let ctx = || logs(&charon_logs(&charon), &svc);
    let before = s.client.resolv_conf_bytes()?;

    let out = s.connect_ikev2()?;
    ensure!(out.success(), "{out}\n{}", ctx());
    let st = s.status()?;
    eprintln!("status: {}", st.json);
    let addr = s.check_connected_ikev2(&st, pool).with_context(ctx)?;
    let sas = charon.swanctl(&["--list-sas"])?;
    eprintln!("strongSwan's SAs:\n{}", sas.trim_end());
    ensure!(
        sas.contains("ESTABLISHED") && sas.contains("INSTALLED") && sas.contains(&addr.to_string()),
        "strongSwan lists no established IKE SA with an installed CHILD SA for {addr}:\n{sas}\n{}",
        ctx()
    );
    wait_ping(s.ns(), s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    s.check_tunnel_dns().with_context(ctx)?;

    // A clean goodbye: strongSwan gets the IKE DELETE.
    s.client.run_ok(Some(s.ns()), &["disconnect"])?;
    ensure!(
        s.status()?.state() == "disconnected",
        "after `gatehouse disconnect`\n{}",
        ctx()
    );
    s.check_clean(&before).with_context(ctx)?;
    charon
        .wait_log("received DELETE for IKE_SA", EVENT_TIMEOUT)
        .with_context(ctx)?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// How many distinct CHILD SAs named `child` strongSwan established (the first one and every
/// rekey: it logs `[inbound |outbound ]CHILD_SA NAME{N} established with SPIs ...`).
fn child_sas_established(log: &str, child: &str) -> usize {
    let pat = format!("CHILD_SA {child}{{");
    let mut ids: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("established with SPIs"))
        .filter_map(|l| l.split(&pat).nth(1))
        .filter_map(|rest| rest.split('}').next())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// How many IKE SA rekeys strongSwan completed (`IKE_SA NAME[N] rekeyed between ...`).
fn ike_rekeys(log: &str, name: &str) -> usize {
    let pat = format!("IKE_SA {name}[");
    log.lines()
        .filter(|l| l.contains(&pat) && l.contains("rekeyed between"))
        .count()
}

/// How long the rekey soak runs: 120 s in CI, `GATEHOUSE_SOAK_SECS` for a longer run by hand
/// (bench/README.md: 600 s, as measured before).
fn soak_secs() -> u32 {
    std::env::var("GATEHOUSE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s: &u32| s >= 60)
        .unwrap_or(120)
}

#[test]
fn strongswan_rekey_soak_loses_no_ping() -> Result<()> {
    let started = Instant::now();
    let secs = soak_secs();
    let s = Setup::new("kc", 62)?;
    require_commands(&["charon-systemd", "swanctl"]);
    let gw = s.start_gateway("gatehoused.log")?;
    let issued = s.gw_dir.issue_client("erin", &[])?;
    let charon = Charon::start(s.ns(), &s.path("swanctl-erin"), "")?;
    let cert = charon.install_creds(
        "erin",
        &SwanctlCreds {
            ca: s.gw_dir.ca_cert(),
            cert: issued.cert,
            key: issued.key,
        },
    )?;
    let mut rw = RoadWarrior::new("gh", s.gw_addr(), &cert);
    // IKE SA: rekey after 17..20 s (rand_time 3 s), hard limit 5 s later.
    rw.rekey_time = "20s".to_string();
    rw.extra = vec!["over_time = 5s".to_string(), "rand_time = 3s".to_string()];
    // CHILD SA: rekey after 8..10 s, expire at 15 s.
    rw.child_rekey_time = "10s".to_string();
    rw.child_extra = vec!["rand_time = 2s".to_string(), "life_time = 15s".to_string()];
    charon.write_conns(&[&rw], "")?;
    let ctx = || format!("{}\n{}", gw_logs(&gw), charon_logs(&charon));
    charon.load_all().with_context(ctx)?;
    charon.initiate(&rw.child()).with_context(ctx)?;
    let event = gw.wait_connected("erin", EVENT_TIMEOUT).with_context(ctx)?;
    eprintln!("{}", event.line);
    wait_ping(s.ns(), s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;

    // Two pings a second for the whole soak, across an IKE rekey every ~20 s and a CHILD
    // rekey every ~10 s.
    let run = Instant::now();
    let count = secs * 2;
    let ((sent, received), out) = ping_run(s.ns(), s.topo.lan_host, count, "0.5")?;
    let log = charon.log();
    let ike = ike_rekeys(&log, &rw.name);
    let children = child_sas_established(&log, &rw.child());
    let child_rekeys = children.saturating_sub(1);
    let disconnects = gw.events(DISCONNECTED);
    eprintln!(
        "{:.0} s of ping: {sent} sent, {received} received; IKE rekeys: {ike}; CHILD SAs \
         established: {children} ({child_rekeys} rekeys); gateway disconnects: {}",
        run.elapsed().as_secs_f64(),
        disconnects.len()
    );
    for l in log.lines().filter(|l| {
        l.contains("rekeyed between")
            || l.contains("reauthentication")
            || l.contains("giving up")
            || l.contains("deleting IKE_SA")
            || l.contains("NO_PROPOSAL")
            || l.contains("TEMPORARY_FAILURE")
            || l.contains("NO_ADDITIONAL_SAS")
    }) {
        eprintln!("  {l}");
    }
    for l in out.lines().filter(|l| !l.contains("bytes from")).take(40) {
        eprintln!("  ping: {l}");
    }

    let mut failures = Vec::new();
    if sent != count || sent.saturating_sub(received) > 1 {
        failures.push(format!(
            "pings lost: {sent} sent, {received} received (at most 1 may be lost)\n{}",
            tail(&out, 3)
        ));
    }
    let (want_ike, want_child) = (secs as usize / 20 - 1, secs as usize / 10 - 2);
    if ike < want_ike {
        failures.push(format!(
            "only {ike} IKE SA rekeys in {secs} s (expected >= {want_ike} with rekey_time 20s)"
        ));
    }
    if child_rekeys < want_child {
        failures.push(format!(
            "only {child_rekeys} CHILD SA rekeys in {secs} s (expected >= {want_child} with \
             rekey_time 10s)"
        ));
    }
    if !disconnects.is_empty() {
        failures.push(format!(
            "the gateway logged {DISCONNECTED:?} during the run:\n{}",
            disconnects
                .iter()
                .map(|e| e.line.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if log.contains("starting reauthentication") {
        failures.push("strongSwan reauthenticated instead of rekeying".to_string());
    }
    // Still connected at the end: one established IKE SA with an installed CHILD SA, and the
    // tunnel still carries traffic.
    let sas = charon.swanctl(&["--list-sas"])?;
    eprintln!("strongSwan's SAs at the end:\n{}", sas.trim_end());
    if !(sas.contains("ESTABLISHED") && sas.contains("INSTALLED")) {
        failures.push(format!(
            "no established IKE SA with an installed CHILD SA at the end:\n{sas}"
        ));
    }
    if let Err(e) = wait_ping(s.ns(), s.topo.lan_host, Duration::from_secs(5)) {
        failures.push(format!("the tunnel no longer works at the end: {e:#}"));
    }
    if !gw.is_running() {
        failures.push("gatehoused died".to_string());
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    ensure!(failures.is_empty(), "{}\n{}", failures.join("\n"), ctx());
    Ok(())
}
