//! DNS names for split DNS: the domains a gateway pushes (checked and normalized) and the
//! question name of a DNS query (RFC 1035 4.1), read without trusting the query.

/// Longest name in presentation form without the trailing dot (RFC 1035 2.3.4).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// The DNS header.
const HEADER_LEN: usize = 12;

/// `name` as a pushed split-DNS domain: lower case, no trailing dot, labels of letters,
/// digits, `-` and `_` (IDNA names in their `xn--` form), 1-63 bytes each, 253 in all.
/// None for anything else (empty, `.`, spaces, a label starting or ending with `-`).
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return None;
    }
    for label in name.split('.') {
        let ok_len = (1..=MAX_LABEL_LEN).contains(&label.len());
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_len || !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return None;
        }
    }
    Some(name.to_ascii_lowercase())
}

/// Whether `name` is `domain` or under it (both normalized: lower case, no trailing dot).
pub fn is_within(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Why a datagram is not a query the forwarder can route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Shorter than a header and one question.
    #[error("truncated")]
    Truncated,
    /// A response, or not exactly one question.
    #[error("not a standard query with one question")]
    NotQuery,
    /// A compression pointer, an over-long label or name, or bytes no name has.
    #[error("malformed question name")]
    BadName,
}

/// The question name of a DNS query, lower case, without the trailing dot ("" for the
/// root). Only what routing needs is checked: QR clear, QDCOUNT 1, an uncompressed name
/// followed by QTYPE and QCLASS.
pub fn query_name(msg: &[u8]) -> Result<String, QueryError> {
    let header = msg.get(..HEADER_LEN).ok_or(QueryError::Truncated)?;
    let qr = header[2] & 0x80 != 0;
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    if qr || qdcount != 1 {
        return Err(QueryError::NotQuery);
    }
    let mut name = String::new();
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*msg.get(at).ok_or(QueryError::Truncated)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > MAX_LABEL_LEN {
            // 0xC0 pointers never appear in a question a stub sends first.
            return Err(QueryError::BadName);
        }
        let label = msg.get(at..at + len).ok_or(QueryError::Truncated)?;
        at += len;
        if !label.iter().all(|b| b.is_ascii_graphic() && *b != b'.') {
            return Err(QueryError::BadName);
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        if name.len() > MAX_NAME_LEN {
            return Err(QueryError::BadName);
        }
    }
    // QTYPE and QCLASS.
    msg.get(at..at + 4).ok_or(QueryError::Truncated)?;
    Ok(name)
}

/// The query id (first two bytes), for matching answers to queries.
pub fn message_id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig host.Corp.Example A` as sent (id 0x1234, RD).
    const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
\x04host\x04Corp\x07Example\x00\x00\x01\x00\x01";

    #[test]
    fn reads_the_question_name() {
        assert_eq!(query_name(QUERY).unwrap(), "host.corp.example");
        assert_eq!(message_id(QUERY), Some(0x1234));
        let root = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01";
        assert_eq!(query_name(root).unwrap(), "");
    }

    #[test]
    fn malformed_queries_are_errors() {
        for cut in 0..QUERY.len() {
            assert!(query_name(&QUERY[..cut]).is_err(), "cut at {cut}");
        }
        let mut response = QUERY.to_vec();
        response[2] |= 0x80;
        assert_eq!(query_name(&response), Err(QueryError::NotQuery));
        let mut two = QUERY.to_vec();
        two[5] = 2;
        assert_eq!(query_name(&two), Err(QueryError::NotQuery));
        let mut pointer = QUERY.to_vec();
        pointer[12] = 0xc0;
        assert_eq!(query_name(&pointer), Err(QueryError::BadName));
        let mut dot = QUERY.to_vec();
        dot[14] = b'.';
        assert_eq!(query_name(&dot), Err(QueryError::BadName));
    }

    #[test]
    fn domains_are_checked_and_matched_by_label() {
        assert_eq!(
            normalize_domain("Corp.Example.").as_deref(),
            Some("corp.example")
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a b",
            "a.b-",
            &"a".repeat(64),
            "ä.example",
        ] {
            assert_eq!(normalize_domain(bad), None, "{bad:?}");
        }
        assert!(is_within("corp.example", "corp.example"));
        assert!(is_within("host.corp.example", "corp.example"));
        assert!(!is_within("evilcorp.example", "corp.example"));
        assert!(!is_within("example", "corp.example"));
    }
}
