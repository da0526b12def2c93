//! IKE_AUTH checked on another thread (`ResponderConfig::offload`): the client gets in once
//! the check comes back, its retransmissions meanwhile start nothing twice, and a refusal
//! still names the client and the reason.

use std::time::Duration;

use rcgen::SerialNumber;

use super::pair::{GATEWAY_IP, Pair, default_configs, initiator_config, pki, responder_config};
use crate::wire::ikev2::ExchangeType;

fn ike_auth_answers(p: &Pair) -> usize {
    p.sent
        .iter()
        .filter(|s| !s.to_gateway && s.header.exchange == ExchangeType::IKE_AUTH)
        .count()
}

fn ike_auth_requests(p: &Pair) -> usize {
    p.sent
        .iter()
        .filter(|s| s.to_gateway && s.header.exchange == ExchangeType::IKE_AUTH)
        .count()
}

#[test]
fn a_slow_check_delays_the_answer_and_the_retransmissions_start_nothing() {
    let (mut rc, ic) = default_configs();
    rc.offload = true;
    let mut p = Pair::with(rc, ic);
    // Longer than the client's first IKE_AUTH retransmission timeout.
    p.auth_job_delay = Duration::from_secs(5);
    p.run_for(Duration::from_millis(4900));
    assert_eq!(p.auth_jobs_run, 0);
    assert!(p.client_connected().is_none());
    assert_eq!(ike_auth_answers(&p), 0, "answered before its check");
    assert!(
        ike_auth_requests(&p) >= 2,
        "the client did not retransmit IKE_AUTH while waiting ({} sent)",
        ike_auth_requests(&p)
    );
    let ok = p.run_until(Duration::from_secs(30), |p| p.client_connected().is_some());
    assert!(ok, "{:?} / {:?}", p.client_events, p.gateway_events);
    assert_eq!(
        p.auth_jobs_run, 1,
        "one check however often the client asked"
    );
    assert_eq!(p.gateway_sas.len(), 1);
    // Traffic flows on the SA made after the check.
    let got = p
        .client_to_gateway(b"hello through the offloaded SA")
        .expect("the gateway opens the client's packet");
    assert!(got.ends_with(b"hello through the offloaded SA"));
}

#[test]
fn a_refusal_from_another_thread_names_the_client_and_the_reason() {
    let pki = pki();
    let carol = pki.ca.client("carol", |p| {
        p.serial_number = Some(SerialNumber::from(78u64))
    });
    let mut rc = responder_config(&pki.ca, vec![pki.ca.crl(&[78])], &pki.gateway);
    rc.offload = true;
    let ic = initiator_config(&pki.ca, &carol, Some(GATEWAY_IP));
    let mut p = Pair::with(rc, ic);
    p.auth_job_delay = Duration::from_millis(300);
    let done = p.run_until(Duration::from_secs(60), |p| p.initiator.is_closed());
    assert!(done, "{:?} {:?}", p.client_events, p.gateway_events);
    assert_eq!(p.auth_jobs_run, 1);
    let gw = p.gateway_refused().unwrap_or_default();
    assert!(gw.contains("revoked"), "{gw}");
    let named = p.gateway_events.iter().any(|e| {
        matches!(e, crate::ikev2::responder::IkeEvent::Refused { client: Some(c), .. } if c == "carol")
    });
    assert!(named, "{:?}", p.gateway_events);
    assert!(p.client_auth_failed().is_some(), "{:?}", p.client_events);
    assert!(p.gateway_sas.is_empty());
}

#[test]
fn a_check_that_returns_after_the_deadline_is_ignored() {
    let (mut rc, ic) = default_configs();
    rc.offload = true;
    let auth_timeout = rc.auth_timeout;
    let mut p = Pair::with(rc, ic);
    p.auth_job_delay = auth_timeout + Duration::from_secs(5);
    p.run_for(auth_timeout + Duration::from_secs(10));
    assert_eq!(p.auth_jobs_run, 1);
    assert!(p.gateway_closed().is_some(), "{:?}", p.gateway_events);
    assert!(p.client_connected().is_none());
    assert!(p.gateway_sas.is_empty(), "an SA made after the deadline");
}
