//! TLS handshake work taken out of a session so that it can run on another thread.
//!
//! A TLS handshake is the only expensive step of an OpenVPN session after admission: the
//! gateway's key share and signature when the ClientHello arrives, the client's certificate
//! chain and signature checks when its last flight arrives (a few hundred microseconds
//! each). Everything else a session does - the reliable layer, key method 2, pushes, the
//! data channel - is cheap. So a session whose connection is still handshaking can hand
//! the connection and the TLS records it received to a [`TlsJob`] instead of processing them
//! itself; whoever runs the job (a control thread of the gateway) hands back a [`TlsDone`]
//! and the session carries on from there. Records that arrive meanwhile wait in the
//! session; the session's other key states (its data channel during a renegotiation) keep
//! working.
//!
//! Without offloading the same job is run in place, so both paths share this code.

/// A TLS connection and the records to feed it, to be processed anywhere.
pub struct TlsJob {
    conn: rustls::Connection,
    input: Vec<u8>,
}

/// A processed [`TlsJob`]: the connection, and whether it accepted the records.
pub struct TlsDone {
    pub(crate) conn: rustls::Connection,
    pub(crate) result: Result<(), rustls::Error>,
    /// The certificate verifier's refusal (with the client's name) when it refused, which it
    /// leaves on the thread that ran the job.
    pub(crate) refusal: Option<super::tls::CertRefusal>,
}

impl std::fmt::Debug for TlsJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsJob")
            .field("input", &self.input.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TlsDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsDone")
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

impl TlsJob {
    pub(crate) fn new(conn: rustls::Connection, input: Vec<u8>) -> Self {
        Self { conn, input }
    }

    /// Bytes of TLS records in the job.
    pub fn len(&self) -> usize {
        self.input.len()
    }

    /// True when the job carries no record.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// Feeds the records to the connection and processes them (the handshake's crypto
    /// happens here). Stops at the first error; what rustls queued to send (an alert) stays
    /// in the connection for the session to send.
    pub fn run(self) -> TlsDone {
        let Self { mut conn, input } = self;
        let mut rd: &[u8] = &input;
        let mut result = Ok(());
        while !rd.is_empty() {
            let n = match conn.read_tls(&mut rd) {
                Ok(n) => n,
                Err(e) => {
                    result = Err(rustls::Error::General(e.to_string()));
                    break;
                }
            };
            if let Err(e) = conn.process_new_packets() {
                result = Err(e);
                break;
            }
            if n == 0 {
                break;
            }
        }
        let refusal = if result.is_err() {
            super::tls::take_last_refusal()
        } else {
            None
        };
        TlsDone {
            conn,
            result,
            refusal,
        }
    }
}
