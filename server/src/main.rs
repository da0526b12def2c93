//! `gatehoused`: the Gatehouse VPN gateway daemon.
fn main() {}
