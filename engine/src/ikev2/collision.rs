//! Simultaneous rekeys (RFC 7296 2.8.1 for CHILD SAs, 2.8.2 for IKE SAs): when both ends
//! rekey the same SA at once, both exchanges complete and create an SA each. The one created
//! by the exchange whose nonces include the lowest of the four is redundant and is deleted by
//! the end that started that exchange; the end that started the other exchange deletes the
//! SA both replaced. Both ends see the same four nonces, so they agree without talking.

/// Whether the SA our exchange created (its nonces `ours`) is the redundant one, against the
/// peer's exchange (`theirs`). "Lowest" compares octet by octet, a nonce that is a prefix of
/// another being the lower (RFC 7296 2.8.1), which is exactly how slices order. Equal lowest
/// nonces (never seen in practice) keep both SAs rather than lose both.
pub(crate) fn ours_is_redundant(ours: [&[u8]; 2], theirs: [&[u8]; 2]) -> bool {
    ours[0].min(ours[1]) < theirs[0].min(theirs[1])
}

#[cfg(test)]
mod tests {
    use super::ours_is_redundant;

    #[test]
    fn lowest_of_four_nonces_decides() {
        let (a, b, c, d) = (&[5u8, 1][..], &[9u8][..], &[5u8, 2][..], &[7u8][..]);
        assert!(ours_is_redundant([b, a], [c, d]));
        assert!(!ours_is_redundant([c, d], [b, a]));
        // Octet by octet, not as integers: [1, 255] < [2].
        assert!(ours_is_redundant([&[1, 255], &[9]], [&[2], &[9]]));
        // A prefix is lower.
        assert!(ours_is_redundant([&[3], &[9]], [&[3, 0], &[9]]));
        assert!(!ours_is_redundant([&[3], &[9]], [&[3], &[8]]));
    }
}
