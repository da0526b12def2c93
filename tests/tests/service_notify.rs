//! `gatehoused run` and `gatehouse service` under systemd's `Type=notify` with a watchdog
//! (issue 15: service integration): each says READY=1 once it serves, WATCHDOG=1 at half of
//! `WATCHDOG_USEC` while its main loop runs, and STOPPING=1 on SIGTERM. The test plays the
//! service manager: a datagram socket named by `NOTIFY_SOCKET`, read from here.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use gatehouse_tests::client::{ClientHome, LISTENING};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir};
use gatehouse_tests::proc::Proc;
use gatehouse_tests::{GatewayTopology, require_commands, require_root};

/// Notifications received within `within`, until one contains `want`.
fn read_until(sock: &UnixDatagram, want: &str, within: Duration) -> Result<Vec<String>> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = m.lines().any(|l| l == want);
                got.push(m);
                if done {
                    return Ok(got);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            // A signal reached this thread (CI saw EINTR here once): read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no {want} within {within:?}; received {got:?}")
}

#[test]
fn gatehoused_notifies_ready_watchdog_and_stopping() -> Result<()> {
    require_root();
    require_commands(&["ip"]);
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("sn", 208, 1)?;
    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd208")?;
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path)?;
    let path_s = path.display().to_string();
    // A 2 s watchdog: a ping every second.
    let gw = Gatehoused::start_with_env(
        &topo.gateway,
        &gw_dir,
        &dir.path().join("gatehoused.log"),
        &[
            ("NOTIFY_SOCKET", path_s.as_str()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    )?;
    let first = read_until(&sock, "READY=1", Duration::from_secs(10))?;
    let ready = first.last().cloned().unwrap_or_default();
    ensure!(
        ready.lines().any(|l| l == format!("MAINPID={}", gw.pid()))
            && ready.lines().any(|l| l.starts_with("STATUS=serving ")),
        "READY without MAINPID {} or STATUS: {ready:?}",
        gw.pid()
    );
    // Three watchdog pings in about three seconds (the first right after READY).
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        read_until(&sock, "WATCHDOG=1", Duration::from_secs(3))?;
        pings += 1;
    }
    let took = started.elapsed();
    ensure!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "3 watchdog pings took {took:?} with WATCHDOG_USEC=2000000 (one a second expected)"
    );
    gw.terminate(Duration::from_secs(20))?;
    read_until(&sock, "STOPPING=1", Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn without_notify_socket_nothing_is_sent_and_the_gateway_runs() -> Result<()> {
    // The watchdog alone (no NOTIFY_SOCKET) must not make the gateway send anywhere or fail.
    // Its stderr plays the journal stream (JOURNAL_STREAM names the log file's device and
    // inode): lines carry the journal's priority prefix and no timestamp.
    use std::os::unix::fs::MetadataExt;
    require_root();
    require_commands(&["ip"]);
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("sm", 209, 1)?;
    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd209")?;
    let log = dir.path().join("gatehoused.log");
    std::fs::write(&log, "")?;
    let m = std::fs::metadata(&log)?;
    let stream = format!("{}:{}", m.dev(), m.ino());
    let gw = Gatehoused::start_with_env(
        &topo.gateway,
        &gw_dir,
        &log,
        &[
            ("WATCHDOG_USEC", "200000"),
            ("JOURNAL_STREAM", stream.as_str()),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(600));
    gw.terminate(Duration::from_secs(20))?;
    let text = std::fs::read_to_string(&log)?;
    let ready = text
        .lines()
        .find(|l| l.contains("gateway ready"))
        .unwrap_or_default();
    ensure!(
        ready.starts_with("<6>gateway ready"),
        "`gateway ready` is not an info line in journal format (`<6>...`): {ready:?}\n{text}"
    );
    ensure!(
        text.lines().any(|l| l.starts_with("<6>gateway stopped")),
        "no `<6>gateway stopped` line:\n{text}"
    );
    Ok(())
}

#[test]
fn the_client_service_notifies_ready_watchdog_and_stopping() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let home = ClientHome::new(&dir.path().join("client"), "nameserver 192.0.2.53\n")?;
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path)?;
    let mut cmd = home.command(None, ["service"]);
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "2000000")
        .env("GATEHOUSE_LOG", "debug");
    let svc = Proc::spawn(cmd, &dir.path().join("service.log"))?;
    svc.wait_for_log(LISTENING, Duration::from_secs(20))?;
    let first = read_until(&sock, "READY=1", Duration::from_secs(5))?;
    let ready = first.last().cloned().unwrap_or_default();
    ensure!(
        ready.lines().any(|l| l == format!("MAINPID={}", svc.pid()))
            && ready.lines().any(|l| l.starts_with("STATUS=listening on ")),
        "READY without MAINPID {} or STATUS: {ready:?}",
        svc.pid()
    );
    for _ in 0..2 {
        read_until(&sock, "WATCHDOG=1", Duration::from_secs(3))?;
    }
    svc.stop();
    read_until(&sock, "STOPPING=1", Duration::from_secs(1))?;
    Ok(())
}
