//! The admin API's view of an active-active cluster (docs/ha.md): `GET /v1/sessions`
//! (`?cluster=true`: every node's sessions, each with its node) and the shared
//! configuration (`GET`/`PUT /v1/cluster/config`).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::api::{Shared, error, session_list};
use crate::cluster::shared_config::{self, SharedConfig};
use crate::cluster::{MAX_NODES, cluster_sessions};

const NOT_IN_A_CLUSTER: &str = "this gateway is not in an active-active cluster: set `ha.mode = \"active-active\"` (docs/ha.md)";

/// `?cluster=true` on `GET /v1/sessions`.
#[derive(Deserialize)]
pub(super) struct SessionsQuery {
    cluster: Option<bool>,
}

/// This gateway's sessions, or with `?cluster=true` every node's (this node's live, the
/// others' as they published them within the last interval).
pub(super) async fn sessions(State(s): Shared, Query(q): Query<SessionsQuery>) -> Response {
    let mine = session_list(&s.gateway.snapshot().await);
    if q.cluster != Some(true) {
        return Json(mine).into_response();
    }
    let Some(view) = s.gateway.cluster().cloned() else {
        return error(StatusCode::BAD_REQUEST, NOT_IN_A_CLUSTER);
    };
    let prefix = view.key("sessions/");
    let raw = match view.call(move |e| e.list(&prefix, MAX_NODES)).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("etcd did not answer: {e:#}"),
            );
        }
    };
    let own = view.key(&format!("sessions/{}", view.node));
    let others = raw
        .into_iter()
        .filter(|(k, _)| *k != own)
        .map(|(k, kv)| (k, kv.value))
        .collect();
    let mut all: Vec<_> = mine
        .into_iter()
        .map(|mut x| {
            x.node = Some(view.node.clone());
            x
        })
        .collect();
    all.extend(cluster_sessions(others));
    Json(all).into_response()
}

/// The cluster's shared configuration (`{}` when none was set).
pub(super) async fn get_config(State(s): Shared) -> Response {
    let Some(view) = s.gateway.cluster().cloned() else {
        return error(StatusCode::BAD_REQUEST, NOT_IN_A_CLUSTER);
    };
    let k = view.key("config");
    match view.call(move |e| e.get(&k)).await {
        Ok(None) => Json(SharedConfig::default()).into_response(),
        Ok(Some(kv)) => match shared_config::parse_published(&kv.value) {
            Ok(p) => Json(p.config).into_response(),
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                format!("the configuration in etcd is refused: {e:#}"),
            ),
        },
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("etcd did not answer: {e:#}"),
        ),
    }
}

/// Checks the body against this gateway's configuration and puts it into etcd; every node
/// applies it within about an interval.
pub(super) async fn put_config(State(s): Shared, body: axum::body::Bytes) -> Response {
    if s.gateway.cluster().is_none() {
        return error(StatusCode::BAD_REQUEST, NOT_IN_A_CLUSTER);
    }
    let config: SharedConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "not a cluster configuration ({{\"address_space\": [..], \"dns\": [..], \"full_tunnel\": bool}}): {e}"
                ),
            );
        }
    };
    match s.gateway.set_cluster_config(config.clone()).await {
        Ok(()) => Json(config).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}
