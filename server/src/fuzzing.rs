//! Fuzzing entry point for `gateway.toml`: what `gatehoused check` does with the file's text
//! before it opens any other file. The cargo-fuzz target in `fuzz/` calls it and
//! `tests/fuzz_corpus.rs` replays the committed corpus through it. Not an API.

use crate::config::{GatewayConfig, parse_duration};

/// Parses `data` as `gateway.toml` and validates it (every `[[connection]]` table
/// included; PSK files are not read). Must never panic.
pub fn gateway_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = toml::from_str::<GatewayConfig>(text) {
        let _ = cfg.validate();
    }
    let _ = parse_duration(text);
}
