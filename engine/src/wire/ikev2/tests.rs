//! Message-level tests: a strongSwan 5.9 IKE_SA_INIT request written byte by byte from
//! the RFC 7296 layouts, an IKE_AUTH request's inner payloads, chain errors, and random
//! inputs (nothing may panic; whatever parses re-emits to the same length and to a fixed
//! point).

use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::auth::DER_ECDSA_WITH_SHA256;
use super::sa::*;
use super::*;

// ---- hand-written bytes, independent of the encoder under test ----

fn generic(next: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![next, 0];
    v.extend_from_slice(&u16::try_from(body.len() + 4).unwrap().to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn transform(last: bool, ty: u8, id: u16, key_len: Option<u16>) -> Vec<u8> {
    let len: u16 = if key_len.is_some() { 12 } else { 8 };
    let mut v = vec![if last { 0 } else { 3 }, 0];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(ty);
    v.push(0);
    v.extend_from_slice(&id.to_be_bytes());
    if let Some(k) = key_len {
        v.extend_from_slice(&[0x80, 14]);
        v.extend_from_slice(&k.to_be_bytes());
    }
    v
}

fn proposal(last: bool, number: u8, transforms: &[(u8, u16, Option<u16>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, &(ty, id, k)) in transforms.iter().enumerate() {
        body.extend(transform(i + 1 == transforms.len(), ty, id, k));
    }
    let mut v = vec![if last { 0 } else { 2 }, 0];
    v.extend_from_slice(&u16::try_from(body.len() + 8).unwrap().to_be_bytes());
    v.extend_from_slice(&[number, 1, 0, u8::try_from(transforms.len()).unwrap()]);
    v.extend(body);
    v
}

fn notify(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0];
    v.extend_from_slice(&ty.to_be_bytes());
    v.extend_from_slice(data);
    v
}

const DH_LIST: [u16; 10] = [31, 32, 19, 20, 21, 15, 16, 17, 18, 14];

fn classic_proposal() -> Vec<(u8, u16, Option<u16>)> {
    let mut t = vec![
        (1, ENCR_AES_CBC, Some(128)),
        (1, ENCR_AES_CBC, Some(192)),
        (1, ENCR_AES_CBC, Some(256)),
        (1, ENCR_AES_CTR, Some(128)),
        (1, ENCR_AES_CTR, Some(256)),
        (3, AUTH_HMAC_SHA2_256_128, None),
        (3, AUTH_HMAC_SHA2_384_192, None),
        (3, AUTH_HMAC_SHA2_512_256, None),
        (3, AUTH_HMAC_SHA1_96, None),
        (2, PRF_HMAC_SHA2_256, None),
        (2, PRF_HMAC_SHA2_384, None),
        (2, PRF_HMAC_SHA2_512, None),
        (2, PRF_HMAC_SHA1, None),
    ];
    t.extend(DH_LIST.iter().map(|&g| (4, g, None)));
    t
}

fn aead_proposal() -> Vec<(u8, u16, Option<u16>)> {
    let mut t = vec![
        (1, ENCR_AES_GCM_16, Some(128)),
        (1, ENCR_AES_GCM_16, Some(192)),
        (1, ENCR_AES_GCM_16, Some(256)),
        (1, ENCR_AES_CCM_16, Some(128)),
        (1, ENCR_AES_CCM_16, Some(256)),
        (1, ENCR_CHACHA20_POLY1305, None),
        (2, PRF_HMAC_SHA2_256, None),
        (2, PRF_HMAC_SHA2_384, None),
        (2, PRF_HMAC_SHA2_512, None),
        (2, PRF_HMAC_SHA1, None),
    ];
    t.extend(DH_LIST.iter().map(|&g| (4, g, None)));
    t
}

/// What `charon-cmd` / swanctl 5.9 sends first (interop README): SA with a classic and an
/// AEAD proposal, KE for x25519, a 32-byte nonce, both NAT detection hashes,
/// IKEV2_FRAGMENTATION_SUPPORTED, SIGNATURE_HASH_ALGORITHMS (2,3,4,5), REDIRECT_SUPPORTED.
fn strongswan_ike_sa_init() -> Vec<u8> {
    let mut sa = proposal(false, 1, &classic_proposal());
    sa.extend(proposal(true, 2, &aead_proposal()));
    let mut ke = vec![0, 31, 0, 0];
    ke.extend((0..32u8).map(|i| i.wrapping_mul(7)));
    let nonce: Vec<u8> = (0..32u8).map(|i| 0xa0 ^ i).collect();

    let mut payloads = Vec::new();
    payloads.extend(generic(34, &sa));
    payloads.extend(generic(40, &ke));
    payloads.extend(generic(41, &nonce));
    payloads.extend(generic(41, &notify(16388, &[0x5e; 20])));
    payloads.extend(generic(41, &notify(16389, &[0xde; 20])));
    payloads.extend(generic(41, &notify(16430, &[])));
    payloads.extend(generic(41, &notify(16431, &[0, 2, 0, 3, 0, 4, 0, 5])));
    payloads.extend(generic(0, &notify(16406, &[])));

    let mut msg = vec![0x3c, 0x5b, 0x2a, 0x19, 0x08, 0xf7, 0xe6, 0xd5]; // SPIi
    msg.extend([0; 8]); // SPIr
    msg.extend([33, 0x20, 34, 0x08]); // SA first, v2.0, IKE_SA_INIT, Initiator
    msg.extend([0; 4]); // message id 0
    msg.extend(u32::try_from(28 + payloads.len()).unwrap().to_be_bytes());
    msg.extend(payloads);
    msg
}

#[test]
fn parses_strongswan_ike_sa_init_request() {
    let bytes = strongswan_ike_sa_init();
    let msg = Message::parse(&bytes).unwrap();
    let h = msg.header;
    assert_eq!(h.initiator_spi, 0x3c5b_2a19_08f7_e6d5);
    assert_eq!(h.responder_spi, 0);
    assert_eq!(h.exchange, ExchangeType::IKE_SA_INIT);
    assert!(h.flags.initiator() && !h.flags.response());
    assert_eq!(h.message_id, 0);
    assert_eq!(msg.payloads.len(), 8);

    let Payload::Sa(sa) = &msg.payloads[0] else {
        panic!("first payload is not SA");
    };
    assert_eq!(sa.proposals.len(), 2);
    let (classic, aead) = (&sa.proposals[0], &sa.proposals[1]);
    assert_eq!((classic.number, aead.number), (1, 2));
    assert!(classic.spi.is_empty() && classic.protocol == ProtocolId::IKE);
    assert_eq!(classic.transforms.len(), classic_proposal().len());
    let gcm: Vec<_> = aead
        .transforms_of(TransformType::ENCR)
        .filter(|t| t.id == ENCR_AES_GCM_16)
        .filter_map(Transform::key_length)
        .collect();
    assert_eq!(gcm, [128, 192, 256]);
    assert!(aead.transforms_of(TransformType::INTEG).next().is_none());
    let groups: Vec<u16> = aead
        .transforms_of(TransformType::DH)
        .map(|t| t.id)
        .collect();
    assert_eq!(groups, DH_LIST);
    assert!(
        aead.transforms_of(TransformType::ENCR)
            .any(|t| t.id == ENCR_CHACHA20_POLY1305 && t.key_length().is_none())
    );

    let Payload::Ke(ke) = msg.payloads[1] else {
        panic!("second payload is not KE");
    };
    assert_eq!((ke.dh_group, ke.data.len()), (DH_CURVE25519, 32));
    let Payload::Nonce(nonce) = msg.payloads[2] else {
        panic!("third payload is not a nonce");
    };
    assert!(nonce_len_ok(nonce));

    let types: Vec<_> = msg.notifies().map(|n| n.notify_type).collect();
    assert_eq!(
        types,
        [
            NotifyType::NAT_DETECTION_SOURCE_IP,
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
            NotifyType::SIGNATURE_HASH_ALGORITHMS,
            NotifyType::REDIRECT_SUPPORTED,
        ]
    );
    let src = msg.notify(NotifyType::NAT_DETECTION_SOURCE_IP).unwrap();
    assert_eq!(src.nat_detection_hash(), Some(&[0x5e; 20]));
    let hashes: Vec<_> = msg
        .notify(NotifyType::SIGNATURE_HASH_ALGORITHMS)
        .unwrap()
        .signature_hash_algorithms()
        .unwrap()
        .collect();
    assert!(hashes.contains(&HashAlgorithm::SHA2_256));
    assert_eq!(msg.encrypted_offset(), None);

    // The encoder reproduces strongSwan's bytes exactly.
    let mut out = Vec::new();
    msg.emit(&mut out);
    assert_eq!(out.len(), msg.encoded_len());
    assert_eq!(out, bytes);

    // Over port 4500 (charon-cmd sends IKE_SA_INIT straight there) it has a marker.
    let mut on_4500 = NON_ESP_MARKER.to_vec();
    on_4500.extend_from_slice(&bytes);
    let Classified::Ike(ike) = strip_non_esp_marker(&on_4500) else {
        panic!("not classified as IKE");
    };
    assert_eq!(Message::parse(ike).unwrap(), msg);
}

#[test]
fn builds_responder_ike_sa_init_and_invalid_ke() {
    // Our answer when the initiator's KE group is not the one we pick.
    let group = DH_ECP_256.to_be_bytes();
    let msg = Message {
        header: IkeHeader {
            initiator_spi: 1,
            responder_spi: 0,
            next_payload: 0,
            version: IKE_VERSION,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: Flags::new(false, true),
            message_id: 0,
            length: 0,
        },
        payloads: vec![Payload::Notify(NotifyPayload::new(
            NotifyType::INVALID_KE_PAYLOAD,
            &group,
        ))],
    };
    let mut out = Vec::new();
    msg.emit(&mut out);
    #[rustfmt::skip]
    let expected = [
        0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
        41, 0x20, 34, 0x20, 0, 0, 0, 0, 0, 0, 0, 38,
        0, 0, 0, 10, 0, 0, 0, 17, 0, 19,
    ];
    assert_eq!(out, expected);
    let back = Message::parse(&out).unwrap();
    assert_eq!(back.header.length, 38);
    assert_eq!(
        back.notify(NotifyType::INVALID_KE_PAYLOAD)
            .and_then(NotifyPayload::invalid_ke_group),
        Some(DH_ECP_256)
    );
}

/// The inner payloads of strongSwan's IKE_AUTH request (interop README).
fn ike_auth_inner<'a>(cert: &'a [u8], ca_hash: &'a [u8], auth: &'a [u8]) -> Vec<Payload<'a>> {
    let esp = |n| Proposal {
        number: n,
        protocol: ProtocolId::ESP,
        spi: &[0xc0, 0xff, 0xee, 0x01],
        transforms: vec![
            Transform::with_key_length(TransformType::ENCR, ENCR_AES_GCM_16, 256),
            Transform::new(TransformType::ESN, ESN_NONE),
        ],
    };
    vec![
        Payload::IdI(IdPayload::new(IdType::RFC822_ADDR, b"client1@x")),
        Payload::Cert(CertPayload {
            encoding: CertEncoding::X509_SIGNATURE,
            data: cert,
        }),
        Payload::Notify(NotifyPayload::new(NotifyType::INITIAL_CONTACT, &[])),
        Payload::CertReq(CertReqPayload {
            encoding: CertEncoding::X509_SIGNATURE,
            authorities: ca_hash,
        }),
        Payload::Auth(AuthPayload {
            method: AuthMethod::DIGITAL_SIGNATURE,
            data: auth,
        }),
        Payload::Cp(CpPayload {
            cfg_type: CfgType::CFG_REQUEST,
            attributes: vec![
                CfgAttribute::request(CfgAttrType::INTERNAL_IP4_ADDRESS),
                CfgAttribute::request(CfgAttrType::INTERNAL_IP4_DNS),
            ],
        }),
        Payload::Sa(SaPayload {
            proposals: vec![esp(1), esp(2)],
        }),
        Payload::TsI(TsPayload::new(vec![TrafficSelector::any_v4()])),
        Payload::TsR(TsPayload::new(vec![TrafficSelector::any_v4()])),
        Payload::Notify(NotifyPayload::new(NotifyType::MOBIKE_SUPPORTED, &[])),
        Payload::Notify(NotifyPayload::new(
            NotifyType::ADDITIONAL_IP4_ADDRESS,
            &[192, 0, 2, 7],
        )),
        Payload::Notify(NotifyPayload::new(NotifyType::MULTIPLE_AUTH_SUPPORTED, &[])),
        Payload::Notify(NotifyPayload::new(NotifyType::EAP_ONLY_AUTHENTICATION, &[])),
        Payload::Notify(NotifyPayload::new(
            NotifyType::IKEV2_MESSAGE_ID_SYNC_SUPPORTED,
            &[],
        )),
    ]
}

#[test]
fn ike_auth_inner_payloads_round_trip_through_sk() {
    let cert = [0x30, 0x82, 0x01, 0x00, 1, 2, 3];
    let ca_hash = [0x42; 20];
    let mut auth = Vec::new();
    emit_digital_signature_data(DER_ECDSA_WITH_SHA256, &[0x30, 0x45, 1, 2, 3], &mut auth);
    let inner = ike_auth_inner(&cert, &ca_hash, &auth);

    let mut plain = Vec::new();
    let first = emit_payloads(&inner, &mut plain);
    assert_eq!(first, payload_type::IDI);
    let parsed = parse_inner(first, &plain).unwrap();
    assert_eq!(parsed, inner);
    let Payload::Auth(a) = &parsed[4] else {
        panic!("AUTH not at index 4");
    };
    assert_eq!(
        a.digital_signature().unwrap().algorithm(),
        Some(SignatureAlgorithm::EcdsaSha256)
    );
    let Payload::IdI(id) = &parsed[0] else {
        panic!("IDi not first");
    };
    assert_eq!(id.text(), Some("client1@x"));

    // Wrap in SK with an AES-GCM shaped body (8-byte IV, 16-byte ICV; identity cipher).
    sk::pad(&mut plain, 1);
    let header = IkeHeader {
        initiator_spi: 7,
        responder_spi: 8,
        next_payload: 0,
        version: IKE_VERSION,
        exchange: ExchangeType::IKE_AUTH,
        flags: Flags::new(true, false),
        message_id: 1,
        length: 0,
    };
    let mut msg = Vec::new();
    let aad = sk::emit_encrypted_header(&header, first, 8 + plain.len() + 16, &mut msg);
    msg.extend([0; 8]);
    msg.extend_from_slice(&plain);
    msg.extend([0; 16]);
    let outer = Message::parse(&msg).unwrap();
    let off = outer.encrypted_offset().unwrap();
    assert_eq!(sk::associated_data(&msg, off, false).unwrap(), &msg[aad]);
    let Payload::Encrypted { first_inner, body } = outer.payloads[0] else {
        panic!("no SK");
    };
    let parts = sk::split(body, 8, 16).unwrap();
    let inner_back = parse_inner(first_inner, sk::strip_padding(parts.ciphertext).unwrap());
    assert_eq!(inner_back.unwrap(), inner);
}

#[test]
fn informational_delete_and_empty_dpd() {
    // DPD: an INFORMATIONAL with an SK payload whose plaintext is empty.
    let mut plain = Vec::new();
    assert_eq!(emit_payloads(&[], &mut plain), payload_type::NONE);
    assert!(parse_inner(0, &plain).unwrap().is_empty());

    let spis = 0xc1c2_c3c4u32.to_be_bytes();
    let inner = vec![Payload::Delete(DeletePayload::esp(&spis))];
    let mut plain = Vec::new();
    let first = emit_payloads(&inner, &mut plain);
    assert_eq!(plain, [0, 0, 0, 12, 3, 4, 0, 1, 0xc1, 0xc2, 0xc3, 0xc4]);
    assert_eq!(parse_inner(first, &plain).unwrap(), inner);
}

fn message_with(next: u8, payload_bytes: &[u8]) -> Vec<u8> {
    let mut msg = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0];
    msg.extend([next, 0x20, 37, 0x08, 0, 0, 0, 2]);
    msg.extend(
        u32::try_from(28 + payload_bytes.len())
            .unwrap()
            .to_be_bytes(),
    );
    msg.extend_from_slice(payload_bytes);
    msg
}

#[test]
fn header_only_message() {
    let msg = message_with(0, &[]);
    let parsed = Message::parse(&msg).unwrap();
    assert!(parsed.payloads.is_empty());
    let mut out = Vec::new();
    parsed.emit(&mut out);
    assert_eq!(out, msg);
}

#[test]
fn unknown_payloads() {
    // A non-critical unknown payload (type 200) and an EAP payload are kept verbatim.
    let mut bytes = vec![48, 0, 0, 7, 0xaa, 0xbb, 0xcc];
    bytes.extend([0, 0, 0, 5, 1]);
    let msg = message_with(200, &bytes);
    let parsed = Message::parse(&msg).unwrap();
    assert_eq!(
        parsed.payloads,
        [
            Payload::Unknown {
                payload_type: 200,
                critical: false,
                body: &[0xaa, 0xbb, 0xcc]
            },
            Payload::Unknown {
                payload_type: payload_type::EAP,
                critical: false,
                body: &[1]
            },
        ]
    );
    let mut out = Vec::new();
    parsed.emit(&mut out);
    assert_eq!(out, msg);

    // With the critical bit the message is refused, naming the type.
    let critical = message_with(200, &[0, 0x80, 0, 4]);
    let err = Message::parse(&critical).unwrap_err();
    assert_eq!(err, WireError::UnsupportedCriticalPayload(200));
    assert_eq!(err.notify_type(), NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD);
    // The critical bit on a payload we know is ignored.
    let known = message_with(payload_type::NONCE, &[0, 0x80, 0, 5, 9]);
    assert_eq!(
        Message::parse(&known).unwrap().payloads,
        [Payload::Nonce(&[9])]
    );
    // An unknown critical payload we build is emitted with the bit.
    let built = Message {
        header: Message::parse(&critical)
            .map_or_else(|_| IkeHeader::parse(&critical).unwrap(), |m| m.header),
        payloads: vec![Payload::Unknown {
            payload_type: 200,
            critical: true,
            body: &[],
        }],
    };
    let mut out = Vec::new();
    built.emit(&mut out);
    assert_eq!(out, critical);
}

#[test]
fn chain_errors() {
    let e = |payloads: &[u8], next: u8| {
        Message::parse(&message_with(next, payloads)).map(|m| m.payloads.len())
    };
    let nonce = payload_type::NONCE;
    // Length below 4.
    assert!(matches!(
        e(&[0, 0, 0, 3], nonce),
        Err(WireError::BadPayloadLength { length: 3, .. })
    ));
    // Length past the end.
    assert!(matches!(
        e(&[0, 0, 0, 9, 1], nonce),
        Err(WireError::BadPayloadLength { length: 9, .. })
    ));
    // Chain says another payload follows but the message ends.
    assert_eq!(e(&[nonce, 0, 0, 5, 1], nonce), Err(WireError::Truncated));
    // Chain ends but bytes remain.
    assert_eq!(
        e(&[0, 0, 0, 5, 1, 0xee], nonce),
        Err(WireError::TrailingBytes)
    );
    // Payload bytes after a header with no payloads.
    assert_eq!(e(&[1], 0), Err(WireError::TrailingBytes));
    // SK must be last.
    assert!(matches!(
        e(&[0, 0, 0, 5, 1, 0, 0, 0, 4], payload_type::SK),
        Err(WireError::Invalid(_))
    ));
    // A payload error inside the chain is reported.
    assert_eq!(
        e(&[0, 0, 0, 6, 1, 0], payload_type::NOTIFY),
        Err(WireError::Truncated)
    );
    // Too many payloads.
    let mut many = Vec::new();
    for i in 0..=MAX_PAYLOADS {
        let next = if i == MAX_PAYLOADS {
            0
        } else {
            payload_type::VENDOR_ID
        };
        many.extend([next, 0, 0, 4]);
    }
    assert_eq!(
        e(&many, payload_type::VENDOR_ID),
        Err(WireError::TooMany {
            what: "payloads",
            limit: MAX_PAYLOADS
        })
    );
    // SK inside SK.
    assert!(matches!(
        parse_inner(payload_type::SK, &[0, 0, 0, 4]),
        Err(WireError::Invalid(_))
    ));
    assert!(matches!(
        parse_inner(payload_type::SKF, &[0, 0, 0, 8, 0, 1, 0, 1]),
        Err(WireError::Invalid(_))
    ));
}

#[test]
fn version_checks() {
    let mut msg = message_with(0, &[]);
    msg[17] = 0x30;
    assert_eq!(
        Message::parse(&msg),
        Err(WireError::UnsupportedMajorVersion(3))
    );
    assert_eq!(
        WireError::UnsupportedMajorVersion(3).notify_type(),
        NotifyType::INVALID_MAJOR_VERSION
    );
    // The header still parses, so the responder can answer.
    assert_eq!(IkeHeader::parse(&msg).unwrap().major_version(), 3);
    // A higher minor version is accepted and kept.
    msg[17] = 0x21;
    let parsed = Message::parse(&msg).unwrap();
    assert_eq!(parsed.header.minor_version(), 1);
    let mut out = Vec::new();
    parsed.emit(&mut out);
    assert_eq!(out, msg);
}

// ---- random inputs ----

/// Parses, and if that succeeds, checks the emitted form: same length as the input (the
/// codec keeps every length-bearing byte), parses to the same value, and is a fixed point.
fn check(bytes: &[u8]) -> bool {
    let Ok(msg) = Message::parse(bytes) else {
        return false;
    };
    let mut out = Vec::new();
    msg.emit(&mut out);
    assert_eq!(out.len(), bytes.len());
    assert_eq!(out.len(), msg.encoded_len());
    let again = Message::parse(&out).expect("re-emitted message parses");
    assert_eq!(again, msg);
    let mut out2 = Vec::new();
    again.emit(&mut out2);
    assert_eq!(out2, out);
    if let Some(off) = msg.encrypted_offset() {
        // The SK/SKF payload found at that offset runs to the end of the message.
        let len = bytes
            .get(off + 2..off + 4)
            .expect("SK header inside the message");
        assert_eq!(
            usize::from(u16::from_be_bytes([len[0], len[1]])),
            bytes.len() - off
        );
    }
    true
}

#[test]
fn random_bytes_never_panic() {
    const TYPES: [u8; 17] = [
        33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 53, 200,
    ];
    let mut rng = StdRng::seed_from_u64(0x1c2e_0002);
    let mut parsed = 0;
    for i in 0..20_000 {
        let bytes = if i % 2 == 0 {
            // Pure noise.
            let mut bytes = vec![0u8; rng.random_range(0..200)];
            rng.fill(&mut bytes[..]);
            bytes
        } else {
            // A consistent header and generic payload chain around random bodies, so
            // that the payload decoders see the noise.
            let mut types = Vec::new();
            for _ in 0..rng.random_range(0..6) {
                types.push(TYPES[rng.random_range(0..TYPES.len())]);
            }
            let mut chain = Vec::new();
            for (j, _) in types.iter().enumerate() {
                let next = types.get(j + 1).copied().unwrap_or(0);
                let mut body = vec![0u8; rng.random_range(0..48)];
                rng.fill(&mut body[..]);
                chain.extend(generic(next, &body));
            }
            message_with(types.first().copied().unwrap_or(0), &chain)
        };
        if check(&bytes) {
            parsed += 1;
        }
        let _ = parse_inner(bytes.first().copied().unwrap_or(0), &bytes);
        let _ = strip_non_esp_marker(&bytes);
        let _ = sk::strip_padding(&bytes);
        let _ = sk::split(&bytes, usize::from(bytes.first().copied().unwrap_or(0)), 16);
    }
    assert!(parsed > 1000, "only {parsed} random inputs parsed");
}

#[test]
fn mutated_real_messages_never_panic() {
    let cert = [0x30, 0x82, 0x01, 0x00, 1, 2, 3];
    let ca_hash = [0x42; 20];
    let auth = [
        12, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 1,
    ];
    let inner = ike_auth_inner(&cert, &ca_hash, &auth);
    let mut plain = Vec::new();
    let first = emit_payloads(&inner, &mut plain);
    let plain_msg = message_with(first, &plain);
    let seeds = [strongswan_ike_sa_init(), plain_msg];

    let mut rng = StdRng::seed_from_u64(0x1c2e_0003);
    let mut parsed = 0;
    for i in 0..20_000 {
        let mut bytes = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            if bytes.len() <= HEADER_LEN {
                break;
            }
            let at = rng.random_range(HEADER_LEN..bytes.len());
            match rng.random_range(0..4) {
                0 => bytes[at] ^= 1 << rng.random_range(0..8),
                1 => bytes[at] = rng.random(),
                2 => bytes[at] = [0, 1, 3, 4, 8, 0xff][rng.random_range(0..6)],
                _ => {
                    bytes.truncate(at);
                    let len = u32::try_from(bytes.len()).unwrap();
                    bytes[24..28].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
        if check(&bytes) {
            parsed += 1;
        }
    }
    assert!(parsed > 1000, "only {parsed} mutants parsed");
}

/// Random well-formed messages built through the API: emit, parse back equal, and emit
/// again to the same bytes.
#[test]
fn random_structured_messages_round_trip() {
    let mut rng = StdRng::seed_from_u64(0x1c2e_0004);
    let blob: Vec<u8> = (0..=255u8).collect();
    for _ in 0..2_000 {
        let mut payloads = Vec::new();
        for _ in 0..rng.random_range(0..12) {
            let data = &blob[..rng.random_range(0..40)];
            let p = match rng.random_range(0..15) {
                0 => Payload::Sa(SaPayload {
                    proposals: (1..=rng.random_range(1..4u8))
                        .map(|n| Proposal {
                            number: n,
                            protocol: ProtocolId(rng.random_range(1..4)),
                            spi: &blob[..[0, 4, 8][rng.random_range(0..3)]],
                            transforms: (0..rng.random_range(0..6))
                                .map(|_| {
                                    let ty = TransformType(rng.random_range(1..6));
                                    if rng.random_bool(0.3) {
                                        Transform::with_key_length(ty, rng.random(), 256)
                                    } else {
                                        Transform::new(ty, rng.random())
                                    }
                                })
                                .collect(),
                        })
                        .collect(),
                }),
                1 => Payload::Ke(KePayload {
                    dh_group: rng.random(),
                    data,
                }),
                2 => Payload::IdI(IdPayload::new(IdType(rng.random()), data)),
                3 => Payload::IdR(IdPayload::new(IdType(rng.random()), data)),
                4 => Payload::Cert(CertPayload {
                    encoding: CertEncoding(rng.random()),
                    data,
                }),
                5 => Payload::CertReq(CertReqPayload {
                    encoding: CertEncoding(rng.random()),
                    authorities: data,
                }),
                6 => Payload::Auth(AuthPayload {
                    method: AuthMethod(rng.random()),
                    data,
                }),
                7 => Payload::Nonce(data),
                8 => Payload::Notify(NotifyPayload {
                    protocol_id: ProtocolId(rng.random_range(0..4)),
                    spi: &blob[..[0, 4, 8][rng.random_range(0..3)]],
                    notify_type: NotifyType(rng.random()),
                    data,
                }),
                9 => Payload::Delete(DeletePayload::esp(&blob[..4 * rng.random_range(0..4)])),
                10 => Payload::VendorId(data),
                11 | 12 => {
                    let ts = TsPayload::new(
                        (0..rng.random_range(0..4))
                            .map(|_| {
                                if rng.random_bool(0.5) {
                                    TrafficSelector::from_net(
                                        ipnet::Ipv4Net::new(
                                            Ipv4Addr::from(rng.random::<u32>()),
                                            rng.random_range(0..=32),
                                        )
                                        .unwrap()
                                        .into(),
                                    )
                                } else {
                                    TrafficSelector::any_v6()
                                }
                            })
                            .collect(),
                    );
                    if rng.random_bool(0.5) {
                        Payload::TsI(ts)
                    } else {
                        Payload::TsR(ts)
                    }
                }
                13 => Payload::Cp(CpPayload {
                    cfg_type: CfgType(rng.random_range(1..5)),
                    attributes: (0..rng.random_range(0..5))
                        .map(|_| CfgAttribute {
                            attr_type: CfgAttrType(rng.random_range(0..0x8000)),
                            value: &blob[..rng.random_range(0..18)],
                        })
                        .collect(),
                }),
                _ => Payload::Unknown {
                    payload_type: rng.random_range(54..=255),
                    critical: false,
                    body: data,
                },
            };
            payloads.push(p);
        }
        if rng.random_bool(0.3) {
            payloads.push(Payload::Encrypted {
                first_inner: rng.random(),
                body: &blob[..rng.random_range(0..64)],
            });
        }
        let msg = Message {
            header: IkeHeader {
                initiator_spi: rng.random(),
                responder_spi: rng.random(),
                next_payload: 0,
                version: IKE_VERSION,
                exchange: ExchangeType(rng.random_range(34..38)),
                flags: Flags(rng.random::<u8>() & 0x38),
                message_id: rng.random(),
                length: 0,
            },
            payloads,
        };
        let mut out = Vec::new();
        msg.emit(&mut out);
        let back = Message::parse(&out).unwrap_or_else(|e| panic!("{e}: {msg:?}"));
        assert_eq!(back.payloads, msg.payloads);
        assert_eq!(back.header.length as usize, out.len());
        let mut again = Vec::new();
        back.emit(&mut again);
        assert_eq!(again, out);
        if back.payloads.last().is_some_and(Payload::is_encrypted) {
            let off = back.encrypted_offset().unwrap();
            assert_eq!(
                out[off..].len(),
                back.payloads.last().unwrap().encoded_len()
            );
        }
    }
}
