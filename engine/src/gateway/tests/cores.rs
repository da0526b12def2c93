//! The simulation's gateway: one [`GatewayCore`], or several workers' cores sharing one
//! [`Shard::split`], with the same surface. With several, datagrams are steered by source
//! address *and port* (harsher than the gateway's source-address steering: a NAT rebinding or
//! the IKE switch to port 4500 lands on another worker), TUN packets go to a worker picked by
//! their bytes (as the kernel's queue choice would), and every hand-over between workers is
//! delivered at once. The scenarios then check that nothing is lost or misrouted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::gateway::{
    CoreConfig, CoreStatus, Dest, Drops, EntropyFactory, Forward, GatewayCore, Listener, Shard,
    StreamId, TunnelId,
};

pub(in crate::gateway) struct Cores {
    cores: Vec<GatewayCore>,
    /// Output copied out of a core when hand-overs were involved.
    out: Vec<u8>,
    /// Datagrams handed from one worker to another so far.
    pub forwarded_datagrams: usize,
    dest: Option<Dest>,
}

fn mix(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

impl Cores {
    pub fn new(
        count: usize,
        mut cfg: impl FnMut() -> CoreConfig,
        entropy: impl Fn(usize) -> EntropyFactory,
    ) -> Self {
        let first = cfg();
        let shards = Shard::split(first.client_pool, count).unwrap();
        let mut cfgs = vec![first];
        cfgs.extend((1..count).map(|_| cfg()));
        let cores = shards
            .into_iter()
            .zip(cfgs)
            .enumerate()
            .map(|(i, (s, c))| GatewayCore::new_shard(c, entropy(i), s))
            .collect();
        Self {
            cores,
            out: Vec::with_capacity(65536),
            forwarded_datagrams: 0,
            dest: None,
        }
    }

    /// A restart handing every tunnel over (issue 17): each core ends what cannot move and
    /// exports the rest, the state goes through JSON (as through the driver's file), and a
    /// fresh set of cores of the same count imports it. Returns what the old cores sent last
    /// and how many tunnels the new ones took.
    pub fn hand_over(
        &mut self,
        now: Instant,
        cfg: &dyn Fn() -> CoreConfig,
        entropy: impl Fn(usize) -> EntropyFactory,
    ) -> (Vec<crate::gateway::Transmit>, usize) {
        let old = std::mem::take(&mut self.cores);
        let count = old.len();
        let mut last = Vec::new();
        let mut states = Vec::new();
        for mut c in old {
            c.prepare_handoff(now);
            while let Some(t) = c.poll_transmit() {
                last.push(t);
            }
            let json = serde_json::to_vec(&c.into_handoff(now)).unwrap();
            states.push(serde_json::from_slice::<crate::gateway::CoreHandoff>(&json).unwrap());
        }
        let first = cfg();
        let shards = Shard::split(first.client_pool, count).unwrap();
        let mut cfgs = vec![first];
        cfgs.extend((1..count).map(|_| cfg()));
        let mut taken = 0;
        for (i, ((s, c), h)) in shards.into_iter().zip(cfgs).zip(states).enumerate() {
            let mut core = GatewayCore::new_shard(c, entropy(i), s);
            taken += core.import_handoff(now, h).unwrap();
            self.cores.push(core);
        }
        (last, taken)
    }

    /// The active gateway's copy for its standby (issue 17): every core's
    /// [`GatewayCore::snapshot_for_standby`], as JSON (as in etcd). The cores serve on.
    pub fn standby_copy(&self, now: Instant) -> Vec<Vec<u8>> {
        self.cores
            .iter()
            .map(|c| serde_json::to_vec(&c.snapshot_for_standby(now)).unwrap())
            .collect()
    }

    /// The active gateway dies (its cores are dropped: no goodbye, nothing exported) and a
    /// standby's fresh cores of the same count import `copies`. Returns how many tunnels
    /// they took.
    pub fn fail_over(
        &mut self,
        now: Instant,
        cfg: &dyn Fn() -> CoreConfig,
        entropy: impl Fn(usize) -> EntropyFactory,
        copies: &[Vec<u8>],
    ) -> usize {
        let count = self.cores.len();
        assert_eq!(copies.len(), count);
        // The standby's pool is its own: the dead gateway's leases go with it.
        self.cores.clear();
        let first = cfg();
        let shards = Shard::split(first.client_pool, count).unwrap();
        let mut cfgs = vec![first];
        cfgs.extend((1..count).map(|_| cfg()));
        let mut taken = 0;
        for (i, ((s, c), h)) in shards.into_iter().zip(cfgs).zip(copies).enumerate() {
            let mut core = GatewayCore::new_shard(c, entropy(i), s);
            let h = serde_json::from_slice::<crate::gateway::CoreHandoff>(h).unwrap();
            taken += core.import_handoff(now, h).unwrap();
            self.cores.push(core);
        }
        taken
    }

    /// The only core (tests that hold it directly).
    pub fn only(&mut self) -> &mut GatewayCore {
        assert_eq!(self.cores.len(), 1, "a single-core simulation");
        &mut self.cores[0]
    }

    /// The worker a datagram from `from` reaches first.
    pub fn steer(&self, from: SocketAddr) -> usize {
        let ip = match from.ip() {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a) as u64,
        };
        (mix(ip << 16 | u64::from(from.port())) % self.cores.len() as u64) as usize
    }

    /// Delivers hand-overs until there are none; returns a TUN packet one of them made.
    fn settle(&mut self, now: Instant) -> bool {
        let mut got = false;
        loop {
            let mut any = false;
            for i in 0..self.cores.len() {
                while let Some(f) = self.cores[i].poll_forward() {
                    any = true;
                    let w = f.worker();
                    assert_ne!(w, i, "a core handed a packet to itself");
                    match f {
                        Forward::Datagram {
                            listener,
                            remote,
                            bytes,
                            ..
                        } => {
                            self.forwarded_datagrams += 1;
                            if let Some(p) = self.cores[w]
                                .handle_forwarded_datagram(now, listener, remote, &bytes)
                            {
                                assert!(!got, "one datagram made two TUN packets");
                                self.out.clear();
                                self.out.extend_from_slice(p);
                                got = true;
                            }
                        }
                        Forward::Tun { packet, .. } => {
                            if let Some((d, b)) = self.cores[w].handle_forwarded_tun(now, &packet) {
                                self.out.clear();
                                self.out.extend_from_slice(b);
                                self.dest = Some(d);
                            }
                        }
                        Forward::EndLogin { tunnel, client, .. } => {
                            self.cores[w].end_login(now, tunnel, &client)
                        }
                    }
                }
            }
            if !any {
                return got;
            }
        }
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        listener: Listener,
        remote: SocketAddr,
        bytes: &[u8],
    ) -> Option<&[u8]> {
        if self.cores.len() == 1 {
            return self.cores[0].handle_datagram(now, listener, remote, bytes);
        }
        let w = self.steer(remote);
        let direct = self.cores[w].handle_datagram(now, listener, remote, bytes);
        let had = match direct {
            Some(p) => {
                self.out.clear();
                self.out.extend_from_slice(p);
                true
            }
            None => false,
        };
        let forwarded = self.settle(now);
        (had || forwarded).then_some(&self.out[..])
    }

    fn stream_worker(&self, s: StreamId) -> usize {
        (mix(s) % self.cores.len() as u64) as usize
    }

    pub fn handle_stream_open(&mut self, stream: StreamId, remote: SocketAddr) {
        let w = self.stream_worker(stream);
        self.cores[w].handle_stream_open(stream, remote);
    }

    pub fn handle_stream_closed(&mut self, now: Instant, stream: StreamId, reason: &str) {
        let w = self.stream_worker(stream);
        self.cores[w].handle_stream_closed(now, stream, reason);
        self.settle(now);
    }

    pub fn handle_stream_packet(
        &mut self,
        now: Instant,
        stream: StreamId,
        bytes: &[u8],
    ) -> Option<&[u8]> {
        if self.cores.len() == 1 {
            return self.cores[0].handle_stream_packet(now, stream, bytes);
        }
        let w = self.stream_worker(stream);
        let had = match self.cores[w].handle_stream_packet(now, stream, bytes) {
            Some(p) => {
                self.out.clear();
                self.out.extend_from_slice(p);
                true
            }
            None => false,
        };
        self.settle(now);
        had.then_some(&self.out[..])
    }

    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8]) -> Option<(Dest, &[u8])> {
        if self.cores.len() == 1 {
            return self.cores[0].handle_tun_packet(now, packet);
        }
        let sum = packet
            .iter()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
        let w = (mix(sum) % self.cores.len() as u64) as usize;
        self.dest = None;
        if let Some((d, b)) = self.cores[w].handle_tun_packet(now, packet) {
            self.out.clear();
            self.out.extend_from_slice(b);
            self.dest = Some(d);
        }
        self.settle(now);
        let d = self.dest.take()?;
        Some((d, &self.out[..]))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for c in &mut self.cores {
            c.handle_timeout(now);
        }
        self.settle(now);
    }

    /// The next handshake job of any core, with the core's index.
    pub fn poll_job(&mut self) -> Option<(usize, crate::gateway::HandshakeJob)> {
        self.cores
            .iter_mut()
            .enumerate()
            .find_map(|(i, c)| c.poll_job().map(|j| (i, j)))
    }

    pub fn handle_job_done(&mut self, now: Instant, core: usize, done: crate::gateway::JobDone) {
        self.cores[core].handle_job_done(now, done);
        self.settle(now);
    }

    pub fn jobs_out(&self) -> usize {
        self.cores.iter().map(|c| c.jobs_out()).sum()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cores.iter().filter_map(|c| c.poll_timeout()).min()
    }

    pub fn poll_transmit(&mut self) -> Option<crate::gateway::Transmit> {
        self.cores.iter_mut().find_map(|c| c.poll_transmit())
    }

    /// More TUN packets of the last datagram (QUIC), from any core.
    pub fn poll_tun_packet(&mut self) -> Option<Vec<u8>> {
        self.cores.iter_mut().find_map(|c| c.poll_tun_packet())
    }

    /// Every core serves QUIC with `cfg`.
    pub fn set_quic_config(&mut self, cfg: Arc<crate::quic::QuicConfig>) {
        for c in &mut self.cores {
            c.set_quic_config(cfg.clone());
        }
    }

    /// The worker holding tunnel `id`.
    pub fn worker_of_tunnel(&self, id: TunnelId) -> Option<usize> {
        self.cores
            .iter()
            .position(|c| c.tunnel_remote(id).is_some())
    }

    pub fn poll_event(&mut self) -> Option<crate::gateway::Event> {
        self.cores.iter_mut().find_map(|c| c.poll_event())
    }

    /// Every worker's drop counters, added up.
    pub fn drops(&self) -> Drops {
        let mut d = Drops::default();
        for c in &self.cores {
            d.add(c.drops());
        }
        d
    }

    pub fn tunnel_count(&self) -> usize {
        self.cores.iter().map(GatewayCore::tunnel_count).sum()
    }

    pub fn deadline_count(&self) -> usize {
        self.cores.iter().map(GatewayCore::deadline_count).sum()
    }

    pub fn leased_count(&self) -> usize {
        // One pool for all workers.
        self.cores[0].leased_count()
    }

    pub fn gateway_addr(&self) -> std::net::Ipv4Addr {
        self.cores[0].gateway_addr()
    }

    pub fn tunnel_remote(&self, id: TunnelId) -> Option<SocketAddr> {
        self.cores.iter().find_map(|c| c.tunnel_remote(id))
    }

    pub fn set_crls(&mut self, now: Instant, crls: &[Vec<u8>]) -> Result<usize, String> {
        let mut n = 0;
        for c in &mut self.cores {
            n += c.set_crls(now, crls)?;
        }
        self.settle(now);
        Ok(n)
    }

    pub fn reconfigure(
        &mut self,
        now: Instant,
        cfg: impl Fn() -> CoreConfig,
    ) -> Result<usize, crate::gateway::ReconfigureError> {
        let mut n = 0;
        for c in &mut self.cores {
            n += c.reconfigure(now, cfg())?;
        }
        self.settle(now);
        Ok(n)
    }

    pub fn disconnect(&mut self, now: Instant, client: &str) -> usize {
        let mut n = 0;
        for c in &mut self.cores {
            n += c.disconnect(now, client);
        }
        self.settle(now);
        n
    }

    pub fn status(&self, now: Instant) -> CoreStatus {
        let mut s = CoreStatus::empty();
        for c in &self.cores {
            s.merge(&c.status(now));
        }
        s.clients.sort_by_key(|c| c.tunnel);
        s
    }
}
