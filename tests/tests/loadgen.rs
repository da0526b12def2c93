//! The load generator (`bench/loadgen`, binary `gatehouse-loadgen`) keeps working: a small
//! run of it against a debug gatehoused, so the benchmark tool does not rot between the
//! hand-made runs of `bench/sessions.sh`.
//!
//! One gatehoused (OpenVPN and IKEv2), the load generator in client 0's namespace with 30
//! OpenVPN and 30 IKEv2 sessions (one certificate each, issued by `gatehouse-loadgen issue`
//! into the gateway's PKI), held for a few seconds while every session pings the LAN host
//! through its tunnel. Checks: every session connects; the gateway counts 60 clients in its
//! status (admin API) during the hold and logged 60 `client connected`; every session is still up
//! when the hold ends; echo replies come back through the tunnels; the gateway's memory was
//! sampled.
//!
//! Tag `lg`, subnet indexes 170..=172.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{CONNECTED, Gatehoused, GatewayDir};
use gatehouse_tests::proc::run_with_timeout;
use gatehouse_tests::{GatewayTopology, Proc, bin, require_commands, require_root};
use serde_json::Value;

const OPENVPN: usize = 30;
const IKEV2: usize = 30;
const HOLD_SECS: u64 = 6;
/// The whole load-generator run: handshakes (debug builds, shared cores), hold, teardown.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// `clients` in `gatehoused status --json` (the admin API's count), if it answers.
fn status_clients(gw_dir: &GatewayDir) -> Option<u64> {
    let out = std::process::Command::new(bin("gatehoused"))
        .args(["status", "--json", "--data-dir"])
        .arg(gw_dir.path())
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("clients")?.as_u64()
}

fn phase<'a>(report: &'a Value, proto: &str) -> Result<&'a Value> {
    report["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["proto"] == proto))
        .with_context(|| format!("no {proto} phase in the report: {report}"))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(u64::MAX)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn loadgen_sessions_connect_hold_and_carry_traffic() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("lg", 170, 1)?;
    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd170")?;

    // One certificate per session (the gateway keeps one session per certificate).
    let mut issue = std::process::Command::new(bin("gatehouse-loadgen"));
    issue.arg("issue").arg("--pki").arg(gw_dir.pki()).args([
        "--count",
        &(OPENVPN + IKEV2).to_string(),
        "--prefix",
        "lg-",
    ]);
    let out = run_with_timeout(issue, Duration::from_secs(60))?;
    ensure!(
        out.status.success(),
        "gatehouse-loadgen issue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused.log"))?;
    let client = topo.client(0);
    let report_path = dir.path().join("loadgen.json");
    let log_path = dir.path().join("loadgen.log");
    // stdout (the JSON report) and stderr (progress) both go to the log; the report is the
    // part from the first '{' line.
    let mut cmd = client.ns.command(bin("gatehouse-loadgen"));
    cmd.arg("--gateway")
        .arg(client.gateway_addr.to_string())
        .arg("--pki")
        .arg(gw_dir.pki())
        .args(["--openvpn", &OPENVPN.to_string()])
        .args(["--ikev2", &IKEV2.to_string()])
        .args(["--concurrency", "16", "--hold", &HOLD_SECS.to_string()])
        .args(["--pps", "5", "--target", &topo.lan_host.to_string()])
        .args(["--gateway-pid", &gw.proc().pid().to_string()])
        .args(["--threads", "2", "--linger", "3", "--json"]);
    let loadgen = Proc::spawn(cmd, &log_path)?;

    // During the hold the gateway lists every session.
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut max_listed = 0;
    while loadgen.is_running() {
        if let Some(n) = status_clients(&gw_dir) {
            max_listed = max_listed.max(n);
        }
        if Instant::now() >= deadline {
            bail!(
                "gatehouse-loadgen still running after {RUN_TIMEOUT:?}; its log:\n{}",
                log_tail(&log_path)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    let log = fs::read_to_string(&log_path)?;
    let json_start = log
        .find("\n{")
        .map(|i| i + 1)
        .or_else(|| log.starts_with('{').then_some(0))
        .with_context(|| format!("no JSON report from gatehouse-loadgen; log:\n{log}"))?;
    let report: Value = serde_json::from_str(&log[json_start..])
        .with_context(|| format!("gatehouse-loadgen's report is not JSON; log:\n{log}"))?;
    fs::write(&report_path, report.to_string())?;

    for (proto, n) in [("openvpn", OPENVPN), ("ikev2", IKEV2)] {
        let p = phase(&report, proto)?;
        let n = n as u64;
        ensure!(
            num(p, "established") == n && num(p, "failed") == 0,
            "{proto}: not every session connected: {p}\nloadgen log:\n{log}\ngateway log:\n{}",
            gw.log_tail(30)
        );
        ensure!(
            num(p, "held") == n && num(p, "lost") == 0,
            "{proto}: not every session was still up at the end of the hold: {p}\nloadgen log:\n{log}"
        );
        ensure!(p["handshakes_per_sec"].as_f64().is_some_and(|r| r > 0.0));
    }
    ensure!(
        max_listed == (OPENVPN + IKEV2) as u64,
        "gatehoused status listed at most {max_listed} clients, not {}",
        OPENVPN + IKEV2
    );
    let connected = gw.events(CONNECTED).len();
    ensure!(
        connected == OPENVPN + IKEV2,
        "gatehoused logged {connected} `{CONNECTED}`, not {}",
        OPENVPN + IKEV2
    );

    let t = &report["traffic"];
    let (sent, replies) = (num(t, "sent_packets"), num(t, "echo_replies"));
    // 60 sessions x 5/s x 6 s = 1800 requests; allow for start-up spread and shared cores.
    ensure!(
        sent >= 600 && sent != u64::MAX,
        "too few echo requests sent: {t}"
    );
    ensure!(
        replies.saturating_mul(10) >= sent.saturating_mul(9),
        "fewer than 90% of the echo requests were answered through the tunnels: {t}"
    );
    let m = &report["gateway_memory"];
    ensure!(
        num(m, "before_kib") > 0 && m["per_session_kib"].is_number(),
        "no gateway memory figures: {m}"
    );
    gw.terminate(Duration::from_secs(10))?;
    eprintln!(
        "loadgen smoke test: {} s; report {}",
        started.elapsed().as_secs(),
        report
    );
    Ok(())
}
