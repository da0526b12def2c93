//! Key files made by the stock tool (`openvpn --genkey`, OpenVPN 2.6.14) and wrap/unwrap
//! round trips.

use super::*;

const STATIC: &str = include_str!("testdata/static.key");
const V2_SERVER: &str = include_str!("testdata/v2-server.key");
const V2_CLIENT: &str = include_str!("testdata/v2-client.key");
/// Made with metadata `aGVsbG8=` (base64 of "hello").
const V2_CLIENT_META: &str = include_str!("testdata/v2-client-meta.key");

#[test]
fn stock_static_key_parses_and_prints_back() {
    let k = StaticKey::from_pem(STATIC).expect("stock key");
    let again = StaticKey::from_pem(&k.to_pem()).expect("our output");
    assert_eq!(k.bytes(), again.bytes());
    assert!(!format!("{k:?}").contains(&format!("{:02x}", k.bytes()[0]).repeat(2)));
}

#[test]
fn stock_v2_client_key_opens_with_its_server_key() {
    let server = TlsCryptV2ServerKey::from_pem(V2_SERVER).expect("server key");
    let client = TlsCryptV2ClientKey::from_pem(V2_CLIENT).expect("client key");
    let (kc, meta) = server.unwrap_client_key(client.wkc()).expect("opens");
    assert_eq!(kc.bytes(), client.kc().bytes());
    assert_eq!(meta.len(), 9, "type byte + 64-bit timestamp");
    assert_eq!(meta[0], V2_METADATA_TIMESTAMP);
    let client = TlsCryptV2ClientKey::from_pem(V2_CLIENT_META).expect("client key");
    let (_, meta) = server.unwrap_client_key(client.wkc()).expect("opens");
    assert_eq!(meta, b"\x00hello");
}

const TA: &str = include_str!("testdata/ta.key");
const TC: &str = include_str!("testdata/tc.key");
/// First three datagrams of stock 2.6.14 client <-> server exchanges on loopback
/// (`c2s`/`s2c` hex per line), captured with a UDP relay:
/// `--tls-auth ta.key 0|1 --auth SHA256`, `--tls-auth ta.key` (bidirectional, SHA1),
/// `--tls-crypt tc.key`, `--tls-crypt-v2 v2-server.key|v2-client.key`.
const CAP_TA: &str = include_str!("testdata/capture-ta.hex");
const CAP_TA1: &str = include_str!("testdata/capture-ta1.hex");
const CAP_TC: &str = include_str!("testdata/capture-tc.hex");
const CAP_V2: &str = include_str!("testdata/capture-v2.hex");

pub(crate) fn capture(text: &str) -> Vec<(bool, Vec<u8>)> {
    text.lines()
        .map(|l| {
            let (dir, hex) = l.split_once(' ').unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (dir == "c2s", bytes)
        })
        .collect()
}

fn control(bytes: &[u8]) -> crate::wire::openvpn::ControlPacket<'_> {
    match crate::wire::openvpn::Packet::parse(bytes).unwrap() {
        crate::wire::openvpn::Packet::Control(c) => c,
        other => panic!("not control: {other:?}"),
    }
}

fn pid_time(wire: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(wire[at + 4..at + 8].try_into().unwrap())
}

/// Replays a stock capture through our wrappers: the gateway authenticates the client's
/// reset, the client authenticates the server's reply, the gateway the client's next
/// packet; and our client, with the same session id and time, wraps its reset into the very
/// bytes the stock client sent.
fn replay_capture(cap: &str, server: ServerWrap, client: ClientWrap, pid_at: usize) {
    let cap = capture(cap);
    let (c0, s0, c1) = (&cap[0].1, &cap[1].1, &cap[2].1);
    assert!(cap[0].0 && !cap[1].0 && cap[2].0);
    let first = server
        .authenticate_first(c0, 1)
        .expect("stock reset authenticates");
    let reset = first.packet().unwrap();
    let client_sid = reset.session_id;
    assert!(reset.payload.is_empty() && reset.packet_id == Some(0));

    let mut cw = Wrapper::client(&client, pid_time(c0, pid_at));
    let mut ours = Vec::new();
    control_reset(client_sid, cw.client_reset_opcode()).emit(&mut ours);
    assert!(cw.wrap(&mut ours));
    assert_eq!(
        &ours, c0,
        "our wrapped reset is byte-identical to the stock client's"
    );

    let mut plain = Vec::new();
    cw.unwrap(s0, &mut plain)
        .expect("stock server reset authenticates");
    let sreset = control(&plain);
    assert_eq!(
        sreset.opcode,
        crate::wire::openvpn::Opcode::ControlHardResetServerV2
    );
    assert_eq!(sreset.remote_session_id, Some(client_sid));
    assert_eq!(sreset.acks.as_slice(), &[0]);
    let server_sid = sreset.session_id;

    let mut sw = first.into_wrapper();
    sw.unwrap(c1, &mut plain)
        .expect("stock client's second packet authenticates");
    let second = control(&plain);
    assert_eq!(second.opcode, crate::wire::openvpn::Opcode::ControlV1);
    assert_eq!(second.remote_session_id, Some(server_sid));
    assert_eq!(second.packet_id, Some(1));
    assert_eq!(
        &second.payload[..2],
        &[0x16, 0x03],
        "a TLS ClientHello record"
    );
    assert_eq!(sw.unwrap(c1, &mut plain), Err(WrapError::Replay));
}

fn control_reset(
    sid: u64,
    opcode: crate::wire::openvpn::Opcode,
) -> crate::wire::openvpn::ControlPacket<'static> {
    crate::wire::openvpn::ControlPacket {
        opcode,
        key_id: 0,
        session_id: sid,
        acks: Default::default(),
        remote_session_id: None,
        packet_id: Some(0),
        payload: &[],
    }
}

#[test]
fn stock_tls_auth_sha256_with_key_directions() {
    let key = StaticKey::from_pem(TA).unwrap();
    let digest = TlsAuthDigest::Sha256;
    replay_capture(
        CAP_TA,
        ServerWrap::TlsAuth {
            key: key.clone(),
            direction: Some(KeyDirection::Normal),
            digest,
        },
        ClientWrap::TlsAuth {
            key,
            direction: Some(KeyDirection::Inverse),
            digest,
        },
        9 + 32,
    );
}

#[test]
fn stock_tls_auth_bidirectional_sha1() {
    let key = StaticKey::from_pem(TA).unwrap();
    let digest = TlsAuthDigest::Sha1;
    replay_capture(
        CAP_TA1,
        ServerWrap::TlsAuth {
            key: key.clone(),
            direction: None,
            digest,
        },
        ClientWrap::TlsAuth {
            key,
            direction: None,
            digest,
        },
        9 + 20,
    );
}

#[test]
fn stock_tls_crypt() {
    let key = StaticKey::from_pem(TC).unwrap();
    replay_capture(
        CAP_TC,
        ServerWrap::TlsCrypt { key: key.clone() },
        ClientWrap::TlsCrypt { key },
        9,
    );
}

#[test]
fn stock_tls_crypt_v2_with_early_negotiation() {
    let server = TlsCryptV2ServerKey::from_pem(V2_SERVER).unwrap();
    let client = TlsCryptV2ClientKey::from_pem(V2_CLIENT).unwrap();
    let cap = capture(CAP_V2);
    // The stock client announces early negotiation with packet id 0x0f000001.
    assert_eq!(&cap[0].1[9..13], &[0x0f, 0, 0, 1]);
    let first = ServerWrap::TlsCryptV2 {
        key: server.clone(),
    }
    .authenticate_first(&cap[0].1, 1)
    .unwrap();
    assert_eq!(first.metadata().unwrap()[0], V2_METADATA_TIMESTAMP);
    // The stock server answers statelessly and asks for the key again (TLV flags = 1).
    let mut cw = Wrapper::client(
        &ClientWrap::TlsCryptV2 {
            key: client.clone(),
        },
        0,
    );
    let mut plain = Vec::new();
    cw.unwrap(&cap[1].1, &mut plain).unwrap();
    let sreset = control(&plain);
    assert_eq!(sreset.payload, &[0, 1, 0, 2, 0, 1]);
    assert_eq!(
        early_neg::parse_flags(sreset.payload),
        early_neg::FLAG_RESEND_WKC
    );
    // ... so the client's next packet is P_CONTROL_WKC_V1 with the wrapped key appended,
    // which our gateway reads as P_CONTROL_V1.
    assert_eq!(cap[2].1[0] >> 3, 11);
    assert!(cap[2].1.ends_with(client.wkc()));
    let server_sid = sreset.session_id;
    let mut sw = first.into_wrapper();
    sw.unwrap(&cap[2].1, &mut plain).unwrap();
    let second = control(&plain);
    assert_eq!(second.opcode, crate::wire::openvpn::Opcode::ControlV1);
    assert_eq!(second.remote_session_id, Some(server_sid));
    // And the whole exchange through the generic replay (our reset byte-identical too).
    replay_capture_v2(&cap, server, client);
}

fn replay_capture_v2(
    cap: &[(bool, Vec<u8>)],
    server: TlsCryptV2ServerKey,
    client: TlsCryptV2ClientKey,
) {
    let first = ServerWrap::TlsCryptV2 { key: server }
        .authenticate_first(&cap[0].1, 1)
        .unwrap();
    let sid = first.session_id();
    let mut cw = Wrapper::client(
        &ClientWrap::TlsCryptV2 { key: client },
        pid_time(&cap[0].1, 9),
    );
    let mut ours = Vec::new();
    control_reset(sid, crate::wire::openvpn::Opcode::ControlHardResetClientV3).emit(&mut ours);
    assert!(cw.wrap(&mut ours));
    assert_eq!(ours, cap[0].1);
}

#[test]
fn tampered_unwrapped_and_wrong_key_packets_are_refused() {
    let cap = capture(CAP_TC);
    let key = StaticKey::from_pem(TC).unwrap();
    let server = ServerWrap::TlsCrypt { key };
    for i in [0, 5, 9, 20, 40, cap[0].1.len() - 1] {
        let mut bad = cap[0].1.clone();
        bad[i] ^= 0x40;
        assert!(
            server.authenticate_first(&bad, 1).is_err(),
            "byte {i} flipped"
        );
    }
    let other = ServerWrap::TlsCrypt {
        key: StaticKey::from_pem(STATIC).unwrap(),
    };
    assert_eq!(
        other.authenticate_first(&cap[0].1, 1).unwrap_err(),
        WrapError::BadAuth
    );
    // A plain reset (a client without the wrapper) is not accepted.
    let mut plain = Vec::new();
    control_reset(42, crate::wire::openvpn::Opcode::ControlHardResetClientV2).emit(&mut plain);
    assert!(server.authenticate_first(&plain, 1).is_err());
    // tls-auth with the wrong direction fails authentication.
    let ta = StaticKey::from_pem(TA).unwrap();
    let wrong = ServerWrap::TlsAuth {
        key: ta,
        direction: Some(KeyDirection::Inverse),
        digest: TlsAuthDigest::Sha256,
    };
    assert_eq!(
        wrong
            .authenticate_first(&capture(CAP_TA)[0].1, 1)
            .unwrap_err(),
        WrapError::BadAuth
    );
    // A gateway without wrapper refuses tls-crypt-v2 resets; one with v2 refuses plain ones.
    let v2 = capture(CAP_V2);
    assert!(matches!(
        ServerWrap::None.authenticate_first(&v2[0].1, 1),
        Err(WrapError::UnexpectedOpcode(10))
    ));
    let v2server = ServerWrap::TlsCryptV2 {
        key: TlsCryptV2ServerKey::from_pem(V2_SERVER).unwrap(),
    };
    assert!(matches!(
        v2server.authenticate_first(&plain, 1),
        Err(WrapError::UnexpectedOpcode(7))
    ));
    // A client key wrapped by another server key is refused.
    let stranger = TlsCryptV2ServerKey::from_bytes([7; V2_SERVER_KEY_LEN]);
    assert_eq!(
        ServerWrap::TlsCryptV2 { key: stranger }
            .authenticate_first(&v2[0].1, 1)
            .unwrap_err(),
        WrapError::ClientKey(WrapKeyError::WrongServerKey)
    );
}

#[test]
fn our_v2_keys_open_in_both_directions() {
    let server = TlsCryptV2ServerKey::from_bytes([3; V2_SERVER_KEY_LEN]);
    let text = server.to_pem();
    let server = TlsCryptV2ServerKey::from_pem(&text).unwrap();
    let kc = StaticKey::from_bytes([9; STATIC_KEY_LEN]);
    let client = TlsCryptV2ClientKey::wrap_new(&server, kc, b"\x00serial=1f").unwrap();
    let client = TlsCryptV2ClientKey::from_pem(&client.to_pem()).unwrap();
    let (kc, meta) = server.unwrap_client_key(client.wkc()).unwrap();
    assert_eq!(kc.bytes(), &[9; STATIC_KEY_LEN]);
    assert_eq!(meta, b"\x00serial=1f");
}

#[test]
fn key_text_errors_say_what_is_wrong() {
    let e = StaticKey::from_pem("hello").unwrap_err();
    assert!(e.to_string().contains("OpenVPN Static key V1"), "{e}");
    let cut = &STATIC[..STATIC.len() / 2];
    assert!(matches!(
        StaticKey::from_pem(cut),
        Err(WrapKeyError::MissingFooter { .. })
    ));
    let bad = STATIC.replacen("-----\n", "-----\nzz", 1);
    assert!(matches!(
        StaticKey::from_pem(&bad),
        Err(WrapKeyError::BadHex { .. })
    ));
    assert!(matches!(
        TlsCryptV2ClientKey::from_pem(V2_SERVER),
        Err(WrapKeyError::MissingHeader { .. })
    ));
    let damaged = V2_CLIENT.replacen('A', "*", 1).replacen("5bCm", "5b*m", 1);
    assert!(TlsCryptV2ClientKey::from_pem(&damaged).is_err());
    assert_eq!(
        TlsAuthDigest::from_openvpn_name("sha-256"),
        Some(TlsAuthDigest::Sha256)
    );
    assert_eq!(TlsAuthDigest::from_openvpn_name("MD5"), None);
    assert_eq!(
        KeyDirection::from_openvpn_arg("1"),
        Some(KeyDirection::Inverse)
    );
}
