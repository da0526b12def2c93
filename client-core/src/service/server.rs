//! The service side of the socket: the protocol loop, shared by the platform listeners
//! ([`super::unix`]: a Unix socket checked with SO_PEERCRED; [`super::windows`]: a named pipe
//! whose DACL decides who may open it).

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::{Reply, Request};
use crate::manager::Manager;

pub(super) async fn send<W: AsyncWrite + Unpin>(wr: &mut W, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_string(reply).map_err(std::io::Error::other)?;
    line.push('\n');
    wr.write_all(line.as_bytes()).await
}

/// Serves one admitted front end until it hangs up. `peer` names it in the log
/// (`uid 1000`, `pid 4242`).
pub(super) async fn handle<R, W>(
    rd: R,
    mut wr: W,
    peer: &str,
    manager: Manager,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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
                tracing::info!(profile = %request.profile.name, peer, "connect requested");
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

async fn stream_updates<W: AsyncWrite + Unpin>(mut wr: W, manager: Manager) -> std::io::Result<()> {
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
