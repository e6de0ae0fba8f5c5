//! The one place the runtime reads the clock.
//!
//! Nodes never read a clock (`clippy.toml` forbids it): the host passes them [`Time`], the
//! nanoseconds since an origin ([`TimeOrigin`]: the host's start, or the UNIX epoch), measured
//! on tokio's monotonic clock, plus how far fault injection has jumped it ahead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use concord_core::Time;
use tokio::time::Instant;

/// What a host's [`Time`] counts from (`HostConfig::time_origin`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeOrigin {
    /// Time 0 is when the host started: a restarted host counts from 0 again. Enough for
    /// nodes that only measure durations (Raft, Multi-Paxos).
    #[default]
    HostStart,
    /// Time 0 is the UNIX epoch: the system clock is read once, when the host starts, and time
    /// then advances on the monotonic clock. Time keeps increasing across restarts (unless the
    /// system clock is set back by more than the host was down), for nodes whose times outlive
    /// a restart: PBFT's client proxies stamp requests with them, and replicas ignore a
    /// client's request stamped no later than one they executed.
    UnixEpoch,
}

/// The host's monotonic clock.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    start: Instant,
    /// The time at `start`.
    origin: Time,
    /// Nanoseconds the clock was jumped ahead ([`Clock::jump`]); shared with the node's handle.
    ahead: Arc<AtomicU64>,
}

impl Clock {
    /// A clock that reads, now, the time since `origin`.
    pub(crate) fn start(origin: TimeOrigin) -> Self {
        let origin = match origin {
            TimeOrigin::HostStart => 0,
            TimeOrigin::UnixEpoch => since_unix_epoch(),
        };
        Clock {
            start: now(),
            origin,
            ahead: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Nanoseconds since the clock's origin.
    pub(crate) fn now(&self) -> Time {
        self.origin + self.ahead() + now().saturating_duration_since(self.start).as_nanos() as Time
    }

    /// The instant at which this clock reads `time` (now, for a time before the clock started).
    pub(crate) fn instant_at(&self, time: Time) -> Instant {
        let since_start = time.saturating_sub(self.origin + self.ahead());
        self.start + std::time::Duration::from_nanos(since_start)
    }

    /// Jumps the clock `by` nanoseconds ahead, as a clock set forward does (fault injection).
    /// Never back: a node's time never decreases.
    pub(crate) fn jump(&self, by: Time) {
        self.ahead.fetch_add(by, Ordering::SeqCst);
    }

    /// Nanoseconds the clock was jumped ahead in all.
    pub(crate) fn ahead(&self) -> Time {
        self.ahead.load(Ordering::SeqCst)
    }
}

/// The CPU time (user and system) this process has used so far, from `/proc/self/stat`; zero
/// where that cannot be read. What a benchmark divides by the operations it ran.
pub fn process_cpu_time() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // Linux reports these in USER_HZ, 100 per second on every common configuration.
    std::time::Duration::from_millis(ticks * 10)
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

/// Nanoseconds since the UNIX epoch on the system clock (0 if it reads earlier).
#[allow(clippy::disallowed_methods)]
fn since_unix_epoch() -> Time {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as Time)
}

/// A seed for a real process's random generator, different at every start: the wall clock's
/// nanoseconds mixed with the process id. A restarted node is a new incarnation, and Raft tells
/// incarnations apart by a number it draws at start (forwarded reads and proposals), so a
/// host must not seed a restarted node the way it seeded the last one.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap_or_default()
        .as_nanos() as u64;
    nanos ^ u64::from(std::process::id()).rotate_left(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_start_counts_from_zero_and_unix_epoch_from_the_system_clock() {
        let from_start = Clock::start(TimeOrigin::HostStart);
        assert!(from_start.now() < 60 * concord_core::time::SECOND);
        let before = since_unix_epoch();
        let from_epoch = Clock::start(TimeOrigin::UnixEpoch);
        let now = from_epoch.now();
        assert!(now >= before && now <= since_unix_epoch() + concord_core::time::SECOND);
        // A deadline maps back to the instant the clock reads it.
        let later = from_epoch.instant_at(now + 5 * concord_core::time::MILLISECOND);
        assert!(later >= from_epoch.start + std::time::Duration::from_millis(5));
        assert_eq!(from_epoch.instant_at(0), from_epoch.start);
    }

    #[test]
    fn a_jump_moves_the_time_and_every_deadline_ahead() {
        let clock = Clock::start(TimeOrigin::HostStart);
        let copy = clock.clone();
        let before = clock.now();
        let deadline = before + 10 * concord_core::time::SECOND;
        let at = clock.instant_at(deadline);
        copy.jump(4 * concord_core::time::SECOND);
        assert!(clock.now() >= before + 4 * concord_core::time::SECOND);
        assert_eq!(clock.ahead(), 4 * concord_core::time::SECOND);
        // The same deadline now comes 4 s sooner.
        assert_eq!(
            clock.instant_at(deadline) + std::time::Duration::from_secs(4),
            at
        );
    }
}
