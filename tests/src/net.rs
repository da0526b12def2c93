//! Traffic through a topology: ping and iperf3, both run inside a namespace.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::Netns;
use crate::proc::{Proc, run_with_timeout};

/// Sends `count` pings from `ns` to `addr`, one per second at most, each waiting up to 1 s for
/// its reply; gives up after `timeout`. True if any reply came back.
pub fn ping(ns: &Netns, addr: Ipv4Addr, count: u32, timeout: Duration) -> bool {
    let deadline = timeout.as_secs().max(1).to_string();
    let args = [
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        "-w",
        &deadline,
        &addr.to_string(),
    ];
    ns.exec("ping", args).is_ok_and(|o| o.status.success())
}

/// Pings `addr` from `ns` until a reply comes back or `overall` passes (a tunnel may take a
/// moment to install its routes after it reports being up).
pub fn wait_ping(ns: &Netns, addr: Ipv4Addr, overall: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < overall {
        if ping(ns, addr, 1, Duration::from_secs(1)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "no ping reply from {addr} in {} within {overall:?}",
        ns.name()
    )
}

/// What one iperf3 client run measured (from its `-J` report).
#[derive(Clone, Debug, PartialEq)]
pub struct Iperf3Result {
    pub bits_per_second_sent: f64,
    pub bits_per_second_received: f64,
    /// TCP retransmits by the sender (0 for UDP tests).
    pub retransmits: u64,
}

/// Starts an iperf3 server in `ns` on `bind:port` and waits until it listens. It serves any
/// number of runs until dropped.
pub fn iperf3_server(ns: &Netns, bind: Ipv4Addr, port: u16, log: &Path) -> Result<Proc> {
    let args = [
        "-s",
        "--forceflush",
        "-B",
        &bind.to_string(),
        "-p",
        &port.to_string(),
    ];
    let server = ns.spawn("iperf3", args, log)?;
    server.wait_for_log("Server listening", Duration::from_secs(5))?;
    Ok(server)
}

/// Runs an iperf3 client in `ns` against `server:port` for `seconds` (TCP, one stream, unless
/// `extra` says otherwise: e.g. `-R`, `-P 4`, `-u -b 100M`) and returns what it measured.
pub fn iperf3_client(
    ns: &Netns,
    server: Ipv4Addr,
    port: u16,
    seconds: u32,
    extra: &[&str],
) -> Result<Iperf3Result> {
    let mut cmd = ns.command("iperf3");
    cmd.args(["-J", "--connect-timeout", "3000", "-c"])
        .arg(server.to_string())
        .args(["-p", &port.to_string(), "-t", &seconds.to_string()])
        .args(extra);
    // Connect, the run itself, and the exchange of results afterwards.
    let limit = Duration::from_secs(u64::from(seconds) + 20);
    let out = run_with_timeout(cmd, limit)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = parse_iperf3_json(&stdout)
        .with_context(|| format!("iperf3 -c {server}:{port} from {}", ns.name()))?;
    if !out.status.success() {
        bail!("iperf3 -c {server}:{port} exited with {}", out.status);
    }
    Ok(result)
}

/// Parses the report of `iperf3 -J`: TCP runs report `end.sum_sent` / `end.sum_received`,
/// UDP runs only `end.sum`.
pub fn parse_iperf3_json(json: &str) -> Result<Iperf3Result> {
    let v: Value = serde_json::from_str(json).context("iperf3 -J output is not JSON")?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3 reported an error: {err}");
    }
    let end = v
        .get("end")
        .context("iperf3 report has no \"end\" section")?;
    let bps = |section: &str| {
        end.get(section)
            .and_then(|s| s.get("bits_per_second"))
            .and_then(Value::as_f64)
    };
    let (sent, received) = match (bps("sum_sent"), bps("sum_received")) {
        (Some(s), Some(r)) => (s, r),
        _ => {
            let sum = bps("sum").context("iperf3 report has no sum_sent/sum_received/sum")?;
            (sum, sum)
        }
    };
    let retransmits = end
        .get("sum_sent")
        .and_then(|s| s.get("retransmits"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(Iperf3Result {
        bits_per_second_sent: sent,
        bits_per_second_received: received,
        retransmits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_report() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"bytes":100,"bits_per_second":8.5e8,"retransmits":12},
            "sum_received":{"bytes":99,"bits_per_second":8.4e8}}}"#;
        let r = parse_iperf3_json(json).unwrap();
        assert_eq!(r.bits_per_second_sent, 8.5e8);
        assert_eq!(r.bits_per_second_received, 8.4e8);
        assert_eq!(r.retransmits, 12);
    }

    #[test]
    fn parses_udp_report() {
        let json = r#"{"end":{"sum":{"bits_per_second":1.0e8,"lost_percent":0}}}"#;
        let r = parse_iperf3_json(json).unwrap();
        assert_eq!(r.bits_per_second_received, 1.0e8);
        assert_eq!(r.retransmits, 0);
    }

    #[test]
    fn reports_iperf3_errors() {
        let json = r#"{"start":{},"end":{},"error":"unable to connect to server"}"#;
        let err = parse_iperf3_json(json).unwrap_err().to_string();
        assert!(err.contains("unable to connect"), "{err}");
    }
}
