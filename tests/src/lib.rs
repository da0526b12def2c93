//! Harness for end-to-end tests: locating the built binaries, running commands, and (for the
//! gateway tests) network namespaces with veth links that are always cleaned up.

use std::path::PathBuf;

/// Path of a binary built from this workspace (`target/<profile>/<name>`), next to the test
/// executable's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}
