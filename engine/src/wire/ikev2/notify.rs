//! Notify payload (RFC 7296 section 3.10) and the notify message types.
//!
//! ```text
//! protocol id (1) | SPI size (1) | notify message type (2) | SPI | notification data
//! ```

use super::{HashAlgorithm, ProtocolId, Reader, Result, registry};

/// Size of NAT_DETECTION_*_IP data: a SHA-1 hash of SPIs, address and port.
pub const NAT_DETECTION_HASH_LEN: usize = 20;

registry! {
    /// Notify message type (IANA "IKEv2 Notify Message Types"). Types below 16384 are
    /// errors, the rest status notifications.
    NotifyType(u16) {
        /// A critical payload type was not understood; data: that type (1 byte).
        UNSUPPORTED_CRITICAL_PAYLOAD = 1,
        /// The message was for an IKE SA we do not know.
        INVALID_IKE_SPI = 4,
        /// The major version is not supported; data: none.
        INVALID_MAJOR_VERSION = 5,
        /// The message was malformed.
        INVALID_SYNTAX = 7,
        /// The message id was outside the window.
        INVALID_MESSAGE_ID = 9,
        /// An ESP/AH packet arrived for an SPI we do not know.
        INVALID_SPI = 11,
        /// None of the proposals was acceptable.
        NO_PROPOSAL_CHOSEN = 14,
        /// The KE payload's group was not the one selected; data: the wanted group (2).
        INVALID_KE_PAYLOAD = 17,
        /// Authentication failed.
        AUTHENTICATION_FAILED = 24,
        /// Only a single pair of traffic selectors is accepted.
        SINGLE_PAIR_REQUIRED = 34,
        /// No more CHILD SAs are accepted on this IKE SA.
        NO_ADDITIONAL_SAS = 35,
        /// No internal address could be assigned (CP).
        INTERNAL_ADDRESS_FAILURE = 36,
        /// A CP payload was required but missing.
        FAILED_CP_REQUIRED = 37,
        /// The traffic selectors are unacceptable.
        TS_UNACCEPTABLE = 38,
        /// A packet's selectors did not match the SA it arrived on.
        INVALID_SELECTORS = 39,
        /// The request could not be served now; retry later (e.g. during a rekey).
        TEMPORARY_FAILURE = 43,
        /// The CHILD SA to rekey was not found.
        CHILD_SA_NOT_FOUND = 44,
        /// Sent by the initiator in IKE_AUTH: delete all other IKE SAs with this peer.
        INITIAL_CONTACT = 16384,
        /// Window size for concurrent requests; data: 4-byte size.
        SET_WINDOW_SIZE = 16385,
        /// More traffic selectors would have been accepted separately.
        ADDITIONAL_TS_POSSIBLE = 16386,
        /// IP compression supported.
        IPCOMP_SUPPORTED = 16387,
        /// Hash of the sender's SPIs, address and port (20 bytes).
        NAT_DETECTION_SOURCE_IP = 16388,
        /// Hash of the SPIs and the address and port the message was sent to (20 bytes).
        NAT_DETECTION_DESTINATION_IP = 16389,
        /// Stateless cookie for DoS protection.
        COOKIE = 16390,
        /// Transport mode requested/accepted for the CHILD SA.
        USE_TRANSPORT_MODE = 16391,
        /// Hash-and-URL certificate lookup supported.
        HTTP_CERT_LOOKUP_SUPPORTED = 16392,
        /// This CREATE_CHILD_SA rekeys the CHILD SA named by the notification's SPI.
        REKEY_SA = 16393,
        /// The sender does not accept TFC padding on ESP.
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394,
        /// Non-first fragments also go through this SA.
        NON_FIRST_FRAGMENTS_ALSO = 16395,
        /// MOBIKE (RFC 4555) supported.
        MOBIKE_SUPPORTED = 16396,
        /// An additional IPv4 address of the sender (MOBIKE).
        ADDITIONAL_IP4_ADDRESS = 16397,
        /// An additional IPv6 address of the sender (MOBIKE).
        ADDITIONAL_IP6_ADDRESS = 16398,
        /// The sender has no additional addresses (MOBIKE).
        NO_ADDITIONAL_ADDRESSES = 16399,
        /// Move the SAs to the addresses of this message (MOBIKE).
        UPDATE_SA_ADDRESSES = 16400,
        /// Return routability check (MOBIKE).
        COOKIE2 = 16401,
        /// NAT is not allowed on this path (MOBIKE).
        NO_NATS_ALLOWED = 16402,
        /// Seconds until the peer must reauthenticate (RFC 4478).
        AUTH_LIFETIME = 16403,
        /// Multiple authentication rounds supported (RFC 4739).
        MULTIPLE_AUTH_SUPPORTED = 16404,
        /// Another authentication round follows (RFC 4739).
        ANOTHER_AUTH_FOLLOWS = 16405,
        /// Redirects supported (RFC 5685).
        REDIRECT_SUPPORTED = 16406,
        /// Go to another gateway (RFC 5685).
        REDIRECT = 16407,
        /// The client was redirected from this gateway (RFC 5685).
        REDIRECTED_FROM = 16408,
        /// EAP-only authentication of the responder (RFC 5998).
        EAP_ONLY_AUTHENTICATION = 16417,
        /// IKE SA without a CHILD SA (RFC 6023).
        CHILDLESS_IKEV2_SUPPORTED = 16418,
        /// Message id synchronization supported (RFC 6311).
        IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420,
        /// IPsec replay counter synchronization supported (RFC 6311).
        IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED = 16421,
        /// Message id synchronization (RFC 6311).
        IKEV2_MESSAGE_ID_SYNC = 16422,
        /// IPsec replay counter synchronization (RFC 6311).
        IPSEC_REPLAY_COUNTER_SYNC = 16423,
        /// IKE fragmentation (RFC 7383) supported; data: none.
        IKEV2_FRAGMENTATION_SUPPORTED = 16430,
        /// Hash algorithms accepted in RFC 7427 signatures; data: 2-byte ids.
        SIGNATURE_HASH_ALGORITHMS = 16431,
        /// Clone IKE SA supported (RFC 7791).
        CLONE_IKE_SA_SUPPORTED = 16432,
        /// Clone IKE SA (RFC 7791).
        CLONE_IKE_SA = 16433,
        /// Client puzzle (RFC 8019).
        PUZZLE = 16434,
        /// Postquantum preshared key in use (RFC 8784).
        USE_PPK = 16435,
        /// Postquantum preshared key identity (RFC 8784).
        PPK_IDENTITY = 16436,
        /// Authentication without the PPK (RFC 8784).
        NO_PPK_AUTH = 16437,
        /// IKE_INTERMEDIATE supported (RFC 9242).
        INTERMEDIATE_EXCHANGE_SUPPORTED = 16438,
    }
}

impl NotifyType {
    /// Whether this is an error type (below 16384).
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}

/// A Notify payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyPayload<'a> {
    /// The SA the notification is about (ESP for REKEY_SA); [`ProtocolId::NONE`] when
    /// `spi` is empty.
    pub protocol_id: ProtocolId,
    /// The SPI of that SA; usually empty.
    pub spi: &'a [u8],
    /// What is being notified.
    pub notify_type: NotifyType,
    /// Type-specific data.
    pub data: &'a [u8],
}

impl<'a> NotifyPayload<'a> {
    /// A notification about the IKE SA as a whole (no protocol, no SPI).
    pub fn new(notify_type: NotifyType, data: &'a [u8]) -> Self {
        Self {
            protocol_id: ProtocolId::NONE,
            spi: &[],
            notify_type,
            data,
        }
    }

    /// Parses the payload body (after the generic header).
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let protocol_id = ProtocolId(r.u8()?);
        let spi_size = r.u8()?;
        let notify_type = NotifyType(r.u16()?);
        let spi = r.take(usize::from(spi_size))?;
        Ok(Self {
            protocol_id,
            spi,
            notify_type,
            data: r.rest(),
        })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        4 + self.spi.len() + self.data.len()
    }

    /// Appends the body.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(self.protocol_id.0);
        out.push(u8::try_from(self.spi.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.notify_type.0.to_be_bytes());
        out.extend_from_slice(self.spi);
        out.extend_from_slice(self.data);
    }

    /// The SPI as a 32-bit number when it is 4 bytes long (REKEY_SA of an ESP SA).
    pub fn spi_u32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.spi.try_into().ok()?))
    }

    /// The hash of a NAT_DETECTION_SOURCE_IP / NAT_DETECTION_DESTINATION_IP notification;
    /// `None` for other types or a length other than 20.
    pub fn nat_detection_hash(&self) -> Option<&'a [u8; NAT_DETECTION_HASH_LEN]> {
        if self.notify_type != NotifyType::NAT_DETECTION_SOURCE_IP
            && self.notify_type != NotifyType::NAT_DETECTION_DESTINATION_IP
        {
            return None;
        }
        self.data.try_into().ok()
    }

    /// The group an INVALID_KE_PAYLOAD notification asks for.
    pub fn invalid_ke_group(&self) -> Option<u16> {
        if self.notify_type != NotifyType::INVALID_KE_PAYLOAD {
            return None;
        }
        Some(u16::from_be_bytes(self.data.try_into().ok()?))
    }

    /// The hash algorithms of a SIGNATURE_HASH_ALGORITHMS notification; `None` for other
    /// types or an odd length.
    pub fn signature_hash_algorithms(&self) -> Option<impl Iterator<Item = HashAlgorithm> + 'a> {
        if self.notify_type != NotifyType::SIGNATURE_HASH_ALGORITHMS
            || !self.data.len().is_multiple_of(2)
        {
            return None;
        }
        let (ids, _) = self.data.as_chunks::<2>();
        Some(ids.iter().map(|id| HashAlgorithm(u16::from_be_bytes(*id))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::WireError;
    use super::*;

    fn round_trip(bytes: &[u8]) -> NotifyPayload<'_> {
        let n = NotifyPayload::parse_body(bytes).unwrap();
        let mut out = Vec::new();
        n.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), n.body_len());
        n
    }

    #[test]
    fn nat_detection_source_ip() {
        let mut bytes = vec![0, 0, 0x40, 0x04];
        bytes.extend([0x11; 20]);
        let n = round_trip(&bytes);
        assert_eq!(n.notify_type, NotifyType::NAT_DETECTION_SOURCE_IP);
        assert_eq!(n.protocol_id, ProtocolId::NONE);
        assert!(n.spi.is_empty());
        assert_eq!(n.nat_detection_hash(), Some(&[0x11; 20]));
        assert!(!n.notify_type.is_error());
        assert_eq!(
            n,
            NotifyPayload::new(NotifyType::NAT_DETECTION_SOURCE_IP, &[0x11; 20])
        );
    }

    #[test]
    fn invalid_ke_payload() {
        let n = round_trip(&[0, 0, 0, 17, 0, 19]);
        assert!(n.notify_type.is_error());
        assert_eq!(n.invalid_ke_group(), Some(19));
        assert_eq!(n.nat_detection_hash(), None);
        assert_eq!(format!("{:?}", n.notify_type), "INVALID_KE_PAYLOAD");
    }

    #[test]
    fn rekey_sa_with_esp_spi() {
        let n = round_trip(&[3, 4, 0x40, 0x09, 0xca, 0xfe, 0xba, 0xbe]);
        assert_eq!(n.notify_type, NotifyType::REKEY_SA);
        assert_eq!(n.protocol_id, ProtocolId::ESP);
        assert_eq!(n.spi_u32(), Some(0xcafe_babe));
        assert!(n.data.is_empty());
    }

    #[test]
    fn signature_hash_algorithms() {
        // What strongSwan 5.9 announces: SHA2-256, SHA2-384, SHA2-512, Identity.
        let n = round_trip(&[0, 0, 0x40, 0x2f, 0, 2, 0, 3, 0, 4, 0, 5]);
        let algs: Vec<_> = n.signature_hash_algorithms().unwrap().collect();
        assert_eq!(
            algs,
            [
                HashAlgorithm::SHA2_256,
                HashAlgorithm::SHA2_384,
                HashAlgorithm::SHA2_512,
                HashAlgorithm::IDENTITY
            ]
        );
        let odd = round_trip(&[0, 0, 0x40, 0x2f, 0, 2, 0]);
        assert!(odd.signature_hash_algorithms().is_none());
    }

    #[test]
    fn spi_past_end_is_truncated() {
        assert_eq!(
            NotifyPayload::parse_body(&[3, 4, 0x40, 0x09, 1, 2]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            NotifyPayload::parse_body(&[0, 0, 0x40]),
            Err(WireError::Truncated)
        );
    }
}
