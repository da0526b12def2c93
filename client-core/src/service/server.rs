//! The service side of the socket.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{Reply, Request};
use crate::manager::Manager;

/// Serves front ends on `path` until the process ends.
pub async fn serve(path: &Path, manager: Manager) -> std::io::Result<()> {
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
    loop {
        let (stream, _) = listener.accept().await?;
        let manager = manager.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, manager).await {
                tracing::debug!(error = %e, "front end connection ended");
            }
        });
    }
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

async fn send(wr: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_string(reply).map_err(std::io::Error::other)?;
    line.push('\n');
    wr.write_all(line.as_bytes()).await
}

async fn handle(stream: UnixStream, manager: Manager) -> std::io::Result<()> {
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
    let mut lines = BufReader::new(rd).lines();
    while let Some(line) = lines.next_line().await? {
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                send(
                    &mut wr,
                    &Reply::Error {
                        message: format!("bad request: {e}"),
                    },
                )
                .await?;
                continue;
            }
        };
        let reply = match req {
            Request::Connect { request } => {
                tracing::info!(profile = %request.profile.name, uid = cred.uid(), "connect requested");
                match manager.connect(*request).await {
                    Ok(()) => Reply::Ok {
                        status: manager.status(),
                    },
                    Err(e) => Reply::Error {
                        message: e.to_string(),
                    },
                }
            }
            Request::Disconnect => match manager.disconnect().await {
                Ok(()) => Reply::Ok {
                    status: manager.status(),
                },
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            },
            Request::Status => Reply::Status {
                status: manager.status(),
            },
            Request::Subscribe => return stream_updates(wr, manager).await,
        };
        send(&mut wr, &reply).await?;
    }
    Ok(())
}

async fn stream_updates(
    mut wr: tokio::net::unix::OwnedWriteHalf,
    manager: Manager,
) -> std::io::Result<()> {
    let mut status = manager.watch_status();
    let mut logs = manager.logs();
    let first = status.borrow_and_update().clone();
    send(&mut wr, &Reply::Status { status: first }).await?;
    loop {
        tokio::select! {
            r = status.changed() => {
                if r.is_err() { return Ok(()); }
                let s = status.borrow_and_update().clone();
                send(&mut wr, &Reply::Status { status: s }).await?;
            }
            l = logs.recv() => match l {
                Ok(line) => send(&mut wr, &Reply::Log { line }).await?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return Ok(()),
            }
        }
    }
}
