//! OpenVPN control-channel wrappers on `gatehoused`, with the stock OpenVPN 2.6 client in
//! namespaces: a `tls-crypt-v2` profile exported by `gatehouse-certs` connects (UDP and TCP)
//! and pings; clients without the key, or with a key of another gateway, are dropped before
//! any TLS work (nothing answered, drops counted); and a gateway moved from an existing
//! install with its stock `tls-auth` (key-direction, `auth SHA256`) or `tls-crypt` static key
//! takes stock clients configured the way install scripts write them.
//!
//! Tags `tw*`, subnet indexes 120..=123.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gatehouse_tests::gatehoused::{
    CONNECTED, Gatehoused, STOPPED, drop_counters, spawn_stock_client, toml_str, wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::proc::run_with_timeout;
use gatehouse_tests::{GatewaySetup, Proc};

/// How long the gateway gets to log `client connected` once the client says it is up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long refused clients keep trying before we look at the counters.
const REFUSED_FOR: Duration = Duration::from_secs(6);
/// What the stock client logs when the server's first packet reaches it.
const SERVER_ANSWERED: &str = "TLS: Initial packet from";

/// One test's world (namespaces, gateway data directory, scratch folder) and this
/// file's helpers on it.
struct Setup(GatewaySetup);

impl std::ops::Deref for Setup {
    type Target = GatewaySetup;

    fn deref(&self) -> &GatewaySetup {
        &self.0
    }
}

impl Setup {
    fn new(tag: &str, subnet_index: u8, n_clients: usize) -> Result<Setup> {
        let commands = &["ip", "openvpn", "ping"];
        GatewaySetup::new(tag, subnet_index, n_clients, commands).map(Setup)
    }

    /// Issues `name` and exports its `.ovpn` dialling client `i`'s gateway address.
    fn profile(&self, name: &str, i: usize) -> Result<String> {
        let gateway = self.topo.client(i).gateway_addr;
        let path =
            self.gw_dir
                .client_profile(name, gateway, &self.path(&format!("{name}.ovpn")))?;
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Writes `text` as a profile and starts the stock client on it in client `i`'s namespace.
    fn stock_client(&self, i: usize, name: &str, text: &str, dev: &str) -> Result<Proc> {
        let path = self.path(&format!("{name}-{dev}.ovpn"));
        fs::write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        let log = self.path(&format!("openvpn-{dev}.log"));
        spawn_stock_client(&self.topo.client(i).ns, &path, dev, &[], &log)
    }

    /// Client `i` is up, the gateway logged `client connected` for `name`, and the LAN host
    /// behind the gateway answers pings through the tunnel.
    fn connected_and_pings(
        &self,
        gw: &Gatehoused,
        client: &Proc,
        i: usize,
        name: &str,
    ) -> Result<()> {
        wait_client_up(client, gw, 1, UP_TIMEOUT)?;
        let from = self.topo.client(i).addr;
        gw.wait_event(
            CONNECTED,
            |e| e.field("client") == Some(name) && e.remote_is(from),
            EVENT_TIMEOUT,
        )
        .with_context(|| logs(gw, client))?;
        wait_ping(self.ns(i), self.topo.lan_host, Duration::from_secs(10))
            .with_context(|| logs(gw, client))
    }
}

fn logs(gw: &Gatehoused, client: &Proc) -> String {
    format!(
        "gatehoused log {}:\n{}\nclient log {}:\n{}",
        gw.proc().log_path().display(),
        gw.log_tail(30),
        client.log_path().display(),
        client.log_tail(30)
    )
}

/// The `<tag>` block of a profile.
fn block(profile: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = profile.find(&open)? + open.len();
    let end = profile.find(&close)?;
    Some(profile[start..end].trim().to_string())
}

/// The profile with its `<tag>` block replaced by `with` (or removed when `with` is empty).
fn replace_block(profile: &str, tag: &str, with: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>\n");
    let (Some(start), Some(end)) = (profile.find(&open), profile.find(&close)) else {
        return profile.to_string();
    };
    format!(
        "{}{with}{}",
        &profile[..start],
        &profile[end + close.len()..]
    )
}

fn mode_of(path: &Path) -> Result<u32> {
    Ok(fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// `openvpn --genkey KIND FILE [args]` (the stock tool makes the keys an old install has).
fn genkey(args: &[&str]) -> Result<()> {
    let mut cmd = std::process::Command::new("openvpn");
    cmd.arg("--genkey").args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(10))?;
    ensure!(
        out.status.success(),
        "openvpn --genkey {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Stops the gateway and returns the drop counters of its `gateway stopped` line.
fn stop_and_count(gw: &Gatehoused) -> Result<std::collections::BTreeMap<String, u64>> {
    gw.terminate(Duration::from_secs(5))?;
    let stopped = gw
        .events(STOPPED)
        .pop()
        .with_context(|| format!("no `{STOPPED}` after SIGTERM:\n{}", gw.log_tail(20)))?;
    eprintln!("{}", stopped.line);
    Ok(drop_counters(&stopped.line))
}

#[test]
fn stock_client_with_exported_tls_crypt_v2_profile_connects() -> Result<()> {
    let s = Setup::new("twv2", 120, 2)?;
    s.gw_dir.set("openvpn.tls_crypt_v2", &toml_str("on"))?;
    let gw = s.start_gateway_debug("gatehoused.log")?;
    let server_key = s.gw_dir.pki().join("tls-crypt-v2-server.key");
    ensure!(
        server_key.exists(),
        "gatehoused did not create {}",
        server_key.display()
    );
    ensure!(
        mode_of(&server_key)? == 0o600,
        "{} must be 0600",
        server_key.display()
    );

    let profile = s.profile("alice", 0)?;
    let key = block(&profile, "tls-crypt-v2").context(
        "the exported .ovpn has no <tls-crypt-v2> block although the PKI has a server key",
    )?;
    ensure!(key.starts_with("-----BEGIN OpenVPN tls-crypt-v2 client key-----"));
    let stored: Vec<_> =
        fs::read_dir(s.gw_dir.pki().join("private/tls-crypt-v2"))?.collect::<Result<_, _>>()?;
    ensure!(
        stored.len() == 1,
        "one client key stored per client: {stored:?}"
    );
    ensure!(
        mode_of(&stored[0].path())? == 0o600,
        "client keys are secrets: 0600"
    );
    // Exporting again hands out the same key (the client's, not a new one each time).
    let again = s.profile_again("alice", 0)?;
    ensure!(
        block(&again, "tls-crypt-v2") == Some(key.clone()),
        "a second export changed the key"
    );

    let udp = s.stock_client(0, "alice", &profile, "tun-twv2")?;
    s.connected_and_pings(&gw, &udp, 0, "alice")?;
    ensure!(
        gw.log().contains("wrapper=\"tls-crypt-v2\"") || gw.log().contains("wrapper=tls-crypt-v2"),
        "the gateway did not log a tls-crypt-v2 session:\n{}",
        gw.log_tail(30)
    );

    // The same profile over TCP.
    let bob = s.profile("bob", 1)?;
    let tcp = bob
        .replace("proto udp", "proto tcp-client")
        .replace(" 1194\n", " 443\n");
    let tcp = s.stock_client(1, "bob", &tcp, "tun-twv2t")?;
    s.connected_and_pings(&gw, &tcp, 1, "bob")?;
    let drops = stop_and_count(&gw)?;
    for reason in ["unwrapped", "wrapauth", "wrapkey", "wrapreplay"] {
        ensure!(
            !drops.contains_key(reason),
            "clean clients caused {reason} drops: {drops:?}"
        );
    }
    Ok(())
}

impl Setup {
    fn profile_again(&self, name: &str, i: usize) -> Result<String> {
        let gateway = self.topo.client(i).gateway_addr;
        let out = self.path(&format!("{name}-again.ovpn"));
        gatehouse_tests::gatehoused::export_ovpn(&self.gw_dir.pki(), name, gateway, &out)?;
        Ok(fs::read_to_string(out)?)
    }
}

#[test]
fn stock_clients_without_the_key_or_with_a_foreign_key_are_dropped_before_tls() -> Result<()> {
    let s = Setup::new("twno", 121, 2)?;
    s.gw_dir.set("openvpn.tls_crypt_v2", &toml_str("on"))?;
    let gw = s.start_gateway_debug("gatehoused.log")?;
    let profile = s.profile("carol", 0)?;
    ensure!(block(&profile, "tls-crypt-v2").is_some());

    // Without the key: a plain hard reset.
    let plain = replace_block(&profile, "tls-crypt-v2", "");
    let no_key = s.stock_client(0, "carol", &plain, "tun-twn0")?;
    // With a key made by another server key (a profile of another gateway).
    let other = s.path("other-server.key");
    let other_client = s.path("other-client.key");
    genkey(&["tls-crypt-v2-server", other.to_str().context("path")?])?;
    genkey(&[
        "tls-crypt-v2-client",
        other_client.to_str().context("path")?,
        "--tls-crypt-v2",
        other.to_str().context("path")?,
    ])?;
    let foreign = fs::read_to_string(&other_client)?;
    let foreign = replace_block(
        &profile,
        "tls-crypt-v2",
        &format!("<tls-crypt-v2>\n{}\n</tls-crypt-v2>\n", foreign.trim()),
    );
    let profile1 = foreign.replace(
        &s.topo.client(0).gateway_addr.to_string(),
        &s.topo.client(1).gateway_addr.to_string(),
    );
    let wrong_key = s.stock_client(1, "carol", &profile1, "tun-twn1")?;

    thread::sleep(REFUSED_FOR);
    for (what, client) in [
        ("without the key", &no_key),
        ("with a foreign key", &wrong_key),
    ] {
        ensure!(
            client.is_running(),
            "the client {what} exited:\n{}",
            client.log_tail(20)
        );
        ensure!(
            !client.log_contents().contains(SERVER_ANSWERED),
            "the gateway answered a client {what}:\n{}",
            logs(&gw, client)
        );
    }
    let log = gw.log();
    ensure!(
        !log.contains("new session"),
        "the gateway created a session for an unauthenticated client:\n{}",
        gw.log_tail(30)
    );
    ensure!(
        log.contains("dropped an OpenVPN packet before TLS"),
        "the gateway did not log the refusals:\n{}",
        gw.log_tail(30)
    );
    let drops = stop_and_count(&gw)?;
    ensure!(
        drops.get("unwrapped").copied().unwrap_or(0) >= 1,
        "the client without the key was not counted as unwrapped: {drops:?}"
    );
    ensure!(
        drops.get("wrapkey").copied().unwrap_or(0) >= 1,
        "the client with a foreign key was not counted as wrapkey: {drops:?}"
    );
    Ok(())
}

/// A gateway configured with an existing install's stock static key, and a stock client
/// with that key inline, as install scripts write it.
fn static_key_install(tag: &str, index: u8, wrapper: &str) -> Result<()> {
    let s = Setup::new(tag, index, 1)?;
    let key = s.gw_dir.path().join("ta.key");
    genkey(&["secret", key.to_str().context("path")?])?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
    let key_text = fs::read_to_string(&key)?;
    let extra = if wrapper == "tls-auth" {
        s.gw_dir.set("openvpn.tls_auth_file", &toml_str("ta.key"))?;
        s.gw_dir
            .set("openvpn.tls_auth_key_direction", &toml_str("0"))?;
        s.gw_dir
            .set("openvpn.tls_auth_digest", &toml_str("SHA256"))?;
        format!(
            "auth SHA256\nkey-direction 1\n<tls-auth>\n{}\n</tls-auth>\n",
            key_text.trim()
        )
    } else {
        s.gw_dir
            .set("openvpn.tls_crypt_file", &toml_str("ta.key"))?;
        format!("<tls-crypt>\n{}\n</tls-crypt>\n", key_text.trim())
    };
    let gw = s.start_gateway_debug("gatehoused.log")?;
    let profile = s.profile("dave", 0)?;
    ensure!(
        block(&profile, "tls-crypt-v2").is_none(),
        "no v2 server key, no v2 block"
    );
    let client = s.stock_client(
        0,
        "dave",
        &format!("{profile}{extra}"),
        &format!("tun-{tag}"),
    )?;
    s.connected_and_pings(&gw, &client, 0, "dave")?;
    ensure!(
        gw.log().contains(&format!("wrapper=\"{wrapper}\""))
            || gw.log().contains(&format!("wrapper={wrapper}")),
        "the gateway did not log a {wrapper} session:\n{}",
        gw.log_tail(30)
    );
    // A client of the same install without the key is dropped before TLS.
    let bare = s.stock_client(0, "dave", &profile, &format!("tun-{tag}b"))?;
    thread::sleep(Duration::from_secs(3));
    ensure!(
        !bare.log_contents().contains(SERVER_ANSWERED),
        "the gateway answered a client without the {wrapper} key:\n{}",
        logs(&gw, &bare)
    );
    let drops = stop_and_count(&gw)?;
    let refused: u64 = ["unwrapped", "wrapauth", "malformed"]
        .iter()
        .map(|r| drops.get(*r).copied().unwrap_or(0))
        .sum();
    ensure!(refused >= 1, "the bare client was not counted: {drops:?}");
    Ok(())
}

#[test]
fn stock_client_with_tls_auth_key_direction_and_auth_sha256_connects() -> Result<()> {
    static_key_install("twta", 122, "tls-auth")
}

#[test]
fn stock_client_with_tls_crypt_connects() -> Result<()> {
    static_key_install("twtc", 123, "tls-crypt")
}
