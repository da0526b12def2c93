//! The real OS keyring on Linux: a private session D-Bus with GNOME Keyring's Secret Service
//! in it (nothing of the developer's own keyring is touched), and the real `gatehouse` binary
//! with `DBUS_SESSION_BUS_ADDRESS` pointing there and no `GATEHOUSE_KEYSTORE`:
//!
//! - `import` stores the private key in the Secret Service (`secret-tool search` finds it under
//!   service `gatehouse`), and the profile file holds no key;
//! - `connect` reads it back: it sends exactly that key to the client service (here a socket
//!   of the test's that records the request);
//! - `remove` deletes it from the Secret Service.
//!
//! Every other test forces key files (`GATEHOUSE_KEYSTORE=file`) or uses keyring-core's mock.
//! Needs `dbus-daemon` (package dbus-daemon), `gnome-keyring-daemon` (gnome-keyring) and
//! `secret-tool` (libsecret-tools); scripts/test.sh installs them.
#![cfg(target_os = "linux")]
// Test helpers panic on purpose.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gatehouse_certs::{CaOptions, Format, Pki, Profile, Validity};
use gatehouse_client::service::Reply;
use gatehouse_client::status::Status;

/// A child process killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A session bus of our own with GNOME Keyring's Secret Service on it, unlocked.
struct SecretService {
    // Dropped in this order: the keyring, then its bus.
    _keyring: Daemon,
    _bus: Daemon,
    address: String,
    /// XDG_RUNTIME_DIR and HOME of the daemons (the keyring files live under HOME).
    runtime: PathBuf,
    home: PathBuf,
}

fn require(programs: &[(&str, &str)]) {
    for (program, package) in programs {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{program} is missing: apt-get install {package} (scripts/test.sh installs it)"
        );
    }
}

impl SecretService {
    fn start(root: &Path) -> SecretService {
        require(&[
            ("dbus-daemon", "dbus-daemon"),
            ("gnome-keyring-daemon", "gnome-keyring"),
            ("secret-tool", "libsecret-tools"),
        ]);
        let runtime = root.join("run");
        let home = root.join("keyring-home");
        fs::create_dir_all(&runtime).unwrap();
        fs::create_dir_all(&home).unwrap();
        // A session bus without service directories: nothing on it is started by D-Bus
        // activation (the stock session config would start a second gnome-keyring-daemon
        // with the bus's environment - the real home's keyring - when a client asks for the
        // Secret Service before ours is up).
        let config = root.join("bus.conf");
        fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                root.join("bus").display()
            ),
        )
        .unwrap();
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("HOME", &home)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let bus = Daemon(bus);
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "dbus-daemon said {line:?}");
        // --unlock reads the login keyring's password from stdin (and creates that keyring).
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--foreground"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        {
            let mut stdin = keyring.stdin.take().unwrap();
            stdin.write_all(b"gatehouse-test-password").unwrap();
        }
        let service = SecretService {
            _keyring: Daemon(keyring),
            _bus: bus,
            address,
            runtime,
            home,
        };
        // Up once secret-tool gets an answer from it.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = service.secret_tool(&["search", "--all", "service", "nothing-here"]);
            // No match is exit 1 with empty output; no Secret Service is an error message.
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.trim().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Secret Service did not come up: {stderr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    /// The environment that points a program at this bus and nothing else.
    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("HOME", &self.home);
    }

    fn secret_tool(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("secret-tool");
        self.env(&mut cmd);
        cmd.args(args).output().unwrap()
    }

    /// What `secret-tool search --all service gatehouse` prints (items with their secrets).
    fn gatehouse_items(&self) -> String {
        let out = self.secret_tool(&["search", "--all", "--unlock", "service", "gatehouse"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn gatehouse(ss: &SecretService, home: &Path, socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    ss.env(&mut cmd);
    cmd.args(args)
        .env("GATEHOUSE_HOME", home)
        .env("GATEHOUSE_SOCKET", socket)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The key's base64 body, one line of which is enough to recognise it in other output.
fn key_body_line(key_pem: &str) -> &str {
    key_pem
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 20)
        .unwrap()
}

#[test]
fn the_private_key_lives_in_the_secret_service() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ss = SecretService::start(root);
    let home = root.join("home");
    let socket = root.join("client.sock");

    let mut pki = Pki::init(root.join("pki"), &CaOptions::default()).unwrap();
    pki.issue_client("alice", &Validity::default(), None)
        .unwrap();
    let exported = pki
        .export("alice", "vpn.example.com", Format::Gatehouse, None)
        .unwrap();
    let key = Profile::from_toml(std::str::from_utf8(&exported).unwrap())
        .unwrap()
        .key;
    let body = key_body_line(&key).to_owned();
    let file = root.join("alice.profile");
    fs::write(&file, &exported).unwrap();

    // Import: into the keyring, not into a file.
    assert!(
        !ss.gatehouse_items().contains(&body),
        "the key is in the keyring before the import"
    );
    let out = gatehouse(&ss, &home, &socket, &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stored the private key in the OS keyring"),
        "{}",
        text(&out)
    );
    let items = ss.gatehouse_items();
    assert!(
        items.contains(&body) && items.contains("alice"),
        "secret-tool does not find alice's key under service gatehouse:\n{items}"
    );
    let stored = fs::read_to_string(home.join("profiles/alice.toml")).unwrap();
    assert!(!stored.contains("PRIVATE KEY"), "{stored}");
    assert!(!stored.contains(&body), "{stored}");
    assert!(!home.join("keys/alice.key").exists());
    let out = gatehouse(&ss, &home, &socket, &["profiles"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OS keyring"),
        "{}",
        text(&out)
    );

    // Connect: the key comes back out of the keyring and goes to the client service - here
    // the test's own socket, which records the request and hangs up.
    let listener = UnixListener::bind(&socket).unwrap();
    let service = std::thread::spawn(move || {
        // `connect` subscribes to updates first (answered with a status, as the service
        // does), then sends the connect request on a second connection.
        let (mut updates, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&updates).read_line(&mut line).unwrap();
        assert!(line.contains("subscribe"), "{line}");
        let status = Reply::Status {
            status: Status::default(),
        };
        let mut reply = serde_json::to_string(&status).unwrap();
        reply.push('\n');
        updates.write_all(reply.as_bytes()).unwrap();
        let (control, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(control).read_line(&mut line).unwrap();
        line
    });
    let out = gatehouse(&ss, &home, &socket, &["connect", "alice"]);
    let request: serde_json::Value = serde_json::from_str(&service.join().unwrap()).unwrap();
    let sent = request
        .pointer("/request/key_pem")
        .and_then(|k| k.as_str())
        .unwrap_or_else(|| panic!("no key in the connect request: {request}\n{}", text(&out)));
    assert_eq!(
        sent.trim(),
        key.trim(),
        "connect sent another key than the one imported"
    );

    // Remove: gone from the keyring too.
    let out = gatehouse(&ss, &home, &socket, &["remove", "alice"]);
    assert!(out.status.success(), "{}", text(&out));
    let items = ss.gatehouse_items();
    assert!(
        !items.contains(&body),
        "the key is still in the keyring after `gatehouse remove`:\n{items}"
    );
    assert!(!home.join("profiles/alice.toml").exists());
}
