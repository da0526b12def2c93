//! The operating systems' built-in IKEv2 clients: the gateway's remote-access policy picks a
//! suite from each client's exact default proposal list (docs/builtin-ikev2-clients.md gives
//! the lists and their sources), and a client limited to what the gateway picks for it
//! connects and passes data through an AES-CBC CHILD SA.

use std::time::Duration;

use super::pair::{Pair, default_configs};
use super::rekey::{count, ping_for};
use crate::esp::EspCipher;
use crate::ikev2::crypto::{DhGroup, IkeCipher, Integ, Prf};
use crate::ikev2::initiator::InitiatorEvent;
use crate::ikev2::proposal::{IkeChoice, IkeSuite, Policy, choose_esp, choose_ike};
use crate::ikev2::responder::IkeEvent;
use crate::wire::ikev2::{Proposal, ProtocolId, SaPayload, Transform, TransformType};

/// One proposal from strongSwan-like words, each naming exactly one transform (PRFs are
/// written out: `prfsha256`).
fn proposal(number: u8, protocol: ProtocolId, words: &str) -> Proposal<'static> {
    let spi: &'static [u8] = if protocol == ProtocolId::ESP {
        &[1, 2, 3, 4]
    } else {
        &[]
    };
    let transforms = words
        .split('-')
        .map(|w| {
            let keyed = |id, bits| Transform::with_key_length(TransformType::ENCR, id, bits);
            let bits = |prefix: &str, suffix: &str| -> Option<u16> {
                w.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
            };
            if let Some(b) = bits("camellia", "ctr") {
                return keyed(24, b);
            }
            if let Some(b) = bits("camellia", "") {
                return keyed(23, b);
            }
            if let Some(b) = bits("aes", "ccm16") {
                return keyed(16, b);
            }
            if let Some(b) = bits("aes", "ccm12") {
                return keyed(15, b);
            }
            if let Some(b) = bits("aes", "ccm8") {
                return keyed(14, b);
            }
            if let Some(b) = bits("aes", "gcm16") {
                return keyed(20, b);
            }
            if let Some(b) = bits("aes", "gcm12") {
                return keyed(19, b);
            }
            if let Some(b) = bits("aes", "gcm8") {
                return keyed(18, b);
            }
            if let Some(b) = bits("aes", "ctr") {
                return keyed(13, b);
            }
            if let Some(b) = bits("aes", "") {
                return keyed(12, b);
            }
            let (t, id) = match w {
                "3des" => (TransformType::ENCR, 3),
                "des" => (TransformType::ENCR, 2),
                "null" => (TransformType::ENCR, 11),
                "chacha20poly1305" => (TransformType::ENCR, 28),
                "sha1" => (TransformType::INTEG, 2),
                "aesxcbc" => (TransformType::INTEG, 5),
                "aescmac" => (TransformType::INTEG, 8),
                "sha256" => (TransformType::INTEG, 12),
                "sha384" => (TransformType::INTEG, 13),
                "sha512" => (TransformType::INTEG, 14),
                "prfsha1" => (TransformType::PRF, 2),
                "prfaesxcbc" => (TransformType::PRF, 4),
                "prfsha256" => (TransformType::PRF, 5),
                "prfsha384" => (TransformType::PRF, 6),
                "prfsha512" => (TransformType::PRF, 7),
                "prfaescmac" => (TransformType::PRF, 8),
                "modp1024" => (TransformType::DH, 2),
                "modp1536" => (TransformType::DH, 5),
                "modp2048" => (TransformType::DH, 14),
                "modp3072" => (TransformType::DH, 15),
                "modp4096" => (TransformType::DH, 16),
                "modp6144" => (TransformType::DH, 17),
                "modp8192" => (TransformType::DH, 18),
                "ecp256bp" => (TransformType::DH, 28),
                "ecp384bp" => (TransformType::DH, 29),
                "ecp512bp" => (TransformType::DH, 30),
                "x448" => (TransformType::DH, 32),
                "ecp256" => (TransformType::DH, 19),
                "ecp384" => (TransformType::DH, 20),
                "ecp521" => (TransformType::DH, 21),
                "x25519" => (TransformType::DH, 31),
                "noesn" => (TransformType::ESN, 0),
                other => panic!("unknown word {other}"),
            };
            Transform::new(t, id)
        })
        .collect();
    Proposal {
        number,
        protocol,
        spi,
        transforms,
    }
}

fn sa(protocol: ProtocolId, proposals: &[&str]) -> SaPayload<'static> {
    SaPayload {
        proposals: proposals
            .iter()
            .enumerate()
            .map(|(i, p)| proposal(i as u8 + 1, protocol, p))
            .collect(),
    }
}

/// A built-in client's default offer.
struct Client {
    name: &'static str,
    ike: &'static [&'static str],
    /// The group of the KE payload the client sends first.
    ke: u16,
    esp: &'static [&'static str],
}

const WINDOWS_10: Client = Client {
    name: "Windows 10/11",
    ike: &["3des-aes128-aes192-aes256-sha1-sha256-sha384-prfsha1-prfsha256-prfsha384-modp1024"],
    ke: 2,
    esp: &["aes256-aes128-3des-des-null-sha1-noesn"],
};

const WINDOWS_11_AEAD: Client = Client {
    name: "Windows 11 (AEAD proposal first)",
    ike: &[
        "aes128gcm16-aes256gcm16-prfsha1-prfsha256-prfsha384-modp1024",
        "3des-aes128-aes192-aes256-sha1-sha256-sha384-prfsha1-prfsha256-prfsha384-modp1024",
    ],
    ke: 2,
    esp: &["aes256-aes128-3des-des-null-sha1-noesn"],
};

const IOS: Client = Client {
    name: "iOS 16",
    ike: &[
        "aes256-sha256-prfsha256-modp2048",
        "aes256-sha256-prfsha256-ecp256",
        "aes256-sha256-prfsha256-modp1536",
        "aes128-sha1-prfsha1-modp1024",
        "3des-sha1-prfsha1-modp1024",
    ],
    ke: 14,
    esp: &[
        "aes256-sha256-noesn",
        "aes256-sha256-noesn",
        "aes256-sha256-noesn",
        "aes128-sha1-noesn",
        "3des-sha1-noesn",
    ],
};

const MACOS: Client = Client {
    name: "macOS 13",
    ike: &[
        "aes256-sha256-prfsha256-modp2048",
        "aes256-sha256-prfsha256-modp1536",
        "aes128-sha1-prfsha1-modp1024",
        "3des-sha1-prfsha1-modp1024",
    ],
    ke: 14,
    esp: &[
        "aes256-sha256-noesn",
        "aes128-sha1-noesn",
        "3des-sha1-noesn",
    ],
};

const ANDROID_NATIVE: Client = Client {
    name: "Android 11+ Ikev2VpnProfile",
    ike: &[
        "aes256ctr-aes256-aes192ctr-aes192-aes128ctr-aes128-sha512-sha384-sha256-aesxcbc-aescmac-\
         modp4096-x25519-modp3072-modp2048-prfsha512-prfsha384-prfsha256-prfaesxcbc-prfaescmac-prfsha1",
        "chacha20poly1305-aes256gcm16-aes256gcm12-aes256gcm8-aes192gcm16-aes192gcm12-aes192gcm8-\
         aes128gcm16-aes128gcm12-aes128gcm8-modp4096-x25519-modp3072-modp2048-prfsha512-prfsha384-\
         prfsha256-prfaesxcbc-prfaescmac-prfsha1",
    ],
    ke: 16,
    esp: &[
        "aes256ctr-aes256-aes192ctr-aes192-aes128ctr-aes128-sha512-sha384-sha256-aesxcbc-aescmac-noesn",
        "chacha20poly1305-aes256gcm16-aes256gcm12-aes256gcm8-aes192gcm16-aes192gcm12-aes192gcm8-\
         aes128gcm16-aes128gcm12-aes128gcm8-noesn",
    ],
};

const ANDROID_STRONGSWAN_APP: Client = Client {
    name: "strongSwan VPN Client for Android",
    // charon's proposal_create_default(IKE) and _aead(IKE), as charon 5.9.8 sent them in
    // tests/tests/ikev2_builtin_clients.rs, and the app's ESP proposals after charon drops
    // their DH groups from IKE_AUTH.
    ike: &[
        "aes128-aes192-aes256-aes128ctr-aes192ctr-aes256ctr-camellia128-camellia192-camellia256-\
         camellia128ctr-camellia192ctr-camellia256ctr-3des-sha256-sha384-sha512-sha1-aesxcbc-aescmac-\
         prfsha256-prfsha384-prfsha512-prfaesxcbc-prfaescmac-prfsha1-x25519-x448-ecp256-ecp384-ecp521-\
         ecp256bp-ecp384bp-ecp512bp-modp3072-modp4096-modp6144-modp8192-modp2048",
        "aes128gcm16-aes192gcm16-aes256gcm16-aes128ccm16-aes192ccm16-aes256ccm16-chacha20poly1305-\
         aes128gcm12-aes192gcm12-aes256gcm12-aes128gcm8-aes192gcm8-aes256gcm8-aes128ccm12-aes192ccm12-\
         aes256ccm12-aes128ccm8-aes192ccm8-aes256ccm8-prfsha256-prfsha384-prfsha512-prfaesxcbc-\
         prfaescmac-prfsha1-x25519-x448-ecp256-ecp384-ecp521-ecp256bp-ecp384bp-ecp512bp-modp3072-\
         modp4096-modp6144-modp8192-modp2048",
    ],
    ke: 31,
    esp: &[
        "aes256gcm16-aes128gcm16-chacha20poly1305-noesn",
        "aes256-aes192-aes128-sha384-sha256-sha512-sha1-noesn",
    ],
};

fn cbc(key_bits: u16, integ: Integ) -> IkeCipher {
    IkeCipher::AesCbc { key_bits, integ }
}

/// What the gateway picks for `c`, following an INVALID_KE_PAYLOAD retry as a client would.
fn choose(policy: &Policy, c: &Client) -> Option<(IkeSuite, EspCipher)> {
    let offer = sa(ProtocolId::IKE, c.ike);
    let suite = match choose_ike(policy, &offer, c.ke) {
        IkeChoice::Chosen { suite, .. } => suite,
        IkeChoice::WrongGroup(g) => match choose_ike(policy, &offer, g.transform_id()) {
            IkeChoice::Chosen { suite, .. } => suite,
            other => panic!("{}: retry with {g:?} gave {other:?}", c.name),
        },
        IkeChoice::NoProposal => return None,
    };
    let (_, _, esp, dh) = choose_esp(policy, &sa(ProtocolId::ESP, c.esp), &[])?;
    assert_eq!(dh, None, "{}", c.name);
    Some((suite, esp))
}

#[test]
fn the_gateway_picks_a_suite_from_each_clients_default_offer() {
    let gw = Policy::remote_access(true);
    let suite = |cipher, prf, dh| IkeSuite { cipher, prf, dh };
    let gcm256 = EspCipher::AesGcm16 { key_bits: 256 };
    let cbc256_sha1 = EspCipher::AesCbc {
        key_bits: 256,
        integ: Integ::HmacSha1_96,
    };
    let cbc256_sha256 = EspCipher::AesCbc {
        key_bits: 256,
        integ: Integ::HmacSha256_128,
    };
    for (client, ike, esp) in [
        (
            WINDOWS_10,
            suite(
                cbc(256, Integ::HmacSha256_128),
                Prf::HmacSha256,
                DhGroup::Modp1024,
            ),
            cbc256_sha1,
        ),
        (
            WINDOWS_11_AEAD,
            suite(
                IkeCipher::AesGcm16 { key_bits: 256 },
                Prf::HmacSha256,
                DhGroup::Modp1024,
            ),
            cbc256_sha1,
        ),
        (
            IOS,
            suite(
                cbc(256, Integ::HmacSha256_128),
                Prf::HmacSha256,
                DhGroup::Modp2048,
            ),
            cbc256_sha256,
        ),
        (
            MACOS,
            suite(
                cbc(256, Integ::HmacSha256_128),
                Prf::HmacSha256,
                DhGroup::Modp2048,
            ),
            cbc256_sha256,
        ),
        (
            ANDROID_NATIVE,
            suite(
                IkeCipher::AesGcm16 { key_bits: 256 },
                Prf::HmacSha256,
                DhGroup::Curve25519,
            ),
            gcm256,
        ),
        (
            ANDROID_STRONGSWAN_APP,
            suite(
                IkeCipher::AesGcm16 { key_bits: 256 },
                Prf::HmacSha256,
                DhGroup::Curve25519,
            ),
            gcm256,
        ),
    ] {
        assert_eq!(choose(&gw, &client), Some((ike, esp)), "{}", client.name);
    }
}

#[test]
fn without_modp1024_windows_defaults_are_refused_and_others_unaffected() {
    let strict = Policy::remote_access(false);
    assert_eq!(choose(&strict, &WINDOWS_10), None);
    assert_eq!(choose(&strict, &WINDOWS_11_AEAD), None);
    for c in [IOS, MACOS, ANDROID_NATIVE, ANDROID_STRONGSWAN_APP] {
        assert!(choose(&strict, &c).is_some(), "{}", c.name);
    }
    // The plain default policy (sites, our own client) accepts neither MODP-1024 nor SHA-1.
    assert_eq!(choose(&Policy::default(), &WINDOWS_10), None);
}

/// A client limited to `ike` and `esp` (what the gateway picked above) against the gateway's
/// remote-access policy: it connects, gets the expected suites, and data flows both ways.
fn connect_with(ike: IkeSuite, esp: EspCipher) -> Pair {
    let (mut rc, mut ic) = default_configs();
    rc.policy = Policy::remote_access(true);
    ic.policy = Policy {
        ike_ciphers: vec![ike.cipher],
        prfs: vec![ike.prf],
        dh_groups: vec![ike.dh],
        esp: vec![esp],
    };
    let mut p = Pair::with(rc, ic);
    p.connect();
    let Some(InitiatorEvent::Connected { cipher, .. }) = p.client_connected() else {
        panic!("{ike:?} {esp:?}: not connected");
    };
    assert_eq!(*cipher, esp);
    assert_eq!(p.initiator.suite(), Some(ike));
    assert_eq!(p.responder.as_ref().unwrap().suite(), ike);
    for i in 0..3u8 {
        let up = p.client_to_gateway(&[i; 100]).unwrap();
        assert_eq!(&up[20..], &[i; 100]);
        let down = p.gateway_to_client(None, &[i; 1300]).unwrap();
        assert_eq!(&down[20..], &[i; 1300]);
    }
    p
}

#[test]
fn cbc_child_sas_rekey_without_losing_a_packet() {
    let (mut rc, mut ic) = default_configs();
    rc.policy = Policy::remote_access(true);
    ic.policy = Policy {
        ike_ciphers: vec![cbc(256, Integ::HmacSha256_128)],
        prfs: vec![Prf::HmacSha256],
        dh_groups: vec![DhGroup::Modp1024],
        esp: vec![EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha1_96,
        }],
    };
    ic.child_lifetime = Duration::from_secs(20);
    let mut p = Pair::with(rc, ic);
    p.connect();
    let failures = ping_for(&mut p, Duration::from_secs(50));
    assert!(failures.is_empty(), "{failures:?}");
    let rekeys = count(&p.gateway_events, |e| {
        matches!(
            e,
            IkeEvent::ChildUp {
                rekey_of: Some(_),
                ..
            }
        )
    });
    assert!(rekeys >= 2, "{rekeys} CHILD rekeys");
}

#[test]
fn windows_suite_connects_with_modp1024_and_cbc_sha1_esp() {
    connect_with(
        IkeSuite {
            cipher: cbc(256, Integ::HmacSha256_128),
            prf: Prf::HmacSha256,
            dh: DhGroup::Modp1024,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha1_96,
        },
    );
}

#[test]
fn apple_suite_connects_with_cbc_sha256_esp() {
    connect_with(
        IkeSuite {
            cipher: cbc(256, Integ::HmacSha256_128),
            prf: Prf::HmacSha256,
            dh: DhGroup::Modp2048,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha256_128,
        },
    );
}

#[test]
fn legacy_apple_suite_connects_with_sha1_everywhere() {
    connect_with(
        IkeSuite {
            cipher: cbc(128, Integ::HmacSha1_96),
            prf: Prf::HmacSha1,
            dh: DhGroup::Modp1024,
        },
        EspCipher::AesCbc {
            key_bits: 128,
            integ: Integ::HmacSha1_96,
        },
    );
}
