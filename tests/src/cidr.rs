//! An IPv4 address with a prefix length, as `ip addr` and OpenVPN configs want it.

use std::fmt;
use std::net::Ipv4Addr;

/// `addr/prefix`, e.g. an interface address `10.250.0.1/30` or a network `10.251.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub const fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        assert!(prefix <= 32);
        Ipv4Cidr { addr, prefix }
    }

    /// The netmask in dotted form (OpenVPN's `server` and `route` take it this way).
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }

    /// The network this address is in (host bits cleared).
    pub fn network(&self) -> Ipv4Cidr {
        let addr = u32::from(self.addr) & u32::from(self.netmask());
        Ipv4Cidr::new(Ipv4Addr::from(addr), self.prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_and_network() {
        let c = Ipv4Cidr::new(Ipv4Addr::new(10, 250, 3, 6), 30);
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(c.network().to_string(), "10.250.3.4/30");
        assert_eq!(
            Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).netmask(),
            Ipv4Addr::UNSPECIFIED
        );
        assert_eq!(
            Ipv4Cidr::new(Ipv4Addr::new(1, 2, 3, 4), 32).netmask(),
            Ipv4Addr::BROADCAST
        );
    }
}
