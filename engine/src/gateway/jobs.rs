//! Handshake work that leaves the worker (issue 13: the control plane must not block the
//! data plane). With [`ServerConfig::offload_handshakes`](crate::openvpn::server::ServerConfig)
//! on, an OpenVPN session's TLS handshake steps come out of the core as [`HandshakeJob`]s:
//! the driver runs them on a control thread ([`HandshakeJob::run`] is plain computation,
//! `Send`, no I/O) and hands each [`JobDone`] back with
//! [`GatewayCore::handle_job_done`]. Meanwhile the worker keeps forwarding every
//! tunnel's data; the session waiting for its job keeps the records that arrive for it.
//!
//! A job whose tunnel is gone when it comes back is dropped; so is one whose key state
//! failed or was replaced meanwhile (each job is numbered).

use std::time::Instant;

use super::tunnel::Tunnel;
use super::{GatewayCore, TunnelId};
use crate::openvpn::tls_job::{TlsDone, TlsJob};

/// A TLS handshake step of one tunnel, to run on any thread.
#[derive(Debug)]
pub struct HandshakeJob {
    tunnel: TunnelId,
    key_id: u8,
    seq: u64,
    /// Boxed: a TLS connection is over a kilobyte and jobs travel through queues.
    tls: Box<TlsJob>,
}

/// A [`HandshakeJob`] that ran; give it back to the core that made the job.
#[derive(Debug)]
pub struct JobDone {
    tunnel: TunnelId,
    key_id: u8,
    seq: u64,
    tls: Box<TlsDone>,
}

impl HandshakeJob {
    /// Does the work (the handshake's key exchange, signature or certificate checks).
    pub fn run(self) -> JobDone {
        JobDone {
            tunnel: self.tunnel,
            key_id: self.key_id,
            seq: self.seq,
            tls: Box::new(self.tls.run()),
        }
    }

    /// The tunnel it belongs to.
    pub fn tunnel(&self) -> TunnelId {
        self.tunnel
    }
}

impl JobDone {
    /// The tunnel it belongs to.
    pub fn tunnel(&self) -> TunnelId {
        self.tunnel
    }
}

impl GatewayCore {
    /// The next handshake step to run elsewhere (only with offloading on; the core never
    /// makes one otherwise). Poll after every call that may have touched a tunnel, like
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn poll_job(&mut self) -> Option<HandshakeJob> {
        self.jobs.pop_front()
    }

    /// Handshake jobs handed out and not yet back.
    pub fn jobs_out(&self) -> usize {
        self.jobs_out
    }

    /// A job came back: its session carries on (its output is ready to collect).
    pub fn handle_job_done(&mut self, now: Instant, done: JobDone) {
        self.jobs_out = self.jobs_out.saturating_sub(1);
        let JobDone {
            tunnel,
            key_id,
            seq,
            tls,
        } = done;
        if let Some(Tunnel::OpenVpn(t)) = self.tunnels.get_mut(&tunnel) {
            t.session.tls_job_done(now, key_id, seq, *tls);
            self.dirty.push(tunnel);
        }
        self.flush(now);
    }

    /// Takes the jobs tunnel `id` made (called when its output is collected).
    pub(super) fn collect_jobs(&mut self, id: TunnelId) {
        let Some(Tunnel::OpenVpn(t)) = self.tunnels.get_mut(&id) else {
            return;
        };
        while let Some((key_id, seq, tls)) = t.session.poll_tls_job() {
            self.jobs_out += 1;
            self.jobs.push_back(HandshakeJob {
                tunnel: id,
                key_id,
                seq,
                tls: Box::new(tls),
            });
        }
    }
}
