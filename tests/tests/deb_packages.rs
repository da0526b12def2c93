//! The Debian packages (installers/README.md, "Debian packages"): cargo-deb builds
//! `gatehouse-gateway` and `gatehouse-client` from the binaries the test suite already built
//! (the same profile as this test, stripped; no release build), their files, modes, control
//! fields and maintainer scripts are what installers/ holds, `dpkg -i` installs them on this
//! machine (the maintainer scripts run without a running systemd and create the users), the
//! installed binaries run from /usr/bin, `gatehoused init` + `check` work with them, and
//! `dpkg --purge` removes them again - always, even when a check fails (a guard).
//!
//! Needs root (dpkg) and cargo-deb (`cargo install cargo-deb`; scripts/test.sh installs the
//! pinned version). Refuses to run where either package or a /usr/bin/gatehouse* binary is
//! already installed: it would replace them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use gatehouse_tests::{bin, require_commands, require_root};

const GATEWAY: &str = "gatehouse-gateway";
const CLIENT: &str = "gatehouse-client";
/// The programs the packages install; none may be on this machine before the test.
const PROGRAMS: [&str; 4] = [
    "gatehoused",
    "gatehouse-certs",
    "gatehouse",
    "gatehouse-gui",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Runs `cmd`, failing with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    ensure!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cargo profile whose binaries `bin()` finds: `target/debug` is `dev`.
fn built_profile() -> Result<String> {
    let built = bin("gatehoused");
    let dir = built
        .parent()
        .and_then(Path::file_name)
        .and_then(|d| d.to_str())
        .context("binaries are not in target/<profile>/")?;
    Ok(if dir == "debug" { "dev" } else { dir }.to_string())
}

/// `cargo deb -p CRATE` from the binaries already built, into `out`.
fn build_deb(krate: &str, deb_name: &str, out: &Path) -> Result<PathBuf> {
    let path = out.join(format!("{deb_name}.deb"));
    let started = Instant::now();
    // cargo-deb warns that it is meant for release builds; the test packages the debug
    // binaries on purpose (CI builds nothing twice), stripped so the .deb stays small.
    run(Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args([
            "deb",
            "--quiet",
            "--no-build",
            "--strip",
            "--fast",
            "-p",
            krate,
        ])
        .args(["--profile", &built_profile()?])
        .arg("--output")
        .arg(&path))
    .with_context(|| {
        format!(
            "cargo deb -p {krate} (is cargo-deb installed? scripts/test.sh installs it: \
             cargo install cargo-deb --locked)"
        )
    })?;
    let size = fs::metadata(&path)
        .with_context(|| format!("cargo deb wrote no {}", path.display()))?
        .len();
    println!(
        "built {} ({:.1} MB) in {:.1} s",
        path.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// `dpkg-deb -c`: path (without the leading `.`) -> permission string, files only.
fn contents(deb: &Path) -> Result<BTreeMap<String, String>> {
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(mode), Some(path)) = (words.first(), words.last()) else {
            continue;
        };
        if mode.starts_with('-') {
            files.insert(path.trim_start_matches('.').to_string(), mode.to_string());
        }
    }
    Ok(files)
}

/// One control field of a .deb (`dpkg-deb -f`), empty if absent.
fn field(deb: &Path, name: &str) -> Result<String> {
    Ok(run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))?
        .trim()
        .to_string())
}

/// What a package must hold: installed path -> (source in the repository or None for a
/// built binary, mode).
fn expected_files(package: &str) -> Vec<(&'static str, Option<&'static str>, &'static str)> {
    const BIN: &str = "-rwxr-xr-x";
    const DATA: &str = "-rw-r--r--";
    if package == GATEWAY {
        vec![
            ("/usr/bin/gatehoused", None, BIN),
            ("/usr/bin/gatehouse-certs", None, BIN),
            (
                "/usr/lib/systemd/system/gatehoused.service",
                Some("installers/systemd/gatehoused.service"),
                DATA,
            ),
            (
                "/usr/lib/sysusers.d/gatehouse.conf",
                Some("installers/systemd/gatehouse.sysusers.conf"),
                DATA,
            ),
        ]
    } else {
        vec![
            ("/usr/bin/gatehouse", None, BIN),
            ("/usr/bin/gatehouse-gui", None, BIN),
            (
                "/usr/lib/systemd/system/gatehouse-client.service",
                Some("installers/systemd/gatehouse-client.service"),
                DATA,
            ),
            (
                "/usr/lib/sysusers.d/gatehouse-client.conf",
                Some("installers/systemd/gatehouse-client.sysusers.conf"),
                DATA,
            ),
            (
                "/usr/share/applications/gatehouse-gui.desktop",
                Some("installers/linux/gatehouse-gui.desktop"),
                DATA,
            ),
        ]
    }
}

/// Checks a built .deb: its files and modes, control fields, dependencies and maintainer
/// scripts.
fn check_deb(deb: &Path, package: &str, scripts_dir: &str) -> Result<()> {
    let files = contents(deb)?;
    for (path, _, mode) in expected_files(package) {
        let got = files
            .get(path)
            .with_context(|| format!("{package}: no {path} in the .deb: {files:#?}"))?;
        ensure!(
            got == mode,
            "{package}: {path} has mode {got}, expected {mode}"
        );
        println!("  ok {package} ships {path} ({mode})");
    }
    // Everything else is documentation.
    for path in files.keys() {
        ensure!(
            expected_files(package).iter().any(|(p, _, _)| p == path)
                || path.starts_with("/usr/share/doc/"),
            "{package}: unexpected file {path}"
        );
    }

    ensure!(field(deb, "Package")? == package);
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    ensure!(
        field(deb, "Version")? == version,
        "{package}: Version {} is not the workspace's {version}",
        field(deb, "Version")?
    );
    let arch = run(Command::new("dpkg").arg("--print-architecture"))?;
    ensure!(field(deb, "Architecture")? == arch.trim());
    println!("  ok {package} {version} for {}", arch.trim());

    // dpkg-shlibdeps filled in $auto (libc6 with a version); the rest is from Cargo.toml.
    let depends = field(deb, "Depends")?;
    let mut wanted = vec!["libc6 (>=", "iproute2"];
    if package == CLIENT {
        wanted.extend(["libgl1 | libegl1", "libx11-xcb1", "libxkbcommon-x11-0"]);
        let recommends = field(deb, "Recommends")?;
        ensure!(
            recommends.contains("libwayland-client0"),
            "{package}: Recommends {recommends:?} lacks native Wayland"
        );
    }
    for w in wanted {
        ensure!(
            depends.contains(w),
            "{package}: Depends {depends:?} lacks {w}"
        );
    }
    ensure!(
        !depends.contains('$'),
        "{package}: Depends {depends:?} kept a cargo-deb placeholder"
    );
    println!("  ok {package} Depends: {depends}");

    // The maintainer scripts are installers/debian/<dir>/* byte for byte.
    let control = tempfile::tempdir()?;
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(control.path()))?;
    for script in ["postinst", "prerm", "postrm"] {
        let source = workspace().join(scripts_dir).join(script);
        let want = fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        let got = fs::read(control.path().join(script))
            .with_context(|| format!("{package}: no {script} in the .deb"))?;
        ensure!(
            got == want,
            "{package}: {script} differs from {}",
            source.display()
        );
        println!("  ok {package} {script} is {}", source.display());
    }
    Ok(())
}

/// `dpkg-query` status of a package ("" when dpkg never heard of it).
fn status(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Installed packages, purged when dropped (also when a check panics or fails).
struct Installed {
    packages: Vec<&'static str>,
    purged: bool,
}

impl Installed {
    /// `dpkg -i` of every .deb; the guard exists before dpkg runs, so even a half-configured
    /// install is purged.
    fn install(debs: &[(&'static str, PathBuf)]) -> Result<Installed> {
        let guard = Installed {
            packages: debs.iter().map(|(p, _)| *p).collect(),
            purged: false,
        };
        let started = Instant::now();
        let out = run(Command::new("dpkg")
            .arg("-i")
            .args(debs.iter().map(|(_, d)| d))
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        print!("{out}");
        println!("dpkg -i took {:.1} s", started.elapsed().as_secs_f64());
        Ok(guard)
    }

    fn purge(&mut self) -> Result<()> {
        self.purged = true;
        let out = run(Command::new("dpkg").arg("--purge").args(&self.packages))?;
        print!("{out}");
        Ok(())
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            eprintln!("purging {:?} after a failure", self.packages);
            if let Err(e) = self.purge() {
                eprintln!("{e:#}");
            }
        }
    }
}

/// Runs an installed program and checks it succeeds; returns its stdout.
fn installed(program: &str, args: &[&str]) -> Result<String> {
    let path = format!("/usr/bin/{program}");
    let out = run(Command::new(&path).args(args))?;
    println!("  ok {path} {}: {}", args.join(" "), out.trim());
    Ok(out)
}

#[test]
fn debs_build_install_run_and_purge() -> Result<()> {
    require_root();
    require_commands(&[
        "dpkg",
        "dpkg-deb",
        "dpkg-query",
        "dpkg-shlibdeps",
        "strip",
        "getent",
    ]);
    for package in [GATEWAY, CLIENT] {
        let s = status(package);
        if s.contains("installed") && !s.contains("not-installed") {
            bail!(
                "{package} is installed on this machine ({s}); the test would replace it. \
                 `dpkg --purge {package}` first if it is a leftover of this test"
            );
        }
    }
    for program in PROGRAMS {
        let path = Path::new("/usr/bin").join(program);
        ensure!(
            !path.exists(),
            "{} exists on this machine; the test would replace it",
            path.display()
        );
    }

    let tmp = tempfile::tempdir()?;
    // Both at once: most of the time is strip and xz, one core each.
    let started = Instant::now();
    let (gateway, client) = std::thread::scope(|s| {
        let gateway = s.spawn(|| build_deb("gatehouse-server", GATEWAY, tmp.path()));
        let client = s.spawn(|| build_deb("gatehouse-client", CLIENT, tmp.path()));
        (gateway.join(), client.join())
    });
    let gateway = gateway.map_err(|_| anyhow!("building {GATEWAY} panicked"))??;
    let client = client.map_err(|_| anyhow!("building {CLIENT} panicked"))??;
    println!(
        "both packages built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check_deb(&gateway, GATEWAY, "installers/debian/gateway")?;
    check_deb(&client, CLIENT, "installers/debian/client")?;

    let mut guard = Installed::install(&[(GATEWAY, gateway), (CLIENT, client)])?;
    for package in [GATEWAY, CLIENT] {
        let s = status(package);
        ensure!(s == "install ok installed", "{package}: dpkg status {s:?}");
        for (path, source, _) in expected_files(package) {
            let Some(source) = source else {
                ensure!(Path::new(path).exists(), "{path} is not installed");
                continue;
            };
            ensure!(
                fs::read(path).with_context(|| format!("reading installed {path}"))?
                    == fs::read(workspace().join(source))?,
                "installed {path} differs from {source}"
            );
        }
        println!("  ok {package} is installed with every file");
    }
    // The postinst scripts ran systemd-sysusers (no systemd runs here).
    let user = run(Command::new("getent").args(["passwd", "gatehoused"]))?;
    ensure!(
        user.contains(":/var/lib/gatehoused:"),
        "user gatehoused: {user}"
    );
    run(Command::new("getent").args(["group", "gatehouse"]))?;
    println!("  ok postinst created user gatehoused and group gatehouse");

    let version = env!("CARGO_PKG_VERSION");
    for program in PROGRAMS {
        let out = installed(program, &["--version"])?;
        ensure!(
            out.contains(version),
            "{program} --version does not say {version}"
        );
    }
    let data = tmp.path().join("gateway");
    let data_dir = data.to_str().context("temp dir is not UTF-8")?;
    installed(
        "gatehoused",
        &[
            "init",
            "--data-dir",
            data_dir,
            "--public-addr",
            "vpn.example.com",
        ],
    )?;
    let config = data.join("gateway.toml");
    let config = config.to_str().context("temp dir is not UTF-8")?;
    let out = installed("gatehoused", &["check", "--config", config])?;
    ensure!(out.contains("OK"), "check did not say OK: {out}");

    guard.purge()?;
    for package in [GATEWAY, CLIENT] {
        let s = status(package);
        ensure!(
            s.is_empty() || s.contains("not-installed"),
            "{package} after purge: {s:?}"
        );
        for (path, _, _) in expected_files(package) {
            ensure!(!Path::new(path).exists(), "{path} is left after the purge");
        }
    }
    println!("ok both packages purged; nothing they installed is left");
    Ok(())
}
