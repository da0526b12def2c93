//! `spoof-flood`: sends OpenVPN hard resets with forged source addresses from a raw socket,
//! for the hostile-network tests (run inside a test's own namespace, aimed at the test's own
//! gateway only).
//!
//!     spoof-flood --to IP:PORT (--from-net A.B.C.0/24 | --from IP:PORT) --count N --rate PPS [--v3]
//!
//! `--from-net`: every packet from a random host and port of that /24; `--from`: all from one
//! address (a connected client's). `--v3`: P_CONTROL_HARD_RESET_CLIENT_V3 with a made-up
//! tls-crypt-v2 wrapped key (350 bytes) instead of a plain 14-byte V2 reset. Prints
//! `sent PACKETS packets PAYLOAD_BYTES payload bytes` at the end.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, Socket, Type};

struct Args {
    to: SocketAddrV4,
    from_net: Option<Ipv4Addr>,
    from: Option<SocketAddrV4>,
    count: u64,
    rate: u64,
    v3: bool,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        to: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        from_net: None,
        from: None,
        count: 1000,
        rate: 1000,
        v3: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--to" => a.to = v()?.parse()?,
            "--from" => a.from = Some(v()?.parse()?),
            "--from-net" => {
                let s = v()?;
                let net = s.strip_suffix("/24").context("--from-net takes a /24")?;
                a.from_net = Some(net.parse()?);
            }
            "--count" => a.count = v()?.parse()?,
            "--rate" => a.rate = v()?.parse::<u64>()?.max(1),
            "--v3" => a.v3 = true,
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.from.is_none() == a.from_net.is_none() {
        bail!("give one of --from and --from-net");
    }
    Ok(a)
}

/// xorshift64*: enough to vary addresses, ports and session ids.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn payload(rng: &mut Rng, v3: bool, out: &mut Vec<u8>) {
    out.clear();
    if v3 {
        out.push(10 << 3);
        for _ in 0..349 {
            out.push(rng.next() as u8);
        }
        // The wrapped key's length closes the packet (300 bytes of it).
        let n = out.len();
        out[n - 2..].copy_from_slice(&300u16.to_be_bytes());
    } else {
        out.push(7 << 3);
        out.extend_from_slice(&rng.next().to_be_bytes());
        out.push(0); // no acks
        out.extend_from_slice(&0u32.to_be_bytes()); // packet id 0
    }
}

fn datagram(src: SocketAddrV4, dst: SocketAddrV4, body: &[u8], out: &mut Vec<u8>) {
    let total = 20 + 8 + body.len();
    out.clear();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]); // id/flags by the kernel, TTL, UDP, checksum by the kernel
    out.extend_from_slice(&src.ip().octets());
    out.extend_from_slice(&dst.ip().octets());
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]); // no UDP checksum (allowed on IPv4)
    out.extend_from_slice(body);
}

fn main() -> Result<()> {
    let a = parse()?;
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .context("raw socket (needs root)")?;
    sock.set_header_included_v4(true)?;
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed ^ u64::from(std::process::id()));
    let dst = std::net::SocketAddr::V4(a.to).into();
    let (mut body, mut pkt) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let (mut sent, mut bytes) = (0u64, 0u64);
    while sent < a.count {
        // Pace: packet n leaves at n / rate seconds.
        let due = start + Duration::from_secs_f64(sent as f64 / a.rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let src = match (a.from, a.from_net) {
            (Some(f), _) => f,
            (None, Some(net)) => {
                let r = rng.next();
                let host = 1 + (r % 254) as u8;
                let o = net.octets();
                let port = 1024 + ((r >> 16) % 60000) as u16;
                SocketAddrV4::new(Ipv4Addr::new(o[0], o[1], o[2], host), port)
            }
            (None, None) => unreachable!("checked in parse"),
        };
        payload(&mut rng, a.v3, &mut body);
        datagram(src, a.to, &body, &mut pkt);
        if sock.send_to(&pkt, &dst).is_ok() {
            bytes += body.len() as u64;
        }
        sent += 1;
    }
    println!("sent {sent} packets {bytes} payload bytes");
    Ok(())
}
