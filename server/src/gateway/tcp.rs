//! TCP transport: one task per connection turns the byte stream into OpenVPN packets (2-byte
//! length framing) for the gateway core, and writes the core's packets back framed.
//!
//! Both directions move in batches: a read hands the core every complete packet it brought
//! in one event, and the writer frames every packet waiting in its queue into one write.

use std::net::SocketAddr;

use gatehouse_engine::wire::openvpn::{TcpDeframer, tcp_frame};

use super::worker::Msg;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Depth of a connection's outgoing queue; when full, packets are dropped like UDP would.
const OUT_QUEUE: usize = 1024;
/// Bytes the writer gathers from its queue into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// What TCP connections tell the gateway core.
#[derive(Debug)]
pub enum TcpEvent {
    /// A new connection; the core sends packets for it through `tx`.
    Opened {
        /// Connection id.
        conn: u64,
        /// The client's address.
        remote: SocketAddr,
        /// Packets to send (unframed).
        tx: mpsc::Sender<Vec<u8>>,
    },
    /// Complete OpenVPN packets from the connection, still framed (2-byte length each).
    Packets {
        /// Connection id.
        conn: u64,
        /// One or more framed packets.
        frames: Vec<u8>,
    },
    /// The connection closed or broke framing.
    Closed {
        /// Connection id.
        conn: u64,
        /// Why.
        reason: String,
    },
}

/// Accepts connections forever and hands each to the worker its client's address steers to
/// (as its UDP traffic would be), which runs the connection's tasks on its own thread.
pub async fn accept_loop(listener: TcpListener, workers: Arc<Vec<mpsc::Sender<Msg>>>) {
    let mut next_conn = 1u64;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = next_conn;
        next_conn += 1;
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a TCP connection to a worker");
                continue;
            }
        };
        let w = super::worker::conn_worker(remote, workers.len());
        let msg = Msg::TcpConn {
            conn,
            remote,
            stream,
        };
        if workers[w].send(msg).await.is_err() {
            return;
        }
    }
}

/// Runs connection `conn` on the calling worker's runtime: one reader and one writer task,
/// reporting to the worker through `events`.
pub fn spawn_conn(
    stream: TcpStream,
    conn: u64,
    remote: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    if events
        .try_send(TcpEvent::Opened { conn, remote, tx })
        .is_err()
    {
        // The worker is overwhelmed: refuse the connection (dropping it closes it).
        return;
    }
    {
        let (mut rd, mut wr) = stream.into_split();
        tokio::spawn(async move {
            let mut framed = Vec::with_capacity(WRITE_BATCH + 2048);
            while let Some(p) = rx.recv().await {
                framed.clear();
                tcp_frame(&p, &mut framed);
                // Everything else already queued goes out in the same write.
                while framed.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(p) => tcp_frame(&p, &mut framed),
                        Err(_) => break,
                    }
                }
                if wr.write_all(&framed).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let events = events.clone();
        tokio::spawn(async move {
            let mut deframer = TcpDeframer::new();
            let mut buf = vec![0u8; 65536];
            let reason = loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => break "connection closed by client".to_owned(),
                    Ok(n) => n,
                    Err(e) => break format!("read error: {e}"),
                };
                deframer.push(&buf[..n]);
                let mut broken = None;
                let mut frames = Vec::new();
                loop {
                    match deframer.pop() {
                        Ok(Some(frame)) => tcp_frame(frame, &mut frames),
                        Ok(None) => break,
                        Err(e) => {
                            broken = Some(format!("bad framing: {e}"));
                            break;
                        }
                    }
                }
                if !frames.is_empty()
                    && events
                        .send(TcpEvent::Packets { conn, frames })
                        .await
                        .is_err()
                {
                    return;
                }
                if let Some(r) = broken {
                    break r;
                }
            };
            let _ = events.send(TcpEvent::Closed { conn, reason }).await;
        });
    }
}
