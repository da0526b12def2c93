//! Proposal selection (RFC 7296 2.7, 3.3): what the gateway accepts, in its order of
//! preference, and the choice among what a peer offers.

use super::crypto::{DhGroup, IkeCipher, Integ, Prf};
use crate::esp::EspCipher;
use crate::wire::ikev2::sa::{ENCR_AES_CBC, ENCR_AES_GCM_16, ENCR_CHACHA20_POLY1305, ESN_NONE};
use crate::wire::ikev2::{Proposal, ProtocolId, SaPayload, Transform, TransformType};

/// A negotiated IKE SA suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IkeSuite {
    /// SK payload protection.
    pub cipher: IkeCipher,
    /// PRF.
    pub prf: Prf,
    /// Key exchange.
    pub dh: DhGroup,
}

/// A negotiated ESP suite (no ESN, tunnel mode) is an [`EspCipher`].
pub type EspSuite = EspCipher;

/// What a gateway or client is willing to use, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// IKE ciphers.
    pub ike_ciphers: Vec<IkeCipher>,
    /// PRFs.
    pub prfs: Vec<Prf>,
    /// Key exchange groups.
    pub dh_groups: Vec<DhGroup>,
    /// ESP ciphers.
    pub esp: Vec<EspSuite>,
}

impl Policy {
    /// What the gateway accepts from remote-access clients: [`Policy::default`], plus what
    /// the operating systems' built-in IKEv2 clients propose by default (see
    /// docs/builtin-ikev2-clients.md): AES-CBC with HMAC-SHA1-96 and PRF-HMAC-SHA1 last in
    /// IKE, AES-CBC with HMAC-SHA1-96 last in ESP, and, when `allow_modp1024`, the weak
    /// MODP-1024 group last - the only group Windows offers unless reconfigured.
    pub fn remote_access(allow_modp1024: bool) -> Self {
        let mut p = Policy::default();
        for key_bits in [256, 128] {
            p.ike_ciphers.push(IkeCipher::AesCbc {
                key_bits,
                integ: Integ::HmacSha1_96,
            });
            p.esp.push(EspSuite::AesCbc {
                key_bits,
                integ: Integ::HmacSha1_96,
            });
        }
        p.prfs.push(Prf::HmacSha1);
        if allow_modp1024 {
            p.dh_groups.push(DhGroup::Modp1024);
        }
        p
    }
}

impl Default for Policy {
    /// AEAD first, then AES-CBC with HMAC-SHA2 (what Apple's and Windows' built-in clients
    /// offer); x25519, then NIST curves, then MODP-2048.
    fn default() -> Self {
        Policy {
            ike_ciphers: vec![
                IkeCipher::AesGcm16 { key_bits: 256 },
                IkeCipher::ChaCha20Poly1305,
                IkeCipher::AesGcm16 { key_bits: 128 },
                IkeCipher::AesCbc {
                    key_bits: 256,
                    integ: Integ::HmacSha256_128,
                },
                IkeCipher::AesCbc {
                    key_bits: 256,
                    integ: Integ::HmacSha384_192,
                },
                IkeCipher::AesCbc {
                    key_bits: 128,
                    integ: Integ::HmacSha256_128,
                },
            ],
            prfs: vec![Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512],
            dh_groups: vec![
                DhGroup::Curve25519,
                DhGroup::Ecp256,
                DhGroup::Ecp384,
                DhGroup::Modp2048,
            ],
            esp: vec![
                EspSuite::AesGcm16 { key_bits: 256 },
                EspSuite::ChaCha20Poly1305,
                EspSuite::AesGcm16 { key_bits: 128 },
                EspSuite::AesCbc {
                    key_bits: 256,
                    integ: Integ::HmacSha256_128,
                },
                EspSuite::AesCbc {
                    key_bits: 256,
                    integ: Integ::HmacSha384_192,
                },
                EspSuite::AesCbc {
                    key_bits: 256,
                    integ: Integ::HmacSha512_256,
                },
                EspSuite::AesCbc {
                    key_bits: 128,
                    integ: Integ::HmacSha256_128,
                },
            ],
        }
    }
}

/// The outcome of choosing an IKE proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IkeChoice {
    /// A suite acceptable to both, using the peer's KE group.
    Chosen {
        /// The peer's proposal number.
        number: u8,
        /// The suite.
        suite: IkeSuite,
    },
    /// A suite is acceptable, but with another group than the peer's KE payload: answer
    /// INVALID_KE_PAYLOAD with this group.
    WrongGroup(DhGroup),
    /// Nothing acceptable: NO_PROPOSAL_CHOSEN.
    NoProposal,
}

fn key_bits(t: &Transform<'_>) -> Option<u16> {
    t.key_length()
}

fn ike_ciphers_of(p: &Proposal<'_>) -> Vec<IkeCipher> {
    let integs: Vec<Integ> = p
        .transforms_of(TransformType::INTEG)
        .filter_map(|t| Integ::from_transform_id(t.id))
        .collect();
    let mut out = Vec::new();
    for t in p.transforms_of(TransformType::ENCR) {
        if t.has_unknown_attributes() {
            continue;
        }
        match (t.id, key_bits(t)) {
            (ENCR_AES_GCM_16, Some(bits @ (128 | 256))) => {
                out.push(IkeCipher::AesGcm16 { key_bits: bits })
            }
            (ENCR_CHACHA20_POLY1305, None) => out.push(IkeCipher::ChaCha20Poly1305),
            (ENCR_AES_CBC, Some(bits @ (128 | 256))) => {
                for &integ in &integs {
                    out.push(IkeCipher::AesCbc {
                        key_bits: bits,
                        integ,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Chooses an IKE suite among `sa`'s proposals; `ke_group` is the group of the peer's KE.
pub fn choose_ike(policy: &Policy, sa: &SaPayload<'_>, ke_group: u16) -> IkeChoice {
    let mut fallback_group: Option<DhGroup> = None;
    // Our preference decides among everything offered (AEAD over CBC even when the peer
    // lists its CBC proposal first).
    for cipher in &policy.ike_ciphers {
        for p in sa
            .proposals
            .iter()
            .filter(|p| p.protocol == ProtocolId::IKE)
        {
            if !ike_ciphers_of(p).contains(cipher) {
                continue;
            }
            let prfs: Vec<Prf> = p
                .transforms_of(TransformType::PRF)
                .filter_map(|t| Prf::from_transform_id(t.id))
                .collect();
            let Some(prf) = policy.prfs.iter().copied().find(|x| prfs.contains(x)) else {
                continue;
            };
            let groups: Vec<DhGroup> = p
                .transforms_of(TransformType::DH)
                .filter_map(|t| DhGroup::from_transform_id(t.id))
                .collect();
            // Take the peer's KE group when we accept it (saves a round trip).
            if let Some(dh) = DhGroup::from_transform_id(ke_group)
                .filter(|g| groups.contains(g) && policy.dh_groups.contains(g))
            {
                return IkeChoice::Chosen {
                    number: p.number,
                    suite: IkeSuite {
                        cipher: *cipher,
                        prf,
                        dh,
                    },
                };
            }
            if fallback_group.is_none() {
                fallback_group = policy
                    .dh_groups
                    .iter()
                    .copied()
                    .find(|g| groups.contains(g));
            }
        }
    }
    match fallback_group {
        Some(g) => IkeChoice::WrongGroup(g),
        None => IkeChoice::NoProposal,
    }
}

fn esp_suites_of(p: &Proposal<'_>) -> Vec<EspSuite> {
    // We do not do extended sequence numbers: a proposal must allow ESN none (or omit ESN).
    let esn_ok = p.transforms_of(TransformType::ESN).next().is_none()
        || p.transforms_of(TransformType::ESN)
            .any(|t| t.id == ESN_NONE);
    if !esn_ok {
        return Vec::new();
    }
    let integs: Vec<Integ> = p
        .transforms_of(TransformType::INTEG)
        .filter_map(|t| Integ::from_transform_id(t.id))
        .collect();
    let mut out = Vec::new();
    for t in p
        .transforms_of(TransformType::ENCR)
        .filter(|t| !t.has_unknown_attributes())
    {
        match (t.id, key_bits(t)) {
            (ENCR_AES_GCM_16, Some(bits @ (128 | 256))) => {
                out.push(EspSuite::AesGcm16 { key_bits: bits })
            }
            (ENCR_CHACHA20_POLY1305, None) => out.push(EspSuite::ChaCha20Poly1305),
            (ENCR_AES_CBC, Some(bits @ (128 | 256))) => {
                out.extend(integs.iter().map(|&integ| EspSuite::AesCbc {
                    key_bits: bits,
                    integ,
                }))
            }
            _ => {}
        }
    }
    out
}

/// The transforms naming `suite` in an ESP SA payload (encryption, and integrity for CBC).
fn esp_transforms<'a>(suite: EspSuite) -> Vec<Transform<'a>> {
    match suite {
        EspSuite::AesGcm16 { key_bits } => vec![Transform::with_key_length(
            TransformType::ENCR,
            ENCR_AES_GCM_16,
            key_bits,
        )],
        EspSuite::ChaCha20Poly1305 => {
            vec![Transform::new(TransformType::ENCR, ENCR_CHACHA20_POLY1305)]
        }
        EspSuite::AesCbc { key_bits, integ } => vec![
            Transform::with_key_length(TransformType::ENCR, ENCR_AES_CBC, key_bits),
            Transform::new(TransformType::INTEG, integ.transform_id()),
        ],
    }
}

/// Chooses an ESP suite; returns the peer's proposal number, its SPI and the suite. A
/// proposal that demands a key exchange (a PFS group) is accepted only when `allow_dh` lists
/// that group; the group is returned too.
pub fn choose_esp(
    policy: &Policy,
    sa: &SaPayload<'_>,
    allow_dh: &[DhGroup],
) -> Option<(u8, u32, EspSuite, Option<DhGroup>)> {
    for &want in &policy.esp {
        for p in sa
            .proposals
            .iter()
            .filter(|p| p.protocol == ProtocolId::ESP)
        {
            let Some(spi) = p.spi_u32() else {
                continue;
            };
            if !esp_suites_of(p).contains(&want) {
                continue;
            }
            let groups: Vec<u16> = p.transforms_of(TransformType::DH).map(|t| t.id).collect();
            let dh = if groups.is_empty() || groups.contains(&0) {
                None
            } else {
                match allow_dh
                    .iter()
                    .copied()
                    .find(|g| groups.contains(&g.transform_id()))
                {
                    Some(g) => Some(g),
                    None => continue,
                }
            };
            return Some((p.number, spi, want, dh));
        }
    }
    None
}

/// Chooses the ESP suite of the CHILD SA created with IKE_AUTH; returns the peer's proposal
/// number, its SPI and the suite. IKE_AUTH carries no KE (RFC 7296 1.2), so a key exchange
/// group in a proposal is ignored, as strongSwan ignores it: some clients configured for PFS
/// put their rekeying group there too.
pub fn choose_esp_in_ike_auth(policy: &Policy, sa: &SaPayload<'_>) -> Option<(u8, u32, EspSuite)> {
    for &want in &policy.esp {
        for p in sa
            .proposals
            .iter()
            .filter(|p| p.protocol == ProtocolId::ESP)
        {
            if let Some(spi) = p.spi_u32()
                && esp_suites_of(p).contains(&want)
            {
                return Some((p.number, spi, want));
            }
        }
    }
    None
}

/// The SA payload answering with one chosen IKE suite (`spi` empty in IKE_SA_INIT, 8 bytes
/// when rekeying).
pub fn ike_sa_payload(number: u8, suite: IkeSuite, spi: &[u8]) -> SaPayload<'_> {
    let mut transforms = Vec::new();
    match suite.cipher {
        IkeCipher::AesGcm16 { key_bits } => transforms.push(Transform::with_key_length(
            TransformType::ENCR,
            ENCR_AES_GCM_16,
            key_bits,
        )),
        IkeCipher::ChaCha20Poly1305 => {
            transforms.push(Transform::new(TransformType::ENCR, ENCR_CHACHA20_POLY1305))
        }
        IkeCipher::AesCbc { key_bits, integ } => {
            transforms.push(Transform::with_key_length(
                TransformType::ENCR,
                ENCR_AES_CBC,
                key_bits,
            ));
            transforms.push(Transform::new(TransformType::INTEG, integ.transform_id()));
        }
    }
    transforms.push(Transform::new(TransformType::PRF, suite.prf.transform_id()));
    transforms.push(Transform::new(TransformType::DH, suite.dh.transform_id()));
    SaPayload {
        proposals: vec![Proposal {
            number,
            protocol: ProtocolId::IKE,
            spi,
            transforms,
        }],
    }
}

/// The SA payload offering every IKE suite of `policy` (initiator side), one proposal.
pub fn ike_offer<'a>(policy: &Policy, spi: &'a [u8]) -> SaPayload<'a> {
    let mut transforms = Vec::new();
    let mut aead = Vec::new();
    let mut cbc = Vec::new();
    for c in &policy.ike_ciphers {
        match *c {
            IkeCipher::AesGcm16 { key_bits } => aead.push(Transform::with_key_length(
                TransformType::ENCR,
                ENCR_AES_GCM_16,
                key_bits,
            )),
            IkeCipher::ChaCha20Poly1305 => {
                aead.push(Transform::new(TransformType::ENCR, ENCR_CHACHA20_POLY1305))
            }
            IkeCipher::AesCbc { key_bits, integ } => cbc.push((key_bits, integ)),
        }
    }
    let mut proposals = Vec::new();
    let tail = |transforms: &mut Vec<Transform<'a>>| {
        for p in &policy.prfs {
            transforms.push(Transform::new(TransformType::PRF, p.transform_id()));
        }
        for g in &policy.dh_groups {
            transforms.push(Transform::new(TransformType::DH, g.transform_id()));
        }
    };
    if !aead.is_empty() {
        transforms.extend(aead);
        tail(&mut transforms);
        proposals.push(Proposal {
            number: 1,
            protocol: ProtocolId::IKE,
            spi,
            transforms,
        });
    }
    if !cbc.is_empty() {
        let mut t = Vec::new();
        let mut seen_bits = Vec::new();
        let mut seen_integ = Vec::new();
        for (bits, integ) in cbc {
            if !seen_bits.contains(&bits) {
                seen_bits.push(bits);
                t.push(Transform::with_key_length(
                    TransformType::ENCR,
                    ENCR_AES_CBC,
                    bits,
                ));
            }
            if !seen_integ.contains(&integ) {
                seen_integ.push(integ);
            }
        }
        for i in seen_integ {
            t.push(Transform::new(TransformType::INTEG, i.transform_id()));
        }
        tail(&mut t);
        proposals.push(Proposal {
            number: proposals.len() as u8 + 1,
            protocol: ProtocolId::IKE,
            spi,
            transforms: t,
        });
    }
    SaPayload { proposals }
}

/// The SA payload answering with one ESP suite and our inbound SPI.
pub fn esp_sa_payload(number: u8, suite: EspSuite, spi: &[u8; 4]) -> SaPayload<'_> {
    let mut transforms = esp_transforms(suite);
    transforms.push(Transform::new(TransformType::ESN, ESN_NONE));
    SaPayload {
        proposals: vec![Proposal {
            number,
            protocol: ProtocolId::ESP,
            spi,
            transforms,
        }],
    }
}

/// The SA payload offering every ESP suite of `policy` with our inbound SPI: one proposal
/// for the AEADs and one for AES-CBC (an AEAD cannot share a proposal with an integrity
/// algorithm, RFC 7296 3.3).
pub fn esp_offer<'a>(policy: &Policy, spi: &'a [u8; 4]) -> SaPayload<'a> {
    let mut aead: Vec<Transform<'a>> = Vec::new();
    let mut cbc_encr: Vec<Transform<'a>> = Vec::new();
    let mut cbc_integ: Vec<Transform<'a>> = Vec::new();
    for &suite in &policy.esp {
        let (into, extra) = if suite.is_aead() {
            (&mut aead, None)
        } else {
            (&mut cbc_encr, Some(&mut cbc_integ))
        };
        let mut ts = esp_transforms(suite).into_iter();
        if let Some(encr) = ts.next()
            && !into.contains(&encr)
        {
            into.push(encr);
        }
        if let (Some(integ), Some(list)) = (ts.next(), extra)
            && !list.contains(&integ)
        {
            list.push(integ);
        }
    }
    cbc_encr.extend(cbc_integ);
    let mut proposals = Vec::new();
    for mut transforms in [aead, cbc_encr] {
        if transforms.is_empty() {
            continue;
        }
        transforms.push(Transform::new(TransformType::ESN, ESN_NONE));
        proposals.push(Proposal {
            number: proposals.len() as u8 + 1,
            protocol: ProtocolId::ESP,
            spi,
            transforms,
        });
    }
    SaPayload { proposals }
}

/// A peer's offer in strongSwan-like words ("aes256gcm16-prfsha256-x25519, ..."), for log
/// lines that say why no proposal matched.
pub fn describe_offer(sa: &SaPayload<'_>) -> String {
    use crate::wire::ikev2::sa as s;
    let name = |t: &Transform<'_>| -> String {
        let bits = t.key_length().map(|b| b.to_string()).unwrap_or_default();
        match (t.transform_type, t.id) {
            (TransformType::ENCR, s::ENCR_AES_CBC) => format!("aes{bits}"),
            (TransformType::ENCR, s::ENCR_AES_CTR) => format!("aes{bits}ctr"),
            (TransformType::ENCR, s::ENCR_AES_GCM_16) => format!("aes{bits}gcm16"),
            (TransformType::ENCR, s::ENCR_AES_GCM_12) => format!("aes{bits}gcm12"),
            (TransformType::ENCR, s::ENCR_AES_GCM_8) => format!("aes{bits}gcm8"),
            (TransformType::ENCR, s::ENCR_AES_CCM_16) => format!("aes{bits}ccm16"),
            (TransformType::ENCR, s::ENCR_CHACHA20_POLY1305) => "chacha20poly1305".into(),
            (TransformType::ENCR, s::ENCR_3DES) => "3des".into(),
            (TransformType::PRF, s::PRF_HMAC_SHA1) => "prfsha1".into(),
            (TransformType::PRF, s::PRF_HMAC_SHA2_256) => "prfsha256".into(),
            (TransformType::PRF, s::PRF_HMAC_SHA2_384) => "prfsha384".into(),
            (TransformType::PRF, s::PRF_HMAC_SHA2_512) => "prfsha512".into(),
            (TransformType::INTEG, s::AUTH_HMAC_SHA1_96) => "sha1".into(),
            (TransformType::INTEG, s::AUTH_HMAC_SHA2_256_128) => "sha256".into(),
            (TransformType::INTEG, s::AUTH_HMAC_SHA2_384_192) => "sha384".into(),
            (TransformType::INTEG, s::AUTH_HMAC_SHA2_512_256) => "sha512".into(),
            (TransformType::DH, 2) => "modp1024".into(),
            (TransformType::DH, 5) => "modp1536".into(),
            (TransformType::DH, 14) => "modp2048".into(),
            (TransformType::DH, 15) => "modp3072".into(),
            (TransformType::DH, 16) => "modp4096".into(),
            (TransformType::DH, 19) => "ecp256".into(),
            (TransformType::DH, 20) => "ecp384".into(),
            (TransformType::DH, 21) => "ecp521".into(),
            (TransformType::DH, 31) => "x25519".into(),
            (TransformType::DH, 32) => "x448".into(),
            (TransformType::ESN, 0) => "noesn".into(),
            (TransformType::ESN, 1) => "esn".into(),
            (tt, id) => format!("{}#{id}", tt.0),
        }
    };
    let mut out: Vec<String> = Vec::new();
    for p in sa.proposals.iter().take(8) {
        let mut parts: Vec<String> = Vec::new();
        for t in &p.transforms {
            let n = name(t);
            if !parts.contains(&n) {
                parts.push(n);
            }
        }
        out.push(parts.join("-"));
    }
    if sa.proposals.len() > 8 {
        out.push(format!("... {} more", sa.proposals.len() - 8));
    }
    out.join(", ")
}

/// Our policy in the same words as [`describe_offer`] (for the same log lines).
pub fn describe_policy(policy: &Policy) -> String {
    let ike = ike_offer(policy, &[]);
    let esp = esp_offer(policy, &[0; 4]);
    format!("IKE {}; ESP {}", describe_offer(&ike), describe_offer(&esp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ikev2::sa::{
        AUTH_HMAC_SHA2_256_128, DH_CURVE25519, DH_ECP_256, DH_MODP_2048, PRF_HMAC_SHA2_256,
        PRF_HMAC_SHA2_384,
    };

    fn strongswan_like() -> SaPayload<'static> {
        // Proposal 1: classic AES-CBC + HMAC-SHA2; proposal 2: AEAD. DH 31, 19, 14.
        let common = |t: &mut Vec<Transform<'static>>| {
            t.push(Transform::new(TransformType::PRF, PRF_HMAC_SHA2_256));
            t.push(Transform::new(TransformType::PRF, PRF_HMAC_SHA2_384));
            t.push(Transform::new(TransformType::DH, DH_CURVE25519));
            t.push(Transform::new(TransformType::DH, DH_ECP_256));
            t.push(Transform::new(TransformType::DH, DH_MODP_2048));
        };
        let mut p1 = vec![
            Transform::with_key_length(TransformType::ENCR, ENCR_AES_CBC, 256),
            Transform::new(TransformType::INTEG, AUTH_HMAC_SHA2_256_128),
        ];
        common(&mut p1);
        let mut p2 = vec![Transform::with_key_length(
            TransformType::ENCR,
            ENCR_AES_GCM_16,
            256,
        )];
        common(&mut p2);
        SaPayload {
            proposals: vec![
                Proposal {
                    number: 1,
                    protocol: ProtocolId::IKE,
                    spi: &[],
                    transforms: p1,
                },
                Proposal {
                    number: 2,
                    protocol: ProtocolId::IKE,
                    spi: &[],
                    transforms: p2,
                },
            ],
        }
    }

    #[test]
    fn picks_our_preferred_cipher_from_any_proposal_and_peer_group() {
        let c = choose_ike(&Policy::default(), &strongswan_like(), DH_CURVE25519);
        // AES-GCM-256 is in the peer's second proposal; our preference wins over its order.
        match c {
            IkeChoice::Chosen { number, suite } => {
                assert_eq!(number, 2);
                assert_eq!(suite.cipher, IkeCipher::AesGcm16 { key_bits: 256 });
                assert_eq!(suite.dh, DhGroup::Curve25519);
                assert_eq!(suite.prf, Prf::HmacSha256);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_group_and_no_proposal() {
        assert_eq!(
            choose_ike(&Policy::default(), &strongswan_like(), 21),
            IkeChoice::WrongGroup(DhGroup::Curve25519)
        );
        let only_3des = SaPayload {
            proposals: vec![Proposal {
                number: 1,
                protocol: ProtocolId::IKE,
                spi: &[],
                transforms: vec![
                    Transform::new(TransformType::ENCR, 3),
                    Transform::new(TransformType::PRF, PRF_HMAC_SHA2_256),
                    Transform::new(TransformType::DH, DH_CURVE25519),
                ],
            }],
        };
        assert_eq!(
            choose_ike(&Policy::default(), &only_3des, DH_CURVE25519),
            IkeChoice::NoProposal
        );
    }

    #[test]
    fn esp_choice_honours_esn_and_spi() {
        let spi = [1, 2, 3, 4];
        let offer = esp_offer(&Policy::default(), &spi);
        let (n, s, suite, dh) = choose_esp(&Policy::default(), &offer, &[]).unwrap();
        assert_eq!(
            (n, s, suite, dh),
            (1, 0x01020304, EspSuite::AesGcm16 { key_bits: 256 }, None)
        );
        let mut esn_only = esp_offer(&Policy::default(), &spi);
        for p in &mut esn_only.proposals {
            p.transforms
                .retain(|t| t.transform_type != TransformType::ESN);
            p.transforms.push(Transform::new(TransformType::ESN, 1));
        }
        assert!(choose_esp(&Policy::default(), &esn_only, &[]).is_none());
    }

    #[test]
    fn ike_auth_ignores_pfs_groups_create_child_sa_honours_them() {
        let spi = [1, 2, 3, 4];
        let mut pfs_only = esp_offer(&Policy::default(), &spi);
        for p in &mut pfs_only.proposals {
            p.transforms
                .push(Transform::new(TransformType::DH, DH_MODP_2048));
        }
        assert_eq!(
            choose_esp_in_ike_auth(&Policy::default(), &pfs_only),
            Some((1, 0x01020304, EspSuite::AesGcm16 { key_bits: 256 }))
        );
        assert!(choose_esp(&Policy::default(), &pfs_only, &[]).is_none());
        assert_eq!(
            choose_esp(&Policy::default(), &pfs_only, &[DhGroup::Modp2048]).map(|c| c.3),
            Some(Some(DhGroup::Modp2048))
        );
    }

    #[test]
    fn our_offer_is_acceptable_to_ourselves() {
        let offer = ike_offer(&Policy::default(), &[]);
        assert!(matches!(
            choose_ike(&Policy::default(), &offer, DH_CURVE25519),
            IkeChoice::Chosen {
                suite: IkeSuite {
                    cipher: IkeCipher::AesGcm16 { key_bits: 256 },
                    ..
                },
                ..
            }
        ));
    }
}
