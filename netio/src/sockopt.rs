//! The one socket option neither socket2 nor quinn-udp sets for us.

use std::io;
use std::os::fd::AsRawFd;

/// Sets `IP_MTU_DISCOVER` (and `IPV6_MTU_DISCOVER` on IPv6 sockets) back to
/// `IP_PMTUDISC_WANT`, the kernel's default: datagrams above the path MTU are fragmented
/// locally instead of refused. quinn-udp turns fragmentation off (QUIC never needs it), but an
/// IKE_AUTH carrying a certificate chain, or an OpenVPN packet from a 1500-byte tunnel, does.
pub fn allow_fragmentation(sock: &std::net::UdpSocket) -> io::Result<()> {
    let v6 = sock.local_addr()?.is_ipv6();
    set_int(
        sock,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_WANT,
    )?;
    if v6 {
        set_int(
            sock,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IP_PMTUDISC_WANT,
        )?;
        set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0)?;
    }
    Ok(())
}

#[allow(unsafe_code)]
fn set_int(sock: &std::net::UdpSocket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `sock` owns a valid descriptor for the duration of the call; the option value
    // is a live `c_int` and its exact size is passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
