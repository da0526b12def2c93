//! `GET /v1/capture?tunnel=NAME&seconds=N`: the inner packets of one tunnel (or all) as a
//! pcap stream, ending after N seconds.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;

use super::api::{AdminState, CaptureParams, CaptureQuery, capture_length, error, tunnel_prefixes};
use super::pcap;
use crate::gateway::Capture;

/// The response body: the pcap header, then a record per packet until the capture ends.
struct PcapBody {
    header: Option<Vec<u8>>,
    capture: Capture,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for PcapBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(h) = self.header.take() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(h)))));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        match self.capture.rx.poll_recv(cx) {
            Poll::Ready(Some(c)) => {
                let mut out = pcap::record(c.at, &c.packet);
                // Whatever else is queued goes in the same frame.
                while let Ok(c) = self.capture.rx.try_recv() {
                    out.extend_from_slice(&pcap::record(c.at, &c.packet));
                }
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The handler.
pub async fn capture(
    State(s): State<Arc<AdminState>>,
    CaptureQuery(p): CaptureQuery<CaptureParams>,
) -> Response {
    let length = match capture_length(&p) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let filter = match &p.tunnel {
        None => Vec::new(),
        Some(name) => match tunnel_prefixes(&s.gateway, name).await {
            Some(f) => f,
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no connected client and no connection is named {name:?}"),
                );
            }
        },
    };
    let capture = s.gateway.capture().start(filter);
    let body = PcapBody {
        header: Some(pcap::file_header()),
        capture,
        deadline: Box::pin(tokio::time::sleep(length)),
    };
    (
        [(header::CONTENT_TYPE, "application/vnd.tcpdump.pcap")],
        Body::new(body),
    )
        .into_response()
}
