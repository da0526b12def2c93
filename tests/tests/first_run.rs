//! The README's first command, as a newcomer runs it: `gatehoused run --data-dir DIR` on an
//! empty directory bootstraps the configuration, CA and registry, prints what to do next and
//! lists every listener it opened. Then the printed next steps are followed word for word
//! (issue a client certificate, export a profile) and the stock OpenVPN client connects with
//! the exported profile and reaches the network behind the gateway.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{READY, spawn_stock_client, strip_ansi};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openvpn::UP;
use gatehouse_tests::proc::Proc;
use gatehouse_tests::{GatewayTopology, bin, require_commands, require_root};

/// The commands of the guide's numbered steps that start with `gatehouse-certs`, in order.
fn guide_commands(log: &str) -> Vec<Vec<String>> {
    log.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("gatehouse-certs "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Runs one printed `gatehouse-certs ...` command with the workspace's binary, writing any
/// `-o FILE` into `dir`.
fn run_guide_command(words: &[String], dir: &Path) -> Result<()> {
    let mut args: Vec<String> = words[1..].to_vec();
    if let Some(i) = args.iter().position(|a| a == "-o") {
        let file = args.get(i + 1).context("-o without a file")?.clone();
        args[i + 1] = dir.join(file).display().to_string();
    }
    let out = Command::new(bin("gatehouse-certs")).args(&args).output()?;
    ensure!(
        out.status.success(),
        "the printed command {words:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn first_run_bootstraps_guides_and_the_guide_works() -> Result<()> {
    require_root();
    require_commands(&["ip", "openvpn", "ping"]);
    let tmp = tempfile::tempdir()?;
    let topo = GatewayTopology::new("fr", 90, 1)?;
    let public_addr = topo.client(0).gateway_addr;
    let data_dir = tmp.path().join("gatehouse-data");

    // The README's command, with the address this test's client can dial and the LAN behind.
    let mut cmd = topo.gateway.command(bin("gatehoused"));
    cmd.args(["run", "--data-dir"])
        .arg(&data_dir)
        .args(["--public-addr", &public_addr.to_string()])
        .args(["--address-space", &topo.lan_net.to_string()])
        .env("NO_COLOR", "1");
    let gw = Proc::spawn(cmd, &tmp.path().join("gatehoused.log"))?;
    gw.wait_for_log(READY, Duration::from_secs(30))?;
    let log = strip_ansi(&gw.log_contents());

    for file in [
        "gateway.toml",
        "pki/ca.crt",
        "pki/server/gateway.crt",
        "pki/crl.pem",
    ] {
        ensure!(
            data_dir.join(file).exists(),
            "the first run did not create {file}"
        );
    }
    let dd = data_dir.display().to_string();
    for want in [
        format!("{dd}/gateway.toml"),
        format!("{dd}/pki/"),
        "Next steps".to_string(),
        "issue-client alice".to_string(),
        format!("--gateway {public_addr} --format ovpn"),
    ] {
        ensure!(
            log.contains(&want),
            "the first-run guide lacks {want:?}:\n{log}"
        );
    }
    let ready = log
        .lines()
        .find(|l| l.contains(READY))
        .context("no ready line")?;
    for listener in [
        // Every IPv4 and IPv6 address by default (one dual-stack socket per port).
        "openvpn/udp [::]:1194 (IPv4+IPv6)",
        "openvpn/tcp [::]:443 (IPv4+IPv6)",
        "ikev2/udp [::]:500 (IPv4+IPv6)",
        "ikev2-natt/udp [::]:4500 (IPv4+IPv6)",
    ] {
        ensure!(
            ready.contains(listener),
            "the ready line does not list {listener}: {ready}"
        );
    }

    // Follow the guide: issue alice, export her profile.
    let commands = guide_commands(&log);
    let issue = commands
        .iter()
        .find(|c| c.iter().any(|w| w == "issue-client"))
        .context("no issue-client command in the guide")?;
    let export = commands
        .iter()
        .find(|c| c.iter().any(|w| w == "export"))
        .context("no export command in the guide")?;
    run_guide_command(issue, tmp.path())?;
    run_guide_command(export, tmp.path())?;
    let profile = tmp.path().join("alice.ovpn");
    ensure!(profile.exists(), "the export command wrote no alice.ovpn");

    // The stock client with the exported profile reaches the LAN host.
    let client_ns = &topo.client(0).ns;
    let client = spawn_stock_client(
        client_ns,
        &profile,
        "tun-fr",
        &[],
        &tmp.path().join("openvpn.log"),
    )?;
    client
        .wait_for_log(UP, Duration::from_secs(30))
        .with_context(|| format!("gatehoused log:\n{}", gw.log_tail(30)))?;
    wait_ping(client_ns, topo.lan_host, Duration::from_secs(10))
        .with_context(|| format!("client log:\n{}", client.log_tail(30)))?;
    let leased = client_ns.exec_ok("ip", ["-4", "-br", "addr", "show", "dev", "tun-fr"])?;
    // The embedded default pool (any client address of it: each gateway worker leases its
    // own share).
    let in_pool =
        (2..255u8).any(|h| leased.contains(&format!("{}/24", Ipv4Addr::new(172, 16, 201, h))));
    if !in_pool {
        bail!("the client got {leased:?}, not an address from the default pool 172.16.201.0/24");
    }
    Ok(())
}
