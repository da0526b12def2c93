//! A private desktop session for end-to-end tests of the desktop app: an X server (Xvfb), a
//! session D-Bus, the AT-SPI accessibility bus with accessibility switched on, a way to find
//! and press the app's buttons the way a screen reader does, and screenshots.
//!
//! The recipe, all of it inside one temporary folder so nothing touches the host's session:
//!
//! 1. `Xvfb -displayfd 3 -screen 0 1280x900x24 -nolisten tcp` (Xvfb picks a free display and
//!    writes its number to fd 3).
//! 2. `dbus-daemon --session --nofork --address=unix:path=DIR/session-bus`: the session bus;
//!    every program of the session gets `DBUS_SESSION_BUS_ADDRESS` pointing at it.
//! 3. `/usr/libexec/at-spi-bus-launcher --launch-immediately` on that bus (with
//!    `XDG_RUNTIME_DIR=DIR/xdg`, where it puts the accessibility bus's socket): it owns
//!    `org.a11y.Bus` and starts the accessibility bus and `at-spi2-registryd`.
//! 4. Accessibility on: `org.a11y.Status.IsEnabled = true` on `/org/a11y/bus` (what a desktop
//!    sets when a screen reader runs). AccessKit - eframe's `accesskit` feature - watches that
//!    property, and once it is true it publishes the egui widget tree on the accessibility bus.
//! 5. The app runs with `DISPLAY` and `DBUS_SESSION_BUS_ADDRESS` of this session
//!    ([`Desktop::command`]).
//! 6. A Python script using pyatspi (Debian `python3-pyatspi`, run with Debian's
//!    `/usr/bin/python3`) walks the tree for a push button by name and calls its AT-SPI action
//!    0 (`click`), which AccessKit hands to egui as a click ([`Desktop::press`]).
//! 7. `import -window TITLE out.png` (ImageMagick) grabs the app's window ([`Desktop::screenshot`]).
//!
//! Dropping the [`Desktop`] stops all of it, and any process still carrying the session's
//! folder in its command line or environment (the accessibility bus and registry that the
//! launcher started).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::proc::{Proc, run_with_timeout, signal};

/// What the desktop tests need, with the Debian package that has it.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("Xvfb", "xvfb"),
    ("dbus-daemon", "dbus-daemon"),
    ("gdbus", "libglib2.0-bin"),
    ("/usr/libexec/at-spi-bus-launcher", "at-spi2-core"),
    ("/usr/bin/python3", "python3"),
    ("import", "imagemagick"),
    ("identify", "imagemagick"),
];

/// The Python that has Debian's pyatspi (a Python on PATH, e.g. pyenv's, may not).
const PYTHON: &str = "/usr/bin/python3";
const STARTUP: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

/// The AT-SPI client: `atspi.py MODE ROLE NAME TIMEOUT`. MODE `wait` waits until a node with
/// that role and name is showing and enabled; `press` then invokes its action 0 (`click`).
/// Prints `found` or `pressed` and exits 0; on timeout prints every application's tree and
/// exits 2.
const ATSPI_PY: &str = r#"
import sys, time
import pyatspi

mode, role, name, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

def nodes(node, depth=0):
    yield depth, node
    try:
        count = node.childCount
    except Exception:
        return
    for i in range(count):
        try:
            child = node.getChildAtIndex(i)
        except Exception:
            continue
        if child is not None:
            yield from nodes(child, depth + 1)

def states(node):
    try:
        return [pyatspi.stateToString(s) for s in node.getState().getStates()]
    except Exception:
        return []

def apps():
    desktop = pyatspi.Registry.getDesktop(0)
    for i in range(desktop.childCount):
        app = desktop.getChildAtIndex(i)
        if app is not None:
            try:
                app.clearCache()
            except Exception:
                pass
            yield app

def find():
    for app in apps():
        for _, node in nodes(app):
            try:
                if node.getRoleName() == role and node.name == name:
                    s = states(node)
                    if "showing" in s and "enabled" in s and "sensitive" in s:
                        return node
            except Exception:
                continue
    return None

deadline = time.monotonic() + timeout
while True:
    node = find()
    if node is not None:
        if mode == "press":
            action = node.queryAction()
            names = [action.getName(i) for i in range(action.nActions)]
            if not names:
                print("the %s %r has no action" % (role, name))
                sys.exit(3)
            action.doAction(0)
            print("pressed (%s)" % names[0])
        else:
            print("found")
        sys.exit(0)
    if time.monotonic() > deadline:
        print("no enabled %s %r within %ss; the accessibility tree:" % (role, name, timeout))
        for app in apps():
            for depth, node in nodes(app):
                try:
                    print("  " * depth + "%s %r %s" % (node.getRoleName(), node.name, states(node)))
                except Exception as e:
                    print("  " * depth + "? (%s)" % e)
        sys.exit(2)
    time.sleep(0.2)
"#;

/// Xvfb, a session bus and the accessibility bus, in folder `dir`; stopped on Drop.
#[derive(Debug)]
pub struct Desktop {
    dir: PathBuf,
    display: String,
    bus: String,
    // Stopped in this order: the launcher, the session bus, the X server.
    atspi: Option<Proc>,
    dbus: Option<Proc>,
    xvfb: Option<Proc>,
}

impl Desktop {
    /// Starts the session in `dir` (created; logs `xvfb.log`, `session-bus.log`,
    /// `at-spi.log` there) and switches accessibility on. Fails, naming the package, when a
    /// program is missing.
    pub fn start(dir: &Path) -> Result<Desktop> {
        require_programs()?;
        fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        for sub in ["xdg", "home", "cache", "config"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            // at-spi-bus-launcher and D-Bus insist on a private runtime folder.
            fs::set_permissions(dir.join("xdg"), fs::Permissions::from_mode(0o700))?;
        }
        let mut desktop = Desktop {
            dir: dir.clone(),
            display: String::new(),
            bus: format!("unix:path={}", dir.join("session-bus").display()),
            atspi: None,
            dbus: None,
            xvfb: None,
        };

        // 1. The X server; it tells which display it took on fd 3.
        let display_file = dir.join("display");
        let mut xvfb = Command::new("sh");
        xvfb.args([
            "-c",
            r#"exec Xvfb -displayfd 3 -screen 0 1280x900x24 -nolisten tcp -noreset 3>"$0""#,
        ])
        .arg(&display_file);
        let xvfb = Proc::spawn(xvfb, &dir.join("xvfb.log"))?;
        let deadline = Instant::now() + STARTUP;
        desktop.display = loop {
            let text = fs::read_to_string(&display_file).unwrap_or_default();
            if let Ok(n) = text.trim().parse::<u32>() {
                break format!(":{n}");
            }
            ensure!(
                xvfb.is_running() && Instant::now() < deadline,
                "Xvfb did not report a display within {STARTUP:?}; log:\n{}",
                xvfb.log_tail(20)
            );
            thread::sleep(POLL);
        };
        desktop.xvfb = Some(xvfb);

        // 2. The session bus.
        let mut dbus = Command::new("dbus-daemon");
        dbus.args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address={}", desktop.bus));
        desktop.env(&mut dbus);
        let dbus = desktop
            .dbus
            .insert(Proc::spawn(dbus, &dir.join("session-bus.log"))?);
        dbus.wait_for_log("unix:path=", STARTUP)?;

        // 3. The accessibility bus.
        let mut atspi = desktop.command("/usr/libexec/at-spi-bus-launcher");
        atspi.arg("--launch-immediately");
        desktop.atspi = Some(Proc::spawn(atspi, &dir.join("at-spi.log"))?);
        let deadline = Instant::now() + STARTUP;
        loop {
            let out = desktop.gdbus(&["--method", "org.a11y.Bus.GetAddress"])?;
            if out.status.success() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the accessibility bus did not come up within {STARTUP:?}: {}\nat-spi.log:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                desktop
                    .atspi
                    .as_ref()
                    .map(|p| p.log_tail(20))
                    .unwrap_or_default()
            );
            thread::sleep(POLL);
        }

        // 4. Accessibility on, as a screen reader would have it.
        let out = desktop.gdbus(&[
            "--method",
            "org.freedesktop.DBus.Properties.Set",
            "org.a11y.Status",
            "IsEnabled",
            "<true>",
        ])?;
        ensure!(
            out.status.success(),
            "could not set org.a11y.Status.IsEnabled: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        fs::write(dir.join("atspi.py"), ATSPI_PY)?;
        Ok(desktop)
    }

    /// The X display, e.g. `:1`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// `DBUS_SESSION_BUS_ADDRESS` of the session.
    pub fn session_bus(&self) -> &str {
        &self.bus
    }

    /// A command that runs `program` in this session: `DISPLAY`, `DBUS_SESSION_BUS_ADDRESS`,
    /// `XDG_RUNTIME_DIR`, and `HOME` / `XDG_*_HOME` inside the session's folder (so caches
    /// and settings stay there); no Wayland, so toolkits take the X server.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.env(&mut cmd);
        cmd
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("XDG_RUNTIME_DIR", self.dir.join("xdg"))
            .env("HOME", self.dir.join("home"))
            .env("XDG_CACHE_HOME", self.dir.join("cache"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("AT_SPI_BUS_ADDRESS");
    }

    /// `gdbus call --session --dest org.a11y.Bus --object-path /org/a11y/bus ARGS...`.
    fn gdbus(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = self.command("gdbus");
        cmd.args([
            "call",
            "--session",
            "--dest",
            "org.a11y.Bus",
            "--object-path",
            "/org/a11y/bus",
        ])
        .args(args);
        run_with_timeout(cmd, Duration::from_secs(10))
    }

    fn atspi(&self, mode: &str, role: &str, name: &str, timeout: Duration) -> Result<()> {
        let mut cmd = self.command(PYTHON);
        cmd.arg(self.dir.join("atspi.py"))
            .args([mode, role, name])
            .arg(format!("{}", timeout.as_secs_f64()));
        let out = run_with_timeout(cmd, timeout + Duration::from_secs(20))
            .with_context(|| format!("AT-SPI {mode} {role} {name:?}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "AT-SPI {mode} of the {role} {name:?} failed ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!("AT-SPI {mode} {role} {name:?}: {}", stdout.trim());
        Ok(())
    }

    /// Waits up to `timeout` for an enabled, showing push button named `name` and presses it
    /// through its AT-SPI action, as a screen reader user would.
    pub fn press(&self, name: &str, timeout: Duration) -> Result<()> {
        self.atspi("press", "push button", name, timeout)
    }

    /// Waits up to `timeout` until a showing, enabled node with AT-SPI role `role` (`push
    /// button`, `label`, ...) and name `name` is in some application's tree.
    pub fn wait_for(&self, role: &str, name: &str, timeout: Duration) -> Result<()> {
        self.atspi("wait", role, name, timeout)
    }

    /// Saves the window titled `title` as PNG `out` (`import -window TITLE`), creating the
    /// folder; fails on an empty or single-colour picture.
    pub fn screenshot(&self, title: &str, out: &Path) -> Result<()> {
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut cmd = self.command("import");
        cmd.args(["-window", title]).arg(out);
        let res = run_with_timeout(cmd, Duration::from_secs(30))?;
        ensure!(
            res.status.success() && out.exists(),
            "`import -window {title}` failed ({}): {}",
            res.status,
            String::from_utf8_lossy(&res.stderr).trim()
        );
        // A black or blank grab has no spread of colours.
        let mut cmd = self.command("identify");
        cmd.args(["-format", "%w %h %[fx:standard_deviation]"])
            .arg(out);
        let res = run_with_timeout(cmd, Duration::from_secs(30))?;
        let text = String::from_utf8_lossy(&res.stdout).into_owned();
        let fields: Vec<f64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        ensure!(
            res.status.success() && fields.len() == 3,
            "`identify {}` printed {text:?}: {}",
            out.display(),
            String::from_utf8_lossy(&res.stderr).trim()
        );
        ensure!(
            fields[0] >= 200.0 && fields[1] >= 200.0 && fields[2] > 0.01,
            "the screenshot {} looks empty (width, height, colour spread: {fields:?})",
            out.display()
        );
        Ok(())
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for proc in [self.atspi.take(), self.dbus.take(), self.xvfb.take()]
            .into_iter()
            .flatten()
        {
            proc.stop();
        }
        // The accessibility bus and registry the launcher started, and anything else that
        // ran in this session and outlived its guard.
        let marker = self.dir.as_os_str().as_encoded_bytes().to_vec();
        for pid in pids_mentioning(&marker) {
            signal(pid, "KILL");
        }
    }
}

/// Pids (not this process) whose command line or environment contains `marker`.
fn pids_mentioning(marker: &[u8]) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            ["cmdline", "environ"].iter().any(|f| {
                fs::read(format!("/proc/{pid}/{f}"))
                    .is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker))
            })
        })
        .collect()
}

/// Fails, naming the Debian packages, unless every program the desktop session needs is
/// there, and Debian's Python has pyatspi.
pub fn require_programs() -> Result<()> {
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(program, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(program, package)| format!("{program} (package {package})"))
        .collect();
    ensure!(
        missing.is_empty(),
        "missing {missing:?}; scripts/test.sh installs them"
    );
    let pyatspi = Command::new(PYTHON)
        .args(["-c", "import pyatspi"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ensure!(
        pyatspi,
        "{PYTHON} cannot import pyatspi: apt-get install python3-pyatspi (scripts/test.sh does)"
    );
    Ok(())
}

/// The workspace's target folder (`target/`, or `$CARGO_TARGET_DIR`): two levels above the
/// test executable's `deps/` folder, like [`crate::bin`].
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}
