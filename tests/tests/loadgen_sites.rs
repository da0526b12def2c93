//! Many site-to-site connections on one gateway: the load generator's site mode
//! (`gatehouse-loadgen --sites N`, one IKEv2 peer per site, each the engine's `IkeInitiator`
//! with a pre-shared key, from its own source address) against a debug gatehoused with the
//! matching `[[connection]]` entries (written by `gatehouse-loadgen sites-config`).
//!
//! Ten sites, each with its own address space 10.201.i.0/24, ping the LAN host behind the
//! gateway through their tunnels and rekey their CHILD SAs every ~3 s and their IKE SAs every
//! ~5 s while held. Checks: every site comes up and is still up at the end; every site gets
//! echo replies; every site rekeyed its CHILD SA and its IKE SA at least once; during the hold
//! `gatehoused status --json` lists the ten connections `connected` with bytes both ways.
//!
//! Tag `ls`, subnet index 173 (underlay 10.250.173.0/24, LAN 10.251.173.0/24); the sites
//! send from 10.250.173.100-109 (extra addresses on the load generator's link).

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir};
use gatehouse_tests::proc::run_with_timeout;
use gatehouse_tests::{GatewayTopology, Proc, bin, require_commands, require_root};
use serde_json::Value;

const SITES: usize = 10;
/// The sites' first source address: 10.250.173.100 (.100-.109, inside 10.250.173.96/28).
const SOURCE_BASE: &str = "10.250.173.100";
const SOURCE_NET: &str = "10.250.173.96/28";
const SPACE_BASE: &str = "10.201.0.0/24";
const CHILD_LIFETIME_SECS: u64 = 3;
const IKE_LIFETIME_SECS: u64 = 5;
const HOLD_SECS: u64 = 9;
/// The whole load-generator run: handshakes, hold, teardown.
const RUN_TIMEOUT: Duration = Duration::from_secs(40);

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(u64::MAX)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `gatehoused status --data-dir DIR --json`: (connections connected with bytes both ways,
/// connections listed).
fn status_connected(gw_dir: &GatewayDir) -> Result<(usize, usize)> {
    let mut cmd = std::process::Command::new(bin("gatehoused"));
    cmd.arg("status")
        .arg("--data-dir")
        .arg(gw_dir.path())
        .arg("--json");
    let out = run_with_timeout(cmd, Duration::from_secs(10))?;
    if !out.status.success() {
        // The admin API is not up yet.
        return Ok((0, 0));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("gatehoused status --json")?;
    let conns = v["connections"].as_array().cloned().unwrap_or_default();
    let up = conns
        .iter()
        .filter(|c| c["state"] == "connected" && num(c, "rx_bytes") > 0 && num(c, "tx_bytes") > 0)
        .filter(|c| num(c, "rx_bytes") != u64::MAX && num(c, "tx_bytes") != u64::MAX)
        .count();
    Ok((up, conns.len()))
}

#[test]
fn loadgen_sites_connect_carry_traffic_and_rekey() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("ls", 173, 1)?;
    let client = topo.client(0);
    // One source address per site on the load generator's link, reachable from the gateway.
    for i in 0..SITES {
        client.ns.exec_ok(
            "ip",
            [
                "addr",
                "add",
                &format!("10.250.173.{}/32", 100 + i),
                "dev",
                "up0",
            ],
        )?;
    }
    topo.gateway
        .exec_ok("ip", ["route", "add", SOURCE_NET, "dev", "cl0"])?;

    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd173")?;
    let psk_dir = dir.path().join("site-keys");
    let site_args = [
        "--sites".to_string(),
        SITES.to_string(),
        "--site-source-base".into(),
        SOURCE_BASE.into(),
        "--site-space-base".into(),
        SPACE_BASE.into(),
        "--site-psk-dir".into(),
        psk_dir.display().to_string(),
        "--site-child-lifetime".into(),
        CHILD_LIFETIME_SECS.to_string(),
        "--site-ike-lifetime".into(),
        IKE_LIFETIME_SECS.to_string(),
    ];
    let mut gen_cmd = std::process::Command::new(bin("gatehouse-loadgen"));
    gen_cmd.arg("sites-config").args(&site_args);
    let out = run_with_timeout(gen_cmd, Duration::from_secs(30))?;
    ensure!(
        out.status.success(),
        "gatehouse-loadgen sites-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conns = String::from_utf8(out.stdout)?;
    ensure!(
        conns.matches("[[connection]]").count() == SITES,
        "sites-config wrote {} connections:\n{conns}",
        conns.matches("[[connection]]").count()
    );
    let mut text = gw_dir.config_text()?;
    text.push('\n');
    text.push_str(&conns);
    fs::write(gw_dir.config_path(), text)?;

    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused.log"))?;
    let log_path = dir.path().join("loadgen.log");
    let mut cmd = client.ns.command(bin("gatehouse-loadgen"));
    cmd.arg("--gateway")
        .arg(client.gateway_addr.to_string())
        .args(&site_args)
        .args(["--hold", &HOLD_SECS.to_string()])
        .args(["--pps", "5", "--target", &topo.lan_host.to_string()])
        .args(["--gateway-pid", &gw.proc().pid().to_string()])
        .args(["--threads", "2", "--linger", "3", "--json"]);
    let loadgen = Proc::spawn(cmd, &log_path)?;

    // During the hold the gateway lists every connection up, with bytes moving.
    let deadline = Instant::now() + RUN_TIMEOUT;
    let (mut max_up, mut listed) = (0, 0);
    while loadgen.is_running() {
        let (up, n) = status_connected(&gw_dir)?;
        max_up = max_up.max(up);
        listed = listed.max(n);
        if Instant::now() >= deadline {
            bail!(
                "gatehouse-loadgen still running after {RUN_TIMEOUT:?}; its log:\n{}",
                log_tail(&log_path)
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    let log = fs::read_to_string(&log_path)?;
    let json_start = log
        .find("\n{")
        .map(|i| i + 1)
        .or_else(|| log.starts_with('{').then_some(0))
        .with_context(|| format!("no JSON report from gatehouse-loadgen; log:\n{log}"))?;
    let report: Value = serde_json::from_str(&log[json_start..])
        .with_context(|| format!("gatehouse-loadgen's report is not JSON; log:\n{log}"))?;
    let gw_log = || gw.log_tail(40);

    let phase = report["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["proto"] == "site"))
        .with_context(|| format!("no site phase in the report: {report}"))?;
    let n = SITES as u64;
    ensure!(
        num(phase, "established") == n && num(phase, "failed") == 0,
        "not every site came up: {phase}\nloadgen log:\n{log}\ngateway log:\n{}",
        gw_log()
    );
    ensure!(
        num(phase, "held") == n && num(phase, "lost") == 0,
        "not every site was still up at the end of the hold: {phase}\nloadgen log:\n{log}\ngateway log:\n{}",
        gw_log()
    );
    let sites = &report["sites"];
    let rows = sites["per_site"]
        .as_array()
        .with_context(|| format!("no per-site rows: {sites}"))?;
    ensure!(rows.len() == SITES, "{} per-site rows", rows.len());
    for r in rows {
        ensure!(
            r["held"] == true && num(r, "replies") > 0 && num(r, "replies") != u64::MAX,
            "site without echo replies through its tunnel: {r}\ngateway log:\n{}",
            gw_log()
        );
        // Most requests are answered (allow for the ones in flight across rekeys).
        ensure!(
            num(r, "replies").saturating_mul(10) >= num(r, "sent").saturating_mul(8),
            "site lost more than 20% of its echo requests: {r}"
        );
        ensure!(
            num(r, "child_rekeys") >= 1 && num(r, "child_rekeys") != u64::MAX,
            "site did not rekey its CHILD SA: {r}\ngateway log:\n{}",
            gw_log()
        );
        ensure!(
            num(r, "ike_rekeys") >= 1 && num(r, "ike_rekeys") != u64::MAX,
            "site did not rekey its IKE SA: {r}\ngateway log:\n{}",
            gw_log()
        );
    }
    ensure!(
        listed == SITES && max_up == SITES,
        "gatehoused status listed {listed} connections and at most {max_up} connected with bytes both ways, not {SITES}\ngateway log:\n{}",
        gw_log()
    );
    ensure!(
        gw.is_running(),
        "gatehoused exited during the run:\n{}",
        gw_log()
    );
    gw.terminate(Duration::from_secs(10))?;
    eprintln!(
        "loadgen sites test: {} s; sites {}",
        started.elapsed().as_secs(),
        serde_json::to_string(&serde_json::json!({
            "up": sites["up"], "held": sites["held"], "replies": sites["replies"],
            "child_rekeys": sites["child_rekeys"], "ike_rekeys": sites["ike_rekeys"]
        }))?
    );
    Ok(())
}
