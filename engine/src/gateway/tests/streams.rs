//! TCP connections and their sessions, as the driver sees them: the core names the
//! connection whose session ended (the driver then closes it) and says whether a
//! connection's handshake completed (the driver closes those that take too long).

use std::time::Duration;

use super::sim::{Link, Options, Sim, fail};
use crate::gateway::Event;

fn ended(sim: &Sim) -> Vec<u64> {
    sim.events
        .iter()
        .filter_map(|e| match e {
            Event::StreamEnded { stream } => Some(*stream),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tcp_session_the_gateway_ends_names_its_connection() {
    let (mut sim, [udp, tcp, _]) = Sim::one_of_each(7);
    let stream = sim.clients[tcp].ovpn().stream.expect("a TCP client");
    if !sim.core.only().stream_established(stream) {
        fail!(
            sim,
            "connected TCP client's stream {stream} is not established"
        );
    }
    if sim.core.only().stream_established(stream + 1000) {
        fail!(sim, "an unknown stream counts as established");
    }
    let crl = super::pki::pki().crl(&[sim.clients[tcp].cert, sim.clients[udp].cert]);
    let now = sim.now;
    sim.core.set_crls(now, &[crl]).unwrap();
    sim.run_for(Duration::from_secs(5));
    // Exactly the TCP session's connection, once; the UDP session has none.
    if ended(&sim) != [stream] {
        fail!(
            sim,
            "StreamEnded {:?}, expected [{stream}]: {:?}",
            ended(&sim),
            sim.events
        );
    }
    if sim.core.only().stream_established(stream) {
        fail!(
            sim,
            "stream {stream} still established after its session ended"
        );
    }
    // The driver closes it and says so: nothing more to report.
    let now = sim.now;
    sim.core
        .handle_stream_closed(now, stream, "closed by the gateway");
    sim.run_for(Duration::from_secs(1));
    if ended(&sim).len() != 1 {
        fail!(sim, "StreamEnded reported again: {:?}", sim.events);
    }
}

#[test]
fn a_connection_the_client_closed_is_not_reported() {
    let (mut sim, [_, tcp, _]) = Sim::one_of_each(11);
    sim.remove_client(tcp);
    sim.run_for(Duration::from_secs(5));
    if !ended(&sim).is_empty() {
        fail!(
            sim,
            "StreamEnded for a connection the driver closed: {:?}",
            sim.events
        );
    }
}

#[test]
fn a_handshaking_connection_is_not_established() {
    let mut sim = Sim::new(
        3,
        Options {
            link: Link::clean(),
            workers: 1,
            ..Options::default()
        },
    );
    let c = sim.add_ovpn_tcp(0);
    let stream = sim.clients[c].ovpn().stream.expect("a TCP client");
    if sim.core.only().stream_established(stream) {
        fail!(sim, "a connection with no packet yet counts as established");
    }
    sim.connect_all(&[c], Duration::from_secs(30));
    if !sim.core.only().stream_established(stream) {
        fail!(sim, "connected, but stream {stream} is not established");
    }
}
