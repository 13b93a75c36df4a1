//! Where the time comes from: [`SystemClock`] in production, [`ManualClock`] in tests that
//! move time themselves (waits, quiet hours, retries, timers).

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// The current time, as a service sees it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told to move.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    /// Sets the time (backwards too).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.lock() = at;
    }

    /// Moves the time on by `by`.
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A poisoned clock still holds a valid time.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let t0 = DateTime::from_timestamp(1_780_000_000, 0).expect("time");
        let c = ManualClock::new(t0);
        assert_eq!(c.now(), t0);
        c.advance(Duration::minutes(5));
        assert_eq!(c.now(), t0 + Duration::minutes(5));
        c.set(t0);
        assert_eq!(c.now(), t0);
        assert!(SystemClock.now() > t0 - Duration::days(365 * 10));
    }
}
