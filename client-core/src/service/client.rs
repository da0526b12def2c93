//! The front-end side of the socket (CLI, desktop app): a Unix socket, or on Windows the
//! service's named pipe.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};

use super::{Reply, Request};

#[cfg(unix)]
type ReadHalf = tokio::net::unix::OwnedReadHalf;
#[cfg(unix)]
type WriteHalf = tokio::net::unix::OwnedWriteHalf;
#[cfg(windows)]
type ReadHalf = tokio::io::ReadHalf<tokio::net::windows::named_pipe::NamedPipeClient>;
#[cfg(windows)]
type WriteHalf = tokio::io::WriteHalf<tokio::net::windows::named_pipe::NamedPipeClient>;

/// Talking to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Nothing listens on the socket.
    #[cfg_attr(
        not(windows),
        error(
            "the Gatehouse client service is not running (no socket at {0}); start it with `sudo gatehouse service` (or `systemctl start gatehouse-client`), or set GATEHOUSE_SOCKET"
        )
    )]
    #[cfg_attr(
        windows,
        error(
            "the Gatehouse client service is not running (no pipe {0}); start the Gatehouse service (or `gatehouse service` as Administrator), or set GATEHOUSE_SOCKET"
        )
    )]
    NotRunning(PathBuf),
    /// The service answered with an error.
    #[error("{0}")]
    Refused(String),
    /// The connection broke.
    #[error("lost the connection to the client service: {0}")]
    Io(#[from] std::io::Error),
    /// The service said something we do not understand.
    #[error("unexpected answer from the client service: {0}")]
    Protocol(String),
}

/// A connection to the client service.
pub struct ServiceClient {
    rd: Lines<BufReader<ReadHalf>>,
    wr: WriteHalf,
}

impl ServiceClient {
    /// Connects to the service at `path` (a socket path; on Windows a pipe name, see
    /// [`socket_path`](super::socket_path)).
    pub async fn connect(path: &Path) -> Result<Self, ServiceError> {
        let (rd, wr) = open(path).await?;
        Ok(Self {
            rd: BufReader::new(rd).lines(),
            wr,
        })
    }

    /// Sends `req` and returns the reply (an `Error` reply becomes `Err`).
    pub async fn request(&mut self, req: &Request) -> Result<Reply, ServiceError> {
        let mut line =
            serde_json::to_string(req).map_err(|e| ServiceError::Protocol(e.to_string()))?;
        line.push('\n');
        self.wr.write_all(line.as_bytes()).await?;
        self.next().await
    }

    /// The next line from the service (after `subscribe`: the next update).
    pub async fn next(&mut self) -> Result<Reply, ServiceError> {
        let Some(line) = self.rd.next_line().await? else {
            return Err(ServiceError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the service closed the connection",
            )));
        };
        match serde_json::from_str(&line) {
            Ok(Reply::Error { message }) => Err(ServiceError::Refused(message)),
            Ok(r) => Ok(r),
            Err(e) => Err(ServiceError::Protocol(format!("{e}: {line}"))),
        }
    }
}

#[cfg(unix)]
async fn open(path: &Path) -> Result<(ReadHalf, WriteHalf), ServiceError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|_| ServiceError::NotRunning(path.to_path_buf()))?;
    Ok(stream.into_split())
}

#[cfg(windows)]
async fn open(path: &Path) -> Result<(ReadHalf, WriteHalf), ServiceError> {
    use tokio::net::windows::named_pipe::ClientOptions;
    /// `ERROR_PIPE_BUSY`: every instance is taken; the service makes a new one at once.
    const ERROR_PIPE_BUSY: i32 = 231;
    let mut busy = 0;
    let client = loop {
        match ClientOptions::new().open(path.as_os_str()) {
            Ok(client) => break client,
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) && busy < 50 => {
                busy += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ServiceError::NotRunning(path.to_path_buf()));
            }
            Err(e) => return Err(ServiceError::Io(e)),
        }
    };
    Ok(tokio::io::split(client))
}
