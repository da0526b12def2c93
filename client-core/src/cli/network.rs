//! `gatehouse network trust|untrust|list`: the trusted networks of auto-connect, and telling
//! the client service about a profile's auto-connect settings.

use anyhow::{Result, bail};
use gatehouse_client::manager::{ConnectRequest, ManagerOptions};
use gatehouse_client::platform::current_network;
use gatehouse_client::profile_settings::{trust as trust_in, untrust as untrust_in};
use gatehouse_client::service::client::ServiceClient;
use gatehouse_client::service::{Request, socket_path};
use gatehouse_client::trusted::{AutoConnect, NetworkId};
use gatehouse_client::{ProfileStore, StoredProfile};

fn this_network() -> Result<NetworkId> {
    let tun = ManagerOptions::default().tun_name;
    match current_network(&tun) {
        Some(n) => Ok(n),
        None => bail!(
            "no network to trust: this host has no default route through a gateway (or the \
             platform cannot identify networks yet)"
        ),
    }
}

/// The profiles `gatehouse network trust|untrust` changes: the one named, else every profile
/// with auto-connect on.
fn chosen(store: &ProfileStore, profile: Option<&str>) -> Result<Vec<StoredProfile>> {
    if let Some(name) = profile {
        return Ok(vec![store.get(name)?]);
    }
    let auto: Vec<StoredProfile> = store
        .list()?
        .into_iter()
        .filter(|p| p.auto_connect == AutoConnect::Untrusted)
        .collect();
    if auto.is_empty() {
        bail!(
            "no profile auto-connects; name one with --profile NAME, or turn it on with \
             `gatehouse profile set NAME --auto-connect untrusted`"
        );
    }
    Ok(auto)
}

/// `gatehouse network trust [--profile NAME]`.
pub fn trust(profile: Option<&str>) -> Result<()> {
    let store = ProfileStore::open_default()?;
    let net = this_network()?;
    for p in chosen(&store, profile)? {
        let mut added = false;
        let updated = store.update(&p.name, |p| {
            added = trust_in(p, &net)?;
            Ok(())
        })?;
        if added {
            println!(
                "{}: trusted this network ({net}); no auto-connect here",
                p.name
            );
        } else {
            println!("{}: this network ({net}) was trusted already", p.name);
        }
        tell_service(&store, &updated);
    }
    Ok(())
}

/// `gatehouse network untrust [--profile NAME]`.
pub fn untrust(profile: Option<&str>) -> Result<()> {
    let store = ProfileStore::open_default()?;
    let net = this_network()?;
    for p in chosen(&store, profile)? {
        let mut removed = false;
        let updated = store.update(&p.name, |p| {
            removed = untrust_in(p, &net);
            Ok(())
        })?;
        let what = if removed {
            "no longer trusts"
        } else {
            "did not trust"
        };
        println!("{}: {what} this network ({net})", p.name);
        tell_service(&store, &updated);
    }
    Ok(())
}

/// `gatehouse network list`: this network, and each profile's trusted networks.
pub fn list() -> Result<()> {
    let tun = ManagerOptions::default().tun_name;
    let current = current_network(&tun);
    match &current {
        Some(n) => println!("this network: {n}"),
        None => println!("this network: none (no default route through a gateway)"),
    }
    let store = ProfileStore::open_default()?;
    for p in store.list()? {
        let here = match &current {
            Some(n) if n.is_trusted(&p.trusted_networks) => " (trusts this network)",
            _ => "",
        };
        println!("{}: auto-connect {}{here}", p.name, p.auto_connect);
        for t in &p.trusted_networks {
            println!("  trusted: {t}");
        }
    }
    Ok(())
}

/// Hands `profile`'s auto-connect settings to the client service (with the key it needs to
/// connect), when it runs. The service keeps them in memory: front ends send them again when
/// they start (the desktop app does), and `gatehouse profile set` when they change.
pub fn tell_service(store: &ProfileStore, profile: &StoredProfile) {
    let key_pem = if profile.auto_connect == AutoConnect::Untrusted {
        match store.key_pem(&profile.name) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("warning: the client service was not told: {e}");
                return;
            }
        }
    } else {
        String::new()
    };
    let request = Request::AutoConnect {
        request: Box::new(ConnectRequest {
            profile: profile.clone(),
            key_pem,
            protocol: None,
            kill_switch: false,
            allow_lan: false,
        }),
    };
    let sent = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let mut c = ServiceClient::connect(&socket_path()).await?;
                c.request(&request).await?;
                Ok::<_, anyhow::Error>(())
            })
        });
    match sent {
        Ok(()) if profile.auto_connect == AutoConnect::Untrusted => {
            println!(
                "the client service now auto-connects {} on untrusted networks",
                profile.name
            )
        }
        Ok(()) => {}
        Err(e) if profile.auto_connect == AutoConnect::Untrusted => eprintln!(
            "note: auto-connect starts when the client service hears of it ({e}); run this again \
             or open the desktop app once the service runs"
        ),
        Err(_) => {}
    }
}
