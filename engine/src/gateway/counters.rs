//! Running totals for operators' metrics: handshakes that succeeded per protocol and failed
//! per reason, rekeys, and the traffic of tunnels that have ended (the live ones are added
//! at snapshot time, so the totals never go down when a session ends).

use std::collections::BTreeMap;

use super::Protocol;

/// Inner traffic of one tunnel or one protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// IP bytes received from peers (decrypted).
    pub rx_bytes: u64,
    /// IP bytes sent to peers (before encryption).
    pub tx_bytes: u64,
    /// IP packets received.
    pub rx_packets: u64,
    /// IP packets sent.
    pub tx_packets: u64,
}

impl Traffic {
    /// Adds `o` to these counters.
    pub fn add(&mut self, o: &Traffic) {
        self.rx_bytes += o.rx_bytes;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.tx_packets += o.tx_packets;
    }
}

/// One value per [`Protocol`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerProtocol<T>(pub [T; 6]);

impl<T> PerProtocol<T> {
    /// The value of `p`.
    pub fn get(&self, p: Protocol) -> &T {
        &self.0[Self::index(p)]
    }

    /// The value of `p`, to change.
    pub fn get_mut(&mut self, p: Protocol) -> &mut T {
        &mut self.0[Self::index(p)]
    }

    /// Every protocol with its value.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, &T)> {
        Protocol::ALL.iter().map(|p| (*p, self.get(*p)))
    }

    fn index(p: Protocol) -> usize {
        match p {
            Protocol::OpenVpnUdp => 0,
            Protocol::OpenVpnTcp => 1,
            Protocol::Ikev2 => 2,
            Protocol::Site => 3,
            Protocol::WireGuard => 4,
            Protocol::Quic => 5,
        }
    }
}

/// The core's running totals (since it started).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Tunnels that came up (remote-access clients; sites count their first SA).
    pub handshakes_ok: PerProtocol<u64>,
    /// Refusals by reason class ([`reason_class`]).
    pub handshakes_failed: BTreeMap<&'static str, u64>,
    /// Data-key renegotiations (OpenVPN) and CHILD SA rekeys (IKEv2).
    pub rekeys: PerProtocol<u64>,
    /// Sessions ended because their certificate was revoked.
    pub revoked: u64,
    /// Sessions ended by an operator (`disconnect`).
    pub disconnected: u64,
    /// Traffic of tunnels that have ended.
    pub ended_traffic: PerProtocol<Traffic>,
}

impl Counters {
    /// Counts one refusal.
    pub(super) fn refused(&mut self, reason: &str) {
        *self
            .handshakes_failed
            .entry(reason_class(reason))
            .or_default() += 1;
    }

    /// Adds another core's totals (a gateway's workers).
    pub fn add(&mut self, o: &Counters) {
        for i in 0..Protocol::ALL.len() {
            self.handshakes_ok.0[i] += o.handshakes_ok.0[i];
            self.rekeys.0[i] += o.rekeys.0[i];
            self.ended_traffic.0[i].add(&o.ended_traffic.0[i]);
        }
        for (k, v) in &o.handshakes_failed {
            *self.handshakes_failed.entry(k).or_default() += v;
        }
        self.revoked += o.revoked;
        self.disconnected += o.disconnected;
    }
}

/// The class of a refusal reason, a label with few values for metrics: the reasons
/// themselves name certificates and addresses.
pub fn reason_class(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    let has = |w: &str| r.contains(w);
    if has("revoked") {
        "revoked"
    } else if has("expired") {
        "expired"
    } else if has("not yet valid") || has("notvalidyet") {
        "not_yet_valid"
    } else if has("unknown ca")
        || has("unknownissuer")
        || has("unknown issuer")
        || has("not issued by")
        || has("foreign")
        || has("self-signed")
        || has("chain")
    {
        "untrusted_certificate"
    } else if has("eku") || has("key usage") || has("clientauth") || has("certificate authority") {
        "wrong_usage"
    } else if has("pool") || has("no address") {
        "pool_exhausted"
    } else if has("proposal") {
        "no_proposal"
    } else if has("auth") || has("signature") || has("psk") {
        "authentication_failed"
    } else if has("tls") {
        "tls_error"
    } else if has("certificate") || has("rsa") || has("sha-1") || has("sha1") {
        "bad_certificate"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fall_into_few_classes() {
        assert_eq!(reason_class("certificate revoked (serial 0a)"), "revoked");
        assert_eq!(reason_class("certificate expired on 2020-01-01"), "expired");
        assert_eq!(
            reason_class("TLS: invalid peer certificate: UnknownIssuer"),
            "untrusted_certificate"
        );
        assert_eq!(reason_class("client pool exhausted"), "pool_exhausted");
        assert_eq!(reason_class("NO_PROPOSAL_CHOSEN"), "no_proposal");
        assert_eq!(reason_class("something new"), "other");
    }

    #[test]
    fn totals_add_up() {
        let mut a = Counters::default();
        *a.handshakes_ok.get_mut(Protocol::Ikev2) += 2;
        a.refused("revoked");
        let mut b = Counters::default();
        *b.handshakes_ok.get_mut(Protocol::Ikev2) += 1;
        b.refused("certificate revoked");
        b.ended_traffic.get_mut(Protocol::OpenVpnUdp).rx_bytes = 10;
        a.add(&b);
        assert_eq!(*a.handshakes_ok.get(Protocol::Ikev2), 3);
        assert_eq!(a.handshakes_failed.get("revoked"), Some(&2));
        assert_eq!(a.ended_traffic.get(Protocol::OpenVpnUdp).rx_bytes, 10);
    }
}
