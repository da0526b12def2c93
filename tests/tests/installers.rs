//! The systemd units in `installers/systemd/`: they must start the binaries this workspace
//! builds with flags those binaries accept, agree with `installers/README.md` and with the
//! client's built-in defaults (socket and state directory), carry the hardening the README
//! promises, and - where `systemd-analyze` exists - pass `systemd-analyze verify` without a
//! single warning. Nothing here starts a unit or needs root; every check is printed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::bin;

fn installers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("installers"))
        .unwrap_or_else(|| PathBuf::from("installers"))
}

/// A unit file: `[Section]` -> key -> every value it is given (in order; a key may repeat).
#[derive(Debug)]
struct Unit {
    name: String,
    path: PathBuf,
    sections: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Unit {
    fn load(name: &str) -> Result<Unit> {
        let path = installers().join("systemd").join(name);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let sections = parse_unit(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Unit {
            name: name.to_string(),
            path,
            sections,
        })
    }

    /// All values of `[section] key`.
    fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.sections
            .get(section)
            .and_then(|s| s.get(key))
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The single value of `[Service] key`.
    fn service(&self, key: &str) -> Result<&str> {
        match self.values("Service", key).as_slice() {
            [v] => Ok(v),
            [] => bail!("{}: [Service] has no {key}=", self.name),
            many => bail!("{}: [Service] sets {key}= {} times", self.name, many.len()),
        }
    }

    /// Every word of every `[Service] key=` line (space-separated lists like capabilities).
    fn service_words(&self, key: &str) -> Vec<&str> {
        self.values("Service", key)
            .into_iter()
            .flat_map(str::split_whitespace)
            .collect()
    }

    /// Checks `[Service] key=` is exactly `want`, and says so.
    fn expect(&self, key: &str, want: &str) -> Result<()> {
        let got = self.service(key)?;
        ensure!(got == want, "{}: {key}={got}, expected {want}", self.name);
        println!("  ok {}: {key}={want}", self.name);
        Ok(())
    }

    /// Checks `[Service] key=` lists `word`, and says so.
    fn expect_word(&self, key: &str, word: &str) -> Result<()> {
        let words = self.service_words(key);
        ensure!(
            words.contains(&word),
            "{}: {key}= {words:?} lacks {word}",
            self.name
        );
        println!("  ok {}: {key} includes {word}", self.name);
        Ok(())
    }
}

/// Parses systemd's INI dialect: `[Section]`, `Key=Value`, `#`/`;` comments, `\` line
/// continuations.
fn parse_unit(text: &str) -> Result<BTreeMap<String, BTreeMap<String, Vec<String>>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let logical = std::mem::take(&mut pending);
        if logical.starts_with('[') && logical.ends_with(']') {
            let name = logical.trim_matches(['[', ']']).to_string();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some((key, value)) = logical.split_once('=') else {
            bail!("line {}: neither a section nor Key=Value: {raw:?}", n + 1);
        };
        let Some(section) = &current else {
            bail!("line {}: {key}= before any [Section]", n + 1);
        };
        sections
            .entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    Ok(sections)
}

/// The ExecStart of `unit`: it must be `/usr/bin/<program> <subcommand> [--flag value]...`
/// with `program` one of the workspace's binaries, the line must appear in the README word for
/// word, and `program subcommand --help` must list every flag. Returns the words.
fn check_exec_start(unit: &Unit, program: &str, readme: &str) -> Result<Vec<String>> {
    let exec = unit.service("ExecStart")?;
    let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    let want_path = format!("/usr/bin/{program}");
    ensure!(
        words.first() == Some(&want_path),
        "{}: ExecStart={exec} does not start {want_path}",
        unit.name
    );
    let line = format!("ExecStart={exec}");
    ensure!(
        readme.lines().any(|l| l.trim() == line),
        "installers/README.md does not document `{line}` (the unit {} has it)",
        unit.path.display()
    );
    println!(
        "  ok {}: `{line}` is documented in installers/README.md",
        unit.name
    );

    // The built binary of that name, and its help for the subcommand.
    let built = bin(program);
    let sub = words
        .get(1)
        .with_context(|| format!("{}: ExecStart names no subcommand", unit.name))?;
    let out = Command::new(&built)
        .args([sub.as_str(), "--help"])
        .output()
        .with_context(|| format!("running {} {sub} --help", built.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "`{program} {sub} --help` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "  ok {}: {program} is a workspace binary ({}) with subcommand `{sub}`",
        unit.name,
        built.display()
    );
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        ensure!(
            help.contains(flag.as_str()),
            "{}: `{program} {sub}` does not accept {flag}:\n{help}",
            unit.name
        );
        println!("  ok {}: `{program} {sub}` accepts {flag}", unit.name);
    }
    Ok(words)
}

/// The value after `flag` in `words`.
fn flag_value<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    let i = words.iter().position(|w| w == flag)?;
    words.get(i + 1).map(String::as_str)
}

#[test]
fn gateway_unit_matches_binary_and_readme() -> Result<()> {
    let readme = fs::read_to_string(installers().join("README.md"))?;
    let unit = Unit::load("gatehoused.service")?;
    println!("checking {}", unit.path.display());
    let words = check_exec_start(&unit, "gatehoused", &readme)?;
    let data_dir = flag_value(&words, "--data-dir").context("ExecStart has no --data-dir")?;
    ensure!(
        data_dir == "/var/lib/gatehoused",
        "data dir {data_dir}, expected /var/lib/gatehoused"
    );

    // gatehoused speaks sd_notify (READY, STOPPING, WATCHDOG: server/src/notify.rs).
    unit.expect("Type", "notify")?;
    unit.expect("NotifyAccess", "main")?;
    ensure!(
        !unit.service_words("WatchdogSec").is_empty(),
        "gatehoused.service has no WatchdogSec= (gatehoused pings the watchdog)"
    );
    unit.expect_word("AmbientCapabilities", "CAP_NET_ADMIN")?;
    unit.expect_word("AmbientCapabilities", "CAP_NET_BIND_SERVICE")?;
    // No capability beyond the two.
    let bounding = unit.service_words("CapabilityBoundingSet");
    ensure!(
        !bounding.is_empty()
            && bounding
                .iter()
                .all(|c| ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"].contains(c)),
        "CapabilityBoundingSet= {bounding:?} should be exactly the two capabilities"
    );
    println!("  ok gatehoused.service: CapabilityBoundingSet={bounding:?}");
    unit.expect("ProtectSystem", "strict")?;
    unit.expect_word("ReadWritePaths", data_dir)?;
    unit.expect("StateDirectory", "gatehoused")?;
    unit.expect("PrivateTmp", "yes")?;
    unit.expect("NoNewPrivileges", "yes")?;
    unit.expect("ProtectHome", "yes")?;
    unit.expect_word("DeviceAllow", "/dev/net/tun")?;

    // The user must be one the sysusers file creates.
    let user = unit.service("User")?;
    let sysusers = fs::read_to_string(installers().join("systemd/gatehouse.sysusers.conf"))?;
    ensure!(
        sysusers.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"u") && f.get(1) == Some(&user)
        }),
        "User={user} is not created by gatehouse.sysusers.conf"
    );
    println!("  ok gatehoused.service: User={user} comes from gatehouse.sysusers.conf");
    Ok(())
}

#[test]
fn client_unit_matches_binary_readme_and_defaults() -> Result<()> {
    let readme = fs::read_to_string(installers().join("README.md"))?;
    let unit = Unit::load("gatehouse-client.service")?;
    println!("checking {}", unit.path.display());
    let words = check_exec_start(&unit, "gatehouse", &readme)?;
    // `gatehouse service` speaks sd_notify too (READY once listening, WATCHDOG, STOPPING).
    unit.expect("Type", "notify")?;
    unit.expect("NotifyAccess", "main")?;
    ensure!(
        !unit.service_words("WatchdogSec").is_empty(),
        "gatehouse-client.service has no WatchdogSec= (the service pings the watchdog)"
    );
    ensure!(
        words.len() == 2 && words[1] == "service",
        "ExecStart should be `/usr/bin/gatehouse service`: {words:?}"
    );
    unit.expect("RuntimeDirectory", "gatehouse")?;
    unit.expect("StateDirectory", "gatehouse")?;
    unit.expect_word("AmbientCapabilities", "CAP_NET_ADMIN")?;
    unit.expect_word("CapabilityBoundingSet", "CAP_NET_ADMIN")?;
    unit.expect("NoNewPrivileges", "yes")?;
    unit.expect("ProtectSystem", "strict")?;
    unit.expect("PrivateTmp", "yes")?;
    unit.expect_word("DeviceAllow", "/dev/net/tun")?;
    // Front ends must be able to reach the socket inside the runtime directory.
    let mode = unit.service("RuntimeDirectoryMode")?;
    ensure!(
        mode == "0755",
        "RuntimeDirectoryMode={mode}: users must reach the socket"
    );
    println!("  ok gatehouse-client.service: RuntimeDirectoryMode=0755");

    // The directories systemd makes are the ones the client uses when no GATEHOUSE_* says
    // otherwise: the socket in /run/<RuntimeDirectory>/, the journal in
    // /var/lib/<StateDirectory>/.
    let socket = "/run/gatehouse/client.sock";
    if Path::new(socket).exists() {
        println!("  skip: {socket} exists on this host; not probing the built-in default");
    } else {
        let mut cmd = Command::new(bin("gatehouse"));
        cmd.arg("status");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GATEHOUSE_") {
                cmd.env_remove(&key);
            }
        }
        let out = cmd.output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains(socket),
            "`gatehouse status` without GATEHOUSE_SOCKET should try {socket}: {stderr}"
        );
        println!("  ok the client's default socket is {socket} (RuntimeDirectory=gatehouse)");
    }
    let service_src = include_str!("../../client-core/src/service/mod.rs");
    ensure!(
        service_src.contains("\"/var/lib/gatehouse\"") && service_src.contains(socket),
        "client-core/src/service/mod.rs no longer defaults to /var/lib/gatehouse and {socket}"
    );
    println!("  ok the client service's default state directory is /var/lib/gatehouse");

    let sysusers = fs::read_to_string(installers().join("systemd/gatehouse.sysusers.conf"))?;
    ensure!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["g", "gatehouse"])),
        "gatehouse.sysusers.conf does not create the group `gatehouse` the service admits"
    );
    println!("  ok group `gatehouse` comes from gatehouse.sysusers.conf");
    Ok(())
}

#[test]
fn systemd_analyze_verify_when_available() -> Result<()> {
    let units = ["gatehoused.service", "gatehouse-client.service"];
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!(
            "systemd-analyze is not installed: `systemd-analyze verify` NOT run on {units:?}; \
             the other tests in this file still parse the units and check their ExecStart \
             binaries, flags and hardening against installers/README.md"
        );
        return Ok(());
    }
    // `verify` checks that ExecStart binaries exist; /usr/bin/gatehouse* do not on a build
    // machine, so copies of the units point at the binaries just built instead.
    let tmp = tempfile::tempdir()?;
    let mut files = Vec::new();
    for name in units {
        let text = fs::read_to_string(installers().join("systemd").join(name))?;
        let mut rewritten = String::new();
        for line in text.lines() {
            if let Some(cmd) = line.strip_prefix("ExecStart=") {
                let (prog, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
                let program = prog
                    .strip_prefix("/usr/bin/")
                    .with_context(|| format!("{name}: ExecStart {prog} is not in /usr/bin"))?;
                rewritten.push_str(&format!("ExecStart={} {rest}\n", bin(program).display()));
            } else {
                rewritten.push_str(line);
                rewritten.push('\n');
            }
        }
        let path = tmp.path().join(name);
        fs::write(&path, rewritten)?;
        files.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .context("running systemd-analyze verify")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "`systemd-analyze verify {units:?}` ({}) complained:\n{said}",
        out.status
    );
    println!(
        "ok `systemd-analyze verify` passed without a warning on {units:?} \
         (ExecStart pointed at the built binaries)"
    );
    Ok(())
}

#[test]
fn unit_parser_handles_comments_continuations_and_repeats() -> Result<()> {
    let s = parse_unit(
        "# c\n[Unit]\nDescription=x y\n\n[Service]\n; c\nExecStart=/usr/bin/a \\\n  --b c\n\
         ReadWritePaths=/x\nReadWritePaths=/y\n",
    )?;
    assert_eq!(s["Unit"]["Description"], ["x y"]);
    assert_eq!(s["Service"]["ExecStart"], ["/usr/bin/a  --b c"]);
    assert_eq!(s["Service"]["ReadWritePaths"], ["/x", "/y"]);
    assert!(parse_unit("Key=1\n").is_err());
    Ok(())
}

/// The Linux desktop entry launches the desktop app this workspace builds, under the app id
/// its window announces (so desktops group the window with the entry), and
/// `desktop-file-validate` has nothing to say about it.
#[test]
fn desktop_entry_launches_the_app_and_validates() -> Result<()> {
    let path = installers().join("linux").join("gatehouse-gui.desktop");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let entry = parse_unit(&text).with_context(|| format!("parsing {}", path.display()))?;
    let e = entry
        .get("Desktop Entry")
        .context("no [Desktop Entry] group")?;
    let one = |k: &str| -> Result<&str> {
        e.get(k)
            .and_then(|v| v.first())
            .map(String::as_str)
            .with_context(|| format!("{} has no {k}=", path.display()))
    };
    ensure!(one("Type")? == "Application");
    ensure!(one("Exec")? == "gatehouse-gui", "Exec={}", one("Exec")?);
    ensure!(one("Terminal")? == "false");
    ensure!(
        bin("gatehouse-gui").exists(),
        "the workspace builds no gatehouse-gui at {}",
        bin("gatehouse-gui").display()
    );
    let main_rs = installers()
        .parent()
        .map(|p| p.join("client-gui/src/main.rs"))
        .context("workspace root")?;
    let main = fs::read_to_string(&main_rs)?;
    let wm_class = one("StartupWMClass")?;
    ensure!(
        main.contains(&format!("with_app_id(\"{wm_class}\")")),
        "StartupWMClass={wm_class} is not the app id set in {}",
        main_rs.display()
    );
    let out = Command::new("desktop-file-validate")
        .arg(&path)
        .output()
        .context("running desktop-file-validate (Debian package desktop-file-utils)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "desktop-file-validate complained:\n{said}"
    );
    println!("ok {} validates and launches gatehouse-gui", path.display());
    Ok(())
}
