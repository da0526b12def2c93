//! Replays the committed fuzz corpus of `gateway.toml` (`fuzz/corpus/gateway_toml/`) on
//! stable: an input that once crashed the config parser or its validation stays
//! fixed without cargo-fuzz.

use std::path::Path;

use gatehouse_server::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).expect("a readable corpus file");
        let r = std::panic::catch_unwind(|| run(&data));
        assert!(r.is_ok(), "{target}: {} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus in {}", dir.display());
}

#[test]
fn every_gateway_toml_corpus_file_checks_without_a_panic() {
    replay("gateway_toml", fuzzing::gateway_toml);
}
