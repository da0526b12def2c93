//! `gatehouse import`, `gatehouse profiles`, `gatehouse remove`.

use std::path::Path;

use gatehouse_client::{KeyLocation, KeyStore, ProfileStore, home_dir};

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
    let rows: Vec<[String; 4]> = profiles
        .iter()
        .map(|p| {
            let protocols: Vec<String> = p.protocols.iter().map(ToString::to_string).collect();
            let key = match &p.key_location {
                KeyLocation::Keyring => "OS keyring".to_string(),
                KeyLocation::File(path) => path.display().to_string(),
            };
            [p.name.clone(), p.gateway.clone(), protocols.join(","), key]
        })
        .collect();
    let header = ["NAME", "GATEWAY", "PROTOCOLS", "KEY"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        println!("{}", line.trim_end());
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
