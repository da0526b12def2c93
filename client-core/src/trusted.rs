//! Trusted networks and the auto-connect decision. Pure: the service feeds in the network
//! it sees ([`NetworkId`], read by [`crate::platform::current_network`]) and what the user
//! did, and [`should_connect`] says whether to connect.
//!
//! A network is identified by its default gateway: the next hop's IP address and its
//! link-layer (MAC) address from the neighbour table. Both are observable on any Linux host
//! without NetworkManager, both change when the laptop moves to another network, and the
//! pair is hard to meet by accident elsewhere: a café's router at 192.168.1.1 is not the
//! office's 192.168.1.1, because its MAC differs. (A network's name - SSID, DHCP domain -
//! is easier to fake and often absent.) A network whose gateway's MAC is not known cannot
//! be trusted.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Whether a profile connects by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoConnect {
    /// Only when asked.
    #[default]
    Off,
    /// Whenever the current network is not one of the profile's trusted networks.
    Untrusted,
}

impl AutoConnect {
    /// The name in profile files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoConnect::Off => "off",
            AutoConnect::Untrusted => "untrusted",
        }
    }
}

impl fmt::Display for AutoConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AutoConnect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(AutoConnect::Off),
            "untrusted" => Ok(AutoConnect::Untrusted),
            _ => Err(format!("unknown auto-connect {s:?}; use off or untrusted")),
        }
    }
}

/// A network, as its default gateway shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkId {
    /// The default route's next hop.
    pub gateway: IpAddr,
    /// Its link-layer address (lower case, `aa:bb:cc:dd:ee:ff`); empty when the neighbour
    /// table does not know it.
    #[serde(default)]
    pub mac: String,
}

impl NetworkId {
    /// A network the user can trust: its gateway's MAC is known.
    pub fn is_identified(&self) -> bool {
        !self.mac.is_empty()
    }

    /// Whether `self` (the current network) is `trusted`: same gateway address and MAC.
    pub fn matches(&self, trusted: &NetworkId) -> bool {
        self.is_identified()
            && self.gateway == trusted.gateway
            && self.mac.eq_ignore_ascii_case(&trusted.mac)
    }

    /// Whether one of `trusted` is this network.
    pub fn is_trusted(&self, trusted: &[NetworkId]) -> bool {
        trusted.iter().any(|t| self.matches(t))
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mac.is_empty() {
            write!(f, "gateway {} (MAC unknown)", self.gateway)
        } else {
            write!(f, "gateway {} {}", self.gateway, self.mac)
        }
    }
}

/// What the auto-connect decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// The profile's setting.
    pub auto_connect: AutoConnect,
    /// The profile's trusted networks.
    pub trusted: &'a [NetworkId],
    /// The network the host is on now; none without a default route.
    pub current: Option<&'a NetworkId>,
    /// A tunnel is up or being brought up (any profile).
    pub busy: bool,
    /// The network on which the user last disconnected by hand, if they have not changed
    /// network since (see [`after_change`]).
    pub user_disconnected_on: Option<&'a NetworkId>,
}

/// Whether to connect the profile now.
pub fn should_connect(s: Situation<'_>) -> bool {
    if s.auto_connect == AutoConnect::Off || s.busy {
        return false;
    }
    let Some(current) = s.current else {
        // No network: nothing to protect, nothing to reach.
        return false;
    };
    if s.user_disconnected_on == Some(current) {
        return false;
    }
    // An unidentified network (gateway MAC unknown) is not trusted.
    !current.is_trusted(s.trusted)
}

/// The "user disconnected here" note after the network became `current`: kept while the
/// host stays on that network (or has none for a moment), dropped on another one.
pub fn after_change(
    user_disconnected_on: Option<NetworkId>,
    current: Option<&NetworkId>,
) -> Option<NetworkId> {
    match (user_disconnected_on, current) {
        (Some(on), Some(now)) if on != *now => None,
        (kept, _) => kept,
    }
}

#[cfg(test)]
mod tests;
