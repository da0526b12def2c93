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
        Ok(Some(kv_of(kv)?.1))
    }

    /// Every key under `prefix` with its value (at most `limit`), in key order.
    pub fn list(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Kv)>> {
        let v = self.call(
            "/v3/kv/range",
            &json!({
                "key": B64.encode(prefix),
                "range_end": B64.encode(prefix_end(prefix.as_bytes())),
                "limit": limit.to_string(),
            }),
        )?;
        let Some(kvs) = v["kvs"].as_array() else {
            return Ok(Vec::new());
        };
        kvs.iter().take(limit).map(kv_of).collect()
    }

    /// A lease of `ttl` seconds: keys put with it go when it is not kept alive.
    pub fn grant(&self, ttl: u64) -> Result<i64> {
        let v = self.call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
        int(&v["ID"]).ok_or_else(|| anyhow!("etcd granted no lease: {v}"))
    }

    /// Renews lease `id`; false when it has expired (its keys are gone).
    pub fn keep_alive(&self, id: i64) -> Result<bool> {
        let v = self.call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        Ok(int(&v["result"]["TTL"]).unwrap_or(0) > 0)
    }

    /// Sets `key` to `value` under lease `lease` (the key goes with the lease).
    pub fn put_leased(&self, key: &str, value: &[u8], lease: i64) -> Result<()> {
        self.call(
            "/v3/kv/put",
            &json!({ "key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string() }),
        )?;
        Ok(())
    }

    /// Sets `key` to `value` under `lease` when nobody holds it, or when it holds `value`
    /// already (this node's own claim from before a restart); false, changing nothing,
    /// when someone else holds it.
    pub fn claim(&self, key: &str, value: &[u8], lease: i64) -> Result<bool> {
        let put = json!([{ "request_put": {
            "key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()
        } }]);
        let free = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{ "key": B64.encode(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0" }],
                "success": put,
            }),
        )?;
        if free["succeeded"].as_bool().unwrap_or(false) {
            return Ok(true);
        }
        let ours = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{ "key": B64.encode(key), "result": "EQUAL", "target": "VALUE", "value": B64.encode(value) }],
                "success": put,
            }),
        )?;
        Ok(ours["succeeded"].as_bool().unwrap_or(false))
    }

    /// Sets `key` to `value` only if its last change is still revision `seen` (0: the key
    /// does not exist); false, changing nothing, when someone changed it since.
    pub fn put_if_unchanged(&self, key: &str, seen: i64, value: &[u8]) -> Result<bool> {
        let v = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{ "key": B64.encode(key), "result": "EQUAL", "target": "MOD", "mod_revision": seen.to_string() }],
                "success": [{ "request_put": { "key": B64.encode(key), "value": B64.encode(value) } }],
            }),
        )?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
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

/// An int64 of etcd's JSON (proto3 JSON writes them as strings).
fn int(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

/// The key and [`Kv`] of one entry of a range answer.
fn kv_of(kv: &Value) -> Result<(String, Kv)> {
    // proto3 JSON leaves out empty values and zero numbers.
    let bytes = |f: &str| -> Result<Vec<u8>> {
        match kv[f].as_str() {
            Some(s) => B64
                .decode(s)
                .with_context(|| format!("etcd answered a {f} that is not base64")),
            None => Ok(Vec::new()),
        }
    };
    let key = String::from_utf8_lossy(&bytes("key")?).into_owned();
    let mod_revision = int(&kv["mod_revision"])
        .or(int(&kv["modRevision"]))
        .unwrap_or(0);
    Ok((
        key,
        Kv {
            value: bytes("value")?,
            mod_revision,
        },
    ))
}

/// The end of the range of keys that start with `prefix`: the prefix with its last byte
/// below 0xff raised by one.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
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
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/g/s/"), b"/g/s0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        let (k, kv) = kv_of(&json!({"key": "YQ==", "mod_revision": "7"})).unwrap();
        assert_eq!((k.as_str(), kv.mod_revision, kv.value.len()), ("a", 7, 0));
        assert!(kv_of(&json!({"key": "!!"})).is_err());
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
