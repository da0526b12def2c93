//! PSK sites cannot be guessed online (issue 14): a PSK site authenticates only a peer at its
//! `remote_gateway` address (unless `remote_gateway_any`), and after repeated failures its
//! IKE_AUTH requests are dropped unanswered for a backoff.

use std::sync::Arc;
use std::time::Duration;

use super::pair::Pair;
use super::site::{configs, east_site, psk, west_site};
use crate::ikev2::psk_throttle::{MAX_FAILURES, PskThrottle};

const KEY: &str = "a strong shared key: 7Hq2vWm9Zr";

fn pair(west_key: &str, east_key: &str, remote: Option<&str>, any: bool) -> Pair {
    let mut west = west_site(psk(west_key), &["10.1.0.0/24"], &["10.2.0.0/24"]);
    if let Some(r) = remote {
        west.remote_addr = r.parse().expect("ip");
    }
    west.any_remote_addr = any;
    let east = east_site(psk(east_key), &["10.2.0.0/24"], &["10.1.0.0/24"]);
    let (rc, ic) = configs(west, east);
    Pair::with(rc, ic)
}

#[test]
fn a_psk_site_authenticates_only_from_its_remote_gateway() {
    // West expects east at 198.51.100.99; the pair's client is elsewhere.
    let mut p = pair(KEY, KEY, Some("198.51.100.99"), false);
    p.run_for(Duration::from_secs(10));
    assert!(p.client_connected().is_none(), "{:?}", p.client_events);
    let why = p.gateway_refused().expect("refused");
    assert!(
        why.contains("not from the connection's remote_gateway 198.51.100.99")
            && why.contains("remote_gateway_any = true"),
        "{why}"
    );
    // Unless the connection allows any address.
    let mut p = pair(KEY, KEY, Some("198.51.100.99"), true);
    p.connect();
    p.ping(b"from anywhere").expect("data flows");
}

#[test]
fn failed_psk_authentications_are_throttled() {
    let throttle = Arc::new(PskThrottle::new());
    for i in 0..MAX_FAILURES {
        let mut p = pair(KEY, "a wrong key, guess number 1234", None, true);
        p.psk_throttle = Some(throttle.clone());
        p.run_for(Duration::from_secs(5));
        let why = p.gateway_refused().expect("refused");
        assert!(
            why.contains("pre-shared key mismatch"),
            "attempt {i}: {why}"
        );
    }
    // Now even the right key gets no answer: the IKE_AUTH is dropped and the SA goes.
    let mut p = pair(KEY, KEY, None, true);
    p.psk_throttle = Some(throttle.clone());
    p.run_for(Duration::from_secs(5));
    assert!(p.client_connected().is_none(), "{:?}", p.client_events);
    assert!(p.gateway_refused().is_none(), "{:?}", p.gateway_events);
    let closed = p.gateway_closed().expect("the half-open SA is gone");
    assert!(closed.contains("throttled"), "{closed}");
    let r = p.responder.as_mut().expect("responder");
    assert!(r.take_discards().psk_throttled >= 1);
    assert!(throttle.dropped("east") >= 1);
    // Without a throttle (another gateway), the same pair connects.
    let mut p = pair(KEY, KEY, None, true);
    p.connect();
}
