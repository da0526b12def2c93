//! Resume from sleep. While the host is suspended CLOCK_MONOTONIC stands still and
//! CLOCK_BOOTTIME runs on, so the distance between them grows by the time asleep. A tunnel
//! that slept has usually lost its NAT binding, and the gateway may have ended it at its
//! keepalive timeout: the client re-establishes (OpenVPN, IKEv2) or migrates (QUIC) at once
//! instead of waiting for its own keepalive timeout to notice.

use std::time::Duration;

/// How often the clocks are compared (a resume is acted on within this).
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A gap that grew by at least this much is a sleep (not clock jitter or a busy host).
pub(crate) const SLEPT_AT_LEAST: Duration = Duration::from_secs(4);

/// (CLOCK_MONOTONIC, CLOCK_BOOTTIME) now; None where there is no such pair.
pub(crate) type Clocks = fn() -> Option<(Duration, Duration)>;

/// The system's clocks.
#[cfg(target_os = "linux")]
pub(crate) fn system_clocks() -> Option<(Duration, Duration)> {
    #[allow(unsafe_code)]
    fn read(id: libc::clockid_t) -> Option<Duration> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        (rc == 0).then(|| {
            Duration::new(
                u64::try_from(ts.tv_sec).unwrap_or(0),
                u32::try_from(ts.tv_nsec).unwrap_or(0),
            )
        })
    }
    Some((read(libc::CLOCK_MONOTONIC)?, read(libc::CLOCK_BOOTTIME)?))
}

/// Elsewhere resume is not detected yet (the keepalive timeout still notices).
#[cfg(not(target_os = "linux"))]
pub(crate) fn system_clocks() -> Option<(Duration, Duration)> {
    None
}

/// Notices that the host slept since the last look.
pub(crate) struct SleepWatch {
    clocks: Clocks,
    /// BOOTTIME - MONOTONIC at the last look.
    gap: Option<Duration>,
}

impl SleepWatch {
    pub(crate) fn new(clocks: Clocks) -> SleepWatch {
        let gap = clocks().map(|(mono, boot)| boot.saturating_sub(mono));
        SleepWatch { clocks, gap }
    }

    /// How long the host slept since the last call, if it did.
    pub(crate) fn check(&mut self) -> Option<Duration> {
        let (mono, boot) = (self.clocks)()?;
        let gap = boot.saturating_sub(mono);
        let slept = self
            .gap
            .replace(gap)
            .map(|before| gap.saturating_sub(before))?;
        (slept >= SLEPT_AT_LEAST).then_some(slept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static ASLEEP_MS: AtomicU64 = AtomicU64::new(0);
    static NOW_MS: AtomicU64 = AtomicU64::new(1_000);

    /// A host up `NOW_MS` (monotonic) that slept `ASLEEP_MS` in all.
    fn fake() -> Option<(Duration, Duration)> {
        let now = NOW_MS.load(Ordering::SeqCst);
        let asleep = ASLEEP_MS.load(Ordering::SeqCst);
        Some((
            Duration::from_millis(now),
            Duration::from_millis(now + asleep + 250),
        ))
    }

    #[test]
    fn a_growing_gap_between_the_clocks_is_a_sleep() {
        let mut w = SleepWatch::new(fake);
        assert_eq!(w.check(), None, "awake");
        NOW_MS.fetch_add(2_000, Ordering::SeqCst);
        ASLEEP_MS.fetch_add(1_000, Ordering::SeqCst);
        assert_eq!(w.check(), None, "a second of drift is not a sleep");
        NOW_MS.fetch_add(2_000, Ordering::SeqCst);
        ASLEEP_MS.fetch_add(600_000, Ordering::SeqCst);
        assert_eq!(w.check(), Some(Duration::from_secs(600)));
        assert_eq!(w.check(), None, "reported once");
    }

    #[test]
    fn the_real_clocks_are_read_here() {
        if cfg!(target_os = "linux") {
            let (mono, boot) = system_clocks().expect("Linux has both clocks");
            assert!(boot >= mono, "BOOTTIME {boot:?} < MONOTONIC {mono:?}");
            let mut w = SleepWatch::new(system_clocks);
            assert_eq!(w.check(), None, "this test does not sleep");
        }
    }
}
