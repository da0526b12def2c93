//! Unix: a stream socket anyone may open; the peer's credentials (SO_PEERCRED) decide who
//! gets in - root, the service's own user and members of the `gatehouse` group.

use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

use super::Reply;
use super::server::Backend;
use super::server::{handle, send};
use crate::manager::Manager;

/// Serves front ends on `path` until the process ends.
pub async fn serve(path: &Path, manager: Manager) -> std::io::Result<()> {
    let backend = Backend::start(manager);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run that died.
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another client service is already listening on {}",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Anyone may knock; the peer-credential check decides who gets in.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    }
    tracing::info!(socket = %path.display(), "client service listening");
    // Under systemd (`Type=notify`): ready now, and a watchdog ping from this loop.
    let (notifier, problem) = gatehouse_netio::notify::Notifier::from_env();
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
    let notified = |r: std::io::Result<()>| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not notify the service manager");
        }
    };
    notified(notifier.ready(&format!("listening on {}", path.display())));
    let mut watchdog = notifier.watchdog_timer();
    loop {
        // A failed accept (out of file descriptors, a front end gone before it was taken)
        // must not end the service: the tunnel, its routes and DNS stay under its control.
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = watchdog.due() => {
                notified(notifier.watchdog());
                continue;
            }
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not accept a front end; the service goes on");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            if let Err(e) = admit(stream, backend).await {
                tracing::debug!(error = %e, "front end connection ended");
            }
        });
    }
}

async fn admit(stream: UnixStream, backend: Backend) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (rd, mut wr) = stream.into_split();
    if !allowed(cred.uid()) {
        tracing::warn!(
            uid = cred.uid(),
            "refused a front end: not root, not the service user, not in group gatehouse"
        );
        let reply = Reply::Error {
            message: "permission denied: add your user to the `gatehouse` group to control the VPN"
                .into(),
        };
        return send(&mut wr, &reply).await;
    }
    handle(rd, wr, &format!("uid {}", cred.uid()), backend).await
}

fn allowed(uid: u32) -> bool {
    if uid == 0 || uid == own_uid() {
        return true;
    }
    in_gatehouse_group(uid)
}

fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is this process's user; avoids libc (unsafe is denied here).
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

fn in_gatehouse_group(uid: u32) -> bool {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return false;
    };
    let Some(user) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid)).then(|| f[0].to_owned())
    }) else {
        return false;
    };
    let Ok(group) = std::fs::read_to_string("/etc/group") else {
        return false;
    };
    group.lines().any(|l| {
        let f: Vec<&str> = l.split(':').collect();
        f.first() == Some(&"gatehouse") && f.get(3).is_some_and(|m| m.split(',').any(|m| m == user))
    })
}
