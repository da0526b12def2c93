//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the engine's fuzzing
//! entry points on stable, so every input that once crashed a target stays fixed and CI
//! notices a regression without cargo-fuzz.
//!
//! `GATEHOUSE_WRITE_FUZZ_SEEDS=1 cargo test -p gatehouse-engine --test fuzz_corpus` first
//! (re)writes the seed files made from in-memory exchanges (`seed-*`); files the fuzzer
//! added or regressions (`crash-*`) are left alone.

use std::path::{Path, PathBuf};

use gatehouse_engine::fuzzing;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs every file of `target`'s corpus through `run`; returns how many ran.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).expect("a readable corpus file");
        // A panic names the file, so the failing input is easy to reproduce with
        // `cargo +nightly fuzz run TARGET FILE`.
        let r = std::panic::catch_unwind(|| run(&data));
        assert!(r.is_ok(), "{target}: {} panics", f.display());
    }
    assert!(
        !files.is_empty(),
        "{target}: empty corpus in {}",
        dir.display()
    );
    files.len()
}

fn write_seeds() {
    if std::env::var_os("GATEHOUSE_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    for (target, seeds) in fuzzing::seeds::corpus() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("a corpus folder");
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed)
                .expect("a writable corpus folder");
        }
    }
}

/// An entry point: arbitrary bytes in, no panic.
type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("wire_openvpn", fuzzing::wire_openvpn),
    ("wire_ikev2", fuzzing::wire_ikev2),
    ("esp", fuzzing::esp),
    ("server_wrap", fuzzing::server_wrap),
    ("openvpn_server", fuzzing::openvpn_server),
    ("openvpn_client", fuzzing::openvpn_client),
    ("ikev2_responder", fuzzing::ikev2_responder),
    ("ikev2_initiator", fuzzing::ikev2_initiator),
    ("gateway_core", fuzzing::gateway_core),
    ("capsule", fuzzing::capsule),
    ("dns", fuzzing::dns),
];

#[test]
fn every_engine_corpus_file_runs_without_a_panic() {
    write_seeds();
    for (target, run) in TARGETS {
        let n = replay(target, *run);
        println!("{target}: {n} files");
    }
}
