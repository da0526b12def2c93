//! IPv6 on the outside (the underlay), with the real stock peers, in namespaces: clients reach
//! the gateway over links that carry IPv6 only (their IPv4 addresses are removed after the
//! topology is built), and the gateway runs its default configuration (no `listen`: one
//! dual-stack socket per port). Over them the stock OpenVPN 2.6 client connects over UDP (with
//! the `.ovpn` `gatehouse-certs export` writes for an IPv6 gateway address) and over TCP,
//! Gatehouse's own client connects, and a strongSwan swanctl road warrior connects over
//! IKEv2; each pings the LAN host on IPv4 and IPv6 through its tunnel. A client on an IPv4
//! link at the same time is logged with its plain IPv4 address (never `::ffff:a.b.c.d`).
//!
//! Tag `u6`, subnet index 230; client `i`'s link is `fd00:230:i::/64` (gateway `::1`, client
//! `::2`); inside the tunnels IPv6 comes from `fd00:230:8::/64`, the LAN has
//! `fd00:230:251::/64`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::cidr::Ipv4Cidr;
use gatehouse_tests::client::{ClientHome, ClientService};
use gatehouse_tests::gatehoused::{
    Gatehoused, cert_files_from_ovpn, certs_cli, strip_ansi, toml_str, wait_client_up,
};
use gatehouse_tests::ipv6::{lan_ipv6, ping6, wait_ping6};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openvpn::{ClientConfig, Proto, UP_TIMEOUT, spawn_openvpn};
use gatehouse_tests::strongswan::{Charon, RoadWarrior, SwanctlCreds};
use gatehouse_tests::swan_site::{StartAction, SwanAuth, SwanSite, SwanSiteConfig};
use gatehouse_tests::{GatewaySetup, Proc};

const POOL_V6: &str = "fd00:230:8::/64";
const LAN_V6: &str = "fd00:230:251::/64";
const GW_LAN_V6: &str = "fd00:230:251::1";
const LAN_HOST_V6: &str = "fd00:230:251::10";
/// Clients 0-3 are on IPv6-only links (3: a strongSwan site); client 4 stays on IPv4.
const V6_CLIENTS: usize = 4;
/// The strongSwan site's network (an address on its namespace's loopback).
const SITE_NET: Ipv4Addr = Ipv4Addr::new(10, 230, 200, 0);
const SITE_HOST: Ipv4Addr = Ipv4Addr::new(10, 230, 200, 1);
const SITE_PSK: &str = "u6 site key 230: Jq4Wz8Rb2Nm7Tc5Y";

/// The gateway's address on client `i`'s link.
fn gw6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x230, i as u16, 0, 0, 0, 0, 1)
}

/// Client `i`'s address on its link.
fn client6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x230, i as u16, 0, 0, 0, 0, 2)
}

fn lan_host_v6() -> Ipv6Addr {
    LAN_HOST_V6.parse().expect("constant")
}

/// Client `i`'s link carries IPv6 only: its IPv4 addresses go, `fd00:230:i::/64` comes.
fn ipv6_only_link(s: &GatewaySetup, i: usize) -> Result<()> {
    let gw = &s.topo.gateway;
    let ns = s.ns(i);
    let gw_dev = format!("cl{i}");
    gw.exec_ok("ip", ["-4", "addr", "flush", "dev", &gw_dev])?;
    ns.exec_ok("ip", ["-4", "addr", "flush", "dev", "up0"])?;
    gw.exec_ok(
        "ip",
        [
            "-6",
            "addr",
            "add",
            &format!("{}/64", gw6(i)),
            "dev",
            &gw_dev,
            "nodad",
        ],
    )?;
    ns.exec_ok(
        "ip",
        [
            "-6",
            "addr",
            "add",
            &format!("{}/64", client6(i)),
            "dev",
            "up0",
            "nodad",
        ],
    )?;
    let v4 = ns.exec_ok("ip", ["-4", "-br", "addr", "show", "dev", "up0"])?;
    ensure!(!v4.contains('.'), "client {i}'s link still has IPv4: {v4}");
    wait_ping6(ns, gw6(i), Duration::from_secs(5))
}

fn logs(gw: &Gatehoused, client: &str) -> String {
    format!(
        "gatehoused log:\n{}\nclient log:\n{client}",
        gw.log_tail(25)
    )
}

/// Client `i` reaches the LAN host on IPv4 and IPv6 through its tunnel.
fn reaches_lan(
    s: &GatewaySetup,
    gw: &Gatehoused,
    i: usize,
    log: &dyn Fn() -> String,
) -> Result<()> {
    let ns = s.ns(i);
    wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(|| logs(gw, &log()))?;
    wait_ping6(ns, lan_host_v6(), Duration::from_secs(10)).with_context(|| logs(gw, &log()))?;
    let got = ping6(ns, lan_host_v6(), 5, None)?.1;
    ensure!(got >= 4, "IPv6 pings lost: {got}/5\n{}", logs(gw, &log()));
    Ok(())
}

/// gatehoused logged `name` as connected from client `i`'s IPv6 address.
fn connected_from(gw: &Gatehoused, name: &str, from: IpAddr) -> Result<()> {
    let event = gw.wait_connected(name, Duration::from_secs(5))?;
    let remote = event.field("remote").unwrap_or_default();
    let want = match from {
        IpAddr::V6(a) => format!("[{a}]:"),
        IpAddr::V4(a) => format!("{a}:"),
    };
    ensure!(
        remote.starts_with(&want),
        "gatehoused logged {name} from {remote:?}, not {from}: {}",
        event.line
    );
    Ok(())
}

fn openvpn_tcp(s: &GatewaySetup, i: usize, name: &str, dev: &str) -> Result<Proc> {
    let profile = s.profile(name, i)?;
    let certs = cert_files_from_ovpn(&profile, s.dir.path(), name)?;
    // `proto tcp-client` (like `proto udp`) resolves and dials either family: no `tcp6-client`.
    let mut config = ClientConfig::new(Proto::Tcp, gw6(i), 443, certs);
    config.dev = dev.to_string();
    let path = s.path(&format!("{dev}.conf"));
    config.write(&path)?;
    spawn_openvpn(s.ns(i), &path, &[], &s.path(&format!("openvpn-{dev}.log")))
}

#[test]
fn clients_reach_the_gateway_over_an_ipv6_only_underlay() -> Result<()> {
    let commands = &[
        "ip",
        "openvpn",
        "ping",
        "sysctl",
        "charon-systemd",
        "swanctl",
    ];
    let s = GatewaySetup::new("u6", 230, V6_CLIENTS + 1, commands)?;
    for i in 0..V6_CLIENTS {
        ipv6_only_link(&s, i)?;
    }
    lan_ipv6(&s, GW_LAN_V6.parse()?, lan_host_v6())?;
    s.gw_dir.set("client_pool_v6", &toml_str(POOL_V6))?;
    s.gw_dir
        .set("address_space_v6", &format!("[{}]", toml_str(LAN_V6)))?;
    add_site(&s)?;
    // Our client checks that the gateway's certificate names the address it dials (the stock
    // clients do not): a gateway reached over IPv6 needs its IPv6 addresses in the
    // certificate, as the README tells operators. A second gateway certificate names both
    // families.
    let public4 = s.topo.client(0).gateway_addr.to_string();
    let sans: Vec<String> = (0..V6_CLIENTS + 1).map(|i| gw6(i).to_string()).collect();
    let mut args = vec!["issue-server", "--name", "gateway-dual", "--san", &public4];
    for san in &sans {
        args.extend(["--san", san]);
    }
    certs_cli(&s.gw_dir.pki(), &args)?;
    s.gw_dir.set("server_cert", &toml_str("gateway-dual"))?;
    let config = s.gw_dir.config_text()?;
    ensure!(
        !config.contains("listen ="),
        "`gatehoused init` wrote a `listen`; the default must take both families:\n{config}"
    );
    let gw = s.start_gateway("gatehoused.log")?;
    let ready = strip_ansi(&gw.log());
    ensure!(
        ready.contains("openvpn/udp [::]:1194 (IPv4+IPv6)")
            && ready.contains("ikev2-natt/udp [::]:4500 (IPv4+IPv6)"),
        "the start-up line does not say both families:\n{}",
        gw.log_tail(10)
    );

    // (a) The stock OpenVPN 2.6 client over UDP, with the exported `.ovpn` as it is: `proto
    // udp` and `remote fd00:230:0::1 1194`.
    let t = Instant::now();
    let profile = s
        .gw_dir
        .client_profile("alice", gw6(0), &s.path("alice.ovpn"))?;
    let text = std::fs::read_to_string(&profile)?;
    ensure!(
        text.contains(&format!("remote {} 1194", gw6(0))) && text.contains("proto udp\n"),
        "{text}"
    );
    let udp = s.stock_client(0, &profile, "tun-u6u", &[])?;
    wait_client_up(&udp, &gw, 1, UP_TIMEOUT)?;
    connected_from(&gw, "alice", client6(0).into())?;
    reaches_lan(&s, &gw, 0, &|| udp.log_tail(25))?;
    eprintln!("openvpn udp over IPv6: {:?}", t.elapsed());

    // ... and over TCP.
    let t = Instant::now();
    let tcp = openvpn_tcp(&s, 1, "bob", "tun-u6t")?;
    wait_client_up(&tcp, &gw, 1, UP_TIMEOUT)?;
    connected_from(&gw, "bob", client6(1).into())?;
    reaches_lan(&s, &gw, 1, &|| tcp.log_tail(25))?;
    eprintln!("openvpn tcp over IPv6: {:?}", t.elapsed());

    // An IPv4 client of the same dual-stack sockets is logged as plain IPv4.
    let v4 = s.profile("erin", V6_CLIENTS)?;
    let v4c = s.stock_client(V6_CLIENTS, &v4, "tun-u6v4", &[])?;
    wait_client_up(&v4c, &gw, 1, UP_TIMEOUT)?;
    connected_from(&gw, "erin", s.topo.client(V6_CLIENTS).addr.into())?;
    wait_ping(s.ns(V6_CLIENTS), s.topo.lan_host, Duration::from_secs(10))
        .with_context(|| logs(&gw, &v4c.log_tail(25)))?;

    // (c) strongSwan over IKEv2. kernel-libipsec only does ESP in UDP: charon then fakes a
    // NAT (its NAT_DETECTION_SOURCE_IP hash) and encapsulates over IPv6 as over IPv4, so
    // `encap = yes` is not needed; it is set anyway, to say what the gateway requires.
    let t = Instant::now();
    let issued = s.gw_dir.issue_client("carol", &[])?;
    let charon = Charon::start(s.ns(2), &s.path("swanctl-carol"), "")?;
    let cert = charon.install_creds(
        "carol",
        &SwanctlCreds {
            ca: s.gw_dir.ca_cert(),
            cert: issued.cert,
            key: issued.key,
        },
    )?;
    let mut rw = RoadWarrior::new("gh", gw6(2), &cert);
    // The gateway's certificate names its `public_addr` (client 0's IPv4 gateway address).
    rw.remote_id = s.topo.client(0).gateway_addr.to_string();
    rw.vips = "0.0.0.0,::".into();
    rw.remote_ts = "0.0.0.0/0,::/0".into();
    rw.extra.push("encap = yes".into());
    charon.write_conns(&[&rw], "")?;
    let clog = || charon.log_tail(30);
    charon.load_all().with_context(|| logs(&gw, &clog()))?;
    charon
        .initiate(&rw.child())
        .with_context(|| logs(&gw, &clog()))?;
    connected_from(&gw, "carol", client6(2).into())?;
    reaches_lan(&s, &gw, 2, &clog)?;
    eprintln!("strongSwan IKEv2 over IPv6: {:?}", t.elapsed());

    // (b) Gatehouse's own client, its profile's gateway an IPv6 address, in alice's
    // namespace once she is gone.
    udp.stop();
    let t = Instant::now();
    let home = ClientHome::new(&s.path("client"), "nameserver 192.0.2.53\n")?;
    s.gw_dir.issue_client("dave", &[])?;
    home.import_profile(&s.gw_dir, "dave", gw6(0))?;
    let svc = ClientService::start(s.ns(0), &home, &s.path("service.log"))?;
    for proto in ["openvpn-udp", "ikev2"] {
        let out = home
            .run(
                Some(s.ns(0)),
                &["connect", "dave", "--protocol", proto],
                Duration::from_secs(45),
            )
            .with_context(|| logs(&gw, &svc.log_tail(30)))?;
        ensure!(
            out.success(),
            "{proto}: {out}\n{}",
            logs(&gw, &svc.log_tail(30))
        );
        let st = home.status(s.ns(0))?;
        ensure!(st.state() == "connected", "{proto}: {}", st.label());
        wait_ping(s.ns(0), s.topo.lan_host, Duration::from_secs(10))
            .with_context(|| logs(&gw, &svc.log_tail(30)))?;
        eprintln!("Gatehouse client over IPv6 ({proto}): {}", st.label());
        home.run_ok(Some(s.ns(0)), &["disconnect"])?;
    }
    ensure!(
        gw.events("client connected")
            .iter()
            .any(|e| e.field("client") == Some("dave")
                && e.field("remote")
                    .is_some_and(|r| r.starts_with(&format!("[{}]:", client6(0))))),
        "dave not logged from {}: {}",
        client6(0),
        gw.log_tail(20)
    );
    eprintln!("Gatehouse client over IPv6: {:?}", t.elapsed());

    // (d) A strongSwan site over the IPv6 underlay: `remote_gateway` is its IPv6 address.
    let t = Instant::now();
    let mut site = SwanSiteConfig::new(
        "u6site",
        client6(3),
        gw6(3),
        &[Ipv4Cidr::new(SITE_NET, 24)],
        &[s.topo.lan_net],
        SwanAuth::Psk(SITE_PSK.into()),
    );
    // The gateway's PSK identity is its `public_addr`.
    site.remote_id = s.topo.client(0).gateway_addr.to_string();
    site.start_action = StartAction::Start;
    let swan = SwanSite::start(s.ns(3), &s.path("swan-site"), &site)?;
    let ctx = || logs(&gw, &swan.log());
    gw.wait_event(
        "connection up",
        |e| e.field("connection") == Some("u6site"),
        Duration::from_secs(30),
    )
    .with_context(ctx)?;
    let out = s.ns(3).exec(
        "ping",
        [
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-I",
            &SITE_HOST.to_string(),
            &s.topo.lan_host.to_string(),
        ],
    )?;
    ensure!(
        out.status.success(),
        "site host {SITE_HOST} -> LAN {} over the IPv6 underlay: {}\n{}",
        s.topo.lan_host,
        String::from_utf8_lossy(&out.stdout),
        ctx()
    );
    eprintln!(
        "strongSwan site over IPv6 (remote_gateway {}): {:?}",
        client6(3),
        t.elapsed()
    );
    drop(swan);

    charon.stop();
    gw.terminate(Duration::from_secs(5))?;
    Ok(())
}

/// A `[[connection]]` to a strongSwan site in client 3's namespace, by its IPv6 address;
/// the site's network is an address on that namespace's loopback.
fn add_site(s: &GatewaySetup) -> Result<()> {
    let psk = s.gw_dir.path().join("u6site.psk");
    std::fs::write(&psk, SITE_PSK)?;
    std::fs::set_permissions(&psk, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let mut text = s.gw_dir.config_text()?;
    text.push_str(&format!(
        "\n[[connection]]\nname = \"u6site\"\ntype = \"site-to-site\"\nremote_gateway = \"{}\"\nremote_address_space = [\"{SITE_NET}/24\"]\nauth = \"psk\"\npsk_file = \"u6site.psk\"\npolicy_based = true\ninitiate = false\n",
        client6(3)
    ));
    std::fs::write(s.gw_dir.config_path(), text)?;
    s.ns(3).exec_ok(
        "ip",
        ["addr", "add", &format!("{SITE_HOST}/32"), "dev", "lo"],
    )?;
    Ok(())
}
