//! Fuzzes the OpenVPN packet codec, the TCP deframer and data channel decryption with
//! arbitrary bytes. Nothing may panic; control packets must re-encode to their input.
#![no_main]

use gatehouse_engine::openvpn::data::{Cipher, DataChannel};
use gatehouse_engine::openvpn::keys::{DataKeys, Role};
use gatehouse_engine::wire::openvpn::{Packet, TcpDeframer};
use libfuzzer_sys::fuzz_target;

fn check_packet(bytes: &[u8]) {
    match Packet::parse(bytes) {
        Ok(Packet::Control(c)) => {
            let mut out = Vec::new();
            c.emit(&mut out);
            assert_eq!(out.len(), c.encoded_len());
            assert_eq!(out, bytes, "control packet did not re-encode to its input");
            match Packet::parse(&out) {
                Ok(Packet::Control(again)) => assert_eq!(again, c),
                other => panic!("re-parse failed: {other:?}"),
            }
        }
        Ok(Packet::Data(d)) => {
            assert_eq!(d.header.len() + d.body.len(), bytes.len());
            assert_eq!(d.header.len(), if d.peer_id.is_some() { 4 } else { 1 });
        }
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    check_packet(data);

    // Feed the same bytes as a TCP stream, split into chunks whose sizes come from the
    // input itself, and check every frame.
    let mut deframer = TcpDeframer::new();
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    'stream: for piece in data.chunks(chunk) {
        deframer.push(piece);
        loop {
            match deframer.pop() {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty());
                    check_packet(frame);
                }
                Ok(None) => break,
                Err(_) => break 'stream,
            }
        }
    }

    // Decryption of garbage must fail cleanly.
    let keys = DataKeys::from_key_block(&[7u8; 256], Role::Server);
    if let Ok(mut channel) = DataChannel::new(Cipher::Aes256Gcm, &keys, 0, 0) {
        let mut out = Vec::new();
        let _ = channel.decrypt(data, &mut out);
    }
});
