//! The handshake threads: where the workers send the costly steps of their clients'
//! handshakes - OpenVPN TLS handshake steps, IKE_SA_INIT key exchanges, IKE_AUTH certificate
//! checks and signatures (`handshake_threads` in gateway.toml; 0 keeps them on the workers). A worker
//! hands a [`HandshakeJob`] over and goes on forwarding packets; the job's result comes back
//! to the worker's own reply queue, and the session carries on there.
//!
//! The threads run below the workers' priority (nice +10 on Linux): when the machine is
//! busy, forwarding packets of established tunnels comes first and a storm of new
//! connections waits, instead of the other way round.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use gatehouse_engine::gateway::{HandshakeJob, JobDone};
use tokio::sync::mpsc;
use tracing::debug;

/// Nice value of the handshake threads (the workers run at the process's own, usually 0).
const NICE: i32 = 10;

type Work = (HandshakeJob, mpsc::UnboundedSender<JobDone>);

/// The workers' way to the handshake threads (cloned into each worker).
#[derive(Clone)]
pub(super) struct Handshakes {
    tx: std_mpsc::Sender<Work>,
}

impl Handshakes {
    /// Starts `n` handshake threads (n >= 1). They end when every clone of the returned
    /// handle is dropped (the workers stopped).
    pub(super) fn start(n: usize) -> Result<(Self, Vec<std::thread::JoinHandle<()>>)> {
        let (tx, rx) = std_mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gatehoused-hs{i}"))
                    .spawn(move || serve(&rx))
                    .context("starting a handshake thread")?,
            );
        }
        Ok((Self { tx }, threads))
    }

    /// Hands `job` to a handshake thread; its result goes to `reply`. Gives the job back
    /// when the threads are gone (the caller runs it itself).
    pub(super) fn send(
        &self,
        job: HandshakeJob,
        reply: &mpsc::UnboundedSender<JobDone>,
    ) -> Result<(), HandshakeJob> {
        self.tx
            .send((job, reply.clone()))
            .map_err(|std_mpsc::SendError((job, _))| job)
    }
}

fn serve(rx: &Mutex<std_mpsc::Receiver<Work>>) {
    lower_priority();
    loop {
        // One waiting thread holds the lock while it waits; the others queue for it. The
        // lock is never held while a job runs.
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok((job, reply)) = next else {
            return; // every worker is gone
        };
        // A worker that stopped meanwhile no longer listens: nothing to do.
        let _ = reply.send(job.run());
    }
}

/// Lowers the calling thread's scheduling priority (Linux: the nice value is per thread).
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE)
        };
        if rc != 0 {
            debug!(error = %std::io::Error::last_os_error(), "could not lower the handshake thread's priority");
        }
    }
}
