//! IKE cookies (RFC 7296 2.6) from rotating secrets: `<version> | SHA-256(secret | Ni | IPi |
//! port | SPIi)`. The secret is replaced every [`COOKIE_ROTATION`] or after
//! [`COOKIE_MAX_USES`] cookies, whichever comes first; a cookie made with the previous secret
//! is still accepted (a client that got one just before the change), older ones are not. The
//! secrets come from the caller's entropy (the gateway's entropy factory), never from the OS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::cookie_for;
use crate::entropy::Entropy;

/// How long one secret makes cookies.
pub const COOKIE_ROTATION: Duration = Duration::from_secs(300);

/// How many cookies one secret makes at most.
pub const COOKIE_MAX_USES: u64 = 1 << 20;

/// Length of our cookies: a version byte and a SHA-256 hash.
pub const COOKIE_LEN: usize = 33;

struct Secret {
    version: u8,
    key: [u8; 32],
}

/// The gateway's cookie secrets: the current one and the one before it.
pub struct CookieJar {
    current: Secret,
    previous: Option<Secret>,
    since: Instant,
    uses: u64,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("version", &self.current.version)
            .field("uses", &self.uses)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// A jar with a fresh secret from `entropy`.
    pub fn new(now: Instant, entropy: &mut dyn Entropy) -> Self {
        let mut key = [0u8; 32];
        entropy.fill(&mut key);
        CookieJar {
            current: Secret { version: 0, key },
            previous: None,
            since: now,
            uses: 0,
        }
    }

    /// Whether the current secret is due to be replaced ([`rotate`](Self::rotate)).
    pub fn due(&self, now: Instant) -> bool {
        self.uses >= COOKIE_MAX_USES || now >= self.since + COOKIE_ROTATION
    }

    /// Replaces the current secret with a fresh one from `entropy`; the replaced one is still
    /// accepted for one period (not at all when it was idle for two periods).
    pub fn rotate(&mut self, now: Instant, entropy: &mut dyn Entropy) {
        let mut key = [0u8; 32];
        entropy.fill(&mut key);
        let next = Secret {
            version: self.current.version.wrapping_add(1),
            key,
        };
        let stale = now >= self.since + 2 * COOKIE_ROTATION;
        let old = std::mem::replace(&mut self.current, next);
        self.previous = (!stale).then_some(old);
        self.since = now;
        self.uses = 0;
    }

    /// Rotates when due (see [`due`](Self::due)).
    pub fn rotate_if_due(&mut self, now: Instant, entropy: &mut dyn Entropy) {
        if self.due(now) {
            self.rotate(now, entropy);
        }
    }

    /// The cookie for a request with nonce `ni` and SPIi `spi_i` from `peer`.
    pub fn issue(&mut self, ni: &[u8], peer: SocketAddr, spi_i: u64) -> [u8; COOKIE_LEN] {
        self.uses += 1;
        make(&self.current, ni, peer, spi_i)
    }

    /// Whether `cookie` is one we issued (current or previous secret) for this request.
    pub fn check(&self, cookie: &[u8], ni: &[u8], peer: SocketAddr, spi_i: u64) -> bool {
        let Some(&version) = cookie.first() else {
            return false;
        };
        let secret = if version == self.current.version {
            &self.current
        } else {
            match &self.previous {
                Some(p) if p.version == version => p,
                _ => return false,
            }
        };
        let want = make(secret, ni, peer, spi_i);
        // Compared without an early exit.
        cookie.len() == want.len()
            && want.iter().zip(cookie).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }

    /// The current secret's version (tests).
    pub fn version(&self) -> u8 {
        self.current.version
    }
}

fn make(s: &Secret, ni: &[u8], peer: SocketAddr, spi_i: u64) -> [u8; COOKIE_LEN] {
    let mut out = [0u8; COOKIE_LEN];
    out[0] = s.version;
    out[1..].copy_from_slice(&cookie_for(&s.key, ni, peer, spi_i));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    #[test]
    fn cookies_outlive_one_rotation_not_two() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut e = SeededEntropy::new(5);
        let mut jar = CookieJar::new(t0, &mut e);
        let peer: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let ni = [7u8; 32];
        let c0 = jar.issue(&ni, peer, 42);
        assert!(jar.check(&c0, &ni, peer, 42));
        assert!(!jar.check(&c0, &ni, peer, 43), "bound to SPIi");
        assert!(!jar.check(&c0, &[8u8; 32], peer, 42), "bound to Ni");
        let other: SocketAddr = "192.0.2.2:500".parse().unwrap();
        assert!(!jar.check(&c0, &ni, other, 42), "bound to the address");
        assert!(!jar.due(t0 + Duration::from_secs(299)));
        assert!(jar.due(t0 + COOKIE_ROTATION));
        jar.rotate_if_due(t0 + COOKIE_ROTATION, &mut e);
        assert_eq!(jar.version(), 1);
        let c1 = jar.issue(&ni, peer, 42);
        assert_ne!(c0, c1, "a new secret makes new cookies");
        assert!(
            jar.check(&c0, &ni, peer, 42),
            "the previous secret still works"
        );
        assert!(jar.check(&c1, &ni, peer, 42));
        jar.rotate(t0 + 2 * COOKIE_ROTATION, &mut e);
        assert!(!jar.check(&c0, &ni, peer, 42), "two secrets ago");
        assert!(jar.check(&c1, &ni, peer, 42));
        // Idle for two periods: nothing from before is accepted.
        jar.rotate(t0 + 5 * COOKIE_ROTATION, &mut e);
        assert!(!jar.check(&c1, &ni, peer, 42));
    }

    #[test]
    fn a_secret_makes_a_bounded_number_of_cookies() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut e = SeededEntropy::new(6);
        let mut jar = CookieJar::new(t0, &mut e);
        jar.uses = COOKIE_MAX_USES - 1;
        let peer: SocketAddr = "192.0.2.1:500".parse().unwrap();
        jar.issue(&[1; 16], peer, 1);
        assert!(jar.due(t0));
        jar.rotate_if_due(t0, &mut e);
        assert_eq!(jar.version(), 1);
        assert!(!jar.due(t0));
    }
}
