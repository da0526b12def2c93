//! The error type of profiles and keys.
//!
//! Every message is one line that says what went wrong and what to do about it; the CLI
//! prints it as `error: <message>` and the desktop app shows it as is.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while importing, listing, renaming or removing profiles and
/// reading their keys.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A profile name that cannot be used (it is also a file name).
    #[error(
        "invalid profile name {name:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'; choose one with --name"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },

    /// Importing or renaming to a name that is taken.
    #[error(
        "a profile named {name} already exists; import under another name with --name NEW, or delete the old one first with `gatehouse remove {name}`"
    )]
    Exists {
        /// The name asked for.
        name: String,
    },

    /// No profile with that name.
    #[error("no profile named {name}; see your profiles with `gatehouse profiles`")]
    NotFound {
        /// The name asked for.
        name: String,
    },

    /// A Gatehouse profile (`format = "gatehouse-profile"`) that does not parse or check.
    #[error(
        "{source_name}: {reason}; export the profile again with `gatehouse-certs --pki DIR export NAME --gateway HOST --format gatehouse -o FILE`"
    )]
    InvalidGatehouseProfile {
        /// The file (or drop) it came from.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An `.ovpn` file that we cannot use.
    #[error("{source_name}{}: {reason}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
    InvalidOvpn {
        /// The file (or drop) it came from.
        source_name: String,
        /// The 1-based line the problem is on, when there is one.
        line: Option<usize>,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A setting the profile cannot take (a routing choice the gateway forbids, a route
    /// that is no route, a network that cannot be identified).
    #[error("{0}")]
    Setting(String),

    /// A stored profile file that no longer parses (edited by hand, disk damage).
    #[error(
        "the stored profile {} is damaged ({reason}); delete it and import the profile again",
        .path.display()
    )]
    Corrupt {
        /// The profile file.
        path: PathBuf,
        /// Parser detail.
        reason: String,
    },

    /// The OS keyring refused an operation on a key.
    #[error(
        "cannot {action} the private key of profile {name} in the OS keyring: {source}; make sure the keyring is unlocked and try again"
    )]
    Keyring {
        /// What we were doing ("store", "read", "delete").
        action: &'static str,
        /// The profile.
        name: String,
        /// The keyring's error.
        #[source]
        source: keyring_core::Error,
    },

    /// The profile's key is in the OS keyring, but no keyring is reachable now.
    #[error(
        "the private key of profile {name} is in the OS keyring, which is not reachable now ({why}); log in to a desktop session with the keyring unlocked, or import the profile again here"
    )]
    KeyringUnavailable {
        /// The profile.
        name: String,
        /// Why the keyring is not reachable.
        why: String,
    },

    /// The profile exists but its key is gone.
    #[error(
        "the private key of profile {name} is missing from {location}; import the profile again (`gatehouse remove {name}`, then `gatehouse import FILE`)"
    )]
    KeyMissing {
        /// The profile.
        name: String,
        /// Where it should have been.
        location: String,
    },

    /// A filesystem operation failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What we were doing ("read", "write", ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ProfileError {
    /// Wraps an I/O error with what we were doing and on which path.
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        ProfileError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias for profiles and keys.
pub type Result<T, E = ProfileError> = std::result::Result<T, E>;
