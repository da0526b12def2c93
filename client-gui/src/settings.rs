//! The app's own settings, kept as TOML beside the profiles (`GATEHOUSE_HOME/gui.toml`).
//! The profiles themselves belong to client-core's store; this file only says how the app
//! behaves.

use std::path::{Path, PathBuf};

use gatehouse_client::{Protocol, ProtocolKind};
use serde::{Deserialize, Serialize};

/// The settings file's name inside the client home.
pub const FILE_NAME: &str = "gui.toml";

/// Light, dark, or whatever the desktop uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThemeChoice {
    /// Follow the operating system.
    #[default]
    System,
    /// Always light.
    Light,
    /// Always dark.
    Dark,
}

/// What the user chose in the Settings view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Protocols in the order to try them, for profiles that offer several.
    pub protocol_order: Vec<ProtocolKind>,
    /// Connect the last used profile when the app starts.
    pub auto_connect: bool,
    /// Open the window minimised.
    pub start_minimised: bool,
    /// Colour theme.
    pub theme: ThemeChoice,
    /// The profile connected last (what auto-connect uses).
    pub last_profile: Option<String>,
    /// Connect with the kill switch: nothing leaves but the tunnel while connected or
    /// reconnecting (Linux, nftables; `gatehouse connect --kill-switch`).
    pub kill_switch: bool,
    /// With the kill switch, still allow the local networks (printers, file shares).
    pub allow_lan: bool,
}

/// The order a new user gets: QUIC first where the gateway offers it (it survives a change
/// of network without reconnecting), then OpenVPN over UDP and TCP - the client falls back
/// to them by itself where UDP 443 is blocked - then IKEv2.
pub const DEFAULT_ORDER: [ProtocolKind; 4] = [
    ProtocolKind::Quic,
    ProtocolKind::OpenvpnUdp,
    ProtocolKind::OpenvpnTcp,
    ProtocolKind::Ikev2,
];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            protocol_order: DEFAULT_ORDER.to_vec(),
            auto_connect: false,
            start_minimised: false,
            theme: ThemeChoice::System,
            last_profile: None,
            kill_switch: false,
            allow_lan: false,
        }
    }
}

/// Reading or writing the settings file failed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read or written.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid settings TOML.
    #[error("{} is not valid ({source}); using the defaults - fix or delete the file", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
}

impl Settings {
    /// Where the settings live in the client home `home`.
    pub fn path(home: &Path) -> PathBuf {
        home.join(FILE_NAME)
    }

    /// Reads the settings from `home`; no file means the defaults.
    pub fn load(home: &Path) -> Result<Settings, SettingsError> {
        let path = Settings::path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => {
                return Err(SettingsError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let mut settings: Settings =
            toml::from_str(&text).map_err(|source| SettingsError::Invalid { path, source })?;
        settings.normalise();
        Ok(settings)
    }

    /// Writes the settings to `home` (through a temporary file, so a crash never leaves half
    /// a file).
    pub fn save(&self, home: &Path) -> Result<(), SettingsError> {
        let path = Settings::path(home);
        let io = |source| SettingsError::Io {
            action: "write",
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(home).map_err(io)?;
        // Serialising plain strings, booleans and enums cannot fail.
        let text = toml::to_string(self).unwrap_or_default();
        let tmp = home.join(format!(".{FILE_NAME}.tmp"));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Makes `protocol_order` name every protocol exactly once (a hand-edited file may drop
    /// or repeat some): duplicates go, missing ones join at the end in the order the CLI
    /// lists them.
    pub fn normalise(&mut self) {
        let mut order = Vec::with_capacity(ProtocolKind::ALL.len());
        for kind in self.protocol_order.iter().chain(ProtocolKind::ALL.iter()) {
            if !order.contains(kind) {
                order.push(*kind);
            }
        }
        self.protocol_order = order;
    }

    /// Moves the protocol at `index` one place earlier (`up`) or later.
    pub fn move_protocol(&mut self, index: usize, up: bool) {
        let other = if up {
            index.checked_sub(1)
        } else {
            Some(index + 1)
        };
        if let Some(other) = other.filter(|o| *o < self.protocol_order.len())
            && index < self.protocol_order.len()
        {
            self.protocol_order.swap(index, other);
        }
    }
}

/// A profile's protocols sorted by the user's preference `order`; protocols the order does
/// not name keep their place after the named ones. The profile decides which protocols and
/// ports exist; the user only decides which to try first.
pub fn order_protocols(protocols: &[Protocol], order: &[ProtocolKind]) -> Vec<Protocol> {
    let rank = |p: &Protocol| {
        order
            .iter()
            .position(|k| *k == p.kind)
            .unwrap_or(order.len())
    };
    let mut sorted = protocols.to_vec();
    // A stable sort keeps the profile's own order among equally ranked protocols.
    sorted.sort_by_key(rank);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(kind: ProtocolKind, port: u16) -> Protocol {
        Protocol { kind, port }
    }

    #[test]
    fn preference_reorders_only_what_the_profile_offers() {
        let offered = [
            proto(ProtocolKind::OpenvpnUdp, 1194),
            proto(ProtocolKind::OpenvpnTcp, 443),
            proto(ProtocolKind::Ikev2, 500),
        ];
        let order = [
            ProtocolKind::Ikev2,
            ProtocolKind::Quic,
            ProtocolKind::OpenvpnTcp,
        ];
        assert_eq!(
            order_protocols(&offered, &order),
            vec![
                proto(ProtocolKind::Ikev2, 500),
                proto(ProtocolKind::OpenvpnTcp, 443),
                proto(ProtocolKind::OpenvpnUdp, 1194),
            ]
        );
    }

    #[test]
    fn settings_round_trip_and_survive_hand_edits() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), Settings::default());
        let mut s = Settings {
            auto_connect: true,
            theme: ThemeChoice::Dark,
            last_profile: Some("work".into()),
            ..Settings::default()
        };
        assert_eq!(
            s.protocol_order[0],
            ProtocolKind::Quic,
            "QUIC first by default"
        );
        s.move_protocol(3, true);
        s.move_protocol(0, true); // already first: nothing moves
        s.move_protocol(3, false); // already last: nothing moves
        assert_eq!(s.protocol_order[2], ProtocolKind::Ikev2);
        s.save(dir.path()).unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), s);

        std::fs::write(
            Settings::path(dir.path()),
            "protocol_order = [\"quic\", \"quic\"]\nstart_minimised = true\n",
        )
        .unwrap();
        let edited = Settings::load(dir.path()).unwrap();
        assert!(edited.start_minimised);
        assert_eq!(
            edited.protocol_order,
            vec![
                ProtocolKind::Quic,
                ProtocolKind::OpenvpnUdp,
                ProtocolKind::OpenvpnTcp,
                ProtocolKind::Ikev2
            ]
        );

        std::fs::write(Settings::path(dir.path()), "theme = 3").unwrap();
        let err = Settings::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("fix or delete the file"), "{err}");
    }
}
