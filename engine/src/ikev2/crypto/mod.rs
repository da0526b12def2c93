//! Cryptographic building blocks of IKEv2 (RFC 7296): PRFs, Diffie-Hellman, key
//! derivation, SK payload protection, AUTH payload computation and NAT detection.
//!
//! Everything here is a pure function of its inputs. Randomness comes in two ways: our
//! [`Entropy`](crate::entropy::Entropy) for values we draw ourselves (MODP exponents, CBC
//! IVs), and a `&dyn ring::rand::SecureRandom` where ring insists on its own sealed trait
//! (ECDH/x25519 key generation, ECDSA and RSA signing). Drivers pass `SystemRandom` for the
//! latter; tests pass it too or one of ring's fixed generators.

pub mod dh;
pub mod keymat;
pub mod natd;
pub mod prf;
pub mod sign;
pub mod sk;

pub use dh::{DhError, DhGroup, DhPrivate};
pub use keymat::{ChildSaKeys, IkeSaKeys, KeySizes, KeymatError};
pub use prf::{Prf, PrfError};
pub use sign::{AuthMethod, SignError, SignatureScheme, SigningKey};
pub use sk::{IkeCipher, Integ, SkError, SkKeys};
