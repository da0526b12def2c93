//! Active-active (issue 17, docs/ha.md): three `gatehoused` with one etcd, each serving its
//! own clients at its own public address, sharing one PKI and one cluster.
//!
//! ```text
//!   c0 alice 10.250.228.10 ┐                     ┌ gw0 pub0 .2 │ gw0 lan0 .2 ┐
//!   c1 bob   10.250.228.11 ┼ br0 (ns sw) ────────┼ gw1 pub0 .3 │ gw1 lan0 .3 ┼ br1: etcd .5, LAN host .10
//!   c2 carol 10.250.228.12 ┤                     └ gw2 pub0 .4 │ gw2 lan0 .4 ┘
//!   c3 dave  10.250.228.13 ┘ (strongSwan charon-cmd, IKEv2, to gw1)
//! ```
//!
//! Each gateway claims a /26 block of the client pool 10.8.228.0/24 in etcd; the LAN host
//! routes each block to its gateway (read from the gateway's log). A stock OpenVPN 2.6 client
//! connects to each gateway, and a strongSwan IKEv2 client to gw1. Asserted: the blocks and the clients' addresses are distinct
//! (each inside its gateway's block) and every client reaches the LAN host; every node's
//! `ctl sessions --cluster` lists all three sessions with their nodes; a shared
//! configuration set on gw1 (`ctl cluster-config FILE`) is applied by all three; carol,
//! connected to gw2, is revoked on gw0 (`ctl revoke`) and her session on gw2 ends within
//! 5 s (the time is printed), while alice and bob go on; then dave (IKEv2, on gw1) is revoked
//! on gw2 and his session on gw1 ends, and every node's CRL lists both revocations; gw2 is
//! killed and its block and session list leave etcd when its lease expires.
//!
//! Tag `aa`, subnet index 228.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::cidr::Ipv4Cidr;
use gatehouse_tests::etcd::start_etcd;
use gatehouse_tests::gatehoused::{
    Gatehoused, GatewayDir, issue_rsa_client, spawn_stock_client, toml_str, tun_ipv4,
    wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::netns::bridge_port;
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::strongswan::{CharonCmd, CharonCmdConfig};
use gatehouse_tests::{Netns, require_commands, require_root};

const X: u8 = 228;
const ETCD: Ipv4Addr = Ipv4Addr::new(10, 251, X, 5);
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 251, X, 10);
const NODES: usize = 3;
const CLIENTS: [&str; NODES] = ["alice", "bob", "carol"];
/// The IKEv2 client (charon-cmd, in namespace c3) and the node it connects to.
const IKE_CLIENT: &str = "dave";
const IKE_NODE: usize = 1;
/// What a gateway logs for the block it claimed (field `block`).
const CLAIMED: &str = "cluster: claimed a block of the client pool; route it to this node";
const APPLIED: &str = "cluster: applied the cluster's configuration";
/// What a node logs when it took on revocations made elsewhere: it records them in its own
/// registry (every node has the CA here) and signs its CRL with them.
const INSTALLED: &str = "cluster: recorded the revocations published by another node in this node's registry and signed its CRL with them; sessions of the certificates it revokes end now";
const SESSION_REVOKED: &str = "session ended: certificate revoked";
/// How long after `ctl revoke` returns the session on another node must be over.
const REVOCATION_LIMIT: Duration = Duration::from_secs(5);

fn gw_pub(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, X, 2 + i as u8)
}

fn gw_lan(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 251, X, 2 + i as u8)
}

/// The namespaces (each removed, its processes killed, when dropped).
struct Net {
    sw: Netns,
    gws: Vec<Netns>,
    etcd: Netns,
    lan: Netns,
    clients: Vec<Netns>,
}

impl Net {
    fn new(tag: &str) -> Result<Net> {
        let ns = |what: &str| Netns::new(&format!("{tag}-{what}"));
        let n = Net {
            sw: ns("sw")?,
            gws: (0..NODES)
                .map(|i| ns(&format!("gw{i}")))
                .collect::<Result<_>>()?,
            etcd: ns("etcd")?,
            lan: ns("lan")?,
            clients: (0..=NODES)
                .map(|i| ns(&format!("c{i}")))
                .collect::<Result<_>>()?,
        };
        for br in ["br0", "br1"] {
            n.sw.exec_ok("ip", ["link", "add", br, "type", "bridge"])?;
            n.sw.exec_ok("ip", ["link", "set", br, "up"])?;
        }
        for (i, g) in n.gws.iter().enumerate() {
            bridge_port(
                &n.sw,
                "br0",
                &format!("p{i}"),
                g,
                "pub0",
                &format!("{}/24", gw_pub(i)),
            )?;
            bridge_port(
                &n.sw,
                "br1",
                &format!("l{i}"),
                g,
                "lan0",
                &format!("{}/24", gw_lan(i)),
            )?;
            g.exec_ok("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])?;
        }
        for (i, c) in n.clients.iter().enumerate() {
            let cidr = format!("10.250.{X}.{}/24", 10 + i);
            bridge_port(&n.sw, "br0", &format!("c{i}"), c, "up0", &cidr)?;
        }
        bridge_port(&n.sw, "br1", "le", &n.etcd, "lan0", &format!("{ETCD}/24"))?;
        bridge_port(&n.sw, "br1", "lh", &n.lan, "gw0", &format!("{LAN_HOST}/24"))?;
        for (i, c) in n.clients.iter().enumerate() {
            wait_ping(c, gw_pub(i % NODES), Duration::from_secs(5))?;
        }
        for g in &n.gws {
            wait_ping(g, ETCD, Duration::from_secs(5))?;
        }
        Ok(n)
    }
}

/// Writes node `node`'s `[ha]` section (active-active) and the rest of its settings.
fn configure(dir: &GatewayDir, node: &str) -> Result<()> {
    dir.set("tun_name", &toml_str(&format!("ghd{X}")))?;
    dir.set("workers", "1")?;
    dir.set("openvpn.tcp_port", "0")?;
    dir.set("ha.enabled", "true")?;
    dir.set("ha.mode", &toml_str("active-active"))?;
    dir.set(
        "ha.etcd",
        &format!("[{}]", toml_str(&format!("http://{ETCD}:2379"))),
    )?;
    dir.set("ha.cluster", &toml_str("aa228"))?;
    dir.set("ha.node", &toml_str(node))?;
    dir.set("ha.pool_block", "26")?;
    dir.set("ha.interval", &toml_str("1s"))?;
    Ok(())
}

/// `gatehoused ctl --data-dir DIR ARGS... --json`, its JSON answer.
fn ctl(dir: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = std::process::Command::new(gatehouse_tests::bin("gatehoused"))
        .arg("ctl")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .arg("--json")
        .output()?;
    ensure!(
        out.status.success(),
        "gatehoused ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "gatehoused ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// (client, node) of every session `ctl sessions --cluster` lists on `dir`'s gateway, sorted.
fn cluster_sessions(dir: &Path) -> Result<Vec<(String, String)>> {
    let v = ctl(dir, &["sessions", "--cluster"])?;
    let mut out: Vec<(String, String)> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["client"].as_str().unwrap_or("").to_owned(),
                s["node"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `a.b.c.d/p` as the network it names.
fn parse_block(s: &str) -> Result<Ipv4Cidr> {
    let (addr, prefix) = s.split_once('/').context("not a prefix")?;
    let c = Ipv4Cidr::new(addr.parse()?, prefix.parse::<u8>()?.min(32));
    ensure!(c.network() == c, "{s} is not a network");
    Ok(c)
}

/// Polls `f` every 100 ms until it is true or `timeout` passes; how long it took.
fn wait_for(timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<Option<Duration>> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f()? {
            return Ok(Some(start.elapsed()));
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(None)
}

#[test]
fn three_active_nodes_share_pool_revocations_configuration_and_sessions() -> Result<()> {
    require_root();
    require_commands(&[
        "ip", "ping", "openvpn", "openssl", "etcd", "etcdctl", "sysctl", "cp",
    ]);
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let net = Net::new("aa")?;
    let pool = Ipv4Cidr::new(Ipv4Addr::new(10, 8, X, 0), 24);
    let lan = Ipv4Cidr::new(Ipv4Addr::new(10, 251, X, 0), 24);
    let dir0 = GatewayDir::init(
        &tmp.path().join("gw0"),
        &gw_pub(0).to_string(),
        &[lan],
        Some(pool),
    )?;
    // One PKI: every client is issued before the data directory is copied.
    let profiles: Vec<PathBuf> = CLIENTS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            dir0.client_profile(name, gw_pub(i), &tmp.path().join(format!("{name}.ovpn")))
        })
        .collect::<Result<_>>()?;
    // charon-cmd takes RSA keys only: a key and CSR from openssl, certified by the gateway.
    let (ike_cert, ike_key) = issue_rsa_client(tmp.path(), &dir0.pki(), IKE_CLIENT, &[])?;
    let mut dirs = vec![dir0];
    for i in 1..NODES {
        dirs.push(dirs[0].copy_to(&tmp.path().join(format!("gw{i}")))?);
    }
    for (i, d) in dirs.iter().enumerate() {
        configure(d, &format!("gw{i}"))?;
    }

    let etcd = start_etcd(&net.etcd, ETCD, "aa", tmp.path())?;
    let gws: Vec<Gatehoused> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| Gatehoused::start(&net.gws[i], d, &tmp.path().join(format!("gw{i}.log"))))
        .collect::<Result<_>>()?;
    let logs = || {
        let mut s = String::new();
        for (i, g) in gws.iter().enumerate() {
            s.push_str(&format!("gw{i} log:\n{}\n", g.log_tail(25)));
        }
        s + &format!("etcd:\n{}", etcd.log_tail(5))
    };

    // Blocks: distinct, each routed on the LAN to its node.
    let mut blocks = Vec::new();
    for (i, g) in gws.iter().enumerate() {
        let ev = g
            .wait_event(CLAIMED, |_| true, Duration::from_secs(10))
            .with_context(logs)?;
        let block = ev.field("block").context("no block field")?.to_owned();
        eprintln!("gw{i} claimed {block}");
        net.lan.exec_ok(
            "ip",
            ["route", "add", &block, "via", &gw_lan(i).to_string()],
        )?;
        blocks.push(parse_block(&block)?);
    }
    // Blocks of one size: distinct networks do not overlap.
    ensure!(
        blocks[0] != blocks[1] && blocks[1] != blocks[2] && blocks[0] != blocks[2],
        "two nodes hold the same block: {blocks:?}\n{}",
        logs()
    );

    // A stock client on each node: distinct addresses, each in its node's block.
    let mut clients = Vec::new();
    for (i, p) in profiles.iter().enumerate() {
        let log = tmp.path().join(format!("openvpn-{}.log", CLIENTS[i]));
        clients.push(spawn_stock_client(&net.clients[i], p, "tun-aa", &[], &log)?);
    }
    let mut addresses = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        wait_client_up(c, &gws[i], 1, UP_TIMEOUT).with_context(logs)?;
        let a = tun_ipv4(&net.clients[i], "tun-aa")?.addr;
        ensure!(
            Ipv4Cidr::new(a, blocks[i].prefix).network() == blocks[i],
            "{} got {a} from gw{i}, outside its block {}\n{}",
            CLIENTS[i],
            blocks[i],
            logs()
        );
        eprintln!("{} on gw{i}: {a}", CLIENTS[i]);
        addresses.push(a);
        wait_ping(&net.clients[i], LAN_HOST, Duration::from_secs(10)).with_context(logs)?;
    }
    let mut config = CharonCmdConfig::new(
        gw_pub(IKE_NODE),
        &format!("CN={IKE_CLIENT}"),
        &dirs[0].ca_cert(),
        &ike_cert,
        &ike_key,
    );
    // The gateway certificate names the cluster's public address (gw0's here).
    config.remote_identity = Some(gw_pub(0).to_string());
    let ike = CharonCmd::start(&net.clients[NODES], &tmp.path().join("charon-cmd"), &config)
        .with_context(logs)?;
    wait_ping(&net.clients[NODES], LAN_HOST, Duration::from_secs(10))
        .with_context(|| format!("{}\ncharon-cmd:\n{}", logs(), ike.log_tail(20)))?;
    let listed = ctl(dirs[IKE_NODE].path(), &["sessions"])?;
    let ike_addr: Ipv4Addr = listed
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["client"] == IKE_CLIENT)
        .and_then(|s| s["virtual_address"].as_str())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("gw{IKE_NODE} does not list {IKE_CLIENT}: {listed}"))?;
    ensure!(
        Ipv4Cidr::new(ike_addr, blocks[IKE_NODE].prefix).network() == blocks[IKE_NODE],
        "{IKE_CLIENT} got {ike_addr}, outside gw{IKE_NODE}'s block"
    );
    eprintln!("{IKE_CLIENT} (IKEv2) on gw{IKE_NODE}: {ike_addr}");
    addresses.push(ike_addr);
    let mut distinct = addresses.clone();
    distinct.sort();
    distinct.dedup();
    ensure!(
        distinct.len() == addresses.len(),
        "clients share an address: {addresses:?}"
    );

    // Every node lists every session with its node.
    let mut all: Vec<(String, String)> = CLIENTS
        .iter()
        .enumerate()
        .map(|(i, c)| ((*c).to_owned(), format!("gw{i}")))
        .collect();
    all.push((IKE_CLIENT.to_owned(), format!("gw{IKE_NODE}")));
    all.sort();
    for d in &dirs {
        let took = wait_for(Duration::from_secs(5), || {
            Ok(cluster_sessions(d.path())? == all)
        })?;
        ensure!(
            took.is_some(),
            "{} lists {:?}, not {all:?}\n{}",
            d.path().display(),
            cluster_sessions(d.path())?,
            logs()
        );
    }
    eprintln!("every node lists {all:?}");
    let list = net.etcd.exec_ok(
        "etcdctl",
        [
            "--endpoints",
            &format!("http://{ETCD}:2379"),
            "get",
            "--print-value-only",
            "/gatehouse/aa228/sessions/gw1",
        ],
    )?;
    eprintln!(
        "gw1's session list in etcd: {} bytes for 2 sessions",
        list.trim().len()
    );

    // A configuration change on gw1 reaches all three.
    let shared = tmp.path().join("shared.toml");
    std::fs::write(
        &shared,
        format!("address_space = [\"{lan}\", \"10.252.{X}.0/24\"]\ndns = [\"10.251.{X}.53\"]\n"),
    )?;
    let set_at = Instant::now();
    ctl(
        dirs[1].path(),
        &["cluster-config", &shared.display().to_string()],
    )?;
    for (i, g) in gws.iter().enumerate() {
        let ev = g
            .wait_event(APPLIED, |_| true, Duration::from_secs(5))
            .with_context(logs)?;
        ensure!(
            ev.line.contains("dns: [] -> [10.251.228.53]"),
            "gw{i} applied something else: {}",
            ev.line
        );
    }
    eprintln!(
        "configuration set on gw1 applied by all three within {:.2} s",
        set_at.elapsed().as_secs_f64()
    );
    let seen = ctl(dirs[2].path(), &["cluster-config"])?;
    ensure!(seen["dns"][0] == "10.251.228.53", "gw2 shows {seen}");

    // carol (on gw2) is revoked on gw0: her session on gw2 ends within seconds.
    let answer = ctl(dirs[0].path(), &["revoke", "carol"])?;
    let revoked_at = Instant::now();
    ensure!(answer["name"] == "carol", "{answer}");
    let ended = gws[2]
        .wait_event(
            SESSION_REVOKED,
            |e| e.field("client") == Some("carol"),
            REVOCATION_LIMIT,
        )
        .with_context(logs)?;
    let took = revoked_at.elapsed();
    eprintln!("{}", ended.line);
    eprintln!(
        "carol, revoked on gw0, lost her session on gw2 {:.2} s later",
        took.as_secs_f64()
    );
    let installed = gws[2]
        .wait_event(INSTALLED, |_| true, Duration::from_secs(1))
        .with_context(logs)?;
    // From gw0, or from gw1 when gw1 took it on first and published its CRL signed again.
    ensure!(
        matches!(installed.field("from"), Some("gw0" | "gw1")),
        "{}",
        installed.line
    );
    ensure!(
        gws[1]
            .wait_event(INSTALLED, |_| true, REVOCATION_LIMIT)
            .is_ok(),
        "gw1 did not install the CRL\n{}",
        logs()
    );
    let rest: Vec<(String, String)> = all.iter().filter(|(c, _)| c != "carol").cloned().collect();
    let gone = wait_for(Duration::from_secs(3), || {
        Ok(cluster_sessions(dirs[1].path())? == rest)
    })?;
    ensure!(gone.is_some(), "carol is still listed\n{}", logs());

    // dave (IKEv2, on gw1) is revoked on gw2, whose registry took carol's revocation on:
    // his session on gw1 ends, and every node's CRL lists both.
    let answer = ctl(dirs[2].path(), &["revoke", IKE_CLIENT])?;
    let revoked_at = Instant::now();
    ensure!(answer["name"] == IKE_CLIENT, "{answer}");
    gws[IKE_NODE]
        .wait_event(
            SESSION_REVOKED,
            |e| e.field("client") == Some(IKE_CLIENT),
            REVOCATION_LIMIT,
        )
        .with_context(|| format!("{}\ncharon-cmd:\n{}", logs(), ike.log_tail(20)))?;
    eprintln!(
        "{IKE_CLIENT} (IKEv2), revoked on gw2, lost his session on gw{IKE_NODE} {:.2} s later",
        revoked_at.elapsed().as_secs_f64()
    );
    for d in &dirs {
        let both = wait_for(REVOCATION_LIMIT, || {
            Ok(ctl(d.path(), &["status"])?["crl"]["revoked"] == 2)
        })?;
        ensure!(
            both.is_some(),
            "{}: the CRL in force does not list both revocations: {}\n{}",
            d.path().display(),
            ctl(d.path(), &["status"])?["crl"],
            logs()
        );
    }
    for i in [0, 1] {
        wait_ping(&net.clients[i], LAN_HOST, Duration::from_secs(5)).with_context(logs)?;
    }

    // gw2 dies: its lease expires (TTL 10 s) and its block and session list leave etcd.
    let keys = || -> Result<String> {
        net.etcd.exec_ok(
            "etcdctl",
            [
                "--endpoints",
                &format!("http://{ETCD}:2379"),
                "get",
                "--prefix",
                "--keys-only",
                "/gatehouse/aa228/",
            ],
        )
    };
    let block_key = format!(
        "/gatehouse/aa228/pool/{}_{}",
        blocks[2].addr, blocks[2].prefix
    );
    ensure!(
        keys()?.contains(&block_key),
        "{block_key} is not in etcd: {}",
        keys()?
    );
    gws[2].kill_hard()?;
    let freed = wait_for(Duration::from_secs(15), || {
        let k = keys()?;
        Ok(!k.contains(&block_key) && !k.contains("/sessions/gw2"))
    })?
    .with_context(|| {
        format!(
            "gw2's keys are still in etcd 15 s after it died: {}",
            keys().unwrap_or_default()
        )
    })?;
    eprintln!(
        "gw2 killed: its block and session list left etcd {:.1} s later",
        freed.as_secs_f64()
    );
    eprintln!("test took {:.1} s", started.elapsed().as_secs_f64());
    drop((ike, clients, gws, etcd));
    Ok(())
}
