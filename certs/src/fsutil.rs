//! Crash-safe file writing.
//!
//! Every file of the PKI folder is written to a temporary file beside its final name
//! (created with its final mode, so a key is never readable by others even for a moment),
//! fsynced, renamed over the final name and the folder fsynced: after a crash a reader sees
//! either the old file or the new one, never half of one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{PkiError, Result};

/// Mode of files holding private keys.
pub const KEY_MODE: u32 = 0o600;
/// Mode of public files (certificates, CRL).
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode of folders holding private keys.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The temporary name used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `data` to `path` atomically with permission bits `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_path(path);
    let result = write_new(&tmp, data, mode).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| PkiError::io("rename into place", path, e))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_parent(path)
}

/// Creates `path` (which must not exist) with `mode`, writes `data` and fsyncs it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    // A stale temp file from a crashed run would make create_new fail; it holds nothing
    // that was ever committed, so it can go.
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| PkiError::io("create", path, e))?;
    // The umask may have removed bits from `mode`; never add any, but make sure the file
    // ends up exactly as strict as asked.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| PkiError::io("set permissions of", path, e))?;
    file.write_all(data)
        .map_err(|e| PkiError::io("write", path, e))?;
    file.sync_all().map_err(|e| PkiError::io("sync", path, e))
}

/// Fsyncs the folder holding `path`, so a rename in it survives a crash.
pub fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| PkiError::io("sync folder", parent, e))
}

/// Creates folder `path` (and its parents) if missing, giving the last one `mode`.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| PkiError::io("create folder", path, e))
}

/// Reads a file to a string, mapping errors to [`PkiError::Io`].
pub fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| PkiError::io("read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_atomic(&path, b"one", KEY_MODE).unwrap();
        write_atomic(&path, b"two", KEY_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // No temp file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
