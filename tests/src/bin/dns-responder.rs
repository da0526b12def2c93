//! `dns-responder`: a tiny authoritative DNS server over UDP for the split-DNS test (run in
//! one of the test's own namespaces).
//!
//!     dns-responder --listen IP:PORT --answer NAME=IPV4 [--answer NAME=IPV4 ...]
//!
//! Answers an A query for a NAME it knows with that address (TTL 5), anything else with
//! NXDOMAIN. Prints `query NAME from ADDR` for every query, so the test sees who asked what.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut listen: Option<SocketAddr> = None;
    let mut answers: Vec<(String, Ipv4Addr)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--listen" => listen = Some(v.parse()?),
            "--answer" => {
                let (n, ip) = v.split_once('=').context("--answer NAME=IPV4")?;
                answers.push((n.to_ascii_lowercase(), ip.parse()?));
            }
            _ => bail!("unknown argument {a}"),
        }
    }
    let sock = UdpSocket::bind(listen.context("--listen IP:PORT")?)?;
    println!("listening on {}", sock.local_addr()?);
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        let Some((name, end)) = question(&buf[..n]) else {
            println!("malformed from {from}");
            continue;
        };
        println!("query {name} from {from}");
        let mut reply = buf[..end].to_vec();
        // QR, opcode 0, AA, RD copied, RA; one question.
        reply[2] = 0x84 | (buf[2] & 0x01);
        reply[6..12].fill(0);
        let qtype_a = buf[end - 4..end - 2] == [0, 1];
        match answers.iter().find(|(n, _)| *n == name) {
            Some((_, ip)) if qtype_a => {
                reply[3] = 0x80;
                reply[7] = 1;
                // Pointer to the question name, A, IN, TTL 5, 4 bytes.
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
                reply.extend_from_slice(&ip.octets());
            }
            // Known name, other type: no data.
            Some(_) => reply[3] = 0x80,
            None => reply[3] = 0x83,
        }
        let _ = sock.send_to(&reply, from);
    }
}

/// The question name (lower case) and where the question ends.
fn question(msg: &[u8]) -> Option<(String, usize)> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || msg[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    msg.get(at..at + 4)?;
    Some((labels.join("."), at + 4))
}
