//! PUSH_REPLY: what the gateway tells a client about its tunnel, and the client-side parser.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

use super::data::Cipher;
use crate::pool6::Ipv6Assignment;

/// Everything a gateway pushes to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReply {
    /// The client's virtual address.
    pub address: Ipv4Addr,
    /// Netmask of the tunnel subnet (topology subnet).
    pub netmask: Ipv4Addr,
    /// The gateway's address inside the tunnel subnet (route-gateway).
    pub gateway: Ipv4Addr,
    /// Prefixes the client should route into the tunnel (split tunnel).
    pub routes: Vec<Ipv4Net>,
    /// Send all traffic through the tunnel (full tunnel).
    pub redirect_gateway: bool,
    /// DNS servers for the client.
    pub dns: Vec<IpAddr>,
    /// Split DNS: only names at or under these domains go to `dns` (normalized, see
    /// [`crate::wire::dns::normalize_domain`]); empty: all names do.
    pub dns_domains: Vec<String>,
    /// The peer-id the client puts in P_DATA_V2 headers.
    pub peer_id: u32,
    /// The negotiated data cipher.
    pub cipher: Cipher,
    /// Whether data keys come from the TLS exporter (else the classic PRF).
    pub tls_ekm: bool,
    /// Keepalive: ping interval.
    pub ping: Duration,
    /// Keepalive: restart the connection after this long without traffic.
    pub ping_restart: Duration,
    /// Tunnel MTU.
    pub tun_mtu: u16,
    /// Push `compress stub-v2` (client configured comp-lzo / compress).
    pub compress_stub_v2: bool,
    /// Which options the client understands; a stock server leaves out the others.
    pub caps: PushCaps,
    /// IPv6 inside the tunnel (`ifconfig-ipv6`, `route-ipv6`), when the gateway has an IPv6
    /// pool.
    pub ipv6: Option<Ipv6Assignment>,
}

/// What a client's peer-info says it takes by push (OpenVPN push.c `prepare_push_reply`).
/// The default is an OpenVPN 2.6 client: everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushCaps {
    /// `cipher` (`IV_NCP=2` or `IV_CIPHERS`).
    pub ncp: bool,
    /// `protocol-flags` with `cc-exit` (`IV_PROTO` bit 7, 2.6). Without it a tls-ekm client
    /// gets `key-derivation tls-ekm` instead.
    pub cc_exit: bool,
    /// `tun-mtu` (`IV_MTU`, 2.6).
    pub mtu: bool,
}

impl Default for PushCaps {
    fn default() -> Self {
        Self {
            ncp: true,
            cc_exit: true,
            mtu: true,
        }
    }
}

impl PushCaps {
    /// What the client with this peer-info takes.
    pub fn of(info: &super::keymethod::PeerInfo) -> Self {
        Self {
            ncp: info.supports_ncp(),
            cc_exit: info.supports_cc_exit(),
            mtu: info.mtu.is_some(),
        }
    }
}

impl PushReply {
    /// The PUSH_REPLY control message text (without the trailing NUL).
    pub fn to_message(&self) -> String {
        let mut parts: Vec<String> = vec!["PUSH_REPLY".into()];
        for r in &self.routes {
            parts.push(format!("route {} {}", r.network(), r.netmask()));
        }
        if let Some(v6) = &self.ipv6 {
            for r in &v6.routes {
                parts.push(format!("route-ipv6 {r}"));
            }
        }
        match (self.redirect_gateway, self.ipv6.is_some()) {
            (true, true) => parts.push("redirect-gateway def1 ipv6".into()),
            (true, false) => parts.push("redirect-gateway def1".into()),
            _ => {}
        }
        for d in &self.dns {
            parts.push(format!("dhcp-option DNS {d}"));
        }
        if !self.dns_domains.is_empty() {
            // OpenVPN 2.6's `--dns`: each server resolves only these domains (split DNS);
            // `--dns` overrides `dhcp-option` where a client knows both. Older clients and
            // their up scripts see the first domain as the connection's DNS suffix.
            let domains = self.dns_domains.join(" ");
            for (n, d) in self.dns.iter().enumerate() {
                parts.push(format!("dns server {n} address {d}"));
                parts.push(format!("dns server {n} resolve-domains {domains}"));
            }
            if let Some(first) = self.dns_domains.first() {
                parts.push(format!("dhcp-option DOMAIN {first}"));
            }
        }
        parts.push(format!("route-gateway {}", self.gateway));
        parts.push("topology subnet".into());
        parts.push(format!("ping {}", self.ping.as_secs().max(1)));
        parts.push(format!(
            "ping-restart {}",
            self.ping_restart.as_secs().max(1)
        ));
        if self.compress_stub_v2 {
            parts.push("compress stub-v2".into());
        }
        parts.push(format!("ifconfig {} {}", self.address, self.netmask));
        if let Some(v6) = &self.ipv6 {
            // topology subnet: the client's address with the pool's length, and the
            // gateway's address (OpenVPN's `ifconfig-ipv6-push`).
            parts.push(format!(
                "ifconfig-ipv6 {}/{} {}",
                v6.address,
                v6.subnet.prefix_len(),
                v6.gateway
            ));
        }
        parts.push(format!("peer-id {}", self.peer_id));
        if self.caps.ncp {
            parts.push(format!("cipher {}", self.cipher.openvpn_name()));
        }
        match (self.caps.cc_exit, self.tls_ekm) {
            (true, true) => parts.push("protocol-flags cc-exit tls-ekm".into()),
            (true, false) => parts.push("protocol-flags cc-exit".into()),
            (false, true) => parts.push("key-derivation tls-ekm".into()),
            (false, false) => {}
        }
        if self.caps.mtu {
            parts.push(format!("tun-mtu {}", self.tun_mtu));
        }
        parts.join(",")
    }

    /// Parses a PUSH_REPLY as a client receives it. Options the client does not act on are
    /// returned in the second element so the caller can log them.
    pub fn parse(msg: &str) -> Result<(Self, Vec<String>), PushError> {
        let body = msg
            .strip_prefix("PUSH_REPLY")
            .ok_or(PushError::NotPushReply)?;
        let mut address = None;
        let mut netmask = Ipv4Addr::new(255, 255, 255, 255);
        let mut gateway = None;
        let mut routes = Vec::new();
        let mut redirect_gateway = false;
        let mut dns = Vec::new();
        let mut dns_domains: Vec<String> = Vec::new();
        let mut peer_id = 0;
        let mut cipher = None;
        let mut tls_ekm = false;
        let mut ping = Duration::from_secs(10);
        let mut ping_restart = Duration::from_secs(60);
        let mut tun_mtu = 1500;
        let mut compress_stub_v2 = false;
        let mut caps = PushCaps {
            ncp: true,
            cc_exit: false,
            mtu: false,
        };
        let mut ipv6: Option<Ipv6Assignment> = None;
        let mut routes_v6 = Vec::new();
        let mut ignored = Vec::new();
        for opt in body.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let mut words = opt.split_whitespace();
            let key = words.next().unwrap_or_default();
            let args: Vec<&str> = words.collect();
            let bad = || PushError::BadOption(opt.to_owned());
            match key {
                "ifconfig" => {
                    address = Some(arg(&args, 0).ok_or_else(bad)?);
                    netmask = arg(&args, 1).ok_or_else(bad)?;
                }
                "route-gateway" => gateway = Some(arg(&args, 0).ok_or_else(bad)?),
                "route" => {
                    let net: Ipv4Addr = arg(&args, 0).ok_or_else(bad)?;
                    let mask: Ipv4Addr = arg(&args, 1).unwrap_or(Ipv4Addr::new(255, 255, 255, 255));
                    let prefix = ipnet::ipv4_mask_to_prefix(mask).map_err(|_| bad())?;
                    routes.push(Ipv4Net::new(net, prefix).map_err(|_| bad())?);
                }
                "ifconfig-ipv6" => {
                    let local: Ipv6Net = arg(&args, 0).ok_or_else(bad)?;
                    let gateway: Ipv6Addr = arg(&args, 1).ok_or_else(bad)?;
                    ipv6 = Some(Ipv6Assignment {
                        address: local.addr(),
                        subnet: local.trunc(),
                        gateway,
                        routes: Vec::new(),
                    });
                }
                "route-ipv6" => routes_v6.push(arg::<Ipv6Net>(&args, 0).ok_or_else(bad)?.trunc()),
                "redirect-gateway" => redirect_gateway = true,
                "dhcp-option" if args.first() == Some(&"DNS") => {
                    let d = arg(&args, 1).ok_or_else(bad)?;
                    if !dns.contains(&d) {
                        dns.push(d);
                    }
                }
                "dhcp-option" if args.first() == Some(&"DOMAIN-ROUTE") => {
                    add_domains(&mut dns_domains, args.get(1..).unwrap_or_default())
                        .ok_or_else(bad)?;
                }
                "dns" if args.first() == Some(&"server") => match args.get(2) {
                    Some(&"address") => {
                        for a in args.get(3..).unwrap_or_default() {
                            let d = parse_dns_address(a).ok_or_else(bad)?;
                            if !dns.contains(&d) {
                                dns.push(d);
                            }
                        }
                    }
                    Some(&"resolve-domains") => {
                        add_domains(&mut dns_domains, args.get(3..).unwrap_or_default())
                            .ok_or_else(bad)?;
                    }
                    _ => ignored.push(opt.to_owned()),
                },
                "peer-id" => peer_id = arg(&args, 0).ok_or_else(bad)?,
                "cipher" => {
                    let name = args.first().ok_or_else(bad)?;
                    cipher = Some(
                        Cipher::from_openvpn_name(name)
                            .ok_or_else(|| PushError::UnsupportedCipher((*name).to_owned()))?,
                    );
                }
                "protocol-flags" => {
                    tls_ekm = args.contains(&"tls-ekm");
                    caps.cc_exit = args.contains(&"cc-exit");
                }
                "key-derivation" => tls_ekm = args.first() == Some(&"tls-ekm"),
                "ping" => ping = Duration::from_secs(arg(&args, 0).ok_or_else(bad)?),
                "ping-restart" => {
                    ping_restart = Duration::from_secs(arg(&args, 0).ok_or_else(bad)?)
                }
                "tun-mtu" => {
                    tun_mtu = arg(&args, 0).ok_or_else(bad)?;
                    caps.mtu = true;
                }
                "compress" if args.first() == Some(&"stub-v2") => compress_stub_v2 = true,
                "topology" => {}
                _ => ignored.push(opt.to_owned()),
            }
        }
        let address = address.ok_or(PushError::Missing("ifconfig"))?;
        if let Some(v6) = &mut ipv6 {
            v6.routes = routes_v6;
        }
        Ok((
            PushReply {
                address,
                netmask,
                gateway: gateway.unwrap_or(address),
                routes,
                redirect_gateway,
                dns,
                dns_domains,
                peer_id,
                cipher: cipher.ok_or(PushError::Missing("cipher"))?,
                tls_ekm,
                ping,
                ping_restart,
                tun_mtu,
                compress_stub_v2,
                caps,
                ipv6,
            },
            ignored,
        ))
    }
}

fn arg<T: std::str::FromStr>(args: &[&str], i: usize) -> Option<T> {
    args.get(i).and_then(|a| a.parse().ok())
}

/// Adds pushed split-DNS domains (normalized, each once); None when one is not a domain.
/// At most [`MAX_DNS_DOMAINS`] are kept: a gateway pushing more is cut short, not trusted
/// with unbounded state.
fn add_domains(to: &mut Vec<String>, names: &[&str]) -> Option<()> {
    for n in names {
        let d = crate::wire::dns::normalize_domain(n)?;
        if !to.contains(&d) && to.len() < MAX_DNS_DOMAINS {
            to.push(d);
        }
    }
    Some(())
}

/// Most split-DNS domains a client takes from one PUSH_REPLY.
pub const MAX_DNS_DOMAINS: usize = 64;

/// `--dns server n address` takes `addr[:port]`, `[v6]:port` or a bare IPv6 address; the
/// port is dropped (the client only asks port 53).
fn parse_dns_address(a: &str) -> Option<IpAddr> {
    if let Ok(ip) = a.parse() {
        return Some(ip);
    }
    if let Ok(sa) = a.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    None
}

/// A PUSH_REPLY the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The message is not a PUSH_REPLY.
    #[error("not a PUSH_REPLY")]
    NotPushReply,
    /// An option has malformed arguments.
    #[error("malformed pushed option `{0}`")]
    BadOption(String),
    /// A required option is missing.
    #[error("PUSH_REPLY lacks `{0}`")]
    Missing(&'static str),
    /// The gateway chose a cipher this client does not implement.
    #[error("gateway pushed unsupported cipher {0}")]
    UnsupportedCipher(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PushReply {
        PushReply {
            address: Ipv4Addr::new(172, 16, 201, 2),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Ipv4Addr::new(172, 16, 201, 1),
            routes: vec!["10.1.0.0/16".parse().unwrap()],
            redirect_gateway: false,
            dns: vec!["10.1.0.53".parse().unwrap()],
            dns_domains: Vec::new(),
            peer_id: 3,
            cipher: Cipher::Aes256Gcm,
            tls_ekm: true,
            ping: Duration::from_secs(10),
            ping_restart: Duration::from_secs(60),
            tun_mtu: 1500,
            compress_stub_v2: false,
            caps: PushCaps::default(),
            ipv6: None,
        }
    }

    fn sample_v6() -> PushReply {
        PushReply {
            ipv6: Some(Ipv6Assignment {
                address: "fd00:6a7e:1::2".parse().unwrap(),
                subnet: "fd00:6a7e:1::/64".parse().unwrap(),
                gateway: "fd00:6a7e:1::1".parse().unwrap(),
                routes: vec!["fd00:6a7e:2::/64".parse().unwrap()],
            }),
            ..sample()
        }
    }

    #[test]
    fn ipv6_is_pushed_the_way_openvpn_2_6_pushes_it() {
        let m = sample_v6().to_message();
        assert!(m.contains(",route-ipv6 fd00:6a7e:2::/64,"), "{m}");
        assert!(
            m.contains(",ifconfig 172.16.201.2 255.255.255.0,ifconfig-ipv6 fd00:6a7e:1::2/64 fd00:6a7e:1::1,"),
            "{m}"
        );
        let (parsed, ignored) = PushReply::parse(&m).unwrap();
        assert_eq!(parsed, sample_v6());
        assert!(ignored.is_empty());
        let mut full = sample_v6();
        full.redirect_gateway = true;
        assert!(full.to_message().contains(",redirect-gateway def1 ipv6,"));
        assert!(!sample().to_message().contains("ipv6"));
        assert!(matches!(
            PushReply::parse("PUSH_REPLY,ifconfig 10.0.0.2 255.0.0.0,ifconfig-ipv6 fd00::2 x"),
            Err(PushError::BadOption(_))
        ));
    }

    #[test]
    fn split_dns_domains_are_pushed_as_openvpn_2_6_dns_options() {
        let mut r = sample();
        r.dns.push("10.1.0.54".parse().unwrap());
        r.dns_domains = vec!["corp.example".into(), "lab.example".into()];
        let m = r.to_message();
        assert!(m.contains(
            ",dhcp-option DNS 10.1.0.53,dhcp-option DNS 10.1.0.54,\
             dns server 0 address 10.1.0.53,dns server 0 resolve-domains corp.example lab.example,\
             dns server 1 address 10.1.0.54,dns server 1 resolve-domains corp.example lab.example,\
             dhcp-option DOMAIN corp.example,"
        ));
        let (back, ignored) = PushReply::parse(&m).unwrap();
        assert_eq!(back.dns, r.dns);
        assert_eq!(back.dns_domains, r.dns_domains);
        // The DNS suffix alone does not make DNS split.
        assert_eq!(ignored, ["dhcp-option DOMAIN corp.example"]);
        // No domains: no `dns` options (full-tunnel DNS as before).
        assert!(!sample().to_message().contains("dns server"));
    }

    #[test]
    fn split_dns_from_other_servers() {
        let base = "PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0,cipher AES-256-GCM";
        let (r, _) = PushReply::parse(&format!(
            "{base},dns server 1 address 10.8.0.1:53 [fd00::1]:5353,\
             dns server 1 resolve-domains Corp.Example. corp.example,\
             dhcp-option DOMAIN-ROUTE lab.example,dns server 1 dnssec yes"
        ))
        .unwrap();
        assert_eq!(
            r.dns,
            [
                "10.8.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert_eq!(r.dns_domains, ["corp.example", "lab.example"]);
        for bad in [
            "dns server 0 resolve-domains bad..name",
            "dns server 0 address not-an-ip",
            "dhcp-option DOMAIN-ROUTE -x",
        ] {
            assert!(PushReply::parse(&format!("{base},{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_has_what_openvpn_2_6_expects() {
        let m = sample().to_message();
        assert!(m.starts_with("PUSH_REPLY,route 10.1.0.0 255.255.0.0,dhcp-option DNS 10.1.0.53,"));
        assert!(m.contains(",ifconfig 172.16.201.2 255.255.255.0,"));
        assert!(m.contains(",route-gateway 172.16.201.1,topology subnet,"));
        assert!(m.contains(",peer-id 3,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,"));
        assert!(m.ends_with("tun-mtu 1500"));
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let (parsed, ignored) = PushReply::parse(&s.to_message()).unwrap();
        assert_eq!(parsed, s);
        assert!(ignored.is_empty());
        let mut s2 = sample();
        s2.tls_ekm = false;
        s2.compress_stub_v2 = true;
        s2.redirect_gateway = true;
        s2.cipher = Cipher::ChaCha20Poly1305;
        assert_eq!(PushReply::parse(&s2.to_message()).unwrap().0, s2);
    }

    #[test]
    fn older_clients_get_only_what_they_understand() {
        // OpenVPN 2.5: IV_NCP=2, IV_CIPHERS, no cc-exit, no tls-ekm, no IV_MTU.
        let mut s = sample();
        s.tls_ekm = false;
        s.caps = PushCaps {
            ncp: true,
            cc_exit: false,
            mtu: false,
        };
        let m = s.to_message();
        assert!(m.ends_with(",peer-id 3,cipher AES-256-GCM"), "{m}");
        assert!(
            !m.contains("protocol-flags") && !m.contains("tun-mtu"),
            "{m}"
        );
        // A tls-ekm client without cc-exit gets the 2.5-era `key-derivation` option.
        s.tls_ekm = true;
        assert!(
            s.to_message()
                .ends_with(",cipher AES-256-GCM,key-derivation tls-ekm")
        );
        // A client without NCP is not pushed a cipher (it keeps the one it announced).
        s.caps.ncp = false;
        assert!(!s.to_message().contains("cipher"));
        let mut p = PushReply::parse(&sample().to_message()).unwrap().0;
        p.caps = PushCaps::default();
        assert_eq!(p, sample());
    }

    #[test]
    fn parses_stock_openvpn_reply() {
        let (p, ignored) = PushReply::parse(
            "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,\
             ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,\
             protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500,block-outside-dns",
        )
        .unwrap();
        assert_eq!(p.address, Ipv4Addr::new(10, 8, 0, 2));
        assert!(p.tls_ekm);
        assert_eq!(ignored, ["block-outside-dns"]);
    }

    #[test]
    fn rejects_bad() {
        assert_eq!(
            PushReply::parse("AUTH_FAILED"),
            Err(PushError::NotPushReply)
        );
        assert!(matches!(
            PushReply::parse("PUSH_REPLY,ifconfig nope"),
            Err(PushError::BadOption(_))
        ));
        assert_eq!(
            PushReply::parse("PUSH_REPLY,cipher AES-256-GCM"),
            Err(PushError::Missing("ifconfig"))
        );
        assert!(matches!(
            PushReply::parse("PUSH_REPLY,ifconfig 10.0.0.2 255.0.0.0,cipher BF-CBC"),
            Err(PushError::UnsupportedCipher(_))
        ));
    }
}
