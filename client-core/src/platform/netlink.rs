//! Linux: changes of the underlay as the kernel announces them - a NETLINK_ROUTE socket
//! joined to the IPv4 and IPv6 address and route multicast groups. No netlink crate: the
//! four messages read here are a fixed header and a few attributes each.
//!
//! Only what can move the tunnel's path is reported: addresses coming and going, and default
//! routes (prefix length 0) coming and going. Everything on the client's own TUN device is
//! dropped here - the client adds its address and routes there on every connect, and those
//! must never look like a network change (a reconnect loop). The host route to the gateway
//! that a full tunnel adds is a /32, not a default route, so it is not reported either.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use super::UnderlayEvent;

/// Not in `libc`: the address attributes of an RTM_NEWADDR / RTM_DELADDR message.
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// sizeof(struct nlmsghdr), sizeof(struct ifaddrmsg), sizeof(struct rtmsg).
const NLMSG_HDR: usize = 16;
const IFADDRMSG: usize = 8;
const RTMSG: usize = 12;

/// A NETLINK_ROUTE socket subscribed to address and route changes.
pub(super) struct Watcher {
    fd: AsyncFd<OwnedFd>,
    /// The client's TUN device, by name: its index changes with every connect.
    tun: String,
    /// Every index the TUN device had while watched (its address goes away with the device,
    /// after the name no longer resolves).
    tun_indexes: Vec<u32>,
    buf: Vec<u8>,
    /// Events parsed from the last read and not handed out yet.
    queued: std::collections::VecDeque<UnderlayEvent>,
}

impl Watcher {
    #[allow(unsafe_code)] // netlink and interface-name calls of libc; see the SAFETY notes
    pub(super) fn new(tun: &str) -> io::Result<Watcher> {
        // SAFETY: plain socket(2); the descriptor is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is its unbound value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = (libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV6_ROUTE) as u32;
        // SAFETY: `addr` is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd is moved in; it stays open, and the same descriptor, for as
        // long as the AsyncFd lives.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        let mut w = Watcher {
            fd,
            tun: tun.to_owned(),
            tun_indexes: Vec::new(),
            buf: vec![0; 64 * 1024],
            queued: Default::default(),
        };
        w.note_tun();
        Ok(w)
    }

    #[allow(unsafe_code)] // netlink and interface-name calls of libc; see the SAFETY notes
    fn note_tun(&mut self) {
        let Ok(name) = std::ffi::CString::new(self.tun.as_str()) else {
            return;
        };
        // SAFETY: a NUL-terminated name; 0 means no such device.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index != 0 && !self.tun_indexes.contains(&index) {
            self.tun_indexes.push(index);
        }
    }

    /// The next change of the underlay.
    #[allow(unsafe_code)] // netlink and interface-name calls of libc; see the SAFETY notes
    pub(super) async fn next(&mut self) -> io::Result<UnderlayEvent> {
        loop {
            if let Some(ev) = self.queued.pop_front() {
                return Ok(ev);
            }
            let n = {
                let mut guard = self.fd.readable().await?;
                match guard.try_io(|fd| {
                    // SAFETY: reads into our own buffer of the length given.
                    let n = unsafe {
                        libc::recv(
                            fd.as_raw_fd(),
                            self.buf.as_mut_ptr().cast(),
                            self.buf.len(),
                            0,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                }) {
                    Ok(Ok(n)) => n,
                    // ENOBUFS: the kernel dropped messages we were too slow for. Something
                    // changed; say so rather than guess what.
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        return Ok(UnderlayEvent::Overrun);
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            };
            self.note_tun();
            let mut events = Vec::new();
            parse(&self.buf[..n], &mut events);
            self.queued.extend(
                events
                    .into_iter()
                    .filter(|ev| ev.ifindex().is_none_or(|i| !self.tun_indexes.contains(&i))),
            );
        }
    }
}

/// The events in one datagram of netlink messages; anything malformed ends the parse.
fn parse(mut buf: &[u8], out: &mut Vec<UnderlayEvent>) {
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR || len > buf.len() {
            return;
        }
        let body = &buf[NLMSG_HDR..len];
        match kind {
            libc::RTM_NEWADDR | libc::RTM_DELADDR => {
                if let Some(ev) = address(body, kind == libc::RTM_NEWADDR) {
                    out.push(ev);
                }
            }
            libc::RTM_NEWROUTE | libc::RTM_DELROUTE => {
                if let Some(ev) = route(body, kind == libc::RTM_NEWROUTE) {
                    out.push(ev);
                }
            }
            _ => {}
        }
        buf = &buf[align(len).min(buf.len())..];
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The attributes after a message's fixed part: (type, payload).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, payload))
    })
}

fn ip(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), bytes.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        (libc::AF_INET6, 16) => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

fn address(body: &[u8], added: bool) -> Option<UnderlayEvent> {
    if body.len() < IFADDRMSG {
        return None;
    }
    let family = body[0];
    let ifindex = u32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
    // IFA_LOCAL is the interface's own address on point-to-point links, where IFA_ADDRESS
    // is the peer's; elsewhere only IFA_ADDRESS comes.
    let mut addr = None;
    for (kind, payload) in attributes(&body[IFADDRMSG..]) {
        match kind {
            IFA_LOCAL => addr = ip(family, payload),
            IFA_ADDRESS if addr.is_none() => addr = ip(family, payload),
            _ => {}
        }
    }
    Some(UnderlayEvent::Address {
        added,
        addr: addr?,
        ifindex,
    })
}

fn route(body: &[u8], added: bool) -> Option<UnderlayEvent> {
    if body.len() < RTMSG {
        return None;
    }
    let dst_len = body[1];
    let mut table = u32::from(body[4]);
    // Only default routes move the path to the gateway; the local table holds the host's
    // own addresses (their events come as address changes).
    if dst_len != 0 {
        return None;
    }
    let mut ifindex = None;
    let mut gateway = None;
    for (kind, payload) in attributes(&body[RTMSG..]) {
        match kind {
            libc::RTA_OIF if payload.len() == 4 => {
                ifindex = Some(u32::from_ne_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            libc::RTA_TABLE if payload.len() == 4 => {
                table = u32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
            }
            libc::RTA_GATEWAY => gateway = ip(body[0], payload),
            _ => {}
        }
    }
    if table == u32::from(libc::RT_TABLE_LOCAL) {
        return None;
    }
    Some(UnderlayEvent::DefaultRoute {
        added,
        gateway,
        ifindex,
    })
}

/// The interface's name, for log lines ("eth0"), or its index when it is gone.
#[allow(unsafe_code)] // netlink and interface-name calls of libc; see the SAFETY notes
pub(super) fn interface_name(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer is IF_NAMESIZE long, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("interface {index}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = fixed.to_vec();
        for (t, p) in attrs {
            body.extend_from_slice(&((4 + p.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(p);
            while !body.len().is_multiple_of(4) {
                body.push(0);
            }
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn parses_address_and_default_route_changes_and_skips_other_routes() {
        let mut ifa = vec![libc::AF_INET as u8, 30, 0, 0];
        ifa.extend_from_slice(&7u32.to_ne_bytes());
        let mut rt_default = vec![libc::AF_INET as u8, 0, 0, 0, libc::RT_TABLE_MAIN, 3, 0, 1];
        rt_default.extend_from_slice(&0u32.to_ne_bytes());
        let mut rt_host = rt_default.clone();
        rt_host[1] = 32;
        let mut buf = message(
            libc::RTM_DELADDR,
            &ifa,
            &[(IFA_ADDRESS, &[10, 0, 0, 2]), (IFA_LOCAL, &[10, 0, 0, 2])],
        );
        buf.extend(message(
            libc::RTM_NEWROUTE,
            &rt_host,
            &[(libc::RTA_OIF, &7u32.to_ne_bytes())],
        ));
        buf.extend(message(
            libc::RTM_NEWROUTE,
            &rt_default,
            &[
                (libc::RTA_GATEWAY, &[10, 0, 0, 5]),
                (libc::RTA_OIF, &7u32.to_ne_bytes()),
            ],
        ));
        // A truncated tail is ignored, not read past.
        buf.extend_from_slice(&[200, 0, 0, 0, 24, 0]);
        let mut out = Vec::new();
        parse(&buf, &mut out);
        assert_eq!(
            out,
            [
                UnderlayEvent::Address {
                    added: false,
                    addr: "10.0.0.2".parse().unwrap(),
                    ifindex: 7
                },
                UnderlayEvent::DefaultRoute {
                    added: true,
                    gateway: Some("10.0.0.5".parse().unwrap()),
                    ifindex: Some(7)
                },
            ]
        );
    }
}
