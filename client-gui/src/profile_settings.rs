//! The worker's side of a profile's routing and auto-connect settings: write the profile,
//! then tell the client service (which keeps auto-connect profiles in memory only, so the app
//! hands them over again whenever it reaches the service).

use std::path::Path;
use std::sync::Arc;

use gatehouse_client::manager::ConnectRequest;
use gatehouse_client::profile_settings::{SettingsChange, trust};
use gatehouse_client::service::Request;
use gatehouse_client::trusted::{AutoConnect, NetworkId};
use gatehouse_client::{ProfileStore, StoredProfile};

use crate::worker::{blocking, request};

/// Where the app learns which network the computer is on (tests pass a fixed one).
#[derive(Clone)]
pub struct NetworkSource(pub Arc<dyn Fn() -> Option<NetworkId> + Send + Sync>);

impl std::fmt::Debug for NetworkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkSource")
    }
}

/// The network source of the real app: the default gateway and its MAC.
pub fn system_network() -> NetworkSource {
    NetworkSource(Arc::new(|| {
        let tun = gatehouse_client::manager::ManagerOptions::default().tun_name;
        gatehouse_client::platform::current_network(&tun)
    }))
}

/// Applies `change` to profile `name` and tells the service.
pub(crate) async fn update(
    store: &Arc<ProfileStore>,
    socket: &Path,
    name: String,
    change: SettingsChange,
) -> Result<(), String> {
    let s = store.clone();
    let updated = blocking(move || {
        s.update(&name, |p| change.apply(p))
            .map_err(|e| e.to_string())
    })
    .await?;
    tell_service(store, socket, updated).await
}

/// Trusts the current network for profile `name` and tells the service.
pub(crate) async fn trust_here(
    store: &Arc<ProfileStore>,
    socket: &Path,
    name: String,
    network: &NetworkSource,
) -> Result<(), String> {
    let network = network.clone();
    let Some(here) = blocking(move || Ok((network.0)())).await? else {
        return Err(
            "this computer has no default route through a gateway: no network to trust".into(),
        );
    };
    let s = store.clone();
    let updated = blocking(move || {
        s.update(&name, |p| trust(p, &here).map(drop))
            .map_err(|e| e.to_string())
    })
    .await?;
    tell_service(store, socket, updated).await
}

/// Hands every auto-connect profile to the service (it has just come up).
pub(crate) async fn arm_all(store: &Arc<ProfileStore>, socket: &Path) {
    let s = store.clone();
    let Ok(profiles) = blocking(move || s.list().map_err(|e| e.to_string())).await else {
        return;
    };
    for p in profiles {
        // Best effort: the next time the service comes up, the app tries again.
        if p.auto_connect == AutoConnect::Untrusted {
            let _ = tell_service(store, socket, p).await;
        }
    }
}

async fn tell_service(
    store: &Arc<ProfileStore>,
    socket: &Path,
    profile: StoredProfile,
) -> Result<(), String> {
    let key_pem = if profile.auto_connect == AutoConnect::Untrusted {
        let s = store.clone();
        let name = profile.name.clone();
        blocking(move || s.key_pem(&name).map_err(|e| e.to_string())).await?
    } else {
        String::new()
    };
    let req = ConnectRequest {
        profile,
        key_pem,
        protocol: None,
        kill_switch: false,
        allow_lan: false,
    };
    match request(
        socket,
        Request::AutoConnect {
            request: Box::new(req),
        },
    )
    .await
    {
        Ok(_) => Ok(()),
        // The profile is saved; the service hears of it when the app reaches it.
        Err(gatehouse_client::service::client::ServiceError::NotRunning(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
