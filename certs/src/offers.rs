//! What the gateway serves, for profiles: the PKI folder does not know, but the
//! `gateway.toml` beside it (`gatehoused init --data-dir DIR` writes `DIR/gateway.toml` and
//! `DIR/pki`) does. Only QUIC is read from it: it is off by default, so a profile may offer
//! it only when the gateway serves it. The other protocols keep their fixed defaults.

use std::path::Path;

use crate::profile::ClientRouting;

/// The UDP port of the gateway's QUIC listener, when the `gateway.toml` next to `pki_dir`
/// uses this PKI folder and has `[quic] enabled = true` (port: `[quic] port`, default 443).
pub fn quic_port(pki_dir: &Path) -> Option<u16> {
    let cfg = gateway_toml(pki_dir)?;
    let quic = cfg.get("quic")?.as_table()?;
    if quic.get("enabled").and_then(toml::Value::as_bool) != Some(true) {
        return None;
    }
    match quic.get("port") {
        None => Some(443),
        Some(p) => p
            .as_integer()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0),
    }
}

/// `client_routing` of the `gateway.toml` next to `pki_dir` (that uses this PKI folder):
/// `fixed` only when it says so; anything else, or no such file, leaves the choice to users.
pub fn client_routing(pki_dir: &Path) -> ClientRouting {
    match gateway_toml(pki_dir)
        .as_ref()
        .and_then(|cfg| cfg.get("client_routing"))
        .and_then(toml::Value::as_str)
    {
        Some("fixed") => ClientRouting::Fixed,
        _ => ClientRouting::User,
    }
}

/// The `gateway.toml` beside `pki_dir`, if it uses this PKI folder.
fn gateway_toml(pki_dir: &Path) -> Option<toml::Table> {
    let pki = pki_dir.canonicalize().ok()?;
    let dir = pki.parent()?;
    let text = std::fs::read_to_string(dir.join("gateway.toml")).ok()?;
    let cfg: toml::Table = toml::from_str(&text).ok()?;
    let own = cfg.get("pki_dir").and_then(|v| v.as_str()).unwrap_or("pki");
    if dir.join(own).canonicalize().ok()? != pki {
        return None;
    }
    Some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(toml: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("pki")).unwrap();
        if let Some(t) = toml {
            std::fs::write(d.path().join("gateway.toml"), t).unwrap();
        }
        d
    }

    #[test]
    fn quic_is_offered_only_when_the_gateway_serves_it() {
        let d = setup(None);
        assert_eq!(quic_port(&d.path().join("pki")), None);
        let d = setup(Some("public_addr = \"gw\"\n"));
        assert_eq!(quic_port(&d.path().join("pki")), None);
        let d = setup(Some(
            "public_addr = \"gw\"\n[quic]\nenabled = false\nport = 443\n",
        ));
        assert_eq!(quic_port(&d.path().join("pki")), None);
        let d = setup(Some("public_addr = \"gw\"\n[quic]\nenabled = true\n"));
        assert_eq!(quic_port(&d.path().join("pki")), Some(443));
        let d = setup(Some(
            "public_addr = \"gw\"\n[quic]\nenabled = true\nport = 8443\n",
        ));
        assert_eq!(quic_port(&d.path().join("pki")), Some(8443));
        // A gateway.toml that uses another PKI folder says nothing about this one.
        let d = setup(Some(
            "public_addr = \"gw\"\npki_dir = \"other\"\n[quic]\nenabled = true\n",
        ));
        std::fs::create_dir(d.path().join("other")).unwrap();
        assert_eq!(quic_port(&d.path().join("pki")), None);
    }

    #[test]
    fn client_routing_is_fixed_only_when_the_gateway_says_so() {
        let d = setup(None);
        assert_eq!(client_routing(&d.path().join("pki")), ClientRouting::User);
        let d = setup(Some("public_addr = \"gw\"\n"));
        assert_eq!(client_routing(&d.path().join("pki")), ClientRouting::User);
        let d = setup(Some("public_addr = \"gw\"\nclient_routing = \"user\"\n"));
        assert_eq!(client_routing(&d.path().join("pki")), ClientRouting::User);
        let d = setup(Some("public_addr = \"gw\"\nclient_routing = \"fixed\"\n"));
        assert_eq!(client_routing(&d.path().join("pki")), ClientRouting::Fixed);
    }
}
