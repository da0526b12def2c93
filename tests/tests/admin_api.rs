//! The admin API end to end (issue 15): what an operator sees and does through
//! `gatehoused ctl` and the Unix socket while real clients use the gateway.
//!
//! One gatehoused (OpenVPN and IKEv2 on, one site connection `hq` configured, metrics on
//! `127.0.0.1:9469` in its namespace) and four namespaces around it: A = stock OpenVPN 2.6
//! client `alice` over UDP, S = strongSwan `charon-cmd` `carol` (IKEv2), and two peer
//! addresses for site connections (nothing answers IKE there; the connections only have to
//! exist). A and S ping the LAN host continuously in the background while the test:
//!
//! 1. reads `gatehoused ctl sessions --json` and `GET /v1/sessions` twice, 2 s apart: both
//!    sessions are listed (name, protocol, virtual address) and every rx/tx byte and packet
//!    counter of both grew;
//! 2. checks the live API against docs/admin-api.json: the bodies of GET /v1/status,
//!    /v1/sessions, /v1/connections, /v1/pool, /v1/drops and of a 404 disconnect validate
//!    against the documented response schemas (a small validator for the subset the
//!    document uses; fields the document does not name count as errors), and every path of
//!    the document answers with one of its documented status codes (never a router 404/405);
//! 3. `ctl revoke alice`: within 5 s alice is gone from `ctl sessions` and her client logged
//!    AUTH_FAILED or exited, while carol lost at most one ping;
//! 4. edits gateway.toml (new `dns`, a second `[[connection]]`), `ctl reload` prints
//!    "dns" and "connection added", the API lists the new connection, carol keeps pinging;
//!    then an invalid file and SIGHUP: gatehoused logs "not reloaded" and keeps serving;
//!    a third client (charon-cmd `dave`) connecting afterwards is given the new DNS server;
//! 5. `ctl metrics` and the metrics listener show gatehouse_handshakes_total (>= 3),
//!    gatehouse_bytes_total (growing between two scrapes) and gatehouse_drops_total;
//! 6. `ctl capture --tunnel carol --seconds 3 -w FILE` while carol and dave ping:
//!    `tshark -r FILE` shows her ICMP echo requests and replies, and none of dave's.
//!
//! Tag `ad`, subnet index 210.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::gatehouse_site::{GhConnection, add_connections};
use gatehouse_tests::gatehoused::{
    Gatehoused, issue_rsa_client, spawn_stock_client, toml_str, wait_client_up,
};
use gatehouse_tests::net::{ping, wait_ping};
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::proc::run_with_timeout;
use gatehouse_tests::strongswan::{CharonCmd, CharonCmdConfig, parse_ping_summary};
use gatehouse_tests::{GatewaySetup, Ipv4Cidr, Netns, Proc, bin};
use serde_json::Value;

/// The OpenAPI document the live API must match.
const OPENAPI: &str = include_str!("../../docs/admin-api.json");
/// How long a revoked session may take to end.
const REVOKE_WINDOW: Duration = Duration::from_secs(5);
/// Pings the client that stays may lose while the other is revoked or the gateway reloads.
const MAX_LOSS: usize = 1;
/// Where the metrics listener binds, inside the gateway's namespace.
const METRICS_ADDR: &str = "127.0.0.1:9469";
/// A name no certificate or session has.
const NOBODY: &str = "nobody-ad";
/// How long one `gatehoused ctl`, curl or tshark run may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// One test's world (namespaces, gateway data directory, scratch folder) and this
/// file's helpers on it.
struct Setup(GatewaySetup);

impl std::ops::Deref for Setup {
    type Target = GatewaySetup;

    fn deref(&self) -> &GatewaySetup {
        &self.0
    }
}

impl Setup {
    fn new(tag: &str, subnet_index: u8, n_clients: usize) -> Result<Setup> {
        let commands = &[
            "ip",
            "ping",
            "openssl",
            "openvpn",
            "charon-cmd",
            "curl",
            "tshark",
            "kill",
        ];
        GatewaySetup::new(tag, subnet_index, n_clients, commands).map(Setup)
    }

    fn socket(&self) -> PathBuf {
        self.gw_dir.path().join("admin.sock")
    }

    /// `gatehoused ctl --data-dir DIR ARGS...` (in the root namespace: the socket is a
    /// file); its stdout, or an error with its stderr.
    fn ctl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(bin("gatehoused"));
        cmd.arg("ctl").arg("--data-dir").arg(self.gw_dir.path());
        cmd.args(args);
        let out = run_with_timeout(cmd, CMD_TIMEOUT)?;
        ensure!(
            out.status.success(),
            "`gatehoused ctl {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ctl sessions --json`.
    fn ctl_sessions(&self) -> Result<Vec<Value>> {
        let out = self.ctl(&["--json", "sessions"])?;
        let v: Value = serde_json::from_str(&out)
            .with_context(|| format!("`ctl --json sessions` printed no JSON: {out}"))?;
        v.as_array()
            .cloned()
            .with_context(|| format!("`ctl --json sessions` printed no array: {out}"))
    }

    /// `METHOD PATH` on the admin socket with curl: (status, body).
    fn api(&self, method: &str, path: &str) -> Result<(u16, Vec<u8>)> {
        let body = self.path("api-body");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "15", "--unix-socket"])
            .arg(self.socket())
            .args(["-X", method, "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .arg(format!("http://gatehouse{path}"));
        let out = run_with_timeout(cmd, CMD_TIMEOUT)?;
        ensure!(
            out.status.success(),
            "curl {method} {path} on {} failed ({}): {}",
            self.socket().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let code = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        let bytes = fs::read(&body).unwrap_or_default();
        let _ = fs::remove_file(&body);
        Ok((code, bytes))
    }

    /// `GET PATH`: status 200 and a JSON body.
    fn api_json(&self, path: &str) -> Result<Value> {
        let (code, body) = self.api("GET", path)?;
        ensure!(
            code == 200,
            "GET {path}: status {code}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {path}: not JSON: {}", String::from_utf8_lossy(&body)))
    }

    /// A new RSA-2048 key and CSR, certified by `gatehouse-certs issue-client NAME --csr`
    /// (charon-cmd takes RSA keys only): (certificate, key).
    fn rsa_client(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        issue_rsa_client(self.dir.path(), &self.gw_dir.pki(), name, &[])
    }
}

/// A site connection to `peer` (route-based, PSK, not initiating: nothing answers there)
/// for the prefix `space`.
fn site_connection(name: &str, peer: Ipv4Addr, space: Ipv4Cidr) -> GhConnection {
    GhConnection {
        name: name.to_owned(),
        kind: "site-to-site",
        remote_gateway: peer,
        remote_address_space: vec![space],
        remote_address_space_v6: Vec::new(),
        psk: Some(format!("admin api test key {name}: Qm4Xr8Tz2Wp6")),
        remote_id: None,
        policy_based: false,
        initiate: false,
        ike_proposals: None,
        esp_proposals: None,
        dpd: None,
        child_lifetime: None,
        ike_lifetime: None,
    }
}

/// `ping -n -O -i 0.2 -W 1 ADDR` in the background until [`PingRun::finish`].
struct PingRun {
    proc: Proc,
    what: String,
}

/// What a [`PingRun`] saw.
#[derive(Debug)]
struct PingResult {
    sent: u32,
    received: u32,
    /// Sequence numbers ping reported unanswered that were never answered later.
    lost: Vec<u32>,
}

impl PingRun {
    fn start(ns: &Netns, addr: Ipv4Addr, log: &Path, what: &str) -> Result<PingRun> {
        let proc = ns.spawn(
            "ping",
            ["-n", "-O", "-i", "0.2", "-W", "1", &addr.to_string()],
            log,
        )?;
        Ok(PingRun {
            proc,
            what: what.to_owned(),
        })
    }

    /// SIGINT (ping prints its summary and flushes its log; SIGTERM would lose both), then
    /// the counts.
    fn finish(self) -> Result<PingResult> {
        let _ = Command::new("kill")
            .args(["-INT", &self.proc.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.proc.is_running() {
            ensure!(
                Instant::now() < deadline,
                "{}: ping did not stop on SIGINT",
                self.what
            );
            thread::sleep(Duration::from_millis(50));
        }
        let out = self.proc.log_contents();
        let (sent, received) = parse_ping_summary(&out)
            .with_context(|| format!("{}: no ping summary in:\n{out}", self.what))?;
        let seq = |l: &str| {
            l.split("icmp_seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()
        };
        let answered: Vec<u32> = out
            .lines()
            .filter(|l| l.contains(" bytes from "))
            .filter_map(seq)
            .collect();
        let mut lost: Vec<u32> = out
            .lines()
            .filter(|l| l.contains("no answer yet"))
            .filter_map(seq)
            .filter(|s| !answered.contains(s))
            .collect();
        lost.dedup();
        Ok(PingResult {
            sent,
            received,
            lost,
        })
    }
}

impl PingResult {
    /// Fails unless the run lost at most [`MAX_LOSS`] pings: by ping's own report of
    /// unanswered ones, and by its summary (which may count one more: the ping in flight
    /// at SIGINT).
    fn check_kept_pinging(&self, during: &str) -> Result<()> {
        ensure!(
            self.received > 0
                && self.lost.len() <= MAX_LOSS
                && self.sent.saturating_sub(self.received) as usize <= MAX_LOSS + 1,
            "carol lost pings {during}: {} of {} answered, unanswered icmp_seq {:?} (at most \
             {MAX_LOSS} allowed)",
            self.received,
            self.sent,
            self.lost
        );
        Ok(())
    }
}

// ---- The OpenAPI subset validator ----

/// The keywords the validator understands; a schema with any other fails validation, so
/// the document cannot grow past what the test checks unnoticed.
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "additionalProperties",
    "minimum",
    "maximum",
    "description",
    "format",
    "default",
];

/// The OpenAPI document, for looking up schemas.
struct ApiDoc {
    doc: Value,
}

impl ApiDoc {
    fn load() -> Result<ApiDoc> {
        Ok(ApiDoc {
            doc: serde_json::from_str(OPENAPI).context("docs/admin-api.json is not JSON")?,
        })
    }

    fn operation(&self, path: &str, method: &str) -> Result<&Value> {
        self.doc["paths"][path]
            .get(method)
            .with_context(|| format!("docs/admin-api.json has no {method} {path}"))
    }

    /// The JSON schema of `method path`'s response `code`.
    fn response_schema(&self, path: &str, method: &str, code: u16) -> Result<&Value> {
        self.operation(path, method)?["responses"][code.to_string()]["content"]["application/json"]
            .get("schema")
            .with_context(|| {
                format!("docs/admin-api.json documents no JSON response {code} for {method} {path}")
            })
    }

    /// Every error in `v` against `schema`, one line each (empty: valid).
    fn validate(&self, schema: &Value, v: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, v, "$", &mut errors);
        errors
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(s) = schema.as_object() else {
            errors.push(format!("{at}: the schema is not an object: {schema}"));
            return;
        };
        for k in s.keys() {
            if !KEYWORDS.contains(&k.as_str()) {
                errors.push(format!("{at}: schema keyword {k:?} is not supported"));
            }
        }
        if let Some(r) = s.get("$ref") {
            let target = r
                .as_str()
                .and_then(|r| r.strip_prefix('#'))
                .filter(|p| p.starts_with("/components/schemas/"))
                .and_then(|p| self.doc.pointer(p));
            match target {
                Some(t) => self.check(t, v, at, errors),
                None => errors.push(format!("{at}: unresolvable $ref {r}")),
            }
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.iter().any(|t| has_type(v, t)) {
                errors.push(format!("{at}: {v} is not of type {t}"));
                return;
            }
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            errors.push(format!(
                "{at}: {v} is not one of {}",
                Value::from(allowed.clone())
            ));
        }
        if let Some(n) = v.as_f64() {
            if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errors.push(format!("{at}: {n} < minimum {min}"));
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errors.push(format!("{at}: {n} > maximum {max}"));
            }
        }
        if let Some(obj) = v.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            for name in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !obj.contains_key(name) {
                    errors.push(format!("{at}: required property {name:?} is missing"));
                }
            }
            for (k, val) in obj {
                let here = format!("{at}.{k}");
                match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                    (Some(p), _) => self.check(p, val, &here, errors),
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(extra @ Value::Object(_))) => self.check(extra, val, &here, errors),
                    // Not documented: the document is behind the API (or the API leaks).
                    (None, _) if props.is_some() => {
                        errors.push(format!("{here}: property not in the document"));
                    }
                    (None, _) => {}
                }
            }
        }
        if let (Some(items), Some(list)) = (s.get("items"), v.as_array()) {
            for (i, item) in list.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"), errors);
            }
        }
    }

    /// Validates `body` (JSON text) of `method path`'s response `code`; fails listing every
    /// error.
    fn check_response(&self, path: &str, method: &str, code: u16, body: &[u8]) -> Result<Value> {
        let schema = self.response_schema(path, method, code)?;
        let v: Value = serde_json::from_slice(body).with_context(|| {
            format!(
                "{method} {path} ({code}): body is not JSON: {}",
                String::from_utf8_lossy(body)
            )
        })?;
        let errors = self.validate(schema, &v);
        ensure!(
            errors.is_empty(),
            "{method} {path} ({code}) does not match docs/admin-api.json:\n- {}\nbody: {v}",
            errors.join("\n- ")
        );
        Ok(v)
    }
}

/// Whether `v` is of JSON-schema type `t`.
fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

// ---- Sessions, metrics, capture ----

/// The four traffic counters of one session.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Traffic([u64; 4]);

const COUNTERS: [&str; 4] = ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"];

/// The session of `client` in a sessions list.
fn session<'a>(list: &'a [Value], client: &str) -> Option<&'a Value> {
    list.iter().find(|s| s["client"] == client)
}

fn traffic(s: &Value) -> Result<Traffic> {
    let mut t = [0; 4];
    for (slot, name) in t.iter_mut().zip(COUNTERS) {
        *slot = s[name]
            .as_u64()
            .with_context(|| format!("session has no counter {name}: {s}"))?;
    }
    Ok(Traffic(t))
}

/// Checks that `client`'s session is in both reads with the protocol and address
/// expected, and that all its counters grew.
fn check_growth(
    source: &str,
    first: &[Value],
    second: &[Value],
    client: &str,
    protocol: &str,
    address: Ipv4Addr,
) -> Result<()> {
    let mut t = Vec::new();
    for list in [first, second] {
        let s = session(list, client)
            .with_context(|| format!("{source} does not list {client}: {list:?}"))?;
        ensure!(
            s["protocol"] == protocol && s["virtual_address"] == address.to_string(),
            "{source}: {client} should be {protocol} with address {address}: {s}"
        );
        t.push(traffic(s)?);
    }
    let grew = t[0].0.iter().zip(&t[1].0).all(|(a, b)| b > a);
    eprintln!("{source}: {client} {:?} -> {:?}", t[0], t[1]);
    ensure!(
        grew,
        "{source}: the counters {COUNTERS:?} of {client} (pinging) did not all grow between \
         two reads 2 s apart: {:?} -> {:?}",
        t[0],
        t[1]
    );
    Ok(())
}

/// Sums of a Prometheus text page's samples by metric name, and the names with a TYPE line.
fn parse_metrics(page: &str) -> (BTreeMap<String, f64>, Vec<String>) {
    let mut sums = BTreeMap::new();
    let mut typed = Vec::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.extend(rest.split_whitespace().next().map(str::to_owned));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *sums.entry(line[..name_end].to_owned()).or_insert(0.0) += value;
    }
    (sums, typed)
}

/// Checks one metrics page: the three families are there, handshakes >= 3. Returns the
/// sum of gatehouse_bytes_total.
fn check_metrics(source: &str, page: &str) -> Result<f64> {
    let (sums, typed) = parse_metrics(page);
    for family in [
        "gatehouse_handshakes_total",
        "gatehouse_bytes_total",
        "gatehouse_drops_total",
    ] {
        ensure!(
            typed.iter().any(|t| t == family),
            "{source}: no `# TYPE {family}` line:\n{page}"
        );
    }
    let handshakes = sums
        .get("gatehouse_handshakes_total")
        .copied()
        .unwrap_or(0.0);
    ensure!(
        handshakes >= 3.0,
        "{source}: gatehouse_handshakes_total sums to {handshakes}, not >= 3 (alice, carol \
         and dave connected):\n{page}"
    );
    let bytes = sums.get("gatehouse_bytes_total").copied().unwrap_or(0.0);
    eprintln!(
        "{source}: handshakes {handshakes}, bytes {bytes}, drops {}",
        sums.get("gatehouse_drops_total").copied().unwrap_or(0.0)
    );
    Ok(bytes)
}

/// The ICMP packets in a pcap file, as tshark reads them: (source, destination, ICMP type).
fn tshark_icmp(file: &Path) -> Result<Vec<(String, String, u8)>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-Y", "icmp", "-T", "fields", "-e", "ip.src", "-e", "ip.dst"])
        .args(["-e", "icmp.type"]);
    let out = run_with_timeout(cmd, CMD_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "tshark -r {} failed ({}): {}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.split(',').next()?.parse().ok()?,
            ))
        })
        .collect())
}

/// In tshark's ICMP packets: echo requests from `client` to `lan`, replies back, and
/// packets that are not `client`'s at all.
fn icmp_of(
    packets: &[(String, String, u8)],
    client: Ipv4Addr,
    lan: Ipv4Addr,
) -> (usize, usize, usize) {
    let (client, lan) = (client.to_string(), lan.to_string());
    let count = |f: &dyn Fn(&(String, String, u8)) -> bool| packets.iter().filter(|p| f(p)).count();
    (
        count(&|(src, dst, t)| *src == client && *dst == lan && *t == 8),
        count(&|(src, dst, t)| *src == lan && *dst == client && *t == 0),
        count(&|(src, dst, _)| *src != client && *dst != client),
    )
}

/// The live API against docs/admin-api.json (with alice, carol and the connection `hq`).
fn check_against_document(s: &Setup, doc: &ApiDoc) -> Result<()> {
    for path in [
        "/v1/status",
        "/v1/sessions",
        "/v1/connections",
        "/v1/pool",
        "/v1/drops",
    ] {
        let (code, body) = s.api("GET", path)?;
        ensure!(
            code == 200,
            "GET {path}: {code} {}",
            String::from_utf8_lossy(&body)
        );
        doc.check_response(path, "get", 200, &body)?;
    }
    let ctl_status = s.ctl(&["--json", "status"])?;
    doc.check_response("/v1/status", "get", 200, ctl_status.as_bytes())
        .context("`ctl --json status`")?;
    let connections = s.api_json("/v1/connections")?;
    ensure!(
        connections
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["name"] == "hq"),
        "GET /v1/connections should list the connection hq: {connections}"
    );
    let pool = s.api_json("/v1/pool")?;
    ensure!(
        pool["cidr"] == s.topo.vpn_pool.to_string() && pool["leased"].as_u64() >= Some(2),
        "GET /v1/pool: {pool} (the pool is {}, two clients lease from it)",
        s.topo.vpn_pool
    );
    let missing = format!("/v1/sessions/{NOBODY}/disconnect");
    let (code, body) = s.api("POST", &missing)?;
    ensure!(
        code == 404,
        "POST {missing}: {code}, not 404: {}",
        String::from_utf8_lossy(&body)
    );
    doc.check_response("/v1/sessions/{client}/disconnect", "post", 404, &body)?;
    // The capture's documented errors: an unknown tunnel, a length out of range.
    for (query, want) in [
        (format!("tunnel={NOBODY}&seconds=1"), 404),
        ("seconds=0".into(), 400),
    ] {
        let path = format!("/v1/capture?{query}");
        let (code, body) = s.api("GET", &path)?;
        ensure!(
            code == want,
            "GET {path}: {code}, not {want}: {}",
            String::from_utf8_lossy(&body)
        );
        doc.check_response("/v1/capture", "get", code, &body)?;
    }
    let (_, served) = s.api("GET", "/openapi.json")?;
    ensure!(
        serde_json::from_slice::<Value>(&served).ok() == Some(doc.doc.clone()),
        "GET /openapi.json is not docs/admin-api.json"
    );
    // Every documented path answers with a documented status (a router's 404/405 is not).
    let paths = doc.doc["paths"]
        .as_object()
        .context("the document has no paths")?;
    for (template, ops) in paths {
        let ops = ops.as_object().context("a path item is not an object")?;
        for (method, op) in ops {
            let mut path = template
                .replace("{client}", NOBODY)
                .replace("{name}", NOBODY);
            if template == "/v1/capture" {
                path.push_str("?seconds=1");
            }
            let (code, body) = s.api(&method.to_uppercase(), &path)?;
            let documented = op["responses"].get(code.to_string());
            ensure!(
                documented.is_some(),
                "{} {path} answered {code}, which docs/admin-api.json does not document for it: {}",
                method.to_uppercase(),
                String::from_utf8_lossy(&body)
            );
            if documented
                .and_then(|r| r["content"].get("application/json"))
                .is_some()
            {
                doc.check_response(template, method, code, &body)?;
            }
            eprintln!("{} {path}: {code}", method.to_uppercase());
        }
    }
    Ok(())
}

/// `ctl metrics` and the metrics listener, twice while carol pings: the families are
/// there and the byte counters grow.
fn check_metrics_grow(s: &Setup) -> Result<()> {
    let scrape_listener = || -> Result<String> {
        let url = format!("http://{METRICS_ADDR}/metrics");
        s.topo
            .gateway
            .exec_ok("curl", ["-sS", "--fail", "--max-time", "10", url.as_str()])
    };
    let ctl_bytes_1 = check_metrics("ctl metrics", &s.ctl(&["metrics"])?)?;
    let listener_bytes_1 = check_metrics(METRICS_ADDR, &scrape_listener()?)?;
    thread::sleep(Duration::from_secs(1));
    let ctl_bytes_2 = check_metrics("ctl metrics", &s.ctl(&["metrics"])?)?;
    let listener_bytes_2 = check_metrics(METRICS_ADDR, &scrape_listener()?)?;
    ensure!(
        ctl_bytes_2 > ctl_bytes_1 && listener_bytes_2 > listener_bytes_1,
        "gatehouse_bytes_total did not grow while carol pinged: ctl metrics {ctl_bytes_1} -> \
         {ctl_bytes_2}, {METRICS_ADDR} {listener_bytes_1} -> {listener_bytes_2}"
    );
    Ok(())
}

#[test]
fn admin_api_with_live_clients() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("ad", 210, 4)?;
    let doc = ApiDoc::load()?;
    let lan = s.topo.lan_host;
    let x = s.topo.subnet_index;
    // Metrics on their own listener; one site connection from the start (the reload adds
    // a second one). Peers: clients 2 and 3's underlay addresses (no IKE daemon there).
    s.gw_dir
        .set("admin.metrics_listen", &toml_str(METRICS_ADDR))?;
    add_connections(
        &s.gw_dir,
        &[site_connection(
            "hq",
            s.topo.client(2).addr,
            Ipv4Cidr::new(Ipv4Addr::new(10, 252, x, 0), 24),
        )],
    )?;
    let gw = Gatehoused::start(&s.topo.gateway, &s.gw_dir, &s.path("gatehoused.log"))?;

    // A (client 0): stock OpenVPN client over UDP. S (client 1): charon-cmd.
    let profile = s.gw_dir.client_profile(
        "alice",
        s.topo.client(0).gateway_addr,
        &s.path("alice.ovpn"),
    )?;
    let a = spawn_stock_client(
        s.ns(0),
        &profile,
        "tun-a",
        &["--proto", "udp"],
        &s.path("openvpn-alice.log"),
    )?;
    let (cert, key) = s.rsa_client("carol")?;
    let mut cmd_config = CharonCmdConfig::new(
        s.topo.client(1).gateway_addr,
        "CN=carol",
        &s.gw_dir.ca_cert(),
        &cert,
        &key,
    );
    // The gateway's certificate names its public address (client 0's gateway address).
    cmd_config.remote_identity = Some(s.topo.client(0).gateway_addr.to_string());
    let cmd = CharonCmd::start(s.ns(1), &s.path("charon-cmd-carol"), &cmd_config)
        .with_context(|| format!("gatehoused log:\n{}", gw.log_tail(25)))?;
    let logs = || {
        format!(
            "gatehoused log {}:\n{}\nA (alice) log:\n{}\nS (carol) log:\n{}",
            gw.proc().log_path().display(),
            gw.log_tail(30),
            a.log_tail(12),
            cmd.log_tail(12)
        )
    };
    wait_client_up(&a, &gw, 1, UP_TIMEOUT).with_context(logs)?;
    let alice_addr = gw
        .wait_connected("alice", Duration::from_secs(5))
        .with_context(logs)?
        .address()
        .context("no address in alice's `client connected`")?;
    let carol_addr = cmd
        .virtual_ip()
        .context("charon-cmd logged no virtual IP")?;
    for i in 0..2 {
        wait_ping(s.ns(i), lan, Duration::from_secs(10)).with_context(logs)?;
    }
    eprintln!(
        "alice ({alice_addr}) and carol ({carol_addr}) up {:.1} s into the test",
        started.elapsed().as_secs_f64()
    );

    // 1. Both ping; the session list of ctl and of the API, twice.
    let a_ping = PingRun::start(s.ns(0), lan, &s.path("ping-alice.log"), "A (alice)")?;
    let mut s_ping = PingRun::start(s.ns(1), lan, &s.path("ping-carol-1.log"), "S (carol)")?;
    thread::sleep(Duration::from_millis(600));
    let ctl_1 = s.ctl_sessions().with_context(logs)?;
    let api_1 = s.api_json("/v1/sessions")?;
    thread::sleep(Duration::from_secs(2));
    let ctl_2 = s.ctl_sessions()?;
    let api_2 = s.api_json("/v1/sessions")?;
    let api_1 = api_1.as_array().cloned().unwrap_or_default();
    let api_2 = api_2.as_array().cloned().unwrap_or_default();
    for (source, first, second) in [
        ("ctl sessions --json", &ctl_1, &ctl_2),
        ("GET /v1/sessions", &api_1, &api_2),
    ] {
        ensure!(
            second.len() == 2,
            "{source} should list exactly alice and carol: {second:?}"
        );
        check_growth(source, first, second, "alice", "openvpn-udp", alice_addr)?;
        check_growth(source, first, second, "carol", "ikev2", carol_addr)?;
    }
    let table = s.ctl(&["sessions"])?;
    ensure!(
        table.contains("alice") && table.contains("carol") && table.contains("CLIENT"),
        "`ctl sessions` table lists not both:\n{table}"
    );

    // 2. The live API against the document.
    check_against_document(&s, &doc).with_context(logs)?;

    // 3. Revoke alice while carol pings.
    let s_ping_1 = std::mem::replace(
        &mut s_ping,
        PingRun::start(s.ns(1), lan, &s.path("ping-carol-2.log"), "S (carol)")?,
    );
    let p1 = s_ping_1.finish()?;
    eprintln!("carol while the counters were read: {p1:?}");
    thread::sleep(Duration::from_secs(1));
    let revoked = s.ctl(&["revoke", "alice"]).with_context(logs)?;
    let revoked_at = Instant::now();
    eprintln!("ctl revoke alice: {}", revoked.trim());
    let mut gone = None;
    let mut told = None;
    while revoked_at.elapsed() < REVOKE_WINDOW && (gone.is_none() || told.is_none()) {
        if gone.is_none() && session(&s.ctl_sessions()?, "alice").is_none() {
            gone = Some(revoked_at.elapsed());
        }
        if told.is_none() && (a.log_contents().contains("AUTH_FAILED") || !a.is_running()) {
            told = Some(revoked_at.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        gone.is_some(),
        "alice is still in `ctl sessions` {REVOKE_WINDOW:?} after `ctl revoke alice`\n{}",
        logs()
    );
    ensure!(
        told.is_some(),
        "alice's client neither logged AUTH_FAILED nor exited within {REVOKE_WINDOW:?} of \
         `ctl revoke alice`\n{}",
        logs()
    );
    eprintln!(
        "alice gone from ctl sessions after {:?}, her client told after {:?}",
        gone.unwrap_or_default(),
        told.unwrap_or_default()
    );
    let after = s.ctl_sessions()?;
    ensure!(
        session(&after, "carol").is_some(),
        "carol's session ended with alice's: {after:?}"
    );
    // carol pings on through the whole window; alice's tunnel carries nothing after it.
    if let Some(rest) = REVOKE_WINDOW.checked_sub(revoked_at.elapsed()) {
        thread::sleep(rest);
    }
    drop(a_ping);
    ensure!(
        !ping(s.ns(0), lan, 3, Duration::from_secs(2)),
        "alice's tunnel still carries pings {REVOKE_WINDOW:?} after `ctl revoke alice`\n{}",
        logs()
    );
    let p2 = std::mem::replace(
        &mut s_ping,
        PingRun::start(s.ns(1), lan, &s.path("ping-carol-3.log"), "S (carol)")?,
    )
    .finish()?;
    eprintln!("carol across the revocation: {p2:?}");
    p2.check_kept_pinging("while alice was revoked")
        .with_context(logs)?;

    // 4. Reload: new DNS and a second connection; then an invalid file and SIGHUP.
    thread::sleep(Duration::from_millis(600));
    let dns = Ipv4Addr::new(10, 251, x, 53);
    s.gw_dir
        .set("dns", &format!("[{}]", toml_str(&dns.to_string())))?;
    add_connections(
        &s.gw_dir,
        &[site_connection(
            "branch",
            s.topo.client(3).addr,
            Ipv4Cidr::new(Ipv4Addr::new(10, 253, x, 0), 24),
        )],
    )?;
    let good_config = s.gw_dir.config_text()?;
    let reloaded = s.ctl(&["reload"]).with_context(logs)?;
    eprintln!("ctl reload:\n{}", reloaded.trim_end());
    ensure!(
        reloaded.contains("dns") && reloaded.contains("connection added: branch"),
        "`ctl reload` should list the dns change and `connection added: branch`:\n{reloaded}"
    );
    let connections = s.api_json("/v1/connections")?;
    let names: Vec<&str> = connections
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    ensure!(
        names.contains(&"hq") && names.contains(&"branch"),
        "GET /v1/connections after the reload: {connections}"
    );
    doc.check_response(
        "/v1/connections",
        "get",
        200,
        connections.to_string().as_bytes(),
    )?;
    fs::write(
        s.gw_dir.config_path(),
        format!("{good_config}\n[[connection]]\nname = \n"),
    )?;
    let _ = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status();
    let hup_at = Instant::now();
    while !gw
        .log()
        .lines()
        .any(|l| l.contains("SIGHUP") && l.contains("not reloaded"))
    {
        ensure!(
            hup_at.elapsed() < Duration::from_secs(5) && gw.is_running(),
            "gatehoused logged no `not reloaded` within 5 s of SIGHUP with an invalid \
             gateway.toml\n{}",
            logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{}",
        gw.log()
            .lines()
            .rfind(|l| l.contains("not reloaded"))
            .unwrap_or_default()
    );
    let still = s.ctl_sessions().with_context(logs)?;
    ensure!(
        gw.is_running() && session(&still, "carol").is_some(),
        "after the refused SIGHUP reload the gateway should still serve carol: {still:?}\n{}",
        logs()
    );
    let connections = s.api_json("/v1/connections")?;
    ensure!(
        connections.as_array().map(Vec::len) == Some(2),
        "the refused reload changed the connections: {connections}"
    );
    fs::write(s.gw_dir.config_path(), &good_config)?;
    let table = s.ctl(&["connections"])?;
    ensure!(
        table.contains("hq") && table.contains("branch"),
        "`ctl connections` should list hq and branch:\n{table}"
    );
    thread::sleep(Duration::from_secs(1));
    let p3 = std::mem::replace(
        &mut s_ping,
        PingRun::start(s.ns(1), lan, &s.path("ping-carol-4.log"), "S (carol)")?,
    )
    .finish()?;
    eprintln!("carol across the reload and the refused SIGHUP: {p3:?}");
    p3.check_kept_pinging("across the reload and the refused SIGHUP")
        .with_context(logs)?;

    // The reload took effect: a client connecting now is given the new DNS server.
    // (dave, charon-cmd in alice's namespace, where her client has exited.)
    a.stop();
    let (cert, key) = s.rsa_client("dave")?;
    let mut dave_config = cmd_config.clone();
    dave_config.host = s.topo.client(0).gateway_addr;
    dave_config.identity = "CN=dave".into();
    dave_config.cert = cert;
    dave_config.rsa_key = key;
    let dave =
        CharonCmd::start(s.ns(0), &s.path("charon-cmd-dave"), &dave_config).with_context(logs)?;
    let resolv = dave.resolv_conf();
    // strongSwan writes `nameserver A.B.C.D   # by strongSwan`.
    ensure!(
        resolv.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("nameserver") && w.next() == Some(dns.to_string().as_str())
        }),
        "a client connecting after the reload was not given the new DNS server {dns}: \
         {resolv:?}\n{}",
        logs()
    );
    eprintln!("dave, connected after the reload, got nameserver {dns}");

    // 5. Metrics: ctl and the listener, twice.
    check_metrics_grow(&s)?;

    // 6. A capture of carol's tunnel while she pings - and dave too, whose packets the
    // capture must leave out.
    let dave_addr = dave
        .virtual_ip()
        .context("charon-cmd (dave) logged no virtual IP")?;
    let dave_ping = PingRun::start(s.ns(0), lan, &s.path("ping-dave.log"), "dave")?;
    let pcap = s.path("carol.pcap");
    let capture_started = Instant::now();
    s.ctl(&[
        "capture",
        "--tunnel",
        "carol",
        "--seconds",
        "3",
        "-w",
        &pcap.display().to_string(),
    ])
    .with_context(logs)?;
    eprintln!(
        "ctl capture took {:.1} s, wrote {} bytes",
        capture_started.elapsed().as_secs_f64(),
        fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0)
    );
    let packets = tshark_icmp(&pcap)?;
    let (requests, replies, theirs) = icmp_of(&packets, carol_addr, lan);
    eprintln!(
        "tshark: {} ICMP packets, {requests} echo requests from {carol_addr}, {replies} \
         replies, {theirs} of others",
        packets.len()
    );
    ensure!(
        requests >= 5 && replies >= 5,
        "the 3 s capture of carol's tunnel should hold ~15 echo requests from {carol_addr} \
         and their replies; tshark read {requests} and {replies}: {packets:?}"
    );
    let dave_result = dave_ping.finish()?;
    ensure!(
        dave_result.received >= 5 && theirs == 0,
        "the capture of carol's tunnel holds {theirs} ICMP packets that are not hers (dave, \
         {dave_addr}, pinged too: {dave_result:?}): {packets:?}"
    );
    let p4 = s_ping.finish()?;
    eprintln!("carol during metrics and capture: {p4:?}; dave during the capture: {dave_result:?}");
    ensure!(
        gw.is_running() && cmd.is_running(),
        "gatehoused or charon-cmd died\n{}",
        logs()
    );
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The validator itself: it must reject what the live checks rely on it to reject.
#[test]
fn the_schema_validator_rejects_what_the_document_forbids() -> Result<()> {
    let doc = ApiDoc::load()?;
    let schema = doc.response_schema("/v1/sessions", "get", 200)?;
    let good = serde_json::json!([{
        "id": 1, "client": "alice", "protocol": "ikev2", "virtual_address": null,
        "real_address": "10.0.0.2:500", "since": 1, "connected_secs": 3,
        "last_handshake_secs": 3, "cipher": "AES-256-GCM", "rx_bytes": 1, "tx_bytes": 2,
        "rx_packets": 1, "tx_packets": 1, "worker": 0
    }]);
    let errors = doc.validate(schema, &good);
    assert!(errors.is_empty(), "{errors:?}");
    // (what, field, new value; None: the field removed)
    let cases = [
        ("wrong type", "rx_bytes", Some(Value::from("1"))),
        ("null where not allowed", "cipher", Some(Value::Null)),
        ("not in the enum", "protocol", Some(Value::from("pptp"))),
        ("below the minimum", "worker", Some(Value::from(-1))),
        ("undocumented field", "secret", Some(Value::from(1))),
        ("missing required", "since", None),
    ];
    for (what, field, value) in cases {
        let mut v = good.clone();
        let session = v[0].as_object_mut().expect("an object");
        match value {
            Some(value) => session.insert(field.to_owned(), value),
            None => session.remove(field),
        };
        assert!(
            !doc.validate(schema, &v).is_empty(),
            "{what} ({field}) passed validation"
        );
    }
    // additionalProperties with a schema.
    let drops = doc.response_schema("/v1/drops", "get", 200)?;
    assert!(
        doc.validate(drops, &serde_json::json!({"ipv6": 3}))
            .is_empty()
    );
    assert!(
        !doc.validate(drops, &serde_json::json!({"ipv6": "x"}))
            .is_empty()
    );
    // An unknown keyword is an error, not silently ignored.
    let odd = serde_json::json!({"type": "string", "pattern": "^a"});
    assert!(!doc.validate(&odd, &"a".into()).is_empty());
    Ok(())
}
