//! Processes the tests start: each one is a [`Proc`] guard that stops it when the test ends,
//! also when the test panics, so no daemon outlives the namespace it ran in.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a process gets to exit after SIGTERM before it is killed with SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(100);

/// A running process whose stdout and stderr go to a log file. Dropping it sends SIGTERM,
/// waits up to 3 s, then SIGKILL, and reaps it.
pub struct Proc {
    name: String,
    child: Mutex<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log` (created if missing).
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Proc> {
        let name = format!("{cmd:?}");
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name,
            child: Mutex::new(child),
            log: log.to_path_buf(),
        })
    }

    /// Process id (the program itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has logged so far (lossy UTF-8; empty if nothing yet).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log_contents();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }

    /// Polls the log until it contains `pattern`. Fails early, with the log's tail, if the
    /// process exits first or `timeout` passes.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_contents().contains(pattern) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child().try_wait() {
                // It may have logged the pattern just before exiting.
                if self.log_contents().contains(pattern) {
                    return Ok(());
                }
                bail!(
                    "{} exited ({status}) before logging {pattern:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log {pattern:?} within {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Stops the process now (SIGTERM, then SIGKILL after the grace period).
    pub fn stop(&self) {
        let mut child = self.child();
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(child.id(), "TERM");
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        // A poisoned lock only means another thread panicked while holding it; the Child
        // inside is still valid and must still be stopped.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("command", &self.name)
            .field("pid", &self.pid())
            .field("log", &self.log)
            .finish()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a signal by name with kill(1): the workspace denies `unsafe`, which `libc::kill`
/// would need.
pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `cmd` to completion with its output captured; kills it if it is still running after
/// `timeout` (a hung peer must fail the test, not hang it).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let name = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().context("stdout pipe")?;
    let mut err = child.stderr.take().context("stderr pipe")?;
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} still running after {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Resident memory of process `pid` in kB (`VmRSS` in /proc/PID/status).
pub fn rss_kb(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}
