//! scripts/check-test-packages.py proves the install list of scripts/test.sh covers every
//! program, strongSwan plugin and library the tests use, whatever else this machine has.
//! These tests prove the proof: it passes on the real list and fails, naming the package,
//! when a needed package is taken out of it (the fault that once hid behind a machine with
//! extra packages: strongSwan's `openssl` plugin lives in libstrongswan-standard-plugins).

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-test-packages.py")
}

fn check(packages: Option<&[String]>) -> Result<Output> {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script());
    if let Some(p) = packages {
        cmd.arg("--packages").arg(p.join(" "));
    }
    cmd.output()
        .context("running check-test-packages.py (python3 from Debian)")
}

/// The list in scripts/test.sh, as the check reads it.
fn install_list() -> Result<Vec<String>> {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import importlib.util as u, sys; s = u.spec_from_file_location('c', sys.argv[1]); \
             m = u.module_from_spec(s); s.loader.exec_module(m); print(' '.join(m.install_list()))",
        )
        .arg(script())
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

#[test]
fn install_list_covers_what_the_tests_use() -> Result<()> {
    let out = check(None)?;
    ensure!(
        out.status.success(),
        "the install list misses packages the tests need:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn removing_a_needed_package_from_the_list_fails_naming_it() -> Result<()> {
    let list = install_list()?;
    for needed in [
        "libstrongswan-standard-plugins",
        "openvpn",
        "charon-cmd",
        "xvfb",
        "iperf3",
    ] {
        ensure!(
            list.iter().any(|p| p == needed),
            "{needed} is not in the list"
        );
        let without: Vec<String> = list.iter().filter(|p| *p != needed).cloned().collect();
        let out = check(Some(&without))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            !out.status.success(),
            "the check passed without {needed}:\n{stdout}"
        );
        ensure!(
            stdout.contains(&format!("package {needed} is not in APT_PACKAGES")),
            "the check failed without {needed} but did not name it:\n{stdout}"
        );
    }
    Ok(())
}
