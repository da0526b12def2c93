//! `gatehouse-certs`: the admin CLI over the PKI library.
fn main() {}
