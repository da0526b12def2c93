//! Crash-safe file writing.
//!
//! Every file of the PKI folder is written to a temporary file beside its final name
//! (created with its final mode, so a key is never readable by others even for a moment),
//! fsynced, renamed over the final name and the folder fsynced: after a crash a reader sees
//! either the old file or the new one, never half of one.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
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
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    // A stale temp file from a crashed run would make create_new fail; it holds nothing
    // that was ever committed, so it can go.
    let _ = fs::remove_file(path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    mode::on_open(&mut options, mode);
    let mut file = options
        .open(path)
        .map_err(|e| PkiError::io("create", path, e))?;
    // The umask may have removed bits from `mode`; never add any, but make sure the file
    // ends up exactly as strict as asked.
    mode::set_file(&file, mode).map_err(|e| PkiError::io("set permissions of", path, e))?;
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
    mode::sync_dir(parent).map_err(|e| PkiError::io("sync folder", parent, e))
}

/// Creates folder `path` (and its parents) if missing, giving the last one `mode`.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    mode::on_dir(&mut builder, mode);
    builder
        .create(path)
        .map_err(|e| PkiError::io("create folder", path, e))
}

/// One entry of a folder written by [`write_dir_atomic`], its path relative to the folder.
#[derive(Debug)]
pub(crate) enum DirEntry {
    /// A folder with exactly these permission bits (list it before what it holds).
    Dir { path: &'static str, mode: u32 },
    /// A file with exactly these permission bits.
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
}

/// Writes a new folder `dir` holding `entries`, all or nothing: the folder is built under a
/// temporary name beside `dir` (`<dir>.tmp-...`), fsynced and renamed into place. `dir` must
/// not exist or be an empty folder; anything else is refused before writing a byte.
pub(crate) fn write_dir_atomic(dir: &Path, entries: &[DirEntry]) -> Result<()> {
    let unusable = |reason: &'static str| PkiError::OutputDir {
        path: dir.to_path_buf(),
        reason,
    };
    let Some(name) = dir.file_name() else {
        return Err(unusable("give the name of a new folder"));
    };
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mut listing = fs::read_dir(dir).map_err(|e| PkiError::io("read folder", dir, e))?;
            if listing.next().is_some() {
                return Err(unusable(NOT_EMPTY));
            }
        }
        Ok(_) => return Err(unusable("it exists and is not a folder")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PkiError::io("inspect", dir, e)),
    }

    let tmp = create_temp_dir(dir, name)?;
    let result = fill_dir(&tmp, entries).and_then(|()| {
        fs::rename(&tmp, dir).map_err(|e| match e.kind() {
            // Something appeared in the empty folder meanwhile.
            std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists => {
                unusable(NOT_EMPTY)
            }
            _ => PkiError::io("rename into place", dir, e),
        })
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        return result;
    }
    sync_parent(dir)
}

const NOT_EMPTY: &str = "it exists and is not empty; refusing to overwrite it - give a new folder (it is created) or an empty one";

/// Creates a new folder `<dir>.tmp-<pid>-<n>` beside `dir` (mode 0755 less the umask).
fn create_temp_dir(dir: &Path, name: &std::ffi::OsStr) -> Result<PathBuf> {
    let mut attempt = 0u32;
    loop {
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp-{}-{attempt}", std::process::id()));
        let tmp = dir.with_file_name(tmp_name);
        let mut builder = DirBuilder::new();
        mode::on_dir(&mut builder, 0o755);
        match builder.create(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PkiError::OutputDir {
                    path: dir.to_path_buf(),
                    reason: "its parent folder does not exist",
                });
            }
            Err(e) => return Err(PkiError::io("create folder", &tmp, e)),
        }
    }
}

/// Writes `entries` into the fresh folder `root` and fsyncs every folder.
fn fill_dir(root: &Path, entries: &[DirEntry]) -> Result<()> {
    let mut dirs = Vec::new();
    for entry in entries {
        match entry {
            DirEntry::Dir { path, mode } => {
                let path = root.join(path);
                let mut builder = DirBuilder::new();
                mode::on_dir(&mut builder, *mode);
                builder
                    .create(&path)
                    .map_err(|e| PkiError::io("create folder", &path, e))?;
                mode::set_path(&path, *mode)
                    .map_err(|e| PkiError::io("set permissions of", &path, e))?;
                dirs.push(path);
            }
            DirEntry::File { path, data, mode } => write_new(&root.join(path), data, *mode)?,
        }
    }
    dirs.push(root.to_path_buf());
    for dir in dirs {
        mode::sync_dir(&dir).map_err(|e| PkiError::io("sync folder", &dir, e))?;
    }
    Ok(())
}

/// Permission bits and folder fsyncs: Unix modes; on Windows the files inherit the ACL of
/// their folder (the user's profile) and a folder cannot be opened to fsync it.
#[cfg(unix)]
mod mode {
    use std::fs::{self, DirBuilder, File, OpenOptions};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    pub(super) fn on_open(options: &mut OpenOptions, mode: u32) {
        options.mode(mode);
    }

    pub(super) fn on_dir(builder: &mut DirBuilder, mode: u32) {
        builder.mode(mode);
    }

    pub(super) fn set_file(file: &File, mode: u32) -> std::io::Result<()> {
        file.set_permissions(fs::Permissions::from_mode(mode))
    }

    pub(super) fn set_path(path: &Path, mode: u32) -> std::io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
        File::open(path)?.sync_all()
    }
}

#[cfg(not(unix))]
mod mode {
    use std::fs::{DirBuilder, File, OpenOptions};
    use std::path::Path;

    pub(super) fn on_open(_options: &mut OpenOptions, _mode: u32) {}

    pub(super) fn on_dir(_builder: &mut DirBuilder, _mode: u32) {}

    pub(super) fn set_file(_file: &File, _mode: u32) -> std::io::Result<()> {
        Ok(())
    }

    pub(super) fn set_path(_path: &Path, _mode: u32) -> std::io::Result<()> {
        Ok(())
    }

    pub(super) fn sync_dir(_path: &Path) -> std::io::Result<()> {
        Ok(())
    }
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

    fn entries() -> Vec<DirEntry> {
        vec![
            DirEntry::Dir {
                path: "private",
                mode: PRIVATE_DIR_MODE,
            },
            DirEntry::File {
                path: "private/k.pem".into(),
                data: b"key".to_vec(),
                mode: KEY_MODE,
            },
            DirEntry::File {
                path: "a.conf".into(),
                data: b"conf".to_vec(),
                mode: PUBLIC_MODE,
            },
        ]
    }

    #[test]
    fn atomic_dir_is_created_new_or_in_an_empty_folder() {
        let parent = tempfile::tempdir().unwrap();
        for existing in [false, true] {
            let out = parent.path().join(format!("out-{existing}"));
            if existing {
                fs::create_dir(&out).unwrap();
            }
            write_dir_atomic(&out, &entries()).unwrap();
            assert_eq!(fs::read(out.join("a.conf")).unwrap(), b"conf");
            assert_eq!(fs::read(out.join("private/k.pem")).unwrap(), b"key");
            assert_eq!(
                fs::metadata(out.join("private")).unwrap().mode() & 0o777,
                0o700
            );
            assert_eq!(
                fs::metadata(out.join("private/k.pem")).unwrap().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::metadata(out.join("a.conf")).unwrap().mode() & 0o777,
                0o644
            );
        }
        // Nothing but the two folders: no temporary folder left behind.
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 2);
    }

    #[test]
    fn atomic_dir_refuses_what_is_there_and_leaves_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let full = parent.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("mine"), b"keep").unwrap();
        let file = parent.path().join("file");
        fs::write(&file, b"keep").unwrap();
        let orphan = parent.path().join("missing/out");
        for (dir, reason) in [
            (&full, "not empty"),
            (&file, "not a folder"),
            (&orphan, "parent folder does not exist"),
        ] {
            let err = write_dir_atomic(dir, &entries()).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
        }
        assert_eq!(fs::read(full.join("mine")).unwrap(), b"keep");
        assert_eq!(fs::read_dir(&full).unwrap().count(), 1);
        assert_eq!(fs::read(&file).unwrap(), b"keep");
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 2);

        // A failure half-way (a file in a folder that is not listed) cleans up.
        let out = parent.path().join("out");
        let bad = [DirEntry::File {
            path: "nope/x".into(),
            data: Vec::new(),
            mode: PUBLIC_MODE,
        }];
        assert!(write_dir_atomic(&out, &bad).is_err());
        assert!(!out.exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 2);
    }
}
