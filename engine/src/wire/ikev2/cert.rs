//! Certificate and Certificate Request payloads (RFC 7296 sections 3.6 and 3.7).
//!
//! ```text
//! CERT:     cert encoding (1) | certificate data
//! CERTREQ:  cert encoding (1) | certification authority (SHA-1 hashes of CA SPKIs)
//! ```

use super::{Reader, Result, registry};

/// Length of a SHA-1 hash in a CERTREQ of encoding [`CertEncoding::X509_SIGNATURE`].
pub const SHA1_HASH_LEN: usize = 20;

registry! {
    /// Certificate encoding (IANA "IKEv2 Certificate Encodings").
    CertEncoding(u8) {
        /// PKCS #7 wrapped X.509 certificate.
        PKCS7 = 1,
        /// PGP certificate.
        PGP = 2,
        /// DNS signed key.
        DNS_SIGNED_KEY = 3,
        /// X.509 certificate - signature: one DER certificate.
        X509_SIGNATURE = 4,
        /// Kerberos token.
        KERBEROS = 6,
        /// Certificate revocation list (DER).
        CRL = 7,
        /// Authority revocation list.
        ARL = 8,
        /// SPKI certificate.
        SPKI = 9,
        /// X.509 certificate - attribute.
        X509_ATTRIBUTE = 10,
        /// Raw RSA key (deprecated).
        RAW_RSA_KEY = 11,
        /// Hash and URL of X.509 certificate.
        HASH_URL_X509 = 12,
        /// Hash and URL of X.509 bundle.
        HASH_URL_X509_BUNDLE = 13,
        /// OCSP content (RFC 4806).
        OCSP_CONTENT = 14,
        /// Raw public key (RFC 7670).
        RAW_PUBLIC_KEY = 15,
    }
}

/// A Certificate payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPayload<'a> {
    /// How `data` is encoded.
    pub encoding: CertEncoding,
    /// The certificate (a DER X.509 certificate for [`CertEncoding::X509_SIGNATURE`]).
    pub data: &'a [u8],
}

impl<'a> CertPayload<'a> {
    /// Parses the payload body (after the generic header).
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        Ok(Self {
            encoding: CertEncoding(r.u8()?),
            data: r.rest(),
        })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        1 + self.data.len()
    }

    /// Appends the body.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(self.encoding.0);
        out.extend_from_slice(self.data);
    }
}

/// A Certificate Request payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertReqPayload<'a> {
    /// The encoding of the certificates asked for.
    pub encoding: CertEncoding,
    /// For X.509: concatenated SHA-1 hashes of the public keys (SubjectPublicKeyInfo) of
    /// trusted CAs.
    pub authorities: &'a [u8],
}

impl<'a> CertReqPayload<'a> {
    /// Parses the payload body (after the generic header).
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        Ok(Self {
            encoding: CertEncoding(r.u8()?),
            authorities: r.rest(),
        })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        1 + self.authorities.len()
    }

    /// Appends the body.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(self.encoding.0);
        out.extend_from_slice(self.authorities);
    }

    /// The CA key hashes of an X.509 request; `None` if the encoding is not
    /// [`CertEncoding::X509_SIGNATURE`] or the length is not a multiple of 20.
    pub fn ca_hashes(&self) -> Option<impl Iterator<Item = &'a [u8; SHA1_HASH_LEN]>> {
        if self.encoding != CertEncoding::X509_SIGNATURE
            || !self.authorities.len().is_multiple_of(SHA1_HASH_LEN)
        {
            return None;
        }
        let (hashes, _) = self.authorities.as_chunks::<SHA1_HASH_LEN>();
        Some(hashes.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::super::WireError;
    use super::*;

    #[test]
    fn cert_bytes() {
        let bytes = [4, 0x30, 0x82, 0x01, 0x0a];
        let cert = CertPayload::parse_body(&bytes).unwrap();
        assert_eq!(cert.encoding, CertEncoding::X509_SIGNATURE);
        assert_eq!(cert.data, &bytes[1..]);
        let mut out = Vec::new();
        cert.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), cert.body_len());
        assert_eq!(CertPayload::parse_body(&[]), Err(WireError::Truncated));
    }

    #[test]
    fn certreq_with_two_ca_hashes() {
        let mut bytes = vec![4];
        bytes.extend([0xaa; 20]);
        bytes.extend([0xbb; 20]);
        let req = CertReqPayload::parse_body(&bytes).unwrap();
        let hashes: Vec<_> = req.ca_hashes().unwrap().collect();
        assert_eq!(hashes, vec![&[0xaa; 20], &[0xbb; 20]]);
        let mut out = Vec::new();
        req.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), req.body_len());

        // A partial hash or another encoding gives no hash list.
        bytes.pop();
        assert!(
            CertReqPayload::parse_body(&bytes)
                .unwrap()
                .ca_hashes()
                .is_none()
        );
        assert!(
            CertReqPayload::parse_body(&[1, 0])
                .unwrap()
                .ca_hashes()
                .is_none()
        );
        // An empty request is allowed (any CA).
        assert_eq!(
            CertReqPayload::parse_body(&[4])
                .unwrap()
                .ca_hashes()
                .unwrap()
                .count(),
            0
        );
    }
}
