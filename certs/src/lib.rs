//! Gatehouse PKI library: root CA, gateway and client certificates, the SQLite registry of
//! everything issued, revocation and CRL, and client profile export.
