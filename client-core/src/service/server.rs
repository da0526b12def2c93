//! The service side of the socket: the protocol loop, shared by the platform listeners
//! ([`super::unix`]: a Unix socket checked with SO_PEERCRED; [`super::windows`]: a named pipe
//! whose DACL decides who may open it).

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

use super::auto_connect::AutoConnector;
use super::{Reply, Request};
use crate::manager::Manager;

/// What serves front ends: the connection manager and the auto-connect watcher.
#[derive(Clone)]
pub(super) struct Backend {
    manager: Manager,
    auto: AutoConnector,
}

impl Backend {
    /// Starts the auto-connect watcher beside `manager`.
    pub(super) fn start(manager: Manager) -> Backend {
        let auto = AutoConnector::spawn(manager.clone());
        Backend { manager, auto }
    }
}

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
    backend: Backend,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Backend { manager, auto } = backend;
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        let line = match read_request(&mut rd, &mut buf).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                tracing::warn!(
                    peer,
                    limit = MAX_REQUEST,
                    "a front end sent a request line over the limit; closing its connection"
                );
                let message = format!("request longer than {} KiB", MAX_REQUEST / 1024);
                return send(&mut wr, &Reply::Error { message }).await;
            }
            Line::Text(l) => l,
        };
        let req: Request = match serde_json::from_str(line) {
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
                Ok(()) => {
                    // Not again on this network until the user says so or it changes.
                    auto.user_disconnected().await;
                    Reply::Ok {
                        status: manager.status(),
                    }
                }
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            },
            Request::AutoConnect { request } => {
                tracing::info!(profile = %request.profile.name, auto_connect = %request.profile.auto_connect, peer, "auto-connect set");
                auto.set(*request).await;
                Reply::Ok {
                    status: manager.status(),
                }
            }
            Request::Status => Reply::Status {
                status: manager.status(),
            },
            Request::Subscribe => return stream_updates(wr, manager).await,
        };
        send(&mut wr, &reply).await?;
    }
}

/// The longest request line a front end may send (a connect request carries a whole
/// profile: certificates, key, wrapper key - a few KiB).
pub(super) const MAX_REQUEST: usize = 256 * 1024;

enum Line<'a> {
    Eof,
    TooLong,
    Text(&'a str),
}

/// Reads one request line of at most [`MAX_REQUEST`] bytes into `buf` without ever
/// buffering more; invalid UTF-8 comes back as text the JSON parser refuses.
async fn read_request<'a, R: AsyncBufRead + Unpin>(
    rd: &mut R,
    buf: &'a mut Vec<u8>,
) -> std::io::Result<Line<'a>> {
    buf.clear();
    let n = rd
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_REQUEST {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(std::str::from_utf8(buf).unwrap_or("\u{fffd}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_lines_are_bounded() {
        let mut input = b"{\"status\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_REQUEST + 10));
        input.push(b'\n');
        let mut rd = BufReader::new(&input[..]);
        let mut buf = Vec::new();
        assert!(
            matches!(read_request(&mut rd, &mut buf).await.unwrap(), Line::Text(t) if t == "{\"status\":1}")
        );
        assert!(matches!(
            read_request(&mut rd, &mut buf).await.unwrap(),
            Line::TooLong
        ));
        assert!(buf.len() <= MAX_REQUEST + 1, "buffered {}", buf.len());
        let mut rd = BufReader::new(&b"last line without newline"[..]);
        assert!(matches!(
            read_request(&mut rd, &mut buf).await.unwrap(),
            Line::Text("last line without newline")
        ));
        assert!(matches!(
            read_request(&mut rd, &mut buf).await.unwrap(),
            Line::Eof
        ));
    }
}
