//! UDP encapsulation on port 4500 (RFC 3948): IKE messages there start with a 4-byte
//! non-ESP marker (an SPI of zero, which ESP never uses), a single 0xff byte is a NAT
//! keepalive, and everything else is ESP.

/// The non-ESP marker that precedes IKE messages on port 4500.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// A NAT keepalive datagram (RFC 3948 section 2.3).
pub const NAT_KEEPALIVE: [u8; 1] = [0xff];

/// What a datagram received on UDP port 4500 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified<'a> {
    /// An IKE message, non-ESP marker removed.
    Ike(&'a [u8]),
    /// An ESP packet, starting with its SPI. May be too short to be valid; the ESP layer
    /// checks.
    Esp(&'a [u8]),
    /// A NAT keepalive: drop it (it only refreshed the NAT mapping).
    Keepalive,
}

/// Sorts a datagram received on port 4500.
pub fn strip_non_esp_marker(datagram: &[u8]) -> Classified<'_> {
    if datagram == NAT_KEEPALIVE {
        return Classified::Keepalive;
    }
    match datagram.split_first_chunk::<4>() {
        Some((marker, ike)) if *marker == NON_ESP_MARKER => Classified::Ike(ike),
        _ => Classified::Esp(datagram),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_port_4500_datagrams() {
        assert_eq!(strip_non_esp_marker(&[0xff]), Classified::Keepalive);
        assert_eq!(
            strip_non_esp_marker(&[0, 0, 0, 0, 1, 2]),
            Classified::Ike(&[1, 2])
        );
        assert_eq!(strip_non_esp_marker(&[0, 0, 0, 0]), Classified::Ike(&[]));
        let esp = [0xc1, 0xc2, 0xc3, 0xc4, 0, 0, 0, 1, 9];
        assert_eq!(strip_non_esp_marker(&esp), Classified::Esp(&esp));
        assert_eq!(
            strip_non_esp_marker(&[0, 0, 0]),
            Classified::Esp(&[0, 0, 0])
        );
        assert_eq!(strip_non_esp_marker(&[]), Classified::Esp(&[]));
        assert_eq!(
            strip_non_esp_marker(&[0xff, 0xff]),
            Classified::Esp(&[0xff, 0xff])
        );
    }
}
