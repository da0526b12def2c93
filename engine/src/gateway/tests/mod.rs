//! Simulation tests of the whole gateway core, firezone style: many clients of every
//! protocol over a lossy, reordering, duplicating virtual network, every inner packet and
//! event checked against a reference model, many seeds per scenario.

mod alloc;
mod cookies;
mod cores;
mod dual_stack_site;
mod handoff;
mod handoff_ids;
mod handoff_initiated;
mod handoff_sites;
mod ike_limits;
mod ipv6;
mod learned_routes;
mod model;
mod mss;
mod pki;
mod quic;
mod reconfigure;
mod scenarios;
mod sim;
mod site_iface;
mod streams;
mod wireguard;
mod wireguard_ipv6;
