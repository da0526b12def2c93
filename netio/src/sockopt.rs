//! The socket options neither socket2 nor quinn-udp sets for us. (The crate's other unsafe
//! code registers a UDP socket for reading only, in `udp.rs`, and makes the system calls
//! for one or two datagrams, in `few.rs`.)

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

/// Turns off the traffic-class control message quinn-udp asks for (`IP_RECVTOS`, and
/// `IPV6_RECVTCLASS` on IPv6 sockets): only QUIC's ECN reads it and the gateway does not use
/// ECN, so the kernel need not build it for every datagram.
pub fn no_tos_cmsg(sock: &std::net::UdpSocket) -> io::Result<()> {
    let _ = set_int(sock, libc::IPPROTO_IP, libc::IP_RECVTOS, 0);
    if sock.local_addr()?.is_ipv6() {
        set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 0)?;
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

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the same on x86 and Arm, which libc
/// does not export for every target).
const SO_ATTACH_REUSEPORT_CBPF: i32 = 51;

/// `SKF_NET_OFF`: classic BPF loads at this offset read the network (IP) header.
const SKF_NET_OFF: i32 = -0x100000;

/// Steers each datagram of a reuseport group to socket `((src * multiplier) >> 16) %
/// sockets`, `src` being the IPv4 source address or the last 32 bits of an IPv6 one (the
/// engine's `worker_of_ip`; an IPv4 peer of a dual-stack socket gets the same worker as on an
/// IPv4 socket), so every packet of one peer, on every port of the group family, reaches the
/// same worker. Returns an error when the kernel refuses the program; the kernel's own flow
/// hash then picks the socket.
pub fn steer_by_source(
    sock: &std::net::UdpSocket,
    multiplier: u32,
    sockets: u32,
) -> io::Result<()> {
    let code = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let ld_abs = |size: u32, off: i32| {
        code(
            (libc::BPF_LD | size | libc::BPF_ABS) as u16,
            0,
            0,
            off as u32,
        )
    };
    let program = [
        // A = IP version (high nibble of the first byte of the network header)
        ld_abs(libc::BPF_B, SKF_NET_OFF),
        code(
            (libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K) as u16,
            0,
            0,
            4,
        ),
        // IPv6: skip to the load of the last word of its source address
        code(
            (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            2,
            0,
            6,
        ),
        // IPv4: A = source address (header offset 12)
        ld_abs(libc::BPF_W, SKF_NET_OFF + 12),
        code((libc::BPF_JMP | libc::BPF_JA) as u16, 0, 0, 1),
        // IPv6: A = bytes 12..16 of the source address (header offset 8 + 12)
        ld_abs(libc::BPF_W, SKF_NET_OFF + 20),
        code(
            (libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K) as u16,
            0,
            0,
            multiplier,
        ),
        code(
            (libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K) as u16,
            0,
            0,
            16,
        ),
        code(
            (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16,
            0,
            0,
            sockets.max(1),
        ),
        code((libc::BPF_RET | libc::BPF_A) as u16, 0, 0, 0),
    ];
    attach_reuseport_cbpf(sock, &program)
}

#[allow(unsafe_code)]
fn attach_reuseport_cbpf(
    sock: &std::net::UdpSocket,
    program: &[libc::sock_filter],
) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call (the kernel copies it);
    // the descriptor is valid while `sock` is borrowed; the size passed is `prog`'s own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
