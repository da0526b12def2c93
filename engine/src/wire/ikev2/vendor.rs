//! Vendor ID payload (RFC 7296 section 3.12): the body is an opaque identifier, carried
//! as [`super::Payload::VendorId`].

/// The Vendor ID strongSwan sends when `send_vendor_id` is on: MD5("strongSwan").
pub const STRONGSWAN_VENDOR_ID: [u8; 16] = [
    0x88, 0x2f, 0xe5, 0x6d, 0x6f, 0xd2, 0x0d, 0xbc, 0x22, 0x51, 0x61, 0x3b, 0x2e, 0xbe, 0x5b, 0xeb,
];

#[cfg(test)]
mod tests {
    use super::super::{Payload, emit_payloads, parse_inner, payload_type};
    use super::*;

    #[test]
    fn vendor_id_payload_bytes() {
        let mut bytes = vec![0, 0, 0, 20];
        bytes.extend(STRONGSWAN_VENDOR_ID);
        let payloads = parse_inner(payload_type::VENDOR_ID, &bytes).unwrap();
        assert_eq!(payloads, vec![Payload::VendorId(&STRONGSWAN_VENDOR_ID)]);
        let mut out = Vec::new();
        assert_eq!(emit_payloads(&payloads, &mut out), payload_type::VENDOR_ID);
        assert_eq!(out, bytes);
    }
}
