//! Parsing of subject alternative names and certificate names given on the command line.

use std::net::IpAddr;

use rcgen::SanType;

use crate::error::{PkiError, Result};

/// Parses one `--san` value: an IP address if it parses as one, else a DNS name
/// (letters, digits and hyphens in dot-separated labels, optionally starting with `*.`).
pub fn parse_san(value: &str) -> Result<SanType> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = || PkiError::InvalidSan {
        value: value.to_string(),
    };
    if !is_dns_name(value) {
        return Err(bad());
    }
    let ia5 = value.to_string().try_into().map_err(|_| bad())?;
    Ok(SanType::DnsName(ia5))
}

/// Whether `value` is a DNS name we put in a certificate.
fn is_dns_name(value: &str) -> bool {
    let host = value.strip_prefix("*.").unwrap_or(value);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || value.len() > 253 {
        return false;
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    // An all-numeric dotted name that did not parse as an IP (e.g. "1.2.3") is a typo,
    // not a host name.
    let all_numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    labels_ok && !all_numeric
}

/// Checks a certificate name: it becomes a file name (`server/<name>.crt`) and a CN, so it
/// is limited to a safe set of characters.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidName {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_become_ip_sans() {
        assert!(matches!(parse_san("192.0.2.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(
            parse_san("2001:db8::1"),
            Ok(SanType::IpAddress(_))
        ));
    }

    #[test]
    fn dns_names_and_wildcards_are_accepted() {
        for ok in [
            "vpn.example.com",
            "gw-1",
            "*.example.com",
            "xn--bcher-kva.example",
        ] {
            assert!(
                matches!(parse_san(ok), Ok(SanType::DnsName(_))),
                "{ok} should be accepted"
            );
        }
    }

    #[test]
    fn garbage_is_rejected_naming_the_value() {
        for bad in [
            "",
            "bad host",
            "a..b",
            "-lead.example",
            "trail-.example",
            "*",
            "*.",
            "foo.*.example",
            "under_score.example",
            "1.2.3",
            "300.1.1.1",
            "vpn.example.com/x",
            "ümlaut.example",
        ] {
            let err = parse_san(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn names_are_file_safe() {
        check_name("alice").unwrap();
        check_name("alice@example.com").unwrap();
        check_name("gw-1.example_x+2").unwrap();
        for bad in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-rf",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
