//! The IKEv2 clients built into Windows, iOS/macOS and Android, played by strongSwan 5.9
//! (`charon-systemd` + `swanctl`, userspace ESP) configured to propose exactly what each of
//! them proposes by default (docs/builtin-ikev2-clients.md lists the proposals and their
//! sources). Each connects to one `gatehoused` with a certificate, gets a pool address and
//! pings the LAN host through the tunnel; the gateway's `client connected` line names the
//! IKE and ESP suites it chose, which are checked.
//!
//! A second test runs the gateway with `ikev2.allow_modp1024 = false`: Windows' default offer
//! is refused, and the suites the exported Windows script and Apple profile configure
//! (`gatehouse-certs export --format windows|mobileconfig`) connect.
//!
//! Tags `bi*`, subnet indexes 110 and 111.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::gatehoused::{CONNECTED, Gatehoused, GatewayDir};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::strongswan::{CHARON_PLUGINS, Charon, RoadWarrior, SwanctlCreds};
use gatehouse_tests::{GatewayTopology, require_commands, require_root};
use tempfile::TempDir;

/// How long the gateway gets to log `client connected` once the client says it is up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A built-in client as strongSwan plays it, and what the gateway must choose for it.
struct Builtin {
    /// The client certificate's name (and the gateway's `client` field).
    name: &'static str,
    /// Which client this is, for messages.
    label: &'static str,
    /// swanctl `proposals` (comma-separated proposals, in the client's order).
    ike: &'static str,
    /// swanctl `esp_proposals`.
    esp: &'static str,
    /// The gateway's `ike` field: the suite it must choose.
    want_ike: &'static str,
    /// The gateway's `esp` field.
    want_esp: &'static str,
    /// Rekey the CHILD SA after 3 s and ping through the new one too.
    rekey_child: bool,
}

/// Windows 10 and 11 without registry changes or `Set-VpnConnectionIPsecConfiguration`:
/// IKE with MODP-1024 only, ESP with HMAC-SHA1-96 only.
const WINDOWS: Builtin = Builtin {
    name: "win10",
    label: "Windows 10/11",
    ike: "3des-aes128-aes192-aes256-sha1-sha256-sha384-modp1024",
    esp: "aes256-aes128-3des-des-null-sha1",
    want_ike: "aes256-sha256-prfsha256-modp1024",
    want_esp: "aes256-sha1",
    rekey_child: true,
};

/// Windows 11, which puts an AES-GCM proposal (still MODP-1024) first.
const WINDOWS_11: Builtin = Builtin {
    name: "win11",
    label: "Windows 11",
    ike: "aes128gcm16-aes256gcm16-prfsha1-prfsha256-prfsha384-modp1024,\
          3des-aes128-aes192-aes256-sha1-sha256-sha384-modp1024",
    esp: "aes256-aes128-3des-des-null-sha1",
    want_ike: "aes256gcm16-prfsha256-modp1024",
    want_esp: "aes256-sha1",
    rekey_child: false,
};

/// iOS 16 configured by hand (no profile).
const IOS: Builtin = Builtin {
    name: "iphone",
    label: "iOS 16",
    ike: "aes256-sha256-modp2048,aes256-sha256-ecp256,aes256-sha256-modp1536,\
          aes128-sha1-modp1024,3des-sha1-modp1024",
    esp: "aes256-sha256,aes256-sha256,aes256-sha256,aes128-sha1,3des-sha1",
    want_ike: "aes256-sha256-prfsha256-modp2048",
    want_esp: "aes256-sha256",
    rekey_child: false,
};

/// macOS 13 configured by hand (no profile): iOS's list without ECP-256.
const MACOS: Builtin = Builtin {
    name: "mac",
    label: "macOS 13",
    ike: "aes256-sha256-modp2048,aes256-sha256-modp1536,aes128-sha1-modp1024,3des-sha1-modp1024",
    esp: "aes256-sha256,aes128-sha1,3des-sha1",
    want_ike: "aes256-sha256-prfsha256-modp2048",
    want_esp: "aes256-sha256",
    rekey_child: false,
};

/// The strongSwan VPN Client for Android: charon's default IKE proposals, and the app's own
/// ESP proposals (android_service.c; charon drops their DH groups from IKE_AUTH).
const ANDROID_APP: Builtin = Builtin {
    name: "android-app",
    label: "strongSwan VPN Client for Android",
    ike: "default",
    esp: "aes256gcm16-aes128gcm16-chacha20poly1305-curve25519-ecp384-ecp521-modp3072-modp4096-ecp256-modp8192,\
          aes256-aes192-aes128-sha384-sha256-sha512-sha1-curve25519-ecp384-ecp521-modp3072-modp4096-ecp256-modp2048-modp8192,\
          aes256gcm16-aes128gcm16-chacha20poly1305,\
          aes256-aes192-aes128-sha384-sha256-sha512-sha1",
    want_ike: "aes256gcm16-prfsha256-curve25519",
    want_esp: "aes256gcm16",
    rekey_child: false,
};

/// Android 11+'s built-in client (Ikev2VpnProfile, VpnIkev2Utils.java): its KE is
/// MODP-4096, which the gateway answers with INVALID_KE_PAYLOAD (x25519).
const ANDROID_NATIVE: Builtin = Builtin {
    name: "android",
    label: "Android 11+ built-in",
    ike: "aes256ctr-aes256-aes192ctr-aes192-aes128ctr-aes128-sha512-sha384-sha256-aesxcbc-aescmac-\
          prfsha512-prfsha384-prfsha256-prfaesxcbc-prfaescmac-prfsha1-modp4096-curve25519-modp3072-modp2048,\
          chacha20poly1305-aes256gcm16-aes256gcm12-aes256gcm8-aes192gcm16-aes192gcm12-aes192gcm8-\
          aes128gcm16-aes128gcm12-aes128gcm8-prfsha512-prfsha384-prfsha256-prfaesxcbc-prfaescmac-prfsha1-\
          modp4096-curve25519-modp3072-modp2048",
    esp: "aes256ctr-aes256-aes192ctr-aes192-aes128ctr-aes128-sha512-sha384-sha256-aesxcbc-aescmac,\
          chacha20poly1305-aes256gcm16-aes256gcm12-aes256gcm8-aes192gcm16-aes192gcm12-aes192gcm8-\
          aes128gcm16-aes128gcm12-aes128gcm8",
    want_ike: "aes256gcm16-prfsha256-curve25519",
    want_esp: "aes256gcm16",
    rekey_child: false,
};

/// What the script `gatehouse-certs export --format windows` configures:
/// `-EncryptionMethod AES256 -IntegrityCheckMethod SHA384 -DHGroup ECP384` and
/// `-CipherTransformConstants GCMAES256`.
const WINDOWS_SCRIPT: Builtin = Builtin {
    name: "win-script",
    label: "Windows with the exported script",
    ike: "aes256-sha384-ecp384",
    esp: "aes256gcm16",
    want_ike: "aes256-sha384-prfsha384-ecp384",
    want_esp: "aes256gcm16",
    rekey_child: false,
};

/// What the profile `gatehouse-certs export --format mobileconfig` configures: AES-256-GCM,
/// SHA2-256 (the PRF), group 19, for IKE and ESP.
const APPLE_PROFILE: Builtin = Builtin {
    name: "apple-profile",
    label: "iOS/macOS with the exported profile",
    ike: "aes256gcm16-prfsha256-ecp256",
    esp: "aes256gcm16",
    want_ike: "aes256gcm16-prfsha256-ecp256",
    want_esp: "aes256gcm16",
    rekey_child: false,
};

/// One test's world: namespaces, a temporary folder, a gateway data directory in it.
struct Setup {
    // Dropped in this order: the namespaces (and whatever still runs in them), then files.
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    dir: TempDir,
}

impl Setup {
    fn new(tag: &str, subnet_index: u8, n_clients: usize) -> Result<Setup> {
        require_root();
        require_commands(&["ip", "ping", "openssl", "charon-systemd", "swanctl"]);
        let dir = tempfile::tempdir()?;
        let topo = GatewayTopology::new(tag, subnet_index, n_clients)?;
        let gw_dir = GatewayDir::for_topology(
            &dir.path().join("gateway"),
            &topo,
            &format!("ghd{subnet_index}"),
        )?;
        Ok(Setup { topo, gw_dir, dir })
    }

    /// A charon in client `i`'s namespace with `c`'s certificate, proposing `c`'s suites.
    fn client(&self, i: usize, c: &Builtin) -> Result<(Charon, RoadWarrior)> {
        let issued = self.gw_dir.issue_client(c.name, &[])?;
        // ctr, xcbc and cmac: AES-CTR, AES-XCBC and AES-CMAC, which Android proposes.
        let charon = Charon::start_with_plugins(
            &self.topo.client(i).ns,
            &self.dir.path().join(format!("swanctl-{}", c.name)),
            "",
            &format!("{CHARON_PLUGINS} ctr xcbc cmac"),
        )?;
        let cert = charon.install_creds(
            c.name,
            &SwanctlCreds {
                ca: self.gw_dir.ca_cert(),
                cert: issued.cert,
                key: issued.key,
            },
        )?;
        let mut rw = RoadWarrior::new("gh", self.topo.client(i).gateway_addr, &cert);
        // Each client dials its own link's address; the gateway's certificate (and so its
        // IKE identity) names the first one.
        rw.remote_id = self.topo.client(0).gateway_addr.to_string();
        rw.proposals = c.ike.split_whitespace().collect();
        rw.esp_proposals = c.esp.split_whitespace().collect();
        if c.rekey_child {
            rw.child_rekey_time = "3s".into();
            rw.child_extra.push("rand_time = 0s".into());
            rw.child_extra.push("life_time = 60s".into());
        }
        charon.write_conns(&[&rw], "")?;
        Ok((charon, rw))
    }
}

fn strongswan_tail(log: &str) -> String {
    gatehouse_tests::strongswan::tail(log, 30)
}

fn logs(gw: &Gatehoused, client: &Charon) -> String {
    format!(
        "gatehoused log:\n{}\ncharon log {}:\n{}",
        gw.log_tail(25),
        client.log_path().display(),
        client.log_tail(40)
    )
}

/// Client `i` plays `c`: connects, the gateway names the expected suites, the LAN host
/// answers pings through the tunnel; then it disconnects. Returns the client's log.
fn connects(s: &Setup, gw: &Gatehoused, i: usize, c: &Builtin) -> Result<String> {
    let started = Instant::now();
    let (charon, rw) = s.client(i, c)?;
    let logs = || format!("{} ({}):\n{}", c.label, c.name, logs(gw, &charon));
    charon.load_all().with_context(logs)?;
    charon.initiate(&rw.child()).with_context(logs)?;
    let event = gw
        .wait_connected(c.name, EVENT_TIMEOUT)
        .with_context(logs)?;
    eprintln!("{}: {}", c.label, event.line);
    ensure!(
        event.field("ike") == Some(c.want_ike) && event.field("esp") == Some(c.want_esp),
        "{}: the gateway chose ike={:?} esp={:?}, expected ike={} esp={}\n{}",
        c.label,
        event.field("ike"),
        event.field("esp"),
        c.want_ike,
        c.want_esp,
        logs()
    );
    let vip = charon
        .virtual_ip()
        .with_context(|| format!("no virtual IP\n{}", logs()))?;
    ensure!(
        event.address() == Some(vip),
        "{}: gateway leased {:?}, strongSwan installed {vip}",
        c.label,
        event.field("address")
    );
    let ns = &s.topo.client(i).ns;
    wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(logs)?;
    if c.rekey_child {
        // strongSwan rekeys the CHILD SA with the same suite; traffic moves to the new SA.
        charon
            .wait_log(
                &format!("CHILD_SA {}{{2}} established", rw.child()),
                Duration::from_secs(15),
            )
            .with_context(logs)?;
        wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(logs)?;
        eprintln!("{}: CHILD SA rekeyed, LAN still reachable", c.label);
    }
    charon.terminate(&rw.name).with_context(logs)?;
    let log = charon.log();
    // What strongSwan actually sent, for the record (docs/builtin-ikev2-clients.md).
    for line in log.lines().filter(|l| l.contains("configured proposals")) {
        eprintln!("{}: {line}", c.label);
    }
    eprintln!(
        "{}: connected and pinged the LAN in {:.1} s",
        c.label,
        started.elapsed().as_secs_f64()
    );
    Ok(log)
}

#[test]
fn each_builtin_clients_default_proposals_connect() -> Result<()> {
    let started = Instant::now();
    let clients = [WINDOWS, WINDOWS_11, IOS, MACOS, ANDROID_APP, ANDROID_NATIVE];
    let s = Setup::new("bia", 110, clients.len())?;
    let gw = Gatehoused::start(
        &s.topo.gateway,
        &s.gw_dir,
        &s.dir.path().join("gatehoused.log"),
    )?;
    for (i, c) in clients.iter().enumerate() {
        let log = connects(&s, &gw, i, c)?;
        if c.name == ANDROID_NATIVE.name {
            // Its KE (MODP-4096) is refused with INVALID_KE_PAYLOAD naming x25519.
            ensure!(
                log.contains("peer didn't accept DH group MODP_4096, it requested CURVE_25519"),
                "Android's KE retry is missing:\n{}",
                strongswan_tail(&log)
            );
        }
    }
    // Windows' default needs MODP-1024, which the gateway accepts by default and warns about.
    for name in [WINDOWS.name, WINDOWS_11.name] {
        ensure!(
            gw.log().lines().any(|l| l.contains("weak MODP-1024")
                && l.contains(&format!("client={name}"))
                && l.contains("allow_modp1024")),
            "no MODP-1024 warning for {name}:\n{}",
            gw.log_tail(40)
        );
    }
    ensure!(
        !gw.log()
            .lines()
            .any(|l| l.contains("weak MODP-1024") && l.contains("client=iphone")),
        "a MODP-1024 warning for a client that did not use it"
    );
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn without_modp1024_windows_defaults_are_refused_and_exported_suites_connect() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("bib", 111, 3)?;
    s.gw_dir.set("ikev2.allow_modp1024", "false")?;
    let gw = Gatehoused::start(
        &s.topo.gateway,
        &s.gw_dir,
        &s.dir.path().join("gatehoused.log"),
    )?;

    let (charon, rw) = s.client(0, &WINDOWS)?;
    let logs = || logs(&gw, &charon);
    charon.load_all().with_context(logs)?;
    let refused = charon.initiate(&rw.child());
    ensure!(refused.is_err(), "Windows' MODP-1024 offer was accepted");
    ensure!(
        charon
            .log()
            .contains("received NO_PROPOSAL_CHOSEN notify error"),
        "strongSwan did not get NO_PROPOSAL_CHOSEN:\n{}",
        logs()
    );
    ensure!(
        gw.events(CONNECTED).is_empty(),
        "a client connected:\n{}",
        logs()
    );

    connects(&s, &gw, 1, &WINDOWS_SCRIPT)?;
    connects(&s, &gw, 2, &APPLE_PROFILE)?;
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
