//! Online guessing of a site's pre-shared key is throttled: after [`MAX_FAILURES`] failed
//! PSK authentications of one connection within [`FAILURE_WINDOW`], further IKE_AUTH requests
//! naming it are dropped unanswered for a backoff ([`FIRST_BACKOFF`], doubling with each
//! backoff in a row up to [`MAX_BACKOFF`]). One throttle is shared by every worker of a
//! gateway; time comes in as `now`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

/// Failed PSK authentications of one connection within [`FAILURE_WINDOW`] that start a
/// backoff.
pub const MAX_FAILURES: usize = 5;
/// The window [`MAX_FAILURES`] are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The first backoff.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// The longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(960);

#[derive(Debug, Default)]
struct Site {
    /// When the recent failures happened (at most [`MAX_FAILURES`]).
    failures: VecDeque<Instant>,
    blocked_until: Option<Instant>,
    /// Backoffs in a row (a successful authentication resets it).
    strikes: u32,
    /// IKE_AUTH requests dropped during backoffs.
    dropped: u64,
}

/// Failed PSK authentications per connection name.
#[derive(Debug, Default)]
pub struct PskThrottle {
    sites: Mutex<HashMap<String, Site>>,
}

impl PskThrottle {
    /// A throttle with no history.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, site: &str, f: impl FnOnce(&mut Site) -> T) -> T {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        if !sites.contains_key(site) {
            sites.insert(site.to_owned(), Site::default());
        }
        let s = sites.get_mut(site).expect("inserted above");
        f(s)
    }

    /// Whether an IKE_AUTH naming `site` is to be dropped now (counted and logged: the 1st,
    /// 2nd, 4th, 8th... drop of each connection).
    pub fn blocked(&self, site: &str, now: Instant) -> bool {
        self.with(site, |s| {
            let Some(until) = s.blocked_until.filter(|u| now < *u) else {
                return false;
            };
            s.dropped += 1;
            if s.dropped.is_power_of_two() {
                warn!(
                    connection = %site,
                    dropped = s.dropped,
                    retry_in_secs = until.saturating_duration_since(now).as_secs(),
                    "IKE_AUTH for the connection dropped: too many failed pre-shared-key authentications (throttled)"
                );
            }
            true
        })
    }

    /// A PSK authentication of `site` failed. Returns the backoff it starts, if it does.
    pub fn failed(&self, site: &str, now: Instant) -> Option<Duration> {
        self.with(site, |s| {
            while s
                .failures
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW)
            {
                s.failures.pop_front();
            }
            s.failures.push_back(now);
            if s.failures.len() < MAX_FAILURES {
                return None;
            }
            s.failures.clear();
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << s.strikes.min(8))
                .min(MAX_BACKOFF);
            s.strikes = s.strikes.saturating_add(1);
            s.blocked_until = Some(now + backoff);
            warn!(
                connection = %site,
                failures = MAX_FAILURES,
                window_secs = FAILURE_WINDOW.as_secs(),
                backoff_secs = backoff.as_secs(),
                "too many failed pre-shared-key authentications for the connection: its IKE_AUTH requests are dropped for the backoff (check psk_file on both gateways, or someone is guessing the key)"
            );
            Some(backoff)
        })
    }

    /// `site` authenticated: the next backoff starts from [`FIRST_BACKOFF`] again (recent
    /// failures still count).
    pub fn succeeded(&self, site: &str) {
        self.with(site, |s| s.strikes = 0);
    }

    /// IKE_AUTH requests of `site` dropped so far.
    pub fn dropped(&self, site: &str) -> u64 {
        self.with(site, |s| s.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_a_minute_start_a_doubling_backoff() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let th = PskThrottle::new();
        let s = Duration::from_secs;
        // Four failures spread over more than a minute never block.
        for i in 0..8u64 {
            assert_eq!(th.failed("east", t0 + s(20 * i)), None, "failure {i}");
        }
        let t1 = t0 + s(1000);
        for i in 0..4u64 {
            assert_eq!(th.failed("east", t1 + s(i)), None);
            assert!(!th.blocked("east", t1 + s(i)));
        }
        assert_eq!(th.failed("east", t1 + s(4)), Some(FIRST_BACKOFF));
        assert!(th.blocked("east", t1 + s(5)));
        assert!(!th.blocked("west", t1 + s(5)), "per connection");
        assert!(th.blocked("east", t1 + s(63)));
        assert!(!th.blocked("east", t1 + s(64)));
        assert_eq!(th.dropped("east"), 2);
        // Again: twice as long.
        let t2 = t1 + s(100);
        for i in 0..4u64 {
            assert_eq!(th.failed("east", t2 + s(i)), None);
        }
        assert_eq!(th.failed("east", t2 + s(4)), Some(2 * FIRST_BACKOFF));
        assert!(th.blocked("east", t2 + s(120)));
        // A success resets the doubling.
        th.succeeded("east");
        let t3 = t2 + s(1000);
        for i in 0..4u64 {
            th.failed("east", t3 + s(i));
        }
        assert_eq!(th.failed("east", t3 + s(4)), Some(FIRST_BACKOFF));
        // Bounded.
        for k in 0..20u64 {
            let t = t3 + s(5000 * (k + 1));
            for i in 0..4u64 {
                th.failed("east", t + s(i));
            }
            assert!(
                th.failed("east", t + s(4))
                    .is_some_and(|b| b <= MAX_BACKOFF)
            );
        }
    }
}
