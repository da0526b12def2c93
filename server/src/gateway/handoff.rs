//! A restart for an upgrade that loses no session (issue 17): the running `gatehoused`
//! hands its sockets and its tunnels to the binary now on disk, in the same process.
//!
//! On SIGUSR2 (or `gatehoused ctl handoff`) the control thread stops every worker (each
//! ends what cannot move, sends its last datagrams and exports its core: nothing seals
//! with the exported keys here again), writes the exported tunnels to
//! `DATA_DIR/handoff.state` (0600: it holds data keys), marks the TUN device persistent so it
//! outlives its queues, clears close-on-exec on a duplicate of every UDP socket and of the
//! TCP listener, and `exec`s the binary at the path this one was started from with the same
//! arguments, naming the inherited descriptors in `GATEHOUSE_HANDOFF_FDS`. The PID stays, so
//! systemd keeps tracking the service.
//!
//! The new process adopts the sockets instead of binding (datagrams that arrive meanwhile
//! wait in the sockets' buffers: not one is lost to a closed port), attaches to the TUN
//! device by name (its addresses and routes never went away) and clears its persistence,
//! reads and removes the state file and imports each worker's tunnels before serving.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gatehouse_engine::gateway::CoreHandoff;

/// The state file, in the data directory (beside gateway.toml).
pub(super) const STATE_FILE: &str = "handoff.state";
/// The environment variable naming the inherited descriptors.
pub(super) const FDS_ENV: &str = "GATEHOUSE_HANDOFF_FDS";

/// The ports' names in [`FDS_ENV`], in the order of the workers' sockets.
pub(super) const PORTS: [&str; 5] = ["ovpn", "ike", "natt", "wg", "quic"];

/// `TUNSETPERSIST` (linux/if_tun.h: `_IOW('T', 203, int)`).
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

/// Duplicates of the descriptors the next process inherits, kept by the control thread
/// while the workers use the originals.
#[derive(Default)]
pub(super) struct Kept {
    /// Per port (see [`PORTS`]): every worker's socket, in worker order (the reuseport
    /// group's order, which its steering program indexes).
    pub udp: HashMap<&'static str, Vec<OwnedFd>>,
    /// The OpenVPN TCP listener.
    pub tcp: Option<OwnedFd>,
    /// A queue of the TUN device (to mark it persistent).
    pub tun: Option<OwnedFd>,
    /// Whether the UDP groups steer by source address.
    pub steered: bool,
}

/// A duplicate of `fd` (close-on-exec until [`exec`] clears it).
pub(super) fn keep(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned()
        .context("cannot duplicate a socket for a later handoff")
}

impl Kept {
    /// Keeps a duplicate of every worker's socket on `port`.
    pub fn keep_group<'a>(
        &mut self,
        port: &'static str,
        socks: impl Iterator<Item = Option<&'a std::net::UdpSocket>>,
    ) -> Result<()> {
        let mut fds = Vec::new();
        for s in socks.flatten() {
            fds.push(keep(s.as_fd())?);
        }
        if !fds.is_empty() {
            self.udp.insert(port, fds);
        }
        Ok(())
    }
}

/// Descriptors inherited from the previous process.
pub(super) struct Inherited {
    udp: HashMap<String, Vec<RawFd>>,
    tcp: Option<RawFd>,
    /// Whether the groups steer by source address (as they did there).
    pub steered: bool,
}

impl Inherited {
    /// Reads [`FDS_ENV`]; None when this process was not started by a
    /// handoff.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(v) = std::env::var_os(FDS_ENV) else {
            return Ok(None);
        };
        // The variable stays in the environment (removing it takes `unsafe` in edition 2024):
        // the `ip` commands the gateway runs ignore it, and the next handoff sets its own.
        Self::parse(&v.to_string_lossy()).map(Some)
    }

    /// Parses the value of [`FDS_ENV`] (`ovpn:7,8;ike:9,10;...;tcp:17;steered:1`).
    fn parse(v: &str) -> Result<Self> {
        let mut me = Inherited {
            udp: HashMap::new(),
            tcp: None,
            steered: false,
        };
        for part in v.split(';').filter(|p| !p.is_empty()) {
            let Some((name, list)) = part.split_once(':') else {
                bail!("{FDS_ENV}: `{part}` is not NAME:FD,FD...");
            };
            let fds: Vec<RawFd> = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().with_context(|| format!("{FDS_ENV}: fd `{s}`")))
                .collect::<Result<_>>()?;
            match name {
                "tcp" => me.tcp = fds.first().copied(),
                "steered" => me.steered = fds.first() == Some(&1),
                _ => {
                    me.udp.insert(name.to_owned(), fds);
                }
            }
        }
        Ok(me)
    }

    /// The `n` workers' sockets of `port`, adopted; None when the previous process had
    /// none there (the port was off or the configuration changed: bind it anew).
    #[allow(unsafe_code)]
    pub fn take_group(&mut self, port: &str, n: usize) -> Result<Option<Vec<std::net::UdpSocket>>> {
        let Some(fds) = self.udp.remove(port) else {
            return Ok(None);
        };
        let socks: Vec<std::net::UdpSocket> = fds
            .into_iter()
            // SAFETY: the previous process named these descriptors as its sockets of this
            // port and exec'd us with them open; nothing else in this process owns them.
            .map(|fd| unsafe { std::net::UdpSocket::from_raw_fd(fd) })
            .collect();
        if socks.len() != n {
            bail!(
                "the previous process had {} workers' sockets on {port}, this one runs {n} workers: keep `workers` unchanged across an upgrade (or restart it plainly)",
                socks.len()
            );
        }
        for s in &socks {
            s.set_nonblocking(true)?;
            set_cloexec(s.as_raw_fd())?;
        }
        Ok(Some(socks))
    }

    /// The OpenVPN TCP listener, adopted.
    #[allow(unsafe_code)]
    pub fn take_tcp(&mut self) -> Result<Option<std::net::TcpListener>> {
        let Some(fd) = self.tcp.take() else {
            return Ok(None);
        };
        // SAFETY: as in `take_group`: the previous process's listener, ours alone now.
        let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        l.set_nonblocking(true)?;
        set_cloexec(l.as_raw_fd())?;
        Ok(Some(l))
    }

    /// Closes what was inherited and not adopted (a port the configuration turned off).
    #[allow(unsafe_code)]
    pub fn close_rest(self) {
        for fd in self.udp.into_values().flatten().chain(self.tcp) {
            // SAFETY: an inherited descriptor nobody adopted.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

/// Marks the TUN device of queue `fd` persistent (it outlives its last queue) or not.
#[allow(unsafe_code)]
pub(super) fn set_tun_persist(fd: RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: TUNSETPERSIST takes an integer argument by value; `fd` is a TUN queue.
    let r = unsafe { libc::ioctl(fd, TUNSETPERSIST as _, libc::c_ulong::from(on)) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
fn set_cloexec_to(fd: RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Inherited descriptors go back to close-on-exec (the `ip` commands the gateway runs must
/// not hold its sockets).
fn set_cloexec(fd: RawFd) -> std::io::Result<()> {
    set_cloexec_to(fd, true)
}

fn clear_cloexec(fd: RawFd) -> std::io::Result<()> {
    set_cloexec_to(fd, false)
}

/// Writes the workers' exported tunnels to `path`, readable by the owner only.
pub(super) fn write_state(path: &Path, states: &[CoreHandoff]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let bytes = serde_json::to_vec(states).context("serialising the handoff state")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads the previous process's exported tunnels and removes the file (it holds keys).
pub(super) fn read_state(path: &Path) -> Result<Vec<CoreHandoff>> {
    let bytes = std::fs::read(path);
    let _ = std::fs::remove_file(path);
    let bytes = bytes.with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a handoff state", path.display()))
}

/// The binary to run next: the path this process was started from (where an upgrade puts
/// the new binary), not the old inode `/proc/self/exe` still points at.
pub(super) fn next_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this process's binary")?;
    let path = on_disk(&exe);
    if !path.is_file() {
        bail!("{} is gone: nothing to exec", path.display());
    }
    Ok(path)
}

/// The path of `exe` as `/proc/self/exe` names it, without the ` (deleted)` the kernel adds
/// once the file was replaced (an upgrade unlinks the old binary and puts the new one there).
fn on_disk(exe: &Path) -> PathBuf {
    let s = exe.to_string_lossy();
    PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
}

/// Hands the kept descriptors to `binary` by exec: returns only on failure.
pub(super) fn exec(binary: &Path, kept: &Kept) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut env = String::new();
    for port in PORTS {
        if let Some(fds) = kept.udp.get(port) {
            let list: Vec<String> = fds.iter().map(|f| f.as_raw_fd().to_string()).collect();
            env.push_str(&format!("{port}:{};", list.join(",")));
        }
    }
    if let Some(t) = &kept.tcp {
        env.push_str(&format!("tcp:{};", t.as_raw_fd()));
    }
    env.push_str(&format!("steered:{}", u8::from(kept.steered)));
    let all = kept
        .udp
        .values()
        .flatten()
        .chain(kept.tcp.as_ref())
        .map(AsRawFd::as_raw_fd);
    for fd in all {
        if let Err(e) = clear_cloexec(fd) {
            return anyhow::Error::new(e).context("cannot pass a socket on (fcntl)");
        }
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let e = std::process::Command::new(binary)
        .args(args)
        .env(FDS_ENV, env)
        .exec();
    anyhow::Error::new(e).context(format!("cannot exec {}", binary.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_replaced_binary_is_run_from_its_path() {
        assert_eq!(
            on_disk(Path::new("/usr/bin/gatehoused (deleted)")),
            PathBuf::from("/usr/bin/gatehoused")
        );
        assert_eq!(
            on_disk(Path::new("/usr/bin/gatehoused")),
            PathBuf::from("/usr/bin/gatehoused")
        );
    }

    #[test]
    fn the_state_file_is_private_and_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, b"stale").unwrap();
        let states = vec![CoreHandoff {
            version: gatehouse_engine::gateway::HANDOFF_VERSION,
            worker: 0,
            workers: 1,
            openvpn: Vec::new(),
            ike: Vec::new(),
            initiated: Vec::new(),
        }];
        write_state(&path, &states).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let back = read_state(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert!(!path.exists(), "the state file stays after it was read");
        assert!(read_state(&path).is_err());
    }

    #[test]
    fn inherited_descriptors_are_named_by_port() {
        let me = Inherited::parse("ovpn:7,8;ike:9,10;tcp:17;steered:1").unwrap();
        assert_eq!(me.udp["ovpn"], vec![7, 8]);
        assert_eq!(me.udp["ike"], vec![9, 10]);
        assert_eq!(me.tcp, Some(17));
        assert!(me.steered);
        assert!(Inherited::parse("ovpn=7").is_err());
        assert!(Inherited::parse("ovpn:x").is_err());
    }
}
