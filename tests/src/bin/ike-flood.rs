//! `ike-flood`: floods a gateway with IKEv2 IKE_SA_INIT requests from one real address (plain
//! UDP sockets), for the hostile-network tests (run inside a test's own namespace, aimed at
//! the test's own gateway only). Every request has a fresh SPIi, a valid key exchange and a
//! nonce; a COOKIE answer is echoed (the request sent again with it), as a real attacker with
//! a real address would, so the gateway has to hold half-open SAs for it if it lets it.
//!
//!     ike-flood --to IP:PORT --count N --rate PPS [--sockets K] [--group 31|14]
//!
//! Prints `sent REQUESTS requests COOKIES cookies echoed SAS half-open SAs BYTES bytes back`
//! at the end (SAS: distinct SPIs the gateway answered with an IKE_SA_INIT response).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

struct Args {
    to: SocketAddrV4,
    count: u64,
    rate: u64,
    sockets: usize,
    group: u16,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        to: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        count: 1000,
        rate: 1000,
        sockets: 4,
        group: 31,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--to" => a.to = v()?.parse()?,
            "--count" => a.count = v()?.parse()?,
            "--rate" => a.rate = v()?.parse::<u64>()?.max(1),
            "--sockets" => a.sockets = v()?.parse::<usize>()?.clamp(1, 64),
            "--group" => a.group = v()?.parse()?,
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.to.port() == 0 {
        bail!("--to IP:PORT is required");
    }
    if !matches!(a.group, 14 | 31) {
        bail!("--group is 31 (x25519) or 14 (MODP-2048)");
    }
    Ok(a)
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const SA: u8 = 33;
const KE: u8 = 34;
const NONCE: u8 = 40;
const NOTIFY: u8 = 41;
const COOKIE: u16 = 16390;

/// Bytes derived from `spi` (the request can be rebuilt from its SPI alone).
fn derived(spi: u64, salt: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(spi ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

fn payload(out: &mut Vec<u8>, next: u8, body: &[u8]) {
    out.push(next);
    out.push(0);
    out.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// IKE_SA_INIT request with SPIi `spi` (and COOKIE `cookie`): one proposal AES-GCM-16-256,
/// PRF-HMAC-SHA2-256, the group; KE, a 32-byte nonce.
fn request(spi: u64, group: u16, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut transforms = Vec::new();
    // ENCR AES-GCM-16 (20), key length 256.
    transforms.extend_from_slice(&[3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0e, 1, 0]);
    // PRF HMAC-SHA2-256 (5).
    transforms.extend_from_slice(&[3, 0, 0, 8, 2, 0, 0, 5]);
    // DH group.
    let g = group.to_be_bytes();
    transforms.extend_from_slice(&[0, 0, 0, 8, 4, 0, g[0], g[1]]);
    let mut proposal = vec![0, 0];
    proposal.extend_from_slice(&((transforms.len() + 8) as u16).to_be_bytes());
    proposal.extend_from_slice(&[1, 1, 0, 3]);
    proposal.extend_from_slice(&transforms);

    let ke_data = if group == 31 {
        derived(spi, 1, 32)
    } else {
        // g^1 = 2: a valid (if useless) MODP public value, 256 bytes.
        let mut v = vec![0u8; 256];
        v[255] = 2;
        v
    };
    let mut ke = group.to_be_bytes().to_vec();
    ke.extend_from_slice(&[0, 0]);
    ke.extend_from_slice(&ke_data);
    let nonce = derived(spi, 2, 32);

    let mut body = Vec::new();
    let first = if let Some(c) = cookie {
        let mut n = vec![0, 0];
        n.extend_from_slice(&COOKIE.to_be_bytes());
        n.extend_from_slice(c);
        payload(&mut body, SA, &n);
        NOTIFY
    } else {
        SA
    };
    payload(&mut body, KE, &proposal);
    payload(&mut body, NONCE, &ke);
    payload(&mut body, 0, &nonce);

    let mut m = Vec::with_capacity(28 + body.len());
    m.extend_from_slice(&spi.to_be_bytes());
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&[first, 0x20, 34, 0x08, 0, 0, 0, 0]);
    m.extend_from_slice(&((28 + body.len()) as u32).to_be_bytes());
    m.extend_from_slice(&body);
    m
}

/// What an answer is: (SPIi, its COOKIE, whether it carries an SA payload).
fn answer(d: &[u8]) -> Option<(u64, Option<Vec<u8>>, bool)> {
    let spi = u64::from_be_bytes(d.get(..8)?.try_into().ok()?);
    let mut next = *d.get(16)?;
    let mut at = 28usize;
    let (mut cookie, mut sa) = (None, false);
    while next != 0 {
        let h = d.get(at..at + 4)?;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let body = d.get(at + 4..at + len.max(4))?;
        if next == SA {
            sa = true;
        }
        if next == NOTIFY && body.len() >= 4 && u16::from_be_bytes([body[2], body[3]]) == COOKIE {
            let spi_size = usize::from(body[1]);
            cookie = body.get(4 + spi_size..).map(<[u8]>::to_vec);
        }
        next = h[0];
        at += len.max(4);
    }
    Some((spi, cookie, sa))
}

fn main() -> Result<()> {
    let a = parse()?;
    let sockets: Vec<UdpSocket> = (0..a.sockets)
        .map(|_| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed ^ u64::from(std::process::id()));
    let start = Instant::now();
    let (mut sent, mut echoed, mut back) = (0u64, 0u64, 0u64);
    let mut sas: HashSet<u64> = HashSet::new();
    let mut buf = vec![0u8; 65536];
    let mut drain = |sockets: &[UdpSocket], sent: &mut u64, echoed: &mut u64| {
        for s in sockets {
            while let Ok(n) = s.recv(&mut buf) {
                back += n as u64;
                let Some((spi, cookie, sa)) = answer(&buf[..n]) else {
                    continue;
                };
                if sa {
                    sas.insert(spi);
                }
                if let Some(c) = cookie {
                    let _ = s.send_to(&request(spi, a.group, Some(&c)), a.to);
                    *echoed += 1;
                    *sent += 1;
                }
            }
        }
    };
    for i in 0..a.count {
        // Pace: request i leaves at i / rate seconds.
        let due = start + Duration::from_secs_f64(i as f64 / a.rate as f64);
        while Instant::now() < due {
            drain(&sockets, &mut sent, &mut echoed);
            std::thread::sleep(Duration::from_micros(200));
        }
        let spi = rng.next() | 1;
        let s = &sockets[(i as usize) % sockets.len()];
        let _ = s.send_to(&request(spi, a.group, None), a.to);
        sent += 1;
    }
    // Late answers.
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        drain(&sockets, &mut sent, &mut echoed);
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "sent {sent} requests {echoed} cookies echoed {} half-open SAs {back} bytes back",
        sas.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_back() {
        let r = request(42, 31, Some(&[7; 33]));
        assert_eq!(
            r.len(),
            u32::from_be_bytes(r[24..28].try_into().unwrap()) as usize
        );
        let (spi, cookie, sa) = answer(&r).unwrap();
        assert_eq!((spi, cookie, sa), (42, Some(vec![7; 33]), true));
        let r = request(43, 14, None);
        assert_eq!(answer(&r), Some((43, None, true)));
    }
}
