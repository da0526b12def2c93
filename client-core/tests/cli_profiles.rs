//! `gatehouse import`, `profiles` and `remove` as a user runs them: the real binary, a state
//! folder in a temporary directory, profiles exported by the real PKI library.
//!
//! Linux only: the binary is run without a D-Bus session bus, so it must fall back to key
//! files - which also guarantees the test never writes to a developer's real keyring.
#![cfg(target_os = "linux")]
// Test helpers panic on purpose.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gatehouse_certs::{CaOptions, Format, Pki, Profile, Validity};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Env {
            home: root.join("home"),
            root,
            _dir: dir,
        }
    }

    fn gatehouse(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .env("GATEHOUSE_HOME", &self.home)
            .env_remove("GATEHOUSE_KEYSTORE")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("DISPLAY")
            .env("XDG_RUNTIME_DIR", &self.root)
            .output()
            .unwrap()
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.root.join(name);
        fs::write(&path, data).unwrap();
        path
    }
}

fn ok(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    (stdout, stderr)
}

fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "should have failed; stderr: {stderr}"
    );
    stderr
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn import_list_and_remove_profiles() {
    let env = Env::new();
    let mut pki = Pki::init(env.root.join("pki"), &CaOptions::default()).unwrap();
    pki.issue_client("alice", &Validity::default(), None)
        .unwrap();
    pki.issue_client("bob", &Validity::default(), None).unwrap();
    let alice = pki
        .export("alice", "vpn.example.com", Format::Gatehouse, None)
        .unwrap();
    let alice_key = Profile::from_toml(std::str::from_utf8(&alice).unwrap())
        .unwrap()
        .key;
    let alice_file = env.write("alice.profile", &alice);
    let mut bob = pki
        .export("bob", "vpn.example.com", Format::Ovpn, None)
        .unwrap();
    bob.extend_from_slice(b"comp-lzo\ntls-auth ta.key 1\nmssfix 1300\n");
    let bob_file = env.write("bob-laptop.ovpn", &bob);
    // The tls-auth key next to the .ovpn file, as `tls-auth ta.key 1` names it.
    let ta_key = gatehouse_engine::openvpn::wrap::StaticKey::from_bytes([7; 256]).to_pem();
    env.write("ta.key", ta_key.as_bytes());

    // Nothing yet.
    let (stdout, _) = ok(&env.gatehouse(&["profiles"]));
    assert!(stdout.contains("no profiles yet"), "{stdout}");

    // A Gatehouse profile: no keyring here, so the key goes to an owner-only file - and the
    // user is told.
    let (stdout, stderr) = ok(&env.gatehouse(&["import", path_str(&alice_file)]));
    let key_path = env.home.join("keys/alice.key");
    assert!(stdout.contains("imported profile alice"), "{stdout}");
    assert!(
        stdout.contains("no OS keyring reachable (")
            && stdout.contains(&format!(
                "stored the key in {}, readable only by you",
                key_path.display()
            )),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(fs::read_to_string(&key_path).unwrap(), alice_key);
    let stored = fs::read_to_string(env.home.join("profiles/alice.toml")).unwrap();
    assert!(!stored.contains("PRIVATE KEY"), "{stored}");

    // A stock .ovpn under a name of our choosing; what we don't do is named.
    let (stdout, stderr) = ok(&env.gatehouse(&["import", path_str(&bob_file), "--name", "bob"]));
    assert!(stdout.contains("imported profile bob"), "{stdout}");
    for name in ["comp-lzo", "mssfix"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning: ") && l.contains(name)),
            "no warning about {name}: {stderr}"
        );
    }
    assert_eq!(mode(&env.home.join("keys/bob.key")), 0o600);
    // The tls-auth key is a secret: kept with the private key, not in the profile file.
    let bob_secrets = fs::read_to_string(env.home.join("keys/bob.key")).unwrap();
    assert!(
        bob_secrets.contains("PRIVATE KEY")
            && bob_secrets.contains(ta_key[ta_key.find("-----BEGIN").unwrap()..].trim()),
        "{bob_secrets}"
    );
    let stored = fs::read_to_string(env.home.join("profiles/bob.toml")).unwrap();
    assert!(
        !stored.contains("Static key")
            && stored.contains("kind = \"tls-auth\"")
            && stored.contains("direction = 1"),
        "{stored}"
    );

    // Both listed, with gateway, protocols and where the key is.
    let (stdout, _) = ok(&env.gatehouse(&["profiles"]));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("NAME"), "{stdout}");
    assert!(
        lines[1].starts_with("alice ")
            && lines[1].contains("vpn.example.com")
            && lines[1].contains("openvpn-udp:1194,openvpn-tcp:443")
            && lines[1].contains(path_str(&key_path)),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("bob ") && lines[2].contains("openvpn-udp:1194"),
        "{stdout}"
    );

    // The same name again is refused with what to do.
    let stderr = failed(&env.gatehouse(&["import", path_str(&alice_file)]));
    assert!(
        stderr.contains("a profile named alice already exists")
            && stderr.contains("--name")
            && stderr.contains("gatehouse remove alice"),
        "{stderr}"
    );
    let stderr = failed(&env.gatehouse(&["import", path_str(&alice_file), "--name", "a/b"]));
    assert!(stderr.contains("invalid profile name"), "{stderr}");

    // Remove deletes the profile and its key.
    let (stdout, _) = ok(&env.gatehouse(&["remove", "alice"]));
    assert!(stdout.contains("removed profile alice"), "{stdout}");
    assert!(!key_path.exists());
    assert!(!env.home.join("profiles/alice.toml").exists());
    let (stdout, _) = ok(&env.gatehouse(&["profiles"]));
    assert!(!stdout.contains("alice"), "{stdout}");
    let stderr = failed(&env.gatehouse(&["remove", "alice"]));
    assert!(
        stderr.contains("no profile named alice") && stderr.contains("gatehouse profiles"),
        "{stderr}"
    );

    // ... and the name is free again.
    ok(&env.gatehouse(&["import", path_str(&alice_file)]));
}

#[test]
fn unusable_ovpn_files_are_refused_with_a_fix() {
    let env = Env::new();
    let tap = env.write(
        "tap.ovpn",
        b"client\ndev tap\nremote gw 1194\n<ca>\n</ca>\n",
    );
    let stderr = failed(&env.gatehouse(&["import", path_str(&tap)]));
    assert!(
        stderr.contains("tap.ovpn:2:") && stderr.contains("dev tun"),
        "{stderr}"
    );

    let files = env.write(
        "files.ovpn",
        b"client\ndev tun\nremote gw 1194\nca ca.crt\ncert me.crt\nkey me.key\n",
    );
    let stderr = failed(&env.gatehouse(&["import", path_str(&files)]));
    assert!(
        stderr.contains("<ca>") && stderr.contains("inline"),
        "{stderr}"
    );

    let fragment = env.write(
        "fragment.ovpn",
        b"client\ndev tun\nremote gw 1194\nfragment 1300\n",
    );
    let stderr = failed(&env.gatehouse(&["import", path_str(&fragment)]));
    assert!(
        stderr.contains("fragment.ovpn:4: `fragment 1300`"),
        "{stderr}"
    );

    // Nothing was stored.
    let (stdout, _) = ok(&env.gatehouse(&["profiles"]));
    assert!(stdout.contains("no profiles yet"), "{stdout}");
}

#[test]
fn connection_commands_explain_what_is_missing() {
    let env = Env::new();
    let stderr = failed(&env.gatehouse(&["connect", "alice", "--protocol", "openvpn-tcp"]));
    assert!(stderr.contains("no profile named alice"), "{stderr}");
    let stderr = failed(&env.gatehouse(&["connect", "alice", "--protocol", "pptp"]));
    assert!(stderr.contains("openvpn-udp"), "{stderr}");
    // No service behind the socket: the CLI says so and how to start it, instead of hanging.
    let socket = env.home.join("nobody-listens.sock");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["status"])
        .env("GATEHOUSE_HOME", &env.home)
        .env("GATEHOUSE_SOCKET", &socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client service is not running") && stderr.contains("gatehouse service"),
        "{stderr}"
    );
}
