//! The admin API's routes (HTTP + JSON, `/v1/...`), the metrics page and the web console.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ipnet::Ipv4Net;
use serde::Deserialize;

use super::model::{
    ApiError, Connection, CrlStatus, Disconnected, Pool, SecurityAssociation, Session, Status,
};
use crate::gateway::{GatewayHandle, Snapshot};

/// What every handler gets.
pub struct AdminState {
    /// The running gateway.
    pub gateway: GatewayHandle,
    /// The bearer token (TCP listener only; None on the Unix socket).
    pub token: Option<String>,
}

pub(super) type Shared = State<Arc<AdminState>>;

/// The OpenAPI document of this API (checked against the live API by the tests).
pub const OPENAPI: &str = include_str!("../../../docs/admin-api.json");

/// Every route. `token`: require `Authorization: Bearer <token>` on `/v1` and `/metrics`.
pub fn router(gateway: GatewayHandle, token: Option<String>) -> axum::Router {
    let state = Arc::new(AdminState { gateway, token });
    axum::Router::new()
        .route("/v1/status", get(status))
        .route("/v1/sessions", get(super::cluster::sessions))
        .route(
            "/v1/cluster/config",
            get(super::cluster::get_config).put(super::cluster::put_config),
        )
        .route("/v1/sessions/{client}/disconnect", post(disconnect))
        .route("/v1/connections", get(connections))
        .route("/v1/pool", get(pool))
        .route("/v1/drops", get(drops))
        .route("/v1/certificates/{name}/revoke", post(revoke))
        .route("/v1/reload", post(reload))
        .route("/v1/handoff", post(handoff))
        .route("/v1/takeover", post(takeover))
        .route("/v1/capture", get(super::capture::capture))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::auth::require_token,
        ))
        .route("/openapi.json", get(openapi))
        .merge(super::console::routes())
        .with_state(state)
}

/// Only `/metrics`, without a token (the metrics listener).
pub fn metrics_router(gateway: GatewayHandle) -> axum::Router {
    let state = Arc::new(AdminState {
        gateway,
        token: None,
    });
    axum::Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A JSON error with `code`.
pub fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ApiError { error: msg.into() })).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn protocol_name(p: gatehouse_engine::gateway::Protocol) -> &'static str {
    use gatehouse_engine::gateway::Protocol;
    match p {
        Protocol::OpenVpnUdp => "openvpn-udp",
        Protocol::OpenVpnTcp => "openvpn-tcp",
        Protocol::Ikev2 => "ikev2",
        Protocol::Site => "site",
        Protocol::WireGuard => "wireguard",
        Protocol::Quic => "quic",
    }
}

/// The sessions of a snapshot, oldest first.
pub fn session_list(snap: &Snapshot) -> Vec<Session> {
    let now = unix_now();
    let mut out: Vec<Session> = snap
        .status
        .clients
        .iter()
        .zip(&snap.workers_of_clients)
        .map(|(c, w)| Session {
            id: c.tunnel,
            client: c.client.clone(),
            protocol: protocol_name(c.protocol).to_owned(),
            virtual_address: c.address.map(|a| a.to_string()),
            real_address: c.remote.to_string(),
            since: now.saturating_sub(c.connected_secs),
            connected_secs: c.connected_secs,
            last_handshake_secs: c.last_handshake_secs,
            cipher: c.cipher.clone(),
            rx_bytes: c.traffic.rx_bytes,
            tx_bytes: c.traffic.tx_bytes,
            rx_packets: c.traffic.rx_packets,
            tx_packets: c.traffic.tx_packets,
            worker: *w,
            node: None,
        })
        .collect();
    out.sort_by_key(|s| (s.since, s.id));
    out
}

/// The connections of a snapshot.
pub fn connection_list(snap: &Snapshot) -> Vec<Connection> {
    snap.status
        .sites
        .iter()
        .map(|s| Connection {
            name: s.name.clone(),
            kind: s.kind.clone(),
            remote: s.remote.clone(),
            state: s.state.clone(),
            detail: s.detail.clone(),
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            sas: s
                .sas
                .iter()
                .map(|a| SecurityAssociation {
                    id: a.tunnel,
                    ike_spis: a.ike_spis.clone(),
                    role: a.role.to_owned(),
                    active: a.active,
                    established_secs: a.established_secs,
                    last_handshake_secs: a.last_handshake_secs,
                    cipher: a.cipher.clone(),
                    rx_bytes: a.traffic.rx_bytes,
                    tx_bytes: a.traffic.tx_bytes,
                })
                .collect(),
        })
        .collect()
}

/// Addresses of `pool` clients can lease: not the network, broadcast or gateway address.
pub fn pool_size(pool: Ipv4Net) -> u64 {
    (1u64 << (32 - u32::from(pool.prefix_len()))).saturating_sub(3)
}

fn pool_of(gw: &GatewayHandle, snap: &Snapshot) -> Pool {
    let cidr = gw.facts().pool;
    Pool {
        cidr: cidr.to_string(),
        size: pool_size(cidr),
        leased: snap.leased,
    }
}

/// The CRL's age and freshness, read from its file.
pub fn crl_status(path: &std::path::Path) -> CrlStatus {
    let info = std::fs::read(path)
        .ok()
        .and_then(|pem| crate::gateway::crl_facts(&pem).ok());
    let now = time::OffsetDateTime::now_utc();
    CrlStatus {
        path: path.display().to_string(),
        age_secs: info
            .as_ref()
            .map(|i| (now - i.this_update).whole_seconds().max(0) as u64),
        next_update_secs: info
            .as_ref()
            .and_then(|i| i.next_update)
            .map(|t| (t - now).whole_seconds()),
        revoked: info.map_or(0, |i| i.revoked),
    }
}

async fn status(State(s): Shared) -> Json<Status> {
    let snap = s.gateway.snapshot().await;
    let facts = s.gateway.facts();
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: facts.started_at.elapsed().as_secs(),
        workers: facts.workers,
        sessions: snap.status.clients.len(),
        tunnels: snap.status.tunnels,
        tcp_connections: snap.tcp_connections,
        listeners: facts.listeners.clone(),
        pool: pool_of(&s.gateway, &snap),
        drops: snap.drops.by_label(),
        crl: crl_status(&facts.crl),
        connections: connection_list(&snap),
    })
}

async fn connections(State(s): Shared) -> Json<Vec<Connection>> {
    Json(connection_list(&s.gateway.snapshot().await))
}

async fn pool(State(s): Shared) -> Json<Pool> {
    let snap = s.gateway.snapshot().await;
    Json(pool_of(&s.gateway, &snap))
}

async fn drops(State(s): Shared) -> Json<std::collections::BTreeMap<String, u64>> {
    Json(s.gateway.snapshot().await.drops.by_label())
}

async fn disconnect(State(s): Shared, Path(client): Path<String>) -> Response {
    let n = s.gateway.disconnect(&client).await;
    if n == 0 {
        return error(
            StatusCode::NOT_FOUND,
            format!("no session of {client:?} is connected (`gatehoused ctl sessions` lists them)"),
        );
    }
    Json(Disconnected {
        client,
        sessions_ended: n,
    })
    .into_response()
}

async fn revoke(State(s): Shared, Path(name): Path<String>) -> Response {
    match s.gateway.revoke(&name).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn reload(State(s): Shared) -> Response {
    match s.gateway.reload().await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `?confirm=true` on `POST /v1/handoff`.
#[derive(Deserialize)]
struct HandoffQuery {
    confirm: Option<bool>,
}

/// Starts a handoff to the binary on disk (as SIGUSR2 does); answers before the gateway
/// stops its workers. Asks for `?confirm=true`: it restarts the gateway.
async fn handoff(
    State(_): Shared,
    axum::extract::Query(q): axum::extract::Query<HandoffQuery>,
) -> Response {
    if q.confirm != Some(true) {
        return error(
            StatusCode::BAD_REQUEST,
            "a handoff restarts the gateway into the binary on disk: POST /v1/handoff?confirm=true"
                .to_owned(),
        );
    }
    match crate::gateway::start_handoff() {
        Ok(binary) => (
            StatusCode::ACCEPTED,
            Json(super::model::HandoffStarted {
                binary: binary.display().to_string(),
            }),
        )
            .into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

/// Makes this gateway the active one of its active-standby pair (docs/ha.md).
async fn takeover(State(s): Shared) -> Response {
    match s.gateway.takeover().await {
        Ok(t) => Json(t).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn metrics(State(s): Shared) -> Response {
    let snap = s.gateway.snapshot().await;
    let facts = s.gateway.facts();
    let text = super::metrics::render(&snap, &facts, &crl_status(&facts.crl));
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    (h, text).into_response()
}

async fn openapi() -> Response {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (h, OPENAPI).into_response()
}

/// `GET /v1/capture` parameters.
#[derive(Debug, Deserialize)]
pub struct CaptureParams {
    /// A client's certificate name or a connection's name; absent: every tunnel.
    pub tunnel: Option<String>,
    /// How long, 1-3600 (default 10).
    pub seconds: Option<u64>,
}

/// The prefixes whose packets belong to tunnel `name`: a client's virtual addresses, or a
/// site connection's address space.
pub async fn tunnel_prefixes(gw: &GatewayHandle, name: &str) -> Option<Vec<Ipv4Net>> {
    let snap = gw.snapshot().await;
    let mine: Vec<Ipv4Net> = snap
        .status
        .clients
        .iter()
        .filter(|c| c.client == name)
        .filter_map(|c| c.address.map(Ipv4Net::from))
        .collect();
    if !mine.is_empty() {
        return Some(mine);
    }
    gw.site_prefixes(name)
}

/// How long a capture runs.
pub fn capture_length(p: &CaptureParams) -> Result<Duration, String> {
    match p.seconds.unwrap_or(10) {
        n @ 1..=3600 => Ok(Duration::from_secs(n)),
        n => Err(format!("seconds={n} is out of range 1-3600")),
    }
}

/// The capture handler's query extractor.
pub use axum::extract::Query as CaptureQuery;
