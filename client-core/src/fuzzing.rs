//! Fuzzing entry points for what a user imports: stock `.ovpn` files and Gatehouse
//! profiles. The cargo-fuzz targets in `fuzz/` call them and `tests/fuzz_corpus.rs`
//! replays the committed corpus through them. Not an API.

/// Parses `data` as a stand-alone `.ovpn` file (no folder to read referenced files from).
/// Must never panic.
pub fn ovpn(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::ovpn::parse(text, "fuzz.ovpn");
}

/// Parses `data` as `gatehouse import` does (a Gatehouse profile, told apart from an
/// `.ovpn` by its `format` key), and as a stored profile file. Must never panic.
pub fn gatehouse_profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::store::parse_any(text, "fuzz.toml", None);
    let _ = toml::from_str::<crate::profile::StoredProfile>(text);
}
