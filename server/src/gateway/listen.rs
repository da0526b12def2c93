//! Binding the listeners: by default one dual-stack `[::]` socket per port (and worker), which
//! takes IPv4 and IPv6 clients alike (`gatehouse_netio::udp` hands IPv4 peers on as plain
//! IPv4 addresses); where the kernel has no IPv6, `0.0.0.0`, said once in the log. An explicit
//! `listen` binds exactly that address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use gatehouse_netio::udp::{self, Bind};
use tokio::net::TcpListener;
use tracing::warn;

/// A dual-stack bind fell back to IPv4 (the kernel has no IPv6): every later one does too.
static NO_IPV6: AtomicBool = AtomicBool::new(false);

fn note_no_ipv6(e: &std::io::Error) {
    if !NO_IPV6.swap(true, Ordering::Relaxed) {
        warn!(error = %e, "IPv6 is not available on this host: the listeners take IPv4 only (0.0.0.0); set `listen` to silence this");
    }
}

/// What `bind` stands for now, for the log and `gatehoused status`
/// (`[::]:1194 (IPv4+IPv6)`, `0.0.0.0:1194`).
pub fn describe(bind: Bind) -> String {
    match bind.fallback() {
        Some(v4) if NO_IPV6.load(Ordering::Relaxed) => v4.to_string(),
        _ => bind.to_string(),
    }
}

/// Binds a UDP port for `count` workers; returns the sockets and whether datagrams are
/// steered to workers by source address.
pub fn udp_group(
    bind: Bind,
    count: usize,
    buffer: usize,
    multiplier: u32,
) -> std::io::Result<(Vec<std::net::UdpSocket>, bool)> {
    if NO_IPV6.load(Ordering::Relaxed)
        && let Some(v4) = bind.fallback()
    {
        return udp::bind_group(v4, count, buffer, multiplier);
    }
    let (socks, steered, fell_back) = udp::bind_group_as(bind, count, buffer, multiplier)?;
    if fell_back {
        note_no_ipv6(&std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    Ok((socks, steered))
}

/// Binds the OpenVPN TCP listener.
pub fn tcp(bind: Bind) -> Result<TcpListener> {
    let try_bind = |addr: SocketAddr, dual: bool| -> std::io::Result<std::net::TcpListener> {
        use socket2::{Protocol, Type};
        let sock = udp::socket_for(addr, dual, Type::STREAM, Protocol::TCP)?;
        // As tokio's own bind: a restart can take the port while old connections linger.
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(1024)?;
        Ok(sock.into())
    };
    let dual = matches!(bind, Bind::Any(_));
    let v4 = bind.fallback().filter(|_| NO_IPV6.load(Ordering::Relaxed));
    let l = match v4 {
        Some(v4) => try_bind(v4, false),
        None => match try_bind(bind.first(), dual) {
            Err(e) if dual && udp::no_ipv6(&e) => {
                note_no_ipv6(&e);
                try_bind(bind.fallback().unwrap_or_else(|| bind.first()), false)
            }
            r => r,
        },
    }
    .with_context(|| {
        format!(
            "cannot bind TCP {} (`openvpn.tcp_port`); is a web server using it?",
            describe(bind)
        )
    })?;
    Ok(TcpListener::from_std(l)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
    use std::time::Duration;

    /// The default bind takes an IPv4 and an IPv6 peer on one socket and names the IPv4 one
    /// as plain IPv4; replies reach both.
    #[tokio::test(flavor = "current_thread")]
    async fn the_default_bind_serves_both_families() {
        let (socks, _) = udp_group(Bind::Any(0), 1, 1 << 16, 1).expect("bind [::]:0");
        let sock = socks.into_iter().next().expect("one socket");
        let port = sock.local_addr().expect("port").port();
        let gw = udp::BatchSocket::new(sock).expect("wrap");
        for peer in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let c = UdpSocket::bind(SocketAddr::new(peer, 0)).expect("bind the peer");
            c.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            c.send_to(b"hi", SocketAddr::new(peer, port)).expect("send");
            let mut batch = udp::RecvBatch::new();
            tokio::time::timeout(Duration::from_secs(2), gw.recv(&mut batch))
                .await
                .expect("heard")
                .expect("recv");
            let (from, data) = batch.iter().next().expect("one datagram");
            assert_eq!(data, b"hi");
            assert_eq!(from, c.local_addr().expect("peer addr"), "canonical sender");
            let mut q = udp::SendQueue::new();
            q.push(&gw, from, b"back");
            q.flush(&gw);
            let mut buf = [0u8; 16];
            let n = c.recv(&mut buf).expect("the reply");
            assert_eq!(&buf[..n], b"back");
        }
    }

    /// An explicit `0.0.0.0` is IPv4 only, an explicit `::` IPv6 only.
    #[test]
    fn an_explicit_address_is_exactly_that() {
        let v4 = Bind::new(Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0);
        let (s, _) = udp_group(v4, 1, 1 << 16, 1).expect("bind 0.0.0.0");
        assert!(s[0].local_addr().expect("addr").is_ipv4());
        let v6 = Bind::new(Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), 0);
        let (s, _) = udp_group(v6, 1, 1 << 16, 1).expect("bind ::");
        let port = s[0].local_addr().expect("addr").port();
        let c = UdpSocket::bind("127.0.0.1:0").expect("bind a v4 peer");
        c.send_to(b"x", ("127.0.0.1", port)).expect("send");
        s[0].set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        s[0].set_nonblocking(false).expect("blocking");
        let mut buf = [0u8; 4];
        assert!(
            s[0].recv_from(&mut buf).is_err(),
            "an IPv6-only socket hears no IPv4 peer"
        );
        assert_eq!(describe(v4), "0.0.0.0:0");
        assert_eq!(describe(Bind::Any(1194)), "[::]:1194 (IPv4+IPv6)");
    }
}
