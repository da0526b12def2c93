//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/kv/range`, `/v3/kv/put`,
//! `/v3/kv/txn`; keys and values in base64), on a plain HTTP/1.1 connection per call: the
//! standby replication (`gateway/ha.rs`) makes one call a second, which needs no gRPC stack.
//!
//! Blocking: call it from `spawn_blocking`. Every call tries the endpoints in order and
//! answers from the first that responds.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// Time allowed to connect, and to send or read, per endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read (etcd's own request limit is 1.5 MiB by default).
const MAX_RESPONSE: usize = 64 << 20;

/// The endpoints of one etcd cluster.
#[derive(Debug, Clone)]
pub struct Etcd {
    endpoints: Vec<(String, u16)>,
}

/// A key's value and its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The value.
    pub value: Vec<u8>,
    /// The revision of its last change.
    pub mod_revision: i64,
}

impl Etcd {
    /// A client for `endpoints` (host, port).
    pub fn new(endpoints: Vec<(String, u16)>) -> Self {
        Self { endpoints }
    }

    /// The value of `key`; None when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Kv>> {
        let v = self.call("/v3/kv/range", &json!({ "key": B64.encode(key) }))?;
        let Some(kv) = v["kvs"].as_array().and_then(|a| a.first()) else {
            return Ok(None);
        };
        // proto3 JSON leaves out empty values and zero numbers; int64s are strings.
        let value = match kv["value"].as_str() {
            Some(s) => B64
                .decode(s)
                .context("etcd answered a value that is not base64")?,
            None => Vec::new(),
        };
        let mod_revision = kv["mod_revision"]
            .as_str()
            .or(kv["modRevision"].as_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(Some(Kv {
            value,
            mod_revision,
        }))
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.call(
            "/v3/kv/put",
            &json!({ "key": B64.encode(key), "value": B64.encode(value) }),
        )?;
        Ok(())
    }

    /// Sets `key` to `value` only if `guard` holds `expected` (one transaction); false,
    /// changing nothing, when it does not.
    pub fn put_if(&self, guard: &str, expected: &[u8], key: &str, value: &[u8]) -> Result<bool> {
        let v = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{
                    "key": B64.encode(guard),
                    "result": "EQUAL",
                    "target": "VALUE",
                    "value": B64.encode(expected),
                }],
                "success": [{
                    "request_put": { "key": B64.encode(key), "value": B64.encode(value) }
                }],
            }),
        )?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// POSTs `body` to `path` on the first endpoint that answers; its JSON answer.
    fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let body = serde_json::to_vec(body)?;
        let mut errors = Vec::new();
        for (host, port) in &self.endpoints {
            match post(host, *port, path, &body) {
                Ok(v) => return Ok(v),
                Err(e) => errors.push(format!("{host}:{port}: {e:#}")),
            }
        }
        bail!("no etcd endpoint answered: {}", errors.join("; "))
    }
}

/// One HTTP/1.1 POST with a JSON body; the JSON answer of a 200.
fn post(host: &str, port: u16, path: &str, body: &[u8]) -> Result<Value> {
    let addr = (host, port)
        .to_socket_addrs()
        .context("cannot resolve")?
        .next()
        .ok_or_else(|| anyhow!("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).context("cannot connect")?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE as u64 + 1).read_to_end(&mut raw)?;
    if raw.len() > MAX_RESPONSE {
        bail!("answer larger than {MAX_RESPONSE} bytes");
    }
    let (status, body) = parse_response(&raw)?;
    let v: Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "HTTP {status}, not JSON: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    if status != 200 {
        let msg = v["message"].as_str().or(v["error"].as_str()).unwrap_or("");
        bail!("HTTP {status} on {path}: {msg}");
    }
    Ok(v)
}

/// The status and body of a whole HTTP/1.1 answer (Content-Length, chunked, or up to EOF).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP answer"))?;
    let head = std::str::from_utf8(&raw[..end]).context("HTTP header not UTF-8")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP status line"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse::<usize>().ok();
        }
    }
    if chunked {
        return Ok((status, dechunk(rest)?));
    }
    match length {
        Some(n) if n <= rest.len() => Ok((status, rest[..n].to_vec())),
        Some(_) => bail!("HTTP answer shorter than its Content-Length"),
        None => Ok((status, rest.to_vec())),
    }
}

/// Decodes a chunked body.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size_text = std::str::from_utf8(&rest[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_whatever_their_framing() {
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage").unwrap();
        assert_eq!((s, b.as_slice()), (200, b"{}".as_slice()));
        let (s, b) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (200, b"{\"a\":1}\n".as_slice()));
        let (s, b) = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((s, b.as_slice()), (404, b"nope".as_slice()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab")
                .is_err()
        );
    }

    #[test]
    fn no_endpoint_is_an_error_naming_them() {
        // Port 9 on loopback: nothing listens (connection refused at once).
        let e = Etcd::new(vec![("127.0.0.1".into(), 9)])
            .get("/k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("127.0.0.1:9"), "{e}");
    }
}
