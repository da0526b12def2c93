//! Dead peers: the gateway drops a client that went silent (inactivity timeout) and the
//! client restarts when the gateway went silent (pushed ping-restart).

use std::time::Duration;

use super::pair::Pair;
use crate::openvpn::client::ClientEvent;
use crate::openvpn::server::{CloseReason, ServerEvent};

#[test]
fn gateway_drops_a_silent_client_after_the_inactivity_timeout() {
    let mut p = Pair::new(true);
    p.connect();
    p.run_for(Duration::from_secs(20));
    let timeout = p.server_cfg.inactivity_timeout;
    p.link.block_to_server = true;
    let silent_since = p.now;
    assert!(p.run_until(timeout + Duration::from_secs(5), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Closed(_)))
    }));
    assert_eq!(
        p.server_events.last(),
        Some(&ServerEvent::Closed(CloseReason::Inactive))
    );
    // Not before the timeout (the last packet may have been in flight when the link broke),
    // and not much after it.
    let after = p.now - silent_since;
    assert!(after >= timeout - Duration::from_secs(11), "{after:?}");
    assert!(after <= timeout + Duration::from_secs(1), "{after:?}");
    assert!(p.run_until(Duration::from_secs(5), |p| {
        p.server.as_ref().is_some_and(|s| s.is_closed())
    }));
    // The client heard the gateway's pings all along.
    assert!(p.client.is_connected(), "{:?}", p.client_events);
}

#[test]
fn client_restarts_when_the_gateway_goes_silent() {
    let mut p = Pair::new(true);
    p.connect();
    let restart = p.client.push_reply().unwrap().ping_restart;
    assert_eq!(restart, Duration::from_secs(60));
    p.run_for(Duration::from_secs(20));
    p.link.block_to_client = true;
    let silent_since = p.now;
    assert!(p.run_until(restart + Duration::from_secs(5), |p| {
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Closed(_)))
    }));
    match p.client_events.last() {
        Some(ClientEvent::Closed(reason)) => assert!(reason.contains("ping-restart"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let after = p.now - silent_since;
    assert!(after >= restart - Duration::from_secs(11), "{after:?}");
    assert!(after <= restart + Duration::from_secs(1), "{after:?}");
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.is_closed()));
    // The gateway kept hearing the client's pings until it closed.
    assert!(p.server().is_established(), "{:?}", p.server_events);
}

#[test]
fn handshake_times_out_when_the_client_vanishes() {
    let mut p = Pair::new(true);
    // Let the hard resets cross, then cut the client off mid-handshake.
    p.run_until(Duration::from_secs(1), |p| p.server.is_some());
    p.link.block_to_server = true;
    assert!(p.run_until(Duration::from_secs(120), |p| {
        p.server.as_ref().is_some_and(|s| s.is_closed())
    }));
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Closed(CloseReason::HandshakeTimeout))),
        "{:?}",
        p.server_events
    );
}
