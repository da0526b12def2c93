//! strongSwan-style proposal strings (`aes256gcm16-prfsha384-x25519`, `aes256-sha256-modp2048`,
//! `aes256gcm16`) for the gateway's `ike_proposals` / `esp_proposals` settings, parsed into
//! the engine's [`Policy`] types, and the other way round for logs and peer configurations.
//!
//! A proposal is a dash-separated list of algorithm names as swanctl.conf writes them; a list
//! entry may also hold several proposals separated by commas, as a swanctl `proposals` line
//! does. The rules follow strongSwan's `proposal_create_from_string`:
//!
//! - an IKE proposal needs an encryption algorithm, a PRF and a key exchange group; AES-CBC
//!   needs an integrity algorithm, and AEAD and AES-CBC cannot share a proposal;
//! - an IKE proposal without a PRF takes the PRFs matching its integrity algorithms
//!   (`sha256` gives `prfsha256`), even when its cipher is an AEAD (whose integrity
//!   algorithms are then dropped);
//! - an ESP proposal needs an encryption algorithm; integrity algorithms next to an AEAD and
//!   PRFs are ignored; `noesn`, `none` and `modpnone` are accepted and change nothing.
//!
//! The engine supports a subset of strongSwan's names (see [`SUPPORTED_IKE`] and
//! [`SUPPORTED_ESP`]); anything else is an error naming the algorithm and listing the
//! supported names. PFS groups in ESP proposals and extended sequence numbers (`esn`) are not
//! supported yet.
//!
//! The engine's [`Policy`] is not a list of proposals but one list per transform type, each in
//! order of preference, and any combination of them is acceptable (a cross product). Several
//! proposals therefore become the union of their algorithms, in the order they are listed:
//! `["aes256gcm16-prfsha384-x25519", "aes128-sha256-modp2048"]` also accepts AES-GCM with
//! MODP-2048, and AES-CBC with `prfsha384` or x25519.

use super::crypto::{DhGroup, IkeCipher, Integ, Prf};
use super::proposal::{IkeSuite, Policy};
use crate::esp::EspCipher;

/// The IKE algorithm names we accept, as listed in error messages.
pub const SUPPORTED_IKE: &str = "encryption aes256gcm16, aes128gcm16, chacha20poly1305, \
     aes256, aes128 (AES-CBC, needs an integrity algorithm); integrity sha256, sha384, sha512, \
     sha1; PRF prfsha256, prfsha384, prfsha512, prfsha1 (default: the one matching the \
     integrity algorithm); key exchange x25519 (or curve25519), ecp256, ecp384, modp3072, \
     modp2048, modp1024 (weak, for Windows' built-in client); or the single word \"default\"";

/// The ESP algorithm names we accept, as listed in error messages.
pub const SUPPORTED_ESP: &str = "encryption aes256gcm16, aes128gcm16, chacha20poly1305, \
     aes256, aes128 (AES-CBC, needs an integrity algorithm); integrity sha256, sha384, sha512, \
     sha1; noesn; or the single word \"default\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ike,
    Esp,
}

impl Kind {
    const fn example(self) -> &'static str {
        match self {
            Kind::Ike => "aes256gcm16-prfsha384-x25519",
            Kind::Esp => "aes256gcm16",
        }
    }

    const fn supported(self) -> &'static str {
        match self {
            Kind::Ike => SUPPORTED_IKE,
            Kind::Esp => SUPPORTED_ESP,
        }
    }
}

/// Why a proposal list was refused. The messages name the proposal and the algorithm; the
/// caller adds the setting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// The list holds no proposal.
    #[error(
        "no proposals: list at least one, e.g. \"{example}\", or remove the setting to use the defaults"
    )]
    NoProposals {
        /// A valid proposal of the right kind.
        example: &'static str,
    },
    /// A proposal, or an algorithm name in it, is empty.
    #[error(
        "proposal {proposal:?} has an empty algorithm name: separate names with single dashes, e.g. \"{example}\""
    )]
    EmptyName {
        /// The proposal as written.
        proposal: String,
        /// A valid proposal of the right kind.
        example: &'static str,
    },
    /// An algorithm name we do not know or do not implement.
    #[error("{name:?} in proposal {proposal:?} is not supported; supported: {supported}")]
    Unsupported {
        /// The algorithm name as written.
        name: String,
        /// The proposal as written.
        proposal: String,
        /// What is supported ([`SUPPORTED_IKE`] or [`SUPPORTED_ESP`]).
        supported: &'static str,
    },
    /// A known algorithm that has no place in this kind of proposal, or a feature we lack.
    #[error("{name:?} in proposal {proposal:?}: {reason}")]
    NotHere {
        /// The algorithm name as written.
        name: String,
        /// The proposal as written.
        proposal: String,
        /// What is wrong and what to do.
        reason: &'static str,
    },
    /// A proposal without an algorithm of a required type, or mixing AEAD and AES-CBC.
    #[error("proposal {proposal:?} {problem}")]
    Incomplete {
        /// The proposal as written.
        proposal: String,
        /// What is missing and what to add.
        problem: &'static str,
    },
}

/// The IKE half of a [`Policy`], from `ike_proposals`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IkeAlgorithms {
    /// IKE ciphers (AES-CBC once per integrity algorithm), most preferred first.
    pub ciphers: Vec<IkeCipher>,
    /// PRFs, most preferred first.
    pub prfs: Vec<Prf>,
    /// Key exchange groups, most preferred first.
    pub dh_groups: Vec<DhGroup>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encr {
    Gcm16(u16),
    ChaCha,
    Cbc(u16),
}

impl Encr {
    fn is_aead(self) -> bool {
        !matches!(self, Encr::Cbc(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Encr(Encr),
    Integ(Integ),
    Prf(Prf),
    Dh(DhGroup),
    /// `none` / `modpnone`: no key exchange (meaningful for ESP only).
    NoDh,
    /// `esn` (true) / `noesn` (false).
    Esn(bool),
}

fn token(name: &str) -> Option<Token> {
    Some(match name {
        "aes128gcm16" | "aes128gcm128" | "aes128gcm" => Token::Encr(Encr::Gcm16(128)),
        "aes256gcm16" | "aes256gcm128" | "aes256gcm" => Token::Encr(Encr::Gcm16(256)),
        "chacha20poly1305" => Token::Encr(Encr::ChaCha),
        "aes" | "aes128" => Token::Encr(Encr::Cbc(128)),
        "aes256" => Token::Encr(Encr::Cbc(256)),
        "sha" | "sha1" => Token::Integ(Integ::HmacSha1_96),
        "sha256" | "sha2_256" => Token::Integ(Integ::HmacSha256_128),
        "sha384" | "sha2_384" => Token::Integ(Integ::HmacSha384_192),
        "sha512" | "sha2_512" => Token::Integ(Integ::HmacSha512_256),
        "prfsha1" => Token::Prf(Prf::HmacSha1),
        "prfsha256" => Token::Prf(Prf::HmacSha256),
        "prfsha384" => Token::Prf(Prf::HmacSha384),
        "prfsha512" => Token::Prf(Prf::HmacSha512),
        "x25519" | "curve25519" => Token::Dh(DhGroup::Curve25519),
        "ecp256" => Token::Dh(DhGroup::Ecp256),
        "ecp384" => Token::Dh(DhGroup::Ecp384),
        "modp1024" => Token::Dh(DhGroup::Modp1024),
        "modp2048" => Token::Dh(DhGroup::Modp2048),
        "modp3072" => Token::Dh(DhGroup::Modp3072),
        "none" | "modpnone" => Token::NoDh,
        "esn" => Token::Esn(true),
        "noesn" => Token::Esn(false),
        _ => return None,
    })
}

/// The PRF strongSwan pairs with an integrity algorithm when a proposal names no PRF.
fn prf_for(integ: Integ) -> Prf {
    match integ {
        Integ::HmacSha1_96 => Prf::HmacSha1,
        Integ::HmacSha256_128 => Prf::HmacSha256,
        Integ::HmacSha384_192 => Prf::HmacSha384,
        Integ::HmacSha512_256 => Prf::HmacSha512,
    }
}

fn push_unique<T: PartialEq + Copy>(v: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    for x in items {
        if !v.contains(&x) {
            v.push(x);
        }
    }
}

/// Every proposal of a list: list entries split at commas, trimmed.
fn proposals<S: AsRef<str>>(list: &[S], kind: Kind) -> Result<Vec<String>, ProposalError> {
    let mut out = Vec::new();
    for entry in list {
        for p in entry.as_ref().split(',') {
            let p = p.trim();
            if p.is_empty() {
                return Err(ProposalError::EmptyName {
                    proposal: entry.as_ref().to_owned(),
                    example: kind.example(),
                });
            }
            out.push(p.to_owned());
        }
    }
    if out.is_empty() {
        return Err(ProposalError::NoProposals {
            example: kind.example(),
        });
    }
    Ok(out)
}

/// The tokens of one proposal, with the names as written.
fn tokens(proposal: &str, kind: Kind) -> Result<Vec<(String, Token)>, ProposalError> {
    let mut out = Vec::new();
    for raw in proposal.split('-') {
        let name = raw.trim();
        if name.is_empty() {
            return Err(ProposalError::EmptyName {
                proposal: proposal.to_owned(),
                example: kind.example(),
            });
        }
        let Some(t) = token(&name.to_ascii_lowercase()) else {
            return Err(ProposalError::Unsupported {
                name: name.to_owned(),
                proposal: proposal.to_owned(),
                supported: kind.supported(),
            });
        };
        out.push((name.to_owned(), t));
    }
    Ok(out)
}

fn is_default(proposal: &str) -> bool {
    proposal.eq_ignore_ascii_case("default")
}

/// Parses one IKE proposal.
pub fn parse_ike_proposal(proposal: &str) -> Result<IkeAlgorithms, ProposalError> {
    if is_default(proposal) {
        let d = Policy::default();
        return Ok(IkeAlgorithms {
            ciphers: d.ike_ciphers,
            prfs: d.prfs,
            dh_groups: d.dh_groups,
        });
    }
    let incomplete = |problem| ProposalError::Incomplete {
        proposal: proposal.to_owned(),
        problem,
    };
    let mut encrs = Vec::new();
    let mut integs = Vec::new();
    let mut prfs = Vec::new();
    let mut groups = Vec::new();
    for (name, t) in tokens(proposal, Kind::Ike)? {
        match t {
            Token::Encr(e) => push_unique(&mut encrs, [e]),
            Token::Integ(i) => push_unique(&mut integs, [i]),
            Token::Prf(p) => push_unique(&mut prfs, [p]),
            Token::Dh(g) => push_unique(&mut groups, [g]),
            // strongSwan drops "no key exchange" from IKE proposals.
            Token::NoDh => {}
            Token::Esn(_) => {
                return Err(ProposalError::NotHere {
                    name,
                    proposal: proposal.to_owned(),
                    reason: "sequence number options belong in esp_proposals, not in IKE proposals: remove it",
                });
            }
        }
    }
    if encrs.is_empty() {
        return Err(incomplete(
            "has no encryption algorithm: add one, e.g. aes256gcm16",
        ));
    }
    let aead = encrs.iter().any(|e| e.is_aead());
    if aead && encrs.iter().any(|e| !e.is_aead()) {
        return Err(incomplete(
            "mixes AEAD (aes*gcm16, chacha20poly1305) and AES-CBC ciphers: split it into two proposals",
        ));
    }
    if prfs.is_empty() {
        push_unique(&mut prfs, integs.iter().map(|&i| prf_for(i)));
    }
    if prfs.is_empty() {
        return Err(incomplete(
            "has no PRF: add one, e.g. prfsha384 (AEAD proposals need an explicit PRF)",
        ));
    }
    if !aead && integs.is_empty() {
        return Err(incomplete(
            "has AES-CBC but no integrity algorithm: add one, e.g. sha256",
        ));
    }
    if groups.is_empty() {
        return Err(incomplete(
            "has no key exchange group: add one, e.g. x25519, ecp384 or modp2048",
        ));
    }
    let mut ciphers = Vec::new();
    for e in encrs {
        match e {
            Encr::Gcm16(key_bits) => ciphers.push(IkeCipher::AesGcm16 { key_bits }),
            Encr::ChaCha => ciphers.push(IkeCipher::ChaCha20Poly1305),
            Encr::Cbc(key_bits) => push_unique(
                &mut ciphers,
                integs
                    .iter()
                    .map(|&integ| IkeCipher::AesCbc { key_bits, integ }),
            ),
        }
    }
    Ok(IkeAlgorithms {
        ciphers,
        prfs,
        dh_groups: groups,
    })
}

/// Parses a list of IKE proposals into the union of their algorithms, in the order listed.
pub fn parse_ike_proposals<S: AsRef<str>>(list: &[S]) -> Result<IkeAlgorithms, ProposalError> {
    let mut out = IkeAlgorithms::default();
    for p in proposals(list, Kind::Ike)? {
        let one = parse_ike_proposal(&p)?;
        push_unique(&mut out.ciphers, one.ciphers);
        push_unique(&mut out.prfs, one.prfs);
        push_unique(&mut out.dh_groups, one.dh_groups);
    }
    Ok(out)
}

/// Parses one ESP proposal.
pub fn parse_esp_proposal(proposal: &str) -> Result<Vec<EspCipher>, ProposalError> {
    if is_default(proposal) {
        return Ok(Policy::default().esp);
    }
    let mut encrs = Vec::new();
    let mut integs = Vec::new();
    for (name, t) in tokens(proposal, Kind::Esp)? {
        let not_here = |reason| ProposalError::NotHere {
            name: name.clone(),
            proposal: proposal.to_owned(),
            reason,
        };
        match t {
            Token::Encr(e) => push_unique(&mut encrs, [e]),
            Token::Integ(i) => push_unique(&mut integs, [i]),
            Token::Dh(_) => {
                return Err(not_here(
                    "PFS groups in esp_proposals are not supported yet: remove the group (CHILD SAs are keyed from the IKE SA)",
                ));
            }
            Token::Esn(true) => {
                return Err(not_here(
                    "extended sequence numbers are not supported: remove it (noesn is the default)",
                ));
            }
            // strongSwan ignores PRFs in ESP proposals; so do we.
            Token::Prf(_) | Token::NoDh | Token::Esn(false) => {}
        }
    }
    let incomplete = |problem| ProposalError::Incomplete {
        proposal: proposal.to_owned(),
        problem,
    };
    if encrs.is_empty() {
        return Err(incomplete(
            "has no encryption algorithm: add one, e.g. aes256gcm16",
        ));
    }
    let aead = encrs.iter().any(|e| e.is_aead());
    if aead && encrs.iter().any(|e| !e.is_aead()) {
        return Err(incomplete(
            "mixes AEAD (aes*gcm16, chacha20poly1305) and AES-CBC ciphers: split it into two proposals",
        ));
    }
    if !aead && integs.is_empty() {
        return Err(incomplete(
            "has AES-CBC but no integrity algorithm: add one, e.g. sha256",
        ));
    }
    let mut out = Vec::new();
    for e in encrs {
        match e {
            Encr::Gcm16(key_bits) => out.push(EspCipher::AesGcm16 { key_bits }),
            Encr::ChaCha => out.push(EspCipher::ChaCha20Poly1305),
            // Integrity algorithms next to an AEAD are ignored, as strongSwan does.
            Encr::Cbc(key_bits) => push_unique(
                &mut out,
                integs
                    .iter()
                    .map(|&integ| EspCipher::AesCbc { key_bits, integ }),
            ),
        }
    }
    Ok(out)
}

/// Parses a list of ESP proposals into the union of their ciphers, in the order listed.
pub fn parse_esp_proposals<S: AsRef<str>>(list: &[S]) -> Result<Vec<EspCipher>, ProposalError> {
    let mut out = Vec::new();
    for p in proposals(list, Kind::Esp)? {
        push_unique(&mut out, parse_esp_proposal(&p)?);
    }
    Ok(out)
}

/// A [`Policy`] from optional IKE and ESP proposal lists; an absent list keeps that half of
/// [`Policy::default`].
pub fn policy_from_proposals<S: AsRef<str>>(
    ike: Option<&[S]>,
    esp: Option<&[S]>,
) -> Result<Policy, ProposalError> {
    let mut policy = Policy::default();
    if let Some(list) = ike {
        let ike = parse_ike_proposals(list)?;
        policy.ike_ciphers = ike.ciphers;
        policy.prfs = ike.prfs;
        policy.dh_groups = ike.dh_groups;
    }
    if let Some(list) = esp {
        policy.esp = parse_esp_proposals(list)?;
    }
    Ok(policy)
}

/// The strongSwan name of an IKE cipher (`aes256gcm16`, `aes256-sha256` for AES-CBC).
pub fn ike_cipher_name(c: IkeCipher) -> String {
    match c {
        IkeCipher::AesGcm16 { key_bits } => format!("aes{key_bits}gcm16"),
        IkeCipher::ChaCha20Poly1305 => "chacha20poly1305".into(),
        IkeCipher::AesCbc { key_bits, integ } => format!("aes{key_bits}-{}", integ_name(integ)),
    }
}

/// The strongSwan name of an integrity algorithm.
pub const fn integ_name(i: Integ) -> &'static str {
    match i {
        Integ::HmacSha1_96 => "sha1",
        Integ::HmacSha256_128 => "sha256",
        Integ::HmacSha384_192 => "sha384",
        Integ::HmacSha512_256 => "sha512",
    }
}

/// The strongSwan name of a PRF.
pub const fn prf_name(p: Prf) -> &'static str {
    match p {
        Prf::HmacSha1 => "prfsha1",
        Prf::HmacSha256 => "prfsha256",
        Prf::HmacSha384 => "prfsha384",
        Prf::HmacSha512 => "prfsha512",
    }
}

/// The strongSwan name of a key exchange group (`curve25519`, which every strongSwan 5.x
/// knows; newer ones also take `x25519`).
pub const fn dh_group_name(g: DhGroup) -> &'static str {
    match g {
        DhGroup::Modp1024 => "modp1024",
        DhGroup::Modp2048 => "modp2048",
        DhGroup::Modp3072 => "modp3072",
        DhGroup::Ecp256 => "ecp256",
        DhGroup::Ecp384 => "ecp384",
        DhGroup::Curve25519 => "curve25519",
    }
}

/// The strongSwan name of an ESP cipher (`aes256gcm16`, `aes256-sha256` for AES-CBC).
pub fn esp_cipher_name(c: EspCipher) -> String {
    match c {
        EspCipher::AesGcm16 { key_bits } => format!("aes{key_bits}gcm16"),
        EspCipher::ChaCha20Poly1305 => "chacha20poly1305".into(),
        EspCipher::AesCbc { key_bits, integ } => format!("aes{key_bits}-{}", integ_name(integ)),
    }
}

/// A negotiated IKE suite as a strongSwan proposal, e.g. `aes256gcm16-prfsha256-curve25519`.
pub fn ike_suite_name(s: IkeSuite) -> String {
    format!(
        "{}-{}-{}",
        ike_cipher_name(s.cipher),
        prf_name(s.prf),
        dh_group_name(s.dh)
    )
}

/// strongSwan IKE proposals offering what `policy` accepts (one AEAD and one AES-CBC
/// proposal, like the engine's own offer), e.g. for a peer's swanctl.conf.
pub fn ike_proposal_strings(policy: &Policy) -> Vec<String> {
    let mut tail = Vec::new();
    tail.extend(policy.prfs.iter().map(|&p| prf_name(p).to_owned()));
    tail.extend(
        policy
            .dh_groups
            .iter()
            .map(|&g| dh_group_name(g).to_owned()),
    );
    let mut aead = Vec::new();
    let mut cbc_bits = Vec::new();
    let mut cbc_integ = Vec::new();
    for &c in &policy.ike_ciphers {
        match c {
            IkeCipher::AesCbc { key_bits, integ } => {
                push_unique(&mut cbc_bits, [key_bits]);
                push_unique(&mut cbc_integ, [integ]);
            }
            aead_cipher => aead.push(ike_cipher_name(aead_cipher)),
        }
    }
    let mut out = Vec::new();
    if !aead.is_empty() {
        aead.extend(tail.iter().cloned());
        out.push(aead.join("-"));
    }
    if !cbc_bits.is_empty() {
        let mut p: Vec<String> = cbc_bits.iter().map(|b| format!("aes{b}")).collect();
        p.extend(cbc_integ.iter().map(|&i| integ_name(i).to_owned()));
        p.extend(tail);
        out.push(p.join("-"));
    }
    out
}

/// strongSwan ESP proposals offering what `policy` accepts (one AEAD and one AES-CBC
/// proposal), e.g. `["aes256gcm16-aes128gcm16", "aes256-sha256-sha1"]`.
pub fn esp_proposal_strings(policy: &Policy) -> Vec<String> {
    let mut aead = Vec::new();
    let mut cbc_bits = Vec::new();
    let mut cbc_integ = Vec::new();
    for &c in &policy.esp {
        match c {
            EspCipher::AesCbc { key_bits, integ } => {
                push_unique(&mut cbc_bits, [key_bits]);
                push_unique(&mut cbc_integ, [integ]);
            }
            aead_cipher => aead.push(esp_cipher_name(aead_cipher)),
        }
    }
    let mut out = Vec::new();
    if !aead.is_empty() {
        out.push(aead.join("-"));
    }
    if !cbc_bits.is_empty() {
        let mut p: Vec<String> = cbc_bits.iter().map(|b| format!("aes{b}")).collect();
        p.extend(cbc_integ.iter().map(|&i| integ_name(i).to_owned()));
        out.push(p.join("-"));
    }
    out
}

/// An ESP cipher as operators read it in the gateway's log (`AES-GCM-16-256`,
/// `CHACHA20-POLY1305`, `AES-CBC-256/HMAC_SHA2_256_128`).
pub fn esp_display_name(c: EspCipher) -> String {
    match c {
        EspCipher::AesGcm16 { key_bits } => format!("AES-GCM-16-{key_bits}"),
        EspCipher::ChaCha20Poly1305 => "CHACHA20-POLY1305".into(),
        EspCipher::AesCbc { key_bits, integ } => {
            format!("AES-CBC-{key_bits}/{}", integ_name(integ).to_uppercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCM256: IkeCipher = IkeCipher::AesGcm16 { key_bits: 256 };
    const GCM128: IkeCipher = IkeCipher::AesGcm16 { key_bits: 128 };

    fn cbc(key_bits: u16, integ: Integ) -> IkeCipher {
        IkeCipher::AesCbc { key_bits, integ }
    }

    #[test]
    fn aead_ike_proposal() {
        let a = parse_ike_proposal("aes256gcm16-prfsha384-x25519").unwrap();
        assert_eq!(a.ciphers, [GCM256]);
        assert_eq!(a.prfs, [Prf::HmacSha384]);
        assert_eq!(a.dh_groups, [DhGroup::Curve25519]);
        // Synonyms strongSwan accepts.
        for p in [
            "aes256gcm128-prfsha384-curve25519",
            "AES256GCM-PRFSHA384-X25519",
            " aes256gcm16 - prfsha384 - x25519 ",
        ] {
            assert_eq!(parse_ike_proposal(p).unwrap(), a, "{p}");
        }
        let c =
            parse_ike_proposal("chacha20poly1305-aes128gcm16-prfsha256-ecp256-modp3072").unwrap();
        assert_eq!(c.ciphers, [IkeCipher::ChaCha20Poly1305, GCM128]);
        assert_eq!(c.dh_groups, [DhGroup::Ecp256, DhGroup::Modp3072]);
    }

    #[test]
    fn cbc_proposal_derives_prf_from_integrity() {
        let a = parse_ike_proposal("aes256-aes128-sha256-sha384-modp2048").unwrap();
        assert_eq!(
            a.ciphers,
            [
                cbc(256, Integ::HmacSha256_128),
                cbc(256, Integ::HmacSha384_192),
                cbc(128, Integ::HmacSha256_128),
                cbc(128, Integ::HmacSha384_192),
            ]
        );
        assert_eq!(a.prfs, [Prf::HmacSha256, Prf::HmacSha384]);
        assert_eq!(a.dh_groups, [DhGroup::Modp2048]);
        // An explicit PRF wins; `aes` is AES-128-CBC; `sha` is SHA-1.
        let b = parse_ike_proposal("aes-sha-prfsha512-ecp384").unwrap();
        assert_eq!(b.ciphers, [cbc(128, Integ::HmacSha1_96)]);
        assert_eq!(b.prfs, [Prf::HmacSha512]);
        // Like strongSwan, an AEAD proposal takes its PRF from a (then dropped) integrity name.
        let c = parse_ike_proposal("aes256gcm16-sha384-ecp384").unwrap();
        assert_eq!(c.ciphers, [GCM256]);
        assert_eq!(c.prfs, [Prf::HmacSha384]);
    }

    #[test]
    fn list_is_the_union_in_order() {
        let a = parse_ike_proposals(&[
            "aes256gcm16-prfsha384-x25519",
            "aes128-sha256-modp2048,aes256gcm16-aes128gcm16-prfsha256-prfsha384-ecp256-x25519",
        ])
        .unwrap();
        assert_eq!(a.ciphers, [GCM256, cbc(128, Integ::HmacSha256_128), GCM128]);
        assert_eq!(a.prfs, [Prf::HmacSha384, Prf::HmacSha256]);
        assert_eq!(
            a.dh_groups,
            [DhGroup::Curve25519, DhGroup::Modp2048, DhGroup::Ecp256]
        );
        let d = parse_ike_proposals(&["default"]).unwrap();
        let p = Policy::default();
        assert_eq!(
            (d.ciphers, d.prfs, d.dh_groups),
            (p.ike_ciphers, p.prfs, p.dh_groups)
        );
    }

    #[test]
    fn ike_errors_name_the_algorithm() {
        let e = parse_ike_proposal("aes192-sha256-modp2048").unwrap_err();
        assert!(
            matches!(&e, ProposalError::Unsupported { name, .. } if name == "aes192"),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("\"aes192\"") && msg.contains("aes256gcm16") && msg.contains("modp2048"),
            "{msg}"
        );
        for (p, want) in [
            ("aes256gcm16-x25519", "no PRF"),
            ("aes256gcm16-prfsha256", "no key exchange group"),
            ("aes256-prfsha256-x25519", "no integrity algorithm"),
            ("prfsha256-x25519", "no encryption algorithm"),
            (
                "aes256gcm16-aes256-sha256-x25519",
                "split it into two proposals",
            ),
            (
                "aes256gcm16-prfsha256-x25519-noesn",
                "belong in esp_proposals",
            ),
            ("aes256gcm16--prfsha256-x25519", "empty algorithm name"),
            ("aes256gcm16-prfsha256-modp1536", "\"modp1536\""),
            ("aes256gcm8-prfsha256-x25519", "\"aes256gcm8\""),
        ] {
            let e = parse_ike_proposal(p).unwrap_err().to_string();
            assert!(e.contains(want), "{p}: {e}");
            assert!(e.contains(p), "{p}: {e}");
        }
        assert!(matches!(
            parse_ike_proposals::<&str>(&[]),
            Err(ProposalError::NoProposals { .. })
        ));
        assert!(matches!(
            parse_ike_proposals(&["aes256gcm16-prfsha256-x25519,"]),
            Err(ProposalError::EmptyName { .. })
        ));
    }

    #[test]
    fn esp_proposals() {
        assert_eq!(
            parse_esp_proposals(&["aes256gcm16", "chacha20poly1305-aes128gcm16-noesn"]).unwrap(),
            [
                EspCipher::AesGcm16 { key_bits: 256 },
                EspCipher::ChaCha20Poly1305,
                EspCipher::AesGcm16 { key_bits: 128 },
            ]
        );
        // Ignored like strongSwan does: integrity next to an AEAD, "no PFS".
        assert_eq!(
            parse_esp_proposal("aes128gcm16-sha256-modpnone").unwrap(),
            [EspCipher::AesGcm16 { key_bits: 128 }]
        );
        assert_eq!(
            parse_esp_proposals(&["default"]).unwrap(),
            Policy::default().esp
        );
        for (p, want) in [
            (
                "aes256gcm16-modp2048",
                "PFS groups in esp_proposals are not supported yet",
            ),
            (
                "aes256gcm16-esn",
                "extended sequence numbers are not supported",
            ),
            ("aes256", "no integrity algorithm"),
            ("aes256-aes256gcm16-sha1", "mixes AEAD"),
            ("noesn", "no encryption algorithm"),
            ("aes256ccm16", "\"aes256ccm16\""),
        ] {
            let e = parse_esp_proposal(p).unwrap_err().to_string();
            assert!(e.contains(want), "{p}: {e}");
        }
        let e = parse_esp_proposal("3des").unwrap_err().to_string();
        assert!(e.contains(SUPPORTED_ESP), "{e}");
        // What Windows' built-in client proposes (less 3des, des and null, which we lack).
        assert_eq!(
            parse_esp_proposal("aes256-aes128-sha1").unwrap(),
            [
                EspCipher::AesCbc {
                    key_bits: 256,
                    integ: Integ::HmacSha1_96
                },
                EspCipher::AesCbc {
                    key_bits: 128,
                    integ: Integ::HmacSha1_96
                },
            ]
        );
        assert_eq!(
            parse_ike_proposal("aes256-sha1-modp1024")
                .unwrap()
                .dh_groups,
            [DhGroup::Modp1024]
        );
    }

    #[test]
    fn policy_halves_default_independently() {
        let p = policy_from_proposals(Some(&["aes256gcm16-prfsha384-ecp384"]), None).unwrap();
        assert_eq!(p.ike_ciphers, [GCM256]);
        assert_eq!(p.esp, Policy::default().esp);
        let p = policy_from_proposals(None, Some(&["chacha20poly1305"])).unwrap();
        assert_eq!(p.ike_ciphers, Policy::default().ike_ciphers);
        assert_eq!(p.esp, [EspCipher::ChaCha20Poly1305]);
        assert_eq!(
            policy_from_proposals::<&str>(None, None).unwrap(),
            Policy::default()
        );
    }

    #[test]
    fn names_round_trip() {
        let suite = IkeSuite {
            cipher: GCM256,
            prf: Prf::HmacSha384,
            dh: DhGroup::Curve25519,
        };
        assert_eq!(ike_suite_name(suite), "aes256gcm16-prfsha384-curve25519");
        assert_eq!(
            ike_cipher_name(cbc(128, Integ::HmacSha512_256)),
            "aes128-sha512"
        );
        // A policy whose CBC ciphers are a full cross product survives the round trip.
        let policy = policy_from_proposals(
            Some(&[
                "aes256gcm16-chacha20poly1305-prfsha256-prfsha384-x25519-modp3072",
                "aes256-aes128-sha256-sha1-prfsha256-prfsha384-x25519-modp3072",
            ]),
            Some(&["aes128gcm16-aes256gcm16"]),
        )
        .unwrap();
        let ike = ike_proposal_strings(&policy);
        assert_eq!(
            ike,
            [
                "aes256gcm16-chacha20poly1305-prfsha256-prfsha384-curve25519-modp3072",
                "aes256-aes128-sha256-sha1-prfsha256-prfsha384-curve25519-modp3072",
            ]
        );
        let esp = esp_proposal_strings(&policy);
        assert_eq!(esp, ["aes128gcm16-aes256gcm16"]);
        assert_eq!(
            policy_from_proposals(Some(&ike), Some(&esp)).unwrap(),
            policy
        );
        let d = Policy::remote_access(true);
        assert_eq!(
            esp_proposal_strings(&d),
            [
                "aes256gcm16-chacha20poly1305-aes128gcm16",
                "aes256-aes128-sha256-sha384-sha512-sha1"
            ]
        );
        let back = parse_esp_proposals(&esp_proposal_strings(&d)).unwrap();
        assert!(d.esp.iter().all(|c| back.contains(c)));
        // The default policy's offer parses back to an acceptable superset of it.
        let d = Policy::default();
        let back = parse_ike_proposals(&ike_proposal_strings(&d)).unwrap();
        assert!(d.ike_ciphers.iter().all(|c| back.ciphers.contains(c)));
        assert_eq!(back.prfs, d.prfs);
        assert_eq!(back.dh_groups, d.dh_groups);
    }
}
