//! One datagram sent from a chosen local address: `sendmsg` with a single `IP_PKTINFO` (or
//! `IPV6_PKTINFO`) control message and nothing else.
//!
//! quinn-udp's send adds an `IP_TOS` message to every datagram and names an IPv4 peer's
//! source of a dual-stack socket as an IPv4-mapped `IPV6_PKTINFO`: 56 bytes of control
//! messages, more than the kernel keeps on its stack for `sendmsg` (36), so each datagram
//! cost the kernel an allocation and a free besides the messages' parsing. A lone datagram
//! (the usual case below line rate, and the reply to an idle ping) goes out here instead: an
//! IPv4 source takes 28 bytes, read from the stack. GSO batches keep quinn-udp's path.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// Room for the larger of the two messages (`CMSG_SPACE(sizeof(in6_pktinfo))` = 40), aligned
/// as a `cmsghdr` must be.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Sends `bytes` to `to` from the local address `src` (an IPv4-mapped `src` counts as IPv4;
/// a dual-stack socket takes an IPv4 source for an IPv4 or IPv4-mapped peer).
#[allow(unsafe_code)]
pub fn send_from(
    sock: &std::net::UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
    src: IpAddr,
) -> io::Result<usize> {
    let name = socket2::SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = Control([0; 64]);
    // SAFETY: an all-zero msghdr is a valid empty one; every pointer set below outlives
    // the `sendmsg` call (`name`, `iov`, `control` and `bytes` live to the end of this
    // function); the control buffer is aligned for `cmsghdr` and `msg_controllen` (at most
    // 40) lies within its 64 bytes, so `CMSG_FIRSTHDR` returns a pointer into it with room
    // for the header and the data written.
    unsafe {
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_name = name.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = name.len();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        match src.to_canonical() {
            IpAddr::V4(a) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let len = size_of::<libc::in_pktinfo>() as u32;
                hdr.msg_controllen = libc::CMSG_SPACE(len) as _;
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
            }
            IpAddr::V6(a) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                let len = size_of::<libc::in6_pktinfo>() as u32;
                hdr.msg_controllen = libc::CMSG_SPACE(len) as _;
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>(), info);
            }
        }
        loop {
            let n = libc::sendmsg(sock.as_raw_fd(), &hdr, 0);
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
