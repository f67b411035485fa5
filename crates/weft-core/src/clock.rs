//! The wall clock the engine stamps history and due times with, behind a trait so tests and the
//! simulation can set time instead of reading the machine's.

use crate::Micros;
use std::sync::atomic::{AtomicI64, Ordering};

/// Microseconds since the Unix epoch, as the engine sees them.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Micros;
}

/// The machine's clock (`SystemTime`); a clock set before 1970 reads as 0.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests, simulation).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(t: Micros) -> Self {
        Self(AtomicI64::new(t))
    }

    pub fn set(&self, t: Micros) {
        self.0.store(t, Ordering::SeqCst);
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::at(5);
        assert_eq!(c.now(), 5);
        c.advance(std::time::Duration::from_millis(2));
        assert_eq!(c.now(), 2_005);
        c.set(-1);
        assert_eq!(c.now(), -1);
    }

    #[test]
    fn the_system_clock_reads_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800_000_000);
    }
}
