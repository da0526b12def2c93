//! Key derivation for IKE SAs and CHILD SAs (RFC 7296 sections 2.13, 2.14, 2.17, 2.18).

use super::prf::{Prf, PrfError};

/// Why keys could not be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeymatError {
    /// The suite asks for more key material than prf+ can give.
    #[error("cannot derive keys: {0}")]
    Prf(#[from] PrfError),
}

/// How many key bytes one direction of an SA needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySizes {
    /// Encryption key length, including the salt for AEADs (AES-GCM: key + 4 bytes per
    /// RFC 5282 / RFC 4106; ChaCha20-Poly1305: 32 + 4 bytes per RFC 7634).
    pub encr: usize,
    /// Integrity key length; 0 for AEADs, which have none.
    pub integ: usize,
}

/// SKEYSEED = prf(Ni | Nr, g^ir) for a new IKE SA (RFC 7296 2.14).
pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], g_ir: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(ni.len() + nr.len());
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    prf.prf(&key, g_ir)
}

/// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) for an IKE SA rekeyed with
/// CREATE_CHILD_SA (RFC 7296 2.18). `old_prf` is the PRF of the IKE SA being rekeyed (the
/// key is its SK_d); the new SA's PRF is used for prf+ afterwards, as strongSwan does.
pub fn rekey_skeyseed(old_prf: Prf, old_sk_d: &[u8], g_ir: &[u8], ni: &[u8], nr: &[u8]) -> Vec<u8> {
    old_prf.prf_parts(old_sk_d, &[g_ir, ni, nr])
}

/// The seven secrets of an IKE SA. `Debug` shows only lengths.
#[derive(Clone, PartialEq, Eq)]
pub struct IkeSaKeys {
    /// Key from which CHILD SA keys and a rekeyed IKE SA's SKEYSEED are derived.
    pub sk_d: Vec<u8>,
    /// Integrity key protecting initiator-to-responder messages (empty for AEADs).
    pub sk_ai: Vec<u8>,
    /// Integrity key protecting responder-to-initiator messages (empty for AEADs).
    pub sk_ar: Vec<u8>,
    /// Encryption key (plus salt for AEADs) for initiator-to-responder messages.
    pub sk_ei: Vec<u8>,
    /// Encryption key (plus salt for AEADs) for responder-to-initiator messages.
    pub sk_er: Vec<u8>,
    /// Key for the initiator's AUTH payload (prf(SK_pi, IDi')).
    pub sk_pi: Vec<u8>,
    /// Key for the responder's AUTH payload (prf(SK_pr, IDr')).
    pub sk_pr: Vec<u8>,
}

impl std::fmt::Debug for IkeSaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeSaKeys")
            .field("sk_d", &Redacted(self.sk_d.len()))
            .field("sk_ai", &Redacted(self.sk_ai.len()))
            .field("sk_ar", &Redacted(self.sk_ar.len()))
            .field("sk_ei", &Redacted(self.sk_ei.len()))
            .field("sk_er", &Redacted(self.sk_er.len()))
            .field("sk_pi", &Redacted(self.sk_pi.len()))
            .field("sk_pr", &Redacted(self.sk_pr.len()))
            .finish()
    }
}

impl IkeSaKeys {
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    ///     = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)  (RFC 7296 2.14).
    ///
    /// `skeyseed` comes from [`skeyseed`] for a new SA or [`rekey_skeyseed`] after a rekey;
    /// `prf` is the (new) SA's PRF; SPIs are as they appear on the wire.
    pub fn derive(
        prf: Prf,
        sizes: KeySizes,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, KeymatError> {
        let mut seed = Vec::with_capacity(ni.len() + nr.len() + 16);
        seed.extend_from_slice(ni);
        seed.extend_from_slice(nr);
        seed.extend_from_slice(&spi_i.to_be_bytes());
        seed.extend_from_slice(&spi_r.to_be_bytes());
        let lens = [
            prf.key_len(),
            sizes.integ,
            sizes.integ,
            sizes.encr,
            sizes.encr,
            prf.key_len(),
            prf.key_len(),
        ];
        let stream = prf.prf_plus(skeyseed, &seed, lens.iter().sum())?;
        let [sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr] = split(&stream, lens);
        Ok(Self {
            sk_d,
            sk_ai,
            sk_ar,
            sk_ei,
            sk_er,
            sk_pi,
            sk_pr,
        })
    }

    /// Keys of a new IKE SA straight from the IKE_SA_INIT exchange: SKEYSEED from the
    /// nonces and g^ir, then [`IkeSaKeys::derive`].
    pub fn from_ike_sa_init(
        prf: Prf,
        sizes: KeySizes,
        ni: &[u8],
        nr: &[u8],
        g_ir: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, KeymatError> {
        Self::derive(
            prf,
            sizes,
            &skeyseed(prf, ni, nr, g_ir),
            ni,
            nr,
            spi_i,
            spi_r,
        )
    }

    /// Keys of the IKE SA that replaces `old` through CREATE_CHILD_SA (RFC 7296 2.18).
    /// `ni`/`nr` and the SPIs are those of the rekeying exchange and the new SA.
    #[allow(clippy::too_many_arguments)]
    pub fn rekeyed(
        &self,
        old_prf: Prf,
        new_prf: Prf,
        sizes: KeySizes,
        ni: &[u8],
        nr: &[u8],
        g_ir: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, KeymatError> {
        let seed = rekey_skeyseed(old_prf, &self.sk_d, g_ir, ni, nr);
        Self::derive(new_prf, sizes, &seed, ni, nr, spi_i, spi_r)
    }
}

/// Keys of one CHILD SA pair. "Initiator" is the initiator of the exchange that created the
/// CHILD SA (IKE_AUTH or CREATE_CHILD_SA), which need not be the IKE SA's initiator.
/// `Debug` shows only lengths.
#[derive(Clone, PartialEq, Eq)]
pub struct ChildSaKeys {
    /// Encryption key (plus salt for AEADs) for initiator-to-responder traffic.
    pub encr_i: Vec<u8>,
    /// Integrity key for initiator-to-responder traffic (empty for AEADs).
    pub integ_i: Vec<u8>,
    /// Encryption key (plus salt for AEADs) for responder-to-initiator traffic.
    pub encr_r: Vec<u8>,
    /// Integrity key for responder-to-initiator traffic (empty for AEADs).
    pub integ_r: Vec<u8>,
}

impl std::fmt::Debug for ChildSaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSaKeys")
            .field("encr_i", &Redacted(self.encr_i.len()))
            .field("integ_i", &Redacted(self.integ_i.len()))
            .field("encr_r", &Redacted(self.encr_r.len()))
            .field("integ_r", &Redacted(self.integ_r.len()))
            .finish()
    }
}

impl ChildSaKeys {
    /// KEYMAT = prf+(SK_d, [g^ir (new)] | Ni | Nr) (RFC 7296 2.17), split as
    /// initiator-to-responder (encryption key, then integrity key) followed by
    /// responder-to-initiator. Pass `g_ir` only when the CREATE_CHILD_SA carried KE payloads;
    /// for the CHILD SA of IKE_AUTH, `ni`/`nr` are the IKE_SA_INIT nonces and `g_ir` is None.
    pub fn derive(
        prf: Prf,
        sk_d: &[u8],
        g_ir: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
        sizes: KeySizes,
    ) -> Result<Self, KeymatError> {
        let g_ir = g_ir.unwrap_or_default();
        let mut seed = Vec::with_capacity(g_ir.len() + ni.len() + nr.len());
        seed.extend_from_slice(g_ir);
        seed.extend_from_slice(ni);
        seed.extend_from_slice(nr);
        let lens = [sizes.encr, sizes.integ, sizes.encr, sizes.integ];
        let stream = prf.prf_plus(sk_d, &seed, lens.iter().sum())?;
        let [encr_i, integ_i, encr_r, integ_r] = split(&stream, lens);
        Ok(Self {
            encr_i,
            integ_i,
            encr_r,
            integ_r,
        })
    }
}

/// Shows the length of a secret instead of its bytes.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

/// Cuts `stream` into consecutive pieces of the given lengths (their sum is its length).
fn split<const N: usize>(stream: &[u8], lens: [usize; N]) -> [Vec<u8>; N] {
    let mut rest = stream;
    lens.map(|len| {
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        piece.to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCM256: KeySizes = KeySizes { encr: 36, integ: 0 };
    const CBC128_SHA256: KeySizes = KeySizes {
        encr: 16,
        integ: 32,
    };

    #[test]
    fn ike_sa_keys_follow_rfc7296_order_and_sizes() {
        let prf = Prf::HmacSha256;
        let (ni, nr, gir) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let (spi_i, spi_r) = (0x0102_0304_0506_0708, 0x1112_1314_1516_1718);
        let keys =
            IkeSaKeys::from_ike_sa_init(prf, CBC128_SHA256, &ni, &nr, &gir, spi_i, spi_r).unwrap();

        // Independent computation of the same derivation.
        let seed_key = [ni, nr].concat();
        let skeyseed = prf.prf(&seed_key, &gir);
        let s = [&ni[..], &nr[..], &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
        let stream = prf
            .prf_plus(&skeyseed, &s, 32 * 3 + 32 * 2 + 16 * 2)
            .unwrap();
        assert_eq!(keys.sk_d, stream[0..32]);
        assert_eq!(keys.sk_ai, stream[32..64]);
        assert_eq!(keys.sk_ar, stream[64..96]);
        assert_eq!(keys.sk_ei, stream[96..112]);
        assert_eq!(keys.sk_er, stream[112..128]);
        assert_eq!(keys.sk_pi, stream[128..160]);
        assert_eq!(keys.sk_pr, stream[160..192]);
    }

    #[test]
    fn aead_suites_have_no_integrity_keys() {
        let keys = IkeSaKeys::from_ike_sa_init(
            Prf::HmacSha384,
            GCM256,
            &[1; 16],
            &[2; 16],
            &[3; 32],
            1,
            2,
        )
        .unwrap();
        assert!(keys.sk_ai.is_empty() && keys.sk_ar.is_empty());
        assert_eq!(keys.sk_ei.len(), 36);
        assert_eq!(keys.sk_d.len(), 48);
        assert_ne!(keys.sk_ei, keys.sk_er);
    }

    #[test]
    fn rekey_uses_old_sk_d_and_new_nonces() {
        let old = IkeSaKeys::from_ike_sa_init(
            Prf::HmacSha256,
            GCM256,
            &[1; 16],
            &[2; 16],
            &[3; 32],
            1,
            2,
        )
        .unwrap();
        let new = old
            .rekeyed(
                Prf::HmacSha256,
                Prf::HmacSha512,
                GCM256,
                &[4; 32],
                &[5; 32],
                &[6; 32],
                7,
                8,
            )
            .unwrap();
        let seed = Prf::HmacSha256.prf(&old.sk_d, &[[6u8; 32], [4; 32], [5; 32]].concat());
        let expected =
            IkeSaKeys::derive(Prf::HmacSha512, GCM256, &seed, &[4; 32], &[5; 32], 7, 8).unwrap();
        assert_eq!(new, expected);
        assert_eq!(new.sk_d.len(), 64);
    }

    #[test]
    fn child_keys_split_initiator_first_encryption_before_integrity() {
        let sk_d = [9u8; 32];
        let prf = Prf::HmacSha256;
        let keys =
            ChildSaKeys::derive(prf, &sk_d, None, &[1; 16], &[2; 16], CBC128_SHA256).unwrap();
        let stream = prf
            .prf_plus(&sk_d, &[[1u8; 16], [2; 16]].concat(), 96)
            .unwrap();
        assert_eq!(keys.encr_i, stream[0..16]);
        assert_eq!(keys.integ_i, stream[16..48]);
        assert_eq!(keys.encr_r, stream[48..64]);
        assert_eq!(keys.integ_r, stream[64..96]);

        let pfs =
            ChildSaKeys::derive(prf, &sk_d, Some(&[7; 32]), &[1; 16], &[2; 16], GCM256).unwrap();
        let stream = prf
            .prf_plus(&sk_d, &[&[7u8; 32][..], &[1; 16], &[2; 16]].concat(), 72)
            .unwrap();
        assert_eq!(pfs.encr_i, stream[0..36]);
        assert_eq!(pfs.encr_r, stream[36..72]);
        assert!(pfs.integ_i.is_empty());
    }

    #[test]
    fn debug_hides_key_bytes() {
        let keys = ChildSaKeys::derive(
            Prf::HmacSha256,
            &[0xAB; 32],
            None,
            &[1; 16],
            &[2; 16],
            GCM256,
        )
        .unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains("<36 bytes>"), "{shown}");
        assert!(!shown.contains('['), "no byte arrays: {shown}");
        let ike =
            IkeSaKeys::from_ike_sa_init(Prf::HmacSha1, GCM256, &[1], &[2], &[3], 1, 2).unwrap();
        assert!(format!("{ike:?}").contains("sk_d: <20 bytes>"));
    }
}
