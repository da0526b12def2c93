//! System calls for one or two datagrams, lighter than quinn-udp's batch paths (Linux).
//!
//! **Send**: `sendmsg` with a single `IP_PKTINFO` (or `IPV6_PKTINFO`) control message and
//! nothing else. quinn-udp's send adds an `IP_TOS` message to every datagram and names an
//! IPv4 peer's source of a dual-stack socket as an IPv4-mapped `IPV6_PKTINFO`: 56 bytes of
//! control messages, more than the kernel keeps on its stack for `sendmsg` (36), so each
//! datagram cost the kernel an allocation and a free besides the messages' parsing. A lone
//! datagram (the usual case below line rate, and the reply to an idle ping) goes out here
//! instead: an IPv4 source takes 28 bytes, read from the stack. GSO batches keep quinn-udp's
//! path.
//!
//! **Receive**: `recvmmsg` of at most [`FEW`] datagrams, the read of a worker at a low packet
//! rate. quinn-udp's receive prepares (and zeroes) message headers for a whole batch of 32 on
//! every call whatever it asks for; after an idle spell those are cold cache lines on the way
//! of the one datagram that woke the worker.

use std::io::{self, IoSliceMut};
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use quinn_udp::RecvMeta;

/// The most datagrams [`recv_few`] reads in one call.
pub const FEW: usize = 2;

/// A control-message buffer, aligned as a `cmsghdr` must be: room for what a datagram brings
/// in (`IPV6_PKTINFO`, 40 bytes with its header, and `UDP_GRO`, 24) with spare for one more
/// (a `TOS` message, should turning it off have failed); a send uses the first 40 at most.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([MaybeUninit<u8>; CONTROL]);

const CONTROL: usize = 128;

/// Makes a system call again when a signal interrupted it; its result, or the error it set.
fn retrying(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes the one control message of `hdr` (whose `msg_control` points at a [`Control`]):
/// `value` at `level`/`kind`, and sets `msg_controllen` to its space.
///
/// # Safety
/// `hdr.msg_control` points at a live, writable [`Control`] and `T` is at most 64 bytes.
#[allow(unsafe_code)]
unsafe fn put_control<T>(hdr: &mut libc::msghdr, level: i32, kind: i32, value: T) {
    let len = size_of::<T>() as u32;
    // SAFETY: the caller's buffer holds CMSG_SPACE(len) <= 80 bytes, so CMSG_FIRSTHDR points
    // at its start with room for the header and the (unaligned) data.
    unsafe {
        hdr.msg_controllen = libc::CMSG_SPACE(len) as _;
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = libc::CMSG_LEN(len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), value);
    }
}

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
    let mut control = Control([MaybeUninit::zeroed(); CONTROL]);
    // SAFETY: an all-zero msghdr is a valid empty one; every pointer set below outlives
    // the `sendmsg` call (`name`, `iov`, `control` and `bytes` live to the end of this
    // function), and `put_control` writes one message of at most 40 bytes into `control`.
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
                put_control(&mut hdr, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
            }
            IpAddr::V6(a) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                put_control(&mut hdr, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
            }
        }
        retrying(|| libc::sendmsg(sock.as_raw_fd(), &hdr, 0))
    }
}

/// One `recvmmsg` of up to [`FEW`] datagrams (and no more than `bufs` and `metas` hold) into
/// `bufs`, described in `metas` as quinn-udp describes them: the source, the length, the GRO
/// stride (the length when the kernel did not coalesce) and the local address the datagram
/// was sent to (`IP_PKTINFO` / `IPV6_PKTINFO`, which the socket must have asked for). Returns
/// how many came; `WouldBlock` when none was waiting.
#[allow(unsafe_code)]
pub fn recv_few(
    sock: &std::net::UdpSocket,
    bufs: &mut [IoSliceMut<'_>],
    metas: &mut [RecvMeta],
) -> io::Result<usize> {
    let max = bufs.len().min(metas.len()).min(FEW);
    if max == 0 {
        return Ok(0);
    }
    let mut names = [MaybeUninit::<libc::sockaddr_storage>::uninit(); FEW];
    let mut controls = [Control([MaybeUninit::uninit(); CONTROL]); FEW];
    // SAFETY: an all-zero mmsghdr is a valid empty one. Each header set below points at a
    // name, a control buffer and one iovec (`IoSliceMut` is ABI-compatible with `iovec` on
    // Unix) that outlive the call, with their true sizes; the kernel writes only within
    // them. Only the first `max` headers are passed.
    let got = unsafe {
        let mut hdrs: [libc::mmsghdr; FEW] = zeroed();
        for i in 0..max {
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = names[i].as_mut_ptr().cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = (&mut bufs[i] as *mut IoSliceMut<'_>).cast::<libc::iovec>();
            h.msg_iovlen = 1;
            h.msg_control = controls[i].0.as_mut_ptr().cast();
            h.msg_controllen = CONTROL as _;
        }
        let n = retrying(|| {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                max as libc::c_uint,
                0,
                std::ptr::null_mut(),
            ) as isize
        })?;
        for i in 0..n {
            // SAFETY (of the calls below): the kernel filled header i, its name (of the
            // length it set) and its control messages (of the length it set).
            let len = hdrs[i].msg_len as usize;
            let h = &hdrs[i].msg_hdr;
            let Some(addr) = decode_name(names[i].assume_init_ref(), h.msg_namelen) else {
                return Err(io::Error::other(
                    "a datagram from an address of no IP family",
                ));
            };
            let (dst_ip, stride) = decode_control(h, len);
            metas[i] = RecvMeta {
                addr,
                len,
                stride,
                ecn: None,
                dst_ip,
            };
        }
        n
    };
    Ok(got)
}

/// The sender's address as the kernel wrote it.
#[allow(unsafe_code)]
fn decode_name(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(name.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is that long.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is that long.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The local address a datagram reached and its GRO stride (`len` without coalescing).
#[allow(unsafe_code)]
fn decode_control(h: &libc::msghdr, len: usize) -> (Option<IpAddr>, usize) {
    let (mut dst, mut stride) = (None, len);
    // SAFETY: `h` is a header the kernel filled: its control buffer holds `msg_controllen`
    // bytes of complete messages, which CMSG_FIRSTHDR / CMSG_NXTHDR walk without leaving it;
    // each message's data is read unaligned, and only when its length covers the type read.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let room = ((*c).cmsg_len as usize).saturating_sub(data as usize - c as usize);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if room >= size_of::<libc::in_pktinfo>() => {
                    let p = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    dst = Some(IpAddr::V4(Ipv4Addr::from(p.ipi_addr.s_addr.to_ne_bytes())));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if room >= size_of::<libc::in6_pktinfo>() =>
                {
                    let p = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
                }
                (libc::SOL_UDP, libc::UDP_GRO) if room >= size_of::<libc::c_int>() => {
                    let s = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    if s > 0 {
                        stride = s as usize;
                    }
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    (dst, stride)
}
