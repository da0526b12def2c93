//! Fuzzes the IKEv2 message codec, the inner-payload parser, the SK framing helpers and
//! the port-4500 classifier with arbitrary bytes. Nothing may panic; a message that
//! parses must re-emit to the same length, parse back to the same value and be a fixed
//! point of parse/emit.
#![no_main]

use gatehouse_engine::wire::ikev2::{
    Classified, Message, Payload, parse_inner, sk, strip_non_esp_marker,
};
use libfuzzer_sys::fuzz_target;

fn check_payload_helpers(payloads: &[Payload<'_>]) {
    for p in payloads {
        match p {
            Payload::Auth(a) => {
                if let Ok(ds) = a.digital_signature() {
                    let _ = ds.algorithm();
                }
            }
            Payload::Notify(n) => {
                let _ = n.nat_detection_hash();
                let _ = n.invalid_ke_group();
                if let Some(algs) = n.signature_hash_algorithms() {
                    algs.for_each(drop);
                }
            }
            Payload::CertReq(c) => {
                if let Some(hashes) = c.ca_hashes() {
                    hashes.for_each(drop);
                }
            }
            Payload::Delete(d) => {
                assert_eq!(d.spis().count(), d.count());
                d.spis_u32().for_each(drop);
            }
            Payload::TsI(ts) | Payload::TsR(ts) => {
                for t in &ts.selectors {
                    if let Some(net) = t.to_net() {
                        assert!(t.contains(net.network()));
                        assert!(t.contains(net.broadcast()));
                    }
                }
            }
            Payload::Cp(cp) => {
                for a in &cp.attributes {
                    let _ = (a.ipv4(), a.ipv4_subnet(), a.ipv6(), a.ipv6_prefix());
                }
            }
            Payload::Encrypted { body, .. } | Payload::EncryptedFragment { body, .. } => {
                for (iv, icv) in [(8, 16), (16, 12), (16, 16), (0, 0)] {
                    if let Ok(parts) = sk::split(body, iv, icv) {
                        assert_eq!(
                            parts.iv.len() + parts.ciphertext.len() + parts.icv.len(),
                            body.len()
                        );
                        // Treat the ciphertext as if it were plaintext.
                        if let Ok(inner) = sk::strip_padding(parts.ciphertext) {
                            let _ = parse_inner(1, inner);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn check_message(bytes: &[u8]) {
    let Ok(msg) = Message::parse(bytes) else {
        return;
    };
    check_payload_helpers(&msg.payloads);
    let mut out = Vec::new();
    msg.emit(&mut out);
    assert_eq!(out.len(), bytes.len(), "re-emitted length differs");
    assert_eq!(out.len(), msg.encoded_len());
    let again = Message::parse(&out).expect("re-emitted message must parse");
    assert_eq!(again, msg);
    let mut out2 = Vec::new();
    again.emit(&mut out2);
    assert_eq!(out2, out, "emit is not a fixed point");
    if let Some(off) = msg.encrypted_offset() {
        let fragment = matches!(msg.payloads.last(), Some(Payload::EncryptedFragment { .. }));
        let aad = sk::associated_data(bytes, off, fragment).expect("SK header in message");
        assert!(aad.len() <= bytes.len());
    }
}

fuzz_target!(|data: &[u8]| {
    check_message(data);

    match strip_non_esp_marker(data) {
        Classified::Ike(ike) => check_message(ike),
        Classified::Esp(esp) => assert_eq!(esp.len(), data.len()),
        Classified::Keepalive => assert_eq!(data, [0xff]),
    }

    // The same bytes as decrypted SK contents, first inner type from the first byte.
    if let Some((&first, rest)) = data.split_first() {
        if let Ok(payloads) = parse_inner(first, rest) {
            check_payload_helpers(&payloads);
            let mut out = Vec::new();
            let first_again = gatehouse_engine::wire::ikev2::emit_payloads(&payloads, &mut out);
            assert_eq!(out.len(), rest.len());
            assert_eq!(
                parse_inner(first_again, &out).expect("re-emitted inner parses"),
                payloads
            );
        }
    }
});
