//! The front-end side of the socket (CLI, desktop app).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{Reply, Request};

/// Talking to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Nothing listens on the socket.
    #[error(
        "the Gatehouse client service is not running (no socket at {0}); start it with `sudo gatehouse service` (or `systemctl start gatehouse-client`), or set GATEHOUSE_SOCKET"
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
    rd: Lines<BufReader<OwnedReadHalf>>,
    wr: OwnedWriteHalf,
}

impl ServiceClient {
    /// Connects to the service at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ServiceError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|_| ServiceError::NotRunning(path.to_path_buf()))?;
        let (rd, wr) = stream.into_split();
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
