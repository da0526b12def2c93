//! quinn-proto asks a [`TimeSource`] for the wall clock (it dates address-validation tokens).
//! The engine never reads a clock: [`CoreClock`] answers with the time the core was last
//! told, the wall clock at start plus the virtual time since.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn_proto::TimeSource;

/// The wall clock as the core knows it. Cheap to clone; every clone shows the same time.
#[derive(Debug, Clone)]
pub struct CoreClock {
    unix_start: u64,
    start: Instant,
    /// Milliseconds since the Unix epoch at the last [`set`](Self::set).
    now_ms: Arc<AtomicU64>,
}

impl CoreClock {
    /// A clock whose `start` instant was `unix_start` seconds after the Unix epoch.
    pub fn new(unix_start: u64, start: Instant) -> Self {
        Self {
            unix_start,
            start,
            now_ms: Arc::new(AtomicU64::new(unix_start.saturating_mul(1000))),
        }
    }

    /// The core was given `now`.
    pub fn set(&self, now: Instant) {
        let since = now.saturating_duration_since(self.start).as_millis() as u64;
        let ms = self.unix_start.saturating_mul(1000).saturating_add(since);
        self.now_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

impl TimeSource for CoreClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_virtual_clock_and_never_goes_back() {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let c = CoreClock::new(1_800_000_000, start);
        let at = |c: &CoreClock| c.now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(at(&c), 1_800_000_000_000);
        c.set(start + Duration::from_millis(2500));
        assert_eq!(at(&c), 1_800_000_002_500);
        c.set(start + Duration::from_secs(1));
        assert_eq!(at(&c), 1_800_000_002_500);
    }
}
