//! Handshake work that leaves the worker (issue 13: the control plane must not block the
//! data plane). With offloading on ([`ServerConfig::offload_handshakes`] for OpenVPN,
//! [`ResponderConfig::offload`] for IKEv2), the costly steps of a handshake come out of the
//! core as [`HandshakeJob`]s: an OpenVPN session's TLS handshake steps, an IKE_SA_INIT's key
//! exchange, an IKE_AUTH's certificate check and signature. The driver runs them on a
//! control thread ([`HandshakeJob::run`] is plain computation, `Send`, no I/O) and hands
//! each [`JobDone`] back with [`GatewayCore::handle_job_done`]. Meanwhile the worker keeps
//! forwarding every tunnel's data; a session waiting for its job keeps what arrives for it
//! (OpenVPN records) or ignores it (IKE retransmissions, answered once the job is back).
//!
//! A job whose tunnel is gone when it comes back is dropped; so is one whose key state
//! failed or was replaced meanwhile (each TLS job is numbered) or whose IKE SA moved on.
//!
//! [`ServerConfig::offload_handshakes`]: crate::openvpn::server::ServerConfig
//! [`ResponderConfig::offload`]: crate::ikev2::responder::ResponderConfig

use std::time::Instant;

use super::tunnel::{IkeSa, Tunnel};
use super::{GatewayCore, TunnelId};
use crate::ikev2::responder::{AuthDone, AuthJob, InitOutcome, InitWork};
use crate::openvpn::tls_job::{TlsDone, TlsJob};

/// A handshake step of one tunnel, to run on any thread.
#[derive(Debug)]
pub struct HandshakeJob {
    tunnel: TunnelId,
    work: Work,
}

/// Boxed: a TLS connection is over a kilobyte and jobs travel through queues.
#[derive(Debug)]
enum Work {
    Tls {
        key_id: u8,
        seq: u64,
        tls: Box<TlsJob>,
    },
    IkeInit(Box<InitWork>),
    IkeAuth(Box<AuthJob>),
}

/// A [`HandshakeJob`] that ran; give it back to the core that made the job.
#[derive(Debug)]
pub struct JobDone {
    tunnel: TunnelId,
    done: Done,
}

enum Done {
    Tls {
        key_id: u8,
        seq: u64,
        tls: Box<TlsDone>,
    },
    IkeInit(Box<InitOutcome>),
    IkeAuth(Box<AuthDone>),
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Tls { key_id, seq, .. } => f
                .debug_struct("Tls")
                .field("key_id", key_id)
                .field("seq", seq)
                .finish_non_exhaustive(),
            Done::IkeInit(_) => f.write_str("IkeInit"),
            Done::IkeAuth(a) => a.fmt(f),
        }
    }
}

impl HandshakeJob {
    /// Does the work (the handshake's key exchange, signature or certificate checks).
    pub fn run(self) -> JobDone {
        let done = match self.work {
            Work::Tls { key_id, seq, tls } => Done::Tls {
                key_id,
                seq,
                tls: Box::new(tls.run()),
            },
            Work::IkeInit(w) => Done::IkeInit(Box::new(w.run())),
            Work::IkeAuth(a) => Done::IkeAuth(Box::new(a.run())),
        };
        JobDone {
            tunnel: self.tunnel,
            done,
        }
    }

    /// The tunnel it belongs to.
    pub fn tunnel(&self) -> TunnelId {
        self.tunnel
    }

    /// What it does: `tls` (an OpenVPN TLS handshake step), `ike-init` (an IKE_SA_INIT key
    /// exchange) or `ike-auth` (an IKE_AUTH certificate check and signature).
    pub fn kind(&self) -> &'static str {
        match self.work {
            Work::Tls { .. } => "tls",
            Work::IkeInit(_) => "ike-init",
            Work::IkeAuth(_) => "ike-auth",
        }
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
        let JobDone { tunnel, done } = done;
        match (done, self.tunnels.get_mut(&tunnel)) {
            (Done::Tls { key_id, seq, tls }, Some(Tunnel::OpenVpn(t))) => {
                t.session.tls_job_done(now, key_id, seq, *tls);
                self.dirty.push(tunnel);
            }
            (Done::IkeAuth(a), Some(Tunnel::Ike(t))) => {
                if let IkeSa::Responder(r) = &mut t.sa {
                    r.auth_job_done(now, *a);
                }
                self.dirty.push(tunnel);
            }
            (Done::IkeInit(o), _) => self.ike_init_done(tunnel, *o),
            _ => {}
        }
        self.flush(now);
    }

    /// Queues an IKE_SA_INIT key exchange for tunnel `id` (which exists once it is done).
    pub(super) fn push_init_job(&mut self, id: TunnelId, work: InitWork) {
        self.jobs_out += 1;
        self.jobs.push_back(HandshakeJob {
            tunnel: id,
            work: Work::IkeInit(Box::new(work)),
        });
    }

    /// Takes the jobs tunnel `id` made (called when its output is collected).
    pub(super) fn collect_jobs(&mut self, id: TunnelId) {
        match self.tunnels.get_mut(&id) {
            Some(Tunnel::OpenVpn(t)) => {
                while let Some((key_id, seq, tls)) = t.session.poll_tls_job() {
                    self.jobs_out += 1;
                    self.jobs.push_back(HandshakeJob {
                        tunnel: id,
                        work: Work::Tls {
                            key_id,
                            seq,
                            tls: Box::new(tls),
                        },
                    });
                }
            }
            Some(Tunnel::Ike(t)) => {
                if let IkeSa::Responder(r) = &mut t.sa
                    && let Some(a) = r.poll_auth_job()
                {
                    self.jobs_out += 1;
                    self.jobs.push_back(HandshakeJob {
                        tunnel: id,
                        work: Work::IkeAuth(Box::new(a)),
                    });
                }
            }
            // QUIC's TLS runs inside quinn-proto on the worker; WireGuard has no TLS.
            Some(Tunnel::Quic(_)) | Some(Tunnel::WireGuard(_)) | None => {}
        }
    }
}
