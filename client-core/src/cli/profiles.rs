//! `gatehouse import`, `gatehouse profiles`, `gatehouse remove`, `gatehouse profile
//! show|set`.

use std::path::Path;

use gatehouse_client::profile_settings::SettingsChange;
use gatehouse_client::routing::ClientRouting;
use gatehouse_client::{KeyLocation, KeyStore, ProfileStore, StoredProfile, home_dir};

/// `gatehouse import FILE [--name N]`.
pub fn import(file: &Path, name: Option<&str>) -> anyhow::Result<()> {
    let store = ProfileStore::open_default()?;
    let imported = store.import(file, name)?;
    for warning in &imported.warnings {
        eprintln!("warning: {warning}");
    }
    let p = &imported.profile;
    println!("imported profile {} (gateway {})", p.name, p.gateway);
    if p.remotes.len() > 1 {
        let order = if p.remote_random {
            "in random order"
        } else {
            "in this order"
        };
        let servers: Vec<String> = p.remotes.iter().map(ToString::to_string).collect();
        println!("servers, tried {order}: {}", servers.join(", "));
    }
    if let Some(wrap) = &p.control_wrap {
        let mut what = wrap.kind.as_str().to_string();
        if let Some(d) = wrap.direction {
            what.push_str(&format!(", key-direction {d}"));
        }
        if let Some(d) = &wrap.digest {
            what.push_str(&format!(", auth {d}"));
        }
        println!("control channel: {what} (its key is kept with the private key)");
    }
    if p.redirect_gateway {
        println!("all traffic goes through the VPN (redirect-gateway)");
    }
    println!("{}", imported.key_note);
    println!("connect with `gatehouse connect {}`", p.name);
    Ok(())
}

/// `gatehouse profiles`.
pub fn list() -> anyhow::Result<()> {
    // Listing reads profile files only; don't make the user wait for the keyring to answer.
    let home = home_dir();
    let store = ProfileStore::open(&home, KeyStore::files(&home.join("keys")))?;
    let profiles = store.list()?;
    if profiles.is_empty() {
        println!("no profiles yet; import one with `gatehouse import FILE`");
        return Ok(());
    }
    let rows: Vec<[String; 6]> = profiles
        .iter()
        .map(|p| {
            let protocols: Vec<String> = p.protocols.iter().map(ToString::to_string).collect();
            let key = match &p.key_location {
                KeyLocation::Keyring => "OS keyring".to_string(),
                KeyLocation::File(path) => path.display().to_string(),
            };
            [
                p.name.clone(),
                p.gateway.clone(),
                protocols.join(","),
                routing_summary(p),
                p.auto_connect.to_string(),
                key,
            ]
        })
        .collect();
    let header = [
        "NAME",
        "GATEWAY",
        "PROTOCOLS",
        "ROUTING",
        "AUTO-CONNECT",
        "KEY",
    ]
    .map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:w$}  ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
    Ok(())
}

/// `gateway`, `full`, `split`, with `+N routes` when there are extra routes.
fn routing_summary(p: &StoredProfile) -> String {
    match p.extra_routes.len() {
        0 => p.routing.to_string(),
        1 => format!("{} +1 route", p.routing),
        n => format!("{} +{n} routes", p.routing),
    }
}

/// `gatehouse profile show NAME`.
pub fn show(name: &str) -> anyhow::Result<()> {
    let home = home_dir();
    let store = ProfileStore::open(&home, KeyStore::files(&home.join("keys")))?;
    let p = store.get(name)?;
    let protocols: Vec<String> = p.protocols.iter().map(ToString::to_string).collect();
    println!("name:             {}", p.name);
    println!("gateway:          {}", p.gateway);
    println!("protocols:        {}", protocols.join(", "));
    println!("key:              {}", p.key_location);
    let allowed = match p.client_routing {
        ClientRouting::User => "the user may choose",
        ClientRouting::Fixed => "fixed by the gateway (client_routing = \"fixed\")",
    };
    println!("routing:          {} ({allowed})", p.routing);
    let extra: Vec<String> = p.extra_routes.iter().map(ToString::to_string).collect();
    println!(
        "extra routes:     {}",
        if extra.is_empty() {
            "none".into()
        } else {
            extra.join(", ")
        }
    );
    println!("auto-connect:     {}", p.auto_connect);
    if p.trusted_networks.is_empty() {
        println!("trusted networks: none");
    } else {
        for (i, t) in p.trusted_networks.iter().enumerate() {
            let label = if i == 0 { "trusted networks:" } else { "" };
            println!("{label:17} {t}");
        }
    }
    Ok(())
}

/// `gatehouse profile set NAME [--routing R] [--clear-routes] [--route PREFIX]...
/// [--auto-connect A]`.
pub fn set(name: &str, change: &SettingsChange) -> anyhow::Result<()> {
    if *change == SettingsChange::default() {
        anyhow::bail!(
            "nothing to change; give --routing gateway|full|split, --route PREFIX, \
             --clear-routes or --auto-connect off|untrusted"
        );
    }
    let store = ProfileStore::open_default()?;
    let updated = store.update(name, |p| change.apply(p))?;
    println!(
        "{}: routing {}, auto-connect {}; applies from the next connect",
        updated.name,
        routing_summary(&updated),
        updated.auto_connect
    );
    if change.auto_connect.is_some() || !updated.trusted_networks.is_empty() {
        super::network::tell_service(&store, &updated);
    }
    Ok(())
}

/// `gatehouse remove NAME`.
pub fn remove(name: &str) -> anyhow::Result<()> {
    let store = ProfileStore::open_default()?;
    let removed = store.remove(name)?;
    println!(
        "removed profile {} and its private key ({})",
        removed.name, removed.key_location
    );
    Ok(())
}
