//! The one place the runtime reads the clock.
//!
//! Nodes never read a clock (`clippy.toml` forbids it): the host passes them [`Time`], the
//! nanoseconds since the host started, measured on tokio's monotonic clock.

use concord_core::Time;
use tokio::time::Instant;

/// The host's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock whose time 0 is now.
    pub(crate) fn start() -> Self {
        Clock { start: now() }
    }

    /// Nanoseconds since the clock started.
    pub(crate) fn now(&self) -> Time {
        now().saturating_duration_since(self.start).as_nanos() as Time
    }

    /// The instant at which this clock reads `time`.
    pub(crate) fn instant_at(&self, time: Time) -> Instant {
        self.start + std::time::Duration::from_nanos(time)
    }
}

/// Measures how long something took (fsync latency).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stopwatch(Instant);

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Stopwatch(now())
    }

    pub(crate) fn elapsed_seconds(&self) -> f64 {
        now().saturating_duration_since(self.0).as_secs_f64()
    }
}

// The runtime is the driver: reading the real clock is its job. This is the only call.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}
