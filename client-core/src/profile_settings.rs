//! Changing what the user chooses about a profile - routing, extra routes, auto-connect,
//! trusted networks - with the checks every front end (CLI, desktop app) needs: the gateway's
//! `client_routing` policy, prefixes that are routes, networks that can be recognised.

use ipnet::IpNet;

use crate::error::{ProfileError, Result};
use crate::profile::StoredProfile;
use crate::routing::{self, Routing};
use crate::trusted::{AutoConnect, NetworkId};

/// What to change; `None` / empty leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    /// The routing choice.
    pub routing: Option<Routing>,
    /// Drop every extra route first.
    pub clear_routes: bool,
    /// Extra routes to add.
    pub add_routes: Vec<IpNet>,
    /// Auto-connect.
    pub auto_connect: Option<AutoConnect>,
}

impl SettingsChange {
    /// Applies the change to `p`, or leaves `p` as it was and says why not.
    pub fn apply(&self, p: &mut StoredProfile) -> Result<()> {
        for net in &self.add_routes {
            if net.prefix_len() == 0 {
                return Err(ProfileError::Setting(format!(
                    "{net} is every address, not an extra route; choose `--routing full` for that"
                )));
            }
        }
        let routing = self.routing.unwrap_or(p.routing);
        let mut extra = if self.clear_routes {
            Vec::new()
        } else {
            p.extra_routes.clone()
        };
        for net in &self.add_routes {
            let net = net.trunc();
            if !extra.contains(&net) {
                extra.push(net);
            }
        }
        routing::check(&p.name, p.client_routing, routing, &extra)
            .map_err(|e| ProfileError::Setting(e.to_string()))?;
        p.routing = routing;
        p.extra_routes = extra;
        if let Some(a) = self.auto_connect {
            p.auto_connect = a;
        }
        Ok(())
    }
}

/// Adds `network` to `p`'s trusted networks. Returns whether it was new.
pub fn trust(p: &mut StoredProfile, network: &NetworkId) -> Result<bool> {
    if !network.is_identified() {
        return Err(ProfileError::Setting(format!(
            "cannot trust this network: the MAC address of its gateway {} is not known (no \
             answer from it yet); try again in a moment",
            network.gateway
        )));
    }
    if network.is_trusted(&p.trusted_networks) {
        return Ok(false);
    }
    p.trusted_networks.push(network.clone());
    Ok(true)
}

/// Removes every trusted network of `p` that `network` matches. Returns whether one was.
pub fn untrust(p: &mut StoredProfile, network: &NetworkId) -> bool {
    let before = p.trusted_networks.len();
    p.trusted_networks.retain(|t| !network.matches(t));
    p.trusted_networks.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ClientRouting;

    fn profile(policy: ClientRouting) -> StoredProfile {
        let text = format!(
            "name = \"work\"\ngateway = \"gw\"\nkey_location = \"keyring\"\nsource = \"gatehouse\"\n\
             ciphers = []\nca_pem = \"\"\ncert_pem = \"\"\nclient_routing = \"{}\"\n\
             [[protocols]]\nkind = \"openvpn-udp\"\nport = 1194\n",
            policy.as_str()
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn settings_change_and_are_checked_against_the_gateway() {
        let mut p = profile(ClientRouting::User);
        let change = SettingsChange {
            routing: Some(Routing::Full),
            add_routes: vec![
                "10.9.1.0/16".parse().unwrap(),
                "fd00:9::/48".parse().unwrap(),
            ],
            auto_connect: Some(AutoConnect::Untrusted),
            ..SettingsChange::default()
        };
        change.apply(&mut p).unwrap();
        assert_eq!(p.routing, Routing::Full);
        assert_eq!(p.auto_connect, AutoConnect::Untrusted);
        assert_eq!(
            p.extra_routes,
            vec![
                "10.9.0.0/16".parse::<IpNet>().unwrap(),
                "fd00:9::/48".parse().unwrap()
            ]
        );
        // Adding the same prefix again changes nothing; clearing drops them all.
        change.apply(&mut p).unwrap();
        assert_eq!(p.extra_routes.len(), 2);
        SettingsChange {
            clear_routes: true,
            ..SettingsChange::default()
        }
        .apply(&mut p)
        .unwrap();
        assert!(p.extra_routes.is_empty());
        let err = SettingsChange {
            add_routes: vec!["0.0.0.0/0".parse().unwrap()],
            ..SettingsChange::default()
        }
        .apply(&mut p)
        .unwrap_err();
        assert!(err.to_string().contains("--routing full"), "{err}");

        let mut fixed = profile(ClientRouting::Fixed);
        let before = fixed.clone();
        let err = SettingsChange {
            routing: Some(Routing::Split),
            ..SettingsChange::default()
        }
        .apply(&mut fixed)
        .unwrap_err()
        .to_string();
        assert!(err.contains("client_routing = \"fixed\""), "{err}");
        assert_eq!(fixed, before, "a refused change leaves the profile alone");
        // Auto-connect is the user's on any gateway.
        SettingsChange {
            auto_connect: Some(AutoConnect::Untrusted),
            ..SettingsChange::default()
        }
        .apply(&mut fixed)
        .unwrap();
    }

    #[test]
    fn only_identified_networks_can_be_trusted() {
        let mut p = profile(ClientRouting::User);
        let net = NetworkId {
            gateway: "10.0.0.1".parse().unwrap(),
            mac: "02:00:00:00:00:01".into(),
        };
        assert!(trust(&mut p, &net).unwrap());
        assert!(!trust(&mut p, &net).unwrap());
        assert_eq!(p.trusted_networks.len(), 1);
        let unknown = NetworkId {
            mac: String::new(),
            ..net.clone()
        };
        assert!(trust(&mut p, &unknown).is_err());
        assert!(untrust(&mut p, &net));
        assert!(p.trusted_networks.is_empty());
    }
}
