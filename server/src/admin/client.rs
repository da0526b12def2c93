//! The admin API's client, for `gatehoused ctl` and `gatehoused status`: HTTP/1.1 over the
//! Unix socket.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::model::ApiError;

/// A connection target.
pub struct Client {
    socket: PathBuf,
}

/// A response being read.
pub struct Response {
    /// Its status.
    pub status: StatusCode,
    body: hyper::body::Incoming,
}

impl Response {
    /// The next piece of the body; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        while let Some(f) = self.body.frame().await {
            if let Ok(d) = f.context("reading the response")?.into_data() {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// The whole body.
    pub async fn bytes(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

impl Client {
    /// A client of the API on `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends `method path` and returns the response as it arrives.
    pub async fn send(&self, method: Method, path: &str) -> Result<Response> {
        self.send_body(method, path, None).await
    }

    /// Sends `method path` with a JSON `body` (none: empty) and returns the response as it
    /// arrives.
    pub async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the gateway's admin socket {}: is gatehoused running? (root or the group `gatehouse-admin` may use it; --socket or GATEHOUSE_ADMIN_SOCKET picks another)",
                    self.socket.display()
                )
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking HTTP to the admin socket")?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "gatehoused")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(match body {
                Some(b) => Full::new(Bytes::from(b)).boxed(),
                None => Empty::<Bytes>::new().boxed(),
            })?;
        let resp = sender
            .send_request(req)
            .await
            .context("the admin API did not answer")?;
        Ok(Response {
            status: resp.status(),
            body: resp.into_body(),
        })
    }

    /// `method path`, its JSON answer; an error answer becomes its message.
    pub async fn json<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T> {
        self.json_body(method, path, None).await
    }

    /// As [`Client::json`], sending `body` (JSON).
    pub async fn json_body<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let r = self.send_body(method, path, body).await?;
        let status = r.status;
        let body = r.bytes().await?;
        if !status.is_success() {
            match serde_json::from_slice::<ApiError>(&body) {
                Ok(e) => bail!("{}", e.error),
                Err(_) => bail!("{status}: {}", String::from_utf8_lossy(&body)),
            }
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("the answer to {path} is not what this ctl expects"))
    }
}
