//! Split DNS (issue 18): the gateway pushes `dns_domains = ["corp.example"]`; our client
//! (`gatehouse connect`, no systemd-resolved in the namespace) points resolv.conf at its
//! forwarder, which sends names under corp.example through the tunnel to the gateway's DNS
//! server and every other name to the resolver the host had before. A capture on the
//! client's underlay sees the other names' queries and never a corp.example one. After
//! disconnect, and after SIGKILL of the client service and its next start, resolv.conf is
//! back byte for byte.
//!
//! Topology: tag `sd`, subnet index 229 (10.250.229.0/24 underlay, 10.251.229.0/24 LAN). The
//! corporate DNS server runs on the LAN host (10.251.229.10); the "local" resolver on
//! 198.18.229.53, an address of the gateway's namespace the client reaches over its underlay
//! (like a home router's resolver). The client edits the harness's scratch resolv.conf; the
//! client namespace sees it as /etc/resolv.conf through a symlink /etc/netns/<ns>/resolv.conf
//! (`ip netns exec` bind-mounts it), so `getent` there uses it. The host's is never touched.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::client::{ClientHome, ClientService};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, toml_str};
use gatehouse_tests::{GatewayTopology, Netns, require_commands, require_root};

const NAME: &str = "alice";
const SUBNET: u8 = 229;
const LOCAL_DNS: Ipv4Addr = Ipv4Addr::new(198, 18, 229, 53);
const CORP_NAME: &str = "host.corp.example";
const CORP_ADDR: &str = "10.251.229.80";
const OTHER_NAME: &str = "www.other.test";
const OTHER_ADDR: &str = "198.18.229.80";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// The client namespace's /etc/resolv.conf: a symlink `/etc/netns/<ns>/resolv.conf` to the
/// scratch file, removed (with its folder) on drop.
struct NsResolvConf {
    dir: PathBuf,
    target: PathBuf,
}

impl NsResolvConf {
    fn new(ns: &Netns, target: &std::path::Path) -> Result<Self> {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let me = Self {
            dir,
            target: target.to_path_buf(),
        };
        std::os::unix::fs::symlink(target, me.path())?;
        Ok(me)
    }

    fn path(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.target).unwrap_or_default()
    }
}

impl Drop for NsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `getent hosts NAME` in the client namespace: the address it resolved to.
fn resolve(ns: &Netns, name: &str) -> Option<String> {
    let out = ns.exec("getent", ["hosts", name]).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().map(str::to_owned)
}

#[test]
fn pushed_domains_resolve_through_the_tunnel_and_the_rest_locally() -> Result<()> {
    let started = Instant::now();
    require_root();
    require_commands(&["ip", "getent", "tshark"]);
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("sd", SUBNET, 1)?;
    let ns = &topo.client(0).ns;
    let up = topo.client(0).gateway_addr;
    let before = format!("# resolv.conf of split_dns before connecting\nnameserver {LOCAL_DNS}\n");
    let client = ClientHome::new(&dir.path().join("client"), &before)?;
    let resolv = NsResolvConf::new(ns, &client.resolv_conf())?;

    // The local resolver, across the underlay; the corporate one on the LAN.
    topo.gateway.exec_ok(
        "ip",
        ["addr", "add", &format!("{LOCAL_DNS}/32"), "dev", "lo"],
    )?;
    ns.exec_ok(
        "ip",
        ["route", "add", "198.18.229.0/24", "via", &up.to_string()],
    )?;
    let responder = env!("CARGO_BIN_EXE_dns-responder");
    let local_dns = topo.gateway.spawn(
        responder,
        [
            "--listen",
            &format!("{LOCAL_DNS}:53"),
            "--answer",
            &format!("{OTHER_NAME}={OTHER_ADDR}"),
        ],
        &dir.path().join("local-dns.log"),
    )?;
    let corp_dns = topo.lan.spawn(
        responder,
        [
            "--listen",
            &format!("{}:53", topo.lan_host),
            "--answer",
            &format!("{CORP_NAME}={CORP_ADDR}"),
        ],
        &dir.path().join("corp-dns.log"),
    )?;
    local_dns.wait_for_log("listening", Duration::from_secs(5))?;
    corp_dns.wait_for_log("listening", Duration::from_secs(5))?;
    ensure!(
        resolve(ns, OTHER_NAME).as_deref() == Some(OTHER_ADDR),
        "the local resolver does not answer before connecting:\n{}",
        local_dns.log_tail(10)
    );

    let gw_dir =
        GatewayDir::for_topology(&dir.path().join("gateway"), &topo, &format!("ghd{SUBNET}"))?;
    gw_dir.set(
        "dns",
        &format!("[{}]", toml_str(&topo.lan_host.to_string())),
    )?;
    gw_dir.set("dns_domains", &format!("[{}]", toml_str("corp.example")))?;
    gw_dir.issue_client(NAME, &[])?;
    client.import_profile(&gw_dir, NAME, up)?;

    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused.log"))?;
    let svc = ClientService::start(ns, &client, &dir.path().join("service-1.log"))?;
    let logs = |svc: &ClientService| {
        format!(
            "gatehoused log:\n{}\nclient service log:\n{}\ncorp DNS:\n{}\nlocal DNS:\n{}",
            gw.log_tail(20),
            svc.log_tail(40),
            corp_dns.log_tail(10),
            local_dns.log_tail(10)
        )
    };
    let out = client.run(
        Some(ns),
        &["connect", NAME, "--protocol", "openvpn-udp"],
        CONNECT_TIMEOUT,
    )?;
    ensure!(
        out.success() && out.stdout.contains("Connected"),
        "{out}\n{}",
        logs(&svc)
    );
    let during = resolv.text();
    ensure!(
        during.contains("nameserver 127.0.83.53") && !during.contains(&LOCAL_DNS.to_string()),
        "resolv.conf while connected does not point at the forwarder:\n{during}"
    );

    // Capture DNS on the underlay while both names are resolved.
    let capture = ns.spawn(
        "tshark",
        [
            "-i",
            "up0",
            "-n",
            "-l",
            "-f",
            "port 53",
            "-T",
            "fields",
            "-e",
            "ip.dst",
            "-e",
            "dns.qry.name",
        ],
        &dir.path().join("capture.log"),
    )?;
    // "Capturing on" comes before dumpcap has the interface; "Capture started" after (a
    // query sent in between was missed once: 0 packets captured).
    capture
        .wait_for_log("Capture started", Duration::from_secs(10))
        .with_context(|| capture.log_tail(10))?;
    let corp = resolve(ns, CORP_NAME);
    let other = resolve(ns, OTHER_NAME);
    // Let the last packets reach the capture.
    std::thread::sleep(Duration::from_millis(500));
    capture.stop();
    let seen = capture.log_contents();
    eprintln!("underlay capture:\n{seen}");
    ensure!(
        corp.as_deref() == Some(CORP_ADDR),
        "{CORP_NAME} resolved to {corp:?}\n{}",
        logs(&svc)
    );
    ensure!(
        other.as_deref() == Some(OTHER_ADDR),
        "{OTHER_NAME} resolved to {other:?}\n{}",
        logs(&svc)
    );
    ensure!(
        seen.contains(OTHER_NAME),
        "the capture saw no query for {OTHER_NAME}: is it capturing?\n{seen}"
    );
    ensure!(
        !seen.contains("corp.example"),
        "a query for corp.example left on the underlay in clear:\n{seen}"
    );
    let corp_log = corp_dns.log_contents();
    ensure!(
        corp_log.contains(&format!("query {CORP_NAME} from 10.8.229.")),
        "the corporate DNS server was not asked through the tunnel:\n{corp_log}"
    );
    ensure!(
        !local_dns.log_contents().contains("corp.example"),
        "the local resolver was asked for a corporate name:\n{}",
        local_dns.log_contents()
    );
    eprintln!(
        "split DNS: both names resolve, no corp query on the underlay ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    // Disconnect: the previous DNS comes back.
    client.run_ok(Some(ns), &["disconnect"])?;
    ensure!(
        resolv.text() == before,
        "resolv.conf after disconnect:\n{}",
        resolv.text()
    );

    // A crash: the next start of the service brings it back.
    let out = client.run(
        Some(ns),
        &["connect", NAME, "--protocol", "openvpn-udp"],
        CONNECT_TIMEOUT,
    )?;
    ensure!(out.success(), "{out}\n{}", logs(&svc));
    ensure!(resolv.text().contains("127.0.83.53"), "{}", resolv.text());
    svc.kill_hard()?;
    drop(svc);
    ensure!(
        resolv.text().contains("127.0.83.53"),
        "resolv.conf changed by SIGKILL alone?\n{}",
        resolv.text()
    );
    let svc = ClientService::start(ns, &client, &dir.path().join("service-2.log"))?;
    client.status(ns)?;
    ensure!(
        resolv.text() == before,
        "resolv.conf after the service's restart:\n{}\n{}",
        resolv.text(),
        svc.log_tail(20)
    );
    ensure!(
        resolve(ns, OTHER_NAME).as_deref() == Some(OTHER_ADDR),
        "the previous DNS does not work after recovery"
    );

    // IKEv2 carries the domains as INTERNAL_DNS_DOMAIN: the same split.
    let asked = corp_dns
        .log_contents()
        .matches("query host.corp.example")
        .count();
    let out = client.run(
        Some(ns),
        &["connect", NAME, "--protocol", "ikev2"],
        CONNECT_TIMEOUT,
    )?;
    ensure!(out.success(), "{out}\n{}", logs(&svc));
    ensure!(
        resolv.text().contains("127.0.83.53"),
        "IKEv2: resolv.conf does not point at the forwarder:\n{}",
        resolv.text()
    );
    ensure!(resolve(ns, CORP_NAME).as_deref() == Some(CORP_ADDR));
    ensure!(resolve(ns, OTHER_NAME).as_deref() == Some(OTHER_ADDR));
    ensure!(
        corp_dns
            .log_contents()
            .matches("query host.corp.example")
            .count()
            > asked,
        "IKEv2: the corporate DNS server was not asked:\n{}",
        logs(&svc)
    );
    client.run_ok(Some(ns), &["disconnect"])?;
    ensure!(resolv.text() == before, "IKEv2: {}", resolv.text());
    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(30));
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
