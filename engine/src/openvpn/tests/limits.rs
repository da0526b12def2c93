//! A connected client that misbehaves on the control channel cannot make its session hold
//! unbounded memory on the gateway: the session is closed with the reason, the gateway goes on.

use std::time::Duration;

use super::pair::Pair;
use crate::openvpn::server::{CloseReason, ServerEvent};

fn closed_for_limit(p: &Pair) -> Option<String> {
    p.server_events.iter().find_map(|e| match e {
        ServerEvent::Closed(CloseReason::Error(r)) if r.contains("control channel limit") => {
            Some(r.clone())
        }
        _ => None,
    })
}

#[test]
fn control_text_without_a_message_end_closes_the_session() {
    let mut p = Pair::new(true);
    p.connect();
    let chunk = vec![b'A'; 8192];
    for _ in 0..12 {
        p.client.send_control_text(&chunk);
        p.run_for(Duration::from_millis(200));
    }
    let why = closed_for_limit(&p).expect("the session was not closed");
    assert!(why.contains("64 KiB"), "{why}");
}

#[test]
fn push_requests_that_never_acknowledge_the_replies_close_the_session() {
    let mut p = Pair::new(true);
    p.connect();
    p.link.strip_client_acks = true;
    for _ in 0..400 {
        p.client.send_control_text(b"PUSH_REQUEST\0");
        p.run_for(Duration::from_millis(20));
        if closed_for_limit(&p).is_some() {
            break;
        }
    }
    let why = closed_for_limit(&p).expect("the session was not closed");
    assert!(why.contains("acknowledge"), "{why}");
}

#[test]
fn a_well_behaved_client_asking_often_is_not_closed() {
    let mut p = Pair::new(true);
    p.connect();
    for _ in 0..400 {
        p.client.send_control_text(b"PUSH_REQUEST\0");
        p.run_for(Duration::from_millis(20));
    }
    assert_eq!(closed_for_limit(&p), None);
    p.ping_through();
}
