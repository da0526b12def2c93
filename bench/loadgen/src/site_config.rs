//! `gatehouse-loadgen sites-config`: the gateway's `[[connection]]` entries for the load
//! generator's sites (one per site: its source address as `remote_gateway`, its prefix as
//! `remote_address_space`, its key file), printed for gateway.toml, and the key files.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::site_layout::{SiteArgs, Slot};

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The `[[connection]]` entries for `sites` (slots with their key files).
pub fn render(args: &SiteArgs, sites: &[(Slot, impl AsRef<Path>)]) -> String {
    let mut o = String::new();
    let policy_based = !args.site_gateway_space.is_empty();
    let _ = writeln!(
        o,
        "# {} site-to-site connections for `gatehouse-loadgen --sites {}` (gatehouse-loadgen sites-config).\n\
         # The sites start every SA and rekey it (the gateway answers), so initiate = false.",
        sites.len(),
        sites.len()
    );
    for (s, psk) in sites {
        let _ = writeln!(o);
        let _ = writeln!(o, "[[connection]]");
        let _ = writeln!(o, "name = {}", toml_str(&s.name));
        let _ = writeln!(o, "type = \"site-to-site\"");
        let _ = writeln!(o, "remote_gateway = \"{}\"", s.source);
        let _ = writeln!(o, "remote_address_space = [\"{}\"]", s.space);
        let _ = writeln!(o, "auth = \"psk\"");
        let _ = writeln!(
            o,
            "psk_file = {}",
            toml_str(&psk.as_ref().display().to_string())
        );
        let _ = writeln!(o, "policy_based = {policy_based}");
        let _ = writeln!(o, "initiate = false");
        if args.site_child_lifetime > 0 {
            let _ = writeln!(o, "child_lifetime = \"{}s\"", args.site_child_lifetime);
        }
        if args.site_ike_lifetime > 0 {
            let _ = writeln!(o, "ike_lifetime = \"{}s\"", args.site_ike_lifetime);
        }
    }
    o
}

/// Writes the key files and returns the entries.
pub fn generate(args: &SiteArgs) -> Result<String> {
    let rng = ring::rand::SystemRandom::new();
    let sites = args.write_psks(&rng)?;
    Ok(render(args, &sites))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn entries_name_source_space_and_key_file() {
        let args = SiteArgs {
            sites: 2,
            site_source_base: Some(Ipv4Addr::new(10, 250, 176, 10)),
            site_space_base: "10.200.0.0/24".parse().expect("net"),
            site_psk_dir: None,
            site_prefix: "lg-site-".into(),
            site_gateway_space: Vec::new(),
            site_child_lifetime: 20,
            site_ike_lifetime: 0,
        };
        let slots = args.slots().expect("slots");
        let sites: Vec<(Slot, String)> = slots
            .into_iter()
            .map(|s| {
                let p = format!("/k/{}.psk", s.name);
                (s, p)
            })
            .collect();
        let text = render(&args, &sites);
        assert_eq!(text.matches("[[connection]]").count(), 2);
        assert!(text.contains("name = \"lg-site-001\""));
        assert!(text.contains("remote_gateway = \"10.250.176.11\""));
        assert!(text.contains("remote_address_space = [\"10.200.1.0/24\"]"));
        assert!(text.contains("psk_file = \"/k/lg-site-001.psk\""));
        assert!(text.contains("policy_based = false"));
        assert!(text.contains("child_lifetime = \"20s\""));
        assert!(!text.contains("ike_lifetime"));
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
