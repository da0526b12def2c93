//! OpenVPN 2.6's early negotiation: TLVs in the payload of a hard reset (`ssl_pkt.h`,
//! `parse_early_negotiation_tlvs` in `ssl.c`). A tls-crypt-v2 client announces support by
//! starting its packet ids at `0x0f000001`; a 2.6 server that answers statelessly puts
//! `EARLY_NEG_FLAGS = RESEND_WKC` in its reset, and the client then appends its wrapped key
//! to its first control packet (P_CONTROL_WKC_V1).

/// TLV type of the early-negotiation flags.
pub(crate) const TLV_FLAGS: u16 = 0x0001;
/// Flag: resend the wrapped client key in the first control packet.
pub(crate) const FLAG_RESEND_WKC: u16 = 0x0001;

/// The flags in a hard reset's payload; 0 when there are none or the TLVs are malformed
/// (then the peer gets the behaviour of a server without early negotiation).
pub(crate) fn parse_flags(mut payload: &[u8]) -> u16 {
    let mut flags = 0;
    while !payload.is_empty() {
        let Some((head, rest)) = payload.split_at_checked(4) else {
            return 0;
        };
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let Some((value, rest)) = rest.split_at_checked(len) else {
            return 0;
        };
        if kind == TLV_FLAGS {
            if len != 2 {
                return 0;
            }
            flags = u16::from_be_bytes([value[0], value[1]]);
        }
        payload = rest;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_tlv_as_a_stock_server_sends_it() {
        assert_eq!(parse_flags(&[0, 1, 0, 2, 0, 1]), FLAG_RESEND_WKC);
        assert_eq!(
            parse_flags(&[0, 9, 0, 1, 7, 0, 1, 0, 2, 0, 1]),
            FLAG_RESEND_WKC
        );
        assert_eq!(parse_flags(&[]), 0);
        assert_eq!(parse_flags(&[0, 1, 0, 2, 0]), 0, "cut short");
        assert_eq!(parse_flags(&[0, 1, 0, 3, 0, 1, 0]), 0, "wrong length");
    }
}
