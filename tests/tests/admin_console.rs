//! The web console (issue 15) in a real browser. gatehoused serves the console and the admin
//! API over HTTPS (`[admin] listen`) to an admin's workstation; headless Chromium, driven
//! through chromedriver (WebDriver), opens it and:
//!
//! - without the token, shows the API's refusal (and no sessions);
//! - with the token typed in, shows both sessions (stock OpenVPN 2.6 clients `alice` and
//!   `bob`) with the session ids `gatehoused ctl sessions` reports, and their throughput
//!   graphs fill from refresh to refresh (screenshots: `target/admin-console/console.png`,
//!   and `console-confirm.png` beside it with a confirmation showing);
//! - a Disconnect that is asked but cancelled ends nothing;
//! - a confirmed Disconnect on alice ends alice's session (the gateway logs `session ended by
//!   the operator client=alice`, her session id is gone from `ctl sessions`; her client may
//!   come back with a new one) while bob's session stays, and the page drops her row;
//! - a confirmed Revoke on bob revokes his certificate (`gatehouse-certs list`) and ends his
//!   session.
//!
//! Namespaces: clients 0 (alice) and 1 (bob) of the topology; client 2 is the admin's
//! workstation, where Chromium runs, and the admin listener is on the gateway's address on
//! that link. chromedriver stays in the test's namespace and talks to Chromium over a pipe
//! (`--remote-debugging-pipe`), so only the browser has to be in the workstation's namespace.
//! The browser accepts exactly the gateway certificate's key
//! (`--ignore-certificate-errors-spki-list`), not any certificate.
//!
//! Tag `wc`, subnet index 212.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use gatehouse_tests::desktop::target_dir;
use gatehouse_tests::gatehoused::{
    Gatehoused, GatewayDir, certs_cli, spawn_stock_client, toml_str, wait_client_up,
};
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::proc::run_with_timeout;
use gatehouse_tests::{GatewayTopology, Netns, Proc, bin, require_commands, require_root};
use serde_json::{Value, json};

/// The topology's client that is the admin's workstation (0 and 1 are VPN clients).
const WORKSTATION: usize = 2;
const ADMIN_PORT: u16 = 8443;
/// What gatehoused logs for each session an operator's disconnect ends.
const ENDED_BY_OPERATOR: &str = "session ended by the operator";
/// How long the page gets to show what the API says (it refreshes every 2 s).
const PAGE_WAIT: Duration = Duration::from_secs(10);
/// How long a confirmed action gets to end a session.
const ACTION_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);

/// Sessions as `gatehoused ctl sessions --json` lists them: (client, session id).
fn ctl_sessions(dir: &GatewayDir) -> Result<Vec<(String, u64)>> {
    let mut cmd = Command::new(bin("gatehoused"));
    cmd.args(["ctl", "sessions", "--json", "--data-dir"])
        .arg(dir.path());
    let out = run_with_timeout(cmd, Duration::from_secs(10))?;
    ensure!(
        out.status.success(),
        "gatehoused ctl sessions failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).context("ctl sessions --json")?;
    v.as_array()
        .context("ctl sessions --json printed no array")?
        .iter()
        .map(|s| {
            Ok((
                s["client"]
                    .as_str()
                    .context("session without client")?
                    .to_string(),
                s["id"].as_u64().context("session without id")?,
            ))
        })
        .collect()
}

/// The session id of `client` in `sessions`.
fn id_of(sessions: &[(String, u64)], client: &str) -> Option<u64> {
    sessions
        .iter()
        .find(|(c, _)| c == client)
        .map(|(_, id)| *id)
}

/// Starts `chromedriver --port=0` (in the test's namespace, listening on localhost only) and
/// returns it with the port it chose.
fn start_chromedriver(log: &Path) -> Result<(Proc, u16)> {
    let mut cmd = Command::new("chromedriver");
    cmd.arg("--port=0");
    let driver = Proc::spawn(cmd, log)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let port = driver
            .log_contents()
            .lines()
            .find_map(|l| l.split("started successfully on port ").nth(1))
            .and_then(|p| p.trim().trim_end_matches('.').parse().ok());
        if let Some(port) = port {
            return Ok((driver, port));
        }
        ensure!(
            driver.is_running() && Instant::now() < deadline,
            "chromedriver did not say its port:\n{}",
            driver.log_tail(10)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A script that runs Chromium inside `ns`: chromedriver starts it as the browser binary and
/// hands it the DevTools pipe on fds 3 and 4, which `ip netns exec` and `exec` keep.
fn chromium_in(ns: &Netns, dir: &Path) -> Result<PathBuf> {
    let path = dir.join("chromium-in-netns");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec ip netns exec {} chromium \"$@\"\n",
            ns.name()
        ),
    )?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of the certificate in `cert`: what Chromium's
/// `--ignore-certificate-errors-spki-list` takes.
fn spki_sha256(cert: &Path) -> Result<String> {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | openssl base64 -A",
        "sh",
    ])
    .arg(cert);
    let out = run_with_timeout(cmd, Duration::from_secs(10))?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        out.status.success() && hash.len() == 44,
        "no SPKI hash of {}: {hash:?} {}",
        cert.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(hash)
}

/// A WebDriver session with headless Chromium started by `browser`.
async fn open_browser(port: u16, browser: &Path, spki: &str) -> Result<Client> {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": browser,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--remote-debugging-pipe",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1500,800",
                format!("--ignore-certificate-errors-spki-list={spki}"),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        bail!("capabilities are an object");
    };
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps);
    builder
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .context("no WebDriver session with Chromium")
}

/// One session row of the page.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    client: String,
    id: u64,
    /// Rate points in its throughput graph.
    points: i64,
    /// The confirmation step is showing.
    asking: Option<String>,
}

/// What the page shows, read in one go.
#[derive(Debug, Default)]
struct Page {
    sessions: Vec<Row>,
    error: String,
    notice: String,
    summary_sessions: String,
}

impl Page {
    fn row(&self, id: u64) -> Option<&Row> {
        self.sessions.iter().find(|r| r.id == id)
    }
}

const READ_PAGE: &str = r##"
const q = s => document.querySelector(s);
const shown = e => e && !e.hidden ? e.textContent : "";
return {
  sessions: [...document.querySelectorAll("#sessions tbody tr[data-id]")].map(r => ({
    client: r.dataset.client,
    id: Number(r.dataset.id),
    points: Number(r.querySelector("svg.graph")?.dataset.points ?? -1),
    asking: r.querySelector("button.confirm") ? r.querySelector(".question").textContent : null,
  })),
  error: shown(q("#error")),
  notice: shown(q("#notice")),
  summary_sessions: q("#sum-sessions").textContent,
};
"##;

async fn read_page(c: &Client) -> Result<Page> {
    let v = c.execute(READ_PAGE, vec![]).await?;
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let sessions = v["sessions"]
        .as_array()
        .context("no sessions in the page's state")?
        .iter()
        .map(|r| Row {
            client: r["client"].as_str().unwrap_or_default().to_string(),
            id: r["id"].as_u64().unwrap_or(u64::MAX),
            points: r["points"].as_i64().unwrap_or(-1),
            asking: r["asking"].as_str().map(str::to_string),
        })
        .collect();
    Ok(Page {
        sessions,
        error: text("error"),
        notice: text("notice"),
        summary_sessions: text("summary_sessions"),
    })
}

/// Reads the page until `ok` accepts it; fails with `what` and the last page after `timeout`.
async fn wait_page(
    c: &Client,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Page) -> bool,
) -> Result<Page> {
    let deadline = Instant::now() + timeout;
    loop {
        let page = read_page(c).await?;
        if ok(&page) {
            return Ok(page);
        }
        if Instant::now() >= deadline {
            bail!("the page did not show {what} within {timeout:?}; it shows {page:#?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Clicks `button` (a class) in the session row of `id`.
async fn click(c: &Client, id: u64, button: &str) -> Result<()> {
    let css = format!("#sessions tr[data-id=\"{id}\"] button.{button}");
    c.find(Locator::Css(&css))
        .await
        .with_context(|| format!("no {css}"))?
        .click()
        .await
        .with_context(|| format!("clicking {css}"))
}

/// Polls `ctl sessions` until `ok` accepts them.
async fn wait_sessions(
    dir: &GatewayDir,
    what: &str,
    ok: impl Fn(&[(String, u64)]) -> bool,
) -> Result<Vec<(String, u64)>> {
    let deadline = Instant::now() + ACTION_WAIT;
    loop {
        let s = ctl_sessions(dir)?;
        if ok(&s) {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            bail!("`ctl sessions` did not show {what} within {ACTION_WAIT:?}: {s:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the browser part needs from the rest of the test.
struct World<'a> {
    gw: &'a Gatehoused,
    gw_dir: &'a GatewayDir,
    url: String,
    token: String,
    screenshot: PathBuf,
}

async fn drive(c: &Client, w: &World<'_>) -> Result<()> {
    c.goto(&w.url)
        .await
        .with_context(|| format!("opening {}", w.url))?;

    // Without the token the API refuses, and the page says what to do.
    let page = wait_page(c, "the missing token", PAGE_WAIT, |p| {
        p.error.contains("admin-token")
    })
    .await?;
    ensure!(
        page.sessions.is_empty(),
        "sessions without a token: {page:#?}"
    );
    eprintln!("without the token: {}", page.error);

    c.find(Locator::Id("token"))
        .await?
        .send_keys(&w.token)
        .await?;
    c.find(Locator::Id("save-token")).await?.click().await?;

    // Both sessions, with the gateway's ids, and graphs with a few points.
    let before = ctl_sessions(w.gw_dir)?;
    let (Some(alice), Some(bob)) = (id_of(&before, "alice"), id_of(&before, "bob")) else {
        bail!("ctl sessions lists {before:?}, not alice and bob");
    };
    let page = wait_page(c, "both sessions with graphs", PAGE_WAIT, |p| {
        let row = |id, name: &str| p.row(id).is_some_and(|r| r.client == name && r.points >= 3);
        p.error.is_empty()
            && p.sessions.len() == 2
            && row(alice, "alice")
            && row(bob, "bob")
            && p.summary_sessions.starts_with("2 ")
    })
    .await?;
    eprintln!("the page shows {:?}", page.sessions);
    let png = c.screenshot().await?;
    ensure!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "the screenshot is no PNG of a page ({} bytes)",
        png.len()
    );
    if let Some(parent) = w.screenshot.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&w.screenshot, &png)?;
    eprintln!("screenshot of the console: {}", w.screenshot.display());

    // Disconnect asks first; Cancel ends nothing.
    click(c, bob, "disconnect").await?;
    let page = wait_page(c, "the confirmation for bob", PAGE_WAIT, |p| {
        p.row(bob)
            .and_then(|r| r.asking.as_deref())
            .is_some_and(|q| q.contains("bob"))
    })
    .await?;
    eprintln!("asked: {:?}", page.row(bob).and_then(|r| r.asking.clone()));
    let asking = w.screenshot.with_file_name("console-confirm.png");
    fs::write(&asking, c.screenshot().await?)?;
    eprintln!("screenshot of the confirmation: {}", asking.display());
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        ctl_sessions(w.gw_dir)? == before,
        "a Disconnect that was not confirmed changed the sessions"
    );
    click(c, bob, "cancel").await?;
    wait_page(c, "bob's row without the confirmation", PAGE_WAIT, |p| {
        p.row(bob).is_some_and(|r| r.asking.is_none())
    })
    .await?;
    ensure!(
        ctl_sessions(w.gw_dir)? == before && w.gw.events(ENDED_BY_OPERATOR).is_empty(),
        "a cancelled Disconnect ended a session: {}",
        w.gw.log_tail(10)
    );

    // A confirmed Disconnect ends alice's session; bob's stays.
    click(c, alice, "disconnect").await?;
    wait_page(c, "the confirmation for alice", PAGE_WAIT, |p| {
        p.row(alice).is_some_and(|r| r.asking.is_some())
    })
    .await?;
    click(c, alice, "confirm").await?;
    let clicked = Instant::now();
    let after = wait_sessions(w.gw_dir, "alice's session ended", |s| {
        !s.iter().any(|(_, id)| *id == alice)
    })
    .await?;
    eprintln!(
        "alice's session {alice} ended {:.1} s after the click; sessions now {after:?}",
        clicked.elapsed().as_secs_f64()
    );
    ensure!(
        id_of(&after, "bob") == Some(bob),
        "bob's session {bob} did not survive alice's disconnect: {after:?}"
    );
    let ended = w.gw.events(ENDED_BY_OPERATOR);
    ensure!(
        ended.len() == 1 && ended[0].field("client") == Some("alice"),
        "gatehoused should have logged one `{ENDED_BY_OPERATOR}` for alice: {:?}",
        ended.iter().map(|e| &e.line).collect::<Vec<_>>()
    );
    let page = wait_page(c, "alice's old row gone, bob's kept", PAGE_WAIT, |p| {
        p.row(alice).is_none() && p.row(bob).is_some() && p.notice.contains("Disconnected alice")
    })
    .await?;
    eprintln!("notice: {}", page.notice);

    // A confirmed Revoke revokes bob's certificate and ends his session.
    click(c, bob, "revoke").await?;
    wait_page(c, "the revoke confirmation for bob", PAGE_WAIT, |p| {
        p.row(bob)
            .and_then(|r| r.asking.as_deref())
            .is_some_and(|q| q.starts_with("Revoke bob"))
    })
    .await?;
    click(c, bob, "confirm").await?;
    wait_sessions(w.gw_dir, "bob's session ended", |s| {
        !s.iter().any(|(c, _)| c == "bob")
    })
    .await?;
    let page = wait_page(c, "bob revoked", PAGE_WAIT, |p| {
        p.row(bob).is_none() && p.notice.contains("Revoked bob")
    })
    .await?;
    eprintln!("notice: {}", page.notice);
    let list: Value = serde_json::from_str(&certs_cli(&w.gw_dir.pki(), &["list", "--json"])?)?;
    let status = list
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == "bob"))
        .map(|c| c["status"].clone());
    ensure!(
        status == Some(json!("revoked")),
        "bob's certificate is {status:?} after Revoke, not revoked"
    );
    Ok(())
}

#[test]
fn web_console_shows_sessions_and_its_disconnect_ends_one() -> Result<()> {
    let started = Instant::now();
    require_root();
    require_commands(&[
        "ip",
        "ping",
        "openssl",
        "openvpn",
        "chromium",
        "chromedriver",
    ]);
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("wc", 212, 3)?;
    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd212")?;
    let admin_addr = topo.client(WORKSTATION).gateway_addr;
    gw_dir.set(
        "admin.listen",
        &toml_str(&format!("{admin_addr}:{ADMIN_PORT}")),
    )?;
    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused.log"))?;
    let token = fs::read_to_string(gw_dir.path().join("admin-token"))
        .context("gatehoused made no admin-token")?
        .trim()
        .to_string();

    // Two stock OpenVPN clients, pinging the LAN so the graphs have something to show.
    let mut clients = Vec::new();
    let mut pings = Vec::new();
    for (i, name) in ["alice", "bob"].into_iter().enumerate() {
        let c = topo.client(i);
        let profile = gw_dir.client_profile(
            name,
            c.gateway_addr,
            &dir.path().join(format!("{name}.ovpn")),
        )?;
        let log = dir.path().join(format!("openvpn-{name}.log"));
        clients.push(spawn_stock_client(
            &c.ns,
            &profile,
            &format!("tun-{name}"),
            &[],
            &log,
        )?);
    }
    for (i, client) in clients.iter().enumerate() {
        wait_client_up(client, &gw, 1, UP_TIMEOUT)?;
        let log = dir.path().join(format!("ping-{i}.log"));
        let lan = topo.lan_host.to_string();
        pings.push(topo.client(i).ns.spawn(
            "ping",
            ["-n", "-q", "-i", "0.2", "-s", "1000", "-c", "150", &lan],
            &log,
        )?);
    }
    eprintln!(
        "both clients up after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (driver, port) = start_chromedriver(&dir.path().join("chromedriver.log"))?;
    let browser = chromium_in(&topo.client(WORKSTATION).ns, dir.path())?;
    let spki = spki_sha256(&gw_dir.pki().join("server").join("gateway.crt"))?;
    let world = World {
        gw: &gw,
        gw_dir: &gw_dir,
        url: format!("https://{admin_addr}:{ADMIN_PORT}/"),
        token,
        screenshot: target_dir().join("admin-console").join("console.png"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let c = open_browser(port, &browser, &spki).await?;
        let r = drive(&c, &world).await;
        if let Err(e) = c.close().await {
            eprintln!("warning: closing the browser: {e}");
        }
        r
    });
    result.with_context(|| {
        format!(
            "gatehoused log:\n{}\nchromedriver log:\n{}",
            gw.log_tail(20),
            driver.log_tail(10)
        )
    })?;
    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(20));
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
